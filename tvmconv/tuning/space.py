"""The search's start and space: workloads, plan variants (other blockings of the default
schedule), the sketch design space, its id, and the spaces found exhausted.

* The workload of a spec is the tensor expression its default schedule is written for
  (``prim_func(spec, plan)``). Before the search starts, the default schedule is measured under
  the spec's plan and every plan candidate (other blockings) and committed to the log like any
  trial, so a tuned result is never slower than the default.
* The search tunes the fastest of those blockings. Its design space is the hand-written schedule
  written as a sketch (``sketch_space``: tile sizes and unrolling as sampled decisions), seeded
  with the sketch at the plan's own tiles, so MetaSchedule's evolutionary search and XGBoost cost
  model move around the default instead of starting from the generic space.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .intrinsics import light_intrinsics  # first: it must run before MetaSchedule is imported

light_intrinsics()  # (a no-op once done: see intrinsics)

import tvm  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402

from ..spec import Spec  # noqa: E402
from ..variants import DepthwiseSeparableSpec  # noqa: E402
from ..backends.target import TargetInfo  # noqa: E402
from ..backends.llvm_schedules import schedule_into  # noqa: E402
from ..variants.compute import Plan, prim_func  # noqa: E402
from .log import TuningLog, dumps, to_json, trace_json  # noqa: E402

log = logging.getLogger("tvmconv")


# -- a tuning run --------------------------------------------------------------------------------
@dataclass
class Workload:
    spec: Spec
    weight: float
    plan: Plan
    mod: tvm.IRModule
    default_trace: object
    shash: str = ""
    search_plan: Plan | None = None  # the blocking the search tunes (the fastest measured one)...
    search_mod: tvm.IRModule | None = None  # ... and its compute
    done_before: int = 0
    trials: int = 0
    failed: int = 0
    best_s: float | None = None
    exhausted: bool = False  # the search found nothing left to measure before the budget was spent
    space: str = ""  # its design space (space_id)
    seeds: tuple = ()  # plans of the nearest records, moved to this target (seeds.seed_plans)


def workload(spec: Spec, plan: Plan) -> tvm.IRModule:
    return tvm.IRModule({"main": prim_func(spec, plan)})


def prepare(specs: list[tuple[Spec, float]], target: TargetInfo, seeds: list | None = None) -> list[Workload]:
    """The workloads of ``specs`` (``(spec, occurrences)``); ``seeds``: per spec, the plans of the
    nearest records (``seeds.seed_plans``) its plan phase measures too."""
    out = []
    for k, (spec, weight) in enumerate(specs):
        sch, plan = target.backend.default_schedule(spec)
        out.append(Workload(spec=spec, weight=weight, plan=plan, mod=workload(spec, plan),
                            default_trace=trace_json(sch), seeds=tuple(seeds[k]) if seeds else ()))
    return out


def plan_variants(w: Workload, target: TargetInfo) -> list[tuple[Plan, tvm.IRModule, Schedule]]:
    """The default schedule under each of ``plan_candidates`` and ``w.seeds`` (skipping those
    whose specific schedule does not apply), and the backend's ``template_schedules`` (CUDA's
    templates): ``(plan, workload module, scheduled)``, what the plan phase measures before the
    search."""
    backend = target.backend
    out = [(plan, workload(w.spec, plan), sch) for plan, sch in backend.template_schedules(w.spec)]
    plans = list(backend.plan_candidates(w.spec))
    plans += [p for p in w.seeds if p != w.plan and p not in plans]  # the nearest records' plans
    for plan in plans:
        try:
            sch, used = backend.default_schedule(w.spec, plan)
        except Exception:  # noqa: BLE001 - a blocking the compute cannot take
            continue
        if used == plan:
            out.append((plan, workload(w.spec, plan), sch))
    return out


def sketch_space(spec: Spec, plan: Plan, target: TargetInfo):
    """MetaSchedule's design space for ``spec`` under ``plan``: the default schedule written as a
    sketch (``schedule_into(sample=True)``). Its register-tile and row splits are
    ``sample_perfect_tile`` decisions starting at the plan's values, the tile may stack output
    rows, an explicit-unroll depth is sampled, and blocked convolutions with kernel taps get a
    second space with the taps outermost in the reduction. The evolutionary search mutates those
    decisions under the XGBoost cost model. (MetaSchedule's generic space, post-order-apply, was
    searched for 2,000 trials on mobilenet_v1 and never beat the hand-written schedule.)"""
    lanes, cores = target.lanes(spec.dtype), target.num_cores
    orders = [True]
    if plan.kind == "ocvec" and not isinstance(spec, DepthwiseSeparableSpec) and math.prod(getattr(spec, "kernel", (1,))) > 1:
        orders.append(False)

    def spaces(sch: Schedule) -> list[Schedule]:
        out = []
        for first in orders:
            s = sch.copy()
            try:
                schedule_into(s, spec, plan, lanes, cores, sample=True, reduce_first=first)
            except Exception as exc:  # noqa: BLE001 - a variant of the sketch this compute cannot take
                if first:
                    raise
                log.debug("tvmconv: sketch with kernel taps outermost skipped for %s: %s", spec.name, exc)
                continue
            out.append(s)
        return out

    return ms.space_generator.ScheduleFn(
        spaces, sch_rules=[],
        postprocs=[ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll()],
        mutator_probs={ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateUnroll(): 0.1})


def design_space(spec: Spec, plan: Plan, target: TargetInfo):
    """The search's design space: on a CPU the hand-written schedule as a sketch (``sketch_space``);
    on CUDA MetaSchedule's own space for the target (post-order-apply of its CUDA rules:
    multi-level tiling with shared-memory staging and thread binding, cross-thread reduction,
    auto-inlining, unrolling), searched from the plain compute."""
    if target.backend.searches_sketch:
        return sketch_space(spec, plan, target)
    return ms.space_generator.PostOrderApply()


def space_id(w: Workload, target: TargetInfo, db: TuningLog) -> str:
    """Identifies the search of ``w``: its workload and the sketch traces of its design space (a
    change to the sketch makes a new space, which is searched even where the old one was
    exhausted)."""
    from ..runtime import cache

    ctx = ms.TuneContext(mod=w.search_mod, target=target.tvm(),
                         space_generator=design_space(w.spec, w.search_plan, target), task_name=w.spec.name)
    spaces = [to_json(sch.trace.as_json(remove_postproc=True)) for sch in ctx.generate_design_space()]
    return cache.digest([db.shash(w.search_mod), spaces])[:24]


def known_exhausted(w: Workload, target: TargetInfo, db: TuningLog) -> bool:
    """Whether the log records ``w``'s search space as exhausted (without tuning: ``trials=0``)."""
    w.search_plan, w.search_mod, _ = search_start(w, target, db)
    return space_id(w, target, db) in db.exhausted()


