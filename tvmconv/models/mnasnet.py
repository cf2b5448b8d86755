"""MNASNet 1.0 (Tan et al. 2019) with torchvision's structure, random weights."""

from __future__ import annotations

import torch
from torch import nn

from ._common import _finish, _Make

# Paper suggests 0.9997 momentum, for TensorFlow. Equivalent PyTorch momentum is 1.0 - tensorflow.
_BN_MOMENTUM = 1 - 0.9997


class _InvertedResidual(nn.Module):
    """MNASNet's block (torchvision's): ``layers`` = 1x1 expansion, kxk depthwise (both BN + ReLU),
    1x1 projection + BN; ``+ x`` where shapes allow."""

    def __init__(self, make: _Make, in_ch: int, out_ch: int, kernel_size: int, stride: int, expansion_factor: int,
                 bn_momentum: float = 0.1):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if kernel_size not in (3, 5):
            raise ValueError(f"kernel_size should be 3 or 5 instead of {kernel_size}")
        mid_ch = in_ch * expansion_factor
        self.apply_residual = in_ch == out_ch and stride == 1
        self.layers = nn.Sequential(
            make.conv(in_ch, mid_ch, 1, bias=False),
            nn.BatchNorm2d(mid_ch, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            make.conv(mid_ch, mid_ch, kernel_size, padding=kernel_size // 2, stride=stride, groups=mid_ch,
                      bias=False),
            nn.BatchNorm2d(mid_ch, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            make.conv(mid_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch, momentum=bn_momentum))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.apply_residual:
            return self.layers(input) + input
        return self.layers(input)


def _stack(make: _Make, in_ch: int, out_ch: int, kernel_size: int, stride: int, exp_factor: int, repeats: int,
           bn_momentum: float) -> nn.Sequential:
    """A stack of ``repeats`` inverted residuals, the first (no skip) with ``stride``."""
    if repeats < 1:
        raise ValueError(f"repeats should be >= 1, instead got {repeats}")
    first = _InvertedResidual(make, in_ch, out_ch, kernel_size, stride, exp_factor, bn_momentum=bn_momentum)
    remaining = [_InvertedResidual(make, out_ch, out_ch, kernel_size, 1, exp_factor, bn_momentum=bn_momentum)
                 for _ in range(1, repeats)]
    return nn.Sequential(first, *remaining)


def _round_to_multiple_of(val: float, divisor: int, round_up_bias: float = 0.9) -> int:
    """Asymmetric rounding to make ``val`` divisible by ``divisor``: up, unless the value is no
    more than 10% above the smaller multiple, i.e. (83, 8) -> 80, but (84, 8) -> 88."""
    if not 0.0 < round_up_bias < 1.0:
        raise ValueError(f"round_up_bias should be greater than 0.0 and smaller than 1.0 instead of {round_up_bias}")
    new_val = max(divisor, int(val + divisor / 2) // divisor * divisor)
    return new_val if new_val >= round_up_bias * val else new_val + divisor


def _get_depths(alpha: float) -> list[int]:
    """The depths of the layers scaled by ``alpha``, rounded to multiples of 8."""
    return [_round_to_multiple_of(depth * alpha, 8) for depth in (32, 16, 24, 40, 80, 96, 192, 320)]


class MNASNet(nn.Module):
    """torchvision's ``MNASNet`` (its version 2 layout): ``layers`` (a 3x3/2 stem, a depthwise-
    separable block, six stacks of inverted residuals, a 1x1 to 1280), global mean, ``classifier``
    (Dropout, Linear); BatchNorm momentum 0.0003; torchvision's initialisation."""

    _version = 2

    def __init__(self, make: _Make, alpha: float, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        if alpha <= 0.0:
            raise ValueError(f"alpha should be greater than 0.0 instead of {alpha}")
        self.alpha = alpha
        self.num_classes = num_classes
        depths = _get_depths(alpha)
        layers = [
            make.conv(3, depths[0], 3, padding=1, stride=2, bias=False),
            nn.BatchNorm2d(depths[0], momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            make.conv(depths[0], depths[0], 3, padding=1, stride=1, groups=depths[0], bias=False),
            nn.BatchNorm2d(depths[0], momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            make.conv(depths[0], depths[1], 1, padding=0, stride=1, bias=False),
            nn.BatchNorm2d(depths[1], momentum=_BN_MOMENTUM),
            _stack(make, depths[1], depths[2], 3, 2, 3, 3, _BN_MOMENTUM),
            _stack(make, depths[2], depths[3], 5, 2, 3, 3, _BN_MOMENTUM),
            _stack(make, depths[3], depths[4], 5, 2, 6, 3, _BN_MOMENTUM),
            _stack(make, depths[4], depths[5], 3, 1, 6, 2, _BN_MOMENTUM),
            _stack(make, depths[5], depths[6], 5, 2, 6, 4, _BN_MOMENTUM),
            _stack(make, depths[6], depths[7], 3, 1, 6, 1, _BN_MOMENTUM),
            make.conv(depths[7], 1280, 1, padding=0, stride=1, bias=False),
            nn.BatchNorm2d(1280, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
        ]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, mode="fan_out", nonlinearity="sigmoid")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        x = x.mean([2, 3])  # global average pooling, dropping H and W
        return self.classifier(x)


def mnasnet1_0(num_classes: int = 1000, *, dropout: float = 0.2, backend: str = "torch", target=None) -> nn.Module:
    """MNASNet 1.0 (Tan et al. 2019) as torchvision builds it, random weights: a 3x3/2 stem, a
    depthwise-separable block, 16 inverted residuals (3x3 and 5x5 depthwise) in six stacks, a 1x1
    to 1280 channels. ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(MNASNet(_Make(backend, target), 1.0, num_classes, dropout))
