"""Which path an op runs on this machine: its tvmconv kernel or the vendor path (the PyTorch call a
user would otherwise write), decided where it runs.

A choice holds only for the machine it was measured on (``backends.machine``: device model, target,
threads). A kernel's choice (``decide``), in order:

1. ``calibrated here``: this machine's choice for the workload and the same schedule, from the
   user cache's ``dispatch/<machine key>.json`` (read once per process);
2. ``record, this machine``: the schedule record's ``dispatch``, where it names this machine;
3. otherwise none yet (``undecided``; a record's choice from another machine, or one written
   before records named their machine, is not applied): the op's first calls on this machine
   alternate the two paths, each call returning its path's result, ``WARMUP`` of each
   untimed and then ``CALLS`` of each timed (up to ``MAX_CALLS`` where that may still decide,
   ``EARLY`` where one path is ``CLEAR`` times slower in every call); ``judge`` decides, and it
   is stored as in 1. (Each of these calls gives its
   path's answer: two paths round differently, so the first calls of a workload not yet decided
   may differ in their last bits; once decided, a process's calls are bitwise stable.)

``tvmconv calibrate`` makes the choices ahead, timing both paths as ``tvmconv bench`` does;
convert re-times a layer inside the model and tuning times the tuned op: every one of them decides
by ``judge`` (one rule for every speed decision), on warm interleaved rounds. Where the two paths
are within the noise the kernel runs and the choice is stored as not decided (``decided``
false): a later process measures it again on its first calls. A workload without a vendor path
always runs the kernel. The file::

    {"format": 1, "machine": {"key", "device", "profile", "threads"},
     "choices": {"<cache.schedule_key>": {"workload", "profile", "choice", "tvmconv_s", "vendor_s",
                                           "tvmconv_best_s", "vendor_best_s", "calls", "source",
                                           "schedule", "measured_at", "decided", "margin", "agree",
                                           "rounds"}}}

``*_s`` are medians (what a table shows), ``*_best_s`` the best times; ``decided``, ``margin``,
``agree`` and ``rounds`` are ``judge``'s ``Verdict`` (entries written before them count as decided).

``source`` is ``first use``, ``calibrate``, ``convert`` (its first measurement of an op not yet decided)
or ``bench``. A choice convert made inside a model is keyed ``<model>/<workload key>``, with
``model`` and the source ``convert: <model>``: for that model it wins over the op-level choice
(``model_choice``). ``schedule`` is the kernel's schedule
(``cache.schedule_id`` of its record, or ``default``): a choice made for another schedule is not
applied. Written atomically under the file's lock, read only from a trusted directory, and a
damaged file is set aside (``*.corrupt-<time>``) like a damaged record: its workloads are decided again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import Timeout

from . import cache
from .record import DISPATCH_CHOICES, ScheduleRecord
from ..backends import timing
from ..backends.machine import Machine, machine_of

log = logging.getLogger("tvmconv")

FORMAT = 1
WARMUP = 2  # first-use calls of each path not timed (first-call costs: thread pools, oneDNN primitives)
CALLS = 7  # first-use calls of each path timed: the fewest in which ``judge`` can decide
MAX_CALLS = 15  # ...more, up to these, where the best times differ by MARGIN and it is not decided yet
# ...fewer where, after EARLY timed calls of each, every call of one path took more than CLEAR times
# any of the other's: a path several times slower costs each call it is given (measured on the
# AVX-512 Xeon: PyTorch's depthwise convolutions at 15x the kernel's time)
EARLY, CLEAR = 2, 2.0
MARGIN = 0.05  # a decision needs the best times this far apart, besides ``judge``'s test
ALPHA = 0.01  # the sign test's level: equal paths are decided one way in at most this share of measurements
STORE_LOCK_TIMEOUT_S = 1.0  # an op never waits long to store a choice (lost: decided again next process)

UNDECIDED = "undecided"
CALIBRATED = "calibrated here"
RECORD_HERE = "record, this machine"
RECORD_ELSEWHERE = "record, other machine: not applied"
NOT_DECIDED = "not yet decided"
NO_VENDOR = "no vendor path"
WITHIN_NOISE = "within noise before: measured again"

_lock = threading.RLock()
_tables: dict[Path, dict[str, dict]] = {}  # the machine's file -> {workload key: entry}
_settled_here: set[str] = set()  # workload keys measured in this process (not measured again in it)


def path(machine: Machine) -> Path:
    return cache.user_root() / "dispatch" / f"{machine.key}.json"


def _entries(obj) -> dict[str, dict]:
    """The choices a parsed file holds; ValueError naming what is wrong."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"format is not {FORMAT}")
    choices = obj.get("choices")
    if not isinstance(choices, dict):
        raise ValueError("choices is not an object")
    for key, e in choices.items():
        if not isinstance(e, dict) or e.get("choice") not in DISPATCH_CHOICES:
            raise ValueError(f"choices[{key!r}].choice is not one of {DISPATCH_CHOICES}")
        if not isinstance(e.get("schedule"), str):
            raise ValueError(f"choices[{key!r}].schedule is not a string")
        if not isinstance(e.get("decided", True), bool):
            raise ValueError(f"choices[{key!r}].decided is not true or false")
        for name in ("tvmconv_s", "vendor_s", "tvmconv_best_s", "vendor_best_s", "margin"):
            v = e.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"choices[{key!r}].{name} is not a number")
    return choices


