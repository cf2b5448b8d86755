"""The tuning loop: the default schedules measured first, the search seeded, and MetaSchedule's
tasks run under tvmconv's task scheduler (``WeightedScheduler``) with a progress callback."""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict

from .intrinsics import light_intrinsics, target_intrinsics  # first: it must run before MetaSchedule is imported

light_intrinsics()  # (a no-op once done: see intrinsics)

import tvm  # noqa: E402
from tvm.ir.utils import derived_object  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402
from tvm.s_tir.schedule import Trace  # noqa: E402

from ..backends.base import supported  # noqa: E402
from ..backends.target import TargetInfo  # noqa: E402
from .log import TuningLog, best_secs, trace_json  # noqa: E402
from .measure import Measure, check_tracker, make_builder, make_runner, measure_batch  # noqa: E402
from .budget import heaviest_first  # noqa: E402
from .space import Workload, design_space, plan_variants, search_start, sketch_seed, space_id  # noqa: E402

log = logging.getLogger("tvmconv")


def _unmeasured(w: Workload, variants, db: TuningLog) -> list[tuple[str, tvm.IRModule, Schedule, int]]:
    """What the log lacks of ``w``'s start: its default schedule (on a first run) and the default
    schedule under the other plan candidates (each once per log: a candidate whose trace the log
    holds is skipped; ``variants`` is ``plan_variants(w, target)``). Plans that change only the
    schedule share the workload of ``w``; the others are workloads of their own. ``candidates``
    considers them all."""
    todo = []
    if not db.records.get(w.shash):
        sch = Schedule(w.mod["main"])
        Trace.apply_json_to_schedule(w.default_trace, sch)
        todo.append((f"the default schedule of {w.spec.name}", w.mod, sch, logging.WARNING))
    for p, mod, sch in variants:
        trace = trace_json(sch)
        if not any(t == trace for _, t in db.records.get(db.shash(mod), ())):
            todo.append((f"the default schedule of {w.spec.name} with {p}", mod, sch, logging.INFO))
    return todo


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    def __init__(self, workloads: list[Workload], on_update):
        super().__init__()
        self.workloads = workloads
        self.on_update = on_update

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        w = self.workloads[task_id]
        for br, rr in zip(builder_results, runner_results):
            w.trials += 1
            secs = None if br.error_msg or rr.error_msg or rr.run_secs is None else best_secs(
                [float(x) for x in rr.run_secs])
            if secs is None:
                w.failed += 1
            elif w.best_s is None or secs < w.best_s:
                w.best_s = secs
        if self.on_update is not None:
            self.on_update(task_id, w)


@derived_object
class WeightedScheduler(ms.task_scheduler.PyTaskScheduler):
    """MetaSchedule's task scheduler for tvmconv: gives the next batch to the live task with the
    fewest trials per unit of weight (a layer that occurs 4 times in the network gets 4 times the
    trials), counting the trials earlier runs logged (``done_before``, one per task), so a resumed
    run tops up the least-searched workloads first; and first waits for every batch in flight and
    commits it to the log.

    MetaSchedule's own schedulers commit a batch only when they next pick its task (the gradient
    scheduler: not before every task has had a first batch), so a kill lost every trial measured
    since; and the runner timed a batch while the builder compiled the next one on the same
    cores, so trials were measured under load. Here a batch is timed alone and is in the log as
    soon as it has been timed.

    A task whose search returns an empty batch has exhausted its space (the evolutionary search
    found no schedule it has not measured) and is picked no more: MetaSchedule ends a task only
    when its budget is spent, so it would search again and again in vain (10 minutes and more on
    a 7x7 layer, whose sketch has a few dozen points). ``on_exhausted(task index)`` is told."""

    def __init__(self, on_exhausted=None, done_before: list[int] | None = None, deadline: float | None = None,
                 on_pick=None, batch_s: float = 0.0):
        super().__init__()
        self.trials: dict[int, int] = defaultdict(int, enumerate(done_before or []))
        self.exhausted: set[int] = set()
        self.on_exhausted = on_exhausted
        self.deadline = deadline  # (time.time()) no batch is started that would end past it
        self.on_pick = on_pick
        self.last_pick: float | None = None
        self.batch_s = batch_s  # the longest batch so far (search, build and timing), else an estimate

    def next_task_id(self) -> int:
        tasks = self._outer().tasks_
        for i, task in enumerate(tasks):
            if task.runner_futures is not None:  # (join_running_task is MetaSchedule's own: not overridden)
                n = len(self.join_running_task(i))
                self.trials[i] += n
                if n == 0 and i not in self.exhausted:
                    self.exhausted.add(i)
                    if self.on_exhausted is not None:
                        self.on_exhausted(i)
        now = time.time()
        if self.last_pick is not None:
            self.batch_s = max(self.batch_s, now - self.last_pick)
        if self.deadline is not None and now + self.batch_s > self.deadline:
            return -1  # another batch would end past the deadline: the run ends with what is logged
        alive = [i for i, task in enumerate(tasks) if not task.is_terminated and i not in self.exhausted]
        picked = least_searched(alive, self.trials, [float(task.task_weight) for task in tasks])
        self.last_pick = now
        if picked >= 0 and self.on_pick is not None:
            self.on_pick(picked)
        return picked


