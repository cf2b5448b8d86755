"""Independent references: what a user would write today with PyTorch (or NumPy where PyTorch
has nothing). Tests check tvmconv against these; benchmarks time them as the vendor path.

Each takes the same arguments as the tvmconv op of the same name, as torch tensors.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _act(x, act):
    if act == "relu":
        return F.relu(x)
    if act == "relu6":
        return F.relu6(x)
    return x


conv1d = F.conv1d
conv2d = F.conv2d
conv3d = F.conv3d
conv_transpose1d = F.conv_transpose1d
conv_transpose2d = F.conv_transpose2d
conv_transpose3d = F.conv_transpose3d


def channel_shuffle(x, groups):
    return F.channel_shuffle(x, groups)


def channel_shuffle_numpy(x: np.ndarray, groups: int) -> np.ndarray:
    """The definition: view (N, g, C/g, *S), swap the two channel axes, flatten back."""
    n, c = x.shape[:2]
    return x.reshape(n, groups, c // groups, *x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def shuffled_group_conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, shuffle_groups=None):
    y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    return F.channel_shuffle(y, groups if shuffle_groups is None else shuffle_groups)


def depthwise_separable_conv2d(x, dw, pw, db=None, pb=None, stride=1, padding=0, dilation=1,
                               mid_activation=None, activation=None):
    y = _act(F.conv2d(x, dw, db, stride, padding, dilation, groups=x.shape[1]), mid_activation)
    return _act(F.conv2d(y, pw, pb), activation)


def spatial_separable_conv2d(x, w1, w2, b1=None, b2=None, stride=1, padding=0, dilation=1, groups=1):
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    y = F.conv2d(x, w1, b1, (s[0], 1), (p[0], 0), (d[0], 1), groups)
    return F.conv2d(y, w2, b2, (1, s[1]), (0, p[1]), (1, d[1]), groups)


def flattened_conv2d(x, wl, wv, wh, b=None, stride=1, padding=0):
    s = (stride, stride) if isinstance(stride, int) else tuple(stride)
    p = (padding, padding) if isinstance(padding, int) else tuple(padding)
    c_out = wl.shape[0]
    y = F.conv2d(x, wl)
    y = F.conv2d(y, wv, None, (s[0], 1), (p[0], 0), groups=c_out)
    return F.conv2d(y, wh, b, (1, s[1]), (0, p[1]), groups=c_out)


def channel_wise_conv(x, w, b=None, stride=1, padding=0, dilation=1):
    """A grouped conv1d over the channel axis, one row per (batch, spatial position)."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    g, k = w.shape
    rows = x.reshape(n, c, -1).permute(0, 2, 1).reshape(-1, g, c // g)
    y = F.conv1d(rows, w.reshape(g, 1, k), b, stride, padding, dilation, groups=g)  # (rows, g, L)
    L = y.shape[-1]
    return y.reshape(n, -1, g * L).permute(0, 2, 1).reshape(n, g * L, *spatial)


def squeeze_excitation(x, w1, b1, w2, b2):
    w1 = w1.reshape(w1.shape[0], -1)
    w2 = w2.reshape(w2.shape[0], -1)
    s = x.mean(dim=tuple(range(2, x.dim())))
    s = torch.sigmoid(F.linear(F.relu(F.linear(s, w1, b1)), w2, b2))
    return x * s.reshape(*s.shape, *([1] * (x.dim() - 2)))


def effnet_block(x, w1, w2, b1=None, b2=None, activation=None):
    c = x.shape[1]
    y = _act(F.conv2d(x, w1, b1, padding=(0, 1), groups=c), activation)
    y = F.max_pool2d(y, kernel_size=(2, 1), stride=(2, 1))
    return _act(F.conv2d(y, w2, b2, padding=(1, 0), groups=c), activation)


def deform_conv2d(x, offset, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None):
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


# -- a spec's call: arguments, vendor path (dispatch, benchmarks, export checks) ----------------
_DESCRIPTIONS = {
    "shuffled_group_conv2d": "F.conv2d + F.channel_shuffle",
    "depthwise_separable_conv2d": "F.conv2d(groups=C) + act + F.conv2d 1x1 + act",
    "effnet_block": "F.conv2d 1x3 + F.max_pool2d + F.conv2d 3x1",
    "channel_shuffle": "F.channel_shuffle",
    "spatial_separable_conv2d": "F.conv2d kx1 + F.conv2d 1xk",
    "flattened_conv2d": "three F.conv2d",
    "channel_wise_conv": "F.conv1d over channels",
    "squeeze_excitation": "mean + F.linear + F.relu + F.linear + sigmoid + mul",
}


def call_kwargs(spec) -> dict | None:
    """The non-tensor arguments of ``spec``'s op, as keywords that both
    ``tvmconv.functional.<spec.variant>`` and this module's function of that name take. None where
    they have no such form: asymmetric padding, and deform_conv2d (its ``mask`` comes after them)."""
    from .spec import ConvSpec, DepthwiseSeparableSpec

    v = spec.variant
    if isinstance(spec, (ConvSpec, DepthwiseSeparableSpec)):
        if any(lo != hi for lo, hi in spec.padding):
            return None
        kw = dict(stride=spec.stride, padding=tuple(lo for lo, _ in spec.padding), dilation=spec.dilation)
        if isinstance(spec, DepthwiseSeparableSpec):
            return {**kw, "mid_activation": spec.mid_activation, "activation": spec.activation}
        if spec.transposed:
            kw["output_padding"] = spec.output_padding
        if spec.shuffle:
            kw["shuffle_groups"] = spec.shuffle
        return {**kw, "groups": spec.groups}
    return {
        "effnet_block": lambda: dict(activation=spec.activation),
        "channel_shuffle": lambda: dict(groups=spec.groups),
        "spatial_separable_conv2d": lambda: dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                                                 groups=spec.groups),
        "flattened_conv2d": lambda: dict(stride=spec.stride, padding=spec.padding),
        "channel_wise_conv": lambda: dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation),
        "squeeze_excitation": dict,
    }.get(v, lambda: None)()