def _read(p: Path) -> dict[str, dict]:
    if not cache.trusted(p.parent):
        return {}
    obj = cache.read_json(p)  # (absent: None; not JSON: set aside)
    if obj is None:
        return {}
    try:
        return _entries(obj)
    except ValueError as exc:
        cache.set_aside(p, f"not a valid dispatch file: {exc}")
        return {}


def table(machine: Machine) -> dict[str, dict]:
    """This machine's stored choices (read from the user cache once per process)."""
    p = path(machine)  # (keyed by the file: a process may change TVMCONV_CACHE_DIR)
    found = _tables.get(p)
    if found is None:
        with _lock:
            found = _tables.get(p)
            if found is None:
                found = _tables[p] = _read(p)
    return found


def forget() -> None:
    """Drop the choices read so far: the next ``table`` reads the file again, as a new process would."""
    with _lock:
        _tables.clear()
        _settled_here.clear()


def schedule_of(record: ScheduleRecord | None) -> str:
    """What a stored choice was measured with: the record's schedule, or ``default``."""
    return cache.schedule_id(record) if record is not None else "default"


def _has_vendor(spec) -> bool:
    from ..reference import vendor_for

    return vendor_for(spec) is not None


def decide(spec, target, record: ScheduleRecord | None) -> tuple[str, str]:
    """``(choice, source)`` of a kernel of ``spec`` on ``target`` built with ``record`` (None: the
    default schedule): choice ``tvmconv``, ``vendor`` or ``undecided`` (calibrate on first use)."""
    if not _has_vendor(spec):
        return "tvmconv", NO_VENDOR
    here = machine_of(target)
    key = cache.schedule_key(spec, target)
    entry = table(here).get(key)
    if entry is not None and entry["schedule"] == schedule_of(record):
        if entry.get("decided", True) is not False or key in _settled_here:
            return entry["choice"], CALIBRATED
        return UNDECIDED, WITHIN_NOISE  # (measured again: on first use, in this process)
    d = record.dispatch if record is not None else None
    if d is not None and d.machine == here.key and d.extra.get("decided", True) is not False:
        return d.choice, RECORD_HERE
    return UNDECIDED, RECORD_ELSEWHERE if d is not None else NOT_DECIDED


@dataclass(frozen=True)
class Verdict:
    """What ``judge`` made of the two paths' rounds."""

    choice: str  # the path to run: "vendor" only when decided so
    decided: bool  # False: within the noise (the kernel runs; measured again later)
    margin: float  # the vendor's best time over the kernel's: above 1, the kernel is faster
    agree: int  # paired rounds in which the path with the better best time was faster
    rounds: int

    @property
    def label(self) -> str:
        how = f"{self.margin:.2f}x, {self.agree}/{self.rounds} rounds"
        return f"{self.choice} ({how})" if self.decided else f"undecided: within noise ({how})"

    def worth_more_rounds(self) -> bool:
        """Whether more rounds may decide it: the best times differ by ``MARGIN`` and the test
        has not passed yet."""
        return not self.decided and abs(math.log(self.margin)) >= math.log1p(MARGIN)


