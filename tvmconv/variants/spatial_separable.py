"""Spatially separable convolution (EffNet, Inception-v3's factorisation): a kx1 convolution then
a 1xk one, in one kernel built from two convolution stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tvm import te

from .._args import Args, check_divisible, check_groups, check_out_size, check_shape, int_tuple
from ..spec import Shape, Spec, conv_out_size, joined, prod
from .compute import Plan, conv_stage
from .conv import ConvSpec
from .registry import Case, Parsed, ShapeRow, rand, row_groups, variant


@dataclass(frozen=True)
class SpatialSeparableSpec(Spec):
    """EffNet-style kx1 then 1xk: ``weight_kx1 (C_mid, C_in/g, k, 1)``, ``weight_1xk (C_out, C_mid/g, 1, k)``."""

    variant: ClassVar[str] = "spatial_separable_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_mid: int = 1
    c_out: int = 1
    k: int = 3
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    dilation: Shape = (1, 1)
    groups: int = 1
    bias1: bool = False
    bias2: bool = False

    @property
    def mid_size(self):
        h, w = self.in_size
        return (conv_out_size(h, self.k, self.stride[0], self.padding[0], self.dilation[0]), w)

    @property
    def out_size(self):
        mh, w = self.mid_size
        return (mh, conv_out_size(w, self.k, self.stride[1], self.padding[1], self.dilation[1]))

    def stages(self) -> tuple["ConvSpec", "ConvSpec"]:
        """The kx1 and 1xk convolutions as specs of their own."""
        common = dict(dtype=self.dtype, n=self.n, groups=self.groups, output_padding=(0, 0))
        first = ConvSpec(c_in=self.c_in, in_size=self.in_size, c_out=self.c_mid, kernel=(self.k, 1),
                         stride=(self.stride[0], 1), padding=((self.padding[0],) * 2, (0, 0)),
                         dilation=(self.dilation[0], 1), bias=self.bias1, **common)
        second = ConvSpec(c_in=self.c_mid, in_size=self.mid_size, c_out=self.c_out, kernel=(1, self.k),
                          stride=(1, self.stride[1]), padding=((0, 0), (self.padding[1],) * 2),
                          dilation=(1, self.dilation[1]), bias=self.bias2, **common)
        return first, second

    @property
    def kernel_arg_shapes(self):
        """``arg_shapes`` with the input and weights in the 3-D views of the two stages."""
        first, second = (dict(s.kernel_arg_shapes) for s in self.stages())
        views = {"input": first["input"], "weight_kx1": first["weight"], "weight_1xk": second["weight"]}
        return [(name, views.get(name, shape)) for name, shape in self.arg_shapes]

    @property
    def kernel_out_shape(self):
        return self.stages()[1].kernel_out_shape

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("weight_kx1", (self.c_mid, self.c_in // self.groups, self.k, 1)),
                ("weight_1xk", (self.c_out, self.c_mid // self.groups, 1, self.k))]
        if self.bias1:
            args.append(("bias_kx1", (self.c_mid,)))
        if self.bias2:
            args.append(("bias_1xk", (self.c_out,)))
        return args

    @property
    def flops(self):
        return 2 * self.n * self.k * (self.c_mid * (self.c_in // self.groups) * prod(self.mid_size)
                                      + self.c_out * (self.c_mid // self.groups) * prod(self.out_size))

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{joined(self.in_size)}", f"m{self.c_mid}", f"k{self.c_out}",
                f"r{self.k}", f"s{joined(self.stride)}", f"p{joined(self.padding)}", f"d{joined(self.dilation)}",
                f"g{self.groups}"]


def compute(spec: SpatialSeparableSpec, plan: Plan):
    ph = {nm: te.placeholder(shape, spec.dtype, name=nm) for nm, shape in spec.kernel_arg_shapes}
    st1, st2 = spec.stages()
    p1, p2 = dict(plan.stages).get("kx1_", Plan()), dict(plan.stages).get("c1xk_", Plan())
    mid = conv_stage(st1.as3d(), p1, ph["input"], ph["weight_kx1"], ph.get("bias_kx1"), "kx1_")
    out = conv_stage(st2.as3d(), p2, mid, ph["weight_1xk"], ph.get("bias_1xk"), "c1xk_")
    return [ph[nm] for nm, _ in spec.kernel_arg_shapes], out


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def reference(x, w1, w2, b1=None, b2=None, stride=1, padding=0, dilation=1, groups=1):
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    y = F.conv2d(x, w1, b1, (s[0], 1), (p[0], 0), (d[0], 1), groups)
    return F.conv2d(y, w2, b2, (1, s[1]), (0, p[1]), (1, d[1]), groups)


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = row_groups(row)
    x = rand(g, row.n, row.c, *row.size)
    w1 = rand(g, row.oc, row.c // gr, row.k, 1, scale=(row.c // gr * row.k) ** -0.5)
    w2 = rand(g, row.oc, row.oc // gr, 1, row.k, scale=(row.oc // gr * row.k) ** -0.5)
    return Case((x, w1, w2, rand(g, row.oc), rand(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, groups=gr))


@variant(spec=SpatialSeparableSpec, kind="fused", compute=compute, reference=reference, cases=make_case, nd=2,
         vendor="F.conv2d kx1 + F.conv2d 1xk",
         call_kwargs=lambda spec: dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                                       groups=spec.groups),
         schema="(Tensor input, Tensor weight_kx1, Tensor weight_1xk, Tensor? bias_kx1, Tensor? bias_1xk, "
                "int[] stride, int[] padding, int[] dilation, int groups, str target) -> Tensor")
def spatial_separable_conv2d(input, weight_kx1, weight_1xk, bias_kx1=None, bias_1xk=None, stride=1,
                             padding=0, dilation=1, groups=1):
    """A kx1 convolution then a 1xk one (EffNet, Inception-v3 factorisation):
    ``conv2d(conv2d(input, w_kx1, b1, (sh,1), (ph,0), (dh,1), groups), w_1xk, b2, (1,sw), (0,pw), (1,dw), groups)``.

    ``input (N, C_in, H, W)``, ``weight_kx1 (C_mid, C_in/groups, K, 1)``,
    ``weight_1xk (C_out, C_mid/groups, 1, K)`` -> ``(N, C_out, H', W')``. Depthwise: groups=C_in=C_mid."""
    op = "spatial_separable_conv2d"
    a = Args(op)
    x, w1, w2, b1, b2 = a.tensors(input=(input, 4), weight_kx1=(weight_kx1, 4), weight_1xk=(weight_1xk, 4),
                                  bias_kx1=(bias_kx1, 1), bias_1xk=(bias_1xk, 1))
    groups = check_groups(groups, op)
    n, c_in = x.shape[:2]
    check_divisible(c_in, groups, "input channels", op)
    c_mid, k = w1.shape[0], w1.shape[2]
    check_shape(w1, (c_mid, c_in // groups, k, 1), "weight_kx1", op, " (C_mid, C_in/groups, K, 1)")
    check_divisible(c_mid, groups, "weight_kx1.shape[0]", op)
    c_out = w2.shape[0]
    check_shape(w2, (c_out, c_mid // groups, 1, k), "weight_1xk", op, " (C_out, C_mid/groups, 1, K)")
    check_divisible(c_out, groups, "weight_1xk.shape[0]", op)
    check_shape(b1, (c_mid,), "bias_kx1", op)
    check_shape(b2, (c_out,), "bias_1xk", op)
    stride = int_tuple(stride, 2, "stride", op, minimum=1)
    padding = int_tuple(padding, 2, "padding", op, minimum=0)
    dilation = int_tuple(dilation, 2, "dilation", op, minimum=1)
    spec = SpatialSeparableSpec(dtype=a.dtype_name, n=n, c_in=c_in, in_size=tuple(x.shape[2:]), c_mid=c_mid,
                                c_out=c_out, k=k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                                bias1=b1 is not None, bias2=b2 is not None)
    check_out_size(spec.in_size, spec.out_size, (k, k), padding, dilation, op)
    return Parsed(spec, a, [x, w1, w2, b1, b2])
