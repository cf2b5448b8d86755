"""Flattened convolution (Jin et al.): a lateral 1x1 convolution across channels, then vertical
KHx1 and horizontal 1xKW convolutions per channel, in one kernel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .._args import Args, check_out_size, check_shape, int_tuple
from ..spec import Shape, Spec, conv_out_sizes, joined
from .compute import Plan, placeholders, plain_conv2d
from .registry import Case, Parsed, ShapeRow, rand, variant


@dataclass(frozen=True)
class FlattenedSpec(Spec):
    """Flattened convolution: lateral ``(C_out, C_in, 1, 1)``, vertical ``(C_out, 1, kh, 1)``,
    horizontal ``(C_out, 1, 1, kw)``, applied in that order."""

    variant: ClassVar[str] = "flattened_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_out: int = 1
    kernel: Shape = (3, 3)
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    bias: bool = False

    @property
    def out_size(self):
        return conv_out_sizes(self.in_size, self.kernel, self.stride, self.padding, (1, 1))

    @property
    def arg_shapes(self):
        kh, kw = self.kernel
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("lateral_weight", (self.c_out, self.c_in, 1, 1)),
                ("vertical_weight", (self.c_out, 1, kh, 1)),
                ("horizontal_weight", (self.c_out, 1, 1, kw))]
        if self.bias:
            args.append(("bias", (self.c_out,)))
        return args

    @property
    def flops(self):
        h, w = self.in_size
        oh, ow = self.out_size
        kh, kw = self.kernel
        return 2 * self.n * self.c_out * (self.c_in * h * w + kh * oh * w + kw * oh * ow)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{joined(self.in_size)}", f"k{self.c_out}", f"r{joined(self.kernel)}",
                f"s{joined(self.stride)}", f"p{joined(self.padding)}"] + (["b"] if self.bias else [])


def compute(spec: FlattenedSpec, plan: Plan):
    ph = placeholders(spec)
    p, s = spec.padding, spec.stride
    lat = plain_conv2d(ph["input"], ph["lateral_weight"], (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "lateral")
    ver = plain_conv2d(lat, ph["vertical_weight"], (s[0], 1), ((p[0], p[0]), (0, 0)), (1, 1), spec.c_out, "vertical")
    out = plain_conv2d(ver, ph["horizontal_weight"], (1, s[1]), ((0, 0), (p[1], p[1])), (1, 1), spec.c_out,
                        "horizontal", ph.get("bias"))
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def reference(x, wl, wv, wh, b=None, stride=1, padding=0):
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    c_out = wl.shape[0]
    y = F.conv2d(x, wl)
    y = F.conv2d(y, wv, None, (s[0], 1), (p[0], 0), groups=c_out)
    return F.conv2d(y, wh, b, (1, s[1]), (0, p[1]), groups=c_out)


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    x = rand(g, row.n, row.c, *row.size)
    return Case((x, rand(g, row.oc, row.c, 1, 1, scale=row.c ** -0.5), rand(g, row.oc, 1, row.k, 1),
                 rand(g, row.oc, 1, 1, row.k), rand(g, row.oc)), dict(stride=row.stride, padding=row.padding))


@variant(spec=FlattenedSpec, kind="fused", compute=compute, reference=reference, cases=make_case, nd=2,
         vendor="three F.conv2d", call_kwargs=lambda spec: dict(stride=spec.stride, padding=spec.padding),
         schema="(Tensor input, Tensor lateral_weight, Tensor vertical_weight, Tensor horizontal_weight, "
                "Tensor? bias, int[] stride, int[] padding, str target) -> Tensor")
def flattened_conv2d(input, lateral_weight, vertical_weight, horizontal_weight, bias=None, stride=1, padding=0):
    """Flattened convolution (Jin et al.): lateral 1x1 across channels, then vertical KHx1 and
    horizontal 1xKW per channel. ``input (N, C_in, H, W)``, ``lateral_weight (C_out, C_in, 1, 1)``,
    ``vertical_weight (C_out, 1, KH, 1)``, ``horizontal_weight (C_out, 1, 1, KW)``, ``bias (C_out,)``
    added at the end -> ``(N, C_out, H', W')``. ``padding``/``stride`` apply per axis at the
    vertical (H) and horizontal (W) stages."""
    op = "flattened_conv2d"
    a = Args(op)
    x, wl, wv, wh, b = a.tensors(input=(input, 4), lateral_weight=(lateral_weight, 4),
                                 vertical_weight=(vertical_weight, 4), horizontal_weight=(horizontal_weight, 4),
                                 bias=(bias, 1))
    n, c_in = x.shape[:2]
    c_out = wl.shape[0]
    check_shape(wl, (c_out, c_in, 1, 1), "lateral_weight", op, " (C_out, C_in, 1, 1)")
    kh, kw = wv.shape[2], wh.shape[3]
    check_shape(wv, (c_out, 1, kh, 1), "vertical_weight", op, " (C_out, 1, KH, 1)")
    check_shape(wh, (c_out, 1, 1, kw), "horizontal_weight", op, " (C_out, 1, 1, KW)")
    check_shape(b, (c_out,), "bias", op)
    stride = int_tuple(stride, 2, "stride", op, minimum=1)
    padding = int_tuple(padding, 2, "padding", op, minimum=0)
    spec = FlattenedSpec(dtype=a.dtype_name, n=n, c_in=c_in, in_size=tuple(x.shape[2:]), c_out=c_out,
                         kernel=(kh, kw), stride=stride, padding=padding, bias=b is not None)
    check_out_size(spec.in_size, spec.out_size, (kh, kw), padding, (1, 1), op)
    return Parsed(spec, a, [x, wl, wv, wh, b])