def least_searched(alive: list[int], trials: dict[int, int], weights: list[float]) -> int:
    """The task of ``alive`` with the fewest trials per unit of weight (ties: the first), or -1."""
    if not alive:
        return -1
    return min(alive, key=lambda i: (trials[i] / max(weights[i], 1e-9), i))


def _strategy(population: int | None):
    """MetaSchedule's evolutionary search; a smaller population makes tiny test budgets fast."""
    if population is None:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=min(50, population),
                                                 genetic_num_iters=2)


def tune(workloads: list[Workload], target: TargetInfo, db: TuningLog, *, trials: int,
         measure: Measure | None = None, seed: int | None = None,
         on_update=None, num_trials_per_iter: int = 64, builder_workers: int | None = None,
         population: int | None = None, deadline: float | None = None, on_phase=None,
         cost_model: str | None = None) -> None:
    """Spend ``trials`` measurements per workload (``trials * len(workloads)`` in all), minus what
    ``db`` already holds for them: first the plan phase on every workload (the default schedule
    under each plan candidate and seed plan, ``plan_variants``), then MetaSchedule's search, its
    batches going to the layers that cost most (``budget.heaviest_first``: time after the plan
    phase times occurrences; ``WeightedScheduler``). ``deadline`` (``time.time()``): no batch is
    started that would end past it. ``on_phase(text)`` is told what runs now. ``cost_model``: a
    saved XGBoost cost model to start the search from (``costmodel``)."""
    if not supported(target):
        raise ValueError(f"target: tuning is implemented for CPU (llvm) and CUDA targets; {target.profile!r} is "
                         f"{target.kind!r}")
    measure = measure or Measure()
    if measure.kind == "rpc":
        check_tracker(measure)
    target_intrinsics(target)
    backend = target.backend
    cores = backend.search_threads()
    workers = builder_workers or max(1, min(cores, os.cpu_count() or 1))
    # A trial is timed as the op runs it: without packing a weight the op packs once (measure_without_pack)
    builder = make_builder(target, workers, without_pack=backend.measure_without_pack(measure.kind))
    runner = make_runner(measure, target)
    phase = on_phase or (lambda _text: None)
    variants = [plan_variants(w, target) for w in workloads]
    todo = []
    for w, var in zip(workloads, variants):
        w.shash = db.shash(w.mod)
    # The plan phase, the largest layers first (flops x occurrences: nothing is measured yet), in
    # batches the builder compiles in parallel, each started only where it can end by the deadline
    order = sorted(range(len(workloads)), key=lambda i: -workloads[i].spec.flops * workloads[i].weight)
    for i in order:
        w, var = workloads[i], variants[i]
        logged = sum(len(db.records.get(h, ())) for h in {w.shash, *(db.shash(m) for _, m, _ in var)})
        if logged >= trials:  # a resumed run with its budget spent: a seed that appeared since waits for more
            own = set(backend.plan_candidates(w.spec))
            var = [v for v in var if v[0] in own or v[0] not in w.seeds]
        todo += [(it, i) for it in _unmeasured(w, var, db)]
    k, cost, planned = 0, _BatchCost(), True
    while k < len(todo):
        t0 = time.time()
        n = PLAN_CHUNK if deadline is None else cost.fits(deadline - t0, PLAN_CHUNK)
        if n == 0:
            log.info("tvmconv: the time limit leaves no time for %d plan candidates", len(todo) - k)
            planned = False
            break
        part, k = todo[k:k + n], k + n
        phase(f"plan search: {workloads[part[0][1]].spec.name}")
        secs = measure_batch([it for it, _ in part], target, db, builder, runner)
        cost.learn(len(part), time.time() - t0)
        for (_, i), s in zip(part, secs):
            w = workloads[i]
            w.trials, w.failed = w.trials + 1, w.failed + int(s is None)
            if s is not None and (w.best_s is None or s < w.best_s):
                w.best_s = s
            if on_update is not None:
                on_update(None, w)
    seeds = []  # the sketch at the fastest blocking's tiles: where the search starts, one batch for all
    for w, var in zip(workloads, variants):
        w.search_plan, w.search_mod, searched = search_start(w, target, db, var)
        # A trial is a schedule compiled and timed: the budget counts the plan phase's too (which
        # is measured in full however small the budget: it is cheap and usually most of the gain)
        w.done_before = sum(len(db.records.get(h, ())) for h in {w.shash, *(db.shash(m) for _, m, _ in var)})
        if not searched and backend.searches_sketch and planned:
            try:
                seeds.append((w, sketch_seed(w.spec, w.search_plan, w.search_mod, target)))
            except Exception as exc:  # noqa: BLE001 - the search then starts from random samples
                log.info("tvmconv: no sketch seed for %s: %s", w.spec.name, str(exc).splitlines()[-1])
    n = len(seeds) if deadline is None else cost.fits(deadline - time.time(), len(seeds))
    if n:
        phase("search seeds")
        t0 = time.time()
        secs = measure_batch([(f"the sketch of {w.spec.name}", w.search_mod, sch, logging.WARNING)
                              for w, sch in seeds[:n]], target, db, builder, runner)
        cost.learn(n, time.time() - t0)
        for (w, _), s in zip(seeds, secs):
            w.done_before += 1
            w.trials, w.failed = w.trials + 1, w.failed + int(s is None)
            if s is not None and (w.best_s is None or s < w.best_s):
                w.best_s = s
            if on_update is not None:
                on_update(None, w)
    cap = 2 * trials
    done = db.exhausted()
    for w in workloads:
        w.space = space_id(w, target, db)
        w.exhausted = w.space in done
        if w.exhausted and on_update is not None:
            on_update(None, w)
    live = [w for w in workloads if w.done_before < cap and not w.exhausted]
    ranked = heaviest_first([_cost(w, db) for w in live], [w.weight for w in live])
    todo = [live[i] for i in ranked]
    budget = trials * len(workloads) - sum(min(w.done_before, cap) for w in workloads)
    if not todo or budget <= 0 or (deadline is not None and not cost.fits(deadline - time.time(), 1)):
        return
    costs = [(_cost(w, db) or 0.0) * w.weight for w in todo]
    top = max(costs) or 1.0
    weights = [max(c / top, 1e-3) for c in costs]  # trials in proportion to what a layer costs the model
    per_iter = max(1, min(num_trials_per_iter, trials))
    rand = ms.utils.fork_seed(seed, n=len(todo))
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    phase("MetaSchedule: preparing the search")
    tasks = [ms.TuneContext(mod=w.search_mod, target=target.tvm(), space_generator=design_space(w.spec, w.search_plan, target),
                            search_strategy=_strategy(population), task_name=w.spec.name, rand_state=r,
                            num_threads=cores).clone() for w, r in zip(todo, rand)]
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [_Progress(todo, on_update)]

    def exhausted(i: int) -> None:
        w = todo[i]
        w.exhausted = True
        db.note_exhausted(w.space, db.trials(w.search_mod))
        log.info("tvmconv: the search space of %s is exhausted (%d trials this run)", w.spec.name, w.trials)
        if on_update is not None:
            on_update(i, w)

    scheduler = WeightedScheduler(exhausted, [w.done_before for w in todo], deadline=deadline,
                                  on_pick=lambda i: phase(f"MetaSchedule: {todo[i].spec.name}"),
                                  batch_s=cost.start_s + per_iter * cost.item_s)
    ms.tune_tasks(tasks=tasks, task_weights=weights, work_dir=str(db.dir),
                  max_trials_global=budget, max_trials_per_task=cap, num_trials_per_iter=per_iter,
                  builder=builder, runner=runner, database=db, cost_model=_cost_model(cost_model),
                  measure_callbacks=callbacks, task_scheduler=scheduler)


