"""Schedules for the TIR functions of a whole model that are not tvmconv kernels, on LLVM CPUs.

Relax's LegalizeOps lowers every op (pooling, adds, activations, the classifier's matmul) to TIR
that runs on one thread in scalar loops; fused by FuseOps/FuseTIR, a network's non-convolution
work is a few dozen such functions. ``schedule_module`` schedules each one the way TVM's dlight
does, rule by rule, the first that fits: s_tir.dlight's CPU ``GEMV``, ``VectorMatrix`` here (the
classifier, whose weight the importer folds transposed), ``RowReduction`` here (a mean over an
activation's pixels: squeeze-excitation, global pooling), ``Window`` here (max pooling), dlight's
``Reduction`` (softmax-like chains), then ``Parallel`` here, which fits any function in normal form.
Functions already scheduled (the tvmconv kernels carry ``tirx.is_scheduled``) are left alone.
"""

from __future__ import annotations

import numpy as np
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import get_extent, try_inline
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

# below this many iterations of its spatial loops a block runs on one thread: a parallel launch
# costs microseconds (backends/launch.py), an element nanoseconds
MIN_PARALLEL = 4096


class _Rule(CPUScheduleRule):
    """A rule for vectors of ``lanes`` float32 elements (the target's)."""

    def __init__(self, lanes: int = 8):
        self.lanes = lanes

    def _normalized(self, func, target):
        """``(Schedule, its blocks' infos)`` of ``func`` in dlight's normal form, or None."""
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        return None if infos is None else (sch, infos)

    def _reduction(self, func, target):
        """``(Schedule, its blocks' infos after inlining, n, the reduction's loops)`` where ``func`` is
        one reduction, its ``n`` spatial loops before its reduction loops, with injective blocks
        after it; else None."""
        found = self._normalized(func, target)
        if found is None:
            return None
        sch, infos = found
        infos = try_inline(sch, infos)
        if infos[0].is_injective() or not all(i.is_injective() for i in infos[1:]):
            return None
        kinds = infos[0].dom_kind()
        n = len(kinds) - len(kinds.lstrip("S"))
        loops = sch.get_loops(infos[0].block_rv)
        if not n or set(kinds[n:]) != {"R"} or len(loops) != len(kinds):
            return None
        return sch, infos, n, loops


