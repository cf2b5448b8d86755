"""ResNet-18 and ResNet-50 (He et al. 2016), random weights. ``resnet50`` has torchvision's
structure (``conv1``, ``bn1``, ``layer1``..``layer4``, ``fc``); ``resnet18`` keeps this package's
earlier layout (the stem and blocks in ``features``, then ``classifier``), whose blocks have
torchvision's keys but whose top level does not."""

from __future__ import annotations

import torch
from torch import nn

from ._common import _Classifier, _finish, _Make


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN, the shortcut a 1x1/2 conv + BN where shapes change."""

    expansion = 1

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
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                               nn.MaxPool2d(3, 2, 1)]
    c_in = 64
    for c, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(make, c_in, c, s), BasicBlock(make, c, c, 1)]
        c_in = c
    return _finish(_Classifier(nn.Sequential(*layers), 512, num_classes))


def resnet50(num_classes: int = 1000, *, backend: str = "torch", target=None) -> nn.Module:
    """ResNet-50 (He et al. 2016) as torchvision builds it, random weights: a 7x7/2 stem with BN,
    3x3/2 max pool, stages of 3, 4, 6 and 3 bottleneck blocks (the v1.5 layout: stride on the
    3x3). ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(ResNet(_Make(backend, target), Bottleneck, [3, 4, 6, 3], num_classes))
