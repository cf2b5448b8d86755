"""CUDA schedule templates with knobs (TVM-facing), of the CUDA backend (backends/cuda.py): what a
GPU's scarce time is spent choosing among (``tvmconv.tuning.gpu_plan``), as the CPU side's plan
search chooses among blockings. Each template is a ``Schedule`` of the spec's compute under
``plan(spec)``, so its trace is a record like any tuned one.

Three templates:

``tiled``
    The implicit GEMM of a convolution -- M = output channels (of one group), N = output pixels,
    K = input channels x taps -- tiled for a thread block. A block computes a channels x rows x
    columns output tile; input and weight tiles are staged in shared memory ``bk`` input channels
    at a time (all the taps of each), loaded by the block's threads together; each thread
    accumulates a ``ci x yi x xi`` register tile. Standard, pointwise, grouped, dilated, 1-D,
    3-D and transposed convolutions (these read input and weights through the caches), and the
    ShuffleNet unit, convolved in source-channel order and shuffled as it is written out.
    Depthwise convolutions take its register-tiled form: the input tile in shared memory, each
    thread's own filter taps in registers (``weights="local"``), no K loop.
``dwsep``
    The depthwise-separable block as one kernel: the pointwise GEMM tiled as above, its K tile
    (``bk`` channels of the depthwise output, after its bias and activation) computed into shared
    memory by the block's threads, each element of it in registers from the input -- no
    intermediate tensor in global memory.
``effnet``
    EffNet's block as one kernel: a block's tile of the final 3x1 depthwise output; the pooled
    rows it needs (with their halo) computed into shared memory by the block's threads from the
    1x3 depthwise convolution, each element of which lives in registers.

``candidates(spec)`` gives a spec's knob settings worth timing and ``schedule(spec, knobs)`` the
scheduled module; CI runs each template's module on the CPU (``cuda_schedules.serial``) against
PyTorch.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from tvm.s_tir import Schedule

from ..spec import Spec
from ..variants.compute import Plan, ceil_div, prim_func
from ..variants.registry import VARIANTS

MAX_THREADS = 1024  # per block, every CUDA GPU since Fermi
SHARED_BYTES = 48 * 1024  # static shared memory per block, every CUDA GPU
MAX_REGISTER_TILE = 32  # accumulators per thread: past this, registers spill


@dataclass(frozen=True)
class Knobs:
    """One setting of a template's knobs. Output channels, rows and columns are each split into
    blocks x threads (``tc``, ``ty``, ``tx``) x a per-thread register tile (``ci``, ``yi``,
    ``xi``); ``bk``: input channels per shared-memory step (the GEMM's K tile); ``unroll``:
    TVM's auto-unroll limit on the block's loops; ``weights``: where the tiled template keeps the
    weight tile ("shared"; "local": each thread's own taps in registers, for depthwise; "global":
    read through the caches); ``inputs``: the input tile in "shared" or "global" memory (a
    transposed convolution's gather, whose tiles TVM cannot bound, reads both through the caches)."""

    template: str  # "tiled" | "dwsep" | "effnet"
    tc: int = 1
    ci: int = 1
    ty: int = 1
    yi: int = 1
    tx: int = 1
    xi: int = 1
    bk: int = 1
    unroll: int = 64
    weights: str = "shared"
    inputs: str = "shared"

    @property
    def threads(self) -> int:
        return self.tc * self.ty * self.tx

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Knobs":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def label(self) -> str:
        """``tiled c8x2 y4x1 x8x2 k16 u64`` (channels, rows, columns: threads x register tile),
        with `` w-local``/`` x-global`` where weights or inputs are not staged in shared memory."""
        where = "".join(f" {k}-{v}" for k, v in (("w", self.weights), ("x", self.inputs)) if v != "shared")
        return (f"{self.template} c{self.tc}x{self.ci} y{self.ty}x{self.yi} x{self.tx}x{self.xi} k{self.bk} "
                f"u{self.unroll}{where}")


# -- which template a spec takes ------------------------------------------------------------------
def template_of(spec: Spec) -> str | None:
    """The template that computes ``spec`` (None: none does; the default schedule stays): the one its
    variant's entry names for CUDA (``Variant.templates``)."""
    v = VARIANTS.get(spec.variant)
    return v.templates.get("cuda") if v is not None else None


def _depthwise(spec) -> bool:
    return spec.groups > 1 and spec.groups == spec.c_in and not spec.shuffle and not spec.transposed


def plan(spec: Spec) -> Plan:
    """The compute the templates schedule: the plain one, except for the ShuffleNet unit, whose
    plain compute reads source channel ``(c % g) * (C / g) + c // g`` inside the reduction -- an
    index TVM's region analysis cannot bound, so a block's tile would span every channel. Its
    one-lane ``ocvec`` compute convolves in source-channel order and shuffles in the epilogue."""
    return Plan(kind="ocvec", vb=1, owi=1) if getattr(spec, "shuffle", 0) else Plan()


def schedule(spec: Spec, knobs: Knobs) -> Schedule:
    """``prim_func(spec, plan(spec))`` scheduled by ``knobs``' template (raises where the knobs
    do not fit it)."""
    sch = Schedule(prim_func(spec, plan(spec)))
    {"tiled": _tiled, "dwsep": _dwsep, "effnet": _effnet}[knobs.template](sch, spec, knobs)
    return sch


# -- the templates ----------------------------------------------------------------------------------
def _tiled(sch: Schedule, spec, k: Knobs) -> None:
    names = _names(sch)
    if "wpack" in names:  # the shuffled unit's compute (``plan``): the weight as it is
        sch.compute_inline(sch.get_sblock("wpack"))
    conv = sch.get_sblock("conv")
    acc = sch.cache_write(conv, 0, "local")
    if "out" in names:  # the bias (and the shuffle), applied as the accumulators are written out
        sch.reverse_compute_inline(sch.get_sblock("out"))
    nn, c, od, oh, ow, *unit, rc, r0, r1, r2 = sch.get_loops(conv)  # (unit: the shuffled unit's lane)
    if not _depthwise(spec):
        # one group's channels at a time: TVM then knows a tile's input channels and weight rows
        # are its group's (a tile that might straddle two spans every channel to it)
        grp, c = sch.split(c, [None, spec.c_out // spec.groups])
        unit.insert(0, grp)
    blocks, threads, regs = _tile(sch, k, c, oh, ow)
    rco, rci = sch.split(rc, [None, k.bk])
    sch.reorder(nn, od, *unit, *blocks, *threads, rco, rci, r0, r1, r2, *regs)
    blk, thr = _bind(sch, [nn, od, *unit, *blocks], threads, k.unroll)
    sch.reverse_compute_at(acc, thr)
    if k.inputs == "shared":
        _shared(sch, conv, "pad" if "pad" in names else "input", rco, k.threads)
    if k.weights == "local":
        sch.compute_at(sch.cache_read(conv, _read_index(sch, conv, "weight"), "local"), thr)
    elif k.weights == "shared":
        _shared(sch, conv, "weight", rco, k.threads)
    if "pad" in names:
        sch.compute_inline(sch.get_sblock("pad"))
    sch.decompose_reduction(conv, rco)


def _dwsep(sch: Schedule, spec, k: Knobs) -> None:
    sch.compute_inline(sch.get_sblock("wpack"))  # (the identity at one channel per block)
    conv = sch.get_sblock("conv")
    acc = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_inline(sch.get_sblock("out"))
    nn, o, y, x, v, rc = sch.get_loops(conv)
    blocks, threads, regs = _tile(sch, k, o, y, x)
    rco, rci = sch.split(rc, [None, k.bk])
    sch.reorder(nn, *blocks, *threads, rco, rci, v, *regs)
    blk, thr = _bind(sch, [nn, *blocks], threads, k.unroll)
    sch.reverse_compute_at(acc, thr)
    # the K tile of the depthwise output, after its bias and activation, in shared memory; each
    # element's depthwise sum in a register of the thread that computes it
    _in_registers(sch, "dw", _in_shared(sch, "mid", rco, k.threads))
    if "pad" in _names(sch):
        sch.compute_inline(sch.get_sblock("pad"))
    _shared(sch, conv, "pointwise_weight", rco, k.threads)
    sch.decompose_reduction(conv, rco)


def _effnet(sch: Schedule, spec, k: Knobs) -> None:
    names = _names(sch)
    last = sch.get_sblock("dw_3x1")
    acc = sch.cache_write(last, 0, "local")
    if "dw_3x1_epilogue" in names:
        sch.reverse_compute_inline(sch.get_sblock("dw_3x1_epilogue"))
    sch.compute_inline(sch.get_sblock("dw_3x1_pad"))
    nn, c, y, x, *red = sch.get_loops(last)
    blocks, threads, regs = _tile(sch, k, c, y, x)
    sch.reorder(nn, *blocks, *threads, *red, *regs)
    blk, thr = _bind(sch, [nn, *blocks], threads, k.unroll)
    sch.reverse_compute_at(acc, thr)
    # the pooled rows the block's tile needs (its halo included) in shared memory, each 1x3
    # convolution output they take the maximum of in registers
    inner = _in_shared(sch, "pool", thr, k.threads)
    if "dw_1x3_epilogue" in names:
        sch.compute_inline(sch.get_sblock("dw_1x3_epilogue"))
    _in_registers(sch, "dw_1x3", inner)
    if "dw_1x3_pad" in names:
        sch.compute_inline(sch.get_sblock("dw_1x3_pad"))


# -- shared pieces ----------------------------------------------------------------------------------
def _names(sch: Schedule) -> set[str]:
    return {sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))}


def _read_index(sch: Schedule, block, buffer: str) -> int:
    for i, r in enumerate(sch.get(block).reads):
        if r.source.name == buffer:
            return i
    raise ValueError(f"block {sch.get(block).name_hint} does not read {buffer!r}")


def _bind(sch: Schedule, blocks: list, threads: list, unroll: int):
    """Fuse ``blocks`` into blockIdx.x and ``threads`` into threadIdx.x; ``unroll``: TVM's
    auto-unroll limit for everything under the block loop."""
    blk = sch.fuse(*blocks)
    thr = sch.fuse(*threads)
    sch.bind(blk, "blockIdx.x")
    sch.bind(thr, "threadIdx.x")
    if unroll:
        sch.annotate(blk, "pragma_auto_unroll_max_step", unroll)
        sch.annotate(blk, "pragma_unroll_explicit", 1)
    return blk, thr


def _tile(sch: Schedule, k: Knobs, c, y, x) -> tuple[list, list, list]:
    """Split the channel, row and column loops into blocks x threads x a register tile:
    ``([bc, by, bx], [tc, ty, tx], [ci, yi, xi])``."""
    parts = [sch.split(lp, [None, t, r]) for lp, t, r in ((c, k.tc, k.ci), (y, k.ty, k.yi), (x, k.tx, k.xi))]
    return [list(level) for level in zip(*parts)]


def _in_shared(sch: Schedule, name: str, at, threads: int):
    """Stage ``name``'s output in shared memory, computed under loop ``at`` by the block's threads
    together; returns its innermost loop."""
    block = sch.get_sblock(name)
    sch.set_scope(block, 0, "shared")
    sch.compute_at(block, at)
    return _cooperative(sch, block, at, threads)


def _in_registers(sch: Schedule, name: str, at) -> None:
    """Compute ``name``'s output under loop ``at``, in the registers of the thread that uses it."""
    block = sch.get_sblock(name)
    sch.set_scope(block, 0, "local")
    sch.compute_at(block, at)


def _cooperative(sch: Schedule, block, at, threads: int):
    """Spread the loops of ``block`` under ``at`` over the block's ``threads`` threads; returns
    the innermost loop."""
    loops = sch.get_loops(block)
    pos = next(i for i, lp in enumerate(loops) if sch.get_sref(lp).same_as(sch.get_sref(at)))
    inner = loops[pos + 1:]
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0] if inner else sch.add_unit_loop(block)
    _, t = sch.split(fused, [None, threads])
    sch.bind(t, "threadIdx.x")
    return t


def _shared(sch: Schedule, block, buffer: str, at, threads: int):
    """Stage what ``block`` reads of ``buffer`` under loop ``at`` in shared memory, loaded by the
    block's threads together."""
    cached = sch.cache_read(block, _read_index(sch, block, buffer), "shared")
    sch.compute_at(cached, at)
    _cooperative(sch, cached, at, threads)
    return cached


# -- the knob settings worth timing -----------------------------------------------------------------
def candidates(spec: Spec, limit: int = 16) -> list[Knobs]:
    """Up to ``limit`` knob settings of ``spec``'s template that fit a CUDA block (threads, shared
    memory, registers), ordered by a rough model -- outputs per byte staged, blocks enough to
    fill a GPU, little padding -- and kept varied; [] where no template computes ``spec``."""
    t = template_of(spec)
    if t is None:
        return []
    if t == "effnet":
        grid = _grid(t, spec.c, *spec.out_size, bks=(1,), channel=(1, 2, 4, 8), per_channel=(1,))
    elif t == "dwsep":
        grid = _grid(t, spec.c_out, *spec.out_size, bks=(8, 16, 32), k_extent=spec.c_mid)
    elif _depthwise(spec):
        oh, ow = spec.as3d().out_size[1:]
        grid = _grid(t, spec.c_out, oh, ow, bks=(1,), channel=(1, 2, 4, 8), per_channel=(1,), weights="local")
    else:
        s3 = spec.as3d()
        # a transposed convolution gathers its input and weights through index selects whose
        # tiles TVM cannot bound: both are read through the caches
        stage = "global" if s3.transposed else "shared"
        grid = _grid(t, s3.c_out // s3.groups, *s3.out_size[1:], bks=(4, 8, 16), k_extent=s3.c_in // s3.groups,
                     inputs=stage, weights=stage, whole=s3.groups > 1)
    fit = [kn for kn in grid if _fits(spec, kn)]
    fit.sort(key=lambda kn: _cost(spec, kn))
    return _varied(fit, limit)


def _grid(template: str, m: int, oh: int, ow: int, *, bks, channel=(2, 4, 8, 16, 32), per_channel=(1, 2, 4),
          k_extent: int = 1, weights: str = "shared", inputs: str = "shared", whole: bool = False):
    """Every combination of the usual thread and register tiles, clipped to the output's extents
    (a tile larger than an extent only adds padding); ``whole``: channel tiles that divide ``m``
    (a group's channels: TVM bounds the region a tile reads only when no tile can straddle two)."""
    if whole:
        tiles = [(bm // ci, ci) for bm in range(1, min(m, 64) + 1) if m % bm == 0 for ci in per_channel if bm % ci == 0]
    else:
        tiles = list(itertools.product(channel, per_channel))
    out = set()
    for (tc, ci), ty, yi, tx, xi, bk in itertools.product(tiles, (1, 2, 4, 8), (1, 2), (4, 8, 16, 32), (1, 2, 4), bks):
        if tc * ci > 2 * m and tc * ci > 1 or ty * yi > 2 * oh and ty * yi > 1 or tx * xi > 2 * ow and tx * xi > 4:
            continue
        if not 32 <= tc * ty * tx <= 512:
            continue
        out.add(Knobs(template, tc=tc, ci=ci, ty=ty, yi=yi, tx=tx, xi=xi, bk=min(bk, k_extent), weights=weights,
                      inputs=inputs))
    return out


def _tile_inputs(spec, kn: Knobs) -> tuple[int, int]:
    """(input elements, weight elements) a block stages per K step."""
    if kn.template == "effnet":
        rows = kn.ty * kn.yi + 2
        return kn.tc * rows * kn.tx * kn.xi, 0
    if kn.template == "dwsep":
        return kn.bk * kn.ty * kn.yi * kn.tx * kn.xi, kn.tc * kn.ci * kn.bk
    s3 = spec.as3d()
    kd, kh, kw = s3.kernel
    sd, sh, sw = s3.stride
    dd, dh, dw = s3.dilation
    if s3.transposed:  # a tile's outputs gather from about 1/stride as many input rows, plus the taps'
        rows = ceil_div(kn.ty * kn.yi - 1 + (kh - 1) * dh, sh) + 1
        cols = ceil_div(kn.tx * kn.xi - 1 + (kw - 1) * dw, sw) + 1
        depth = ceil_div((kd - 1) * dd, sd) + 1
    else:
        rows = (kn.ty * kn.yi - 1) * sh + (kh - 1) * dh + 1
        cols = (kn.tx * kn.xi - 1) * sw + (kw - 1) * dw + 1
        depth = (kd - 1) * dd + 1
    bc = kn.tc * kn.ci
    in_ch = max(1, bc // max(1, s3.c_out // s3.c_in)) if _depthwise(spec) else kn.bk
    staged = in_ch * depth * rows * cols if kn.inputs == "shared" else 0
    return staged, (bc * kn.bk * kd * kh * kw if kn.weights == "shared" else 0)


def _fits(spec, kn: Knobs) -> bool:
    x, w = _tile_inputs(spec, kn)
    return (kn.threads <= MAX_THREADS and (x + w) * 4 <= SHARED_BYTES
            and kn.ci * kn.yi * kn.xi <= MAX_REGISTER_TILE)


def _extents(spec) -> tuple[int, int, int, int]:
    """(output channels per block axis, rows, columns, other blocks) of the kernel's output."""
    t = template_of(spec)
    if t == "effnet":
        return spec.c, *spec.out_size, spec.n
    if t == "dwsep":
        return spec.c_out, *spec.out_size, spec.n
    s3 = spec.as3d()
    return s3.c_out, s3.out_size[1], s3.out_size[2], s3.n * s3.out_size[0]


def _cost(spec, kn: Knobs) -> float:
    """Smaller is better: bytes staged per output, times the padding's waste, times how far the
    grid falls short of a GPU's ~132 multiprocessors x 2 blocks."""
    m, oh, ow, rest = _extents(spec)
    bm, bh, bw = kn.tc * kn.ci, kn.ty * kn.yi, kn.tx * kn.xi
    x, w = _tile_inputs(spec, kn)
    per_out = (x + w) / (bm * bh * bw * max(1, kn.bk))
    blocks = ceil_div(m, bm) * ceil_div(oh, bh) * ceil_div(ow, bw) * rest
    waste = ceil_div(m, bm) * bm * ceil_div(oh, bh) * bh * ceil_div(ow, bw) * bw / (m * oh * ow)
    return per_out * waste * max(1.0, 264 / blocks) ** 0.5


def _varied(ranked: list[Knobs], limit: int) -> list[Knobs]:
    """The first ``limit`` of ``ranked``, at most two per thread-tile shape, so the set spans shapes."""
    out, seen = [], {}
    for kn in ranked:
        shape = (kn.tc, kn.ty, kn.tx)
        if seen.get(shape, 0) < 2:
            out.append(kn)
            seen[shape] = seen.get(shape, 0) + 1
        if len(out) == limit:
            break
    return out
