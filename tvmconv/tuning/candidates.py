"""Distilling the log into schedule records: the fastest distinct schedules of a workload."""

from __future__ import annotations

import time

from ..backends.target import TargetInfo
from ..runtime.cache import new_record
from ..runtime.record import ScheduleRecord
from ..variants.compute import plan_to_dict
from .log import TuningLog, dumps, trace_json
from .space import Workload, plan_variants


def candidates(w: Workload, db: TuningLog, target: TargetInfo, top: int) -> list[ScheduleRecord]:
    """The ``top`` fastest distinct schedules of ``w`` in ``db`` by their tuning-time measurement
    (the search's, or the default schedule under any of the measured plan candidates), fastest
    first, and after them the default schedule if it is not among them: each a small, diffable
    schedule record whose ``run_secs`` is that measurement (the best of its repeats, in its best
    trial). On a noisy machine the minimum over hundreds of trials favours lucky ones, so the
    tuner times these again through the op before choosing (``api.validate``)."""
    shash = w.shash or db.shash(w.mod)
    plans = {shash: w.plan}  # workload -> a plan whose compute it is (plans may share one)
    variant_plans = {}  # the trace of each plan candidate -> its plan (the record names it exactly)
    for plan, mod, sch in plan_variants(w, target):
        plans.setdefault(db.shash(mod), plan)
        variant_plans[dumps(trace_json(sch))] = plan
    pool = []
    for h, plan in plans.items():
        for s, t in db.records.get(h, []):
            found = variant_plans.get(dumps(t))
            source = "default" if t == w.default_trace else "plan-search" if found else "metaschedule"
            pool.append((s, t, found or plan, source))
    best: dict[str, tuple] = {}  # (plan, trace) -> its fastest measurement
    for e in pool:
        if e[0] is not None:
            k = dumps([plan_to_dict(e[2]), e[1]])
            if k not in best or e[0] < best[k][0]:
                best[k] = e
    ranked = sorted(best.values(), key=lambda e: e[0])
    chosen = ranked[:top] + [e for e in ranked[top:] if e[3] == "default"][:1]
    entries = db.records.get(shash, [])
    default = [s for s, t in entries if s is not None and t == w.default_trace]
    return [new_record(w.spec, target, plan=plan_to_dict(plan), trace=trace, run_secs=best_s, source=source,
                       gflops=w.spec.flops / best_s / 1e9, default_secs=min(default) if default else None,
                       trials=len(pool), num_cores=target.num_cores, workload_shash=shash,
                       tuned_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            for best_s, trace, plan, source in chosen]
