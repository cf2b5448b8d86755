"""``tvmconv cache``'s bodies: list every schedule record and dispatch choice, show a record,
clear the user cache (never outside it)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .terminal import console, fail, print_json

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no separators, no "..": a folder name


def list_records(target: Optional[str], as_json: bool) -> None:
    """Every tuned schedule record, shipped and user, and every choice calibrated here for a
    workload with no record: a table, or (``as_json``) rows with the same keys."""
    from ..runtime import cache as C

    if target is not None and not _PROFILE_NAME.match(target):  # it becomes a glob pattern
        fail(f"--target must be a profile name (see `tvmconv targets`), got {target!r}")
    from ..runtime import dispatch as CH

    table = Table("profile", "workload", "GFLOP/s", "ms", "trials", "schedule", "dispatch", "dispatch source",
                  "where")
    shipped = C.shipped_root().resolve()
    rows = []
    listed = set()
    for rec, path in C.list_records(profile=target):
        where = "shipped" if path.resolve().is_relative_to(shipped) else "user"
        profile, name = rec.profile or path.parent.name, rec.name or path.stem
        choice, source, entry = CH.record_choice(rec)
        listed.add((profile, rec.key))
        rows.append(_row(profile, name, choice, source, entry, where, rec, path))
        table.add_row(*_cells(rows[-1], entry or rec.dispatch))
    for profile, key, entry in CH.calibrated(profile=target):  # choices of workloads listed with no record
        if (profile, key) in listed:
            continue
        rows.append(_row(profile, entry.get("workload", key), entry["choice"], CH.CALIBRATED, entry,
                         "user (dispatch)", schedule=entry.get("schedule")))
        table.add_row(*_cells(rows[-1], entry))
    if as_json:
        return print_json(rows)
    console.print(table)


def _row(profile: str, workload: str, choice: str | None, source: str, entry: dict | None, where: str,
         rec=None, path: Path | None = None, schedule: str | None = None) -> dict:
    """One row of ``cache list --json``: a tuned record's (``rec`` at ``path``) or, with neither, a
    workload only calibrated here (its record fields None; ``schedule``: the one calibrated), so
    that every row has the same keys."""
    return {"profile": profile, "workload": workload, "gflops": rec.gflops if rec else None,
            "run_secs": rec.run_secs if rec else None, "trials": rec.trials if rec else None,
            "schedule": rec.source if rec else schedule,
            "dispatch": rec.dispatch.to_dict() if rec and rec.dispatch else None, "choice": choice,
            "dispatch_source": source, "calibration": entry, "where": where,
            "path": str(path) if path is not None else None}


def _cells(row: dict, d) -> list[str]:
    """The table's cells of a ``_row`` (``d``: what ``_dispatch_label`` reads the times from)."""
    rec = row["path"] is not None
    return [row["profile"], str(row["workload"]), f"{row['gflops'] or 0:.1f}" if rec else "",
            f"{row['run_secs'] * 1e3:.4f}" if rec else "", "" if row["trials"] is None else str(row["trials"]),
            row["schedule"] or "", _dispatch_label(row["choice"], d), row["dispatch_source"], row["where"]]


def _dispatch_label(choice: str | None, d) -> str:
    """A workload's dispatch choice and, where known (``d``: a record's ``Dispatch`` or a stored
    choice), the vendor's time over ours and the paired rounds that back it."""
    if choice is None:
        return "-"
    fields = d if isinstance(d, dict) else {**dict(getattr(d, "extra", None) or {}),
                                            "vendor_s": getattr(d, "vendor_s", None),
                                            "tvmconv_s": getattr(d, "tvmconv_s", None)}
    v, t = fields.get("vendor_s"), fields.get("tvmconv_s")
    parts = ([f"{v / t:.2f}x"] if v is not None and t else []) + [c for c in [confidence(fields)] if c != "-"]
    return f"{choice} ({', '.join(parts)})" if parts else choice


def confidence(r: dict) -> str:
    """``7/7 rounds``, ``within noise (5/7 rounds)``, or "-" where unknown (no vendor, written before)."""
    if r.get("agree") is None or r.get("rounds") is None:
        return "-" if r.get("decided", True) is not False else "within noise"
    rounds = f"{r['agree']}/{r['rounds']} rounds"
    return rounds if r.get("decided", True) is not False else f"within noise ({rounds})"


def show(name: str) -> None:
    """Print the schedule record(s) whose workload name (or file name) starts with ``name``."""
    from ..runtime import cache as C

    found = [(r, p) for r, p in C.list_records() if (r.name or "").startswith(name) or p.stem.startswith(name)]
    if not found:
        fail(f"no schedule record matches {name!r} (see `tvmconv cache list`)")
    for rec, path in found:
        console.print(f"[bold]{path}[/bold]")
        brief = rec.to_dict()
        brief["trace"] = f"<{len(rec.trace[0]) if rec.trace else 0} schedule instructions>"
        console.print_json(json.dumps(brief))


def clear(target: Optional[str], kernels_only: bool, yes: bool) -> None:
    """Delete the user cache's compiled kernels (and, unless ``kernels_only``, its schedules and
    tuning logs), only ``target``'s profile where given; asks first unless ``yes``."""
    from ..runtime import cache as C

    root = C.user_root()
    parts = ["kernels"] if kernels_only else ["kernels", "schedules", "tuning_logs"]
    dirs = [root / p for p in parts]
    if target is not None:
        dirs = _profile_dirs(dirs, target)
    dirs = [d for d in dirs if d.exists()]
    outside = [d for d in dirs if d.is_symlink() or not d.resolve().is_relative_to(root.resolve())]
    if outside:  # a symlinked folder: rmtree would delete what lies elsewhere
        fail(f"{', '.join(map(str, outside))} lies outside the cache {root}; not deleting it")
    if not dirs:
        console.print("nothing to clear")
        return
    if not yes:
        typer.confirm(f"delete {', '.join(map(str, dirs))}?", abort=True)
    for d in dirs:
        shutil.rmtree(d)
    console.print(f"cleared {len(dirs)} folder(s) under {root}")


def _profile_dirs(dirs: list[Path], target: str) -> list[Path]:
    """``dirs``' children named ``target``: it must look like a profile name (no separators, no
    ``..``) and be a known profile or a folder there, so ``--target ../x`` never leaves the cache."""
    from ..backends.target import profiles

    known = _PROFILE_NAME.match(target) and (target in profiles() or any((d / target).is_dir() for d in dirs))
    if not known:
        fail(f"--target must be a profile name (see `tvmconv targets`) or a folder in the cache, got {target!r}")
    return [d / target for d in dirs]
