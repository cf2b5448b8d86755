"""SqueezeNet 1.1 (Iandola et al. 2016) with torchvision's structure, random weights."""

from __future__ import annotations

import torch
from torch import nn

from ._common import _finish, _Make


class Fire(nn.Module):
    """SqueezeNet's fire module (torchvision's): a 1x1 ``squeeze``, then ``expand1x1`` and
    ``expand3x3`` side by side, concatenated; ReLU after each."""

    def __init__(self, make: _Make, inplanes: int, squeeze_planes: int, expand1x1_planes: int,
                 expand3x3_planes: int):
        super().__init__()
        self.inplanes = inplanes
        self.squeeze = make.conv(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = make.conv(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = make.conv(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """torchvision's ``SqueezeNet`` version 1.1: ``features`` (a 3x3/2 conv, ceil-mode max pools
    and eight fire modules), ``classifier`` (Dropout, a 1x1 conv to the classes, ReLU, global
    average pool), flattened; torchvision's initialisation."""

    def __init__(self, make: _Make, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            make.conv(3, 64, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(make, 64, 16, 64, 64),
            Fire(make, 128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(make, 128, 32, 128, 128),
            Fire(make, 256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(make, 256, 48, 192, 192),
            Fire(make, 384, 48, 192, 192),
            Fire(make, 384, 64, 256, 256),
            Fire(make, 512, 64, 256, 256))
        final_conv = make.conv(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def squeezenet1_1(num_classes: int = 1000, *, dropout: float = 0.5, backend: str = "torch",
                  target=None) -> nn.Module:
    """SqueezeNet 1.1 (Iandola et al. 2016) as torchvision builds it, random weights: a 3x3/2
    stem with 64 channels, eight fire modules between three max pools, a 1x1 convolution to the
    classes and global average pooling. ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(SqueezeNet(_Make(backend, target), num_classes, dropout))
