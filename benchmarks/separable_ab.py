"""A/B: tvmconv.compile with each depthwise convolution and the pointwise one after it as one fused
kernel ("fused", convert's pattern) or by compile's rule ("rule": two kernels unless the fused one has
a tuned schedule, ``lowering.fuse_where_tuned``), the whole network timed in interleaved rounds in one
process (best and median of rounds, ms). One JSON line per model.

    python benchmarks/separable_ab.py <label> mobilenet_v2 mobilenet_v1 ... > results.jsonl
"""
from __future__ import annotations

import functools
import json
import statistics
import sys
import time

import torch

import tvmconv
from tvmconv.graph import lowering
from tvmconv.models import MODELS


def per_call(fn, x, calls: int = 10) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - t) / calls


def main() -> None:
    torch.set_num_threads(2)
    label, names = sys.argv[1], sys.argv[2:]
    for name in names:
        model, x = MODELS[name](backend="torch").eval(), torch.randn(1, 3, 224, 224)
        rule = tvmconv.compile(model, (x,))
        exported = lowering.exported
        lowering.exported = functools.partial(exported, separable=True)
        try:  # (wrapped: another model key, so the fused module is compiled, not loaded)
            fused = tvmconv.compile(torch.nn.Sequential(model).eval(), (x,))
        finally:
            lowering.exported = exported
        times = {"fused": [], "rule": []}
        with torch.no_grad():
            want = model(x)
            err = max(float((f(x) - want).abs().max()) for f in (fused, rule))
            for f in (fused, rule):
                per_call(f, x)
            for _ in range(9):
                times["fused"].append(per_call(fused, x))
                times["rule"].append(per_call(rule, x))
        row = {"label": label, "model": name, "max_abs_diff": err,
               "kernels": {"fused": len(set(fused.tvmconv_report.kernels)), "rule": len(set(rule.tvmconv_report.kernels))}}
        for k, v in times.items():
            row[f"{k}_best_ms"] = round(min(v) * 1e3, 3)
            row[f"{k}_median_ms"] = round(statistics.median(v) * 1e3, 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
