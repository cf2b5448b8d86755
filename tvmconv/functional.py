"""The ops: torch.nn.functional signatures, TVM-compiled kernels.

Each op checks its arguments, builds the variant's spec, loads the compiled kernel (compiled once
per spec and target, then cached), and runs it. Torch tensors go to the kernel without a copy
when they are contiguous; NumPy in gives NumPy out. ``target`` (keyword-only) selects a TVM target;
by default the host CPU.

Shapes use N batch, C channels, (D, H, W) or L spatial sizes, K kernel sizes.
"""

from __future__ import annotations

import functools

import torch

from ._args import Args, check_divisible, check_groups, check_out_size, check_shape, conv_padding, int_tuple
from ._args import activation as activation_arg
from .runtime.call import SpecOnly, _run, capture_kernels, no_dispatch, spec_of  # noqa: F401 - public here
from .spec import (
    ChannelShuffleSpec,
    ChannelWiseSpec,
    ConvSpec,
    DeformConv2dSpec,
    DepthwiseSeparableSpec,
    EffNetSpec,
    FlattenedSpec,
    SpatialSeparableSpec,
    Spec,
    SqueezeExcitationSpec,
)

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "channel_shuffle", "deform_conv2d", "depthwise_separable_conv2d", "shuffled_group_conv2d",
    "spatial_separable_conv2d", "flattened_conv2d", "channel_wise_conv", "squeeze_excitation",
    "effnet_block",
]


def _batched(x: torch.Tensor, nd: int) -> tuple[torch.Tensor, bool]:
    """torch convs accept an unbatched input of nd+1 dims; add the batch dim."""
    if x.dim() == nd + 1:
        return x.unsqueeze(0), True
    return x, False


# -- convolutions -------------------------------------------------------------------------------
_STRIDED = torch.strided
_SPECS: dict = {}  # a call's shapes, dtypes and hyper-parameters -> (spec, args, unbatched), once checked


def _spec_key(op, nd, x, w, b, *params):
    """A key for ``_SPECS`` when every tensor is a dense torch tensor on the CPU or on one CUDA
    device: a call with the same key passed the same checks and has the same spec. None otherwise."""
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and (b is None or isinstance(b, torch.Tensor))):
        return None
    if not (x.layout is _STRIDED and w.layout is _STRIDED and (b is None or b.layout is _STRIDED)):
        return None
    # is_cpu, not device.type (0.6 us each): CPU tensors need no device in the key
    if x.is_cpu and w.is_cpu and (b is None or b.is_cpu):
        where = None
    elif x.is_cuda:
        where = x.device
        if w.device != where or (b is not None and b.device != where):
            return None
    else:
        return None
    # repr, not the values: True == 1 and (1, 1) == [1, 1] in Python, but not to the checks
    return (op, nd, x.shape, x.dtype, w.shape, w.dtype, None if b is None else (b.shape, b.dtype), repr(params),
            where)


def _conv(op: str, nd: int, input, weight, bias, stride, padding, dilation, groups, target,
          transposed=False, output_padding=0, shuffle=0):
    key = _spec_key(op, nd, input, weight, bias, stride, padding, dilation, groups, transposed, output_padding,
                    shuffle)
    hit = _SPECS.get(key) if key is not None else None
    if hit is not None:  # the checks below passed for exactly these shapes, dtypes and parameters
        spec, a, unbatched = hit
        return _run(spec, a, [input.unsqueeze(0) if unbatched else input, weight, bias], target, unbatched)
    spec, a, tensors, unbatched = conv_spec(op, nd, input, weight, bias, stride, padding, dilation, groups,
                                            transposed, output_padding, shuffle)
    if key is not None:
        if len(_SPECS) > 4096:
            _SPECS.clear()
        _SPECS[key] = (spec, a, unbatched)
    return _run(spec, a, tensors, target, unbatched)


