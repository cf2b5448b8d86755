"""Default (untuned) CUDA schedules (TVM-facing), of the CUDA backend (backends/cuda.py): dlight's
general-reduction rule where it applies and is known to compute right, else one GPU thread per
output element (``cuda_direct_schedule``), which is also the fallback where a schedule does not
compile. ``serial`` runs any scheduled CUDA module's thread loops one after another, so that a CPU
can check it (the templates of cuda_templates.py and these, in CI)."""

from __future__ import annotations

import re

import tvm
from tvm.s_tir import Schedule

from ..spec import Spec
from ..variants.compute import prim_func


def cuda_default_schedule(spec: Spec, target) -> Schedule:
    """The default CUDA schedule of ``prim_func(spec)``: TVM's dlight rule for general reductions
    where it applies, else ``cuda_direct_schedule``. A ``Schedule``, so its trace is a record
    MetaSchedule's log and the schedule cache hold like any tuned one.

    dlight's other rules are left out for what they did on an H100 (2026-11-24): its Reduction
    rule gave wrong results on 8 of the 14 suite workloads it took (grouped 1x1 convs, up to 170%
    error) and schedules that do not compile on strided multiplier-2 depthwise convs; its Fallback
    rule, where every reduction loop has extent 1, inlines the epilogue into the reduction block
    init included, adding a bias twice. GeneralReduction's results matched cuDNN on all 30 suite
    workloads and every shape-table test it took after the Reduction rule, so it is used on those
    only (the workloads the Reduction rule takes get the direct schedule)."""
    from tvm.s_tir import dlight as dl

    func = prim_func(spec)
    tgt = tvm.target.Target(target.tvm())
    found = None
    with tgt:
        try:
            # only where the Reduction rule would not take it: those were the workloads checked
            if dl.gpu.Reduction().apply(func, tgt, False) is None:
                found = dl.gpu.GeneralReduction().apply(func, tgt, False)
        except Exception:  # noqa: BLE001 - a rule's analysis asserting on our compute
            found = None
    if isinstance(found, list):
        found = found[0] if found else None
    return found if found is not None else cuda_direct_schedule(spec)


def cuda_direct_schedule(spec: Spec, threads: int = 256) -> Schedule:
    """One GPU thread per output element: producers (padding, gathers) inlined into their
    consumers, each remaining stage's spatial loops fused and split over blocks of ``threads``
    threads, reductions serial in the thread. Always valid: the CUDA default where dlight's
    general-reduction rule does not take the workload, and the fallback where a schedule does not
    compile."""
    from tvm import tirx

    sch = Schedule(prim_func(spec))
    root = sch.get_sblock("root")
    param_bufs = list(sch.mod["main"].params)

    def reduces(blk) -> bool:
        return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(blk).iter_vars)

    def writes_param(blk) -> bool:
        return any(any(w.source.same_as(b) for b in param_bufs) for w in sch.get(blk).writes)

    for blk in sch.get_child_blocks(root):
        if not reduces(blk) and not writes_param(blk):
            try:
                sch.compute_inline(blk)
            except Exception:  # noqa: BLE001 - a producer that cannot be inlined stays a kernel of its own
                pass
    for blk in sch.get_child_blocks(root):
        loops, ivs = sch.get_loops(blk), sch.get(blk).iter_vars
        if len(loops) != len(ivs):
            raise ValueError(f"{spec.name}: stage {sch.get(blk).name_hint} is not a plain loop nest")
        spatial = [lp for lp, iv in zip(loops, ivs) if iv.iter_type != tirx.IterVar.CommReduce]
        reduce = [lp for lp, iv in zip(loops, ivs) if iv.iter_type == tirx.IterVar.CommReduce]
        if reduce:
            sch.reorder(*spatial, *reduce)
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0] if spatial else sch.add_unit_loop(blk)
        bx, tx = sch.split(fused, [None, threads])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        if reduce:
            sch.decompose_reduction(blk, reduce[0])
    return sch


def cuda_default(spec: Spec, target) -> tvm.IRModule:
    """``cuda_default_schedule``'s module."""
    return cuda_default_schedule(spec, target).mod


# T.thread_binding(<extents, maybe T.int64(n)>, thread="...", <maybe annotations={...}>)
_THREAD_LOOP = re.compile(r'T\.thread_binding\(((?:[^()]|\([^()]*\))*?),\s*thread="[A-Za-z.]+"(, annotations=\{[^{}]*\})?\)')


def serial(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` (a scheduled CUDA module) with its block and thread loops run one after another:
    the same loops, buffers and shared-memory regions, on a CPU (``tvm.compile(..., "llvm")``).
    Each thread's iteration fills the block's shared tiles itself before reading them, so the
    result is the GPU's when the schedule is right, and wrong where a tile misses what a thread
    reads. (TVM's Python has no statement mutator: the loops are rewritten in TVMScript.)"""
    text, n = _THREAD_LOOP.subn(r"T.serial(\1\2)", mod.script())
    if n == 0 or "thread_binding" in text:
        raise ValueError("serial: the module has no thread loops, or ones this rewrite does not know")
    return tvm.script.from_source(text)