def judge(tvmconv_s: list[float], vendor_s: list[float]) -> Verdict:
    """The one rule for every kernel-or-vendor decision (first use, calibrate, convert's in-model
    re-timing, tuning, ``bench --dispatch``). Round i of each list was measured back to back
    (interleaved), so the pair saw the same machine. The path with the better best time (on a
    shared machine noise only adds time) is decided when it was faster in so many paired rounds
    that equal paths would do so in at most ``ALPHA`` of measurements (a sign test: 7 of 7, 13 of
    15), and by ``MARGIN`` at its best; or, from ``EARLY`` rounds on, when every call of the other
    took more than ``CLEAR`` times any of its. Otherwise it is within the noise: the kernel runs.
    (Best times alone decided before: on a machine whose rounds spread 10-25% they flipped layers
    both ways between runs.)"""
    n = min(len(tvmconv_s), len(vendor_s))
    t, v = tvmconv_s[:n], vendor_s[:n]
    if n == 0:
        return Verdict("tvmconv", False, 1.0, 0, 0)
    margin = min(v) / min(t)
    kernel_faster = margin >= 1
    agree = sum((a <= b) == kernel_faster for a, b in zip(t, v))
    fast, slow = (t, v) if kernel_faster else (v, t)
    decided = ((agree >= _sign_test_needs(n) and abs(math.log(margin)) >= math.log1p(MARGIN))
               or (n >= EARLY and min(slow) > CLEAR * max(fast)))
    return Verdict("vendor" if decided and not kernel_faster else "tvmconv", decided, margin, agree, n)


def _sign_test_needs(n: int) -> int:
    """The fewest of ``n`` paired rounds one of two equal paths wins with probability at most
    ``ALPHA`` (n + 1 where no count does: n < 7)."""
    for k in range(n + 1):
        if sum(math.comb(n, j) for j in range(k, n + 1)) / 2 ** n <= ALPHA:
            return k
    return n + 1


def measure(time_rounds, rounds: int = CALLS, max_rounds: int = MAX_CALLS) -> tuple[list, list, Verdict]:
    """``(kernel times, vendor times, verdict)``: ``time_rounds(k)`` times ``k`` interleaved rounds
    of both paths (``(kernel times, vendor times)``, e.g. through ``Backend.time``); more rounds,
    up to ``max_rounds``, while they may still decide (``Verdict.worth_more_rounds``)."""
    a, b = time_rounds(rounds)
    verdict = judge(a, b)
    if verdict.worth_more_rounds() and max_rounds > len(a):
        more = time_rounds(max_rounds - len(a))
        a, b = list(a) + list(more[0]), list(b) + list(more[1])
        verdict = judge(a, b)
    return list(a), list(b), verdict


class Calibration:
    """One thread's first-use calibration of one kernel: calls alternate kernel, vendor, kernel...;
    the first ``WARMUP`` of each are not timed, the next ``CALLS`` of each are (``EARLY`` where one
    path is clearly slower: see ``CLEAR``)."""

    PATHS = ("tvmconv", "vendor")

    def __init__(self):
        self.calls = 0
        self.times: dict[str, list[float]] = {"tvmconv": [], "vendor": []}

    def next_path(self) -> str:
        return self.PATHS[self.calls % 2]

    def add(self, which: str, seconds: float) -> None:
        self.calls += 1
        if self.calls > 2 * WARMUP:
            self.times[which].append(seconds)

    @property
    def done(self) -> bool:
        t, v = self.times["tvmconv"], self.times["vendor"]
        if self.calls % 2 or len(t) < EARLY:
            return False
        verdict = judge(t, v)
        if verdict.decided or len(t) >= MAX_CALLS:
            return True
        return len(t) >= CALLS and not verdict.worth_more_rounds()


def _entry(kern, tvmconv_s: list[float], vendor_s: list[float], source: str, verdict: Verdict) -> dict:
    """The stored form of ``verdict`` on ``kern``'s paired times (see the module's file format)."""
    return {"workload": kern.spec.name, "profile": kern.target.profile, "choice": verdict.choice,
            "tvmconv_s": timing.median(tvmconv_s), "vendor_s": timing.median(vendor_s),
            "tvmconv_best_s": min(tvmconv_s), "vendor_best_s": min(vendor_s),
            "calls": len(tvmconv_s) + len(vendor_s), "source": source, "schedule": kern.schedule_id,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "decided": verdict.decided,
            "margin": verdict.margin, "agree": verdict.agree, "rounds": verdict.rounds}


