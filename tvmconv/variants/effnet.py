"""EffNet's spatial core in one kernel: depthwise 1x3, max-pool 2x1, depthwise 3x1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tvm import te

from .._args import Args, check_shape
from .._args import activation as activation_arg
from ..spec import Shape, Spec, joined, prod
from .compute import Plan, max_nan, placeholders, plain_conv2d
from .registry import Case, Parsed, ShapeRow, rand, torch_activation, variant


@dataclass(frozen=True)
class EffNetSpec(Spec):
    """EffNet's spatial core: depthwise 1x3 (pad 0,1), max-pool 2x1 (stride 2,1), depthwise 3x1
    (pad 1,0). Weights ``(C, 1, 1, 3)`` and ``(C, 1, 3, 1)``; optional biases and ReLU after each
    depthwise convolution."""

    variant: ClassVar[str] = "effnet_block"
    n: int = 1
    c: int = 1
    in_size: Shape = (2, 1)
    bias1: bool = False
    bias2: bool = False
    activation: str | None = None

    @property
    def out_size(self):
        return (self.in_size[0] // 2, self.in_size[1])

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.in_size)),
                ("weight_1x3", (self.c, 1, 1, 3)), ("weight_3x1", (self.c, 1, 3, 1))]
        if self.bias1:
            args.append(("bias_1x3", (self.c,)))
        if self.bias2:
            args.append(("bias_3x1", (self.c,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c, *self.out_size)

    @property
    def flops(self):
        return 2 * 3 * self.n * self.c * (prod(self.in_size) + prod(self.out_size))

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{joined(self.in_size)}", f"a{self.activation or 'none'}"]


def compute(spec: EffNetSpec, plan: Plan):
    ph = placeholders(spec)
    c = spec.c
    a = plain_conv2d(ph["input"], ph["weight_1x3"], (1, 1), ((0, 0), (1, 1)), (1, 1), c, "dw_1x3",
                      ph.get("bias_1x3"), spec.activation)
    oh, w = spec.out_size
    pooled = te.compute((spec.n, c, oh, w),
                        lambda nn, ch, y, xx: max_nan(a[nn, ch, 2 * y, xx], a[nn, ch, 2 * y + 1, xx]),
                        name="pool")
    out = plain_conv2d(pooled, ph["weight_3x1"], (1, 1), ((1, 1), (0, 0)), (1, 1), c, "dw_3x1",
                        ph.get("bias_3x1"), spec.activation)
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def reference(x, w1, w2, b1=None, b2=None, activation=None):
    c = x.shape[1]
    y = torch_activation(F.conv2d(x, w1, b1, padding=(0, 1), groups=c), activation)
    y = F.max_pool2d(y, kernel_size=(2, 1), stride=(2, 1))
    return torch_activation(F.conv2d(y, w2, b2, padding=(1, 0), groups=c), activation)


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    return Case((rand(g, row.n, row.c, *row.size), rand(g, row.c, 1, 1, 3), rand(g, row.c, 1, 3, 1), rand(g, row.c),
                 rand(g, row.c)), dict(activation="relu"))


@variant(spec=EffNetSpec, kind="fused", compute=compute, reference=reference, cases=make_case,
         vendor="F.conv2d 1x3 + F.max_pool2d + F.conv2d 3x1", call_kwargs=lambda spec: dict(activation=spec.activation),
         templates={"cuda": "effnet"},
         schema="(Tensor input, Tensor weight_1x3, Tensor weight_3x1, Tensor? bias_1x3, Tensor? bias_3x1, "
                "str? activation, str target) -> Tensor")
def effnet_block(input, weight_1x3, weight_3x1, bias_1x3=None, bias_3x1=None, activation=None):
    """EffNet's spatial core in one kernel: depthwise 1x3 (padding (0,1)), max-pool 2x1 (stride
    (2,1)), depthwise 3x1 (padding (1,0)); ``activation`` (None/'relu'/'relu6') after each
    depthwise conv. ``input (N, C, H, W)``, weights ``(C, 1, 1, 3)`` and ``(C, 1, 3, 1)``,
    biases ``(C,)`` -> ``(N, C, H//2, W)``."""
    op = "effnet_block"
    a = Args(op)
    x, w1, w2, b1, b2 = a.tensors(input=(input, 4), weight_1x3=(weight_1x3, 4), weight_3x1=(weight_3x1, 4),
                                  bias_1x3=(bias_1x3, 1), bias_3x1=(bias_3x1, 1))
    n, c, h, w = x.shape
    check_shape(w1, (c, 1, 1, 3), "weight_1x3", op)
    check_shape(w2, (c, 1, 3, 1), "weight_3x1", op)
    check_shape(b1, (c,), "bias_1x3", op)
    check_shape(b2, (c,), "bias_3x1", op)
    if h < 2:
        raise ValueError(f"{op}: argument 'input' must have height >= 2 for the 2x1 pooling, got {h}")
    spec = EffNetSpec(dtype=a.dtype_name, n=n, c=c, in_size=(h, w), bias1=b1 is not None, bias2=b2 is not None,
                      activation=activation_arg(activation, "activation", op))
    return Parsed(spec, a, [x, w1, w2, b1, b2])
