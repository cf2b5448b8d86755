"""The main job on an embedded default: every variant on a default shape, checked against its
PyTorch (or NumPy) reference and timed against it, one table row per variant."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from ..backends import timing
from ..runtime import build
from ..variants.registry import DEFAULT_ROW, VARIANTS, ShapeRow


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
