"""A/B of a pointwise convolution's register tile: output channels in the vector (``ocvec``, the rule
before) against its pixels in the vector (``wvec`` with a channel tile, ``blocking._pixel_tile``), on
the pointwise layers of MobileNetV2 and EfficientNet-B0 whose rows hold whole vectors. Each kernel
(the op's: bias in its store) timed alone, interleaved with PyTorch's layer, best (and median) of
ROUNDS repeats of 20 calls, microseconds (5 rounds for the first results, 15 for ``partial``).
One JSON line per layer. ``partial``: the layers whose rows end in part of a vector (14, 7, 28
wide on AVX2), widened to whole vectors.

    python benchmarks/pixel_tile_ab.py [partial]
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import tvm

from tvmconv.backends import blocking
from tvmconv.backends.target import resolve
from tvmconv.runtime import build
from tvmconv.variants.compute import Plan
from tvmconv.variants.conv import ConvSpec

LAYERS = [(32, 16, 112), (16, 96, 112), (24, 144, 56), (144, 24, 56), (96, 24, 56), (64, 64, 56), (32, 64, 112)]
ROUNDS = 15 if sys.argv[1:] == ["partial"] else 5
PARTIAL = [(64, 384, 14), (384, 64, 14), (96, 576, 14), (576, 96, 14), (160, 960, 7), (960, 160, 7), (320, 1280, 7),
           (32, 192, 28), (40, 240, 28), (112, 672, 14), (960, 320, 7)]  # MobileNetV2, EfficientNet-B0


def main() -> None:
    tgt = resolve(None)
    be, dev = tgt.backend, tvm.cpu()
    V = be.lanes("float32")
    for c_in, c_out, hw in PARTIAL if sys.argv[1:] == ["partial"] else LAYERS:
        spec = ConvSpec(c_in=c_in, in_size=(hw, hw), c_out=c_out, kernel=(1, 1), stride=(1, 1),
                        padding=((0, 0), (0, 0)), dilation=(1, 1), bias=True)
        vb, owi = blocking._channel_block(c_out, hw, V, be.tile_registers("float32"), 1, pointwise=True)
        plans = {"ocvec": Plan("ocvec", vb=vb, owi=owi), "pixel_tile": be.default_plan(spec)}
        x, w, b = torch.randn(1, c_in, hw, hw), torch.randn(c_out, c_in, 1, 1), torch.randn(c_out)
        eager = lambda: torch.nn.functional.conv2d(x, w, b)  # noqa: E731
        want = torch.nn.functional.conv2d(x, w, b).numpy()
        runs, err = {}, {}
        for label, plan in plans.items():
            sch, _ = be.default_schedule(spec, plan)
            sch = build._vectorize_output(sch, V)  # (as the compiler's kernels: the output rows in vectors)
            lib = tvm.compile(sch.mod, target=tgt.tvm()).mod
            shapes = [[int(d) for d in p.shape] for p in sch.mod["main"].params]
            args = [tvm.runtime.tensor(v.reshape(s), dev) for v, s in
                    zip((x.numpy(), w.numpy(), b.numpy(), np.zeros(want.shape, "float32")), shapes)]
            lib["main"](*args)
            err[label] = float(np.abs(args[-1].numpy().reshape(want.shape) - want).max())
            runs[label] = (lib.time_evaluator("main", dev, number=20, repeat=1), args)
        best = {label: [] for label in (*runs, "torch")}
        for _ in range(ROUNDS):
            for label, (timer, args) in runs.items():
                best[label].append(timer(*args).results[0])
            t0 = time.perf_counter()
            for _ in range(20):
                eager()
            best["torch"].append((time.perf_counter() - t0) / 20)
        print(json.dumps({"layer": f"c{c_in}->{c_out} {hw}x{hw}", "target": tgt.profile,
                          **{f"{label}_plan": repr(plans[label]) for label in plans},
                          **{f"{label}_us": round(min(t) * 1e6, 1) for label, t in best.items()},
                          **{f"{label}_median_us": round(sorted(t)[len(t) // 2] * 1e6, 1) for label, t in best.items()},
                          "max_abs_error": max(err.values())}), flush=True)


if __name__ == "__main__":
    main()
