"""What the variants' tensor expressions share (TVM-facing): the ``Plan`` a compute is written
for, zero padding, activations, a NaN-propagating max, the convolution stage that the conv family
and the fused variants build on, and ``define``/``prim_func``, which find a spec's compute through
the registry (each family's own compute lives in its module, ``tvmconv/variants/<family>.py``).

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
from typing import TYPE_CHECKING, Callable

import tvm
from tvm import te
from tvm.te import _ffi_api as te_ffi  # (te.compute's own constructor, to rebuild a stage on its axes)
from tvm import tirx

from ..spec import Spec, conv_out_sizes

if TYPE_CHECKING:
    from .conv import ConvSpec


@dataclass(frozen=True)
class Plan:
    kind: str = "plain"  # "ocvec" | "wvec" | "plain" | "staged"
    vb: int = 1  # output channels per block (ocvec); in the register tile (wvec: a pointwise layer's)
    owi: int = 1  # output-width register tile
    rows: int = 1  # output rows per parallel task (wvec): their padded input rows are staged per task
    #               (with vb > 1: rows in the register tile)
    serial: bool = False  # one thread: the work is smaller than waking the others costs
    phases: bool = False  # wvec with a width stride: staged rows split by column phase (``_phase_split``)
    channels_outer: bool = False  # wvec pixel tile: tasks walk blocks of output channels, rows within them
    stages: tuple = ()  # "staged": ((stage-name prefix, Plan), ...) for a chain of convolutions


def plan_to_dict(plan: Plan) -> dict:
    return dataclasses.asdict(plan)


def plan_from_dict(d: dict) -> Plan:
    stages = tuple((prefix, plan_from_dict(p) if isinstance(p, dict) else p) for prefix, p in d.get("stages", ()))
    return Plan(kind=d.get("kind", "plain"), vb=int(d.get("vb", 1)), owi=int(d.get("owi", 1)),
                rows=int(d.get("rows", 1)), serial=bool(d.get("serial", False)),
                phases=bool(d.get("phases", False)), channels_outer=bool(d.get("channels_outer", False)),
                stages=stages)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def zero(dtype):
    return tirx.const(0, dtype)


def placeholders(spec: Spec) -> dict[str, te.Tensor]:
    return {name: te.placeholder(shape, spec.dtype, name=name) for name, shape in spec.arg_shapes}


def zero_pad(x: te.Tensor, before: list[int], extents: list[int], name: str = "pad") -> te.Tensor:
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
        return tirx.if_then_else(tirx.all(*conds), x[tuple(src)], zero(x.dtype))

    shape = [int(s) for s in x.shape[:lead]] + list(extents)
    return te.compute(shape, f, name=name)


def _phase_split(xp: te.Tensor, stride: int, name: str) -> te.Tensor:
    """``xp`` with its last axis split by phase: ``out[..., p, j] = xp[..., j * stride + p]`` (``xp``
    a whole number of ``stride`` wide). A convolution of width stride ``stride`` then reads each tap
    as whole vectors of one phase, where ``xp`` gives it every ``stride``-th element (a scalar load
    per lane): the columns are gathered once per staged element, not once per tap."""
    *lead, width = (int(s) for s in xp.shape)
    return te.compute((*lead, stride, width // stride),
                      lambda *idx: xp[(*idx[:-2], idx[-1] * stride + idx[-2])], name=name)


def clamp(v, lo: float, hi: float, dtype: str):
    """torch.clamp(v, lo, hi) on a TIR value of ``dtype``, NaN included: selects on ``v < lo`` and
    ``v > hi``, which are false for NaN, so NaN passes through (TVM's max(v, 0) lowers to
    ``v > 0 ? v : 0`` and turns NaN into 0). An infinite bound is no bound."""
    if lo != -math.inf:
        v = tirx.Select(v < tirx.const(lo, dtype), tirx.const(lo, dtype), v)
    if hi != math.inf:
        v = tirx.Select(v > tirx.const(hi, dtype), tirx.const(hi, dtype), v)
    return v


def apply_activation(v, act: str | None, dtype: str):
    """relu / relu6 as torch computes them, NaN included (``clamp``)."""
    if act is None:
        return v
    return clamp(v, 0.0, 6.0 if act == "relu6" else math.inf, dtype)


def exp(v):
    """exp(v) for float32 as vector instructions, where ``tirx.exp`` is a libm call per element:
    Cephes' expf (Cody-Waite range reduction, a degree-7 polynomial; within 1e-6 of exp), the
    power of two applied in two halves so that the whole float range, subnormals included, comes
    out right. Past it, inf and 0 as exp gives them; NaN stays NaN (the clamped argument never
    turns a NaN or an inf into an integer)."""
    if str(v.ty) != "float32":
        return tirx.exp(v)
    f32 = lambda c: tirx.const(c, "float32")  # noqa: E731
    hi, lo = f32(88.72283905206835), f32(-103.97207708399179)  # ln(FLT_MAX), ln(smallest subnormal)
    x = tirx.Select(v > hi, hi, tirx.Select(v < lo, lo, tirx.Select(v == v, v, f32(0.0))))
    y, k = _exp_parts(x)
    half = tirx.floordiv(k, 2)
    out = tirx.Select(v > hi, f32(float("inf")), tirx.Select(v < lo, f32(0.0), y * _pow2(half) * _pow2(k - half)))
    return tirx.Select(v == v, out, v)


def _exp_parts(x):
    """``(y, k)`` with ``exp(x) = y * 2**k`` for a float32 ``x`` within exp's range (Cephes' expf)."""
    f32 = lambda c: tirx.const(c, "float32")  # noqa: E731
    n = tirx.floor(x * f32(1.44269504088896341) + f32(0.5))
    r = x - n * f32(0.693359375) + n * f32(2.12194440e-4)
    y = f32(1.9875691500e-4)
    for c in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        y = y * r + f32(c)
    return y * r * r + r + f32(1.0), tirx.Cast("int32", n)


def _pow2(e):
    """2**e as a float32, for an int32 ``e`` in [-126, 127] (its exponent bits)."""
    return tirx.reinterpret("float32", tirx.shift_left(e + 127, 23))


def sigmoid(v):
    """1 / (1 + exp(-v)) as torch.sigmoid gives it: 0 at -inf, 1 at inf, NaN at NaN. For float32,
    ``exp``'s polynomial on -v clamped to [-87, 87] with one power of two, without whole-range
    exp's second power, clamps and NaN selects (a SiLU in a convolution's store costs about as
    much as the convolution): below -87 the sigmoid is under 1.7e-38 and 0 is returned, above 87
    the exponential is below 1.7e-38 and 1 + it is 1. As accurate as torch's (1.4e-7 relative)."""
    one = tirx.const(1.0, str(v.ty))
    if str(v.ty) != "float32":
        return one / (one + exp(-v))
    f32 = lambda c: tirx.const(c, "float32")  # noqa: E731
    t = -v
    t = tirx.Select(t > f32(87.0), f32(87.0), tirx.Select(t < f32(-87.0), f32(-87.0), t))  # (NaN passes)
    y, k = _exp_parts(t)
    return tirx.Select(v < f32(-87.0), f32(0.0), one / (one + y * _pow2(k)))