def conv_spec(op: str, nd: int, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
              transposed=False, output_padding=0, shuffle=0):
    """Check a convolution's arguments as ``torch.nn.functional.<op>`` would and return
    ``(spec, args, [x, w, b], unbatched)``; also used to find the workloads of a model."""
    a = Args(op)
    x = a.tensor(input, "input", ndim=(nd + 1, nd + 2))
    w = a.tensor(weight, "weight", ndim=nd + 2)
    b = a.tensor(bias, "bias", ndim=1, optional=True)
    x, unbatched = _batched(x, nd)
    groups = check_groups(groups, op)
    stride = int_tuple(stride, nd, "stride", op, minimum=1)
    dilation = int_tuple(dilation, nd, "dilation", op, minimum=1)
    kernel = tuple(w.shape[2:])
    c_in = x.shape[1]
    check_divisible(c_in, groups, "input channels", op)
    if transposed:
        if isinstance(padding, str):
            raise ValueError(f"{op}: argument 'padding' must be an int or a tuple of {nd} ints for a "
                             f"transposed convolution, got {padding!r}")
        pads = conv_padding(padding, nd, kernel, dilation, stride, op)
        out_pad = int_tuple(output_padding, nd, "output_padding", op, minimum=0)
        for op_, s, d in zip(out_pad, stride, dilation):
            if op_ >= s and op_ >= d:
                raise ValueError(f"{op}: argument 'output_padding' ({out_pad}) must be smaller than either "
                                 f"stride ({stride}) or dilation ({dilation})")
        if w.shape[0] != c_in:
            raise ValueError(f"{op}: argument 'weight' must have shape (C_in={c_in}, C_out/groups, *kernel), "
                             f"got {tuple(w.shape)}")
        c_out = w.shape[1] * groups
    else:
        pads = conv_padding(padding, nd, kernel, dilation, stride, op)
        out_pad = (0,) * nd
        c_out = w.shape[0]
        check_divisible(c_out, groups, "weight.shape[0] (output channels)", op)
        if w.shape[1] * groups != c_in:
            raise ValueError(f"{op}: argument 'weight' must have shape (C_out, C_in/groups={c_in // groups}, "
                             f"*kernel) for input channels {c_in} and groups {groups}, got {tuple(w.shape)}")
    if shuffle:
        check_divisible(c_out, shuffle, "output channels", op, "shuffle_groups")
    check_shape(b, (c_out,), "bias", op, " (one value per output channel)")
    spec = ConvSpec(dtype=a.dtype_name, n=x.shape[0], c_in=c_in, in_size=tuple(x.shape[2:]), c_out=c_out,
                    kernel=kernel, stride=stride, padding=pads, dilation=dilation, groups=groups,
                    bias=b is not None, transposed=transposed, output_padding=out_pad, shuffle=shuffle)
    check_out_size(spec.in_size, spec.out_size, kernel, pads, dilation, op)
    return spec, a, [x, w, b], unbatched


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, target=None):
    """``input (N, C_in, L)`` or ``(C_in, L)``, ``weight (C_out, C_in/groups, K)``, ``bias (C_out,)``
    -> ``(N, C_out, L_out)``. Same semantics as torch.nn.functional.conv1d."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups, target)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, target=None):
    """``input (N, C_in, H, W)`` or ``(C_in, H, W)``, ``weight (C_out, C_in/groups, KH, KW)``,
    ``bias (C_out,)`` -> ``(N, C_out, H_out, W_out)``. Same semantics as torch.nn.functional.conv2d;
    depthwise is ``groups=C_in`` (channel multiplier m: ``C_out = m*C_in``)."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups, target)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, target=None):
    """``input (N, C_in, D, H, W)``, ``weight (C_out, C_in/groups, KD, KH, KW)`` -> ``(N, C_out, D', H', W')``."""
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups, target)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, target=None):
    """``input (N, C_in, L)``, ``weight (C_in, C_out/groups, K)`` -> ``(N, C_out, L_out)``. Inserted
    zeros are never multiplied: each output gathers only the kernel taps that hit an input."""
    return _conv("conv_transpose1d", 1, input, weight, bias, stride, padding, dilation, groups, target,
                 transposed=True, output_padding=output_padding)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, target=None):
    """``input (N, C_in, H, W)``, ``weight (C_in, C_out/groups, KH, KW)`` -> ``(N, C_out, H_out, W_out)``."""
    return _conv("conv_transpose2d", 2, input, weight, bias, stride, padding, dilation, groups, target,
                 transposed=True, output_padding=output_padding)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     *, target=None):
    """``input (N, C_in, D, H, W)``, ``weight (C_in, C_out/groups, KD, KH, KW)`` -> ``(N, C_out, D', H', W')``."""
    return _conv("conv_transpose3d", 3, input, weight, bias, stride, padding, dilation, groups, target,
                 transposed=True, output_padding=output_padding)


