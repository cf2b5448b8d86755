"""Markdown tables from `tvmconv bench --json` records (per-family geometric means and every
workload, with the goal it misses, if any) or from `tvmconv tune --json` records (per workload:
the log's records, whether its space is exhausted, GFLOP/s and speed-up over the default schedule
through the op). Usage: python benchmarks/report.py RECORDS.jsonl"""

from __future__ import annotations

import json
import statistics
import sys

from tvmconv.tools.bench import geomeans, goal_of, meets_goal


def tune_report(recs: list[dict]) -> None:
    n = [r["trials_total"] for r in recs]
    gf = [r["gflops"] for r in recs if r["gflops"]]
    up = [r["default_s"] / r["best_s"] for r in recs if r["best_s"] and r["default_s"]]
    print(f"{len(recs)} workloads. Records in the log per workload: {min(n)} to {max(n)}, median "
          f"{statistics.median(n):g}; {sum(x >= 100 for x in n)} have at least 100, {sum(x >= 200 for x in n)} "
          f"at least 200; {sum(bool(r['exhausted']) for r in recs)} searched to exhaustion. GFLOP/s through the op: "
          f"{min(gf):.1f} to {max(gf):.1f}, median {statistics.median(gf):.1f}. Speed-up over the default "
          f"schedule: {min(up):.2f}x to {max(up):.2f}x, median {statistics.median(up):.2f}x.\n")
    print("| workload | records | space | GFLOP/s | ms | default ms | speed-up | source | dispatch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        ms = f"{r['best_s'] * 1e3:.3f}" if r["best_s"] else "-"
        dms = f"{r['default_s'] * 1e3:.3f}" if r["default_s"] else "-"
        sp = f"{r['default_s'] / r['best_s']:.2f}x" if r["best_s"] and r["default_s"] else "-"
        print(f"| {r['workload']} | {r['trials_total']} | {'exhausted' if r['exhausted'] else 'open'} | "
              f"{r['gflops'] or 0:.1f} | {ms} | {dms} | {sp} | {r['source']} | {r['dispatch'] or '-'} |")


def main(path: str) -> None:
    recs = [json.loads(line) for line in open(path) if line.strip()]
    if recs and "trials_total" in recs[0]:
        return tune_report(recs)
    r0 = recs[0]
    print(f"Machine: {r0['machine']}; target {r0['target']}; roofline measured in the same run: SGEMM "
          f"{r0['peak_flops'] / 1e9:.0f} GFLOP/s, copy {r0['bandwidth'] / 1e9:.1f} GB/s.\n")
    if r0.get("target_kind") == "cuda":
        print("Vendor: cuDNN/cuBLAS through PyTorch, TF32 off (strict FP32, as tvmconv computes), "
              "cudnn.benchmark on; times are GPU times from CUDA events.\n")
    print("| family | workloads | geomean ratio tvmconv/vendor | speed-up | best roofline fraction | goal met |")
    print("|---|---|---|---|---|---|")
    for fam, g in geomeans(recs).items():
        rs = [r for r in recs if r["family"] == fam]
        print(f"| {fam} | {len(rs)} | {g:.2f} | {1 / g:.2f}x | {max(r['roofline_fraction'] for r in rs):.0%} | "
              f"{sum(meets_goal(r) for r in rs)}/{len(rs)} |")
    print("\n| workload | family | MFLOP | tvmconv ms | vendor ms | ratio | GFLOP/s | roofline | schedule | dispatch | goal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in recs:
        speed, roof = goal_of(r)
        goal = "met" if meets_goal(r) else f"missed (needs {speed:.2f}x" + (f", {roof:.0%} roofline)" if roof else ")")
        print(f"| {r['workload']} | {r['family']} | {r['flops'] / 1e6:.1f} | {r['tvmconv_s'] * 1e3:.3f} | "
              f"{r['vendor_s'] * 1e3:.3f} | {r['ratio']:.2f} | {r['gflops']:.1f} | {r['roofline_fraction']:.0%} | "
              f"{r['schedule']} | {r.get('dispatch', '-')} | {goal} |")


if __name__ == "__main__":
    main(sys.argv[1])