def settle(kern, tvmconv_s: list[float], vendor_s: list[float], source: str) -> str:
    """Decide ``kern``'s path from the two paths' paired times (``judge``), make the kernel take it and
    store it for this machine (as not decided where ``judge`` finds the paths within the noise:
    the kernel runs, and a later process measures it again). A first-use calibration another
    thread settled first keeps that thread's choice. Returns the choice."""
    verdict = judge(tvmconv_s, vendor_s)
    choice = verdict.choice
    here = machine_of(kern.target)
    key = cache.schedule_key(kern.spec, kern.target)
    entry = _entry(kern, tvmconv_s, vendor_s, source, verdict)
    with _lock:
        if source == "first use" and kern.dispatch != UNDECIDED:
            return kern.dispatch
        table(here)[key] = entry
        _settled_here.add(key)
        kern.dispatch, kern.dispatch_source = choice, CALIBRATED
    store(here, {key: entry})
    return choice


# -- choices made inside a model --------------------------------------------------------------------
# convert times each layer against the PyTorch nodes it replaces, on the input the model gives it.
# That choice is the model's: it is stored beside the ops' under ``<model>/<workload key>`` and, for
# that model, wins over the op-level one (issue 37: in-model timing beats op timing where they
# disagree); the ops themselves keep their own.
def model_key(model: str, kern) -> str:
    return f"{model}/{cache.schedule_key(kern.spec, kern.target)}"


def model_choice(model: str, kern) -> dict | None:
    """The entry stored for ``kern``'s workload inside ``model`` on this machine, measured with
    ``kern``'s schedule; None where there is none."""
    entry = table(machine_of(kern.target)).get(model_key(model, kern))
    return entry if entry is not None and entry["schedule"] == kern.schedule_id else None


def settle_in_model(model: str, kern, tvmconv_s: list[float], vendor_s: list[float]) -> dict:
    """Decide ``kern``'s path inside ``model`` (``judge``) and store it as that model's; the op-level
    choice is not changed. Returns the stored entry."""
    entry = _entry(kern, tvmconv_s, vendor_s, f"convert: {model}", judge(tvmconv_s, vendor_s))
    entry["model"] = model
    here, key = machine_of(kern.target), model_key(model, kern)
    with _lock:
        table(here)[key] = entry
    store(here, {key: entry})
    return entry


def store(machine: Machine, entries: dict[str, dict]) -> None:
    """Merge ``entries`` into the machine's file (read again under its lock, so two processes
    deciding different workloads keep both). Never raises: a choice not stored is decided again
    by the next process."""
    p = path(machine)
    try:
        cache.make_dirs(p.parent)
        if not cache.trusted(p.parent):
            return
        with cache.lock(p, timeout=STORE_LOCK_TIMEOUT_S):
            current = _read(p)
            current.update(entries)
            cache.write_json(p, {"format": FORMAT, "machine": machine.to_dict(), "choices": current})
    except Timeout:
        log.info("tvmconv: %s.lock is held by another process; the dispatch choice is not stored", p)
    except OSError as exc:
        log.info("tvmconv: could not store the dispatch choice in %s: %s", p, exc)


# -- for `tvmconv cache list` ----------------------------------------------------------------------
def _profile_target(profile: str | None):
    from ..backends.target import resolve

    try:
        return resolve(profile) if profile else None
    except ValueError:  # a profile no longer there
        return None


def record_choice(record: ScheduleRecord) -> tuple[str | None, str, dict | None]:
    """``(choice, source, stored entry)`` of a record's workload on its profile's target on this
    machine, as ``decide`` would find it (choice None: not yet decided)."""
    tgt = _profile_target(record.profile)
    here = machine_of(tgt) if tgt is not None else None
    if here is not None:
        entry = table(here).get(record.key)
        if entry is not None and entry["schedule"] == schedule_of(record):
            return entry["choice"], CALIBRATED, entry
    d = record.dispatch
    if d is None:
        return None, NOT_DECIDED, None
    return d.choice, RECORD_HERE if here is not None and d.machine == here.key else RECORD_ELSEWHERE, None


def calibrated(profile: str | None = None):
    """``(profile, workload key, entry)`` for every choice stored for this machine (per profile)."""
    base = cache.user_root() / "dispatch"
    if not base.is_dir() or not cache.trusted(base):
        return
    for p in sorted(base.glob("*.json")):
        obj = cache.read_json(p)
        machine = obj.get("machine") if isinstance(obj, dict) else None
        prof = machine.get("profile") if isinstance(machine, dict) else None
        tgt = _profile_target(prof) if isinstance(prof, str) and (profile is None or prof == profile) else None
        if tgt is None or machine_of(tgt).key != p.stem:  # another machine's, or another thread count's
            continue
        for key, entry in table(machine_of(tgt)).items():
            yield prof, key, entry
