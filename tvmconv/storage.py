"""Files the cache keeps, safely, at the bottom of the package: what the runtime (records, kernels,
dispatch choices) and the backends (their measured facts, the thread-pool launcher, CUDA's helper
library) both write and read.

- Trust: the user root is read only while no one else can write it (``trusted``), and directories
  are created private (``make_dirs``).
- Writes: atomic (a temporary file in the destination directory, fsynced, renamed into place)
  under a file lock (``lock``, ``atomic_path``, ``write_json``).
- Reads: never block on a FIFO or follow a link (``open_regular``); a file that does not parse is
  reported and set aside as ``*.corrupt-<time>`` (``read_json``, ``set_aside``), never a shipped one.
- ``keep``: a file made once under the lock beside a manifest of its bytes, made over where the
  bytes do not match.
- ``digest``: the sha256 of an object's canonical JSON, what every cache key is.
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

from filelock import FileLock

from . import knobs

log = logging.getLogger("tvmconv")

LOCK_TIMEOUT_S = 120
# What a first call may wait for a lock held by another (live or stopped) process, where it can do
# without what the lock guards (a launch measurement to store, a launcher to share): then it
# measures without storing, or builds its own
SHORT_LOCK_TIMEOUT_S = 1.0


@lru_cache(maxsize=1)
def tvm_version() -> str:
    try:
        return metadata.version("apache-tvm")
    except metadata.PackageNotFoundError:  # a source build of TVM
        import tvm

        return tvm.__version__


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def user_root() -> Path:
    return knobs.cache_dir()


def shipped_root() -> Path:
    return knobs.shipped_dir()


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


def move_aside(path: Path) -> Path | None:
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.replace(path, dest)
    except OSError:
        return None
    return dest


def set_aside(path: Path, why: str) -> Path | None:
    """Rename a corrupt file out of the way (when we may) and say so."""
    dest = move_aside(path)
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
        set_aside_if_user(path, str(exc))
        return None
    except OSError as exc:
        log.warning("tvmconv: cannot read cache file %s (%s); ignoring it", path, exc)
        return None
    except UnicodeDecodeError as exc:  # binary garbage
        set_aside_if_user(path, f"not text: {exc}")
        return None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested
        set_aside_if_user(path, f"not valid JSON: {exc}")
        return None
    return obj


def set_aside_if_user(path: Path, why: str) -> None:
    try:
        path.resolve().relative_to(user_root().resolve())
    except ValueError:  # shipped files are never moved: report only
        log.warning("tvmconv: shipped cache file %s is unusable (%s); ignoring it", path, why)
        return
    set_aside(path, why)


# -- files kept beside a manifest of their bytes -------------------------------------------------
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
