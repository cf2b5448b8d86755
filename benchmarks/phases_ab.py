"""A/B of a strided ``wvec`` layer's staged input rows: padded rows read every ``stride``-th column
per lane (``phases=False``, the rule before) against rows split by column phase first, each tap then
read as whole vectors (``phases=True``, ``compute._phase_split``), on the stride-2 depthwise layers
of MobileNetV2/V3, EfficientNet-B0, ShuffleNetV2 and MobileNet v1, with PyTorch's (oneDNN) layer in
the same run. Each kernel (bias in its store) timed alone, interleaved, best of 7 repeats of 20
calls, microseconds. One JSON line per layer.

    python benchmarks/phases_ab.py
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch
import tvm

from tvmconv.backends.target import resolve
from tvmconv.variants.conv import ConvSpec

LAYERS = [  # (channels, input size, kernel): all stride 2, padding k // 2
    (96, 112, 3), (144, 56, 3), (192, 28, 3), (576, 14, 3),  # MobileNetV2
    (144, 56, 5), (240, 28, 3), (672, 14, 5),  # EfficientNet-B0
    (64, 112, 3), (72, 56, 5), (24, 56, 3), (116, 28, 3), (232, 14, 3),  # MNv3, MobileNet v1, ShuffleNetV2
]


def main() -> None:
    torch.set_num_threads(2)
    tgt = resolve(None)
    be, dev = tgt.backend, tvm.cpu()
    for c, hw, k in LAYERS:
        p = k // 2
        spec = ConvSpec(c_in=c, in_size=(hw, hw), c_out=c, kernel=(k, k), stride=(2, 2), padding=((p, p), (p, p)),
                        dilation=(1, 1), groups=c, bias=True)
        rule = be.default_plan(spec)
        x, w, b = torch.randn(1, c, hw, hw), torch.randn(c, 1, k, k), torch.randn(c)
        want = torch.nn.functional.conv2d(x, w, b, stride=2, padding=p, groups=c)
        runs, err = {}, 0.0
        for label, phases in (("rows", False), ("phases", True)):
            sch, _ = be.default_schedule(spec, dataclasses.replace(rule, phases=phases))
            lib = tvm.compile(sch.mod, target=tgt.tvm()).mod
            shapes = [[int(d) for d in q.shape] for q in sch.mod["main"].params]
            args = [tvm.runtime.tensor(v.reshape(s), dev) for v, s in
                    zip((x.numpy(), w.numpy(), b.numpy(), np.zeros(want.shape, "float32")), shapes)]
            lib["main"](*args)
            err = max(err, float(np.abs(args[-1].numpy().reshape(want.shape) - want.numpy()).max()))
            runs[label] = (lib.time_evaluator("main", dev, number=20, repeat=1), args)
        best = {label: [] for label in (*runs, "torch")}
        for _ in range(7):
            for label, (timer, args) in runs.items():
                best[label].append(timer(*args).results[0])
            t0 = time.perf_counter()
            for _ in range(20):
                torch.nn.functional.conv2d(x, w, b, stride=2, padding=p, groups=c)
            best["torch"].append((time.perf_counter() - t0) / 20)
        print(json.dumps({"layer": f"c{c} {hw}x{hw} k{k} s2 depthwise", "target": tgt.profile, "rule_plan": repr(rule),
                          **{f"{label}_us": round(min(t) * 1e6, 1) for label, t in best.items()},
                          "max_abs_error": err}), flush=True)


if __name__ == "__main__":
    main()
