"""Seeds from the nearest records: a workload's plan phase also measures the plans of the records
(shipped and in the user cache, for this profile or one it is ``compatible`` with) of the same
variant at the nearest shape, moved to this target's vector width and register file
(``blocking.transfer_plan``). A record tuned for a neighbouring shape often blocks well here too,
and measuring its plan costs one trial."""

from __future__ import annotations

import math
from pathlib import Path

from ..backends.blocking import transfer_plan
from ..backends.target import TargetInfo, profiles
from ..runtime import cache
from ..runtime.record import ScheduleRecord
from ..spec import Spec
from ..variants.compute import Plan, plan_from_dict, plan_to_dict

SEEDS = 2  # plans per workload: the nearest records' (each one trial of the plan phase)


def distance(a: dict, b: dict) -> float | None:
    """How far apart two specs' ``to_dict``s are: the sum over their numeric fields of
    ``|log2((x + 1) / (y + 1))|`` (a doubled channel count adds about 1), 1 per other field that
    differs; None where they are not comparable (another variant or dtype)."""
    if a.get("variant") != b.get("variant") or a.get("dtype") != b.get("dtype"):
        return None
    d = 0.0
    for k in set(a) | set(b):
        x, y = a.get(k), b.get(k)
        xs, ys = _ints(x), _ints(y)
        if xs is not None and ys is not None and len(xs) == len(ys):
            d += sum(abs(math.log2((p + 1) / (q + 1))) for p, q in zip(xs, ys))
        elif x != y:
            d += 1.0
    return d


def _ints(v) -> list[int] | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return [v]
    if isinstance(v, (list, tuple)) and all(isinstance(e, int) and not isinstance(e, bool) for e in v):
        return list(v)
    return None


def records(target: TargetInfo, root: Path | None = None) -> list[tuple[ScheduleRecord, Path]]:
    """The shipped records and those under ``root`` (default: the user cache) of ``target``'s
    profile and the profiles it is compatible with."""
    prof = profiles().get(target.profile)
    names = [target.profile, *(prof.compatible if prof else ())]
    roots = [cache.shipped_root()] + ([Path(root)] if root is not None else [cache.user_root()])
    out, seen = [], set()
    for r in roots:
        for name in names:
            for rec, path in cache.list_records(r, name):
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    out.append((rec, path))
    return out


def nearest_records(spec: Spec, target: TargetInfo, root: Path | None = None, n: int = SEEDS,
                    pool: list | None = None) -> list[ScheduleRecord]:
    """Up to ``n`` records of ``spec``'s variant nearest its shape (``distance``) among
    ``records(target, root)`` (or ``pool``, what it returned); nearest first."""
    want = spec.to_dict()
    found = []
    for rec, path in (records(target, root) if pool is None else pool):
        d = distance(want, rec.spec)
        if d is not None:
            found.append((d, str(path), rec))
    found.sort(key=lambda e: (e[0], e[1]))
    return [rec for _, _, rec in found[:n]]


def seed_plans(spec: Spec, target: TargetInfo, root: Path | None = None, n: int = SEEDS,
               pool: list | None = None) -> list[Plan]:
    """The plans of ``nearest_records``, transferred from their profile's vector width to
    ``target``'s (``transfer_plan``); distinct, nearest first. A record of an unknown profile or
    a plan that does not parse is skipped."""
    known = profiles()
    to_lanes = target.lanes(spec.dtype)
    regs = target.facts.vector_registers or None
    out: list[Plan] = []
    for rec in nearest_records(spec, target, root, n, pool):
        prof = known.get(rec.profile or "")
        if prof is None:
            continue
        try:
            plan = plan_from_dict(rec.plan)
            moved = transfer_plan(plan, spec, prof.target_info(target.num_cores).lanes(spec.dtype), to_lanes, regs)
        except Exception:  # noqa: BLE001 - a record of an older plan format
            continue
        if moved not in out:
            out.append(moved)
    return out


def remembered(log_dir: Path, spec: Spec, target: TargetInfo, plans: list[Plan]) -> list[Plan]:
    """``plans`` and every seed plan an earlier run of ``log_dir`` measured for ``spec``
    (``seeds.json`` beside the log, ``remember``): the nearest records change as records are
    written, and a plan measured once stays a candidate (its trials in the log are counted and
    distilled, with ``trials=0`` too). Earlier plans first."""
    known = cache.read_json(Path(log_dir) / "seeds.json") or {}
    old = []
    for d in known.get(cache.schedule_key(spec, target), []) if isinstance(known, dict) else []:
        try:
            old.append(plan_from_dict(d))
        except Exception:  # noqa: BLE001 - a plan of an older format
            continue
    return old + [p for p in plans if p not in old]


def remember(log_dir: Path, target: TargetInfo, seeds: list[tuple[Spec, list[Plan]]]) -> None:
    """Add each spec's seed plans to ``seeds.json`` beside the log (after a run measured them).
    A cache that refuses the write keeps the log's trials and loses only this note."""
    path = Path(log_dir) / "seeds.json"
    try:
        with cache.lock(path):
            known = cache.read_json(path) or {}
            changed = False
            for spec, plans in seeds:
                key = cache.schedule_key(spec, target)
                old = known.get(key, [])
                new = old + [d for d in map(plan_to_dict, plans) if d not in old]
                if len(new) > len(old):
                    known[key], changed = new, True
            if changed:
                cache.write_json(path, known)
    except OSError:
        pass
