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
from ..tools.workloads import workloads


@dataclass
class TuneResult:
    """What ``tune`` did for one workload."""

    spec: Spec
    trials_total: int  # measured records in the log for this workload, this run included
    trials_run: int  # measured in this run
    failed_run: int
    best_s: float | None
    default_s: float | None
    source: str  # "metaschedule" | "default" (the default schedule stayed the fastest) | "none"
    record_path: str | None = None
    dispatch: str | None = None  # "tvmconv" | "vendor" (measured faster after tuning) | None (no vendor path)
    exhausted: bool = False  # the search measured all it could find of its space before the budget ran out

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


def tune(what, *, target=None, trials: int = 64, example_inputs=None, input_shape=None, rpc=None,
         cache_dir=None, progress: bool = True, seed: int | None = None, num_trials_per_iter: int = 64,
         population: int | None = None, dispatch: bool = True, rpc_timeout: int = 120, batch=None):
    """Tune ``what`` (a spec, specs, a suite name, an nn.Module with ``example_inputs`` or a .pt2
    file) for ``target`` with ``trials`` measurements per workload. Returns one ``TuneResult`` per
    workload (trials, best time, GFLOP/s, the default schedule's time, the record written).
    ``trials=0`` measures nothing: it distills what the log holds (after an interrupted run, which
    skips timing the candidates through the op, or with a log copied from another machine).
    ``dispatch``: then time each tuned op against its vendor path and record the faster one.
    ``rpc_timeout``: seconds one trial may take on a remote device, waiting for a free one included;
    a device that drops fails its trials after that long and tuning goes on.
    ``batch``: a positive int or a list of them: every workload at each batch size (a spec's ``n``
    replaced; a model's layers follow its input's batch; ``tools.workloads.rebatch``).
    Raises ``tuning.log.TuningLogError`` (an OSError naming the file and the cause) where the
    log cannot be written (full disk, read-only cache); every record written before is kept."""
    from ..runtime import build
    from . import child as tune_child
    from .log import TuningLog, as_log_error, log_error
    from .space import known_exhausted, prepare

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
    wls = prepare(items, tgt)
    bar = _Bar(wls, trials) if progress else None

    def update(i, done, failed, best_s, exhausted=False):
        w = wls[i]
        w.trials, w.failed, w.best_s, w.exhausted = done, failed, best_s, exhausted
        if bar:
            bar.update(w)

    job = tune_child.Job(specs=items, target=tgt, measure=measure, log_dir=str(log_dir),
                         trials=trials, seed=seed, num_trials_per_iter=num_trials_per_iter, population=population)
    interrupted = None
    try:
        if bar:
            bar.start()
        with _sigterm_as_interrupt():
            if trials:
                tune_child.run(job, update)
    except KeyboardInterrupt as exc:
        interrupted = exc
    except OSError as exc:
        err = as_log_error(exc)  # a write the disk refused, in the search's own files too
        if err is exc:
            raise
        raise err from None
    finally:
        if bar:
            bar.stop()
    db = TuningLog(log_dir, report=not trials)  # what the child wrote (it reported what it skipped)
    for w in wls:
        w.shash = db.shash(w.mod)
        if not trials:  # (a search says so as it goes)
            w.exhausted = known_exhausted(w, tgt, db)
    check = interrupted is None and tgt.runs_here and measure.kind == "local"
    results = [_result(w, db, tgt, root, VALIDATE_TOP if check else 0, dispatch) for w in wls]
    build.clear_memory_cache()
    if root.resolve() == cache.user_root().resolve():  # what the ops read: these no longer run untuned
        untuned.forget([r.spec for r in results if r.record_path], tgt.profile)
    if interrupted is not None:
        raise interrupted
    return results


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
    """The record the cache under ``root`` holds for ``spec``, if its schedule is not in ``cands``."""
    path = cache.schedule_path(root, spec, tgt)
    with cache.lock(path):
        old = cache.read_record(path)
    ids = {cache.schedule_id(c) for c in cands}
    if old is None or old.key != cands[0].key or cache.schedule_id(old) in ids:
        return []
    return [old if old.source else old.replace(source="saved")]


def validate(spec, tgt: TargetInfo, cands: list[ScheduleRecord], rounds: int = 5,
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
        v = timing.median(vendor[1])
        here = machine_of(tgt)
        choice = Dispatch(choice="vendor" if v < op_s[best] else "tvmconv", tvmconv_s=op_s[best], vendor_s=v,
                          vendor=vendor[0], threads=tgt.num_cores, measured_at=now, machine=here.key,
                          machine_description=here.description)
    return cands[best].replace(run_secs=op_s[best], gflops=spec.flops / op_s[best] / 1e9, trials=cands[0].trials,
                               default_secs=default[0] if default else None, validated=checked, dispatch=choice)


def op_times(spec, tgt: TargetInfo, records: list[ScheduleRecord], rounds: int = 5, vendor: bool = False):
    """``(times, vendor_times)``: each schedule record compiled and called through the op
    (``tvmconv.functional``, dispatch off, ``tgt.num_cores`` threads), interleaved: ``rounds``
    times per record, None for a record that no longer applies (the op fell back to the default).
    ``vendor``: the vendor path runs in the same rounds, and ``vendor_times`` is ``(what it is,
    its times)``; else None. Raises ValueError where the spec has no PyTorch path to call
    (``bench.case_for``)."""
    import torch

    from ..tools import bench

    from ..backends import timing
    from .. import functional as TF
    from ..runtime import build

    case = bench.case_for(spec)
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
    """A rich progress display: per workload, trials done of the budget, elapsed time, best GFLOP/s."""

    def __init__(self, wls, trials: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.wls, self.trials, self.t0 = wls, trials, time.perf_counter()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[best]}"))
        self.ids = []

    def start(self):
        self.progress.start()
        for w in self.wls:
            self.ids.append(self.progress.add_task(w.spec.name[:60], total=self.trials, best=""))

    def update(self, w):
        i = self.wls.index(w)
        best = f"best {w.spec.flops / w.best_s / 1e9:7.1f} GFLOP/s" if w.best_s else ""
        if w.exhausted:
            best += " (search space exhausted)"
        self.progress.update(self.ids[i], completed=min(self.trials, w.trials), best=best)

    def stop(self):
        self.progress.stop()


def results_json(results) -> str:
    return "\n".join(json.dumps({"workload": r.spec.name, "trials_total": r.trials_total,
                                 "trials_run": r.trials_run, "failed_run": r.failed_run, "best_s": r.best_s,
                                 "gflops": r.gflops, "default_s": r.default_s, "source": r.source, "dispatch": r.dispatch, "exhausted": r.exhausted,
                                 "record": r.record_path}) for r in results)
