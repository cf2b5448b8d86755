"""A user on an untuned machine: a time-limited tune from nothing against the shipped records.

    python benchmarks/fresh_tune.py mobilenet_v1 shufflenet_v1_g3 resnet18 --time-limit 10m \\
        --out benchmarks/results/x86-avx512-fresh-tune

Per suite: ``tvmconv tune --suite S --time-limit L`` into an empty user cache with the shipped
records and logs hidden (a shipped root holding only the target profiles and the cost models), then ``tvmconv bench
--suite S`` on what it tuned, then ``tvmconv bench --suite S`` of the shipped records (an empty
cache, the shipped root as installed) right after, on the same machine. Writes ``<out>.jsonl``
(every bench row, with ``suite`` and ``run``: ``fresh`` or ``shipped``; one ``tune`` row per
suite with its wall time) and prints, per suite, the two geomean tvmconv/vendor ratios. Run it on
an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def geomean(rows: list[dict]) -> float:
    return math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))


def tvmconv(args: list[str], env: dict, log: Path) -> float:
    """Run ``tvmconv *args``, output to ``log``; the wall time in seconds."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", "tvmconv", *args], env=env, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("suites", nargs="+")
    ap.add_argument("--time-limit", default="10m")
    ap.add_argument("--out", type=Path, required=True, help="path without suffix for the .jsonl and the logs")
    args = ap.parse_args()
    logs = args.out.with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tvmconv-fresh-") as tmp:
        tmp = Path(tmp)
        hidden = tmp / "shipped-hidden"  # the profiles and cost models only: no schedules/, no tuning_logs/
        for kept in ("targets", "costmodels"):
            shutil.copytree(REPO / kept, hidden / kept)
        for suite in args.suites:
            base = {k: v for k, v in os.environ.items() if k not in ("TVMCONV_SHIPPED_DIR", "TVMCONV_CACHE_DIR")}
            fresh = {**base, "TVMCONV_CACHE_DIR": str(tmp / f"fresh-{suite}"), "TVMCONV_SHIPPED_DIR": str(hidden)}
            shipped = {**base, "TVMCONV_CACHE_DIR": str(tmp / f"shipped-{suite}")}
            tuned = tmp / f"{suite}-tune.jsonl"
            wall = tvmconv(["tune", "--suite", suite, "--time-limit", args.time_limit, "--json", str(tuned)], fresh,
                           logs / f"{suite}-tune.log")
            rows.append({"suite": suite, "run": "tune", "time_limit": args.time_limit, "wall_s": wall,
                         "workloads": [json.loads(line) for line in tuned.read_text().splitlines()]})
            for run, env in (("fresh", fresh), ("shipped", shipped)):
                out = tmp / f"{suite}-{run}.jsonl"
                tvmconv(["bench", "--suite", suite, "--json", str(out), "--png", str(logs / f"{suite}-{run}.png")], env,
                        logs / f"{suite}-bench-{run}.log")
                got = [json.loads(line) for line in out.read_text().splitlines()]
                rows += [{**r, "suite": suite, "run": run} for r in got]
            g = {run: geomean([r for r in rows if r["suite"] == suite and r["run"] == run]) for run in ("fresh", "shipped")}
            print(f"{suite}: tune {wall:.0f} s (limit {args.time_limit}); geomean tvmconv/vendor fresh {g['fresh']:.3f}, "
                  f"shipped {g['shipped']:.3f} (fresh/shipped {g['fresh'] / g['shipped']:.3f})", flush=True)
            args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
