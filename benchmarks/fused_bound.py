"""How fast can a fused depthwise-separable kernel be against PyTorch's two-op sequence?

For each depthwise-separable workload of a suite, times, interleaved in one process (median of 7
rounds, the machine's threads on every side): PyTorch's depthwise conv, PyTorch's pointwise (1x1)
conv on the depthwise output, ``torch.mm`` on the pointwise stage's GEMM (the vendor's SGEMM of
the same M, N, K) and the tvmconv op. Fusion removes the depthwise pass and its memory traffic,
but the pointwise GEMM is left: a fused kernel that ran that GEMM as fast as the vendor's SGEMM
would be ``(t_dw + t_pw) / t_mm`` times faster than the sequence, the bound printed here. (The
sequence's activations are left out of t_dw + t_pw, so the bound is a slight underestimate.)

    python benchmarks/fused_bound.py [SUITE] > out.jsonl
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from tvmconv import functional as TF
from tvmconv import suites
from tvmconv.backends import timing
from tvmconv.variants import DepthwiseSeparableSpec


def main(suite: str = "mobilenet_v1") -> None:
    threads = torch.get_num_threads()
    for spec, _ in suites.suite(suite):
        if not isinstance(spec, DepthwiseSeparableSpec):
            continue
        gen = torch.Generator().manual_seed(0)
        t = {name: torch.randn(shape, generator=gen) for name, shape in spec.arg_shapes}
        x, wd, wp = t["input"], t["depthwise_weight"], t["pointwise_weight"]
        db, pb = t.get("depthwise_bias"), t.get("pointwise_bias")
        pads = tuple(lo for lo, _ in spec.padding)
        mid = F.conv2d(x, wd, db, spec.stride, pads, spec.dilation, groups=spec.c_in)
        a, b = wp.flatten(1), mid.transpose(0, 1).reshape(spec.c_mid, -1)  # (C_out, C_mid) @ (C_mid, N*H*W)
        fns = {
            "dw_s": lambda: F.conv2d(x, wd, db, spec.stride, pads, spec.dilation, groups=spec.c_in),
            "pw_s": lambda: F.conv2d(mid, wp, pb),
            "mm_s": lambda: torch.mm(a, b),
            "tvmconv_s": lambda: TF.depthwise_separable_conv2d(x, wd, wp, db, pb, spec.stride, pads, spec.dilation,
                                                               spec.mid_activation, spec.activation),
        }
        with torch.no_grad(), TF.no_dispatch():
            times = timing.interleaved_many(list(fns.values()), rounds=7)
        m = {k: timing.median(v) for k, v in zip(fns, times)}
        gemm = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        print(json.dumps({"workload": spec.name, "threads": threads, **m,
                          "vendor_s": m["dw_s"] + m["pw_s"], "mm_gflops": gemm / m["mm_s"] / 1e9,
                          "speedup": (m["dw_s"] + m["pw_s"]) / m["tvmconv_s"],
                          "bound_at_vendor_sgemm": (m["dw_s"] + m["pw_s"]) / m["mm_s"]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