def shuffled_group_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                          shuffle_groups=None, *, target=None):
    """ShuffleNet's unit: ``channel_shuffle(conv2d(input, weight, bias, ..., groups), shuffle_groups)``
    in one kernel, the shuffle folded into the output index. ``shuffle_groups`` defaults to ``groups``.
    ``input (N, C_in, H, W)``, ``weight (C_out, C_in/groups, KH, KW)`` -> ``(N, C_out, H', W')``."""
    sg = groups if shuffle_groups is None else check_groups(shuffle_groups, "shuffled_group_conv2d", "shuffle_groups")
    if sg == 1:
        return _conv("shuffled_group_conv2d", 2, input, weight, bias, stride, padding, dilation, groups, target)
    return _conv("shuffled_group_conv2d", 2, input, weight, bias, stride, padding, dilation, groups, target,
                 shuffle=sg)


# -- channel shuffle ----------------------------------------------------------------------------
def channel_shuffle(input, groups, *, target=None):
    """``input (N, C, *)`` -> ``(N, C, *)``: torch.nn.functional.channel_shuffle."""
    op = "channel_shuffle"
    a = Args(op)
    x = a.tensor(input, "input", ndim=range(3, 8))
    groups = check_groups(groups, op)
    check_divisible(x.shape[1], groups, "input channels", op)
    spec = ChannelShuffleSpec(dtype=a.dtype_name, n=x.shape[0], c=x.shape[1], spatial=tuple(x.shape[2:]),
                              groups=groups)
    return _run(spec, a, [x], target)


# -- deformable ---------------------------------------------------------------------------------
def deform_conv2d(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                  mask=None, *, target=None):
    """torchvision.ops.deform_conv2d. ``input (N, C_in, H, W)``, ``offset (N, 2*og*KH*KW, H', W')``,
    ``weight (C_out, C_in/groups, KH, KW)``, ``mask (N, og*KH*KW, H', W')`` (v2) -> ``(N, C_out, H', W')``.
    ``groups = C_in / weight.shape[1]``; ``og = offset.shape[1] / (2*KH*KW)`` offset groups."""
    op = "deform_conv2d"
    a = Args(op)
    x = a.tensor(input, "input", ndim=4)
    off = a.tensor(offset, "offset", ndim=4)
    w = a.tensor(weight, "weight", ndim=4)
    m = a.tensor(mask, "mask", ndim=4, optional=True)
    b = a.tensor(bias, "bias", ndim=1, optional=True)
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
    return _run(spec, a, [x, off, w, m, b], target)


# -- fused variants -----------------------------------------------------------------------------
def depthwise_separable_conv2d(input, depthwise_weight, pointwise_weight, depthwise_bias=None,
                               pointwise_bias=None, stride=1, padding=0, dilation=1,
                               mid_activation=None, activation=None, *, target=None):
    """MobileNet/Xception block in one kernel, no intermediate tensor in memory:
    ``act(conv2d(mid_act(conv2d(input, dw, db, stride, padding, dilation, groups=C_in)), pw, pb))``.

    ``input (N, C_in, H, W)``, ``depthwise_weight (C_in*m, 1, KH, KW)``,
    ``pointwise_weight (C_out, C_in*m, 1, 1)``, biases ``(C_in*m,)`` and ``(C_out,)``;
    activations None, 'relu' or 'relu6'. Returns ``(N, C_out, H', W')``."""
    op = "depthwise_separable_conv2d"
    a = Args(op)
    x = a.tensor(input, "input", ndim=4)
    wd = a.tensor(depthwise_weight, "depthwise_weight", ndim=4)
    wp = a.tensor(pointwise_weight, "pointwise_weight", ndim=4)
    bd = a.tensor(depthwise_bias, "depthwise_bias", ndim=1, optional=True)
    bp = a.tensor(pointwise_bias, "pointwise_bias", ndim=1, optional=True)
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
    return _run(spec, a, [x, wd, wp, bd, bp], target)



