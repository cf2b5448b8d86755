"""``tvmconv calibrate``: decide, ahead of the first calls, which path each workload's op takes on
this machine -- its tvmconv kernel or the vendor path -- timing both as ``tvmconv bench`` does
(interleaved rounds, after warm-up) and storing the choices for this machine in the user cache
(runtime/dispatch.py), where the ops read them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from rich.table import Table

from .. import functional as TF
from ..backends import timing
from ..backends.machine import machine_of
from ..backends.target import resolve
from ..runtime import cache, dispatch
from ..suites import cases
from .cachecmd import confidence
from .options import batches
from .terminal import EXIT_FAILED, console, fail, print_json


def calibrate(what, target=None, *, rounds: int = dispatch.CALLS, progress=None, batch=None,
              redo: bool = False) -> list[dict]:
    """Time each workload's kernel and vendor path on this machine (``dispatch.measure``: warm,
    interleaved, more rounds while they may still decide) and store the choice (``dispatch.settle``).
    ``what``: anything ``suites.workloads.workloads`` takes, or a list of ``(spec, count)``. A
    workload already decided on this machine is kept unless ``redo`` (one within the noise is
    measured again). One row per workload: ``workload``, ``tvmconv_s``, ``vendor_s``, ``choice``,
    ``decided``, ``margin`` (the vendor's best time over the kernel's), ``agree``/``rounds`` (the
    paired rounds that back it), ``source``, ``seconds`` (what it took, compiling included).
    ``batch``: each workload at each of these batch sizes. Raises ValueError for a target that does
    not run here."""
    from ..suites.workloads import workloads

    tgt = resolve(target)
    why_not = tgt.backend.unavailable("calibrate")
    if why_not:
        raise ValueError(why_not)
    table = workloads(what, batch=batch)  # (a list of (spec, count) comes back as it is)
    rows = []
    for i, (spec, count) in enumerate(table):
        if progress:
            progress(i, len(table), spec)
        t0 = time.perf_counter()
        row = {"workload": spec.name, "count": count, "target": tgt.profile, "tvmconv_s": None, "vendor_s": None,
               "decided": True, "margin": None, "agree": None, "rounds": None}
        try:
            case = cases.on_device(cases.case_for(spec, count), tgt)
        except ValueError:  # no vendor path: the op always runs its kernel
            rows.append({**row, "choice": "tvmconv", "source": dispatch.NO_VENDOR,
                         "seconds": time.perf_counter() - t0})
            continue
        with torch.no_grad(), TF.no_dispatch(), TF.capture_kernels() as kernels:
            case.op(*case.args, **case.kwargs, target=tgt)
        kern = kernels[-1]
        if not redo and kern.dispatch != dispatch.UNDECIDED:  # decided here before, or by its record here
            entry = dispatch.table(machine_of(tgt)).get(cache.schedule_key(spec, tgt)) or {}
            rows.append({**row, **{k: entry.get(k) for k in ("tvmconv_s", "vendor_s", "margin", "agree", "rounds")},
                         "choice": kern.dispatch, "source": kern.dispatch_source,
                         "seconds": time.perf_counter() - t0})
            continue
        a, b, verdict = dispatch.measure(lambda k: cases.time_case(case, tgt, tgt.num_cores, rounds=k)[:2], rounds)
        choice = dispatch.settle(kern, a, b, "calibrate")
        rows.append({**row, "tvmconv_s": timing.median(a), "vendor_s": timing.median(b), "choice": choice,
                     "decided": verdict.decided, "margin": verdict.margin, "agree": verdict.agree,
                     "rounds": verdict.rounds, "source": kern.dispatch_source, "seconds": time.perf_counter() - t0})
    return rows


def command(target, suite, model, spec, batch, *, rounds: int, redo: bool, as_json: bool) -> None:
    """``tvmconv calibrate``'s body: the workloads of exactly one of ``suite``, ``model`` (a
    ``tvmconv.models`` name or a .pt2 path) or ``spec`` (JSON) calibrated on this machine, and the
    choices printed as a table, or (``as_json``) as JSON rows."""
    from ..models import MODELS
    from ..suites.workloads import network_workloads
    from ..spec import spec_from_dict

    given = [x for x in (suite, model, spec) if x is not None]
    if len(given) != 1:
        fail("give exactly one of --suite, --model or --spec")
    sizes = batches(batch)
    t0 = time.perf_counter()
    try:
        tgt = resolve(target)
        if spec is not None:
            what = spec_from_dict(json.loads(spec))
        elif model is not None and model in MODELS:
            what, sizes = network_workloads(model, tgt, sizes), None  # (run at each batch size)
        else:
            what = suite if suite is not None else Path(model)
        with console.status("calibrating...") as status:
            rows = calibrate(what, tgt, rounds=rounds, batch=sizes, redo=redo,
                             progress=lambda i, n, s: status.update(f"[{i + 1}/{n}] {s.name}"))
    except (ValueError, TypeError) as exc:  # (json.JSONDecodeError is a ValueError)
        fail(str(exc))
    except OSError as exc:
        fail(str(exc), EXIT_FAILED)
    took = time.perf_counter() - t0
    if as_json:
        return print_json(rows)
    fmt = (lambda s: "-" if s is None else f"{s * 1e3:.3f}")
    table = Table("workload", "tvmconv ms", "vendor ms", "choice", "margin", "confidence", "source", "s")
    for r in rows:
        table.add_row(r["workload"][:70], fmt(r["tvmconv_s"]), fmt(r["vendor_s"]), r["choice"],
                      "-" if r["margin"] is None else f"{r['margin']:.2f}x", confidence(r), r["source"],
                      f"{r['seconds']:.1f}")
    console.print(table)
    console.print(f"{machine_of(tgt).description}: {len(rows)} workloads in {took:.1f} s "
                  f"({took / max(1, len(rows)):.1f} s per workload); choices stored in the user cache")
