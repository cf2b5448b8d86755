"""The same layer compiled several times in one process: each compiled module's fused kernel timed
alone (``CompiledModel.profile``, 3 profiles of 10 rounds each), to show how much one module instance
differs from the next. One JSON line per module, in compile order.

    python benchmarks/module_variance.py silu relu6 silu relu6 silu
"""
from __future__ import annotations

import json
import sys

import torch
from torch import nn

import tvmconv

ACTS = {"silu": nn.SiLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def main() -> None:
    torch.set_num_threads(2)
    c, h, k, s = 144, 56, 5, 2  # EfficientNet-B0's stride-2 5x5 depthwise layer
    for i, name in enumerate(sys.argv[1:]):
        model = nn.Sequential(nn.Conv2d(c, c, k, s, k // 2, groups=c), nn.BatchNorm2d(c), ACTS[name]()).eval()
        fast = tvmconv.compile(model, (torch.randn(1, c, h, h),))
        times = [[r for r in fast.profile(rounds=10) if r.gflops][0].seconds for _ in range(3)]
        print(json.dumps({"order": i, "epilogue": name, "shape": [c, h, k, s],
                          "us": [round(t * 1e6, 1) for t in times]}), flush=True)


if __name__ == "__main__":
    main()
