"""A/B: a depthwise convolution + BatchNorm + SiLU compiled by tvmconv.compile, its fused kernel timed
alone (CompiledModel.profile, best of rounds) against the same convolution through PyTorch; one JSON
line per shape to stdout."""
import json
import sys

import torch
from torch import nn
import tvmconv

torch.set_num_threads(2)
for c, h, k, s in [(240, 28, 5, 1), (144, 56, 5, 2), (672, 14, 5, 1), (1152, 7, 5, 1)]:
    m = nn.Sequential(nn.Conv2d(c, c, k, s, k // 2, groups=c), nn.BatchNorm2d(c), nn.SiLU()).eval()
    fast = tvmconv.compile(m, (torch.randn(1, c, h, h),))
    (row,) = [r for r in fast.profile(rounds=10) if "_e" in r.function]
    print(json.dumps({"rev": sys.argv[1], "shape": [c, h, k, s], "fused_us": row.seconds * 1e6,
                      "pytorch_conv_us": row.eager_seconds * 1e6}), flush=True)
