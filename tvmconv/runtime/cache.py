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

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from filelock import FileLock, Timeout

from .. import knobs
from ..spec import Spec
from ..backends.target import TargetInfo
from .record import RecordError, ScheduleRecord

log = logging.getLogger("tvmconv")

CACHE_FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 120
# What a first call may wait for a lock held by another (live or stopped) process, where it can do
# without what the lock guards (a launch measurement to store, a launcher to share): then it
# measures without storing, or builds its own
SHORT_LOCK_TIMEOUT_S = 1.0
# Storing a compiled library is optional (the op runs from memory without it): never wait for a
# lock whose holder may be stopped or hung, only try it once
LIBRARY_LOCK_TIMEOUT_S = 0


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


# -- who may have written the user cache ---------------------------------------------------------
_warned_untrusted: set[Path] = set()


def _dir_problem(d: Path) -> str | None:
    """Why files in directory ``d`` could have been written by another user (or it is no
    directory), or None."""
    try:
        st = os.stat(d)
    except FileNotFoundError:
        return None
    except OSError as exc:  # (NotADirectoryError: a file where a directory above it should be)
        return f"cannot be inspected ({exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory; tvmconv runs without its cache (set TVMCONV_CACHE_DIR to a directory)"
    me = os.geteuid()
    if st.st_uid not in (me, 0):  # root can change anything of ours anyway
        return f"is owned by uid {st.st_uid}, not by you (uid {me}); fix: chown {me} {d}"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {st.st_mode & 0o777:o}); fix: chmod go-w {d}"
    return None


def trusted(path: Path) -> bool:
    """Whether tvmconv may load what directory ``path`` holds: each existing directory from the
    user root down to ``path`` (or ``path`` alone, outside the user root) is owned by this user or
    root and not group/world-writable. Warns once per directory when not."""
    root = user_root()
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        chain = [path]
    else:
        chain = [root] + [root.joinpath(*parts[:i + 1]) for i in range(len(parts))]
    for d in chain:
        why = _dir_problem(d)
        if why is not None:
            if d not in _warned_untrusted:
                _warned_untrusted.add(d)
                log.warning("tvmconv: not loading anything from %s: %s %s", path, d, why)
            return False
    return True


def make_dirs(path: Path) -> None:
    """``mkdir -p path`` where every directory created is private (0o700): what lies in the cache
    is loaded and run, so no one else may write there (see ``trusted``)."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=0o700)


# -- atomic, locked writes -----------------------------------------------------------------------
def lock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> FileLock:
    """The lock guarding ``path`` (a sibling ``.lock`` file)."""
    make_dirs(path.parent)
    return FileLock(str(path) + ".lock", timeout=timeout)


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """Yield a temporary path next to ``path`` (ending in ``suffix``); on success it is fsynced and
    renamed onto ``path``."""
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
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


def _move_aside(path: Path) -> Path | None:
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, dest)
    except OSError:
        return None
    return dest


def set_aside(path: Path, why: str) -> Path | None:
    """Rename a corrupt file out of the way (when we may) and say so."""
    dest = _move_aside(path)
    if dest is None:
        log.warning("tvmconv: cache file %s is unusable (%s); ignoring it", path, why)
        return None
    log.warning("tvmconv: cache file %s is unusable (%s); moved it to %s and carrying on", path, why, dest)
    return dest


class NotRegular(OSError):
    """A cache path that holds something other than a regular file (a link, a FIFO, a device)."""


def open_regular(path: Path) -> int:
    """A descriptor open for reading on the regular file at ``path``: never blocks (a FIFO left
    there would block ``open`` until someone writes to it) and never follows a link there.
    FileNotFoundError where there is none; NotRegular for anything else."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # (O_NOFOLLOW on a symlink)
            raise NotRegular(f"{path} is a symbolic link") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(f"{path} is not a regular file")
    return fd


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file at ``path`` (``open_regular``)."""
    with os.fdopen(open_regular(path), "rb") as f:
        return f.read()


def read_json(path: Path):
    """The parsed file, or None when it is absent or corrupt (a corrupt one, or one that is not a
    regular file, is set aside)."""
    try:
        text = read_bytes(path).decode()
    except FileNotFoundError:
        return None
    except NotRegular as exc:
        _set_aside_if_user(path, str(exc))
        return None
    except OSError as exc:
        log.warning("tvmconv: cannot read cache file %s (%s); ignoring it", path, exc)
        return None
    except UnicodeDecodeError as exc:  # binary garbage
        _set_aside_if_user(path, f"not text: {exc}")
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested
        _set_aside_if_user(path, f"not valid JSON: {exc}")
        return None
    return obj


def _set_aside_if_user(path: Path, why: str) -> None:
    try:
        path.resolve().relative_to(user_root().resolve())
    except ValueError:  # shipped files are never moved: report only
        log.warning("tvmconv: shipped cache file %s is unusable (%s); ignoring it", path, why)
        return
    set_aside(path, why)


# -- compiled libraries --------------------------------------------------------------------------
def manifest_path(lib: Path) -> Path:
    return lib.with_suffix(".json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_manifest(path: Path) -> dict | None:
    """``{"size", "sha256"}`` of the regular file at ``path`` (None: there is none, or a link or
    a FIFO is there)."""
    try:
        return {"size": os.lstat(path).st_size, "sha256": file_sha256(path)}
    except OSError:
        return None


def keep(path: Path, make: Callable[[Path], None]) -> bool:
    """Make sure ``path`` (in the user cache) holds what ``make(tmp)`` writes, beside a manifest of
    its bytes: made once under the lock, then found by the next caller and process. A file left
    there under its name without a matching manifest (or a link, a FIFO) is made over, never used.
    False where the cache cannot hold it (a directory someone else may write, a read-only cache,
    the lock held by another process for more than ``SHORT_LOCK_TIMEOUT_S``): the caller makes its
    own, privately. What ``make`` raises, other than OSError, goes to the caller."""
    if not trusted(path.parent):
        return False
    try:
        with lock(path, timeout=SHORT_LOCK_TIMEOUT_S):
            found = file_manifest(path)
            if found is None or read_json(manifest_path(path)) != found:
                with atomic_path(path, suffix=path.suffix) as tmp:
                    make(tmp)
                    write_json(manifest_path(path), file_manifest(tmp))
        return True
    except OSError as exc:
        log.info("tvmconv: cannot keep %s in the cache (%s)", path.name, exc)
        return False


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
        _move_aside(manifest_path(path))  # it describes a file no longer there
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
        _set_aside_if_user(path, f"not a valid schedule record: {exc}")
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
