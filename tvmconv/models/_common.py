"""Shared pieces of ``tvmconv.models``: the layer factory ``_Make`` (tvmconv.nn modules or plain
PyTorch), and the torchvision building blocks the torchvision-style networks share
(``_make_divisible``, ``Conv2dNormActivation``, ``SqueezeExcitation``), written as torchvision
writes them so their state_dict keys are torchvision's."""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch
from torch import nn

from .. import nn as tnn


class _Make:
    """Layer factory: tvmconv.nn modules, or their plain-PyTorch composition under the same names."""

    def __init__(self, backend: str, target=None):
        if backend not in tnn.BACKENDS:
            raise ValueError(f"argument 'backend' must be one of {tnn.BACKENDS}, got {backend!r}")
        self.backend, self.target = backend, target
        self.torch = backend == "torch"

    def conv(self, *args, **kwargs) -> nn.Module:
        if self.torch:
            return nn.Conv2d(*args, **kwargs)
        return tnn.Conv2d(*args, target=self.target, **kwargs)

    def dwsep(self, c_in: int, c_out: int, stride: int) -> nn.Module:
        if self.torch:
            return nn.Sequential(OrderedDict(
                depthwise=nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in), mid_act=nn.ReLU(),
                pointwise=nn.Conv2d(c_in, c_out, 1), act=nn.ReLU()))
        return tnn.DepthwiseSeparableConv2d(c_in, c_out, 3, stride, 1, mid_activation="relu", activation="relu",
                                            target=self.target)

    def shuffle_unit(self, c_in: int, c_out: int, groups: int, stride: int, first_group: bool) -> nn.Module:
        unit = tnn.ShuffleUnit(c_in, c_out, groups, stride, first_group, target=self.target)
        if self.torch:
            b = unit.branch
            g1 = b[0].groups
            b[0] = nn.Conv2d(b[0].in_channels, b[0].out_channels, 1, groups=g1)
            b[2] = nn.ChannelShuffle(groups) if g1 > 1 else nn.Identity()
            b[3] = nn.Conv2d(b[3].in_channels, b[3].out_channels, 3, b[3].stride, 1, groups=b[3].groups)
            b[4] = nn.Conv2d(b[4].in_channels, b[4].out_channels, 1, groups=b[4].groups)
            unit.backend = "torch"
        return unit

    def effnet_block(self, c_in: int, c_out: int) -> nn.Module:
        if self.torch:
            mid = c_out // 2
            core = nn.Sequential(OrderedDict(
                depthwise_1x3=nn.Conv2d(mid, mid, (1, 3), padding=(0, 1), groups=mid), act1=nn.ReLU(),
                pool=nn.MaxPool2d((2, 1), (2, 1)),
                depthwise_3x1=nn.Conv2d(mid, mid, (3, 1), padding=(1, 0), groups=mid), act2=nn.ReLU()))
            return nn.Sequential(OrderedDict(pointwise=nn.Conv2d(c_in, mid, 1), act0=nn.ReLU(), core=core,
                                             out=nn.Conv2d(mid, c_out, (1, 2), stride=(1, 2))))
        return tnn.EffNetBlock(c_in, c_out, target=self.target)

    def channel_wise(self, *args, **kwargs) -> nn.Module:
        return tnn.ChannelWiseConv(*args, target=self.target, backend=self.backend, **kwargs)


def _finish(model: nn.Module) -> nn.Module:
    tnn.name_layers(model)
    return model


class _Classifier(nn.Module):
    """``features``, then (global average pooling when ``pool``) flatten and a linear ``classifier``."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int, pool: bool = True):
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(channels, num_classes)
        self.pool = pool

    def forward(self, x):
        y = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1) if self.pool else y, 1))



# -- torchvision-style models: BatchNorm after every convolution, ReLU6/ReLU as functions or modules.
# ``tvmconv.convert`` folds the BatchNorm and fuses them; ``backend="tvmconv"`` builds them with
# tvmconv.nn convolutions and the BatchNorm unfolded (the training form).
def _conv_bn(make: _Make, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU6):
    layers = [make.conv(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


def _make_divisible(v: float, divisor: int, min_value: Optional[int] = None) -> int:
    """torchvision's ``_make_divisible``: ``v`` rounded to the nearest multiple of ``divisor`` (at
    least ``min_value``, default ``divisor``), rounded up where rounding down loses over 10%."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation: ``0`` the convolution (``make.conv``; a bias only
    without a norm layer), ``1`` the norm layer, ``2`` the activation (either left out when None)."""

    def __init__(self, make: _Make, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, groups: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU, dilation: int = 1,
                 inplace: Optional[bool] = True, bias: Optional[bool] = None):
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        if bias is None:
            bias = norm_layer is None
        layers = [make.conv(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                            groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(**({} if inplace is None else {"inplace": inplace})))
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: ``x * scale_activation(fc2(activation(fc1(avgpool(x)))))``,
    ``fc1``/``fc2`` 1x1 convolutions with bias. (``tvmconv.nn.SqueezeExcitation`` is the fused
    ReLU/sigmoid form; this one takes any activations: SiLU, hardsigmoid.)"""

    def __init__(self, make: _Make, input_channels: int, squeeze_channels: int,
                 activation: Callable[..., nn.Module] = nn.ReLU,
                 scale_activation: Callable[..., nn.Module] = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = make.conv(input_channels, squeeze_channels, 1)
        self.fc2 = make.conv(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        scale = self._scale(input)
        return scale * input


def init_mobile(model: nn.Module, linear) -> None:
    """torchvision's initialisation of its MobileNets and EfficientNets: convolutions He-normal
    (fan out), norms to the identity, each ``nn.Linear`` by ``linear(m)``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            linear(m)
            nn.init.zeros_(m.bias)