def vendor_for(spec):
    """``(description, fn)``: the PyTorch call a user would write for ``spec``; ``fn`` takes the
    op's tensor arguments in order (None for absent optional ones). None where PyTorch has no
    path worth dispatching to."""
    from .spec import ConvSpec

    kw = call_kwargs(spec)
    if kw is not None:
        fn = globals()[spec.variant]
        return _DESCRIPTIONS.get(spec.variant, f"F.{spec.variant}"), lambda *tensors: fn(*tensors, **kw)
    if isinstance(spec, ConvSpec) and not spec.transposed:  # asymmetric padding ('same', even kernel)
        conv = getattr(F, f"conv{spec.ndim}d")
        flat = [p for lo, hi in reversed(spec.padding) for p in (lo, hi)]

        def padded(x, w, b=None):
            y = conv(F.pad(x, flat), w, b, spec.stride, 0, spec.dilation, spec.groups)
            return F.channel_shuffle(y, spec.shuffle) if spec.shuffle else y
        return f"F.pad + F.conv{spec.ndim}d", padded
    return None


def reference_for(spec):
    """``(description, fn)`` like ``vendor_for``, for every variant: deform_conv2d's is the NumPy
    transcription of torchvision's kernel, taking ``(input, offset, weight, bias, mask)``."""
    if spec.variant == "deform_conv2d":
        return "NumPy deform_conv2d", lambda x, off, w, b=None, m=None: deform_conv2d(
            x, off, w, b, spec.stride, spec.padding, spec.dilation, m)
    return vendor_for(spec)


def random_args(spec, g: torch.Generator) -> tuple[list, list[torch.Tensor]]:
    """Random tensors for ``spec``'s op: its tensor arguments in the functional signature's order
    (None where absent), and the kernel's views of them in the kernel's argument order."""
    import inspect

    from . import functional as TF

    dt = getattr(torch, spec.dtype)
    tensors = {n: torch.randn(*shape, generator=g, dtype=dt) * 0.5 for n, shape in spec.arg_shapes}
    params = list(inspect.signature(getattr(TF, spec.variant)).parameters)
    full = [tensors.get(p) for p in params if p in tensors or "bias" in p or p == "mask"]
    kernel = [tensors[n].contiguous().view(shape) for (n, _), (_, shape) in zip(spec.arg_shapes,
                                                                               spec.kernel_arg_shapes)]
    return full, kernel
