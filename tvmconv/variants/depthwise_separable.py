"""The depthwise-separable block (MobileNet, Xception) in one kernel, no intermediate tensor in
memory: a depthwise convolution (channel multiplier m), an optional activation, a pointwise 1x1
convolution and an optional activation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tvm import te
from tvm import tirx

from .._args import Args, check_out_size, check_shape, conv_padding, int_tuple
from .._args import activation as activation_arg
from ..spec import Pads, Shape, Spec, conv_out_sizes, joined, prod
from .compute import Plan, apply_activation, ceil_div, placeholders, zero, zero_pad
from .registry import Case, Parsed, ShapeRow, rand, torch_activation, variant


@dataclass(frozen=True)
class DepthwiseSeparableSpec(Spec):
    """MobileNet / Xception block: depthwise ``(C*m, 1, kh, kw)`` then pointwise ``(C_out, C*m, 1, 1)``."""

    variant: ClassVar[str] = "depthwise_separable_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    multiplier: int = 1
    c_out: int = 1
    kernel: Shape = (3, 3)
    stride: Shape = (1, 1)
    padding: Pads = ((0, 0), (0, 0))
    dilation: Shape = (1, 1)
    dw_bias: bool = False
    pw_bias: bool = False
    mid_activation: str | None = None
    activation: str | None = None

    @property
    def c_mid(self) -> int:
        return self.c_in * self.multiplier

    @property
    def out_size(self):
        return conv_out_sizes(self.in_size, self.kernel, self.stride, self.padding, self.dilation)

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("depthwise_weight", (self.c_mid, 1, *self.kernel)),
                ("pointwise_weight", (self.c_out, self.c_mid, 1, 1))]
        if self.dw_bias:
            args.append(("depthwise_bias", (self.c_mid,)))
        if self.pw_bias:
            args.append(("pointwise_bias", (self.c_out,)))
        return args

    @property
    def flops(self):
        hw = prod(self.out_size)
        return 2 * self.n * hw * self.c_mid * (prod(self.kernel) + self.c_out)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{joined(self.in_size)}", f"m{self.multiplier}", f"k{self.c_out}",
                f"r{joined(self.kernel)}", f"s{joined(self.stride)}",
                "p" + joined(f"{a}-{b}" if a != b else str(a) for a, b in self.padding), f"d{joined(self.dilation)}",
                f"a{self.mid_activation or 'none'}-{self.activation or 'none'}"]


def compute(spec: DepthwiseSeparableSpec, plan: Plan):
    ph = placeholders(spec)
    x, wd, wp = ph["input"], ph["depthwise_weight"], ph["pointwise_weight"]
    bd, bp = ph.get("depthwise_bias"), ph.get("pointwise_bias")
    dt = spec.dtype
    oh, ow = spec.out_size
    vb, owi = (plan.vb, plan.owi) if plan.kind == "ocvec" else (1, 1)
    owp = ceil_div(ow, owi) * owi
    kh, kw = spec.kernel
    ext = [(oh - 1) * spec.stride[0] + (kh - 1) * spec.dilation[0] + 1,
           (owp - 1) * spec.stride[1] + (kw - 1) * spec.dilation[1] + 1]
    xp = zero_pad(x, [spec.padding[0][0], spec.padding[1][0]], ext)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    mult = spec.multiplier
    dw = te.compute(
        (spec.n, spec.c_mid, oh, owp),
        lambda nn, c, y, xx: te.sum(
            xp[nn, tirx.floordiv(c, mult), y * spec.stride[0] + ry * spec.dilation[0],
               xx * spec.stride[1] + rx * spec.dilation[1]] * wd[c, 0, ry, rx], axis=[ry, rx]),
        name="dw")
    mid = te.compute(dw.shape, lambda nn, c, y, xx: apply_activation(
        dw[nn, c, y, xx] + bd[c] if bd is not None else dw[nn, c, y, xx], spec.mid_activation, dt), name="mid")
    ocb = ceil_div(spec.c_out, vb)
    wpack = te.compute((ocb, spec.c_mid, vb), lambda o, c, v: tirx.if_then_else(
        o * vb + v < spec.c_out, wp[o * vb + v, c, 0, 0], zero(dt)), name="wpack")
    rc = te.reduce_axis((0, spec.c_mid), "rc")
    pw = te.compute((spec.n, ocb, oh, owp, vb),
                    lambda nn, o, y, xx, v: te.sum(mid[nn, rc, y, xx] * wpack[o, rc, v], axis=[rc]), name="conv")

    def epilogue(nn, c, y, xx):
        v = pw[nn, tirx.floordiv(c, vb), y, xx, tirx.floormod(c, vb)]
        return apply_activation(v + bp[c] if bp is not None else v, spec.activation, dt)

    out = te.compute(spec.out_shape, epilogue, name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def reference(x, dw, pw, db=None, pb=None, stride=1, padding=0, dilation=1, mid_activation=None, activation=None):
    y = torch_activation(F.conv2d(x, dw, db, stride, padding, dilation, groups=x.shape[1]), mid_activation)
    return torch_activation(F.conv2d(y, pw, pb), activation)


def call_kwargs(spec: DepthwiseSeparableSpec) -> dict | None:
    if any(lo != hi for lo, hi in spec.padding):
        return None
    return dict(stride=spec.stride, padding=tuple(lo for lo, _ in spec.padding), dilation=spec.dilation,
                mid_activation=spec.mid_activation, activation=spec.activation)


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    m = row.oc // row.c if row.oc % row.c == 0 and row.oc >= row.c else 1
    cm = row.c * m
    x = rand(g, row.n, row.c, *row.size)
    return Case((x, rand(g, cm, 1, row.k, row.k, scale=row.k ** -1.0), rand(g, row.oc, cm, 1, 1, scale=cm ** -0.5),
                 rand(g, cm), rand(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, mid_activation="relu6",
                     activation="relu"))


@variant(spec=DepthwiseSeparableSpec, kind="fused", compute=compute, reference=reference, cases=make_case, nd=2,
         vendor="F.conv2d(groups=C) + act + F.conv2d 1x1 + act", call_kwargs=call_kwargs, family="depthwise_separable",
         templates={"cuda": "dwsep"},
         schema="(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, Tensor? depthwise_bias, "
                "Tensor? pointwise_bias, int[] stride, int[] padding, int[] dilation, str? mid_activation, "
                "str? activation, str target) -> Tensor")
def depthwise_separable_conv2d(input, depthwise_weight, pointwise_weight, depthwise_bias=None,
                               pointwise_bias=None, stride=1, padding=0, dilation=1,
                               mid_activation=None, activation=None):
    """MobileNet/Xception block in one kernel, no intermediate tensor in memory:
    ``act(conv2d(mid_act(conv2d(input, dw, db, stride, padding, dilation, groups=C_in)), pw, pb))``.

    ``input (N, C_in, H, W)``, ``depthwise_weight (C_in*m, 1, KH, KW)``,
    ``pointwise_weight (C_out, C_in*m, 1, 1)``, biases ``(C_in*m,)`` and ``(C_out,)``;
    activations None, 'relu' or 'relu6'. Returns ``(N, C_out, H', W')``."""
    op = "depthwise_separable_conv2d"
    a = Args(op)
    x, wd, wp, bd, bp = a.tensors(input=(input, 4), depthwise_weight=(depthwise_weight, 4),
                                  pointwise_weight=(pointwise_weight, 4), depthwise_bias=(depthwise_bias, 1),
                                  pointwise_bias=(pointwise_bias, 1))
    n, c_in = x.shape[:2]
    c_mid, one = wd.shape[:2]
    if one != 1 or c_mid % c_in:
        raise ValueError(f"{op}: argument 'depthwise_weight' must have shape (C_in*m, 1, KH, KW) with "
                         f"C_in={c_in}, got {tuple(wd.shape)}")
    kernel = tuple(wd.shape[2:])
    stride = int_tuple(stride, 2, "stride", op, minimum=1)
    dilation = int_tuple(dilation, 2, "dilation", op, minimum=1)
    pads = conv_padding(padding, 2, kernel, dilation, stride, op)
    c_out = wp.shape[0]
    check_shape(wp, (c_out, c_mid, 1, 1), "pointwise_weight", op)
    check_shape(bd, (c_mid,), "depthwise_bias", op)
    check_shape(bp, (c_out,), "pointwise_bias", op)
    spec = DepthwiseSeparableSpec(dtype=a.dtype_name, n=n, c_in=c_in, in_size=tuple(x.shape[2:]),
                                  multiplier=c_mid // c_in, c_out=c_out, kernel=kernel, stride=stride,
                                  padding=pads, dilation=dilation, dw_bias=bd is not None, pw_bias=bp is not None,
                                  mid_activation=activation_arg(mid_activation, "mid_activation", op),
                                  activation=activation_arg(activation, "activation", op))
    check_out_size(spec.in_size, spec.out_size, kernel, pads, dilation, op)
    return Parsed(spec, a, [x, wd, wp, bd, bp])
