"""Tensor-expression definitions of every variant (TVM-facing).

``define(spec, plan)`` returns ``(args, out)``: the kernel's input placeholders in the order of
``spec.arg_shapes`` and its output tensor. Convolutions are always expressed on a 3-D spatial view
(``spec.as3d()``); callers reshape 1-D and 2-D tensors accordingly (a view, never a copy).

A ``Plan`` chooses the blocking the compute is written for (the schedule relies on the stage
names given here): ``ocvec`` packs weights so that output channels are the innermost, vectorised
axis and rounds the output width up to a multiple of the register tile; ``wvec`` keeps the NCHW
order and vectorises along the output width (depthwise, few channels per group); ``plain`` is the
textbook definition, left to MetaSchedule or the generic schedule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import tvm
from tvm import te
from tvm import tirx

from ..spec import (
    ChannelShuffleSpec,
    ChannelWiseSpec,
    ConvSpec,
    DeformConv2dSpec,
    DepthwiseSeparableSpec,
    EffNetSpec,
    FlattenedSpec,
    SpatialSeparableSpec,
    Spec,
    SqueezeExcitationSpec,
)


@dataclass(frozen=True)
class Plan:
    kind: str = "plain"  # "ocvec" | "wvec" | "plain" | "staged"
    vb: int = 1  # output channels per block (ocvec)
    owi: int = 1  # output-width register tile
    rows: int = 1  # output rows per parallel task (wvec): their padded input rows are staged per task
    serial: bool = False  # one thread: the work is smaller than waking the others costs
    stages: tuple = ()  # "staged": ((stage-name prefix, Plan), ...) for a chain of convolutions


def plan_to_dict(plan: Plan) -> dict:
    return dataclasses.asdict(plan)


def plan_from_dict(d: dict) -> Plan:
    stages = tuple((prefix, plan_from_dict(p) if isinstance(p, dict) else p) for prefix, p in d.get("stages", ()))
    return Plan(kind=d.get("kind", "plain"), vb=int(d.get("vb", 1)), owi=int(d.get("owi", 1)),
                rows=int(d.get("rows", 1)), serial=bool(d.get("serial", False)), stages=stages)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _zero(dtype):
    return tirx.const(0, dtype)


def _placeholders(spec: Spec) -> dict[str, te.Tensor]:
    return {name: te.placeholder(shape, spec.dtype, name=name) for name, shape in spec.arg_shapes}


def _pad(x: te.Tensor, before: list[int], extents: list[int], name: str = "pad") -> te.Tensor:
    """Zero-pad the trailing ``len(before)`` axes of ``x``: ``out[..., i] = x[..., i - before]``,
    with ``extents`` the padded sizes (larger or smaller than ``x`` plus padding)."""
    lead = len(x.shape) - len(before)
    sizes = [int(s) for s in x.shape[lead:]]
    if all(b == 0 for b in before) and all(e <= s for e, s in zip(extents, sizes)):
        return x

    def f(*idx):
        sp = idx[lead:]
        conds = []
        for i, b, s, e in zip(sp, before, sizes, extents):
            if b > 0:
                conds.append(i >= b)
            if e > s + b:
                conds.append(i < s + b)
        src = list(idx[:lead]) + [i - b for i, b in zip(sp, before)]
        if not conds:
            return x[tuple(src)]
        return tirx.if_then_else(tirx.all(*conds), x[tuple(src)], _zero(x.dtype))

    shape = [int(s) for s in x.shape[:lead]] + list(extents)
    return te.compute(shape, f, name=name)


def _activation(v, act: str | None, dtype: str):
    """relu / relu6 as torch computes them, NaN included: written as selects on ``v < 0`` and
    ``v > 6``, which are false for NaN, so NaN passes through (TVM's max(v, 0) lowers to
    ``v > 0 ? v : 0`` and turns NaN into 0)."""
    if act is None:
        return v
    v = tirx.Select(v < _zero(dtype), _zero(dtype), v)
    if act == "relu6":
        six = tirx.const(6, dtype)
        v = tirx.Select(v > six, six, v)
    return v


def _max_nan(a, b):
    """max(a, b) that is NaN where either is, as torch's max pooling."""
    return tirx.Select(tirx.isnan(a) | (a > b), a, b)


