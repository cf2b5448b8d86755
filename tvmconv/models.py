"""``tvmconv.models``: small efficient CNNs built from ``tvmconv.nn``, each with a plain-PyTorch twin.

    net = tvmconv.models.mobilenet_v1(width_mult=0.5).eval()
    twin = tvmconv.models.mobilenet_v1(width_mult=0.5, backend="torch").eval()
    twin.load_state_dict(net.state_dict())            # identical weights, identical keys

``backend="torch"`` builds the twin from torch.nn modules (``nn.Conv2d``, ``nn.ChannelShuffle``,
``nn.Sequential`` of the stages a fused block replaces, under the same names); blocks PyTorch has
no module for (channel-wise convolution, squeeze-excitation) are tvmconv.nn modules running their
PyTorch reference. ``tvmconv.convert(twin, ...)`` turns a twin back into fused tvmconv layers.
BatchNorm is folded into the convolution biases (the inference form). No weights are downloaded:
they are random, or loaded with ``load_state_dict`` from a local file.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from . import nn as tnn


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


def mobilenet_v1(width_mult: float = 1.0, num_classes: int = 1000, *, backend: str = "tvmconv",
                 target=None) -> nn.Module:
    """MobileNet v1 (Howard et al. 2017): a 3x3/2 stem and 13 depthwise-separable blocks. The
    resolution multiplier is the input size you feed (224 * rho). ``(N, 3, H, W) -> (N, num_classes)``."""
    if not width_mult > 0:
        raise ValueError(f"argument 'width_mult' must be positive, got {width_mult}")
    make = _Make(backend, target)

    def ch(c: int) -> int:
        return max(8, int(c * width_mult))

    layers: list[nn.Module] = [make.conv(3, ch(32), 3, 2, 1), nn.ReLU()]
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    layers += [make.dwsep(ch(a), ch(b), s) for a, b, s in plan]
    return _finish(_Classifier(nn.Sequential(*layers), ch(1024), num_classes))


SHUFFLENET_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}


def shufflenet_v1(groups: int = 3, num_classes: int = 1000, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """ShuffleNet v1 (Zhang et al. 2018), scale 1x, ``groups`` in 1, 2, 3, 4, 8: a 3x3/2 stem,
    3x3/2 max pool, stages of 4, 8 and 4 shuffle units. ``(N, 3, H, W) -> (N, num_classes)``."""
    if groups not in SHUFFLENET_CHANNELS:
        raise ValueError(f"argument 'groups' must be one of {sorted(SHUFFLENET_CHANNELS)}, got {groups!r}")
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 24, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c_in = 24
    for stage, repeats in ((2, 4), (3, 8), (4, 4)):
        c_out = SHUFFLENET_CHANNELS[groups] * 2 ** (stage - 2)
        for unit in range(repeats):
            layers.append(make.shuffle_unit(c_in, c_out, groups, 2 if unit == 0 else 1,
                                            first_group=not (stage == 2 and unit == 0)))
            c_in = c_out
    return _finish(_Classifier(nn.Sequential(*layers), c_in, num_classes))


def effnet(num_classes: int = 10, input_size: int = 32, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """EffNet (Freeman et al. 2018) for CIFAR-sized inputs: three EffNet blocks (32, 64, 128
    channels), each halving height and width, then a linear layer. ``(N, 3, S, S) -> (N, num_classes)``."""
    if input_size < 8 or input_size % 8:
        raise ValueError(f"argument 'input_size' must be a multiple of 8, got {input_size}")
    make = _Make(backend, target)
    blocks = [make.effnet_block(a, b) for a, b in ((3, 32), (32, 64), (64, 128))]
    return _finish(_Classifier(nn.Sequential(*blocks), 128 * (input_size // 8) ** 2, num_classes, pool=False))


def channelnet(num_classes: int = 1000, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """A small ChannelNet (Gao et al. 2018): a stem and four depthwise-separable blocks, then a
    depthwise-separable channel-wise block (3x3 depthwise, channel-wise convolution in place of the
    1x1) and a group channel-wise block (grouped 1x1, then a channel-wise convolution mixing the
    groups). ``(N, 3, H, W) -> (N, num_classes)``."""
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 32, 3, 2, 1), nn.ReLU()]
    layers += [make.dwsep(a, b, s) for a, b, s in ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2))]
    layers += [make.conv(256, 256, 3, 1, 1, groups=256), nn.ReLU(), make.channel_wise(1, 7, padding=3), nn.ReLU()]
    layers += [make.conv(256, 256, 1, groups=2), nn.ReLU(), make.channel_wise(1, 7, padding=3)]
    return _finish(_Classifier(nn.Sequential(*layers), 256, num_classes))


# -- torchvision-style models: BatchNorm after every convolution, ReLU6/ReLU as functions or modules.
# ``tvmconv.convert`` folds the BatchNorm and fuses them; ``backend="tvmconv"`` builds them with
# tvmconv.nn convolutions and the BatchNorm unfolded (the training form).
def _conv_bn(make: _Make, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU6):
    layers = [make.conv(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNet v2's block (torchvision's layout): 1x1 expansion (when ``expand > 1``), 3x3
    depthwise with ``stride``, 1x1 projection without activation; ``x +`` it where shapes allow."""

    def __init__(self, make: _Make, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        layers = [_conv_bn(make, c_in, mid, 1)] if expand != 1 else []
        layers += [_conv_bn(make, mid, mid, 3, stride, groups=mid), _conv_bn(make, mid, c_out, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000, *, backend: str = "torch",
                 target=None) -> nn.Module:
    """MobileNet v2 (Sandler et al. 2018) as torchvision builds it, random weights: a 3x3/2 stem,
    17 inverted residual blocks, a 1x1 to 1280 channels. ``(N, 3, H, W) -> (N, num_classes)``."""
    if not width_mult > 0:
        raise ValueError(f"argument 'width_mult' must be positive, got {width_mult}")
    make = _Make(backend, target)

    def ch(c: float) -> int:  # torchvision's _make_divisible(c, 8)
        v = max(8, int(c + 4) // 8 * 8)
        return v + 8 if v < 0.9 * c else v

    c_in = ch(32 * width_mult)
    layers: list[nn.Module] = [_conv_bn(make, 3, c_in, 3, 2)]
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(make, c_in, ch(c * width_mult), s if i == 0 else 1, t))
            c_in = ch(c * width_mult)
    last = ch(1280 * max(1.0, width_mult))
    layers.append(_conv_bn(make, c_in, last, 1))
    return _finish(_Classifier(nn.Sequential(*layers), last, num_classes))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN, the shortcut a 1x1/2 conv + BN where shapes change."""

    def __init__(self, make: _Make, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = make.conv(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = make.conv(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(make.conv(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def resnet18(num_classes: int = 1000, *, backend: str = "torch", target=None) -> nn.Module:
    """ResNet-18 (He et al. 2016) as torchvision builds it, random weights: a 7x7/2 stem with BN,
    3x3/2 max pool, four stages of two basic blocks. ``(N, 3, H, W) -> (N, num_classes)``."""
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    c_in = 64
    for c, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(make, c_in, c, s), BasicBlock(make, c, c, 1)]
        c_in = c
    return _finish(_Classifier(nn.Sequential(*layers), 512, num_classes))


MODELS = {"mobilenet_v1": mobilenet_v1, "shufflenet_v1": shufflenet_v1, "effnet": effnet, "channelnet": channelnet,
          "mobilenet_v2": mobilenet_v2, "resnet18": resnet18}

__all__ = ["mobilenet_v1", "shufflenet_v1", "effnet", "channelnet", "mobilenet_v2", "resnet18", "MODELS"]
