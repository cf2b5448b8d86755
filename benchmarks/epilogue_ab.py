"""A/B of the epilogue fusion in tvmconv.compile: each network compiled with the elementwise ops
after its convolutions in the kernels' store and without (``lowering.fuse_epilogues`` off), timed
interleaved with PyTorch eager in one process.

    python benchmarks/epilogue_ab.py --models mobilenet_v2,efficientnet_b0,resnet18 \
        --json benchmarks/results/x86-avx2-zen3-epilogue-ab.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils import benchmark

import tvmconv
from tvmconv import models
from tvmconv.graph import compiler, lowering
from tvmconv.backends.machine import cpu_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,resnet18")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    fuse, key = lowering.fuse_epilogues, compiler.model_key
    with open(args.json, "w") as out:
        for name in args.models.split(","):
            model, x = getattr(models, name)().eval(), torch.randn(1, 3, 224, 224)
            paths = {"eager": model, "fused": tvmconv.compile(model, (x,))}
            lowering.fuse_epilogues = lambda mod, made: mod
            compiler.model_key = lambda *a: key(*a) + "-unfused"  # (another cache entry)
            try:
                paths["unfused"] = tvmconv.compile(model, (x,))
            finally:
                lowering.fuse_epilogues, compiler.model_key = fuse, key
            times: dict = {}
            with torch.no_grad():
                ref = model(x)
                for _ in range(args.rounds):
                    for path, fn in paths.items():
                        t = benchmark.Timer("f(x)", globals=dict(f=fn, x=x)).blocked_autorange(min_run_time=0.5)
                        times.setdefault(path, []).append(t.median)
                for path, fn in paths.items():
                    ts = sorted(times[path])
                    med = ts[len(ts) // 2]
                    row = dict(model=name, path=path, seconds=med, spread=(ts[-1] - ts[0]) / med,
                               speedup_vs_eager=sorted(times["eager"])[len(ts) // 2] / med,
                               max_abs_diff=float((fn(x) - ref).abs().max()), cpu=cpu_model(),
                               epilogues=getattr(getattr(fn, "tvmconv_report", None), "epilogues", None))
                    out.write(json.dumps(row) + "\n")
                    print(f"{name:20s} {path:8s} {med * 1e3:7.2f} ms  {row['speedup_vs_eager']:.2f}x eager  "
                          f"spread {row['spread']:.0%}  epilogues {row['epilogues']}")


if __name__ == "__main__":
    main()
