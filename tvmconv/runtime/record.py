"""The schedule record: one tuned schedule of one workload on one target, typed and versioned.

A record is what tuning distills from its log into ``schedules/<profile>/<name>-<key16>.json``
and what the runtime applies to a kernel. This module is the one place a record is read from or
written to JSON (``ScheduleRecord.from_dict`` / ``to_dict``); everything else handles the typed
object. It imports nothing of the search, so the runtime can read records without it.

On disk (``to_dict``), with the fields below::

    {"format": 1, "key": "...", "name": "...", "spec": {...}, "target": {...}, "plan": {...},
     "trace": [...], "run_secs": 1.2e-05, ..., "dispatch": {...}, "validated": {...}}

``record_format`` is the version of this layout (``RECORD_FORMAT``). Version 1 is the layout of
every record written before the field existed, so a file without it reads as version 1 and a
version 1 record is written without it (the shipped records round-trip byte for byte); later
versions write it, and a record of a version newer than this code is refused. ``format`` is the cache format
version that ``cache.schedule_key`` hashes (a record of another one belongs to another key).
Optional fields that are absent stay absent when written back; keys this version does not know
are kept (``extra``) and written back as they were, so a record round-trips unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

RECORD_FORMAT = 1
DISPATCH_CHOICES = ("tvmconv", "vendor")


class RecordError(ValueError):
    """A schedule record that this version cannot read. ``field`` names the offending field
    (dotted, e.g. ``dispatch.choice`` or ``plan.vb``), or is empty for the record as a whole."""

    def __init__(self, field_name: str, why: str):
        self.field, self.why = field_name, why
        super().__init__(f"{field_name} {why}" if field_name else why)

    def __reduce__(self):  # (it crosses process boundaries inside tuning errors)
        return type(self), (self.field, self.why)


# -- checking JSON values ------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# a field's kind -> (what it must be, the test)
_KINDS = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "int": ("an integer", _is_int),
    "num": ("a finite number", _is_num),
    "pos": ("a positive time", lambda v: _is_num(v) and v > 0),
    "dict": ("an object", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "bool": ("a boolean", lambda v: isinstance(v, bool)),
}


def _check(value, kind: str, name: str):
    """``value`` if it is of ``kind`` (a key of ``_KINDS``; numbers as floats), else RecordError."""
    what, ok = _KINDS[kind]
    if not ok(value):
        raise RecordError(name, f"is {value!r:.60}, not {what}")
    return float(value) if kind in ("num", "pos") else value


def check_plan(plan, where: str = "plan") -> dict:
    """``plan`` (a ``compute.plan_to_dict`` object) if ``compute.plan_from_dict`` can take it,
    else RecordError naming the field."""
    _check(plan, "dict", where)
    _check(plan.get("kind", "plain"), "str", f"{where}.kind")
    for name in ("vb", "owi", "rows"):
        v = plan.get(name, 1)
        if not _is_int(v) or v < 1:
            raise RecordError(f"{where}.{name}", f"is {v!r:.60}, not a positive integer")
    _check(plan.get("serial", False), "bool", f"{where}.serial")
    _check(plan.get("phases", False), "bool", f"{where}.phases")
    _check(plan.get("channels_outer", False), "bool", f"{where}.channels_outer")
    stages = plan.get("stages", [])
    if not isinstance(stages, (list, tuple)):
        raise RecordError(f"{where}.stages", "is not a list")
    for i, stage in enumerate(stages):
        if not (isinstance(stage, (list, tuple)) and len(stage) == 2 and isinstance(stage[0], str)):
            raise RecordError(f"{where}.stages[{i}]", "is not a [prefix, plan] pair")
        check_plan(stage[1], f"{where}.stages[{i}]")
    return plan


# -- the parts -----------------------------------------------------------------------------------
def _kinds(cls) -> dict[str, str]:
    return {f.name: f.metadata["kind"] for f in dataclasses.fields(cls) if "kind" in f.metadata}


def _f(kind: str, default=dataclasses.MISSING, **kw):
    if default is dataclasses.MISSING:
        return field(metadata={"kind": kind}, **kw)
    return field(default=default, metadata={"kind": kind}, **kw)


class _Part:
    """from_dict/to_dict for a frozen dataclass whose fields say their JSON kind (``_f``); optional
    fields (default None) are omitted when None; unknown keys are kept in ``extra``."""

    _required: tuple[str, ...] = ()

    @classmethod
    def _fields_from(cls, obj, where: str) -> dict:
        if not isinstance(obj, Mapping):
            raise RecordError(where, "is not a JSON object")
        prefix = f"{where}." if where else ""
        missing = [k for k in cls._required if k not in obj]
        if missing:
            raise RecordError(prefix + missing[0], "is missing")
        kinds = _kinds(cls)
        out = {name: _check(obj[name], kind, prefix + name)
               for name, kind in kinds.items() if name in cls._required or obj.get(name) is not None}
        out["extra"] = {k: v for k, v in obj.items() if k not in kinds}
        return out

    def _fields_to(self) -> dict:
        out = dict(self.extra)
        for name in _kinds(type(self)):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Dispatch(_Part):
    """Which of the tuned kernel and the vendor path the op calls, the times that decided it and
    the machine they were measured on (the choice applies there only: runtime/dispatch.py)."""

    choice: str = _f("str")
    tvmconv_s: float | None = _f("num", None)
    vendor_s: float | None = _f("num", None)
    vendor: str | None = _f("str", None)  # what the vendor path is ("F.conv2d", ...)
    threads: int | None = _f("int", None)
    measured_at: str | None = _f("str", None)
    # where it was measured (backends.machine: ``Machine.key``, ``.description``); absent in records
    # written before the field existed: an unknown machine, whose choice is not applied
    machine: str | None = _f("str", None)
    machine_description: str | None = _f("str", None)
    extra: Mapping = field(default_factory=dict, compare=False)

    _required = ("choice",)

    @classmethod
    def from_dict(cls, obj, where: str = "dispatch") -> "Dispatch":
        d = cls._fields_from(obj, where)
        if d["choice"] not in DISPATCH_CHOICES:
            raise RecordError(f"{where}.choice", f"is {d['choice']!r}, not one of {DISPATCH_CHOICES}")
        return cls(**d)

    def to_dict(self) -> dict:
        return self._fields_to()


@dataclass(frozen=True)
class Candidate(_Part):
    """One schedule timed through the op in a validation."""

    id: str | None = _f("str", None)  # schedule_id of its plan and trace
    source: str | None = _f("str", None)
    plan: dict | None = _f("dict", None)
    tuning_secs: float | None = _f("num", None)
    op_secs: float | None = _f("num", None)  # None: it no longer applied
    extra: Mapping = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj, where: str) -> "Candidate":
        return cls(**cls._fields_from(obj, where))

    def to_dict(self) -> dict:  # every field, None too (op_secs None: it was timed and did not apply)
        return {**self.extra, **{name: getattr(self, name) for name in _kinds(type(self))}}


@dataclass(frozen=True)
class Validation(_Part):
    """How the record was chosen: its candidates timed against each other through the op."""

    how: str | None = _f("str", None)
    threads: int | None = _f("int", None)
    measured_at: str | None = _f("str", None)
    candidates: tuple[Candidate, ...] = ()
    extra: Mapping = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, obj, where: str = "validated") -> "Validation":
        d = cls._fields_from(obj, where)
        cands = d["extra"].pop("candidates", [])
        _check(cands, "list", f"{where}.candidates")
        d["candidates"] = tuple(Candidate.from_dict(c, f"{where}.candidates[{i}]") for i, c in enumerate(cands))
        return cls(**d)

    def to_dict(self) -> dict:
        return {**self._fields_to(), "candidates": [c.to_dict() for c in self.candidates]}

    def ids(self) -> set[str]:
        return {c.id for c in self.candidates if c.id is not None}


# -- the record ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleRecord(_Part):
    """A tuned schedule of one workload on one target (see the module docstring for the JSON).

    Required: ``format`` (cache format), ``key`` (``cache.schedule_key``), ``spec`` (the spec's
    ``to_dict``), ``target`` (the target's key dict), ``plan`` (``compute.plan_to_dict``), ``trace``
    (the MetaSchedule trace JSON to apply to ``prim_func(spec, plan)``), ``run_secs`` (its time,
    seconds). The rest is what tuning measured and when."""

    format: int = _f("int")
    key: str = _f("str")
    spec: dict = _f("dict")
    target: dict = _f("dict")
    plan: dict = _f("dict")
    trace: list = _f("list")
    run_secs: float = _f("pos")
    name: str | None = _f("str", None)
    tvm: str | None = _f("str", None)  # the TVM version it was tuned with
    profile: str | None = _f("str", None)
    source: str | None = _f("str", None)  # default | metaschedule | plan-search | saved
    gflops: float | None = _f("num", None)
    default_secs: float | None = _f("num", None)  # the default schedule's time, measured the same way
    trials: int | None = _f("int", None)
    num_cores: int | None = _f("int", None)
    workload_shash: str | None = _f("str", None)
    tuned_at: str | None = _f("str", None)
    dispatch: Dispatch | None = None
    validated: Validation | None = None
    # The profile a record was tuned on where the runtime re-derived it for another target of a
    # different vector width (``Backend.transfer_record``); made in memory, never read from a file
    transferred_from: str | None = field(default=None, compare=True)
    record_format: int = RECORD_FORMAT
    extra: Mapping = field(default_factory=dict, compare=False)

    _required = ("format", "key", "spec", "target", "plan", "trace", "run_secs")

    @classmethod
    def from_dict(cls, obj) -> "ScheduleRecord":
        """The record a parsed JSON object holds. Raises RecordError naming the first bad field."""
        if not isinstance(obj, Mapping):
            raise RecordError("", "not a JSON object")
        version = obj.get("record_format", 1)
        if not _is_int(version) or version < 1:
            raise RecordError("record_format", f"is {version!r:.60}, not a format version")
        if version > RECORD_FORMAT:
            raise RecordError("record_format", f"is {version}: written by a newer tvmconv (this one reads up to "
                                               f"{RECORD_FORMAT})")
        d = cls._fields_from(obj, "")
        extra = d["extra"]
        extra.pop("record_format", None)
        check_plan(d["plan"])
        for name, part in (("dispatch", Dispatch), ("validated", Validation)):
            value = extra.pop(name, None)
            d[name] = None if value is None else part.from_dict(value, name)
        return cls(**d, record_format=version)

    def to_dict(self) -> dict:
        """The JSON object of the record (``from_dict`` of it gives an equal record)."""
        out = self._fields_to()
        if self.record_format != 1:  # (version 1 is the layout of every record before the field existed)
            out["record_format"] = self.record_format
        if self.dispatch is not None:
            out["dispatch"] = self.dispatch.to_dict()
        if self.validated is not None:
            out["validated"] = self.validated.to_dict()
        return out

    def replace(self, **changes) -> "ScheduleRecord":
        return dataclasses.replace(self, **changes)

    @property
    def schedule(self) -> list:
        """What identifies its schedule: ``[plan, trace]`` (``cache.schedule_id`` hashes it), and
        for a transferred record the profile it came from, so its library and its dispatch choice
        are never those of the original (nor of a build of the original for this target)."""
        if self.transferred_from is not None:
            return [self.plan, self.trace, {"transferred_from": self.transferred_from}]
        return [self.plan, self.trace]

    @property
    def dispatch_choice(self) -> str:
        """'vendor' where tuning measured the vendor path faster, else 'tvmconv'."""
        return "vendor" if self.dispatch is not None and self.dispatch.choice == "vendor" else "tvmconv"