# ----------------------------------------------------------------------------------------------
# Convolutions (forward and transposed), grouped, with an optional channel shuffle epilogue.
# ----------------------------------------------------------------------------------------------
def _shuffle_src(c, channels: int, groups: int):
    """Output channel ``c`` of channel_shuffle(y, groups) reads y's channel returned here."""
    if groups <= 1 or groups >= channels:
        # An identity shuffle. Returning c also avoids a TVM 0.27 IterMapSimplify bug that
        # rewrites (c % C + k) // C into (c + k) % C // C (always 0) when lowering.
        return c
    return tirx.floormod(c, groups) * (channels // groups) + tirx.floordiv(c, groups)


def _transpose_taps(s: int, d: int, p: int, k: int):
    """Output index o of a transposed convolution receives tap k from input i = (o + p - k*d) / s
    only when that division is exact. For each phase r = o mod s the exact taps are
    k0(r) + j*step, j = 0.. ; returns (step, number of j, {r: k0(r)})."""
    step = s // math.gcd(s, d)
    # Each first tap kk < step belongs to exactly one phase; taps past the kernel never contribute.
    # Going over the taps rather than the phases keeps this O(k) for any stride (the select chain
    # built from it was O(stride) deep, and a stride of 1,000 took minutes to compile).
    k0 = {}
    for kk in range(min(step, k)):
        k0.setdefault((kk * d - p) % s, kk)
    return step, _ceil_div(k, step), k0


def _transpose_gather(s3: ConvSpec, taps, rj, outs):
    """Kernel tap and input index per spatial axis for output position ``outs`` and reduction
    iterators ``rj``, with the conditions under which that pair contributes."""
    conds, ks, ins = [], [], []
    for a, (oo, (step, nj, k0), st, dl, p, kk, size) in enumerate(zip(
            outs, taps, s3.stride, s3.dilation, s3.padding, s3.kernel, s3.in_size)):
        if st == 1:
            k = rj[a] * step
        else:
            r = tirx.floormod(oo, st)
            k = _select_const(r, k0, 0) + rj[a] * step
            if len(k0) < st:
                conds.append(_select_const(r, {q: 1 for q in k0}, 0) == 1)
        if nj * step != kk:
            conds.append(k < kk)
        i = tirx.floordiv(oo + p[0] - k * dl, st)
        conds.extend([i >= 0, i < size])
        ks.append(k)
        ins.append(i)
    return conds, ks, ins


def _select_const(r, table: dict[int, int], default: int):
    expr = tirx.const(default, "int32")
    for key, value in sorted(table.items()):
        expr = tirx.Select(r == key, tirx.const(value, "int32"), expr)
    return expr


def conv(spec: ConvSpec, plan: Plan):
    s3 = spec.as3d()
    ph = _placeholders(s3)
    out = conv_stage(s3, plan, ph["input"], ph["weight"], ph.get("bias"))
    return [ph[nm] for nm, _ in s3.arg_shapes], out


def conv_stage(s3: ConvSpec, plan: Plan, x: te.Tensor, w: te.Tensor, b: te.Tensor | None, prefix: str = ""):
    """The output tensor of convolution ``s3`` (a 3-D spec) of te tensors; stage names start
    with ``prefix`` so that several convolutions can live in one kernel."""
    n, c_in, c_out, g = s3.n, s3.c_in, s3.c_out, s3.groups
    icg, ocg = c_in // g, c_out // g
    out_sz = list(s3.out_size)
    dt = s3.dtype

    if plan.kind == "ocvec":
        vb, owi = plan.vb, plan.owi
        ocb = _ceil_div(ocg, vb)

        def _blk_chan(cb, v):  # output channel held by lane v of channel block cb
            return tirx.floordiv(cb, ocb) * ocg + tirx.floormod(cb, ocb) * vb + v

        def _blk_ok(cb, v):
            return tirx.floormod(cb, ocb) * vb + v < ocg

        out_ext = out_sz[:2] + [_ceil_div(out_sz[2], owi) * owi]
        rc = te.reduce_axis((0, icg), "rc")
        if not s3.transposed:
            wpack = te.compute(
                (g * ocb, icg, *s3.kernel, vb),
                lambda cb, i, kd, kh, kw, v: tirx.if_then_else(
                    _blk_ok(cb, v), w[_blk_chan(cb, v), i, kd, kh, kw], _zero(dt)),
                name=prefix + "wpack")
            rk = [te.reduce_axis((0, k), f"rk{a}") for a, k in enumerate(s3.kernel)]
            extents = [(o - 1) * st + (k - 1) * dl + 1
                       for o, st, k, dl in zip(out_ext, s3.stride, s3.kernel, s3.dilation)]
            xp = _pad(x, [p[0] for p in s3.padding], extents, name=prefix + "pad")

            def body(nn, cb, od, oh, ow, v):
                sp = [o_ * st + r * dl for o_, st, r, dl in zip((od, oh, ow), s3.stride, rk, s3.dilation)]
                return te.sum(xp[nn, tirx.floordiv(cb, ocb) * icg + rc, sp[0], sp[1], sp[2]]
                              * wpack[cb, rc, rk[0], rk[1], rk[2], v], axis=[rc, *rk])
        else:
            wpack = te.compute(
                (g * ocb, icg, *s3.kernel, vb),
                lambda cb, i, kd, kh, kw, v: tirx.if_then_else(
                    _blk_ok(cb, v), w[tirx.floordiv(cb, ocb) * icg + i, tirx.floormod(cb, ocb) * vb + v, kd, kh, kw],
                    _zero(dt)),
                name=prefix + "wpack")
            taps = [_transpose_taps(st, dl, p[0], k) for st, dl, p, k in
                    zip(s3.stride, s3.dilation, s3.padding, s3.kernel)]
            rj = [te.reduce_axis((0, nj), f"rj{a}") for a, (_, nj, _) in enumerate(taps)]

            def body(nn, cb, od, oh, ow, v):
                conds, ks, ins = _transpose_gather(s3, taps, rj, (od, oh, ow))
                prod = (x[nn, tirx.floordiv(cb, ocb) * icg + rc, ins[0], ins[1], ins[2]]
                        * wpack[cb, rc, ks[0], ks[1], ks[2], v])
                return te.sum(tirx.if_then_else(tirx.all(*conds), prod, _zero(dt)), axis=[rc, *rj])

        acc = te.compute((n, g * ocb, *out_ext, vb), body, name=prefix + "conv")

        def epilogue(nn, c, od, oh, ow):
            src = _shuffle_src(c, c_out, s3.shuffle)
            if ocg % vb == 0:  # channel blocks tile the channels exactly: simple indices
                v = acc[nn, tirx.floordiv(src, vb), od, oh, ow, tirx.floormod(src, vb)]
            else:
                r = tirx.floormod(src, ocg)
                v = acc[nn, tirx.floordiv(src, ocg) * ocb + tirx.floordiv(r, vb), od, oh, ow, tirx.floormod(r, vb)]
            return v + b[src] if b is not None else v

        return te.compute((n, c_out, *out_sz), epilogue, name=prefix + "out")

    # "wvec" and "plain": the textbook definition, NC(DHW) throughout; "wvec" rounds the output
    # width up to its register tile and crops in the epilogue.
    if s3.transposed:
        return _conv_transpose_plain(s3, x, w, b, prefix)
    out_ext = list(out_sz)
    if plan.kind == "wvec":
        out_ext[2] = _ceil_div(out_sz[2], plan.owi) * plan.owi
    rc = te.reduce_axis((0, icg), "rc")
    rk = [te.reduce_axis((0, k), f"rk{a}") for a, k in enumerate(s3.kernel)]
    extents = [(o - 1) * st + (k - 1) * dl + 1 for o, st, k, dl in zip(out_ext, s3.stride, s3.kernel, s3.dilation)]
    xp = _pad(x, [p[0] for p in s3.padding], extents, name=prefix + "pad")

    def body(nn, c, od, oh, ow):
        src = _shuffle_src(c, c_out, s3.shuffle)
        sp = [o_ * st + r * dl for o_, st, r, dl in zip((od, oh, ow), s3.stride, rk, s3.dilation)]
        return te.sum(xp[nn, tirx.floordiv(src, ocg) * icg + rc, sp[0], sp[1], sp[2]] * w[src, rc, rk[0], rk[1], rk[2]],
                      axis=[rc, *rk])

    acc = te.compute((n, c_out, *out_ext), body, name=prefix + "conv")
    if b is None and out_ext == out_sz:
        return acc
    return te.compute((n, c_out, *out_sz), lambda nn, c, *sp: acc[(nn, c, *sp)] + b[_shuffle_src(c, c_out, s3.shuffle)]
                     if b is not None else acc[(nn, c, *sp)], name=prefix + "out")


def _conv_transpose_plain(s3: ConvSpec, x, w, b, prefix: str):
    icg, ocg = s3.c_in // s3.groups, s3.c_out // s3.groups
    dt = s3.dtype
    taps = [_transpose_taps(st, dl, p[0], k) for st, dl, p, k in zip(s3.stride, s3.dilation, s3.padding, s3.kernel)]
    rc = te.reduce_axis((0, icg), "rc")
    rj = [te.reduce_axis((0, nj), f"rj{a}") for a, (_, nj, _) in enumerate(taps)]

    def body(nn, c, od, oh, ow):
        conds, ks, ins = _transpose_gather(s3, taps, rj, (od, oh, ow))
        gg = tirx.floordiv(c, ocg)
        prod = x[nn, gg * icg + rc, ins[0], ins[1], ins[2]] * w[gg * icg + rc, tirx.floormod(c, ocg), ks[0], ks[1], ks[2]]
        return te.sum(tirx.if_then_else(tirx.all(*conds), prod, _zero(dt)), axis=[rc, *rj])

    acc = te.compute(s3.out_shape, body, name=prefix + "conv")
    if b is None:
        return acc
    return te.compute(acc.shape, lambda nn, c, *sp: acc[(nn, c, *sp)] + b[c], name=prefix + "out")


def _plain_conv2d(x: te.Tensor, w: te.Tensor, stride, padding, dilation, groups: int, name: str,
                  bias: te.Tensor | None = None, act: str | None = None) -> te.Tensor:
    """NCHW grouped convolution of two te tensors; ``padding`` is ((top, bottom), (left, right))."""
    n, c_in, h, wd = (int(v) for v in x.shape)
    c_out, icg, kh, kw = (int(v) for v in w.shape)
    ocg = c_out // groups
    oh = (h + sum(padding[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + sum(padding[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    ext = [(oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1, (ow - 1) * stride[1] + (kw - 1) * dilation[1] + 1]
    xp = _pad(x, [padding[0][0], padding[1][0]], ext, name=f"{name}_pad")
    rc = te.reduce_axis((0, icg), f"{name}_rc")
    ry = te.reduce_axis((0, kh), f"{name}_ry")
    rx = te.reduce_axis((0, kw), f"{name}_rx")
    acc = te.compute(
        (n, c_out, oh, ow),
        lambda nn, c, y, xx: te.sum(
            xp[nn, tirx.floordiv(c, ocg) * icg + rc, y * stride[0] + ry * dilation[0], xx * stride[1] + rx * dilation[1]]
            * w[c, rc, ry, rx], axis=[rc, ry, rx]),
        name=name)
    if bias is None and act is None:
        return acc
    return te.compute(acc.shape, lambda nn, c, y, xx: _activation(
        acc[nn, c, y, xx] + bias[c] if bias is not None else acc[nn, c, y, xx], act, x.dtype), name=f"{name}_epilogue")


def deform_conv2d(spec: DeformConv2dSpec, plan: Plan):
    ph = _placeholders(spec)
    x, off, w, m, b = ph["input"], ph["offset"], ph["weight"], ph.get("mask"), ph.get("bias")
    dt = spec.dtype
    H, W = spec.in_size
    kh, kw = spec.kernel
    kk = kh * kw
    cpg = spec.c_in // spec.offset_groups
    icg, ocg = spec.c_in // spec.groups, spec.c_out // spec.groups

    def sample(nn, c, i, j, y, xx):
        og = tirx.floordiv(c, cpg)
        tap = i * kw + j
        py = (y * spec.stride[0] - spec.padding[0] + i * spec.dilation[0]).astype(dt) + off[nn, og * 2 * kk + 2 * tap, y, xx]
        px = (xx * spec.stride[1] - spec.padding[1] + j * spec.dilation[1]).astype(dt) + off[nn, og * 2 * kk + 2 * tap + 1, y, xx]
        y0f, x0f = te.floor(py), te.floor(px)
        y0, x0 = y0f.astype("int32"), x0f.astype("int32")
        ly, lx = py - y0f, px - x0f
        one = tirx.const(1, dt)

        def at(yy, xi):
            ok = tirx.all(yy >= 0, yy <= H - 1, xi >= 0, xi <= W - 1)
            return tirx.if_then_else(ok, x[nn, c, yy, xi], _zero(dt))

        val = ((one - ly) * (one - lx) * at(y0, x0) + (one - ly) * lx * at(y0, x0 + 1)
               + ly * (one - lx) * at(y0 + 1, x0) + ly * lx * at(y0 + 1, x0 + 1))
        inside = tirx.all(py > tirx.const(-1, dt), py < tirx.const(H, dt), px > tirx.const(-1, dt), px < tirx.const(W, dt))
        val = tirx.if_then_else(inside, val, _zero(dt))
        if m is not None:
            val = val * m[nn, og * kk + tap, y, xx]
        return val

    oh, ow = spec.out_size
    col = te.compute((spec.n, spec.c_in, kh, kw, oh, ow), sample, name="col")
    rc = te.reduce_axis((0, icg), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    acc = te.compute(
        spec.out_shape,
        lambda nn, c, y, xx: te.sum(col[nn, tirx.floordiv(c, ocg) * icg + rc, ry, rx, y, xx] * w[c, rc, ry, rx],
                                    axis=[rc, ry, rx]),
        name="conv")
    out = acc if b is None else te.compute(acc.shape, lambda nn, c, y, xx: acc[nn, c, y, xx] + b[c], name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def depthwise_separable_conv2d(spec: DepthwiseSeparableSpec, plan: Plan):
    ph = _placeholders(spec)
    x, wd, wp = ph["input"], ph["depthwise_weight"], ph["pointwise_weight"]
    bd, bp = ph.get("depthwise_bias"), ph.get("pointwise_bias")
    dt = spec.dtype
    oh, ow = spec.out_size
    vb, owi = (plan.vb, plan.owi) if plan.kind == "ocvec" else (1, 1)
    owp = _ceil_div(ow, owi) * owi
    kh, kw = spec.kernel
    ext = [(oh - 1) * spec.stride[0] + (kh - 1) * spec.dilation[0] + 1,
           (owp - 1) * spec.stride[1] + (kw - 1) * spec.dilation[1] + 1]
    xp = _pad(x, [spec.padding[0][0], spec.padding[1][0]], ext)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    mult = spec.multiplier
    dw = te.compute(
        (spec.n, spec.c_mid, oh, owp),
        lambda nn, c, y, xx: te.sum(
            xp[nn, tirx.floordiv(c, mult), y * spec.stride[0] + ry * spec.dilation[0],
               xx * spec.stride[1] + rx * spec.dilation[1]] * wd[c, 0, ry, rx], axis=[ry, rx]),
        name="dw")
    mid = te.compute(dw.shape, lambda nn, c, y, xx: _activation(
        dw[nn, c, y, xx] + bd[c] if bd is not None else dw[nn, c, y, xx], spec.mid_activation, dt), name="mid")
    ocb = _ceil_div(spec.c_out, vb)
    wpack = te.compute((ocb, spec.c_mid, vb), lambda o, c, v: tirx.if_then_else(
        o * vb + v < spec.c_out, wp[o * vb + v, c, 0, 0], _zero(dt)), name="wpack")
    rc = te.reduce_axis((0, spec.c_mid), "rc")
    pw = te.compute((spec.n, ocb, oh, owp, vb),
                    lambda nn, o, y, xx, v: te.sum(mid[nn, rc, y, xx] * wpack[o, rc, v], axis=[rc]), name="conv")

    def epilogue(nn, c, y, xx):
        v = pw[nn, tirx.floordiv(c, vb), y, xx, tirx.floormod(c, vb)]
        return _activation(v + bp[c] if bp is not None else v, spec.activation, dt)

    out = te.compute(spec.out_shape, epilogue, name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def spatial_separable_conv2d(spec: SpatialSeparableSpec, plan: Plan):
    ph = {nm: te.placeholder(shape, spec.dtype, name=nm) for nm, shape in spec.kernel_arg_shapes}
    st1, st2 = spec.stages()
    p1, p2 = dict(plan.stages).get("kx1_", Plan()), dict(plan.stages).get("c1xk_", Plan())
    mid = conv_stage(st1.as3d(), p1, ph["input"], ph["weight_kx1"], ph.get("bias_kx1"), "kx1_")
    out = conv_stage(st2.as3d(), p2, mid, ph["weight_1xk"], ph.get("bias_1xk"), "c1xk_")
    return [ph[nm] for nm, _ in spec.kernel_arg_shapes], out


def flattened_conv2d(spec: FlattenedSpec, plan: Plan):
    ph = _placeholders(spec)
    p, s = spec.padding, spec.stride
    lat = _plain_conv2d(ph["input"], ph["lateral_weight"], (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "lateral")
    ver = _plain_conv2d(lat, ph["vertical_weight"], (s[0], 1), ((p[0], p[0]), (0, 0)), (1, 1), spec.c_out, "vertical")
    out = _plain_conv2d(ver, ph["horizontal_weight"], (1, s[1]), ((0, 0), (p[1], p[1])), (1, 1), spec.c_out,
                        "horizontal", ph.get("bias"))
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def channel_wise_conv(spec: ChannelWiseSpec, plan: Plan):
    ph = _placeholders(spec)
    x, w, b = ph["input"], ph["weight"], ph.get("bias")
    cg, L = spec.c // spec.groups, spec.l_out
    rk = te.reduce_axis((0, spec.k), "rk")

    def body(nn, c, *sp):
        g, l = tirx.floordiv(c, L), tirx.floormod(c, L)
        src = l * spec.stride + rk * spec.dilation - spec.padding
        ok = tirx.all(src >= 0, src < cg)
        return te.sum(tirx.if_then_else(ok, x[(nn, g * cg + src, *sp)] * w[g, rk], _zero(spec.dtype)), axis=[rk])

    acc = te.compute(spec.out_shape, body, name="conv")
    out = acc if b is None else te.compute(
        acc.shape, lambda nn, c, *sp: acc[(nn, c, *sp)] + b[tirx.floordiv(c, L)], name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def squeeze_excitation(spec: SqueezeExcitationSpec, plan: Plan):
    ph = _placeholders(spec)
    x, w1, b1, w2, b2 = ph["input"], ph["fc1_weight"], ph.get("fc1_bias"), ph["fc2_weight"], ph.get("fc2_bias")
    dt = spec.dtype
    sp = spec.spatial
    red = [te.reduce_axis((0, e), f"rs{a}") for a, e in enumerate(sp)]
    hw = math.prod(sp)
    pooled = te.compute((spec.n, spec.c), lambda nn, c: te.sum(x[(nn, c, *red)], axis=red), name="pool")
    rc = te.reduce_axis((0, spec.c), "rc")
    fc1 = te.compute((spec.n, spec.c_reduced), lambda nn, r: te.sum(pooled[nn, rc] * w1[r, rc], axis=[rc]), name="fc1")
    inv = tirx.const(1.0 / hw, dt)
    h1 = te.compute(fc1.shape, lambda nn, r: _activation(
        fc1[nn, r] * inv + (b1[r] if b1 is not None else _zero(dt)), "relu", dt), name="fc1_act")
    rr = te.reduce_axis((0, spec.c_reduced), "rr")
    fc2 = te.compute((spec.n, spec.c), lambda nn, c: te.sum(h1[nn, rr] * w2[c, rr], axis=[rr]), name="fc2")
    scale = te.compute(fc2.shape, lambda nn, c: te.sigmoid(fc2[nn, c] + (b2[c] if b2 is not None else _zero(dt))),
                       name="scale")
    out = te.compute(spec.out_shape, lambda nn, c, *s_: x[(nn, c, *s_)] * scale[nn, c], name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def effnet_block(spec: EffNetSpec, plan: Plan):
    ph = _placeholders(spec)
    c = spec.c
    a = _plain_conv2d(ph["input"], ph["weight_1x3"], (1, 1), ((0, 0), (1, 1)), (1, 1), c, "dw_1x3",
                      ph.get("bias_1x3"), spec.activation)
    oh, w = spec.out_size
    pooled = te.compute((spec.n, c, oh, w),
                        lambda nn, ch, y, xx: _max_nan(a[nn, ch, 2 * y, xx], a[nn, ch, 2 * y + 1, xx]),
                        name="pool")
    out = _plain_conv2d(pooled, ph["weight_3x1"], (1, 1), ((1, 1), (0, 0)), (1, 1), c, "dw_3x1",
                        ph.get("bias_3x1"), spec.activation)
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def channel_shuffle(spec: ChannelShuffleSpec, plan: Plan):
    ph = _placeholders(spec)
    x = ph["input"]
    out = te.compute(spec.out_shape, lambda nn, c, *sp: x[(nn, _shuffle_src(c, spec.c, spec.groups), *sp)],
                     name="out")
    return [x], out


_DEFINITIONS = {
    ConvSpec: conv,
    DeformConv2dSpec: deform_conv2d,
    DepthwiseSeparableSpec: depthwise_separable_conv2d,
    SpatialSeparableSpec: spatial_separable_conv2d,
    FlattenedSpec: flattened_conv2d,
    ChannelWiseSpec: channel_wise_conv,
    SqueezeExcitationSpec: squeeze_excitation,
    EffNetSpec: effnet_block,
    ChannelShuffleSpec: channel_shuffle,
}


def define(spec: Spec, plan: Plan = Plan()):
    """Return ``(args, out)`` te tensors for ``spec`` written for ``plan``."""
    return _DEFINITIONS[type(spec)](spec, plan)


def prim_func(spec: Spec, plan: Plan = Plan()) -> tvm.tirx.PrimFunc:
    args, out = define(spec, plan)
    return te.create_prim_func([*args, out])
