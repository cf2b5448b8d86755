"""``tvmconv`` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, help="tvmconv: convolution variants compiled and scheduled by TVM.")
console = Console(width=None if Console().is_terminal else 200)


@app.command()
def variants():
    """List the registered convolution variants."""
    from .registry import VARIANTS

    table = Table("variant", "kind", "note")
    for v in VARIANTS.values():
        table.add_row(v.name, v.kind, v.note)
    console.print(table)


@app.command()
def check(
    variant: Optional[list[str]] = typer.Option(None, "--variant", "-v", help="Only these variants (repeatable)."),
    no_time: bool = typer.Option(False, "--no-time", help="Check correctness only."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write one JSON record per variant here."),
):
    """Run every variant on the embedded default shape (1x64x56x56, 3x3, 64 out), check it against
    PyTorch and time both, interleaved. Exits 1 if any result differs from its reference."""
    import torch

    from .check import check_variant
    from .registry import DEFAULT_ROW, VARIANTS
    from .target import host

    names = variant or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}", param_hint="--variant")
    tgt = host()
    console.print(f"target {tgt.json}  torch threads {torch.get_num_threads()}  default shape "
                  f"n{DEFAULT_ROW.n} c{DEFAULT_ROW.c} {DEFAULT_ROW.size[0]}x{DEFAULT_ROW.size[1]} "
                  f"k{DEFAULT_ROW.k} -> {DEFAULT_ROW.oc}")
    table = Table("variant", "workload", "max |err|", "ok", "compile s", "schedule", "tvmconv ms", "PyTorch ms",
                  "ratio")
    results = []
    with console.status("compiling and checking...") as status:
        for name in names:
            status.update(f"{name}...")
            r = check_variant(name, time_it=not no_time)
            results.append(r)
            fmt = (lambda s: "-" if math.isnan(s) else f"{s * 1e3:.3f}")
            table.add_row(r.variant, r.workload, f"{r.max_abs_err:.1e}", "yes" if r.ok else "[red]NO[/red]",
                          f"{r.compile_s:.2f}", r.schedule, fmt(r.tvmconv_s), fmt(r.reference_s),
                          "-" if math.isnan(r.ratio) else f"{r.ratio:.2f}x")
    console.print(table)
    if json_path:
        json_path.write_text("\n".join(json.dumps(r.to_dict()) for r in results) + "\n")
    bad = [r.variant for r in results if not r.ok]
    if bad:
        console.print(f"[red]{len(bad)} variant(s) differ from their reference: {bad}[/red]")
        raise typer.Exit(1)
    console.print(f"all {len(results)} variants match their references")


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
