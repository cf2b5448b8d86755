"""MobileNet v2 and MobileNet v3 (large) with torchvision's structure, random weights."""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional

import torch
from torch import nn

from ._common import _finish, _Make, _make_divisible, Conv2dNormActivation, init_mobile, SqueezeExcitation


class InvertedResidual(nn.Module):
    """MobileNet v2's block (torchvision's ``mobilenetv2.InvertedResidual``): ``conv`` = 1x1
    expansion (when ``expand_ratio != 1``), 3x3 depthwise with ``stride`` (each a
    ``Conv2dNormActivation`` with ReLU6), then the 1x1 projection and its norm as two entries of
    ``conv`` (no activation); ``x +`` it where shapes allow."""

    def __init__(self, make: _Make, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Optional[Callable[..., nn.Module]] = None):
        super().__init__()
        self.stride = stride
        if stride not in [1, 2]:
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = self.stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:  # pw
            layers.append(Conv2dNormActivation(make, inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                               activation_layer=nn.ReLU6))
        layers.extend([
            Conv2dNormActivation(make, hidden_dim, hidden_dim, stride=stride, groups=hidden_dim,  # dw
                                 norm_layer=norm_layer, activation_layer=nn.ReLU6),
            make.conv(hidden_dim, oup, 1, 1, 0, bias=False),  # pw-linear
            norm_layer(oup)])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


MOBILENET_V2 = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                [6, 320, 1, 1]]  # t (expansion), c (channels), n (blocks), s (first stride)


