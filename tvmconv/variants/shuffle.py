"""Channel shuffle (ShuffleNet) and the ShuffleNet unit: a grouped convolution with the shuffle
folded into its output index, one kernel (a ``ConvSpec`` with ``shuffle`` set)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tvm import te

from .._args import Args, check_divisible, check_groups
from ..spec import Shape, Spec, joined
from .compute import Plan, placeholders, shuffle_src
from .conv import ConvSpec, call_kwargs as conv_call_kwargs
from .conv import compute as conv_compute
from .conv import conv_family, padded_vendor, parse_conv
from .registry import Case, Parsed, ShapeRow, rand, row_groups, variant


@dataclass(frozen=True)
class ChannelShuffleSpec(Spec):
    """``torch.nn.functional.channel_shuffle``: ``(N, g*k, *S) -> view (N, g, k, *S) -> transpose``."""

    variant: ClassVar[str] = "channel_shuffle"
    n: int = 1
    c: int = 1
    spatial: Shape = ()
    groups: int = 1

    @property
    def arg_shapes(self):
        return [("input", (self.n, self.c, *self.spatial))]

    @property
    def out_shape(self):
        return (self.n, self.c, *self.spatial)

    @property
    def flops(self):
        return 0

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{joined(self.spatial) or '0'}", f"g{self.groups}"]


def compute(spec: ChannelShuffleSpec, plan: Plan):
    ph = placeholders(spec)
    x = ph["input"]
    out = te.compute(spec.out_shape, lambda nn, c, *sp: x[(nn, shuffle_src(c, spec.c, spec.groups), *sp)],
                     name="out")
    return [x], out


def channel_shuffle_reference(x, groups):
    return F.channel_shuffle(x, groups)


def channel_shuffle_numpy(x: np.ndarray, groups: int) -> np.ndarray:
    """The definition: view (N, g, C/g, *S), swap the two channel axes, flatten back."""
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def _channel_shuffle_case(row: ShapeRow, g: torch.Generator) -> Case:
    groups = row.groups if row.groups > 1 and row.c % row.groups == 0 else (2 if row.c % 2 == 0 else 1)
    return Case((rand(g, row.n, row.c, *row.size), groups))


@variant(spec=ChannelShuffleSpec, kind="memory", compute=compute, reference=channel_shuffle_reference,
         cases=_channel_shuffle_case, schema="(Tensor input, int groups, str target) -> Tensor",
         vendor="F.channel_shuffle", call_kwargs=lambda spec: dict(groups=spec.groups))
def channel_shuffle(input, groups):
    """``input (N, C, *)`` -> ``(N, C, *)``: torch.nn.functional.channel_shuffle."""
    op = "channel_shuffle"
    a = Args(op)
    x = a.tensor(input, "input", ndim=range(3, 8))
    groups = check_groups(groups, op)
    check_divisible(x.shape[1], groups, "input channels", op)
    spec = ChannelShuffleSpec(dtype=a.dtype_name, n=x.shape[0], c=x.shape[1], spatial=tuple(x.shape[2:]),
                              groups=groups)
    return Parsed(spec, a, [x])


# -- the ShuffleNet unit ----------------------------------------------------------------------------
def shuffled_group_conv2d_reference(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, shuffle_groups=None):
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    return F.channel_shuffle(y, groups if shuffle_groups is None else shuffle_groups)


def _shuffled_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = row_groups(row)
    sg = gr if gr > 1 else (2 if row.oc % 2 == 0 else 1)
    x = rand(g, row.n, row.c, *row.size)
    w = rand(g, row.oc, row.c // gr, row.k, row.k, scale=(row.c // gr * row.k ** 2) ** -0.5)
    return Case((x, w, rand(g, row.oc)), dict(stride=row.stride, padding=row.padding, dilation=row.dilation,
                                               groups=gr, shuffle_groups=sg))


@variant(spec=ConvSpec, kind="fused", compute=conv_compute, reference=shuffled_group_conv2d_reference,
         cases=_shuffled_case, nd=2, vendor="F.conv2d + F.channel_shuffle", call_kwargs=conv_call_kwargs,
         vendor_fallback=padded_vendor, family=conv_family, templates={"cuda": "tiled"},
         schema="(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
                "int groups, int shuffle_groups, str target) -> Tensor")
def shuffled_group_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          shuffle_groups=None):
    """ShuffleNet's unit: ``channel_shuffle(conv2d(input, weight, bias, ..., groups), shuffle_groups)``
    in one kernel, the shuffle folded into the output index. ``shuffle_groups`` defaults to ``groups``.
    ``input (N, C_in, H, W)``, ``weight (C_out, C_in/groups, KH, KW)`` -> ``(N, C_out, H', W')``."""
    sg = groups if shuffle_groups is None else check_groups(shuffle_groups, "shuffled_group_conv2d", "shuffle_groups")
    if sg == 1:
        return parse_conv("shuffled_group_conv2d", 2, input, weight, bias, stride, padding, dilation, groups)
    return parse_conv("shuffled_group_conv2d", 2, input, weight, bias, stride, padding, dilation, groups,
                      shuffle=sg)
