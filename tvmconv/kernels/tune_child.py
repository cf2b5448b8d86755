"""Run a MetaSchedule search in a child process, so that Ctrl-C and kill are safe.

MetaSchedule calls back into Python (our database, progress callback, builder) from C++. A
``KeyboardInterrupt`` raised inside one of those callbacks unwinds through C++ and aborts the
process ("Segfault encountered"). So the search runs in a child in its own session: the terminal's
Ctrl-C reaches only the parent, which stops the child's whole process group (builder and runner
workers included), then distills what the log holds. Every record is already fsynced, so nothing
measured is lost; the next run resumes.

Protocol: the parent writes one pickled ``Job`` to the child's stdin and keeps stdin open; the
child writes one JSON line per progress update to its stdout (anything else it prints goes to
stderr) and a last line ``{"done": true}`` or ``{"error": <pickled exception, base64>}``. When
the parent dies, the child's stdin reaches end of file and the child kills its process group.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass


@dataclass
class Job:
    specs: list  # [(Spec, weight)]
    target: object  # TargetInfo
    profile: object  # Profile | None
    measure: object  # Measure
    log_dir: str
    trials: int
    seed: int | None
    num_trials_per_iter: int
    population: int | None


def run(job: Job, on_update=None, stop_grace_s: float = 10.0) -> None:
    """Run ``job`` in a child process; ``on_update(index, trials, failed, best_s, exhausted)`` per batch.
    Re-raises the child's exception; on KeyboardInterrupt stops the child and re-raises."""
    proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        proc.stdin.write(pickle.dumps(job))
        proc.stdin.flush()
        error = None
        for line in proc.stdout:
            msg = json.loads(line)
            if "error" in msg:
                error = pickle.loads(base64.b64decode(msg["error"]))
            elif "i" in msg and on_update is not None:
                on_update(msg["i"], msg["trials"], msg["failed"], msg["best_s"], msg.get("exhausted", False))
        code = proc.wait()
        _stop(proc, 0)  # workers the child left behind
    except BaseException:
        _stop(proc, stop_grace_s)
        raise
    finally:
        proc.stdin.close()
        proc.stdout.close()
    if error is not None:
        raise error
    if code != 0:
        raise RuntimeError(f"the tuning process exited with status {code} (see its messages above); the records "
                           f"measured before are kept, run the same command again to resume")


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Stop the child's process group: SIGTERM, then SIGKILL after ``grace_s``. The SIGKILL goes to
    the group even when the child has exited, so no builder or runner worker outlives it (one
    would keep the pipes it inherited open, and whoever reads the parent's output would wait)."""
    if grace_s > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        proc.wait(30.0)
    except subprocess.TimeoutExpired:
        pass


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
        from pathlib import Path

        from . import tuning

        wls = tuning.prepare(job.specs, job.target)
        index = {id(w): i for i, w in enumerate(wls)}

        def update(_i, w):
            send({"i": index[id(w)], "trials": w.trials, "failed": w.failed, "best_s": w.best_s,
                  "exhausted": w.exhausted})

        db = tuning.TuningLog(Path(job.log_dir))
        tuning.tune(wls, job.target, db, trials=job.trials, profile=job.profile,
                    measure=job.measure, seed=job.seed, on_update=update,
                    num_trials_per_iter=job.num_trials_per_iter, population=job.population)
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        if db is not None and db.write_error is not None:  # the cause, whatever TVM made of it on the way out
            exc = db.write_error
        try:
            blob = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            blob = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        send({"error": base64.b64encode(blob).decode()})
        out.flush()
        os._exit(1)
    send({"done": True})
    out.flush()
    os._exit(0)  # skip interpreter teardown: TVM's worker pools can hang it


if __name__ == "__main__":
    _main()
