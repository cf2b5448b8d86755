"""Squeeze-and-excitation (SENet) as torchvision.ops.SqueezeExcitation computes it, in one kernel:
global average pool, fc + ReLU, fc + sigmoid, rescale the input."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tvm import te
from tvm import tirx

from .._args import Args, check_shape
from ..spec import Shape, Spec, joined, prod
from .compute import Plan, apply_activation, placeholders, zero
from .registry import Case, Parsed, ShapeRow, rand, variant


@dataclass(frozen=True)
class SqueezeExcitationSpec(Spec):
    """``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with ``fc1 (C_r, C)`` and ``fc2 (C, C_r)``,
    as torchvision.ops.SqueezeExcitation computes it."""

    variant: ClassVar[str] = "squeeze_excitation"
    n: int = 1
    c: int = 1
    spatial: Shape = (1, 1)
    c_reduced: int = 1
    bias1: bool = True
    bias2: bool = True

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.spatial)), ("fc1_weight", (self.c_reduced, self.c))]
        if self.bias1:
            args.append(("fc1_bias", (self.c_reduced,)))
        args.append(("fc2_weight", (self.c, self.c_reduced)))
        if self.bias2:
            args.append(("fc2_bias", (self.c,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c, *self.spatial)

    @property
    def flops(self):
        hw = prod(self.spatial)
        return self.n * (2 * self.c * hw + 4 * self.c * self.c_reduced)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{joined(self.spatial)}", f"r{self.c_reduced}"]


def compute(spec: SqueezeExcitationSpec, plan: Plan):
    ph = placeholders(spec)
    x, w1, b1, w2, b2 = ph["input"], ph["fc1_weight"], ph.get("fc1_bias"), ph["fc2_weight"], ph.get("fc2_bias")
    dt = spec.dtype
    sp = spec.spatial
    red = [te.reduce_axis((0, e), f"rs{a}") for a, e in enumerate(sp)]
    hw = math.prod(sp)
    pooled = te.compute((spec.n, spec.c), lambda nn, c: te.sum(x[(nn, c, *red)], axis=red), name="pool")
    rc = te.reduce_axis((0, spec.c), "rc")
    fc1 = te.compute((spec.n, spec.c_reduced), lambda nn, r: te.sum(pooled[nn, rc] * w1[r, rc], axis=[rc]), name="fc1")
    inv = tirx.const(1.0 / hw, dt)
    h1 = te.compute(fc1.shape, lambda nn, r: apply_activation(
        fc1[nn, r] * inv + (b1[r] if b1 is not None else zero(dt)), "relu", dt), name="fc1_act")
    rr = te.reduce_axis((0, spec.c_reduced), "rr")
    fc2 = te.compute((spec.n, spec.c), lambda nn, c: te.sum(h1[nn, rr] * w2[c, rr], axis=[rr]), name="fc2")
    scale = te.compute(fc2.shape, lambda nn, c: te.sigmoid(fc2[nn, c] + (b2[c] if b2 is not None else zero(dt))),
                       name="scale")
    out = te.compute(spec.out_shape, lambda nn, c, *s_: x[(nn, c, *s_)] * scale[nn, c], name="out")
    return [ph[nm] for nm, _ in spec.arg_shapes], out


def reference(x, w1, b1, w2, b2):
    w1 = w1.reshape(w1.shape[0], -1)
    w2 = w2.reshape(w2.shape[0], -1)
    s = x.mean(dim=tuple(range(2, x.dim())))
    s = torch.sigmoid(F.linear(F.relu(F.linear(s, w1, b1)), w2, b2))
    return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    cr = max(1, row.c // 4)
    return Case((rand(g, row.n, row.c, *row.size), rand(g, cr, row.c, scale=row.c ** -0.5), rand(g, cr),
                 rand(g, row.c, cr, scale=cr ** -0.5), rand(g, row.c)))


@variant(spec=SqueezeExcitationSpec, kind="memory", compute=compute, reference=reference, cases=make_case,
         vendor="mean + F.linear + F.relu + F.linear + sigmoid + mul", call_kwargs=lambda spec: {},
         schema="(Tensor input, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, Tensor? fc2_bias, "
                "str target) -> Tensor")
def squeeze_excitation(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    """Squeeze-and-excitation as torchvision.ops.SqueezeExcitation (ReLU, sigmoid):
    ``input * sigmoid(fc2(relu(fc1(mean(input, spatial)))))``. ``input (N, C, *spatial)``,
    ``fc1_weight (C_r, C)`` or ``(C_r, C, 1, 1)``, ``fc1_bias (C_r,)``, ``fc2_weight (C, C_r)`` or
    ``(C, C_r, 1, 1)``, ``fc2_bias (C,)``; biases may be None. Returns ``(N, C, *spatial)``."""
    op = "squeeze_excitation"
    a = Args(op)
    x, w1, b1, w2, b2 = a.tensors(input=(input, range(3, 6)), fc1_weight=(fc1_weight, (2, 4)),
                                  fc1_bias=(fc1_bias, 1), fc2_weight=(fc2_weight, (2, 4)), fc2_bias=(fc2_bias, 1))
    c = x.shape[1]
    cr = w1.shape[0]
    w1 = w1.reshape(w1.shape[0], -1) if w1.dim() == 4 and w1.shape[2:] == (1, 1) else w1
    w2 = w2.reshape(w2.shape[0], -1) if w2.dim() == 4 and w2.shape[2:] == (1, 1) else w2
    check_shape(w1, (cr, c), "fc1_weight", op, " (C_r, C) or (C_r, C, 1, 1)")
    check_shape(w2, (c, cr), "fc2_weight", op, " (C, C_r) or (C, C_r, 1, 1)")
    check_shape(b1, (cr,), "fc1_bias", op)
    check_shape(b2, (c,), "fc2_bias", op)
    spec = SqueezeExcitationSpec(dtype=a.dtype_name, n=x.shape[0], c=c, spatial=tuple(x.shape[2:]), c_reduced=cr,
                                 bias1=b1 is not None, bias2=b2 is not None)
    return Parsed(spec, a, [x, w1, b1, w2, b2])
