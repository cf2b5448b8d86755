"""The on-disk cache: tuned schedule records, raw tuning logs, compiled kernels.

Two roots share one layout; the shipped root (the repository: ``knobs.shipped_dir()``) is read
first, the user root (``~/.cache/tvmconv`` or ``TVMCONV_CACHE_DIR``) next, and only the user
root is written::

    <root>/schedules/<profile>/<spec name>-<key16>.json     best schedule per workload (distilled)
    <root>/tuning_logs/<profile>/<target key16>/            MetaSchedule JSON database (TVM's format)
    <user root>/kernels/<profile>/<lib key>.so               compiled kernels
    <user root>/kernels/<profile>/<lib key>.json             its manifest (key, spec, size, sha256)

``schedule_key`` hashes the cache format version, the TVM version, the target as it affects code
generation (kind, mcpu, mtriple, mattr, arch, host) and the normalised spec, the way Triton keys
its kernel cache. Every write goes to a temporary file in the destination directory and is renamed
into place under a file lock, so a reader never sees half a file and two writers never lose each
other's work. A file that does not parse is reported, renamed to ``*.corrupt-<time>`` (user root)
and treated as absent. A schedule record is a ``record.ScheduleRecord``, read and written only
through ``read_record`` and ``write_record`` (a file that is JSON but not a valid record is set
aside the same way, naming the bad field).

The user root is read only while it is *trusted*: owned by this user (or root) and writable by no
one else, down to the directory read (``trusted``). A compiled library runs code when it is loaded,
so it is loaded only from a trusted directory, as a regular file whose manifest names the kernel
asked for and whose bytes hash to the manifest's sha256 (``library_ok``).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from filelock import Timeout

from ..spec import Spec
from ..backends.target import TargetInfo, profiles
# the file-safety core, below the backends (which keep files too); the runtime's callers use it as cache.*
from ..storage import (LOCK_TIMEOUT_S, SHORT_LOCK_TIMEOUT_S, NotRegular, atomic_path, digest,  # noqa: F401
                       file_manifest, file_sha256, keep, lock, make_dirs, manifest_path, move_aside, open_regular,
                       read_bytes, read_json, set_aside, set_aside_if_user, shipped_root, trusted, tvm_version,
                       user_root, write_json)
from .record import RecordError, ScheduleRecord

log = logging.getLogger("tvmconv")

CACHE_FORMAT_VERSION = 1
# Storing a compiled library is optional (the op runs from memory without it): never wait for a
# lock whose holder may be stopped or hung, only try it once
LIBRARY_LOCK_TIMEOUT_S = 0


def target_key(target: TargetInfo) -> str:
    return digest({"format": CACHE_FORMAT_VERSION, "tvm": tvm_version(), "target": target.key_dict})[:16]


def schedule_key(spec: Spec, target: TargetInfo) -> str:
    """The key of ``spec``'s tuned schedule on ``target``."""
    return digest({"format": CACHE_FORMAT_VERSION, "tvm": tvm_version(), "target": target.key_dict,
                   "spec": spec.to_dict()})[:32]


def roots() -> list[Path]:
    """Read order: shipped first, then the user cache (the same directory counts once)."""
    out: list[Path] = []
    for r in (shipped_root(), user_root()):
        if r.resolve() not in [x.resolve() for x in out]:
            out.append(r)
    return out


def schedule_path(root: Path, spec: Spec, target: TargetInfo) -> Path:
    return root / "schedules" / target.profile / f"{spec.name}-{schedule_key(spec, target)[:16]}.json"


def log_dir(root: Path, target: TargetInfo) -> Path:
    return root / "tuning_logs" / target.profile / target_key(target)


def kernel_path(target: TargetInfo, lib_key: str) -> Path:
    return user_root() / "kernels" / target.profile / f"{lib_key}.so"


# -- compiled libraries --------------------------------------------------------------------------
def _library_problem(path: Path, st: os.stat_result, key: str, spec: dict) -> str | None:
    if not stat.S_ISREG(st.st_mode):  # a symlink may point at any file at all
        return "not a regular file"
    try:
        man = json.loads(read_bytes(manifest_path(path)))
    except (OSError, ValueError):
        return f"no readable manifest {manifest_path(path).name}"
    if not isinstance(man, dict) or man.get("key") != key or digest(man.get("spec")) != digest(spec):
        return "its manifest names another kernel"
    if man.get("size") != st.st_size or man.get("sha256") != file_sha256(path):
        return "its bytes do not match its manifest (truncated or altered)"
    return None


def library_ok(path: Path, key: str, spec: Spec) -> bool:
    """Whether the compiled library at ``path`` may be loaded as kernel ``key`` of ``spec``.
    Checked before it is loaded because loading runs its code: a truncated file kills the process
    (SIGBUS) and a foreign one computes something else. A library that fails is set aside, with
    one warning; one in an untrusted directory is left alone."""
    if not trusted(path.parent):
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    why = _library_problem(path, st, key, spec.to_dict())
    if why is None:
        return True
    if set_aside(path, why) is not None:
        move_aside(manifest_path(path))  # it describes a file no longer there
    return False


