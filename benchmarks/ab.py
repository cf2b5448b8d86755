"""Same-run A/B of two revisions: ``tvmconv bench`` on one suite, alternating the versions.

    python benchmarks/ab.py 518a046 HEAD --suite mobilenet_v1 --rounds 2 \\
        --out benchmarks/results/x86-avx512-layout-ab-mobilenet_v1

Each revision's package, target profiles and shipped schedules are unpacked (``git archive``)
into a temporary directory and run from there (PYTHONPATH), each with its own empty kernel cache,
in the order A B B A A B ... so that a drift of the machine over the run falls on both alike.
Writes ``<out>.jsonl`` (every bench row, with ``code`` and ``run``) and prints the geomean of the
tvmconv/vendor ratio per run. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = ("tvmconv", "targets", "schedules")


def unpack(rev: str, into: Path) -> str:
    """Unpack ``rev``'s package and data into ``into``; return its short hash."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, *PATHS], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def alternate_forwards(compiled: dict, x, rounds: int = 15, number: int = 5) -> dict:
    """Each compiled model of ``compiled`` (label -> callable) run on ``x`` in alternating rounds of
    ``number`` forwards, warmed first, grad off: ``{"<label>_best_ms", "<label>_median_ms"}``. One
    process, so the machine's drift falls on every side alike."""
    import statistics
    import time

    import torch

    times: dict = {label: [] for label in compiled}
    with torch.no_grad():
        for _ in range(3):
            for fast in compiled.values():
                fast(x)
        for _ in range(rounds):
            for label, fast in compiled.items():
                t = time.perf_counter()
                for _ in range(number):
                    fast(x)
                times[label].append((time.perf_counter() - t) / number * 1e3)
    row: dict = {}
    for label, ts in times.items():
        row.update({f"{label}_best_ms": round(min(ts), 3), f"{label}_median_ms": round(statistics.median(ts), 3)})
    return row


def geomean(rows: list[dict]) -> float:
    return math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--suite", default="mobilenet_v1")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each version")
    ap.add_argument("--out", type=Path, required=True, help="path without suffix for the .jsonl")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvmconv-ab-") as tmp:
        tmp = Path(tmp)
        codes = {name: unpack(rev, tmp / name) for name, rev in (("a", args.a), ("b", args.b))}
        order = [("a", "b") if i % 2 == 0 else ("b", "a") for i in range(args.rounds)]
        rows, summary = [], []
        for i, pair in enumerate(order):
            for name in pair:
                out = tmp / f"{name}{i}.jsonl"
                env = {**os.environ, "PYTHONPATH": str(tmp / name), "TVMCONV_CACHE_DIR": str(tmp / f"cache-{name}")}
                env.pop("TVMCONV_SHIPPED_DIR", None)
                subprocess.run([sys.executable, "-m", "tvmconv", "bench", "--suite", args.suite, "--json", str(out),
                                "--png", str(out.with_suffix(".png"))], env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
                run = [{**json.loads(line), "code": codes[name], "run": f"{name}{i}"}
                       for line in out.read_text().splitlines() if line.strip()]
                rows += run
                summary.append((f"{name}{i}", codes[name], geomean(run)))
                print(f"run {name}{i} ({codes[name]}): geomean tvmconv/vendor {summary[-1][2]:.3f}", flush=True)
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("a", "b"):
        values = [g for run, _, g in summary if run.startswith(name)]
        print(f"{name} ({codes[name]}): {' '.join(f'{v:.3f}' for v in values)}")


if __name__ == "__main__":
    main()
