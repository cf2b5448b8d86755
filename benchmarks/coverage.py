"""Issue 34's coverage check: every network of tvmconv.models through the one pipeline.

For each network: ``tvmconv.compile`` at batch 1 and 8 against eager PyTorch (the largest
difference relative to the output's range, compile seconds from an empty cache and again from the
cache); then ``export --model`` for arm64-linux, run under qemu-aarch64, and for android-arm64
(linked by zig, its objects run in a glibc harness under qemu), each at a reduced input size,
compared with the same model in PyTorch (``export_model.check_model``). One JSON line per network.

    TVMCONV_CACHE_DIR=$(mktemp -d) python benchmarks/coverage.py --json benchmarks/results/x86-avx2-zen3-coverage.jsonl
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

EXPORT_TARGETS = ("arm64-linux", "android-arm64")


def _rel_err(got, want) -> float:
    return float((got - want).abs().max() / max(1.0, float(want.abs().max())))


def compile_row(name: str, size: int, batches=(1, 8)) -> dict:
    import tvmconv
    from tvmconv.tools.export_model import builtin_model

    row = {}
    for n in batches:
        model = builtin_model(name, (n, 3, size, size))
        x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))
        t0 = time.perf_counter()
        fast = tvmconv.compile(model, (x,))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        tvmconv.compile(model, (x,))
        warm = time.perf_counter() - t0
        with torch.no_grad():
            row[f"n{n}"] = {"rel_err": _rel_err(fast(x), model(x)), "compile_s": round(cold, 1),
                            "cached_s": round(warm, 2), "kernels": len(fast.tvmconv_report.kernels)}
    return row


def export_row(name: str, size: int) -> dict:
    from tvmconv.tools import export_model as XM

    row = {}
    shape = (1, 3, size, size)
    for target in EXPORT_TARGETS:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            XM.export_model(name, target, d, input_shape=shape)
            row[target] = {"abs_err": XM.check_model(d, name, threads=2, log=lambda line: None),
                           "seconds": round(time.perf_counter() - t0, 1), "input": list(shape)}
    return row


def main() -> None:
    from tvmconv.backends import machine
    from tvmconv.models import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--size", type=int, default=224, help="compile's input size")
    ap.add_argument("--export-size", type=int, default=64, help="the exports' input size (effnet: --size)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = list(MODELS) if args.models == "all" else args.models.split(",")
    for name in names:
        rec = {"model": name, "cpu": machine.cpu_model(), "torch": torch.__version__}
        for part, fn in (("compile", lambda: compile_row(name, args.size)),
                         ("export", lambda: export_row(name, args.size if name == "effnet" else args.export_size))):
            try:
                rec[part] = fn()
            except Exception as exc:  # noqa: BLE001 - a failure is a result here
                rec[part] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                traceback.print_exc()
        print(json.dumps(rec), flush=True)
        if args.json:
            with args.json.open("a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
