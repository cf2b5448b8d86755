"""Run a MetaSchedule search in a child process, so that Ctrl-C and kill are safe.

MetaSchedule calls back into Python (our database, progress callback, builder) from C++. A
``KeyboardInterrupt`` raised inside one of those callbacks unwinds through C++ and aborts the
process ("Segfault encountered"). So the search runs in a child in its own session: the terminal's
Ctrl-C reaches only the parent, which stops the child's whole process group (builder and runner
workers included), then distills what the log holds. Every record is already fsynced, so nothing
measured is lost; the next run resumes.

Protocol: the parent writes one pickled ``Job`` to the child's stdin and keeps stdin open; the
child writes one JSON line per progress update (``{"i": ...}``) or change of phase
(``{"phase": text}``) to its stdout (anything else it prints goes to
stderr) and a last line ``{"done": true}`` or ``{"error": <pickled exception, base64>}``. When
the parent dies, the child's stdin reaches end of file and the child kills its process group.
However the run ends (done, error, interrupt, SIGTERM), the parent ends with SIGKILL to the
child's process group, and the child kills its MetaSchedule workers before it exits: no worker
(each a few hundred MB) outlives a run.

The child imports nothing from the working directory: it runs in a private, empty working
directory with ``PYTHONSAFEPATH=1``, and MetaSchedule's workers, started the same way
(``python -m tvm.exec.popen_worker``), inherit both. A ``base64.py`` where ``tvmconv tune`` was
started is not run. Paths the child is given are absolute.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    specs: list  # [(Spec, weight)]
    target: object  # TargetInfo
    measure: object  # Measure
    log_dir: str
    trials: int
    seed: int | None
    num_trials_per_iter: int
    population: int | None
    deadline: float | None = None  # time.time() by which the search stops (budget.Deadlines.search)
    seeds: list | None = None  # per spec, the nearest records' plans (seeds.seed_plans)
    cost_model: str | None = None  # a saved cost model to start from (costmodel)


def run(job: Job, on_update=None, stop_grace_s: float = 10.0, on_phase=None, stop_at: float | None = None) -> bool:
    """Run ``job`` in a child process; ``on_update(index, trials, failed, best_s, exhausted)`` per
    batch, ``on_phase(text)`` as the search moves on. ``stop_at`` (``time.time()``): the child is
    stopped then if it has not ended (its search stops at ``job.deadline`` by itself: this is the
    backstop; every trial measured is in the log already). Returns whether it was stopped so.
    Re-raises the child's exception; on KeyboardInterrupt stops the child and re-raises."""
    job = dataclasses.replace(job, log_dir=os.path.abspath(job.log_dir))
    stopped = threading.Event()
    with tempfile.TemporaryDirectory(prefix="tvmconv-tune-") as home:
        proc = subprocess.Popen([sys.executable, "-m", __name__], cwd=home, env=_child_env(home),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        timer = None
        if stop_at is not None:
            def backstop():
                stopped.set()
                _stop(proc, 0)

            timer = threading.Timer(max(0.0, stop_at - time.time()), backstop)
            timer.daemon = True
            timer.start()
        try:
            proc.stdin.write(pickle.dumps(job))
            proc.stdin.flush()
            error = None
            for line in proc.stdout:
                msg = json.loads(line)
                if "error" in msg:
                    error = pickle.loads(base64.b64decode(msg["error"]))
                elif "phase" in msg and on_phase is not None:
                    on_phase(msg["phase"])
                elif "i" in msg and on_update is not None:
                    on_update(msg["i"], msg["trials"], msg["failed"], msg["best_s"], msg.get("exhausted", False))
            code = proc.wait()
        except BaseException:  # an error here, KeyboardInterrupt, SIGTERM (as KeyboardInterrupt)
            _stop(proc, stop_grace_s)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            _stop(proc, 0)  # on every path: workers the child left behind
            proc.stdin.close()
            proc.stdout.close()
    if error is not None:
        raise error
    if stopped.is_set():
        return True
    if code != 0:
        raise RuntimeError(f"the tuning process exited with status {code} (see its messages above); the records "
                           f"measured before are kept, run the same command again to resume")
    return False


def _child_env(home: str) -> dict[str, str]:
    """The child's environment: ``PYTHONSAFEPATH=1``; this tvmconv importable through a folder in
    ``home`` that holds only a link to it (so it is found wherever the parent found it, the
    working directory included, and nothing else of that place is); relative paths in
    ``PYTHONPATH`` and tvmconv's ``TVMCONV_*_DIR`` variables made absolute (the child's working
    directory is ``home``), and empty ``PYTHONPATH`` entries, which mean the working directory,
    dropped."""
    env = dict(os.environ)
    env["PYTHONSAFEPATH"] = "1"
    link_dir = os.path.join(home, "import-path")  # (not a module name: a '-')
    os.mkdir(link_dir)
    os.symlink(Path(__file__).resolve().parents[1], os.path.join(link_dir, "tvmconv"))
    given = [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([link_dir, *given])
    for key, value in env.items():
        if key.startswith("TVMCONV_") and key.endswith("_DIR") and value:
            env[key] = os.path.abspath(os.path.expanduser(value))
    return env


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop the child's process group: SIGTERM, then SIGKILL after ``grace_s``. The SIGKILL goes to
    the group even when the child has exited, so no builder or runner worker outlives it (one
    would keep the pipes it inherited open, and whoever reads the parent's output would wait),
    and also when a second interrupt cuts the grace period short."""
    try:
        if grace_s > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30.0)


def _watch_parent() -> None:
    """Block on stdin; at end of file the parent is gone: take the whole process group down."""
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of TVM or XGBoost go to stderr, not into the protocol

    def send(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")

    job: Job = pickle.load(sys.stdin.buffer)
    threading.Thread(target=_watch_parent, daemon=True).start()
    db = None
    try:
        from .log import TuningLog
        from .scheduler import tune
        from .space import prepare

        wls = prepare(job.specs, job.target, job.seeds)
        index = {id(w): i for i, w in enumerate(wls)}

        def update(_i, w):
            send({"i": index[id(w)], "trials": w.trials, "failed": w.failed, "best_s": w.best_s,
                  "exhausted": w.exhausted})

        db = TuningLog(Path(job.log_dir))
        tune(wls, job.target, db, trials=job.trials, measure=job.measure, seed=job.seed,
             on_update=update, num_trials_per_iter=job.num_trials_per_iter, population=job.population,
             deadline=job.deadline, on_phase=lambda text: send({"phase": text}), cost_model=job.cost_model)
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        if db is not None and db.write_error is not None:  # the cause, whatever TVM made of it on the way out
            exc = db.write_error
        try:
            blob = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            blob = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        _kill_workers()
        send({"error": base64.b64encode(blob).decode()})
        out.flush()
        os._exit(1)
    _kill_workers()
    send({"done": True})
    out.flush()
    os._exit(0)  # skip interpreter teardown: TVM's worker pools can hang it


def _kill_workers() -> None:
    """Kill what this process started (MetaSchedule's builder and runner worker pools) before it
    exits: os._exit skips the pools' shutdown, and a worker busy in a trial would run on."""
    import psutil

    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            p.kill()


if __name__ == "__main__":
    _main()