def save_library(path: Path, export: Callable[[str], None], key: str, spec: Spec, target: TargetInfo) -> bool:
    """Store the library ``export(file)`` writes at ``path`` with its manifest, unless another
    process holds the lock (never waited for: storing is optional), the directory is untrusted or
    a file is there. Failures are logged at INFO: the op runs from memory. True where it stored it."""
    if not trusted(path.parent):
        return False
    try:
        with lock(path, timeout=LIBRARY_LOCK_TIMEOUT_S):
            if os.path.lexists(path):
                return False
            with atomic_path(path, suffix=".so") as tmp:  # TVM picks how to link from the suffix
                export(str(tmp))
                # the manifest first (the library is renamed into place after this block): a reader
                # never finds a library without its manifest
                write_json(manifest_path(path), {"format": CACHE_FORMAT_VERSION, "key": key, "spec": spec.to_dict(),
                                                 "target": target.dict, "size": tmp.stat().st_size,
                                                 "sha256": file_sha256(tmp)})
        return True
    except Timeout:
        log.info("tvmconv: %s.lock is held by another process; not caching the compiled kernel", path)
        return False
    except Exception as exc:  # noqa: BLE001 - no C compiler, read-only cache...: run from memory
        log.info("tvmconv: could not cache the compiled kernel at %s: %s", path, exc)
        return False


# -- schedule records ----------------------------------------------------------------------------
def read_record(path: Path) -> ScheduleRecord | None:
    """The schedule record at ``path``, or None when it is absent or invalid (an invalid user
    record is set aside, with one warning; a shipped one is reported and ignored)."""
    obj = read_json(path)
    if obj is None:
        return None
    try:
        return ScheduleRecord.from_dict(obj)
    except RecordError as exc:
        set_aside_if_user(path, f"not a valid schedule record: {exc}")
        return None


def write_record(path: Path, record: ScheduleRecord) -> None:
    """Write ``record`` at ``path`` (atomically; the caller holds ``lock(path)``)."""
    write_json(path, record.to_dict())


def _readable(root: Path, d: Path) -> bool:
    """Whether records under ``root`` in directory ``d`` may be read: the shipped root always, the
    user root when trusted (a record's trace is applied to the kernel)."""
    return root != user_root() or trusted(d)


def find_record(spec: Spec, target: TargetInfo) -> tuple[ScheduleRecord, Path] | None:
    """The best schedule record for ``spec`` on ``target`` among the shipped and user caches:
    when both hold one, the one with the lower measured time wins."""
    key = schedule_key(spec, target)
    best = None
    for root in roots():
        path = schedule_path(root, spec, target)
        if not _readable(root, path.parent):
            continue
        rec = read_record(path)
        if rec is None:
            continue
        if rec.key != key or rec.format != CACHE_FORMAT_VERSION:
            log.warning("tvmconv: schedule record %s belongs to another key or format; ignoring it", path)
            continue
        if best is None or rec.run_secs < best[0].run_secs:
            best = (rec, path)
    return best


def schedule_id(record: ScheduleRecord) -> str:
    """What identifies a record's schedule: its plan and trace."""
    return digest(record.schedule)[:16]


def save_record(record: ScheduleRecord, spec: Spec, target: TargetInfo, root: Path | None = None) -> Path:
    """Write ``record`` unless a record at least as fast is already there (under the lock, so two
    tuners distilling the same workload keep the faster result). A record chosen by timing
    candidates against each other (``validated``) replaces one whose schedule was among them:
    that comparison was made in one run, times from two runs of a noisy machine were not."""
    path = schedule_path(root or user_root(), spec, target)
    with lock(path):
        old = read_record(path)
        if old is not None and old.key == record.key:
            beaten = record.validated.ids() if record.validated else set()
            if schedule_id(old) not in beaten and old.run_secs <= record.run_secs:
                return path
        write_record(path, record)
    return path


def list_records(root: Path | None = None, profile: str | None = None) -> list[tuple[ScheduleRecord, Path]]:
    out = []
    for r in ([root] if root else roots()):
        base = r / "schedules"
        if not base.is_dir():
            continue
        for path in sorted(base.glob(f"{profile or '*'}/*.json")):
            rec = read_record(path) if _readable(r, path.parent) else None
            if rec is not None:
                out.append((rec, path))
    return out


def tuned_record(spec: Spec, target: TargetInfo) -> tuple[ScheduleRecord, Path, TargetInfo] | None:
    """The record for ``spec`` on ``target`` or, failing that, on a profile ``target`` can run."""
    found = find_record(spec, target)
    if found:
        return found[0], found[1], target
    known = profiles()  # reads the profile files: once
    prof = known.get(target.profile)
    for other in (prof.compatible if prof else ()):
        if other in known:
            alt = known[other].target_info(target.num_cores)
            found = find_record(spec, alt)
            if found:
                return found[0], found[1], alt
    return None


def new_record(spec, target, *, plan: dict, trace: list, run_secs: float, **fields) -> ScheduleRecord:
    """A record of ``spec`` on ``target`` (a ``TargetInfo``) keyed as the cache keys it, with the
    format, TVM version, name and profile filled in; ``fields`` sets the optional ones."""
    def plain(obj):  # the JSON form (lists, not tuples), as the record reads back from its file
        return json.loads(json.dumps(obj))

    return ScheduleRecord(format=CACHE_FORMAT_VERSION, key=schedule_key(spec, target),
                          spec=plain(spec.to_dict()), target=plain(target.key_dict), plan=plain(plan),
                          trace=plain(trace), run_secs=run_secs, **{"name": spec.name, "tvm": tvm_version(),
                                                "profile": target.profile, **fields})
