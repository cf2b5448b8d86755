"""What first-use dispatch calibration costs: per workload of a suite, the op's first calls on this
machine (both paths timed, alternating: runtime/dispatch.py) against as many calls once decided.

    python benchmarks/calibration_cost.py mobilenet_v1 [--json out.jsonl]

Each workload's kernel is compiled first (under no_dispatch, which never calibrates), so the cost
is calibration's alone: the slower path's calls, the timing and storing the choice. Run with an
empty user cache (TVMCONV_CACHE_DIR) or the stored choices make it measure nothing."""

from __future__ import annotations

import argparse
import json
import time

import torch

import tvmconv.functional as TF
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import resolve
from tvmconv.runtime import dispatch
from tvmconv.suites import cases
from tvmconv.suites.workloads import workloads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("suite")
    ap.add_argument("--json")
    args = ap.parse_args()
    tgt = resolve(None)
    n = 2 * (dispatch.WARMUP + dispatch.CALLS)
    rows = []
    for spec, _ in workloads(args.suite):
        case = cases.case_for(spec)
        call = lambda: case.op(*case.args, **case.kwargs)  # noqa: E731
        with torch.no_grad():
            with TF.no_dispatch(), TF.capture_kernels() as ks:
                call()  # compile (or load) only
            kern = ks[-1]
            if kern.dispatch != dispatch.UNDECIDED:
                print(f"{spec.name}: already decided ({kern.dispatch_source}); skipped")
                continue
            first, then = [], []
            for out in (first, then):
                for _ in range(n):
                    t0 = time.perf_counter()
                    call()
                    out.append(time.perf_counter() - t0)
        row = {"workload": spec.name, "choice": kern.dispatch, "first_calls_s": sum(first), "decided_calls_s": sum(then),
               "extra_s": sum(first) - sum(then), "calls": n, "machine": machine_of(tgt).description}
        rows.append(row)
        print(f"{spec.name[:60]:60s} {kern.dispatch:8s} first {n} calls {sum(first) * 1e3:7.2f} ms, "
              f"then {sum(then) * 1e3:7.2f} ms: +{row['extra_s'] * 1e3:.2f} ms")
    total = sum(r["extra_s"] for r in rows)
    print(f"{machine_of(tgt).description}: {len(rows)} workloads, calibration cost {total * 1e3:.1f} ms in all, "
          f"{max(r['extra_s'] for r in rows) * 1e3:.1f} ms at most")
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