def spatial_separable_conv2d(input, weight_kx1, weight_1xk, bias_kx1=None, bias_1xk=None, stride=1,
                             padding=0, dilation=1, groups=1, *, target=None):
    """A kx1 convolution then a 1xk one (EffNet, Inception-v3 factorisation):
    ``conv2d(conv2d(input, w_kx1, b1, (sh,1), (ph,0), (dh,1), groups), w_1xk, b2, (1,sw), (0,pw), (1,dw), groups)``.

    ``input (N, C_in, H, W)``, ``weight_kx1 (C_mid, C_in/groups, K, 1)``,
    ``weight_1xk (C_out, C_mid/groups, 1, K)`` -> ``(N, C_out, H', W')``. Depthwise: groups=C_in=C_mid."""
    op = "spatial_separable_conv2d"
    a = Args(op)
    x = a.tensor(input, "input", ndim=4)
    w1 = a.tensor(weight_kx1, "weight_kx1", ndim=4)
    w2 = a.tensor(weight_1xk, "weight_1xk", ndim=4)
    b1 = a.tensor(bias_kx1, "bias_kx1", ndim=1, optional=True)
    b2 = a.tensor(bias_1xk, "bias_1xk", ndim=1, optional=True)
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
    return _run(spec, a, [x, w1, w2, b1, b2], target)


def flattened_conv2d(input, lateral_weight, vertical_weight, horizontal_weight, bias=None, stride=1, padding=0,
                     *, target=None):
    """Flattened convolution (Jin et al.): lateral 1x1 across channels, then vertical KHx1 and
    horizontal 1xKW per channel. ``input (N, C_in, H, W)``, ``lateral_weight (C_out, C_in, 1, 1)``,
    ``vertical_weight (C_out, 1, KH, 1)``, ``horizontal_weight (C_out, 1, 1, KW)``, ``bias (C_out,)``
    added at the end -> ``(N, C_out, H', W')``. ``padding``/``stride`` apply per axis at the
    vertical (H) and horizontal (W) stages."""
    op = "flattened_conv2d"
    a = Args(op)
    x = a.tensor(input, "input", ndim=4)
    wl = a.tensor(lateral_weight, "lateral_weight", ndim=4)
    wv = a.tensor(vertical_weight, "vertical_weight", ndim=4)
    wh = a.tensor(horizontal_weight, "horizontal_weight", ndim=4)
    b = a.tensor(bias, "bias", ndim=1, optional=True)
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
    return _run(spec, a, [x, wl, wv, wh, b], target)


