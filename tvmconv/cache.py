"""The on-disk cache: tuned schedule records, raw tuning logs, compiled kernels.

Two roots share one layout; the shipped root (the repository: ``knobs.shipped_dir()``) is read
first, the user root (``~/.cache/tvmconv`` or ``TVMCONV_CACHE_DIR``) next, and only the user
root is written::

    <root>/schedules/<profile>/<spec name>-<key16>.json     best schedule per workload (distilled)
    <root>/tuning_logs/<profile>/<target key16>/            MetaSchedule JSON database (TVM's format)
    <user root>/kernels/<profile>/<lib key>.so               compiled kernels

``schedule_key`` hashes the cache format version, the TVM version, the target as it affects code
generation (kind, mcpu, mtriple, mattr, arch, host) and the normalised spec, the way Triton keys
its kernel cache. Every write goes to a temporary file in the destination directory and is renamed
into place under a file lock, so a reader never sees half a file and two writers never lose each
other's work. A file that does not parse is reported, renamed to ``*.corrupt-<time>`` (user root)
and treated as absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from filelock import FileLock

from . import knobs
from .spec import Spec
from .target import TargetInfo

log = logging.getLogger("tvmconv")

CACHE_FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 120


@lru_cache(maxsize=1)
def tvm_version() -> str:
    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:  # a source build of TVM
        import tvm

        return tvm.__version__


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def target_key(target: TargetInfo) -> str:
    return digest({"format": CACHE_FORMAT_VERSION, "tvm": tvm_version(), "target": target.key_dict})[:16]


def schedule_key(spec: Spec, target: TargetInfo) -> str:
    """The key of ``spec``'s tuned schedule on ``target``."""
    return digest({"format": CACHE_FORMAT_VERSION, "tvm": tvm_version(), "target": target.key_dict,
                   "spec": spec.to_dict()})[:32]


def user_root() -> Path:
    return knobs.cache_dir()


def shipped_root() -> Path:
    return knobs.shipped_dir()


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


# -- atomic, locked writes -----------------------------------------------------------------------
def lock(path: Path) -> FileLock:
    """The lock guarding ``path`` (a sibling ``.lock`` file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def set_aside(path: Path, why: str) -> Path | None:
    """Rename a corrupt file out of the way (when we may) and say so."""
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, dest)
    except OSError:
        log.warning("tvmconv: cache file %s is unusable (%s); ignoring it", path, why)
        return None
    log.warning("tvmconv: cache file %s is unusable (%s); moved it to %s and carrying on", path, why, dest)
    return dest


def read_json(path: Path, required: tuple[str, ...] = ()):
    """The parsed file, or None when it is absent or corrupt (a corrupt one is set aside)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("tvmconv: cannot read cache file %s (%s); ignoring it", path, exc)
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        _set_aside_if_user(path, f"not valid JSON: {exc}")
        return None
    missing = [k for k in required if not isinstance(obj, dict) or k not in obj]
    if missing:
        _set_aside_if_user(path, f"missing fields {missing}")
        return None
    return obj


def _set_aside_if_user(path: Path, why: str) -> None:
    try:
        path.resolve().relative_to(user_root().resolve())
    except ValueError:  # shipped files are never moved: report only
        log.warning("tvmconv: shipped cache file %s is unusable (%s); ignoring it", path, why)
        return
    set_aside(path, why)


# -- schedule records ----------------------------------------------------------------------------
RECORD_FIELDS = ("format", "key", "spec", "target", "trace", "run_secs", "plan")


def find_record(spec: Spec, target: TargetInfo) -> tuple[dict, Path] | None:
    """The best schedule record for ``spec`` on ``target`` among the shipped and user caches:
    when both hold one, the one with the lower measured time wins."""
    key = schedule_key(spec, target)
    best = None
    for root in roots():
        path = schedule_path(root, spec, target)
        rec = read_json(path, RECORD_FIELDS)
        if rec is None:
            continue
        if rec.get("key") != key or rec.get("format") != CACHE_FORMAT_VERSION:
            log.warning("tvmconv: schedule record %s belongs to another key or format; ignoring it", path)
            continue
        if best is None or rec["run_secs"] < best[0]["run_secs"]:
            best = (rec, path)
    return best


def schedule_id(record: dict) -> str:
    """What identifies a record's schedule: its plan and trace."""
    return digest([record["plan"], record["trace"]])[:16]


def save_record(record: dict, spec: Spec, target: TargetInfo, root: Path | None = None) -> Path:
    """Write ``record`` unless a record at least as fast is already there (under the lock, so two
    tuners distilling the same workload keep the faster result). A record chosen by timing
    candidates against each other (``validated``) replaces one whose schedule was among them:
    that comparison was made in one run, times from two runs of a noisy machine were not."""
    path = schedule_path(root or user_root(), spec, target)
    with lock(path):
        old = read_json(path, RECORD_FIELDS)
        if old is not None and old.get("key") == record["key"]:
            beaten = {c["id"] for c in record.get("validated", {}).get("candidates", [])}
            if schedule_id(old) not in beaten and old["run_secs"] <= record["run_secs"]:
                return path
        write_json(path, record)
    return path


def list_records(root: Path | None = None, profile: str | None = None) -> list[tuple[dict, Path]]:
    out = []
    for r in ([root] if root else roots()):
        base = r / "schedules"
        if not base.is_dir():
            continue
        for path in sorted(base.glob(f"{profile or '*'}/*.json")):
            rec = read_json(path, RECORD_FIELDS)
            if rec is not None:
                out.append((rec, path))
    return out
