"""The main job on an embedded default: every variant on a default shape, checked against its
PyTorch (or NumPy) reference and timed against it, one table row per variant."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import typer
from rich.table import Table

from ..backends import timing
from ..backends.target import host
from ..runtime import build
from ..variants.registry import DEFAULT_ROW, VARIANTS, ShapeRow
from .terminal import console


@dataclass
class CheckResult:
    variant: str
    workload: str
    max_abs_err: float
    ok: bool
    compile_s: float
    schedule: str
    tvmconv_s: float
    reference_s: float
    ratio: float  # tvmconv_s / reference_s

    def to_dict(self):
        return asdict(self)


def check_variant(name: str, row: ShapeRow = DEFAULT_ROW, *, time_it: bool = True, atol: float = 1e-3) -> CheckResult:
    v = VARIANTS[name]
    case = v.make_case(row, torch.Generator().manual_seed(0))
    n_before = len(build._cache)
    t0 = time.perf_counter()
    got = v.run(case)
    first_call = time.perf_counter() - t0
    want = v.run_reference(case)
    err = (got - want).abs().max().item()
    tol = atol * max(1.0, want.abs().max().item())
    kern = next(reversed(build._cache.values())) if len(build._cache) > n_before else None
    t_tvm = t_ref = float("nan")
    if time_it and name != "deform_conv2d":
        a, b = timing.interleaved(lambda: v.run(case), lambda: v.run_reference(case))
        t_tvm, t_ref = timing.median(a), timing.median(b)
    elif time_it:  # the NumPy reference is no vendor path worth timing
        a, _ = timing.interleaved(lambda: v.run(case), lambda: None)
        t_tvm = timing.median(a)
    return CheckResult(
        variant=name,
        workload=kern.spec.name if kern else "(cached)",
        max_abs_err=err,
        ok=bool(err <= tol),
        compile_s=kern.compile_seconds if kern else first_call,
        schedule=f"{kern.schedule_source}/{kern.plan.kind}" if kern else "",
        tvmconv_s=t_tvm,
        reference_s=t_ref,
        ratio=t_tvm / t_ref if t_ref == t_ref and t_ref > 0 else float("nan"),
    )


def report(names: list[str] | None, *, time_it: bool = True, json_path: Path | None = None) -> list[str]:
    """``tvmconv check``'s body: check (and, ``time_it``, time) the variants ``names`` (default:
    all), print a table row each and write ``json_path``; returns the variants whose result
    differs from their reference. Raises ``typer.BadParameter`` for an unknown name."""
    names = names or list(VARIANTS)
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
            r = check_variant(name, time_it=time_it)
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
    else:
        console.print(f"all {len(results)} variants match their references")
    return bad
