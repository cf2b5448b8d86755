"""Markdown tables from `tvmconv bench --json` records: per-family geometric means and every
workload (with the goal it misses, if any). Usage: python benchmarks/report.py RECORDS.jsonl"""

from __future__ import annotations

import json
import sys

from tvmconv.bench import geomeans, goal_of, meets_goal


def main(path: str) -> None:
    recs = [json.loads(line) for line in open(path) if line.strip()]
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