def max_nan(a, b):
    """max(a, b) that is NaN where either is, as torch's max pooling."""
    return tirx.Select(tirx.isnan(a) | (a > b), a, b)


# ----------------------------------------------------------------------------------------------
# Convolutions (forward and transposed), grouped, with an optional channel shuffle epilogue.
# ----------------------------------------------------------------------------------------------
def shuffle_src(c, channels: int, groups: int):
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
    return step, ceil_div(k, step), k0


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


def conv_stage(s3: ConvSpec, plan: Plan, x: te.Tensor, w: te.Tensor, b: te.Tensor | None, prefix: str = ""):
    """The output tensor of convolution ``s3`` (a 3-D spec) of te tensors; stage names start
    with ``prefix`` so that several convolutions can live in one kernel."""
    n, c_in, c_out, g = s3.n, s3.c_in, s3.c_out, s3.groups
    icg, ocg = c_in // g, c_out // g
    out_sz = list(s3.out_size)
    dt = s3.dtype

    if plan.kind == "ocvec":
        vb, owi = plan.vb, plan.owi
        ocb = ceil_div(ocg, vb)

        def _blk_chan(cb, v):  # output channel held by lane v of channel block cb
            return tirx.floordiv(cb, ocb) * ocg + tirx.floormod(cb, ocb) * vb + v

        def _blk_ok(cb, v):
            return tirx.floormod(cb, ocb) * vb + v < ocg

        out_ext = out_sz[:2] + [ceil_div(out_sz[2], owi) * owi]
        rc = te.reduce_axis((0, icg), "rc")
        if not s3.transposed:
            wpack = te.compute(
                (g * ocb, icg, *s3.kernel, vb),
                lambda cb, i, kd, kh, kw, v: tirx.if_then_else(
                    _blk_ok(cb, v), w[_blk_chan(cb, v), i, kd, kh, kw], zero(dt)),
                name=prefix + "wpack")
            rk = [te.reduce_axis((0, k), f"rk{a}") for a, k in enumerate(s3.kernel)]
            extents = [(o - 1) * st + (k - 1) * dl + 1
                       for o, st, k, dl in zip(out_ext, s3.stride, s3.kernel, s3.dilation)]
            xp = zero_pad(x, [p[0] for p in s3.padding], extents, name=prefix + "pad")

            def body(nn, cb, od, oh, ow, v):
                sp = [o_ * st + r * dl for o_, st, r, dl in zip((od, oh, ow), s3.stride, rk, s3.dilation)]
                return te.sum(xp[nn, tirx.floordiv(cb, ocb) * icg + rc, sp[0], sp[1], sp[2]]
                              * wpack[cb, rc, rk[0], rk[1], rk[2], v], axis=[rc, *rk])
        else:
            wpack = te.compute(
                (g * ocb, icg, *s3.kernel, vb),
                lambda cb, i, kd, kh, kw, v: tirx.if_then_else(
                    _blk_ok(cb, v), w[tirx.floordiv(cb, ocb) * icg + i, tirx.floormod(cb, ocb) * vb + v, kd, kh, kw],
                    zero(dt)),
                name=prefix + "wpack")
            taps = [_transpose_taps(st, dl, p[0], k) for st, dl, p, k in
                    zip(s3.stride, s3.dilation, s3.padding, s3.kernel)]
            rj = [te.reduce_axis((0, nj), f"rj{a}") for a, (_, nj, _) in enumerate(taps)]

            def body(nn, cb, od, oh, ow, v):
                conds, ks, ins = _transpose_gather(s3, taps, rj, (od, oh, ow))
                prod = (x[nn, tirx.floordiv(cb, ocb) * icg + rc, ins[0], ins[1], ins[2]]
                        * wpack[cb, rc, ks[0], ks[1], ks[2], v])
                return te.sum(tirx.if_then_else(tirx.all(*conds), prod, zero(dt)), axis=[rc, *rj])

        acc = te.compute((n, g * ocb, *out_ext, vb), body, name=prefix + "conv")

        def epilogue(nn, c, od, oh, ow):
            src = shuffle_src(c, c_out, s3.shuffle)
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
        out_ext[2] = ceil_div(out_sz[2], plan.owi) * plan.owi
    rc = te.reduce_axis((0, icg), "rc")
    rk = [te.reduce_axis((0, k), f"rk{a}") for a, k in enumerate(s3.kernel)]
    extents = [(o - 1) * st + (k - 1) * dl + 1 for o, st, k, dl in zip(out_ext, s3.stride, s3.kernel, s3.dilation)]
    sw, dw = s3.stride[2], s3.dilation[2]
    phases = plan.kind == "wvec" and plan.phases and sw > 1
    if phases:
        extents[2] = ceil_div(extents[2], sw) * sw
    xp = zero_pad(x, [p[0] for p in s3.padding], extents, name=prefix + "pad")
    if phases:
        xp = _phase_split(xp, sw, prefix + "phase")

    def column(ow, rw):  # the index of output column ``ow``'s tap ``rw`` in ``xp``'s last axis (or two)
        if phases:  # column ow*sw + rw*dw: phase (rw*dw) % sw, ow + (rw*dw) // sw within it
            return (tirx.floormod(rw * dw, sw), ow + tirx.floordiv(rw * dw, sw))
        return (ow * sw + rw * dw,)

    def body(nn, c, od, oh, ow):
        src = shuffle_src(c, c_out, s3.shuffle)
        sd, sh = [o_ * st + r * dl for o_, st, r, dl in zip((od, oh), s3.stride, rk, s3.dilation)]
        return te.sum(xp[(nn, tirx.floordiv(src, ocg) * icg + rc, sd, sh, *column(ow, rk[2]))]
                      * w[src, rc, rk[0], rk[1], rk[2]], axis=[rc, *rk])

    acc = te.compute((n, c_out, *out_ext), body, name=prefix + "conv")
    if b is None and out_ext == out_sz:
        return acc
    return te.compute((n, c_out, *out_sz), lambda nn, c, *sp: acc[(nn, c, *sp)] + b[shuffle_src(c, c_out, s3.shuffle)]
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
        return te.sum(tirx.if_then_else(tirx.all(*conds), prod, zero(dt)), axis=[rc, *rj])

    acc = te.compute(s3.out_shape, body, name=prefix + "conv")
    if b is None:
        return acc
    return te.compute(acc.shape, lambda nn, c, *sp: acc[(nn, c, *sp)] + b[c], name=prefix + "out")


def plain_conv2d(x: te.Tensor, w: te.Tensor, stride, padding, dilation, groups: int, name: str,
                  bias: te.Tensor | None = None, act: str | None = None) -> te.Tensor:
    """NCHW grouped convolution of two te tensors; ``padding`` is ((top, bottom), (left, right))."""
    n, c_in, h, wd = (int(v) for v in x.shape)
    c_out, icg, kh, kw = (int(v) for v in w.shape)
    ocg = c_out // groups
    oh, ow = conv_out_sizes((h, wd), (kh, kw), stride, padding, dilation)
    ext = [(oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1, (ow - 1) * stride[1] + (kw - 1) * dilation[1] + 1]
    xp = zero_pad(x, [padding[0][0], padding[1][0]], ext, name=f"{name}_pad")
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
    return te.compute(acc.shape, lambda nn, c, y, xx: apply_activation(
        acc[nn, c, y, xx] + bias[c] if bias is not None else acc[nn, c, y, xx], act, x.dtype), name=f"{name}_epilogue")


def define(spec: Spec, plan: Plan = Plan()):
    """Return ``(args, out)`` te tensors for ``spec`` written for ``plan`` (its variant's compute)."""
    from .registry import VARIANTS

    return VARIANTS[spec.variant].compute(spec, plan)


@dataclass(frozen=True)
class Epilogue:
    """Elementwise work done on a kernel's output before it is stored (the model compiler's
    fusion of the ops that follow a convolution: lowering.py). ``apply(v, extra)`` is the value to
    store, from the kernel's value ``v`` and ``extra``, the elements at the same position of the
    tensors of ``shapes`` (each broadcast against the op's own output shape, as NumPy broadcasts).
    ``key`` names the work: kernels with equal keys compute the same."""

    apply: Callable
    shapes: tuple = ()
    key: str = ""


def prim_func(spec: Spec, plan: Plan = Plan(), epilogue: Epilogue | None = None) -> tvm.tirx.PrimFunc:
    """``spec``'s kernel for ``plan``: its arguments, then ``epilogue``'s tensors, then the output.
    The epilogue is computed in the output stage itself (same stage, same loops: a schedule and a
    tuned trace apply unchanged); ValueError where that stage is a reduction."""
    args, out = define(spec, plan)
    if epilogue is None:
        return te.create_prim_func([*args, out])
    op = out.op
    view, natural = [int(d) for d in out.shape], list(spec.out_shape)
    units = len(view) - len(natural)  # the unit spatial dims of the kernel's view (ConvSpec.as3d)
    if units < 0 or view[:2] + view[2 + units:] != natural or any(d != 1 for d in view[2:2 + units]):
        raise ValueError(f"{spec.name}: the kernel's output {tuple(view)} is not a view of {tuple(natural)}")
    if not isinstance(op, te.ComputeOp) or isinstance(op.body[0], tirx.Reduce):
        raise ValueError(f"{spec.name}: the output stage {op.name!r} is a reduction; it takes no epilogue")
    extra = [te.placeholder(shape, out.dtype, name=f"epilogue_in{i}") for i, shape in enumerate(epilogue.shapes)]
    idx = [iv.var for iv in op.axis]

    def at(t):  # ``t``'s element at the output position ``idx`` (of the kernel's view), broadcast
        shape = [int(d) for d in t.shape]
        own = [*idx[:2], *idx[2 + units:]][len(natural) - len(shape):]
        return t(*[0 if d == 1 else i for d, i in zip(shape, own)])

    body = epilogue.apply(op.body[0], [at(t) for t in extra])
    fused = te_ffi.ComputeOp(op.name, op.tag, op.attrs, op.axis, [body]).output(0)
    return te.create_prim_func([*args, *extra, fused])
