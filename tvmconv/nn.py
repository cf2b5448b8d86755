"""``tvmconv.nn``: modules that run tvmconv kernels.

* ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` are subclasses of their ``torch.nn`` namesakes:
  same constructor arguments, parameters and state_dict keys (``load_state_dict`` works both ways),
  ``isinstance(m, torch.nn.Conv2d)`` holds; only the forward differs. Extra keyword: ``target``.
* Modules for the fused variants: ``DepthwiseSeparableConv2d``, ``ShuffledGroupConv2d``,
  ``ShuffleUnit``, ``EffNetBlock``, ``SpatialSeparableConv2d``, ``FlattenedConv2d``,
  ``ChannelWiseConv``, ``DeformConv2d``, ``SqueezeExcitation``. Their submodule and parameter
  names are those of the plain-PyTorch composition they replace (torchvision's for
  ``DeformConv2d`` and ``SqueezeExcitation``).

Every module has ``backend``: ``"tvmconv"`` (the default) runs the kernels, ``"torch"`` runs the
PyTorch reference composition on the same parameters (``set_backend(model, "torch")`` flips a
whole model), so outputs and latency are comparable on identical weights. Errors raised by a
kernel call name the layer (``layer_name``, set by ``name_layers``/``convert``/``tvmconv.models``).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from . import functional as TF
from . import reference as R

BACKENDS = ("tvmconv", "torch")
ACTIVATIONS = {None: None, "relu": nn.ReLU, "relu6": nn.ReLU6}


class TvmconvModule:
    """Mixin: ``backend``, ``target`` and ``layer_name``; kernel errors re-raised naming the layer.
    ``dispatch`` False: the kernel runs even where the op alone goes to the vendor path (convert sets
    it where the layer, timed in its model, was not slower; under torch.compile the ops decide)."""

    backend: str = "tvmconv"
    target = None
    layer_name: str | None = None
    dispatch: bool = True

    def _init_tvmconv(self, target=None, backend: str = "tvmconv") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"{type(self).__name__}: argument 'backend' must be one of {BACKENDS}, got {backend!r}")
        self.target = target
        self.backend = backend

    @property
    def _use_torch(self) -> bool:
        return self.backend == "torch"

    def _kernel(self, fn, *args, **kwargs):
        try:
            if self.dispatch or torch.compiler.is_compiling():
                return fn(*args, target=self.target, **kwargs)
            with TF.no_dispatch():
                return fn(*args, target=self.target, **kwargs)
        except (ValueError, TypeError, RuntimeError) as exc:
            if torch.compiler.is_compiling():
                raise
            where = f"layer {self.layer_name!r} ({type(self).__name__})" if self.layer_name else type(self).__name__
            raise type(exc)(f"{where}: {exc}") from exc


def _act(name):
    cls = ACTIVATIONS[name]
    return cls() if cls else nn.Identity()


def _act_name(module) -> str | None:
    if isinstance(module, nn.ReLU6) or (isinstance(module, nn.Hardtanh) and (module.min_val, module.max_val) == (0, 6)):
        return "relu6"
    if isinstance(module, nn.ReLU):
        return "relu"
    return None


# -- drop-in convolutions ------------------------------------------------------------------------
class _DropIn(TvmconvModule):
    """A torch.nn convolution's constructor, plus the keywords ``target`` and ``backend``."""

    def __init__(self, *args, target=None, backend: str = "tvmconv", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_tvmconv(target, backend)


def _conv_class(base, nd: int, name: str):
    op = getattr(TF, f"conv{nd}d")

    class Conv(_DropIn, base):
        def _conv_forward(self, input, weight, bias):
            if self._use_torch:
                return super()._conv_forward(input, weight, bias)
            if self.padding_mode != "zeros":
                input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
                return self._kernel(op, input, weight, bias, self.stride, 0, self.dilation, self.groups)
            return self._kernel(op, input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    Conv.__name__ = Conv.__qualname__ = name
    Conv.__doc__ = f"Drop-in ``torch.nn.{name}`` running tvmconv's ``conv{nd}d``; extra keyword ``target``."
    return Conv


def _conv_transpose_class(base, nd: int, name: str):
    op = getattr(TF, f"conv_transpose{nd}d")

    class ConvTranspose(_DropIn, base):
        def forward(self, input, output_size=None):
            if self._use_torch:
                return super().forward(input, output_size)
            if self.padding_mode != "zeros":
                raise ValueError(f"Only `zeros` padding mode is supported for {name}")
            out_pad = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, nd,
                                           self.dilation)
            return self._kernel(op, input, self.weight, self.bias, self.stride, self.padding, out_pad, self.groups,
                                self.dilation)

    ConvTranspose.__name__ = ConvTranspose.__qualname__ = name
    ConvTranspose.__doc__ = f"Drop-in ``torch.nn.{name}`` running tvmconv's ``conv_transpose{nd}d``."
    return ConvTranspose


Conv1d = _conv_class(nn.Conv1d, 1, "Conv1d")
Conv2d = _conv_class(nn.Conv2d, 2, "Conv2d")
Conv3d = _conv_class(nn.Conv3d, 3, "Conv3d")
ConvTranspose1d = _conv_transpose_class(nn.ConvTranspose1d, 1, "ConvTranspose1d")
ConvTranspose2d = _conv_transpose_class(nn.ConvTranspose2d, 2, "ConvTranspose2d")
ConvTranspose3d = _conv_transpose_class(nn.ConvTranspose3d, 3, "ConvTranspose3d")
DROP_IN = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d, nn.ConvTranspose1d: ConvTranspose1d,
           nn.ConvTranspose2d: ConvTranspose2d, nn.ConvTranspose3d: ConvTranspose3d}