class MobileNetV2(nn.Module):
    """torchvision's ``MobileNetV2``: ``features`` (a 3x3/2 ReLU6 stem, the inverted residuals, a
    1x1 to ``last_channel``), then global average pooling, ``classifier`` (Dropout, Linear);
    torchvision's initialisation."""

    def __init__(self, make: _Make, num_classes: int = 1000, width_mult: float = 1.0,
                 inverted_residual_setting: Optional[list[list[int]]] = None, round_nearest: int = 8,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, dropout: float = 0.2):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if inverted_residual_setting is None:
            inverted_residual_setting = MOBILENET_V2
        if len(inverted_residual_setting) == 0 or len(inverted_residual_setting[0]) != 4:
            raise ValueError(f"inverted_residual_setting should be non-empty or a 4-element list, "
                             f"got {inverted_residual_setting}")
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [Conv2dNormActivation(make, 3, input_channel, stride=2, norm_layer=norm_layer,
                                                          activation_layer=nn.ReLU6)]
        for t, c, n, s in inverted_residual_setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(make, input_channel, output_channel, s if i == 0 else 1,
                                                 expand_ratio=t, norm_layer=norm_layer))
                input_channel = output_channel
        features.append(Conv2dNormActivation(make, input_channel, self.last_channel, kernel_size=1,
                                             norm_layer=norm_layer, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_mobile(self, lambda m: nn.init.normal_(m.weight, 0, 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))  # (no module: torchvision's has none)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, *, backend: str = "torch",
                 target=None) -> nn.Module:
    """MobileNet v2 (Sandler et al. 2018) as torchvision builds it, random weights: a 3x3/2 stem,
    17 inverted residual blocks, a 1x1 to 1280 channels, dropout 0.2 and a linear classifier.
    ``(N, 3, H, W) -> (N, num_classes)``."""
    if not width_mult > 0:
        raise ValueError(f"argument 'width_mult' must be positive, got {width_mult}")
    return _finish(MobileNetV2(_Make(backend, target), num_classes, width_mult))


# -- MobileNet v3 (torchvision.models.mobilenetv3) --------------------------------------------
class _V3Config(NamedTuple):
    """One bneck row of the MobileNet v3 table: channels before width scaling, ``act`` "RE"/"HS"."""
    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    act: str
    stride: int
    dilation: int = 1


MOBILENET_V3_LARGE = [
    _V3Config(16, 3, 16, 16, False, "RE", 1), _V3Config(16, 3, 64, 24, False, "RE", 2),
    _V3Config(24, 3, 72, 24, False, "RE", 1), _V3Config(24, 5, 72, 40, True, "RE", 2),
    _V3Config(40, 5, 120, 40, True, "RE", 1), _V3Config(40, 5, 120, 40, True, "RE", 1),
    _V3Config(40, 3, 240, 80, False, "HS", 2), _V3Config(80, 3, 200, 80, False, "HS", 1),
    _V3Config(80, 3, 184, 80, False, "HS", 1), _V3Config(80, 3, 184, 80, False, "HS", 1),
    _V3Config(80, 3, 480, 112, True, "HS", 1), _V3Config(112, 3, 672, 112, True, "HS", 1),
    _V3Config(112, 5, 672, 160, True, "HS", 2), _V3Config(160, 5, 960, 160, True, "HS", 1),
    _V3Config(160, 5, 960, 160, True, "HS", 1)]


class InvertedResidualV3(nn.Module):
    """MobileNet v3's bneck (torchvision's ``mobilenetv3.InvertedResidual``): ``block`` = 1x1
    expansion (when it changes the width), kxk depthwise, squeeze-excitation (ReLU, hardsigmoid)
    where ``use_se``, 1x1 projection without activation; ``+ x`` where shapes allow."""

    def __init__(self, make: _Make, cnf: _V3Config, norm_layer, width_mult: float = 1.0):
        super().__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError("illegal stride value")
        c_in, mid, c_out = (_make_divisible(c * width_mult, 8)
                            for c in (cnf.input_channels, cnf.expanded_channels, cnf.out_channels))
        self.use_res_connect = cnf.stride == 1 and c_in == c_out
        act = nn.Hardswish if cnf.act == "HS" else nn.ReLU
        layers: list[nn.Module] = []
        if mid != c_in:
            layers.append(Conv2dNormActivation(make, c_in, mid, 1, norm_layer=norm_layer, activation_layer=act))
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(make, mid, mid, cnf.kernel, stride, dilation=cnf.dilation, groups=mid,
                                           norm_layer=norm_layer, activation_layer=act))
        if cnf.use_se:
            layers.append(SqueezeExcitation(make, mid, _make_divisible(mid // 4, 8), scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(make, mid, c_out, 1, norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = c_out
        self._is_cn = cnf.stride > 1

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


class MobileNetV3(nn.Module):
    """torchvision's ``MobileNetV3``: ``features`` (a 3x3/2 hardswish stem, the bnecks, a 1x1 to
    6x the last width), ``avgpool``, ``classifier`` (Linear, Hardswish, Dropout, Linear);
    BatchNorm eps 0.001, momentum 0.01; torchvision's initialisation."""

    def __init__(self, make: _Make, setting: list[_V3Config], last_channel: int, num_classes: int = 1000,
                 width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        first = _make_divisible(setting[0].input_channels * width_mult, 8)
        layers: list[nn.Module] = [Conv2dNormActivation(make, 3, first, 3, 2, norm_layer=norm_layer,
                                                        activation_layer=nn.Hardswish)]
        layers += [InvertedResidualV3(make, cnf, norm_layer, width_mult) for cnf in setting]
        last_in = layers[-1].out_channels
        last_out = 6 * last_in
        layers.append(Conv2dNormActivation(make, last_in, last_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_out, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        init_mobile(self, lambda m: nn.init.normal_(m.weight, 0, 0.01))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_large(width_mult: float = 1.0, num_classes: int = 1000, *, dropout: float = 0.2,
                       backend: str = "torch", target=None) -> nn.Module:
    """MobileNet v3 large (Howard et al. 2019) as torchvision builds it, random weights: 15 bnecks
    (hardswish, squeeze-excitation with hardsigmoid), a 1x1 to 960 channels, a 1280-wide
    classifier. ``(N, 3, H, W) -> (N, num_classes)``."""
    if not width_mult > 0:
        raise ValueError(f"argument 'width_mult' must be positive, got {width_mult}")
    make = _Make(backend, target)
    last_channel = _make_divisible(1280 * width_mult, 8)
    return _finish(MobileNetV3(make, MOBILENET_V3_LARGE, last_channel, num_classes, width_mult, dropout))