def sketch_seed(spec: Spec, plan: Plan, mod: tvm.IRModule, target: TargetInfo) -> Schedule:
    """The sketch with its first decisions (the plan's tiles, one row, no extra unrolling) and
    MetaSchedule's postprocessing: the default schedule as a record the search can mutate (the
    default's own trace samples nothing, so the evolutionary search cannot move from it)."""
    ctx = ms.TuneContext(mod=mod, target=target.tvm(), space_generator=sketch_space(spec, plan, target),
                         task_name=spec.name)
    sch = ctx.generate_design_space()[0]
    sch.enter_postproc()
    for p in ctx.space_generator.postprocs:
        if not p.apply(sch):
            raise ValueError(f"{p} rejected the sketch of {spec.name}")
    return sch


def search_start(w: Workload, target: TargetInfo, db: TuningLog, variants=None):
    """``(plan, module, searched)``: the blocking the search tunes (the fastest default schedule
    the log holds among ``w``'s plan and its candidates), its workload module, and how many
    records of that module are search trials (not a plan candidate's default schedule)."""
    if variants is None:
        variants = plan_variants(w, target)
    cands = [(w.plan, w.mod, w.default_trace)] + [(p, mod, trace_json(sch)) for p, mod, sch in variants]
    defaults = {dumps(t) for _, _, t in cands}
    best = None
    for plan, mod, trace in cands:
        secs = [s for s, t in db.records.get(db.shash(mod), ()) if s is not None and t == trace]
        if secs and (best is None or min(secs) < best[0]):
            best = (min(secs), plan, mod)
    plan, mod = (best[1], best[2]) if best else (w.plan, w.mod)
    searched = sum(1 for _, t in db.records.get(db.shash(mod), ()) if dumps(t) not in defaults)
    return plan, mod, searched

