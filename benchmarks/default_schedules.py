"""How far the default (untuned) schedules are from PyTorch CPU on real layer shapes.

    python benchmarks/default_schedules.py [--json out.jsonl]

Each row: the tvmconv op (default schedule, first-call compile time shown) and the PyTorch call
it replaces, timed interleaved in this process (median of 7 rounds). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.console import Console
from rich.table import Table

from tvmconv.tools.check import check_variant
from tvmconv.variants.registry import VARIANTS, ShapeRow
from tvmconv.backends.target import host

LAYERS = [
    ("conv2d", ShapeRow("resnet18 3x3 64", c=64, size=(56, 56), oc=64)),
    ("conv2d", ShapeRow("resnet18 3x3 128 s2", c=64, size=(56, 56), oc=128, stride=2)),
    ("conv2d", ShapeRow("resnet18 3x3 256", c=256, size=(14, 14), oc=256)),
    ("conv2d", ShapeRow("mobilenet pw 128->128", c=128, size=(28, 28), oc=128, k=1, padding=0)),
    ("conv2d", ShapeRow("mobilenet pw 512->512", c=512, size=(14, 14), oc=512, k=1, padding=0)),
    ("conv2d", ShapeRow("mobilenet dw 128", c=128, size=(56, 56), oc=128, groups=128)),
    ("conv2d", ShapeRow("mobilenet dw 256 s2", c=256, size=(28, 28), oc=256, groups=256, stride=2)),
    ("conv2d", ShapeRow("grouped g4 128", c=128, size=(28, 28), oc=128, groups=4)),
    ("conv2d", ShapeRow("dilated d2 64", c=64, size=(56, 56), oc=64, padding=2, dilation=2)),
    ("shuffled_group_conv2d", ShapeRow("shufflenet g3 pw 240", c=240, size=(28, 28), oc=240, k=1, padding=0,
                                       groups=3)),
    ("depthwise_separable_conv2d", ShapeRow("mobilenet block 128", c=128, size=(28, 28), oc=128)),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write one JSON record per row")
    args = ap.parse_args()
    console = Console(width=200)
    console.print(f"target {host().json}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    table = Table("op", "layer", "compile s", "schedule", "tvmconv ms", "PyTorch ms", "ratio", "ok")
    records = []
    for name, row in LAYERS:
        r = check_variant(name, row)
        records.append({"layer": row.label, **r.to_dict()})
        table.add_row(name, row.label, f"{r.compile_s:.2f}", r.schedule, f"{r.tvmconv_s * 1e3:.3f}",
                      f"{r.reference_s * 1e3:.3f}", f"{r.ratio:.2f}x", "yes" if r.ok else "NO")
    console.print(table)
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
