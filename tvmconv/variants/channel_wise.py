"""ChannelNets' channel-wise convolution: a 1-D convolution sliding along the channel axis,
shared by every spatial position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tvm import te
from tvm import tirx

from .._args import Args, check_divisible, check_out_size, check_shape, int_tuple
from ..spec import Shape, Spec, conv_out_size, joined, prod
from .compute import Plan, placeholders, zero
from .registry import Case, Parsed, ShapeRow, rand, variant


@dataclass(frozen=True)
class ChannelWiseSpec(Spec):
    """ChannelNets' channel-wise convolution: a 1-D convolution sliding along the channel axis,
    shared by every spatial position. The ``C`` channels form ``groups`` slices of ``C/groups``;
    slice ``g`` is convolved with ``weight[g]`` (length ``k``), giving ``L`` outputs, and the
    result has ``groups * L`` channels."""

    variant: ClassVar[str] = "channel_wise_conv"
    n: int = 1
    c: int = 1
    spatial: Shape = (1, 1)
    groups: int = 1
    k: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    bias: bool = False

    @property
    def l_out(self) -> int:
        return conv_out_size(self.c // self.groups, self.k, self.stride, self.padding, self.dilation)

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.spatial)), ("weight", (self.groups, self.k))]
        if self.bias:
            args.append(("bias", (self.groups,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.groups * self.l_out, *self.spatial)

    @property
    def flops(self):
        return 2 * prod(self.out_shape) * self.k

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{joined(self.spatial)}", f"g{self.groups}", f"r{self.k}",
                f"s{self.stride}", f"p{self.padding}", f"d{self.dilation}"] + (["b"] if self.bias else [])


def compute(spec: ChannelWiseSpec, plan: Plan):
    ph = placeholders(spec)
    x, w, b = ph["input"], ph["weight"], ph.get("bias")
    cg, L = spec.c // spec.groups, spec.l_out
    rk = te.reduce_axis((0, spec.k), "rk")

    def body(nn, c, *sp):
        g, l = tirx.floordiv(c, L), tirx.floormod(c, L)
        src = l * spec.stride + rk * spec.dilation - spec.padding
        ok = tirx.all(src >= 0, src < cg)
        return te.sum(tirx.if_then_else(ok, x[(nn, g * cg + src, *sp)] * w[g, rk], zero(spec.dtype)), axis=[rk])

    acc = te.compute(spec.out_shape, body, name="conv")
    out = acc if b is None else te.compute(
        acc.shape, lambda nn, c, *sp: acc[(nn, c, *sp)] + b[tirx.floordiv(c, L)], name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def reference(x, w, b=None, stride=1, padding=0, dilation=1):
    """A grouped conv1d over the channel axis, one row per (batch, spatial position)."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    g, k = w.shape
    rows = x.reshape(n, c, -1).permute(0, 2, 1).reshape(-1, g, c // g)
    y = F.conv1d(rows, w.reshape(g, 1, k), b, stride, padding, dilation, groups=g)  # (rows, g, L)
    L = y.shape[-1]
    return y.reshape(n, -1, g * L).permute(0, 2, 1).reshape(n, g * L, *spatial)


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    groups = row.groups if row.c % row.groups == 0 else 1
    cg = row.c // groups
    k = min(row.k, cg + 2 * ((row.k - 1) // 2)) if cg > 0 else 1
    k = max(1, min(k, cg + 2 * ((k - 1) // 2)))
    pad = (k - 1) // 2
    return Case((rand(g, row.n, row.c, *row.size), rand(g, groups, k), rand(g, groups)),
                dict(stride=min(row.stride, max(1, cg)), padding=pad, dilation=1))


@variant(spec=ChannelWiseSpec, kind="memory", compute=compute, reference=reference, cases=make_case,
         vendor="F.conv1d over channels",
         call_kwargs=lambda spec: dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation),
         schema="(Tensor input, Tensor weight, Tensor? bias, int stride, int padding, int dilation, "
                "str target) -> Tensor")
def channel_wise_conv(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """ChannelNets' channel-wise convolution: a 1-D convolution along the channel axis, shared by
    all spatial positions. ``input (N, C, *spatial)``, ``weight (G, K)`` (G groups of C/G channels,
    one length-K kernel each), ``bias (G,)`` -> ``(N, G*L, *spatial)`` with
    ``L = (C/G + 2*padding - dilation*(K-1) - 1) // stride + 1``."""
    op = "channel_wise_conv"
    a = Args(op)
    x, w, b = a.tensors(input=(input, range(3, 6)), weight=(weight, 2), bias=(bias, 1))
    groups, k = w.shape
    check_divisible(x.shape[1], groups, "input channels", op, "weight.shape[0] (groups)")
    check_shape(b, (groups,), "bias", op, " (one value per group)")
    (s,) = int_tuple(stride, 1, "stride", op, minimum=1)
    (p,) = int_tuple(padding, 1, "padding", op, minimum=0)
    (d,) = int_tuple(dilation, 1, "dilation", op, minimum=1)
    spec = ChannelWiseSpec(dtype=a.dtype_name, n=x.shape[0], c=x.shape[1], spatial=tuple(x.shape[2:]),
                           groups=groups, k=k, stride=s, padding=p, dilation=d, bias=b is not None)
    check_out_size((x.shape[1] // groups,), (spec.l_out,), (k,), (p,), (d,), op)
    return Parsed(spec, a, [x, w, b])