PLAN_CHUNK = 16  # schedules per plan-phase batch (its fixed cost: up to 3 s where the builder's pool starts, measure.py)


class _BatchCost:
    """What a measured batch costs: a fixed start (at most the builder's worker pool starting, which
    the first batch waits for) and a time per schedule, from priors (2-vCPU Ice Lake: about 3 s and
    1 s) corrected by each batch measured."""

    def __init__(self, start_s: float = 3.0, item_s: float = 1.0):
        self.start_s, self.item_s = start_s, item_s

    def learn(self, n: int, secs: float) -> None:
        self.item_s = max(0.05, (secs - self.start_s) / max(1, n))

    def fits(self, left_s: float, most: int) -> int:
        """How many schedules (up to ``most``) one batch can measure in ``left_s`` seconds."""
        return max(0, min(most, int((left_s - self.start_s) / self.item_s)))


def _cost(w: Workload, db: TuningLog) -> float | None:
    """What one call of ``w`` costs before the search: the fastest the log holds of its search
    start (the best blocking's default schedule), else of its default schedule."""
    for mod in (w.search_mod, w.mod):
        if mod is not None:
            secs = [s for s, _ in db.records.get(db.shash(mod), ()) if s is not None]
            if secs:
                return min(secs)
    return None


def _cost_model(path: str | None):
    """MetaSchedule's XGBoost cost model, started from the saved one at ``path`` where given."""
    if path is None:
        return "xgb"
    from .costmodel import load

    return load(path)
