"""What a vendor-dispatched op call costs over the PyTorch call it makes: a tiny layer (the kind
issue 37's `bench --dispatch` finds slower than the vendor) timed as F.conv2d, as the op's vendor
callable, as the op's parse plus that callable, as ``_run`` and as the public op, and Python work
of known cost alone and before F.conv2d. 15 alternating rounds of 3 x 500 calls, best and median in
us, 2 torch threads, grad off. One JSON line per row.

    python benchmarks/op_overhead.py > op_overhead.jsonl
"""
from __future__ import annotations

import json
import statistics
import timeit

import torch
import torch.nn.functional as F

import tvmconv.functional as TF
from tvmconv.runtime import call
from tvmconv.variants.conv import parse_conv


def _busy():
    s = 0
    for i in range(60):
        s += i
    return s


def main() -> None:
    torch.set_num_threads(2)
    x, w, b = torch.randn(1, 64, 8, 8), torch.randn(64, 64, 1, 1), torch.randn(64)
    with call.capture_kernels() as kernels:
        TF.conv2d(x, w, b)
    kernels[0].dispatch = "vendor"  # (this process only: the stored choice is not touched)
    spec, a, tensors, unbatched = parse_conv("conv2d", 2, x, w, b, 1, 0, 1, 1)
    vendor = call._vendor(spec)
    fns = {
        "F.conv2d": lambda: F.conv2d(x, w, b),
        "vendor callable": lambda: vendor(x, w, b),
        "parse + vendor callable": lambda: (parse_conv("conv2d", 2, x, w, b, 1, 0, 1, 1), vendor(x, w, b)),
        "_run (vendor decided)": lambda: call._run(spec, a, tensors, None, unbatched),
        "op (vendor decided)": lambda: TF.conv2d(x, w, b),
        "python loop alone": _busy,
        "python loop + F.conv2d": lambda: (_busy(), F.conv2d(x, w, b)),
        "parse alone": lambda: parse_conv("conv2d", 2, x, w, b, 1, 0, 1, 1),
    }
    times = {n: [] for n in fns}
    with torch.no_grad():
        for _ in range(15):
            for n, f in fns.items():
                times[n].append(min(timeit.repeat(f, number=500, repeat=3)) / 500 * 1e6)
    for n, ts in times.items():
        print(json.dumps({"layer": "conv2d c64->64 8x8 1x1 bias", "call": n, "best_us": round(min(ts), 2),
                          "median_us": round(statistics.median(ts), 2)}))


if __name__ == "__main__":
    main()