class ShuffledGroupConv2d(Conv2d):
    """A grouped ``Conv2d`` followed by ``channel_shuffle(shuffle_groups)`` (ShuffleNet), one kernel
    (the shuffle is folded into the output index). Parameters as ``nn.Conv2d``'s."""

    def __init__(self, *args, shuffle_groups: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.shuffle_groups = self.groups if shuffle_groups is None else shuffle_groups

    def _conv_forward(self, input, weight, bias):
        if self._use_torch:
            return F.channel_shuffle(super()._conv_forward(input, weight, bias), self.shuffle_groups)
        return self._kernel(TF.shuffled_group_conv2d, input, weight, bias, self.stride, self.padding, self.dilation,
                            self.groups, self.shuffle_groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shuffle_groups={self.shuffle_groups}"


# -- fused blocks ----------------------------------------------------------------------------------
class DepthwiseSeparableConv2d(TvmconvModule, nn.Module):
    """MobileNet/Xception block, one kernel: ``act(pointwise(mid_act(depthwise(x))))``.
    Submodules ``depthwise`` (``nn.Conv2d``, groups=in_channels) and ``pointwise`` (1x1).
    ``(N, C_in, H, W) -> (N, C_out, H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 depth_multiplier: int = 1, bias: bool = True, mid_activation: str | None = None,
                 activation: str | None = None, *, target=None, backend: str = "tvmconv", device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.depthwise = nn.Conv2d(in_channels, in_channels * depth_multiplier, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=bias, **kw)
        self.pointwise = nn.Conv2d(in_channels * depth_multiplier, out_channels, 1, bias=bias, **kw)
        self.mid_activation, self.activation = mid_activation, activation
        self._init_tvmconv(target, backend)

    @classmethod
    def from_convs(cls, depthwise: nn.Conv2d, pointwise: nn.Conv2d, mid_activation=None, activation=None, **kw):
        """Wrap two existing convolutions (their parameters are shared, not copied)."""
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.depthwise, m.pointwise = depthwise, pointwise
        m.mid_activation, m.activation = mid_activation, activation
        m._init_tvmconv(**kw)
        return m

    def forward(self, x):
        d, p = self.depthwise, self.pointwise
        if self._use_torch:
            return R.depthwise_separable_conv2d(x, d.weight, p.weight, d.bias, p.bias, d.stride, d.padding,
                                                d.dilation, self.mid_activation, self.activation)
        return self._kernel(TF.depthwise_separable_conv2d, x, d.weight, p.weight, d.bias, p.bias, d.stride, d.padding,
                            d.dilation, self.mid_activation, self.activation)

    def extra_repr(self) -> str:
        return f"mid_activation={self.mid_activation}, activation={self.activation}, backend={self.backend}"


class SpatialSeparableConv2d(TvmconvModule, nn.Module):
    """A kx1 convolution then a 1xk one, one kernel. Submodules ``conv_kx1``, ``conv_1xk``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, mid_channels: int | None = None, *, target=None,
                 backend: str = "tvmconv", device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype, bias=bias, groups=groups)
        mid = out_channels if mid_channels is None else mid_channels
        s, p, d = (nn.modules.utils._pair(v) for v in (stride, padding, dilation))
        self.conv_kx1 = nn.Conv2d(in_channels, mid, (kernel_size, 1), (s[0], 1), (p[0], 0), (d[0], 1), **kw)
        self.conv_1xk = nn.Conv2d(mid, out_channels, (1, kernel_size), (1, s[1]), (0, p[1]), (1, d[1]), **kw)
        self._init_tvmconv(target, backend)

    def forward(self, x):
        a, b = self.conv_kx1, self.conv_1xk
        if self._use_torch:
            return b(a(x))
        return self._kernel(TF.spatial_separable_conv2d, x, a.weight, b.weight, a.bias, b.bias,
                            (a.stride[0], b.stride[1]), (a.padding[0], b.padding[1]),
                            (a.dilation[0], b.dilation[1]), a.groups)


class FlattenedConv2d(TvmconvModule, nn.Module):
    """Flattened convolution (Jin et al.): ``lateral`` 1x1 across channels, ``vertical`` KHx1 and
    ``horizontal`` 1xKW per channel (``horizontal.bias`` is the only bias), one kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, bias: bool = True,
                 *, target=None, backend: str = "tvmconv", device=None, dtype=None):
        super().__init__()
        kh, kw_ = nn.modules.utils._pair(kernel_size)
        s, p = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
        kw = dict(device=device, dtype=dtype)
        self.lateral = nn.Conv2d(in_channels, out_channels, 1, bias=False, **kw)
        self.vertical = nn.Conv2d(out_channels, out_channels, (kh, 1), (s[0], 1), (p[0], 0), groups=out_channels,
                                  bias=False, **kw)
        self.horizontal = nn.Conv2d(out_channels, out_channels, (1, kw_), (1, s[1]), (0, p[1]), groups=out_channels,
                                    bias=bias, **kw)
        self._init_tvmconv(target, backend)

    def forward(self, x):
        if self._use_torch:
            return self.horizontal(self.vertical(self.lateral(x)))
        v, h = self.vertical, self.horizontal
        return self._kernel(TF.flattened_conv2d, x, self.lateral.weight, v.weight, h.weight, h.bias,
                            (v.stride[0], h.stride[1]), (v.padding[0], h.padding[1]))


class ChannelWiseConv(TvmconvModule, nn.Module):
    """ChannelNets' channel-wise convolution: ``weight (groups, kernel_size)``, ``bias (groups,)``;
    ``(N, C, *S) -> (N, groups*L, *S)``, ``L = (C/groups + 2p - d(k-1) - 1)//s + 1``."""

    def __init__(self, groups: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: bool = True, *, target=None, backend: str = "tvmconv", device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(groups, kernel_size, **kw))
        self.bias = nn.Parameter(torch.empty(groups, **kw)) if bias else None
        bound = kernel_size ** -0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
        self._init_tvmconv(target, backend)

    def forward(self, x):
        if self._use_torch:
            return R.channel_wise_conv(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return self._kernel(TF.channel_wise_conv, x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        g, k = self.weight.shape
        return f"groups={g}, kernel_size={k}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


class DeformConv2d(TvmconvModule, nn.Module):
    """torchvision.ops.DeformConv2d: same constructor, ``weight``/``bias`` parameters and
    ``forward(input, offset, mask=None)``. The torch backend runs the NumPy reference (slow)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, *, target=None, backend: str = "tvmconv", device=None,
                 dtype=None):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = nn.modules.utils._pair(kernel_size)
        self.stride, self.padding, self.dilation = (nn.modules.utils._pair(v) for v in (stride, padding, dilation))
        kw = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # as torchvision
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -fan_in ** -0.5, fan_in ** -0.5)
        self._init_tvmconv(target, backend)

    def forward(self, input, offset, mask=None):
        if self._use_torch:
            return R.deform_conv2d(input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                   mask)
        return self._kernel(TF.deform_conv2d, input, offset, self.weight, self.bias, self.stride, self.padding,
                            self.dilation, mask)


class SqueezeExcitation(TvmconvModule, nn.Module):
    """torchvision.ops.SqueezeExcitation (ReLU, sigmoid): ``fc1``, ``fc2`` 1x1 convolutions, one kernel."""

    def __init__(self, input_channels: int, squeeze_channels: int, *, target=None, backend: str = "tvmconv",
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1, **kw)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1, **kw)
        self._init_tvmconv(target, backend)

    @classmethod
    def from_convs(cls, fc1: nn.Conv2d, fc2: nn.Conv2d, **kw):
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.fc1, m.fc2 = fc1, fc2
        m._init_tvmconv(**kw)
        return m

    def forward(self, x):
        if self._use_torch:
            return R.squeeze_excitation(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        return self._kernel(TF.squeeze_excitation, x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)


class EffNetCore(TvmconvModule, nn.Module):
    """EffNet's spatial core, one kernel: depthwise 1x3 (``depthwise_1x3``), max-pool 2x1,
    depthwise 3x1 (``depthwise_3x1``), ``activation`` after each convolution.
    ``(N, C, H, W) -> (N, C, H//2, W)``."""

    def __init__(self, channels: int, activation: str | None = "relu", *, target=None, backend: str = "tvmconv",
                 device=None, dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.depthwise_1x3 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), groups=channels, **kw)
        self.depthwise_3x1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), groups=channels, **kw)
        self.activation = activation
        self._init_tvmconv(target, backend)

    @classmethod
    def from_convs(cls, depthwise_1x3: nn.Conv2d, depthwise_3x1: nn.Conv2d, activation=None, **kw):
        m = cls.__new__(cls)
        nn.Module.__init__(m)
        m.depthwise_1x3, m.depthwise_3x1, m.activation = depthwise_1x3, depthwise_3x1, activation
        m._init_tvmconv(**kw)
        return m

    def forward(self, x):
        a, b = self.depthwise_1x3, self.depthwise_3x1
        fn = R.effnet_block if self._use_torch else functools.partial(self._kernel, TF.effnet_block)
        return fn(x, a.weight, b.weight, a.bias, b.bias, self.activation)


class EffNetBlock(TvmconvModule, nn.Module):
    """EffNet's block (Freeman et al.): ``pointwise`` 1x1 to ``out_channels//2`` + ReLU, the
    ``core`` (``EffNetCore``, ReLU), then ``out``: a 1x2 convolution with stride (1, 2).
    ``(N, C_in, H, W) -> (N, C_out, H//2, W//2)``."""

    container = True  # its children run the kernels

    def __init__(self, in_channels: int, out_channels: int, *, target=None, backend: str = "tvmconv", device=None,
                 dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype, target=target, backend=backend)
        mid = out_channels // 2
        self.pointwise = Conv2d(in_channels, mid, 1, **kw)
        self.core = EffNetCore(mid, "relu", **kw)
        self.out = Conv2d(mid, out_channels, (1, 2), stride=(1, 2), **kw)
        self._init_tvmconv(target, backend)

    def forward(self, x):
        return self.out(self.core(F.relu(self.pointwise(x))))


class ShuffleUnit(TvmconvModule, nn.Module):
    """ShuffleNet v1 unit. ``branch``: grouped 1x1 (+ReLU) and channel shuffle (one kernel), 3x3
    depthwise with ``stride``, grouped 1x1. Stride 1: ``relu(x + branch(x))``; stride 2:
    ``relu(cat(avg_pool3x3/2(x), branch(x)))``. ``first_group=False`` makes the first 1x1 ungrouped
    (the paper's first unit of stage 2). BatchNorm is folded into the convolution biases."""

    container = True  # its children run the kernels

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int = 1, first_group: bool = True,
                 *, target=None, backend: str = "tvmconv", device=None, dtype=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit: argument 'stride' must be 1 or 2, got {stride}")
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"ShuffleUnit: stride 1 needs in_channels == out_channels, got {in_channels} and "
                             f"{out_channels}")
        mid = out_channels // 4
        g1 = groups if first_group else 1
        kw = dict(device=device, dtype=dtype, target=target, backend=backend)
        self.stride = stride
        self.branch = nn.Sequential(  # the indices of the plain-PyTorch branch, whose 2 is nn.ChannelShuffle
            ShuffledGroupConv2d(in_channels, mid, 1, groups=g1, shuffle_groups=groups if g1 > 1 else 1, **kw),
            nn.ReLU(),
            nn.Identity(),
            Conv2d(mid, mid, 3, stride, 1, groups=mid, **kw),
            Conv2d(mid, branch_out, 1, groups=groups, **kw),
        )
        self._init_tvmconv(target, backend)

    def forward(self, x):
        y = self.branch(x)
        if self.stride == 2:
            return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), y], 1))
        return F.relu(x + y)


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Every tvmconv module of ``model`` runs ``backend`` ('tvmconv' or 'torch'); returns ``model``."""
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    for m in model.modules():
        if isinstance(m, TvmconvModule):
            m.backend = backend
    return model


def set_target(model: nn.Module, target) -> nn.Module:
    for m in model.modules():
        if isinstance(m, TvmconvModule):
            m.target = target
    return model


def name_layers(model: nn.Module) -> nn.Module:
    """Set ``layer_name`` of every tvmconv module to its qualified name in ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, TvmconvModule):
            m.layer_name = name or type(m).__name__
    return model


__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "ShuffledGroupConv2d", "DepthwiseSeparableConv2d", "SpatialSeparableConv2d", "FlattenedConv2d",
           "ChannelWiseConv", "DeformConv2d", "SqueezeExcitation", "EffNetBlock", "ShuffleUnit", "set_backend",
           "set_target", "name_layers", "TvmconvModule", "EffNetCore"]
