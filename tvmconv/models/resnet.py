"""ResNet-18 and ResNet-50 (He et al. 2016) with torchvision's structure (``conv1``, ``bn1``,
``relu``, ``maxpool``, ``layer1``..``layer4``, ``avgpool``, ``fc``), random weights."""

from __future__ import annotations

import torch
from torch import nn

from ._common import _finish, _Make


class BasicBlock(nn.Module):
    """ResNet's basic block (torchvision's): two 3x3 conv + BN (the stride on the first), the
    shortcut a 1x1 conv + BN (``downsample``) where shapes change."""

    expansion = 1

    def __init__(self, make: _Make, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = make.conv(inplanes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = make.conv(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(make.conv(inplanes, planes * self.expansion, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * self.expansion))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet's bottleneck (torchvision's, stride on the 3x3): 1x1 to ``planes``, 3x3, 1x1 to
    ``4 * planes``, each with BN; the shortcut a 1x1 conv + BN (``downsample``) where shapes change."""

    expansion = 4

    def __init__(self, make: _Make, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1, self.bn1 = make.conv(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = make.conv(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = make.conv(planes, out, 1, bias=False), nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(make.conv(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ``ResNet``: ``conv1`` 7x7/2, ``bn1``, ``relu``, ``maxpool`` 3x3/2, ``layer1``..
    ``layer4`` of ``block``s (64, 128, 256, 512 planes; stride 2 from ``layer2``), ``avgpool``,
    ``fc``; torchvision's initialisation (``zero_init_residual=False``)."""

    def __init__(self, make: _Make, block, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = make.conv(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(make, self.inplanes, planes, stride if j == 0 else 1))
                self.inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, *, backend: str = "torch", target=None) -> nn.Module:
    """ResNet-18 (He et al. 2016) as torchvision builds it, random weights: a 7x7/2 stem with BN,
    3x3/2 max pool, four stages of two basic blocks. ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(ResNet(_Make(backend, target), BasicBlock, [2, 2, 2, 2], num_classes))


def resnet50(num_classes: int = 1000, *, backend: str = "torch", target=None) -> nn.Module:
    """ResNet-50 (He et al. 2016) as torchvision builds it, random weights: a 7x7/2 stem with BN,
    3x3/2 max pool, stages of 3, 4, 6 and 3 bottleneck blocks (the v1.5 layout: stride on the
    3x3). ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(ResNet(_Make(backend, target), Bottleneck, [3, 4, 6, 3], num_classes))
