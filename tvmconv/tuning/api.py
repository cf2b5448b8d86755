"""``tvmconv.tune``: tune workloads for a target and store the results in the cache.

    import tvmconv
    tvmconv.tune("mobilenet_v1", target="x86-avx2", trials=200)
    tvmconv.tune(model, example_inputs=(x,), target="x86-avx2")          # every conv of a model
    tvmconv.tune("resnet18", target="x86-avx2", batch=[1, 8])           # each layer at batch 1 and 8
    tvmconv.tune(spec, target="arm64-linux", rpc="127.0.0.1:9190:pi4")  # through an RPC tracker

Records are appended to ``tuning_logs/<profile>/<target key>/`` as they are measured, so an
interrupted run loses nothing and the next run spends only the remaining budget. At the end (or on
interruption) the best schedule of each workload is distilled into ``schedules/<profile>/``,
where every later process finds it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..runtime import cache, untuned
from ..runtime.record import Candidate, Dispatch, ScheduleRecord, Validation
from ..spec import Spec
from ..backends.target import TargetInfo, profiles, resolve
from ..backends.timing import torch_threads
from ..suites.workloads import workloads

log = logging.getLogger("tvmconv")


@dataclass
class TuneResult:
    """What ``tune`` did for one workload."""

    spec: Spec
    # A trial is a schedule compiled and timed: the default, each plan candidate, each search candidate
    trials_total: int  # trials in the log for this workload, this run included
    trials_run: int  # trials of this run
    failed_run: int
    best_s: float | None
    default_s: float | None
    source: str  # "metaschedule" | "default" (the default schedule stayed the fastest) | "none"
    record_path: str | None = None
    dispatch: str | None = None  # "tvmconv" | "vendor" (measured faster after tuning) | None (no vendor path)
    exhausted: bool = False  # the search measured all it could find of its space before the budget ran out
    tune_secs: float | None = None  # the whole tune call's wall time (every workload's)

    @property
    def gflops(self) -> float | None:
        return self.spec.flops / self.best_s / 1e9 if self.best_s else None


@dataclass
class Tracker:
    host: str
    port: int
    key: str

    @classmethod
    def parse(cls, text: str) -> "Tracker":
        parts = str(text).rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            raise ValueError(f"rpc must be HOST:PORT:KEY (the RPC tracker and the device key), got {text!r}")
        return cls(parts[0], int(parts[1]), parts[2])


def _measure(target: TargetInfo, prof, rpc, rpc_timeout: int):
    from .measure import Measure

    if rpc is None and prof is not None and prof.measure.get("kind") == "rpc":
        rpc = f"{prof.measure['tracker']}:{prof.measure['key']}"
    if rpc is None:
        why = target.backend.tuning_unavailable()
        if why is not None:
            raise ValueError(why)
        return Measure()
    t = rpc if isinstance(rpc, Tracker) else Tracker.parse(rpc)
    return Measure(kind="rpc", tracker_host=t.host, tracker_port=t.port, key=t.key, session_timeout_s=rpc_timeout)


def tune(what, *, target=None, trials: int | None = None, example_inputs=None, input_shape=None, rpc=None,
         cache_dir=None, progress: bool = True, seed: int | None = None, num_trials_per_iter: int = 64,
         population: int | None = None, dispatch: bool = True, rpc_timeout: int = 120, batch=None,
         time_limit=None):
    """Tune ``what`` (a spec, specs, a suite name, an nn.Module with ``example_inputs`` or a .pt2
    file) for ``target``. Returns one ``TuneResult`` per workload (trials, best time, GFLOP/s, the
    default schedule's time, the record written).
    A trial is one schedule compiled and timed: the default schedule, each plan candidate and
    each search candidate alike. ``trials``: per workload (default 64); with ``time_limit`` a cap
    (default ``budget.TRIALS_WITH_LIMIT``) and the limit decides.
    ``time_limit``: seconds, or ``"90s"``, ``"10m"``, ``"1h"``: the whole call (plan phase on every
    workload, then MetaSchedule on the layers that cost the model most, then distilling and timing
    the best candidates through the op) ends within it, up to a few percent; every trial measured
    stays in the log.
    ``trials=0`` measures nothing: it distills what the log holds (after an interrupted run, which
    skips timing the candidates through the op, or with a log copied from another machine).
    ``dispatch``: then time each tuned op against its vendor path and record the faster one.
    ``rpc_timeout``: seconds one trial may take on a remote device, waiting for a free one included;
    a device that drops fails its trials after that long and tuning goes on.
    ``batch``: a positive int or a list of them: every workload at each batch size (a spec's ``n``
    replaced; a model's layers follow its input's batch; ``suites.workloads.rebatch``).
    Raises ``tuning.log.TuningLogError`` (an OSError naming the file and the cause) where the
    log cannot be written (full disk, read-only cache); every record written before is kept."""
    t0 = time.time()
    from ..runtime import build
    from . import child as tune_child
    from .budget import TRIALS_WITH_LIMIT, parse_duration
    from .log import TuningLog, as_log_error, log_error
    from .seeds import records as seed_records
    from .seeds import remember, remembered, seed_plans
    from .space import known_exhausted, prepare

    limit = parse_duration(time_limit)
    if trials is None:
        trials = 64 if limit is None else TRIALS_WITH_LIMIT
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        raise ValueError(f"trials must be a non-negative integer (0: only distill what the log holds), got {trials!r}")
    if not isinstance(rpc_timeout, int) or isinstance(rpc_timeout, bool) or rpc_timeout < 1:
        raise ValueError(f"rpc_timeout must be a positive number of seconds, got {rpc_timeout!r}")
    items = workloads(what, example_inputs, input_shape, batch=batch)
    if not items:
        raise ValueError(f"no convolution workloads found in {what!r}")
    tgt = resolve(target)
    prof = profiles().get(tgt.profile)
    measure = _measure(tgt, prof, rpc, rpc_timeout)
    root = Path(cache_dir) if cache_dir is not None else cache.user_root()
    log_dir = cache.log_dir(root, tgt)
    desc = log_dir / "target.json"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        if not desc.exists():
            cache.write_json(desc, {"profile": tgt.profile, "target": tgt.key_dict, "tvm": cache.tvm_version(),
                                    "format": cache.CACHE_FORMAT_VERSION})
    except OSError as exc:  # a read-only or full cache: say so, not a traceback
        raise log_error(log_dir, exc) from exc
    pool = seed_records(tgt, root)  # (with trials=0 too: distilling looks for their plans' trials in the log)
    seeds = [remembered(log_dir, spec, tgt, seed_plans(spec, tgt, root, pool=pool)) for spec, _ in items]
    wls = prepare(items, tgt, seeds)
    check = tgt.runs_here and measure.kind == "local"
    plan = _plan(wls, tgt, t0, limit, check)
    bar = _Bar(wls, trials, plan) if progress else None

    def update(i, done, failed, best_s, exhausted=False):
        w = wls[i]
        w.trials, w.failed, w.best_s, w.exhausted = done, failed, best_s, exhausted
        if bar:
            bar.update()

    cost_model = _cost_model_path(tgt)
    job = tune_child.Job(specs=items, target=tgt, measure=measure, log_dir=str(log_dir),
                         trials=trials, seed=seed, num_trials_per_iter=_per_iter(num_trials_per_iter, trials, limit),
                         population=population, deadline=plan.search if plan else None, seeds=seeds,
                         cost_model=str(cost_model) if cost_model else None)
    interrupted, cut = None, False
    offset = _log_size(log_dir)
    if bar:
        bar.start()
    try:
        try:
            with _sigterm_as_interrupt():
                if trials:
                    # (the backstop: the search stops itself at its deadline, a batch never runs long past it)
                    stop_at = plan.search + 0.5 * (plan.end - plan.search) if plan else None
                    cut = tune_child.run(job, update, on_phase=bar.phase if bar else None, stop_at=stop_at)
                    remember(log_dir, tgt, [(spec, plans) for (spec, _), plans in zip(items, seeds)])
        except KeyboardInterrupt as exc:
            interrupted = exc
            remember(log_dir, tgt, [(spec, plans) for (spec, _), plans in zip(items, seeds)])
        except OSError as exc:
            err = as_log_error(exc)  # a write the disk refused, in the search's own files too
            if err is exc:
                raise
            raise err from None
        if bar:
            bar.phase("distilling the log")
        db = TuningLog(log_dir, report=not trials)  # what the child wrote (it reported what it skipped)
        for w in wls:
            w.shash = db.shash(w.mod)
            if not trials:  # (a search says so as it goes)
                w.exhausted = known_exhausted(w, tgt, db)
        if cut or interrupted is not None:  # progress reports in flight were lost with the child: count the log
            _count_from_log(wls, tgt, db, log_dir, offset)
        results = _distill(wls, db, tgt, root, plan, check and interrupted is None, dispatch, bar)
    finally:
        if bar:
            bar.stop()
    build.clear_memory_cache()
    if root.resolve() == cache.user_root().resolve():  # what the ops read: these no longer run untuned
        untuned.forget([r.spec for r in results if r.record_path], tgt.profile)
    secs = time.time() - t0
    for r in results:
        r.tune_secs = secs
    if interrupted is not None:
        raise interrupted
    return results


def _per_iter(per_iter: int, trials: int, limit: float | None) -> int:
    """Trials per search batch. Under a time limit at most ``LIMITED_PER_ITER``: a batch is not
    started unless it can end before the deadline, and a short one wastes less of the end."""
    return min(per_iter, LIMITED_PER_ITER) if limit is not None else per_iter


LIMITED_PER_ITER = 16


def _plan(wls, tgt: TargetInfo, t0: float, limit: float | None, check: bool):
    """The run's deadlines (``budget.Deadlines``) under ``limit``, or None: the validation reserve
    from one kernel compile timed now (the default schedule of the largest workload)."""
    from .budget import Deadlines, validation_reserve

    if limit is None:
        return None
    compile_s = _time_one_compile(max(wls, key=lambda w: w.spec.flops), tgt) if check else 0.0
    reserve = validation_reserve(len(wls), compile_s) if check else validation_reserve(0, 0.0)
    plan = Deadlines.plan(t0, limit, reserve)
    log.info("tvmconv: time limit %.0f s: %.1f s kept for distilling (one compile: %.2f s), the search "
             "stops %.1f s from now", limit, plan.end - plan.search, compile_s, plan.search - time.time())
    return plan


def _time_one_compile(w, tgt: TargetInfo) -> float:
    """Seconds to compile ``w``'s default schedule for ``tgt`` (what validation does per candidate)."""
    from tvm.s_tir import Schedule
    from tvm.s_tir.schedule import Trace

    from .measure import build_module

    t = time.perf_counter()
    sch = Schedule(w.mod["main"])
    Trace.apply_json_to_schedule(w.default_trace, sch)
    build_module(sch.mod, tgt.tvm(), None)
    return time.perf_counter() - t


def _cost_model_path(tgt: TargetInfo):
    from .costmodel import shipped_path

    return shipped_path(tgt.backend.cost_model_family())


def _log_size(log_dir: Path) -> int:
    try:
        return (log_dir / "database_tuning_record.json").stat().st_size
    except OSError:
        return 0


def _count_from_log(wls, tgt: TargetInfo, db, log_dir: Path, offset: int) -> None:
    """Set each workload's ``trials`` (and ``failed``) to the records appended to the log past
    ``offset`` for its modules (its own and its plan candidates'): where the child was stopped,
    reports of the last trials may not have reached this process, the log has them."""
    from .space import plan_variants

    try:
        index = [json.loads(line)[0] for line in (log_dir / "database_workload.json").read_text().splitlines()
                 if line.strip()]
        with open(log_dir / "database_tuning_record.json", "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except (OSError, ValueError, IndexError):  # nothing logged (a child stopped before its first trial)
        index, lines = [], []
    new: dict[str, list[bool]] = {}
    for line in lines:
        try:
            i, rec = json.loads(line)
            ok = bool(rec[1]) and min(float(x) for x in rec[1]) < 1e9
        except (ValueError, TypeError, IndexError):
            continue  # a line cut short
        if 0 <= i < len(index):
            new.setdefault(index[i], []).append(ok)
    for w in wls:
        hashes = {db.shash(w.mod)} | {db.shash(mod) for _, mod, _ in plan_variants(w, tgt)}
        got = [ok for h in hashes for ok in new.get(h, ())]
        w.trials, w.failed = len(got), got.count(False)


def _distill(wls, db, tgt, root: Path, plan, check: bool, dispatch: bool, bar) -> list:
    """``_result`` per workload, in their order. ``check``: the top candidates are validated
    through the op; under a time limit (``plan``) the heaviest layers first, each only while the
    time left covers what one took (the first: the plan's estimate), the rest distilled from the
    log's times alone."""
    from .budget import VALIDATE_KERNELS, VALIDATE_TIMING_S

    order = sorted(range(len(wls)), key=lambda i: -(wls[i].best_s or 0.0) * wls[i].weight)
    one = None  # seconds one validation took
    if plan is not None:
        one = (plan.end - plan.search - 3.0) / max(1, len(wls))  # (the reserve: budget.validation_reserve)
        one = max(one, VALIDATE_TIMING_S / VALIDATE_KERNELS)
    out = [None] * len(wls)
    for i in order:
        w = wls[i]
        top = VALIDATE_TOP if check else 0
        if top and plan is not None and plan.left() < one + 0.5:
            top = 0  # no time left to time it through the op: the log's fastest
        if bar:
            bar.phase(("validating " if top else "distilling ") + w.spec.name)
        t = time.time()
        out[i] = _result(w, db, tgt, root, top, dispatch)
        if top and plan is not None:
            one = max(one * 0.5, time.time() - t)  # (learn from what it took, not below half the estimate)
    return out


VALIDATE_TOP = 3  # the fastest schedules in the log timed again through the op (with the default)


def _result(w, db, tgt, root, top: int, dispatch: bool = False):
    """Distill ``w``'s best schedule into the cache under ``root``: with ``top``, the ``top``
    fastest in the log, the default schedule and the record already there are timed through the
    op and the fastest kept (``validate``, which with ``dispatch`` also times the vendor path and
    records which is faster); with 0, the fastest in the log."""
    from .candidates import candidates

    cands = candidates(w, db, tgt, top=max(1, top))
    rec = cands[0] if cands else None
    if rec is not None and top:
        rec = validate(w.spec, tgt, cands + _saved(w.spec, tgt, root, cands), dispatch=dispatch)
    path = cache.save_record(rec, w.spec, tgt, root) if rec else None
    total = rec.trials if rec else len(db.records.get(w.shash, ()))  # plan candidates included
    return TuneResult(spec=w.spec, trials_total=total, trials_run=w.trials,
                      failed_run=w.failed, best_s=rec.run_secs if rec else None,
                      default_s=rec.default_secs if rec else None,
                      source=rec.source if rec else "none", record_path=str(path) if path else None,
                      exhausted=w.exhausted, dispatch=rec.dispatch.choice if rec and rec.dispatch else None)


def _saved(spec, tgt: TargetInfo, root: Path, cands: list[ScheduleRecord]) -> list[ScheduleRecord]:
    """The records the cache under ``root`` and the shipped records hold for ``spec`` on ``tgt``,
    those whose schedule is not in ``cands``: validated beside them, a saved record stays only
    where it is still the fastest in this run."""
    ids = {cache.schedule_id(c) for c in cands}
    out = []
    for r in dict.fromkeys([root, cache.shipped_root()]):
        path = cache.schedule_path(r, spec, tgt)
        if r == root:
            with cache.lock(path):
                old = cache.read_record(path)
        else:
            old = cache.read_record(path) if path.is_file() else None
        if old is None or old.key != cands[0].key or cache.schedule_id(old) in ids:
            continue
        ids.add(cache.schedule_id(old))
        out.append(old if old.source else old.replace(source="saved"))
    return out


def validate(spec, tgt: TargetInfo, cands: list[ScheduleRecord], rounds: int = 7,  # (dispatch.judge's fewest)
             dispatch: bool = False) -> ScheduleRecord:
    """The fastest of the candidate records (``tuning.candidates.candidates``) when each is compiled
    and called through the op, interleaved, median of ``rounds``: what the op will run, measured
    in one run. The tuning-time times are each a best of a few repeats, in hundreds of trials, on
    a noisy machine: their minimum favours lucky trials (resnet18's searched stem measured 1.22x
    faster at tuning time and 0.84x as fast through the op). The chosen record's ``run_secs`` and
    ``default_secs`` become its and the default schedule's op times; ``validated`` lists every
    candidate. ``dispatch``: the vendor path runs in the same interleaved rounds, and the record's
    ``dispatch`` says which of it and the chosen schedule is faster (the PyTorch-facing layer then
    calls that one); without, the record carries no dispatch choice. Where the op cannot be called
    (no PyTorch path for the spec) the fastest logged record is returned as it is."""
    from ..backends import timing
    from ..backends.machine import machine_of

    try:
        times, vendor = op_times(spec, tgt, cands, rounds, vendor=dispatch)
    except ValueError:  # no PyTorch path to call
        return cands[0]
    op_s = {i: timing.median(t) for i, t in enumerate(times) if t is not None}
    if not op_s:  # every record fell back
        return cands[0]
    best = min(op_s, key=op_s.get)
    default = [t for i, t in op_s.items() if cands[i].source == "default"]
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    checked = Validation(how=f"through the op, interleaved, median of {rounds} rounds", threads=tgt.num_cores,
                         measured_at=now,
                         candidates=tuple(Candidate(id=cache.schedule_id(c), source=c.source, plan=c.plan,
                                                    tuning_secs=c.run_secs, op_secs=op_s.get(i))
                                          for i, c in enumerate(cands)))
    # (a dispatch choice measured against another schedule, a saved record's, is stale: replaced or dropped)
    choice = None
    if vendor is not None:
        from ..runtime import dispatch as D

        v = timing.median(vendor[1])
        here = machine_of(tgt)
        verdict = D.judge(times[best], vendor[1])  # (the rounds are paired: interleaved in op_times)
        choice = Dispatch(choice=verdict.choice, tvmconv_s=op_s[best], vendor_s=v,
                          vendor=vendor[0], threads=tgt.num_cores, measured_at=now, machine=here.key,
                          machine_description=here.description,
                          extra={"decided": verdict.decided, "margin": verdict.margin, "agree": verdict.agree,
                                 "rounds": verdict.rounds})
    return cands[best].replace(run_secs=op_s[best], gflops=spec.flops / op_s[best] / 1e9, trials=cands[0].trials,
                               default_secs=default[0] if default else None, validated=checked, dispatch=choice)


def op_times(spec, tgt: TargetInfo, records: list[ScheduleRecord], rounds: int = 5, vendor: bool = False):
    """``(times, vendor_times)``: each schedule record compiled and called through the op
    (``tvmconv.functional``, dispatch off, ``tgt.num_cores`` threads), interleaved: ``rounds``
    times per record, None for a record that no longer applies (the op fell back to the default).
    ``vendor``: the vendor path runs in the same rounds, and ``vendor_times`` is ``(what it is,
    its times)``; else None. Raises ValueError where the spec has no PyTorch path to call
    (``suites.cases.case_for``)."""
    import torch

    from ..suites.cases import case_for
    from ..backends import timing
    from .. import functional as TF
    from ..runtime import build

    case = case_for(spec)
    kernels = [build.compile_spec(spec, tgt, rec) for rec in records]
    ok = [i for i, k in enumerate(kernels) if build.from_record(k.schedule_source)]

    def call(kern):
        def run():
            build.use_kernel(kern)
            case.op(*case.args, **case.kwargs, target=tgt)
        return run

    fns = [call(kernels[i]) for i in ok]
    if ok and vendor:
        fns.append(lambda: case.reference(*case.args, **case.kwargs))
    times = []
    if ok:
        try:
            with torch.no_grad(), TF.no_dispatch(), torch_threads(tgt.num_cores):
                times = timing.interleaved_many(fns, rounds=rounds)
        finally:
            build.clear_memory_cache()
    out = [None] * len(records)
    for i, t in zip(ok, times):
        out[i] = t
    return out, ((case.vendor, times[-1]) if ok and vendor else None)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """``kill`` stops tuning like Ctrl-C does: the child is stopped and the log distilled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_sig, _frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Bar:
    """One rich progress bar for the whole run, its description the phase and workload. With a
    time limit (``plan``) it fills with time and its ETA is the limit's end; else with trials
    (of ``trials`` per workload), its ETA rich's estimate from the rate so far."""

    def __init__(self, wls, trials: int, plan=None):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.wls, self.trials, self.plan = wls, trials, plan
        self.text = "preparing"
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.id = None
        self.ticker = None
        self.stopping = threading.Event()

    def start(self):
        self.progress.start()
        total = self.plan.end - self.plan.start if self.plan else max(1, self.trials * len(self.wls))
        self.id = self.progress.add_task(self.text, total=total, done="")
        if self.plan:  # the bar moves with the clock
            self.ticker = threading.Thread(target=self._tick, daemon=True)
            self.ticker.start()
        self.update()

    def _tick(self):
        while not self.stopping.wait(0.5):
            self.update()

    def phase(self, text: str):
        self.text = text
        self.update()

    def update(self):
        if self.id is None:
            return
        n = sum(w.trials for w in self.wls)
        done = f"{n} trials"
        best = [w.spec.flops / w.best_s / 1e9 for w in self.wls if w.best_s]
        if len(self.wls) == 1 and best:
            done += f", best {best[0]:.1f} GFLOP/s"
        if self.plan:
            completed = min(time.time() - self.plan.start, self.plan.end - self.plan.start)
        else:
            completed = min(n, self.trials * len(self.wls))
        self.progress.update(self.id, completed=completed, description=self.text[:60], done=done)

    def stop(self):
        self.stopping.set()
        if self.ticker is not None:
            self.ticker.join()
        self.progress.stop()


def results_json(results) -> str:
    return "\n".join(json.dumps({"workload": r.spec.name, "trials_total": r.trials_total,
                                 "trials_run": r.trials_run, "failed_run": r.failed_run, "best_s": r.best_s,
                                 "gflops": r.gflops, "default_s": r.default_s, "source": r.source, "dispatch": r.dispatch, "exhausted": r.exhausted,
                                 "record": r.record_path, "tune_secs": r.tune_secs}) for r in results)
