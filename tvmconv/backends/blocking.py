"""Default blocking rules: the ``Plan`` a compute is written for, chosen from the spec and the
target's vector width (see variants/compute.py for what each plan kind means)."""

from __future__ import annotations

import dataclasses
import math

from ..spec import Spec

from ..variants import ConvSpec, DepthwiseSeparableSpec, SpatialSeparableSpec
from ..variants.compute import Plan


# Below this estimated single-thread time a kernel runs on one thread, where the target's machine
# was not measured: waking TVM's sleeping workers cost about 7 us a launch on the Zen 3. A target
# that runs here passes its own threshold (backends/launch.py: 25 to 50 us on the AVX-512 Xeon VM).
SERIAL_BELOW_S = 10e-6


def serial_estimate(spec: Spec) -> float:
    """A pessimistic single-thread time: 30 GFLOP/s, 8 GB/s."""
    return max(spec.flops / 30e9, spec.bytes_moved / 8e9)


def _tile_registers(V: int, vector_registers: int | None = None, widen: int = 1, weights: int = 2) -> int:
    """Vectors of ``V`` lanes a register tile may hold on a file of ``vector_registers`` SIMD
    registers (the target's facts), each vector of the arithmetic taking ``widen`` registers.

    The file less what a step of the reduction needs besides the tile: the broadcast input and the
    ``weights`` weight vectors of a block (a two-vector block: 3 vectors), and one register a 32 kept free for the
    loads LLVM hoists ahead of the FMAs -- AVX2's 16 give 13 and AVX-512's 32 give 28, the budgets
    the shipped AVX2 records and the AVX-512 defaults were tuned and measured under; NEON's 32 give
    28 (the lane-keyed rule before the facts gave it 13). ``widen`` 2: float16 without native
    half-precision arithmetic (AVX2, AVX-512 without avx512fp16, NEON without fullfp16), which LLVM
    computes in float32 -- a vector of 16 halves is converted to two registers of 8 floats for
    every multiply and add (see ``LLVMBackend.registers_per_vector``); counting it as one spilled
    the tile (float16 on AVX2 was budgeted 28 vectors, 56 registers of 16).
    ``vector_registers`` None: 32 where a vector holds 16 lanes or more, else 16 (the ISA default)."""
    regs = vector_registers if vector_registers else (32 if V >= 16 else 16)
    w = max(1, widen)
    return max(1, (regs - (1 + weights) * w - regs // 32) // w)


def plan_for(spec: Spec, vector_lanes: int, vector_registers: int | None = None, *, widen: int = 1,
             l1d_bytes: int = 0, serial_below_s: float = SERIAL_BELOW_S) -> Plan:
    """Choose the compute blocking for ``spec`` on a target with ``vector_lanes`` lanes of dtype,
    ``vector_registers`` SIMD registers of which a vector of the arithmetic takes ``widen`` (see
    ``_tile_registers``) and an L1 data cache of ``l1d_bytes`` (0: 32 KiB; see ``wvec_rows``);
    one thread where ``serial_estimate`` is below ``serial_below_s`` (``launch.serial_below_s``)."""
    plan = _blocking(spec, max(1, vector_lanes), _tile_registers(max(1, vector_lanes), vector_registers, widen),
                     _row_budget(l1d_bytes))
    return dataclasses.replace(plan, serial=serial_estimate(spec) < serial_below_s)


def _row_budget(l1d_bytes: int) -> int:
    """The bytes of input rows a ``wvec`` task stages: half of the L1 data cache (0: of 32 KiB), the
    other half for the weights, the register tile's write-back and the next task's rows."""
    return (l1d_bytes or 32768) // 2


def _blocking(spec: Spec, V: int, regs: int, row_bytes: int) -> Plan:
    """The blocking of ``plan_for``, with ``regs`` vectors for the register tile."""
    if isinstance(spec, ConvSpec):
        ocg = spec.c_out // spec.groups
        out_w = spec.out_size[-1]
        # A transposed conv with a few output channels (an image-producing layer) also takes one
        # vector of channels, the rest zero lanes: that beats gathering per output pixel
        # (c64->3 4x4 s2 on AVX2: 887 us plain, 129 us ocvec). Ungrouped only: with groups, a
        # 3-D one computed wrong values (found by the shape table; not yet understood).
        pixels = _pixel_tile(spec, V, regs)
        if pixels is not None:
            return pixels
        if ocg >= V or (spec.transposed and spec.groups == 1 and 4 * ocg >= V):
            vb, owi = _channel_block(ocg, out_w, V, regs, _tile_step(spec), pointwise=_pointwise(spec))
            return Plan("ocvec", vb=vb, owi=owi)
        if not spec.transposed:
            owi = _best_tile(out_w, 2 * V, multiple_of=V) if out_w >= V else V
            return Plan("wvec", owi=owi, rows=wvec_rows(spec, owi, row_bytes), phases=_phases(spec, V))
        return Plan("plain")
    if isinstance(spec, SpatialSeparableSpec):
        return Plan("staged", stages=tuple((prefix, _blocking(st, V, regs, row_bytes)) for prefix, st in
                                           zip(("kx1_", "c1xk_"), spec.stages())))
    if isinstance(spec, DepthwiseSeparableSpec):
        vb, owi = _channel_block(spec.c_out, spec.out_size[-1], V, regs, 1, pointwise=False)
        return Plan("ocvec", vb=vb, owi=owi)
    return Plan("plain")


def _phases(spec: ConvSpec, V: int) -> bool:
    """Whether a ``wvec`` layer of width stride > 1 stages its input rows split by column phase
    (``compute._phase_split``): where a row of output holds more than a vector or the kernel is 5
    or more wide, the split pass costs less than the per-lane loads it saves on every tap. Zen 3,
    depthwise stride 2 (benchmarks/results/x86-avx2-zen3-phases-ab.md): c96 112x112 3x3 ~620 ->
    ~280 us, c144 56x56 5x5 ~600 -> ~160 us; on 7-wide outputs of 3x3 it lost 10-30%."""
    return spec.stride[-1] > 1 and (spec.out_size[-1] > V or spec.kernel[-1] >= 5)


def _pointwise(spec: ConvSpec) -> bool:
    return not spec.transposed and all(k == 1 for k in spec.kernel) and all(s == 1 for s in spec.stride)


def _pixel_tile(spec: ConvSpec, V: int, regs: int) -> Plan | None:
    """A 2-D float32 pointwise convolution as a matrix product along its pixels: ``wvec`` with ``vb``
    output channels in the register tile, each accumulating ``rows`` x ``owi`` pixels (two vectors
    of one row, else one vector of two rows); a step of the reduction loads those input vectors once
    and broadcasts each channel's weight. The output's NCHW rows then come straight out of the
    accumulators, where ``ocvec`` (channels in the vector) transposes its tile into the rows, which
    16 to 144 input channels' work does not hide. MobileNetV2's c16->96 112x112 took 708-792 us with
    ocvec and 439-497 us so (Zen 3, benchmarks/results/x86-avx2-zen3-pixel-tile-ab.md).

    Rows that end in part of a vector (14, 7 or 28 wide on AVX2; 56, 28 or 14 on AVX-512) are widened
    to whole vectors where that puts at most 1/8 of the tile's work on padding: 5 or more channels a
    tile then beat ocvec on the Zen 3 in 15-round A/Bs (c960->160 7x7 201 -> 148 us, c112->672 14x14
    408 -> 257 us; with 4, c384->64 lost: x86-avx2-zen3-pixel-tile-partial-ab.md; AVX-512 not measured).
    None elsewhere, or where no block of channels divides the output channels."""
    if not (_pointwise(spec) and spec.groups == 1 and spec.dtype == "float32" and len(spec.out_size) == 2):
        return None
    out_h, out_w = spec.out_size
    if _narrow_rows(out_w, V):
        return None  # (``_channel_block``'s three vectors of channels)
    vectors = -(-out_w // V)  # a row's, the last one partly padding where V does not divide it
    widened = out_w % V != 0
    if 8 * (vectors * V - out_w) > vectors * V:
        return None  # more than 1/8 of the tile on padding (7 wide on AVX-512: 9 of 16 lanes)
    nv, rows = (2, 1) if vectors % 2 == 0 else (1, 2)
    if out_h % rows and not widened:
        return None
    if out_h % rows:  # (two rows a tile over 7 rows would guard the last tile: one row a tile, as measured)
        nv, rows = 1, 1
    inputs = nv * rows  # input vectors a reduction step loads, beside one broadcast weight
    budget = regs + 2 - inputs  # (``regs`` leaves room for two weight vectors and a broadcast)
    least = 5 if widened else 4
    vb = next((d for d in range(8, least - 1, -1) if spec.c_out % d == 0 and d * inputs <= budget), None)
    # The larger operand streamed once, the smaller re-read from cache (a matrix product's loop order).
    # With rows outermost each thread read every block of weights once per row of its own, and the 7x7
    # layers' weights (0.6-1.6 MB) do not stay in L2 (c160->960 7x7: x86-avx2-zen3-pixel-order-ab.md)
    channels_outer = spec.c_out > spec.n * out_h * out_w  # weights (c_out x c_in) above input (c_in x n x h x w)
    return Plan("wvec", vb=vb, owi=nv * V, rows=rows, channels_outer=channels_outer) if vb else None


def _channel_block(ocg: int, out_w: int, V: int, regs: int, step: int, pointwise: bool) -> tuple[int, int]:
    """``(vb, owi)`` of an ``ocvec`` register tile for ``ocg`` output channels a group: one or two
    vectors of channels, and the pixels of an output row that fill the registers left (``regs``:
    the budget of a two-vector block; one vector needs one weight register less).

    Two vectors load half the broadcast inputs per FMA, which the 3x3 layers want (ResNet-18's
    c64 3x3 on the Zen 3: 1.6 ms with two, 2.6 ms with one: benchmarks/results/
    x86-avx2-zen3-plan-rule-ab.md). One vector where two would compute padding (c24 on AVX2 took
    two blocks of 16: 32 channels) and, for a pointwise layer, where its pixel tile holds more
    accumulators than two vectors' tile does (AVX2: 14 pixels against 2 x 6): the tile then reads
    whole cache lines of each NCHW input row (c144->24 56x56 from 358 to 202 us, c240->40 28x28 from
    182 to 106 us on the Zen 3). AVX-512's 29 against 2 x 14 keeps two vectors."""
    if pointwise and _narrow_rows(out_w, V) and ocg >= 3 * V:  # (``regs`` less the third weight vector)
        return 3 * V, _best_tile(out_w, max(1, min((regs - 1) // 3, out_w)), multiple_of=step)
    two = _best_tile(out_w, max(1, min(regs // 2, out_w)), multiple_of=step)
    one = _best_tile(out_w, max(1, min(regs + 1, out_w)), multiple_of=step)
    pads = ocg % (2 * V) and 8 * V > ocg + V  # two-vector blocks would compute over 1/8 padding
    if ocg < 2 * V or pads or (pointwise and one > 2 * two):
        return V, one
    return 2 * V, two


def _narrow_rows(out_w: int, V: int) -> bool:
    """Output rows of most of one vector but not all (7 wide on AVX2): a pointwise layer there
    keeps its channels in the vector, three vectors of them by four pixels (12 accumulators; the
    channels padded to whole blocks), not the pixel tile (each row one widened vector: a step of
    the reduction loads an input vector and broadcasts a weight for every FMA). Measured on the
    Zen 3 (benchmarks/results/x86-avx2-zen3-partial-rows-ab.md): such layers of MobileNetV2,
    MobileNetV3, EfficientNet-B0 and ShuffleNetV2, their weights packed beforehand as the compiled
    module holds them. Rows of 14 or 28 (a vector and part of one) were mixed and keep the pixel
    tile; AVX-512's 7-wide rows (9 of 16 lanes padding) already took ``ocvec``, and are not
    measured with three vectors (the rule asks for a row of at least 7/8 of a vector)."""
    return V - V // 8 <= out_w < V


def _tile_step(spec: Spec) -> int:
    """Register tiles of a transposed conv hold whole periods of its width stride: each tile
    position then has a known phase, so its kernel taps are fixed at compile time (an odd tile of
    a stride-2 layer selects them at run time: c64->3 4x4 s2, 13 pixels 680 us, 8 pixels 129 us)."""
    if not (isinstance(spec, ConvSpec) and spec.transposed) or spec.stride[-1] > _MAX_TILE_STRIDE:
        return 1  # a tile of a whole period of a large stride would be as wide as the stride, unrolled
    return spec.stride[-1]


_MAX_TILE_STRIDE = 8


def plan_candidates(spec: Spec, vector_lanes: int, limit: int = 16, vector_registers: int | None = None, *,
                    widen: int = 1, l1d_bytes: int = 0, serial_below_s: float = SERIAL_BELOW_S) -> list[Plan]:
    """Other blockings of the default schedule worth measuring (the hand-written sketch's knobs:
    output channels per block and the output-width register tile), best-guess first, at most
    ``limit``, excluding ``plan_for``'s choice. Tuning measures them before the search."""
    V = max(1, vector_lanes)
    base = plan_for(spec, V, vector_registers, widen=widen, l1d_bytes=l1d_bytes, serial_below_s=serial_below_s)
    # Small kernels: also the other side of the one-thread threshold, measured first
    flip = [dataclasses.replace(base, serial=not base.serial)] if serial_estimate(spec) < 6 * serial_below_s else []
    if base.kind == "staged" or base.kind == "plain":
        return flip[:limit]
    out_w = spec.out_size[-1]
    regs = _tile_registers(V, vector_registers, widen)
    cands = []
    pixels = base.kind == "wvec" and base.vb > 1  # a pointwise layer's pixel tile: ocvec's too
    if pixels:  # other channel counts whose tile fits beside its input vectors (``_pixel_tile``)
        inputs = base.rows * -(-base.owi // V)
        cands += [dataclasses.replace(base, vb=vb) for vb in range(2, 9)
                  if spec.c_out % vb == 0 and vb * inputs <= regs + 2 - inputs]
    if base.kind == "ocvec" or pixels:
        ocg = spec.c_out // spec.groups if isinstance(spec, ConvSpec) else spec.c_out
        for vb in (V, 2 * V, 3 * V):
            if vb > V and ocg < vb:
                continue
            for owi in range(1, min(out_w, regs // (vb // V) + 1) + 1):
                if owi % _tile_step(spec) == 0 or owi == out_w:
                    cands.append(Plan("ocvec", vb=vb, owi=owi))
    else:  # wvec: the width tile in whole vectors, and the rows per task
        out_h = spec.out_size[-2] if len(spec.out_size) > 1 else 1
        for t in range(V, max(V, min(-(-out_w // V) * V, 4 * V)) + 1, V):
            r0 = wvec_rows(spec, t, _row_budget(l1d_bytes))
            for r in sorted({r0, max(1, r0 // 2), max(1, r0 // 4), min(out_h, 2 * r0), out_h}):
                cands.append(dataclasses.replace(base, owi=t, rows=r))

    def cost(p: Plan) -> float:  # padded work, per-tile overhead, register pressure of the tile, task size
        return ((-(-out_w // p.owi) * p.owi) * (1 + 2 / p.owi) * (1 + 0.15 * abs(p.vb // V - base.vb // V))
                * (1 + 0.1 * abs(math.log2(p.rows / base.rows))))

    cands = [dataclasses.replace(p, serial=base.serial) for p in cands]
    ranked = sorted((p for p in dict.fromkeys(cands) if p != base), key=cost)
    return (flip + ranked)[:limit]


def wvec_rows(spec: ConvSpec, owi: int, budget_bytes: int = 16384) -> int:
    """Output rows per parallel task of the ``wvec`` schedule: as many as keep the padded input
    rows they read (staged per task, for every input channel of the group) within ``budget_bytes``
    (half of a typical L1 data cache), while leaving at least 4 tasks per core-pair of work."""
    s3 = spec.as3d()
    out_d, out_h, out_w = s3.out_size
    (_, sh, sw), (dd, dh, dw), (kd, kh, kw) = s3.stride, s3.dilation, s3.kernel
    width = (-(-out_w // owi) * owi - 1) * sw + (kw - 1) * dw + 1
    icg = s3.c_in // s3.groups
    per_row_bytes = width * icg * ((kd - 1) * dd + 1) * 4
    halo = (kh - 1) * dh + 1
    tasks_per_row_block = s3.n * s3.c_out * out_d
    best = 1
    for r in range(1, out_h + 1):
        if ((r - 1) * sh + halo) * per_row_bytes > budget_bytes and r > 1:
            break
        if tasks_per_row_block * -(-out_h // r) < 8 and r > 1:
            break
        best = r
    return best


def _best_tile(extent: int, limit: int, multiple_of: int = 1) -> int:
    """The register tile <= ``limit`` that minimises the padded work ``ceil(extent/t)*t`` times a
    per-tile overhead (reloading the weight vectors) that a larger tile amortises."""
    candidates = [t for t in range(1, limit + 1) if t % multiple_of == 0] or [limit]
    return min(candidates, key=lambda t: (-(-extent // t) * t) * (1 + 2 / t))


def transfer_plan(plan: Plan, spec: Spec, from_lanes: int, to_lanes: int, vector_registers: int | None = None, *,
                  widen: int = 1, l1d_bytes: int = 0, serial_below_s: float | None = None) -> Plan:
    """``plan``, chosen for a target with ``from_lanes`` lanes, re-derived for one with ``to_lanes``
    lanes and ``vector_registers`` registers: the decisions a plan makes in whole vectors (output
    channels per block, the width tile of ``wvec``) keep their count of vectors, the register tile
    is clipped to what the register file holds, and a blocking the new width does not allow (a
    vector of channels wider than the group) becomes this target's own (``plan_for``). Rows per
    task are a shape decision and stay. The one-thread choice is this machine's where
    ``serial_below_s`` is given (a parallel launch costs what it costs here), else the record's.

    An AVX2 record's ``ocvec`` of 16 channels (2 vectors of 8) becomes 32 channels (2 vectors of
    16) on AVX-512: the record's choice of two vectors a block, on 512-bit registers."""
    moved = _transferred(plan, spec, from_lanes, to_lanes, vector_registers, widen, l1d_bytes)
    if serial_below_s is None:
        return moved
    return dataclasses.replace(moved, serial=serial_estimate(spec) < serial_below_s)


def _transferred(plan: Plan, spec: Spec, from_lanes: int, to_lanes: int, vector_registers: int | None,
                 widen: int, l1d_bytes: int) -> Plan:
    old, new = max(1, from_lanes), max(1, to_lanes)
    base = plan_for(spec, new, vector_registers, widen=widen, l1d_bytes=l1d_bytes)
    if old == new or plan.kind != base.kind:
        return plan if old == new else dataclasses.replace(base, serial=plan.serial)
    if plan.kind == "staged":
        specs = dict(zip(("kx1_", "c1xk_"), spec.stages()))
        return dataclasses.replace(plan, stages=tuple(
            (prefix, _transferred(p, specs[prefix], old, new, vector_registers, widen, l1d_bytes)
             if prefix in specs else p)
            for prefix, p in plan.stages))
    if plan.kind not in ("ocvec", "wvec"):
        return plan
    out_w = spec.out_size[-1]
    if plan.kind == "ocvec":
        units = max(1, plan.vb // old)
        ocg = spec.c_out // spec.groups if isinstance(spec, ConvSpec) else spec.c_out
        while units > 1 and units * new > ocg:
            units -= 1
        regs = _tile_registers(new, vector_registers, widen, weights=units)
        owi = max(1, min(plan.owi, regs // units, out_w))
        step = _tile_step(spec)
        if owi % step and owi != out_w:
            owi = max(step, owi - owi % step)
        return dataclasses.replace(plan, vb=units * new, owi=owi)
    units = max(1, plan.owi // old)  # wvec: the width tile in whole vectors
    return dataclasses.replace(plan, owi=max(new, min(units * new, -(-out_w // new) * new)))
