"""Deformable convolution (v1, and v2 with a mask), as torchvision.ops.deform_conv2d: every kernel
tap samples the input bilinearly at a learned offset. The reference is a NumPy transcription of
torchvision's kernel (torchvision is not a dependency); it has no backward."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tvm import te
from tvm import tirx

from .._args import Args, check_divisible, check_out_size, check_shape, int_tuple
from ..spec import Shape, Spec, conv_out_size, conv_out_sizes, joined, prod
from .compute import Plan, placeholders, zero
from .registry import Case, Parsed, ShapeRow, rand, row_groups, variant


@dataclass(frozen=True)
class DeformConv2dSpec(Spec):
    """torchvision.ops.deform_conv2d: ``input (N, C_in, H, W)``, ``offset (N, 2*og*kh*kw, OH, OW)``,
    ``weight (C_out, C_in/groups, kh, kw)``, optional ``mask (N, og*kh*kw, OH, OW)`` and bias."""

    variant: ClassVar[str] = "deform_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_out: int = 1
    kernel: Shape = (1, 1)
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    dilation: Shape = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    mask: bool = False
    bias: bool = False

    @property
    def out_size(self) -> Shape:
        return conv_out_sizes(self.in_size, self.kernel, self.stride, self.padding, self.dilation)

    @property
    def arg_shapes(self):
        kk = prod(self.kernel)
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("offset", (self.n, 2 * self.offset_groups * kk, *self.out_size)),
                ("weight", (self.c_out, self.c_in // self.groups, *self.kernel))]
        if self.mask:
            args.append(("mask", (self.n, self.offset_groups * kk, *self.out_size)))
        if self.bias:
            args.append(("bias", (self.c_out,)))
        return args

    @property
    def flops(self):
        kk = prod(self.kernel)
        # the MACs plus the bilinear interpolation (4 products, 3 adds per sampled value)
        sampled = self.n * self.c_in * kk * prod(self.out_size)
        return 2 * prod(self.out_shape) * (self.c_in // self.groups) * kk + 7 * sampled

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{joined(self.in_size)}", f"k{self.c_out}", f"r{joined(self.kernel)}",
                f"s{joined(self.stride)}", f"p{joined(self.padding)}", f"d{joined(self.dilation)}", f"g{self.groups}",
                f"og{self.offset_groups}"] + (["m"] if self.mask else []) + (["b"] if self.bias else [])


def compute(spec: DeformConv2dSpec, plan: Plan):
    ph = placeholders(spec)
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
            return tirx.if_then_else(ok, x[nn, c, yy, xi], zero(dt))

        val = ((one - ly) * (one - lx) * at(y0, x0) + (one - ly) * lx * at(y0, x0 + 1)
               + ly * (one - lx) * at(y0 + 1, x0) + ly * lx * at(y0 + 1, x0 + 1))
        inside = tirx.all(py > tirx.const(-1, dt), py < tirx.const(H, dt), px > tirx.const(-1, dt), px < tirx.const(W, dt))
        val = tirx.if_then_else(inside, val, zero(dt))
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


def reference(x, offset, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
    """torchvision.ops.deform_conv2d's definition, in NumPy (float64): every kernel tap samples the
    input bilinearly at its offset position (zero outside), scaled by the mask, then a grouped
    matrix product with the weight."""
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    xn = x.detach().double().numpy()
    on = offset.detach().double().numpy()
    wn = w.detach().double().numpy()
    n, c, H, W = xn.shape
    c_out, icg, kh, kw = wn.shape
    groups = c // icg
    oh, ow = on.shape[2:]
    og = on.shape[1] // (2 * kh * kw)
    mn = mask.detach().double().numpy() if mask is not None else np.ones((n, og * kh * kw, oh, ow))
    cols = np.zeros((n, c, kh, kw, oh, ow))
    base_y = (np.arange(oh) * stride[0] - padding[0])[:, None]
    base_x = (np.arange(ow) * stride[1] - padding[1])[None, :]
    cpg = c // og
    for b_ in range(n):
        for ch in range(c):
            g = ch // cpg
            img = xn[b_, ch]
            for i in range(kh):
                for j in range(kw):
                    t = i * kw + j
                    py = base_y + i * dilation[0] + on[b_, g * 2 * kh * kw + 2 * t]
                    px = base_x + j * dilation[1] + on[b_, g * 2 * kh * kw + 2 * t + 1]
                    y0, x0 = np.floor(py).astype(int), np.floor(px).astype(int)
                    ly, lx = py - y0, px - x0
                    val = np.zeros_like(py)
                    for dy, dx, wt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                                       (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
                        yy, xx = y0 + dy, x0 + dx
                        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                        val += np.where(ok, img[np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)], 0.0) * wt
                    inside = (py > -1) & (py < H) & (px > -1) & (px < W)
                    cols[b_, ch, i, j] = np.where(inside, val, 0.0) * mn[b_, g * kh * kw + t]
    ocg = c_out // groups
    out = np.zeros((n, c_out, oh, ow))
    for g in range(groups):
        cg = cols[:, g * icg:(g + 1) * icg].reshape(n, icg * kh * kw, oh * ow)
        wg = wn[g * ocg:(g + 1) * ocg].reshape(ocg, icg * kh * kw)
        out[:, g * ocg:(g + 1) * ocg] = np.einsum("ok,nkp->nop", wg, cg).reshape(n, ocg, oh, ow)
    if b is not None:
        out += b.detach().double().numpy()[None, :, None, None]
    return torch.from_numpy(out).to(x.dtype)


def oracle(spec: DeformConv2dSpec):
    """``(description, fn)``: the NumPy reference for ``spec``, taking ``(input, offset, weight, bias, mask)``."""
    return "NumPy deform_conv2d", lambda x, off, w, b=None, m=None: reference(
        x, off, w, b, spec.stride, spec.padding, spec.dilation, m)


def fake(x, offset, weight, bias, stride, padding, dilation, mask):
    """The output of the custom op's arguments, on fake tensors (the NumPy reference cannot run there)."""
    (kh, kw) = weight.shape[2:]
    out = [conv_out_size(x.shape[2 + a], k, stride[a], padding[a], dilation[a]) for a, k in enumerate((kh, kw))]
    return x.new_empty((x.shape[0], weight.shape[0], *out))


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = row_groups(row)
    og = 2 if row.c % 2 == 0 and row.c > 1 else 1
    x = rand(g, row.n, row.c, *row.size)
    w = rand(g, row.oc, row.c // gr, row.k, row.k, scale=(row.c // gr * row.k ** 2) ** -0.5)
    oh, ow = (conv_out_size(s, row.k, row.stride, row.padding, row.dilation) for s in row.size)
    # offsets of a few pixels, so that samples fall between pixels and outside the image
    off = rand(g, row.n, 2 * og * row.k * row.k, oh, ow, scale=2.0)
    mask = torch.rand(row.n, og * row.k * row.k, oh, ow, generator=g)
    return Case((x, off, w, rand(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, mask=mask))


@variant(spec=DeformConv2dSpec, kind="compute", compute=compute, reference=reference, cases=make_case, nd=2,
         note="reference is a NumPy transcription of torchvision's kernel", oracle=oracle, differentiable=False,
         fake=fake, benched=False,
         schema="(Tensor input, Tensor offset, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
                "int[] dilation, Tensor? mask, str target) -> Tensor")
def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
    """torchvision.ops.deform_conv2d. ``input (N, C_in, H, W)``, ``offset (N, 2*og*KH*KW, H', W')``,
    ``weight (C_out, C_in/groups, KH, KW)``, ``mask (N, og*KH*KW, H', W')`` (v2) -> ``(N, C_out, H', W')``.
    ``groups = C_in / weight.shape[1]``; ``og = offset.shape[1] / (2*KH*KW)`` offset groups."""
    op = "deform_conv2d"
    a = Args(op)
    x, off, w, m, b = a.tensors(input=(input, 4), offset=(offset, 4), weight=(weight, 4), mask=(mask, 4),
                                bias=(bias, 1))
    stride = int_tuple(stride, 2, "stride", op, minimum=1)
    padding = int_tuple(padding, 2, "padding", op, minimum=0)
    dilation = int_tuple(dilation, 2, "dilation", op, minimum=1)
    n, c_in = x.shape[:2]
    c_out, icg, kh, kw = w.shape
    if c_in % icg:
        raise ValueError(f"{op}: input channels ({c_in}) must be divisible by weight.shape[1] ({icg})")
    groups = c_in // icg
    check_divisible(c_out, groups, "weight.shape[0] (output channels)", op)
    if off.shape[1] % (2 * kh * kw) or off.shape[1] == 0:
        raise ValueError(f"{op}: offset.shape[1] ({off.shape[1]}) must be a multiple of 2*KH*KW = {2 * kh * kw}")
    og = off.shape[1] // (2 * kh * kw)
    check_divisible(c_in, og, "input channels", op, "offset groups")
    spec = DeformConv2dSpec(dtype=a.dtype_name, n=n, c_in=c_in, in_size=tuple(x.shape[2:]), c_out=c_out,
                            kernel=(kh, kw), stride=stride, padding=padding, dilation=dilation, groups=groups,
                            offset_groups=og, mask=m is not None, bias=b is not None)
    check_out_size(spec.in_size, spec.out_size, (kh, kw), padding, dilation, op)
    check_shape(off, (n, 2 * og * kh * kw, *spec.out_size), "offset", op)
    check_shape(m, (n, og * kh * kw, *spec.out_size), "mask", op)
    check_shape(b, (c_out,), "bias", op)
    return Parsed(spec, a, [x, off, w, m, b])
