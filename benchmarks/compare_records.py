"""Same-run A/B of two versions of the shipped schedule records: for every workload of a suite,
the record at a git revision against the record in the working tree, both compiled and called
through the op (`tvmconv.functional`, dispatch off), interleaved, median of 9 rounds.

    python benchmarks/compare_records.py SUITE REVISION [NAME_FILTER,...] > out.jsonl
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tvmconv import bench, cache, suites, timing
from tvmconv import functional as TF
from tvmconv.kernels import build
from tvmconv.target import resolve


def main(suite: str, rev: str, only: str = "") -> None:
    tgt = resolve("x86-avx2")
    torch.set_num_threads(tgt.num_cores)
    for spec, _ in suites.suite(suite):
        if only and not any(k in spec.name for k in only.split(",")):
            continue
        new, path = cache.find_record(spec, tgt)
        old = json.loads(subprocess.check_output(["git", "show", f"{rev}:schedules/{tgt.profile}/{Path(path).name}"]))
        if (old["trace"], old["plan"]) == (new["trace"], new["plan"]):
            print(json.dumps({"workload": spec.name, "same": True}), flush=True)
            continue
        kernels = [build.compile_spec(spec, tgt, rec) for rec in (old, new)]
        case = bench.case_for(spec)

        def call(kern):
            def run():
                build._cache[(spec, tgt)] = kern
                case.op(*case.args, **case.kwargs, target=tgt)
            return run

        with torch.no_grad(), TF.no_dispatch():
            a, b = timing.interleaved(call(kernels[0]), call(kernels[1]), rounds=9)
        build.clear_memory_cache()
        print(json.dumps({"workload": spec.name, "same": False, "old_source": old["source"], "new_source": new["source"],
                          "old_s": timing.median(a), "new_s": timing.median(b), "old_spread": timing.spread(a),
                          "new_spread": timing.spread(b), "speedup": timing.median(a) / timing.median(b)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
