"""A/B of a pointwise convolution's register tile: output channels in the vector (``ocvec``, the rule
before) against its pixels in the vector (``wvec`` with a channel tile, ``blocking._pixel_tile``), on
the pointwise layers of MobileNetV2 and EfficientNet-B0 whose rows hold whole vectors. Each kernel
(the op's: bias in its store) timed alone, interleaved, best of 5 repeats of 20 calls, microseconds.
One JSON line per layer.

    python benchmarks/pixel_tile_ab.py
"""
from __future__ import annotations

import json

import numpy as np
import torch
import tvm

from tvmconv.backends import blocking
from tvmconv.backends.target import resolve
from tvmconv.variants.compute import Plan
from tvmconv.variants.conv import ConvSpec

LAYERS = [(32, 16, 112), (16, 96, 112), (24, 144, 56), (144, 24, 56), (96, 24, 56), (64, 64, 56), (32, 64, 112)]


def main() -> None:
    tgt = resolve(None)
    be, dev = tgt.backend, tvm.cpu()
    V = be.lanes("float32")
    for c_in, c_out, hw in LAYERS:
        spec = ConvSpec(c_in=c_in, in_size=(hw, hw), c_out=c_out, kernel=(1, 1), stride=(1, 1),
                        padding=((0, 0), (0, 0)), dilation=(1, 1), bias=True)
        vb, owi = blocking._channel_block(c_out, hw, V, be.tile_registers("float32"), 1, pointwise=True)
        plans = {"ocvec": Plan("ocvec", vb=vb, owi=owi), "pixel_tile": be.default_plan(spec)}
        x, w, b = torch.randn(1, c_in, hw, hw), torch.randn(c_out, c_in, 1, 1), torch.randn(c_out)
        want = torch.nn.functional.conv2d(x, w, b).numpy()
        runs, err = {}, {}
        for label, plan in plans.items():
            sch, _ = be.default_schedule(spec, plan)
            lib = tvm.compile(sch.mod, target=tgt.tvm()).mod
            shapes = [[int(d) for d in p.shape] for p in sch.mod["main"].params]
            args = [tvm.runtime.tensor(v.reshape(s), dev) for v, s in
                    zip((x.numpy(), w.numpy(), b.numpy(), np.zeros(want.shape, "float32")), shapes)]
            lib["main"](*args)
            err[label] = float(np.abs(args[-1].numpy().reshape(want.shape) - want).max())
            runs[label] = (lib.time_evaluator("main", dev, number=20, repeat=1), args)
        best = {label: [] for label in runs}
        for _ in range(5):
            for label, (timer, args) in runs.items():
                best[label].append(timer(*args).results[0])
        print(json.dumps({"layer": f"c{c_in}->{c_out} {hw}x{hw}", "target": tgt.profile,
                          **{f"{label}_plan": repr(plans[label]) for label in plans},
                          **{f"{label}_us": round(min(t) * 1e6, 1) for label, t in best.items()},
                          "max_abs_error": max(err.values())}), flush=True)


if __name__ == "__main__":
    main()
