"""ShuffleNet v2 (Ma et al. 2018) with torchvision's structure, random weights."""

from __future__ import annotations

import torch
from torch import nn

from ._common import _finish, _Make


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """torchvision's ``shufflenetv2.channel_shuffle``: (N, g*c, H, W) viewed as (N, g, c, H, W),
    transposed to (N, c, g, H, W) and flattened back."""
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class ShuffleV2Block(nn.Module):
    """ShuffleNet v2's unit (torchvision's ``shufflenetv2.InvertedResidual``). Stride 1: the input
    split in halves (``chunk``), one half through ``branch2`` (1x1, 3x3 depthwise, 1x1, with BN),
    concatenated with the other. Stride 2: ``branch1`` (3x3/2 depthwise, 1x1) and ``branch2`` both
    on the whole input, concatenated. Then ``channel_shuffle(., 2)``."""

    def __init__(self, make: _Make, inp: int, oup: int, stride: int):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError("illegal stride value")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features << 1:
            raise ValueError(f"Invalid combination of stride {stride}, inp {inp} and oup {oup} values. If stride == 1 "
                             "then inp should be equal to oup // 2 << 1.")
        if stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(make, inp, inp, kernel_size=3, stride=stride, padding=1),
                nn.BatchNorm2d(inp),
                make.conv(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            make.conv(inp if stride > 1 else branch_features, branch_features, kernel_size=1, stride=1, padding=0,
                      bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            self.depthwise_conv(make, branch_features, branch_features, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(branch_features),
            make.conv(branch_features, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True))

    @staticmethod
    def depthwise_conv(make: _Make, i: int, o: int, kernel_size: int, stride: int = 1, padding: int = 0,
                       bias: bool = False) -> nn.Module:
        return make.conv(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """torchvision's ``ShuffleNetV2``: ``conv1`` (3x3/2, BN, ReLU), ``maxpool`` 3x3/2, ``stage2``..
    ``stage4`` (each opening with a stride-2 unit), ``conv5`` (1x1, BN, ReLU), global mean, ``fc``.
    PyTorch's default initialisation, as torchvision's."""

    def __init__(self, make: _Make, stages_repeats: list[int], stages_out_channels: list[int],
                 num_classes: int = 1000):
        super().__init__()
        if len(stages_repeats) != 3:
            raise ValueError("expected stages_repeats as list of 3 positive ints")
        if len(stages_out_channels) != 5:
            raise ValueError("expected stages_out_channels as list of 5 positive ints")
        self._stage_out_channels = stages_out_channels
        input_channels, output_channels = 3, stages_out_channels[0]
        self.conv1 = nn.Sequential(make.conv(input_channels, output_channels, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(output_channels), nn.ReLU(inplace=True))
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage2: nn.Sequential
        self.stage3: nn.Sequential
        self.stage4: nn.Sequential
        for name, repeats, output_channels in zip(("stage2", "stage3", "stage4"), stages_repeats,
                                                  stages_out_channels[1:]):
            seq = [ShuffleV2Block(make, input_channels, output_channels, 2)]
            seq += [ShuffleV2Block(make, output_channels, output_channels, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(make.conv(input_channels, output_channels, 1, 1, 0, bias=False),
                                   nn.BatchNorm2d(output_channels), nn.ReLU(inplace=True))
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x)
        x = x.mean([2, 3])  # global pool
        return self.fc(x)


def shufflenet_v2_x1_0(num_classes: int = 1000, *, backend: str = "torch", target=None) -> nn.Module:
    """ShuffleNet v2 1.0x (Ma et al. 2018) as torchvision builds it, random weights: stages of 4, 8
    and 4 units at 116, 232 and 464 channels, a 1x1 to 1024. ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(ShuffleNetV2(_Make(backend, target), [4, 8, 4], [24, 116, 232, 464, 1024], num_classes))
