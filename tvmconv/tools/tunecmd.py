"""``tvmconv tune``'s body: what it tunes (``--untuned``: the workloads this machine ran untuned),
the [tune] extra it needs, and the table of results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .options import Workloads
from .terminal import EXIT_FAILED, EXIT_INTERRUPTED, console, fail

# What MetaSchedule's search needs beyond TVM itself (pyproject's [tune] extra)
_TUNE_EXTRA = ("xgboost", "psutil", "cloudpickle", "tornado")


def tune(w: Workloads, target: Optional[str], untuned: bool, json_path: Optional[Path], **settings) -> None:
    """Tune the workloads ``w`` names (or, with ``untuned``, those listed as run untuned for
    ``target``), print the results and write them to ``json_path``; ``settings``: the rest of
    ``tuning.api.tune``'s keywords."""
    from ..tuning.api import results_json
    from ..tuning.api import tune as run_tune

    w.exactly_one(untuned=untuned)
    sizes = w.batches()
    need_tune_extra()
    try:
        if untuned:
            what = untuned_workloads(target)
            if not what:
                return
        else:
            what = w.what(target)
        results = run_tune(what, target=target, input_shape=w.input_dims(), batch=sizes, **settings)
    except (ValueError, ConnectionError) as exc:
        fail(str(exc))
    except OSError as exc:  # a full disk, a read-only cache (TuningLogError names the file and the cause)
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every measured trial is in the log and the best schedules so far "
                      "are in the cache; run the same command again to resume[/yellow]")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    table = Table("workload", "trials", "best ms", "GFLOP/s", "default ms", "speed-up", "schedule", "dispatch")
    for r in results:
        fmt = (lambda s: "-" if s is None else f"{s * 1e3:.4f}")
        table.add_row(r.spec.name, f"{r.trials_total}" + (" (all)" if r.exhausted else ""), fmt(r.best_s),
                      "-" if r.gflops is None else f"{r.gflops:.1f}", fmt(r.default_s),
                      "-" if not (r.best_s and r.default_s) else f"{r.default_s / r.best_s:.2f}x", r.source,
                      r.dispatch or "-")
    console.print(table)
    if json_path:
        json_path.write_text(results_json(results) + "\n")


def need_tune_extra() -> None:
    """Fail, naming the install command, unless the [tune] extra's modules are installed."""
    import importlib.util

    missing = [m for m in _TUNE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"tvmconv tune needs the [tune] extra ({', '.join(missing)} missing): pip install 'tvmconv[tune]'",
             EXIT_FAILED)


def untuned_workloads(target: Optional[str]) -> list:
    """The workloads ``tvmconv tune --untuned`` tunes: those listed as run untuned on ``target``'s
    profile that still have no tuned record (empty: said so)."""
    from ..backends.target import resolve
    from ..runtime import untuned

    profile = resolve(target).profile
    if profile in untuned.UNNAMED:
        raise ValueError(f"--untuned needs a target profile (see `tvmconv targets`); {target or 'this host'!r} "
                         f"resolves to an unnamed '{profile}' target")
    items = untuned.pending(profile)
    if not items:
        console.print(f"no untuned workloads are listed for {profile}: nothing to tune")
    return items
