"""Default (untuned) CPU schedules (TVM-facing), of the LLVM-CPU backend (backends/llvm.py).

Three schedules cover the catalogue:

* ``ocvec`` -- convolutions with at least a vector of output channels per group. Weights are
  packed ``[g, oc/vb, ic, kd, kh, kw, vb]`` inside the kernel, each thread owns output rows, and a
  register tile of ``owi`` output pixels by ``vb`` output channels accumulates in registers while
  the reduction runs over (ic, kd, kh, kw): one broadcast input value feeds ``vb/V`` vector FMAs.
  The NCHW write-back (bias, channel shuffle) happens on the tile, while it is still in cache.
* ``wvec`` -- depthwise and few-channels-per-group convolutions: vectorised along the output
  width, ``owi`` pixels accumulated in registers. Each parallel task owns ``rows`` output rows of
  one channel and first stages the padded input rows they read in a small per-task buffer (in L1),
  so the padding never costs a pass over the whole input; the register tile is cropped straight
  into the NCHW output.
* ``generic`` -- everything else: per stage, parallel outer loops, vectorised innermost spatial
  loop with the reduction hoisted above it. Never pathological, rarely optimal.

Every primitive that may not apply to an unusual shape is tried and skipped on ScheduleError; a
schedule that does not compile is replaced by the unscheduled function by the builder.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from tvm.s_tir import Schedule
from tvm.s_tir.schedule import ScheduleError

from ..spec import Spec

from ..variants import DepthwiseSeparableSpec
from ..variants.compute import Plan, prim_func

log = logging.getLogger("tvmconv")


def default_for(spec: Spec, target):
    """``default_schedule`` with the plan, vector lanes and cores of ``target`` (a TargetInfo)."""
    return default_schedule(spec, target.backend.default_plan(spec), target.lanes(spec.dtype), target.num_cores)


def trace_json(sch: Schedule) -> list:
    """``sch``'s trace as the plain JSON a ``ScheduleRecord`` holds (``Trace.apply_json_to_schedule``
    replays it), without importing MetaSchedule (an op must not import the search)."""
    from tvm_ffi import Array, Map
    from tvm.tirx import FloatImm, IntImm

    def plain(obj):
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        if isinstance(obj, (IntImm, FloatImm)):
            return obj.value
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, (Array, list, tuple)):
            return [plain(x) for x in obj]
        if isinstance(obj, (Map, dict)):
            return {plain(k): plain(v) for k, v in obj.items()}
        raise TypeError(f"a trace holds {type(obj).__name__}")

    return plain(sch.trace.as_json())


def default_schedule(spec: Spec, plan: Plan, vector_lanes: int, cores: int):
    """Return ``(sch, plan)``: the default schedule of ``spec`` (``sch.mod`` is the IRModule,
    ``sch.trace`` replays it on ``prim_func(spec, plan)``)."""
    sch = Schedule(prim_func(spec, plan))
    try:
        schedule_into(sch, spec, plan, vector_lanes, cores)
    except (ScheduleError, ValueError, RuntimeError) as exc:
        log.warning("tvmconv: %s schedule does not apply to %s (%s); using the generic schedule",
                    plan.kind, spec.name, str(exc).splitlines()[0])
        plan = Plan(serial=plan.serial)
        sch = Schedule(prim_func(spec, plan))
        schedule_into(sch, spec, plan, vector_lanes, cores, generic_only=True)
    return sch, plan


def schedule_into(sch: Schedule, spec: Spec, plan: Plan, vector_lanes: int, cores: int, sample: bool = False,
                  reduce_first: bool = True, generic_only: bool = False) -> None:
    """Schedule ``sch`` (on ``prim_func(spec, plan)``) in place with the default schedule; raises
    ScheduleError (or ValueError) where the plan's specific schedule does not apply.

    ``sample``: the tunable sketch. The register-tile and row splits become
    ``sample_perfect_tile`` decisions (the plan's values where they divide the loop) and an
    explicit-unroll depth is sampled, so MetaSchedule's mutators and cost model search around the
    default. ``reduce_first``: the reduction runs channels outermost (else kernel taps outermost).
    ``generic_only``: only the generic schedule (the fallback where the specific one failed)."""
    specific = None
    if generic_only:
        pass
    elif isinstance(spec, DepthwiseSeparableSpec):
        specific = _schedule_dwsep
    elif plan.kind == "ocvec":
        specific = functools.partial(_schedule_ocvec, shuffled=bool(getattr(spec, "shuffle", 0)),
                                     reduce_first=reduce_first)
    elif plan.kind == "wvec":
        specific = _schedule_wvec
    elif plan.kind == "staged":
        specific = _schedule_stages
    if plan.serial:
        cores = 1
    done: set[str] = set()  # blocks a specific schedule has placed; the generic one skips them
    tiles = _Tiles(sch, sample)
    if specific is not None:
        specific(sch, plan, vector_lanes, done, tiles=tiles)
    _schedule_generic(sch, vector_lanes, cores, done)
    if sample and _block(sch, "root") is not None:
        depth = sch.sample_categorical([0, 16, 64, 512], [0.25, 0.25, 0.25, 0.25], decision=0)
        sch.annotate(sch.get_sblock("root"), "meta_schedule.unroll_explicit", depth)


class _Tiles:
    """Splits of a loop into (outer, inner): a fixed factor, or in the tunable sketch a sampled
    perfect tile whose first decision is that factor (when it divides the loop)."""

    def __init__(self, sch: Schedule, sample: bool):
        self.sch, self.sample = sch, sample

    def split(self, loop, factor: int, max_inner: int = 16):
        sch = self.sch
        factor = max(1, int(factor))
        ext = _extent(sch, loop)
        if self.sample and ext and ext > 1:
            decision = [ext // factor, factor] if ext % factor == 0 and factor <= max_inner else None
            f = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner, decision=decision)
            return sch.split(loop, f)
        return sch.split(loop, [None, factor])


def _try(fn, *args):
    try:
        return fn(*args)
    except (ScheduleError, ValueError, IndexError) as exc:  # an inapplicable primitive: skip it
        log.debug("schedule step %s skipped: %s", getattr(fn, "__name__", fn), str(exc).splitlines()[0])
        return None


def _placed(fn, *args) -> bool:
    """Apply a placement primitive; False (and nothing changed) where it does not apply."""
    try:
        fn(*args)
        return True
    except (ScheduleError, ValueError, RuntimeError):
        return False


def _block(sch: Schedule, name: str):
    try:
        return sch.get_sblock(name)
    except (ScheduleError, ValueError):
        return None


def _extent(sch: Schedule, loop) -> int | None:
    ext = sch.get(loop).extent
    return int(ext) if hasattr(ext, "value") or isinstance(ext, int) else None


def _register_tile(sch: Schedule, block, parallel_loops, serial_loops, tile_loops, vec_loop, reduce_loops,
                   V: int, parallel: bool = True, keep_units: bool = False):
    """Accumulate ``block`` in a local register tile.

    ``parallel_loops`` are fused and run in parallel, then ``serial_loops`` in order; under them,
    the reduction loops run around the unrolled ``tile_loops`` (pairs of outer, inner) and the
    vectorised ``vec_loop`` (split into vectors of V lanes). A pair's outer loop is None where it
    is already among the parallel loops. Returns the loop under which the tile is written back, and
    the write-back block. ``keep_units``: the sketch keeps unit loops, so that every sampled tile
    gives the trace's loop queries the same number of loops.
    """
    if serial_loops:
        sch.reorder(*parallel_loops, *serial_loops)
    fused = sch.fuse(*parallel_loops) if len(parallel_loops) > 1 else parallel_loops[0]
    outer_tile = [t for t in tile_loops if t is not None]
    vext = _extent(sch, vec_loop)
    if vext and vext > V and vext % V == 0:
        vo, vi = sch.split(vec_loop, [None, V])
        inner = [vo, vi]
    else:
        inner = [vec_loop]
    outers = [t[0] for t in outer_tile if t[0] is not None]
    sch.reorder(fused, *serial_loops, *outers, *reduce_loops, *[t[1] for t in outer_tile], *inner)
    if parallel:
        sch.parallel(fused)
    for t in outer_tile:
        sch.unroll(t[1])
    if len(inner) == 2:
        sch.unroll(inner[0])
    sch.vectorize(inner[-1])
    anchor = outers[-1] if outers else (serial_loops[-1] if serial_loops else fused)
    if reduce_loops and _extent(sch, reduce_loops[-1]) and _extent(sch, reduce_loops[-1]) <= 7:
        sch.unroll(reduce_loops[-1])
    local = sch.cache_write(block, 0, "local")
    sch.reverse_compute_at(local, anchor, preserve_unit_loops=keep_units)
    _try(lambda: sch.vectorize(sch.get_loops(local)[-1]))
    sch.decompose_reduction(block, reduce_loops[0])
    return anchor, local


def _epilogue_at(sch: Schedule, copy_block, anchor, done: set[str], out_name: str):
    """Write the NCHW output from the register tile: fold the tile's copy-back into the epilogue
    and compute that epilogue right after the tile. Falls back to a separate parallel pass."""
    out = _block(sch, out_name)
    if out is None:
        return
    try:
        sch.reverse_compute_at(out, anchor)
    except (ScheduleError, ValueError, RuntimeError):  # TVM raises ValueError on unaligned regions
        return
    _try(sch.compute_inline, copy_block)
    done.add(out_name)


def _schedule_ocvec(sch: Schedule, plan: Plan, V: int, done: set[str], shuffled: bool = False, prefix: str = "",
                    tiles: "_Tiles | None" = None, reduce_first: bool = True):
    tiles = tiles or _Tiles(sch, False)
    conv = sch.get_sblock(prefix + "conv")
    loops = sch.get_loops(conv)
    n, cb, od, oh, ow, v = loops[:6]
    red = loops[6:]
    if not reduce_first:  # kernel taps outermost, channels innermost
        red = red[1:] + red[:1]
    owo, owi = tiles.split(ow, plan.owi)
    tile = [(owo, owi)]
    if tiles.sample:  # the sketch may also stack output rows and channel blocks in the register tile
        oh, ohi = tiles.split(oh, 1, max_inner=4)
        cb, cbi = tiles.split(cb, 1, max_inner=4)
        sch.reorder(n, cb, od, oh, cbi, ohi)  # the parallel loops adjacent, for the fuse
        tile[:0] = [(None, cbi), (None, ohi)]
    anchor, local = _register_tile(sch, conv, [n, cb, od, oh], [], tile, v, red, V, not plan.serial, tiles.sample)
    done.add(prefix + "conv")
    if not shuffled:  # a shuffled tile's channels are scattered: write it back in its own pass
        _epilogue_at(sch, local, anchor, done, prefix + "out")
    wpack = sch.get_sblock(prefix + "wpack")
    wl = sch.get_loops(wpack)
    fused = sch.fuse(wl[0], wl[1])
    if not plan.serial:
        sch.parallel(fused)
    _try(sch.vectorize, wl[-1])
    done.add(prefix + "wpack")


def _schedule_wvec(sch: Schedule, plan: Plan, V: int, done: set[str], prefix: str = "",
                   tiles: "_Tiles | None" = None):
    tiles = tiles or _Tiles(sch, False)
    conv = sch.get_sblock(prefix + "conv")
    loops = sch.get_loops(conv)
    n, c, od, oh, ow = loops[:5]
    red = loops[5:]
    # (a pixel tile's rows are in its register tile: the sketch keeps them as planned, each row a whole
    # vector tile, and samples the width; a sampled row count changed which loops the tile unrolls)
    oho, ohi = (sch.split(oh, [None, max(1, plan.rows)]) if plan.vb > 1 else
                tiles.split(oh, max(1, plan.rows), max_inner=max(plan.rows, 16)))
    owo, owi = tiles.split(ow, plan.owi, max_inner=max(plan.owi, 4 * V))
    if plan.vb > 1:  # (a pointwise layer's pixel tile, ``blocking._pixel_tile``: channels x rows x width)
        co, ci = sch.split(c, [None, plan.vb])
        outer = [co, n, od, oho] if plan.channels_outer else [n, od, oho, co]
        sch.reorder(*outer, owo, ci, ohi)
        anchor, local = _register_tile(sch, conv, outer, [owo], [(None, ci), (None, ohi)], owi, red, V,
                                       not plan.serial, tiles.sample)
    else:
        anchor, local = _register_tile(sch, conv, [n, c, od, oho], [ohi, owo], [], owi, red, V, not plan.serial,
                                       tiles.sample)
    for r in red[1:]:  # the kernel taps (the channel loop, first, may be long)
        if (_extent(sch, r) or 99) <= 7:
            _try(sch.unroll, r)
    done.add(prefix + "conv")
    task = sch.get_loops(conv)[0]
    phase = _block(sch, prefix + "phase")  # (a width stride's staged rows by column phase: compute._phase_split)
    if phase is not None and _placed(sch.compute_at, phase, task, tiles.sample):
        p, j = sch.get_loops(phase)[-2:]
        sch.reorder(j, p)  # each step reads ``stride`` adjacent columns: LLVM loads them as vectors and deinterleaves
        _try(sch.unroll, p)
        done.add(prefix + "phase")
    pad = _block(sch, prefix + "pad")
    if pad is not None and plan.vb > 1:  # a pixel tile's rows widened to whole vectors: padded once, not per task
        pl = sch.get_loops(pad)  # (per task, every block of channels copied the whole input again: 2-3x slower)
        sch.parallel(sch.fuse(*pl[:2]))
        _try(sch.vectorize, sch.split(pl[-1], [None, V])[-1])
        done.add(prefix + "pad")
    elif pad is not None and _placed(sch.compute_at, pad, task, tiles.sample):
        pl = sch.get_loops(pad)
        ext = _extent(sch, pl[-1]) if pl else None
        if ext and ext % V == 0:  # an odd-length vector (predicated, strided) is slower than LLVM's own loop
            _try(sch.vectorize, pl[-1])
        done.add(prefix + "pad")
    _epilogue_at(sch, local, anchor, done, prefix + "out")
    out = _block(sch, prefix + "out")
    if plan.vb > 1 and out is not None and prefix + "out" in done:  # its rows come out of the tile in vectors
        last = sch.get_loops(out)[-1]
        ext = _extent(sch, last) or 1
        if ext % V == 0:
            _try(sch.vectorize, sch.split(last, [None, V])[-1])
        elif ext > V and not tiles.sample:  # a row of 14 on AVX2: a vector and one of 6 lanes (a lane-dependent
            # guard would be scalar). Not in the search's sketch: a partition's loops follow its sampled extent
            head, tail = sch.loop_partition(last, [ext - ext % V, None])
            _try(sch.vectorize, sch.split(head, [None, V])[-1])
            _try(sch.vectorize, tail)
        elif ext > 1 and not tiles.sample:  # a row of 7: vectors of 4, 2 and 1 lanes (left to
            # ``build._vectorize_output``, the tile's channels became the vector: a scatter per row)
            sizes = [b for b in (8, 4, 2, 1) if ext & b]
            for part in sch.loop_partition(last, [*sizes[:-1], None]) if len(sizes) > 1 else [last]:
                _try(sch.vectorize, part)


_STAGE_SCHEDULES = {"ocvec": _schedule_ocvec, "wvec": _schedule_wvec}


def _schedule_stages(sch: Schedule, plan: Plan, V: int, done: set[str], tiles: "_Tiles | None" = None):
    """A chain of convolutions in one kernel (``Plan.stages`` with their stage-name prefixes)."""
    for prefix, stage in plan.stages:
        fn = _STAGE_SCHEDULES.get(stage.kind)
        if fn is not None:
            fn(sch, dataclasses.replace(stage, serial=plan.serial), V, done, prefix=prefix, tiles=tiles)


def _schedule_dwsep(sch: Schedule, plan: Plan, V: int, done: set[str], tiles: "_Tiles | None" = None):
    """Depthwise-separable in one kernel: each thread owns output rows; the depthwise row that
    feeds them is computed first into a per-thread row buffer (never a full tensor), then the
    pointwise register tiles read it for every block of output channels."""
    conv = sch.get_sblock("conv")
    n, o, y, x, v, rc = sch.get_loops(conv)
    tiles = tiles or _Tiles(sch, False)
    xo, xi = tiles.split(x, plan.owi)
    tile = [(xo, xi)]
    if tiles.sample:  # the sketch may stack output rows and channel blocks in the register tile
        y, yi = tiles.split(y, 1, max_inner=4)
        o, oi = tiles.split(o, 1, max_inner=4)
        tile[:0] = [(None, oi), (None, yi)]
    anchor, local = _register_tile(sch, conv, [n, y], [o], tile, v, [rc], V, not plan.serial, tiles.sample)
    done.add("conv")
    _epilogue_at(sch, local, anchor, done, "out")
    row = sch.get_loops(conv)[0]
    for name in ("mid", "dw", "pad"):
        blk = _block(sch, name)
        if blk is not None:
            sch.compute_at(blk, row, tiles.sample)  # (the sketch keeps unit loops: see _register_tile)
            done.update((name,))
    dw = sch.get_sblock("dw")
    dl = sch.get_loops(dw)[1:]  # c, x, then the kernel taps (unit loops are gone)
    n_red = sum(1 for iv in sch.get(dw).iter_vars if iv.iter_type == 2 and int(iv.dom.extent) > 1)
    red, spatial = (dl[len(dl) - n_red:], dl[:len(dl) - n_red])
    if red and spatial:
        sch.reorder(*spatial[:-1], *red, spatial[-1])
        sch.decompose_reduction(dw, red[0])
    if spatial:
        _try(sch.vectorize, spatial[-1])
    _try(lambda: sch.vectorize(sch.get_loops(sch.get_sblock("mid"))[-1]))
    wpack = sch.get_sblock("wpack")
    if not plan.serial:
        sch.parallel(sch.get_loops(wpack)[0])
    done.update(("wpack",))


def _schedule_generic(sch: Schedule, V: int, cores: int, done: set[str]):
    root = sch.get_sblock("root") if _block(sch, "root") is not None else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for blk in blocks:
        name = sch.get(blk).name_hint
        if name in done:
            continue
        _try(_generic_block, sch, blk, V, cores)


def _generic_block(sch: Schedule, blk, V: int, cores: int):
    loops = sch.get_loops(blk)
    if not loops:
        return
    iters = sch.get(blk).iter_vars
    kinds = [iv.iter_type for iv in iters]
    n_spatial = sum(1 for k in kinds if k == 0)
    spatial, reduce = loops[:n_spatial], loops[n_spatial:]
    if not spatial:
        return
    # parallel: fuse leading spatial loops until there is enough work for every core
    lead, work = [], 1
    for lp in spatial[:-1] if len(spatial) > 1 else spatial:
        lead.append(lp)
        work *= _extent(sch, lp) or 1
        if work >= 8 * cores:
            break
    last = spatial[-1]
    rest_spatial = spatial[len(lead):]
    if reduce and len(rest_spatial) >= 1:
        ext = _extent(sch, last) or 1
        if ext >= V:
            # accumulate a vector of outputs in a register across the whole reduction
            lo, li = sch.split(last, [None, V])
            sch.reorder(*rest_spatial[:-1], lo, *reduce, li)
            sch.vectorize(li)
            local = sch.cache_write(blk, 0, "local")
            sch.reverse_compute_at(local, lo)
            _try(lambda: sch.vectorize(sch.get_loops(local)[-1]))
            sch.decompose_reduction(blk, reduce[0])
        else:
            sch.reorder(*rest_spatial, *reduce)
            sch.decompose_reduction(blk, reduce[0])
    elif not reduce and last not in lead:
        ext = _extent(sch, last) or 1
        if ext >= V:
            _, li = sch.split(last, [None, V])
            sch.vectorize(li)
    fused = sch.fuse(*lead) if len(lead) > 1 else lead[0]
    if cores > 1:
        sch.parallel(fused)
