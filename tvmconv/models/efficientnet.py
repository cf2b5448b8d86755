"""EfficientNet-B0 (Tan and Le 2019) with torchvision's structure, random weights."""

from __future__ import annotations

import copy
import math
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from ._common import _finish, _Make, _make_divisible, Conv2dNormActivation, init_mobile, SqueezeExcitation


def stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision.ops.stochastic_depth: in training, zero the whole input ("batch") or each sample
    ("row") with probability ``p`` and scale the kept ones by ``1 / (1 - p)``; the identity in eval."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: ``stochastic_depth(input, p, mode, self.training)``."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return stochastic_depth(input, self.p, self.mode, self.training)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(p={self.p}, mode={self.mode})"


class MBConvConfig(NamedTuple):
    """One stage of the EfficientNet table (channels and repeats after width and depth scaling)."""
    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


def _b_stages(width_mult: float, depth_mult: float) -> list[MBConvConfig]:
    def conf(e, k, s, c_in, c_out, n):
        return MBConvConfig(e, k, s, _make_divisible(c_in * width_mult, 8), _make_divisible(c_out * width_mult, 8),
                            int(math.ceil(n * depth_mult)))

    return [conf(1, 3, 1, 32, 16, 1), conf(6, 3, 2, 16, 24, 2), conf(6, 5, 2, 24, 40, 2), conf(6, 3, 2, 40, 80, 3),
            conf(6, 5, 1, 80, 112, 3), conf(6, 5, 2, 112, 192, 4), conf(6, 3, 1, 192, 320, 1)]


class MBConv(nn.Module):
    """EfficientNet's block (torchvision's ``MBConv``): ``block`` = 1x1 expansion (when it changes
    the width), kxk depthwise, squeeze-excitation (SiLU, sigmoid; ``input_channels // 4`` wide),
    1x1 projection without activation, SiLU elsewhere; where shapes allow, ``x +`` it after
    ``stochastic_depth`` (row mode; the identity in eval)."""

    def __init__(self, make: _Make, cnf: MBConvConfig, stochastic_depth_prob: float, norm_layer):
        super().__init__()
        if not 1 <= cnf.stride <= 2:
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        act = nn.SiLU
        layers: list[nn.Module] = []
        expanded = _make_divisible(cnf.input_channels * cnf.expand_ratio, 8)
        if expanded != cnf.input_channels:
            layers.append(Conv2dNormActivation(make, cnf.input_channels, expanded, 1, norm_layer=norm_layer,
                                               activation_layer=act))
        layers.append(Conv2dNormActivation(make, expanded, expanded, cnf.kernel, cnf.stride, groups=expanded,
                                           norm_layer=norm_layer, activation_layer=act))
        layers.append(SqueezeExcitation(make, expanded, max(1, cnf.input_channels // 4),
                                        activation=partial(nn.SiLU, inplace=True)))
        layers.append(Conv2dNormActivation(make, expanded, cnf.out_channels, 1, norm_layer=norm_layer,
                                           activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result += input
        return result


class EfficientNet(nn.Module):
    """torchvision's ``EfficientNet`` (v1): ``features`` (a 3x3/2 SiLU stem, one ``nn.Sequential``
    of MBConv blocks per stage, a 1x1 to 4x the last width), ``avgpool``, ``classifier`` (Dropout,
    Linear). Stochastic depth grows linearly with the block index to ``stochastic_depth_prob``;
    torchvision's initialisation."""

    def __init__(self, make: _Make, setting: list[MBConvConfig], dropout: float, stochastic_depth_prob: float = 0.2,
                 num_classes: int = 1000, norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        layers: list[nn.Module] = [Conv2dNormActivation(make, 3, setting[0].input_channels, 3, 2,
                                                        norm_layer=norm_layer, activation_layer=nn.SiLU)]
        total_stage_blocks = sum(cnf.num_layers for cnf in setting)
        stage_block_id = 0
        for cnf in setting:
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                block_cnf = copy.copy(cnf)
                if stage:  # not the stage's first block
                    block_cnf = block_cnf._replace(input_channels=block_cnf.out_channels, stride=1)
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_stage_blocks
                stage.append(MBConv(make, block_cnf, sd_prob, norm_layer))
                stage_block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = setting[-1].out_channels
        last_out = 4 * last_in
        layers.append(Conv2dNormActivation(make, last_in, last_out, 1, norm_layer=norm_layer,
                                           activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_out, num_classes))
        bound = lambda m: 1.0 / math.sqrt(m.out_features)  # noqa: E731
        init_mobile(self, lambda m: nn.init.uniform_(m.weight, -bound(m), bound(m)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def efficientnet_b0(num_classes: int = 1000, *, dropout: float = 0.2, stochastic_depth_prob: float = 0.2,
                    backend: str = "torch", target=None) -> nn.Module:
    """EfficientNet-B0 (Tan and Le 2019) as torchvision builds it, random weights: a 3x3/2 stem,
    16 MBConv blocks in 7 stages (SiLU, squeeze-excitation, stochastic depth), a 1x1 to 1280
    channels. ``(N, 3, H, W) -> (N, num_classes)``."""
    return _finish(EfficientNet(_Make(backend, target), _b_stages(1.0, 1.0), dropout, stochastic_depth_prob,
                                num_classes))
