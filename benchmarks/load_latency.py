"""How long a new process's first call of a tuned op takes: with an empty kernel cache (read the
shipped record, schedule, compile, write the library) and with the library cached (read the
record, load the `.so`, pack the weights, run), then the steady per-call time. Each first call is
timed in a fresh Python process (tvmconv and torch already imported, the inputs already made).

    python benchmarks/load_latency.py [SUITE] [--target x86-avx2] [--json out.jsonl]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import typer

CHILD = r"""
import json, statistics, sys, time
import torch
from tvmconv.suites.cases import case_for
from tvmconv.suites import suite
from tvmconv.backends.target import resolve

spec = next(s for s, _ in suite(sys.argv[1]) if s.name == sys.argv[2])
case, target = case_for(spec), resolve(sys.argv[3])
call = lambda: case.op(*case.args, **case.kwargs, target=target)
with torch.no_grad():
    t0 = time.perf_counter(); call(); first = time.perf_counter() - t0
    steady = []
    for _ in range(20):
        t0 = time.perf_counter(); call(); steady.append(time.perf_counter() - t0)
print(json.dumps({"first_s": first, "steady_s": statistics.median(steady)}))
"""


def _child(suite_name: str, name: str, target: str, cache_dir: str) -> dict:
    env = {**os.environ, "TVMCONV_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", CHILD, suite_name, name, target], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(suite_name: str = typer.Argument("mobilenet_v1"), target: str = "x86-avx2",
         json_path: str = typer.Option(None, "--json", help="also write one JSON record per workload here")) -> None:
    from tvmconv.suites import suite

    recs = []
    print("| workload | first call, empty kernel cache (ms) | first call, library cached (ms) | then per call (ms) |")
    print("|---|---|---|---|")
    for spec, _ in suite(suite_name):
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = _child(suite_name, spec.name, target, cache_dir)
            warm = _child(suite_name, spec.name, target, cache_dir)
        rec = {"workload": spec.name, "target": target, "cold_first_s": cold["first_s"],
               "cached_first_s": warm["first_s"], "steady_s": warm["steady_s"]}
        recs.append(rec)
        print(f"| {spec.name} | {cold['first_s'] * 1e3:.0f} | {warm['first_s'] * 1e3:.1f} | {warm['steady_s'] * 1e3:.3f} |",
              flush=True)
    if json_path:
        with open(json_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)


if __name__ == "__main__":
    typer.run(main)
