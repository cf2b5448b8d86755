"""The tuning log: a MetaSchedule database in TVM's own JSON database files, appended safely.

``TuningLog`` is a MetaSchedule database whose two files are TVM's own JSON database format
(``database_workload.json``, ``database_tuning_record.json``), so TVM's ``JSONDatabase`` reads
them. Unlike ``JSONDatabase`` it appends every record under a file lock as one whole line and
fsyncs it (two tuners may share one log; a kill loses nothing measured; a full disk tears no
line), and it reads a log with a truncated or corrupt line by skipping that line alone, changing
nothing on disk. One log directory per target key: records of two targets never mix
(MetaSchedule's database does not key by target).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import struct
from collections import defaultdict
from pathlib import Path

from .intrinsics import light_intrinsics  # first: it must run before MetaSchedule is imported

light_intrinsics()  # (a no-op once done: see intrinsics)

from filelock import FileLock  # noqa: E402
from tvm.ir.utils import derived_object  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402

log = logging.getLogger("tvmconv")

LOCK_TIMEOUT_S = 120
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
EXHAUSTED_FILE = "exhausted.json"  # design space id -> trials of the workload when its search found nothing new


def to_json(obj):
    """A TVM JSON-style object (Arrays, Maps, IntImm...) as plain Python."""
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return ms.utils._json_de_tvm(obj)


def trace_json(sch: Schedule):
    return to_json(sch.trace.as_json())


def best_secs(secs) -> float | None:
    """The best of a record's repeated run times (each the mean of enough runs to fill 100 ms), or
    None for a failed trial (MetaSchedule records those as 1e10 s). The best, not the mean: on a
    shared machine a repeat slowed by a neighbour says nothing about the schedule."""
    if not secs or max(secs) >= 1e9:
        return None
    return min(secs)


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _compact(workload_json: list) -> list:
    """A workload's JSON ``[structural hash, base64 of (8-byte length, IR graph JSON)]`` with the
    graph JSON minified: TVM writes it indented, which doubles the log. TVM reads both (the graph is
    parsed as JSON), and equal modules always compact to the same line, so it is also the key that
    finds a workload's line in the file."""
    shash, b64 = workload_json
    raw = base64.b64decode(b64)
    if len(raw) < 8 or struct.unpack("<Q", raw[:8])[0] != len(raw) - 8:
        return workload_json  # not the framing this expects: keep it as TVM wrote it
    body = dumps(json.loads(raw[8:])).encode()
    return [shash, base64.b64encode(struct.pack("<Q", len(body)) + body).decode()]


def _read_lines(path: Path) -> list[str]:
    """The non-blank lines of ``path`` (a workload's index is its line's place among them). Split
    on bytes, not decoded text: a torn or garbage line must neither fail the file nor split in two."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [line for line in data.decode("utf-8", "replace").split("\n") if line.strip()]


def _workload_index(lines: list[str]) -> dict[str, int]:
    """Each readable workload line (compacted) -> its index, the first where a line repeats."""
    index: dict[str, int] = {}
    for i, line in enumerate(lines):
        try:
            index.setdefault(dumps(_compact(json.loads(line))), i)
        except (ValueError, TypeError):  # unreadable, or reserved: its index stays taken all the same
            pass
    return index


# A workload line written only to hold an index that records refer to after their workload's line
# was lost (a truncated or emptied workload file): a workload appended later never takes that
# index, so those records are never read as records of another workload.
RESERVED_LINE = dumps("tvmconv: index reserved for records whose workload line was lost")

# errno values that mean the log's disk cannot take a write
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


class TuningLogError(OSError):
    """A tuning log could not be written (full disk, read-only file system, no permission).
    ``filename`` is the file, ``errno`` the cause; every line written before is kept whole."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def log_error(path, exc: OSError) -> TuningLogError:
    """``exc``, a failed write to the tuning log at ``path``, as a ``TuningLogError`` that says so."""
    if isinstance(exc, TuningLogError):
        return exc
    why = exc.strerror or str(exc)
    return TuningLogError(exc.errno, f"cannot write the tuning log {path}: {why}. The records written before are "
                                     f"kept; make room (or make it writable) and run the same command again to "
                                     f"resume", str(path))