def channel_wise_conv(input, weight, bias=None, stride=1, padding=0, dilation=1, *, target=None):
    """ChannelNets' channel-wise convolution: a 1-D convolution along the channel axis, shared by
    all spatial positions. ``input (N, C, *spatial)``, ``weight (G, K)`` (G groups of C/G channels,
    one length-K kernel each), ``bias (G,)`` -> ``(N, G*L, *spatial)`` with
    ``L = (C/G + 2*padding - dilation*(K-1) - 1) // stride + 1``."""
    op = "channel_wise_conv"
    a = Args(op)
    x = a.tensor(input, "input", ndim=range(3, 6))
    w = a.tensor(weight, "weight", ndim=2)
    b = a.tensor(bias, "bias", ndim=1, optional=True)
    groups, k = w.shape
    check_divisible(x.shape[1], groups, "input channels", op, "weight.shape[0] (groups)")
    check_shape(b, (groups,), "bias", op, " (one value per group)")
    (s,) = int_tuple(stride, 1, "stride", op, minimum=1)
    (p,) = int_tuple(padding, 1, "padding", op, minimum=0)
    (d,) = int_tuple(dilation, 1, "dilation", op, minimum=1)
    spec = ChannelWiseSpec(dtype=a.dtype_name, n=x.shape[0], c=x.shape[1], spatial=tuple(x.shape[2:]),
                           groups=groups, k=k, stride=s, padding=p, dilation=d, bias=b is not None)
    check_out_size((x.shape[1] // groups,), (spec.l_out,), (k,), (p,), (d,), op)
    return _run(spec, a, [x, w, b], target)


def squeeze_excitation(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, *, target=None):
    """Squeeze-and-excitation as torchvision.ops.SqueezeExcitation (ReLU, sigmoid):
    ``input * sigmoid(fc2(relu(fc1(mean(input, spatial)))))``. ``input (N, C, *spatial)``,
    ``fc1_weight (C_r, C)`` or ``(C_r, C, 1, 1)``, ``fc1_bias (C_r,)``, ``fc2_weight (C, C_r)`` or
    ``(C, C_r, 1, 1)``, ``fc2_bias (C,)``; biases may be None. Returns ``(N, C, *spatial)``."""
    op = "squeeze_excitation"
    a = Args(op)
    x = a.tensor(input, "input", ndim=range(3, 6))
    w1 = a.tensor(fc1_weight, "fc1_weight", ndim=(2, 4))
    b1 = a.tensor(fc1_bias, "fc1_bias", ndim=1, optional=True)
    w2 = a.tensor(fc2_weight, "fc2_weight", ndim=(2, 4))
    b2 = a.tensor(fc2_bias, "fc2_bias", ndim=1, optional=True)
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
    return _run(spec, a, [x, w1, b1, w2, b2], target)


def effnet_block(input, weight_1x3, weight_3x1, bias_1x3=None, bias_3x1=None, activation=None, *, target=None):
    """EffNet's spatial core in one kernel: depthwise 1x3 (padding (0,1)), max-pool 2x1 (stride
    (2,1)), depthwise 3x1 (padding (1,0)); ``activation`` (None/'relu'/'relu6') after each
    depthwise conv. ``input (N, C, H, W)``, weights ``(C, 1, 1, 3)`` and ``(C, 1, 3, 1)``,
    biases ``(C,)`` -> ``(N, C, H//2, W)``."""
    op = "effnet_block"
    a = Args(op)
    x = a.tensor(input, "input", ndim=4)
    w1 = a.tensor(weight_1x3, "weight_1x3", ndim=4)
    w2 = a.tensor(weight_3x1, "weight_3x1", ndim=4)
    b1 = a.tensor(bias_1x3, "bias_1x3", ndim=1, optional=True)
    b2 = a.tensor(bias_3x1, "bias_3x1", ndim=1, optional=True)
    n, c, h, w = x.shape
    check_shape(w1, (c, 1, 1, 3), "weight_1x3", op)
    check_shape(w2, (c, 1, 3, 1), "weight_3x1", op)
    check_shape(b1, (c,), "bias_1x3", op)
    check_shape(b2, (c,), "bias_3x1", op)
    if h < 2:
        raise ValueError(f"{op}: argument 'input' must have height >= 2 for the 2x1 pooling, got {h}")
    spec = EffNetSpec(dtype=a.dtype_name, n=n, c=c, in_size=(h, w), bias1=b1 is not None, bias2=b2 is not None,
                      activation=activation_arg(activation, "activation", op))
    return _run(spec, a, [x, w1, w2, b1, b2], target)


# -- autograd and torch.compile go through the custom ops ---------------------------------------
def _traceable(fn):
    """Calls that need autograd, or that torch.compile traces, go through ``torch.ops.tvmconv``
    (tvmconv.ops); plain inference calls run the kernel directly (no dispatcher overhead)."""
    name = fn.__name__

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(
                isinstance(t, torch.Tensor) and t.requires_grad for t in (*args, *kwargs.values()))):
            from . import ops

            return ops._call(name, args, kwargs)
        return fn(*args, **kwargs)

    return op


for _name in __all__:
    globals()[_name] = _traceable(globals()[_name])
del _name