class Parallel(_Rule):
    """Every block that is not inlined into another: an injective one as ``_injective`` says, a
    reduction with its spatial loops fused, moved outside its reduction loops and split over the
    threads. ``lanes``: float32 elements in a vector of the target."""

    def apply(self, func, target, _tunable):
        found = self._normalized(func, target)
        if found is None:
            return None
        (sch, infos), lanes = found, self.lanes
        for info in try_inline(sch, infos):
            loops, kinds = sch.get_loops(info.block_rv), info.dom_kind()
            if not loops or len(loops) != len(kinds) or "O" in kinds:
                continue
            spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
            if not spatial:
                continue
            if info.is_injective():
                self._injective(sch, info.block_rv, loops)
                continue
            reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
            sch.reorder(*spatial, *reduce)
            fused = sch.fuse(*spatial)
            extent = get_extent(sch, fused)
            if not isinstance(extent, int):
                continue
            if reduce and extent % lanes == 0 and _reads_along_spatial(sch.get(info.block_rv)):
                # a vector-matrix product (the classifier: x (1, K) times W (K, N)): the reduction
                # inside a block of whole vectors of outputs, each step a contiguous run of a row of W.
                # Blocks of 4 or 5 vectors (at least 8 blocks, for the threads): each step then reads
                # whole cache lines of W, and as many independent accumulators hide the FMA latency
                # (one vector a block: 1280x1000 114 -> 96 us hot, 367 -> 285 us cold, 960x1280
                # 190 -> 85 us hot on a Zen 3, benchmarks/results/x86-avx2-zen3-vector-matrix-ab.md)
                vecs = extent // lanes
                blk = next((b for b in (4, 5, 3, 2) if vecs % b == 0 and vecs // b >= 8), 1)
                outer, mid, inner = sch.split(fused, factors=[None, blk, lanes])
                sch.reorder(outer, *reduce, mid, inner)
                sch.unroll(mid)
                sch.vectorize(inner)
                if vecs // blk >= 2:
                    sch.parallel(outer)
                sch.decompose_reduction(info.block_rv, reduce[0])  # (the zeroing: a loop of its own)
            elif extent >= 2:
                sch.parallel(fused)
        return sch

    def _injective(self, sch, block_rv, loops: list) -> None:
        """An injective block's loops: the trailing ones that every read indexes as the block
        writes (or not at all) fused into one inner loop, vectorised where ``lanes`` divide it, the
        rest fused and split over the threads. Fusing all of them would put the inner vector across
        rows where a read is not the write's index (ShuffleNet's channel shuffle: concatenate,
        reshape, transpose, split; a channel's scale broadcast over its pixels): its lanes then load
        one by one. Left whole, the inner loop reads a row in order, and LLVM vectorises it where
        it holds no whole vectors (ShuffleNetV2's shuffles of 28 x 28, 14 x 14 and 7 x 7 planes alone:
        67-129 -> 10-20 us on a Zen 3, benchmarks/results/x86-avx2-zen3-generic-rules-ab.md)."""
        extents = [get_extent(sch, lp) for lp in loops]
        if not all(isinstance(e, int) for e in extents):
            return
        m = _in_place_tail(sch.get(block_rv))  # (normal form: one iteration variable per loop)
        total, width = int(np.prod(extents)), int(np.prod(extents[len(loops) - m:]))
        inner = sch.fuse(*loops[len(loops) - m:]) if m > 1 else loops[-1]
        if m == len(loops):  # every loop: one, split into vectors and parallel chunks of them
            if width % self.lanes == 0 and width >= 2 * self.lanes:
                outer, vec = sch.split(inner, factors=[None, self.lanes])
                sch.vectorize(vec)
                inner = outer
            if total >= MIN_PARALLEL:
                sch.parallel(inner)
            return
        if width % self.lanes == 0:
            sch.vectorize(sch.split(inner, factors=[None, self.lanes])[1])
        outer = sch.fuse(*loops[:len(loops) - m]) if len(loops) - m > 1 else loops[0]
        if total >= MIN_PARALLEL and get_extent(sch, outer) > 1:
            sch.parallel(outer)


class VectorMatrix(Parallel):
    """``Parallel`` for a function with a reduction that reads its largest input along a spatial
    axis (a classifier's ``x @ W.T`` with ``W.T`` folded into a (K, N) constant): taken before
    dlight's ``Reduction``, which would reduce each output alone down a column of W."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or not any(not i.is_injective() and _reads_along_spatial(sch.get(i.block_rv)) for i in infos):
            return None
        return super().apply(func, target, tunable)


class RowReduction(_Rule):
    """A reduction over the innermost axes of its input (a mean over each channel's H x W) with
    injective blocks after it: each output's reduction in partial sums of whole vectors, 4 vectors
    wide where the row allows (``rfactor``: 4 independent chains of vector adds, then one short sum),
    the outputs split over the threads. dlight's ``Reduction`` adds one element at a time into one
    scalar, a chain of dependent adds: EfficientNet-B0's squeeze-excitation means took 2.2-6.7x as
    long (32 x 112 x 112: 226 against 58 us on a Zen 3, benchmarks/results/
    x86-avx2-zen3-reduction-ab.md). None where the reduction's extent holds no whole
    half-vector (7 x 7: dlight's rule takes it)."""

    def apply(self, func, target, _tunable):
        found = self._reduction(func, target)
        if found is None:
            return None
        sch, infos, n, loops = found
        if not _reads_along_reduction(sch.get(infos[0].block_rv)):
            return None
        extents = [get_extent(sch, lp) for lp in loops[n:]]
        if not all(isinstance(e, int) for e in extents):
            return None
        extent = int(np.prod(extents))
        width = next((w for w in (4 * self.lanes, 2 * self.lanes, self.lanes, self.lanes // 2)
                      if w >= 2 and extent % w == 0 and extent >= w), None)
        if width is None:
            return None
        _, inner = sch.split(sch.fuse(*loops[n:]), factors=[None, width])
        partial = sch.rfactor(inner, factor_axis=n)  # (the partial sums' vector: the last axis)
        outputs = sch.fuse(*sch.get_loops(infos[-1].block_rv)[:n])  # (the outputs' loops: all but the
        if get_extent(sch, outputs) > 1:                            # partial sums' where it is the last)
            sch.parallel(outputs)
        for info in reversed(infos[:-1]):
            sch.compute_at(info.block_rv, outputs, preserve_unit_loops=True)
        sch.compute_at(partial, outputs, preserve_unit_loops=True)
        lanes_loop, *_, steps = sch.get_loops(partial)[1:]  # (under the outputs: lanes, units, steps)
        sch.reorder(steps, lanes_loop)
        sch.vectorize(lanes_loop)
        return sch


class Window(_Rule):
    """A reduction over a small window of its input for each output pixel (max pooling): the
    leading spatial loops fused and split over the threads, the last one (an output row) in whole
    vectors innermost, under the window's loops, which are unrolled. ``Parallel`` ran each output
    alone over its window, scalar: a 3 x 3 stride-2 pool of 24 x 112 x 112 took 255 us, so 103 us
    (ResNet-18's of 64 x 112 x 112: 830 -> 383 us; Zen 3,
    benchmarks/results/x86-avx2-zen3-generic-rules-ab.md). TVM's ``vectorize``
    refuses a loop of a reduction block; LLVM vectorises the row of whole vectors. None where the
    window holds more than ``MAX_WINDOW`` elements or the input is not read along the row."""

    MAX_WINDOW = 64

    def apply(self, func, target, _tunable):
        found = self._reduction(func, target)
        if found is None:
            return None
        sch, infos, n, loops = found
        if len(infos) != 1 or n < 2:
            return None
        info = infos[0]
        extents = [get_extent(sch, lp) for lp in loops]
        if not all(isinstance(e, int) for e in extents) or int(np.prod(extents[n:])) > self.MAX_WINDOW \
                or extents[n - 1] < self.lanes or not _reads_along_row(sch.get(info.block_rv), n):
            return None
        row, window = loops[n - 1], loops[n:]
        outer = sch.fuse(*loops[:n - 1]) if n > 2 else loops[0]
        steps, lanes = sch.split(row, factors=[None, self.lanes]) if extents[n - 1] % self.lanes == 0 \
            else (row, None)
        sch.reorder(outer, steps, *window, *([lanes] if lanes is not None else []))
        if int(np.prod(extents[:n])) >= MIN_PARALLEL and int(np.prod(extents[:n - 1])) > 1:
            sch.parallel(outer)
        sch.decompose_reduction(info.block_rv, window[0])
        for lp in window:
            sch.unroll(lp)
        return sch


def _reads_along_row(block, n: int) -> bool:
    """Whether ``block``'s largest read has the ``n``-th (last spatial) iteration variable in its
    last index: its window slides along the input's rows."""
    from tvm.tirx.analysis import undefined_vars

    last = _last_index(block)
    var = block.iter_vars[n - 1].var
    return last is not None and any(v.same_as(var) for v in undefined_vars(last))


def _in_place_tail(block) -> int:
    """How many trailing iteration variables of ``block`` (at least one) every read indexes as the
    block's write does -- its last indices, simplified within the variables' ranges, are those
    variables in order -- or uses none of (a broadcast)."""
    from tvm.sym import Analyzer
    from tvm.tirx.analysis import undefined_vars
    from tvm_ffi import structural_equal

    analyzer = Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, iv.dom)
    loop_vars = [iv.var for iv in block.iter_vars]
    written = [analyzer.simplify(v) for v in loop_vars]  # (a variable of one value simplifies to 0)
    reads = []  # per read: its simplified indices and the variables each uses
    for read in block.reads:
        index = [analyzer.simplify(r.min) for r in read.region]
        reads.append((index, [undefined_vars(e) for e in index]))

    def in_place(m: int) -> bool:
        tail = loop_vars[-m:]
        for index, used in reads:
            uses = [any(v.same_as(t) for v in vs for t in tail) for vs in used]
            if not any(uses):
                continue
            if len(index) < m or any(uses[:-m]) or \
                    not all(structural_equal(e, w) for e, w in zip(index[-m:], written[-m:])):
                return False
        return True

    m = 1
    while m < len(loop_vars) and in_place(m + 1):
        m += 1
    return m


def _reads_along_reduction(block) -> bool:
    """Whether ``block`` reads its largest input along its reduction: the last index of that read
    is one of its reduction variables (a mean over each channel's contiguous H x W)."""
    return _last_index_is(block, tirx.IterVar.CommReduce)


def _reads_along_spatial(block) -> bool:
    """Whether ``block`` (a reduction) reads its largest input contiguously along a spatial axis:
    the last index of that read is one of its data-parallel iteration variables."""
    return _last_index_is(block, tirx.IterVar.DataPar)


def _last_index_is(block, iter_type) -> bool:
    """Whether the last index of ``block``'s largest read is one of its iteration variables of ``iter_type``."""
    last = _last_index(block)
    return last is not None and any(last.same_as(iv.var) for iv in block.iter_vars if iv.iter_type == iter_type)


def _last_index(block):
    """The last index of ``block``'s largest read (by its constant extents), or None: it reads nothing."""
    reads = sorted(block.reads, key=_size)
    return reads[-1].region[-1].min if reads else None


def _size(region) -> int:
    extents = [int(x.extent) for x in region.region if isinstance(x.extent, tirx.IntImm)]
    return len(region.region) and int(np.prod(extents))


def _as_before(new, old):
    """``new`` under ``old``'s global symbol (a Schedule names its function "main")."""
    symbol = old.attrs.get("global_symbol") if old.attrs is not None else None
    return new.with_attr("global_symbol", symbol) if symbol is not None else new.without_attr("global_symbol")


def schedule_module(mod, target, lanes: int):
    """``mod`` (an IRModule of PrimFuncs and Relax functions) with every PrimFunc not yet
    scheduled given the first rule that fits, for ``target`` (a tvm.target.Target of kind llvm)
    whose vectors hold ``lanes`` float32 elements; returns ``(mod, {rule name: functions
    scheduled})``."""
    import tvm

    rules = [dl.cpu.GEMV(), VectorMatrix(lanes), RowReduction(lanes), Window(lanes), dl.cpu.Reduction(),
             Parallel(lanes)]
    counts: dict[str, int] = {}
    with target:
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", 0) == 1:
                continue
            for rule in rules:
                try:
                    sch = rule.apply(func, target, False)
                except Exception:  # noqa: BLE001 - a rule that does not fit after all: the next one
                    sch = None
                if sch is not None:
                    sch = sch[0] if isinstance(sch, list) else sch
                    mod[gv] = _as_before(sch.mod["main"], func).with_attr("tirx.is_scheduled", True)
                    counts[type(rule).__name__] = counts.get(type(rule).__name__, 0) + 1
                    break
            else:
                counts["none"] = counts.get("none", 0) + 1
    return tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs), counts


__all__ = ["schedule_module", "Parallel", "RowReduction", "VectorMatrix", "Window"]