def as_log_error(exc: BaseException) -> BaseException:
    """``exc`` as a ``TuningLogError`` where it is a file write the disk refused, else unchanged."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS and exc.filename:
        return log_error(exc.filename, exc)
    return exc


@derived_object
class TuningLog(ms.database.PyDatabase):
    """A MetaSchedule database backed by TVM's JSON database files in ``directory``.

    Reading never changes the files: an unreadable line (torn by a kill, garbage) is skipped and
    reported, and records whose workload line is unreadable or missing stay on disk, unloaded.
    ``unreadable`` lists the skipped lines as ``(file, n)``, the n-th non-blank line;
    ``unresolved`` counts the records skipped for want of their workload. A failed write raises
    ``TuningLogError`` (TVM hands it on as a RuntimeError; ``write_error`` keeps the original).
    ``report``: log a warning about skipped lines (off where another process just did)."""

    def __init__(self, directory: Path, module_equality: str = "structural", report: bool = True):
        super().__init__()
        self.dir = Path(directory)
        self.path_workload = self.dir / WORKLOAD_FILE
        self.path_record = self.dir / RECORD_FILE
        self._lock = FileLock(str(self.dir / ".lock"), timeout=LOCK_TIMEOUT_S)
        self._mem = ms.database.MemoryDatabase(module_equality=module_equality)
        self._file_index: dict[str, int] = {}  # workload line -> its index in the workload file
        self._file_lines = 0  # lines in the workload file, readable or not
        self._file_stamp = None
        self._next_index = 0  # the first index neither a workload line nor a record (of a lost line) takes
        # per workload (structural hash string): [(mean run seconds or None if failed, trace json)]
        self.records: dict[str, list[tuple[float | None, object]]] = defaultdict(list)
        self.unreadable: list[tuple[Path, int]] = []
        self.unresolved = 0
        self.write_error: TuningLogError | None = None  # the first failed write (TVM may wrap what we raise)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._failed(self.dir, exc) from exc
        with self._locked():
            self._load()
        if report and (self.unreadable or self.unresolved):
            self._report()

    # loading: skips what it cannot read, rewrites nothing
    def _load(self) -> None:
        w_lines = _read_lines(self.path_workload)
        workloads: list = []  # per index: (Workload, structural hash) or None
        for n, line in enumerate(w_lines):
            try:
                obj = json.loads(line)
                if line != RESERVED_LINE:
                    wl = ms.database.Workload.from_json(obj)
                    workloads.append((self._mem.commit_workload(wl.mod), obj[0]))
                    continue
            except Exception:  # noqa: BLE001 - any unparsable line is skipped
                self.unreadable.append((self.path_workload, n + 1))
            workloads.append(None)
        r_lines = _read_lines(self.path_record)
        top = len(w_lines)
        for n, line in enumerate(r_lines):
            try:
                idx, rec_obj = json.loads(line)
                if not (isinstance(idx, int) and 0 <= idx <= len(w_lines) + len(r_lines)):
                    raise ValueError("not a workload index")  # no log has more workloads than lines
                top = max(top, idx + 1)
                entry = workloads[idx] if idx < len(workloads) else None
                if entry is None:  # its workload line is unreadable or missing: left on disk
                    self.unresolved += 1
                    continue
                rec = ms.database.TuningRecord.from_json(rec_obj, entry[0])
            except Exception:  # noqa: BLE001
                self.unreadable.append((self.path_record, n + 1))
                continue
            self._mem.commit_tuning_record(rec)
            self._note(entry[1], rec_obj)
        self._file_index, self._file_lines = _workload_index(w_lines), len(w_lines)
        self._file_stamp = self._stamp()
        self._next_index = top

    def _report(self) -> None:
        where = defaultdict(list)
        for path, n in self.unreadable:
            where[path.name].append(n)
        lines = "; ".join(f"{name} line(s) {', '.join(map(str, ns[:5]))}{' ...' if len(ns) > 5 else ''}"
                          for name, ns in where.items())
        log.warning("tvmconv: tuning log %s: skipped %d unreadable line(s)%s and %d record(s) whose workload line "
                    "is unreadable or missing; they are left in the files as they are, and every other record "
                    "is used", self.dir, len(self.unreadable), f" ({lines})" if lines else "", self.unresolved)

    @contextlib.contextmanager
    def _locked(self):
        """The log's file lock; a disk that refuses the lock file raises TuningLogError."""
        try:
            self._lock.acquire()
        except OSError as exc:
            err = as_log_error(exc)
            if err is exc:
                raise
            raise self._failed(exc.filename, exc) from exc
        try:
            yield
        finally:
            self._lock.release()

    def _failed(self, path, exc: OSError) -> TuningLogError:
        err = log_error(path, exc)
        if self.write_error is None:
            self.write_error = err
        return err

    def _stamp(self):
        try:
            st = os.stat(self.path_workload)
            return (st.st_ino, st.st_size)
        except FileNotFoundError:
            return None

    def _note(self, shash: str, rec_obj) -> None:
        self.records[shash].append((best_secs(rec_obj[1]), rec_obj[0]))

    # writing: whole lines appended under the lock and fsynced
    def _append(self, path: Path, lines: list[str]) -> None:
        """Append ``lines`` whole or not at all: written and fsynced, and where a write fails
        (a full disk) the file is cut back to where it ended, so no torn line is left.
        After a torn last line (a writer killed mid-write) a newline comes first: the torn line
        stays unreadable, the new ones whole. Caller holds the lock. Raises TuningLogError."""
        data = "".join(line + "\n" for line in lines).encode()
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise self._failed(path, exc) from exc
        try:
            end = os.fstat(fd).st_size
            if end and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data
            try:
                done = 0
                while done < len(data):  # a short write is retried: the next one fails with the cause
                    done += os.write(fd, data[done:])
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise
        except OSError as exc:
            raise self._failed(path, exc) from exc
        finally:
            os.close(fd)

    def _index_of(self, wl) -> int:
        """Index of ``wl`` in the workload file, appending it if missing. Caller holds the lock."""
        if self._stamp() != self._file_stamp:  # another process wrote the file
            lines = _read_lines(self.path_workload)
            self._file_index, self._file_lines = _workload_index(lines), len(lines)
        key = dumps(_compact(to_json(wl.as_json())))
        idx = self._file_index.get(key)
        if idx is None:
            idx = max(self._next_index, self._file_lines)
            self._append(self.path_workload, [RESERVED_LINE] * (idx - self._file_lines) + [key])
            self._file_index[key], self._file_lines = idx, idx + 1
        self._next_index = max(self._next_index, self._file_lines)
        self._file_stamp = self._stamp()
        return idx

    # the PyDatabase interface
    def has_workload(self, mod) -> bool:
        return self._mem.has_workload(mod)

    def commit_workload(self, mod):
        wl = self._mem.commit_workload(mod)
        with self._locked():
            self._index_of(wl)
        return wl

    def commit_tuning_record(self, record) -> None:
        self._mem.commit_tuning_record(record)
        rec_obj = to_json(record.as_json())
        with self._locked():
            idx = self._index_of(record.workload)
            self._append(self.path_record, [dumps([idx, rec_obj])])
        self._note(record.workload.as_json()[0], rec_obj)

    def get_top_k(self, workload, top_k: int):
        return self._mem.get_top_k(workload, top_k)

    def get_all_tuning_records(self):
        return self._mem.get_all_tuning_records()

    def query_tuning_record(self, mod, target, workload_name=None):
        return self._mem.query_tuning_record(mod, target, workload_name)

    def query_schedule(self, mod, target, workload_name=None):
        return self._mem.query_schedule(mod, target, workload_name)

    def query_ir_module(self, mod, target, workload_name=None):
        return self._mem.query_ir_module(mod, target, workload_name)

    def __len__(self) -> int:
        return len(self._mem)

    # the search spaces found exhausted (a file of tvmconv's own beside TVM's two)
    def exhausted(self) -> dict:
        from ..runtime import cache

        return cache.read_json(self.dir / EXHAUSTED_FILE) or {}

    def note_exhausted(self, space: str, trials: int) -> None:
        from ..runtime import cache

        with self._locked():
            try:
                cache.write_json(self.dir / EXHAUSTED_FILE, {**self.exhausted(), space: trials})
            except OSError as exc:
                raise self._failed(self.dir / EXHAUSTED_FILE, exc) from exc

    # tvmconv's own queries
    def shash(self, mod) -> str:
        return self._mem.commit_workload(mod).as_json()[0]

    def trials(self, mod) -> int:
        return len(self.records.get(self.shash(mod), ()))

