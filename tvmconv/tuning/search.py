"""MetaSchedule tuning (TVM-facing): workloads, the on-disk tuning log, tuning runs, distilling.

* The workload of a spec is the tensor expression its default schedule is written for
  (``prim_func(spec, plan)``). Before the search starts, the default schedule is measured under
  the spec's plan and every plan candidate (other blockings) and committed to the log like any
  trial, so a tuned result is never slower than the default.
* The search tunes the fastest of those blockings. Its design space is the hand-written schedule
  written as a sketch (``sketch_space``: tile sizes and unrolling as sampled decisions), seeded
  with the sketch at the plan's own tiles, so MetaSchedule's evolutionary search and XGBoost cost
  model move around the default instead of starting from the generic space.
* ``TuningLog`` is a MetaSchedule database whose two files are TVM's own JSON database format
  (``database_workload.json``, ``database_tuning_record.json``), so TVM's ``JSONDatabase`` reads
  them. Unlike ``JSONDatabase`` it appends every record under a file lock as one whole line and
  fsyncs it (two tuners may share one log; a kill loses nothing measured; a full disk tears no
  line), and it reads a log with a truncated or corrupt line by skipping that line alone, changing
  nothing on disk. One log directory per target key:
  records of two targets never mix (MetaSchedule's database does not key by target).
* ``light_intrinsics()``: importing ``tvm.s_tir.tensor_intrin`` registers every tensor intrinsic
  TVM has (CUDA, ROCm, Hexagon...) and takes 30-40 s here. MetaSchedule imports it in every
  builder worker, and the builder starts fresh workers per batch, so each batch of trials would
  time out. fp32 CPU schedules use none of them: the package is replaced by an empty one whose
  submodules can still be imported on demand.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import importlib.util
import json
import logging
import math
import os
import signal
import struct
import sys
import tempfile
import time
import types
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


def light_intrinsics() -> None:
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    found = importlib.util.find_spec(name)
    if found is None:  # pragma: no cover - a TVM without the package
        return
    mod = types.ModuleType(name)
    mod.__path__ = list(found.submodule_search_locations or [])
    mod.__file__ = found.origin
    sys.modules[name] = mod
    tvm.s_tir.tensor_intrin = mod


light_intrinsics()  # this module is imported by MetaSchedule's builder workers too

import tvm  # noqa: E402
from filelock import FileLock  # noqa: E402
from tvm.ir.utils import derived_object  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402
from tvm.s_tir.schedule import Trace  # noqa: E402

from ..spec import DepthwiseSeparableSpec, Spec  # noqa: E402
from ..backends.target import Profile, TargetInfo  # noqa: E402
from ..backends.blocking import plan_candidates  # noqa: E402
from ..variants.compute import Plan, plan_from_dict, plan_to_dict, prim_func  # noqa: E402
from ..backends.schedules import cuda_default_schedule, default_for, default_schedule, schedule_into  # noqa: E402

log = logging.getLogger("tvmconv")

LOCK_TIMEOUT_S = 120
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
EXHAUSTED_FILE = "exhausted.json"  # design space id -> trials of the workload when its search found nothing new


# -- builder functions (run in MetaSchedule's worker processes; module-level so they pickle) ----
def target_intrinsics(target: TargetInfo) -> None:
    """Register the tensor intrinsics MetaSchedule's rules for ``target`` look up by name (ARM's
    NEON/SDOT, x86's VNNI...): only that architecture's module of ``tvm.s_tir.tensor_intrin``."""
    triple = target.dict.get("mtriple", "")
    name = ("cuda" if target.kind == "cuda" else "arm_cpu" if triple.startswith(("aarch64", "arm"))
            else "riscv_cpu" if triple.startswith("riscv") else "x86")
    importlib.import_module(f"tvm.s_tir.tensor_intrin.{name}")


def build_module(mod, target, _params, without_pack: bool = False):
    """The tuning builder's build. ``without_pack``: measure the kernel without its weight packing,
    as the op runs it (``drop_weight_pack``; the runner must allocate with ``alloc_with_slack``)."""
    light_intrinsics()
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from ..runtime.build import drop_weight_pack

    if without_pack:
        mod = drop_weight_pack(mod)
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def alloc_with_slack(device, args_info, alloc_repeat: int) -> list:
    """MetaSchedule's local argument allocation (random values), each tensor a view of a larger
    one (``measure_slack`` more elements, random too): a kernel built ``without_pack`` may read a
    packed weight, padded to whole vector blocks, past the end of the weight."""
    import tvm

    from ..runtime.build import measure_slack

    fill = tvm.get_global_func("tvm.contrib.random.random_fill_for_measure")

    def alloc(kind, dtype=None, shape=()):
        if kind != "TENSOR":  # (MetaSchedule's own allocation knows no other kind either)
            raise NotImplementedError(f"argument of kind {kind!r}")
        n = math.prod(int(d) for d in shape)
        flat = tvm.runtime.empty((n + measure_slack(n),), dtype=dtype, device=device)
        fill(flat)
        return flat._create_view(tuple(int(d) for d in shape))

    return [[alloc(*info) for info in args_info] for _ in range(alloc_repeat)]


def export_cross(rt_mod, cc: str) -> str:
    from tvm.support import cc as _cc

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=_cc.cross_compiler(cc))
    return path


def export_ndk(rt_mod) -> str:
    from tvm.support import ndk

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    rt_mod.export_library(path, fcompile=ndk.create_shared)
    return path


# -- plans and workloads -------------------------------------------------------------------------
def workload(spec: Spec, plan: Plan) -> tvm.IRModule:
    return tvm.IRModule({"main": prim_func(spec, plan)})


def to_json(obj):
    """A TVM JSON-style object (Arrays, Maps, IntImm...) as plain Python."""
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return ms.utils._json_de_tvm(obj)


def _trace_json(sch: Schedule):
    return to_json(sch.trace.as_json())


# -- the on-disk log -----------------------------------------------------------------------------
def best_secs(secs) -> float | None:
    """The best of a record's repeated run times (each the mean of enough runs to fill 100 ms), or
    None for a failed trial (MetaSchedule records those as 1e10 s). The best, not the mean: on a
    shared machine a repeat slowed by a neighbour says nothing about the schedule."""
    if not secs or max(secs) >= 1e9:
        return None
    return min(secs)


def _dumps(obj) -> str:
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
    body = _dumps(json.loads(raw[8:])).encode()
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
            index.setdefault(_dumps(_compact(json.loads(line))), i)
        except (ValueError, TypeError):  # unreadable, or reserved: its index stays taken all the same
            pass
    return index


# A workload line written only to hold an index that records refer to after their workload's line
# was lost (a truncated or emptied workload file): a workload appended later never takes that
# index, so those records are never read as records of another workload.
RESERVED_LINE = _dumps("tvmconv: index reserved for records whose workload line was lost")

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
        key = _dumps(_compact(to_json(wl.as_json())))
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
            self._append(self.path_record, [_dumps([idx, rec_obj])])
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


# -- a tuning run --------------------------------------------------------------------------------
@dataclass
class Workload:
    spec: Spec
    weight: float
    plan: Plan
    mod: tvm.IRModule
    default_trace: object
    shash: str = ""
    search_plan: Plan | None = None  # the blocking the search tunes (the fastest measured one)...
    search_mod: tvm.IRModule | None = None  # ... and its compute
    done_before: int = 0
    trials: int = 0
    failed: int = 0
    best_s: float | None = None
    exhausted: bool = False  # the search found nothing left to measure before the budget was spent
    space: str = ""  # its design space (space_id)


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
class Measure:
    """How trials are measured: locally or through an RPC tracker."""

    kind: str = "local"
    tracker_host: str = ""
    tracker_port: int = 0
    key: str = ""
    session_timeout_s: int = 120  # one trial on a device, waiting for a free one included
    number: int = 3
    repeat: int = 3
    min_repeat_ms: int = 100


def make_builder(profile: Profile | None, workers: int, without_pack: bool = False):
    """MetaSchedule's local builder for ``profile`` (native, cross compiler or NDK). ``without_pack``:
    measure kernels without their weight packing (``build_module``)."""
    kind = (profile.build if profile else {"kind": "native"}).get("kind", "native")
    f_export = None
    if kind == "cross":
        f_export = functools.partial(export_cross, cc=profile.build["cc"])
    elif kind == "ndk":
        if not os.environ.get("TVM_NDK_CC"):
            raise ValueError(f"target profile {profile.name!r} builds with the Android NDK: set TVM_NDK_CC to "
                             f"the NDK's clang++ (see README.md, 'Android')")
        f_export = export_ndk
    return ms.builder.LocalBuilder(f_build=functools.partial(build_module, without_pack=without_pack), f_export=f_export, max_workers=workers, timeout_sec=120)


def make_runner(measure: Measure, cuda: bool = False):
    """MetaSchedule's runner for ``measure``. CPU kernels are allocated with slack
    (``alloc_with_slack``, for kernels built without their weight packing); GPU kernels, which
    pack nothing, by MetaSchedule's own allocation, and each repeat fills 20 ms, not 100 (a GPU
    kernel's time varies little, and tens of candidates are timed per batch)."""
    cfg = ms.runner.EvaluatorConfig(number=measure.number, repeat=measure.repeat,
                                    min_repeat_ms=min(measure.min_repeat_ms, 20) if cuda else measure.min_repeat_ms,
                                    enable_cpu_cache_flush=False)
    if measure.kind == "rpc":
        rpc = ms.runner.RPCConfig(tracker_host=measure.tracker_host, tracker_port=measure.tracker_port,
                                  tracker_key=measure.key, session_timeout_sec=measure.session_timeout_s)
        return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=cfg, max_workers=1,
                                   f_create_session=_rpc_session, f_cleanup=_rpc_cleanup)
    if cuda:
        return ms.runner.LocalRunner(evaluator_config=cfg)
    return ms.runner.LocalRunner(evaluator_config=cfg, f_alloc_argument=alloc_with_slack)


class DeviceTimeout(Exception):  # noqa: N818 - named for what happened
    """A trial on a remote device did not finish within the session timeout. Neither an OSError
    nor a RuntimeError: TVM's tracker client retries on those, and would block again."""


def _rpc_session(rpc_config):
    """Open a session on a device of the tracker's key, in the RPC runner's worker process (its main
    thread). An alarm bounds the whole trial, waiting for a free device included: MetaSchedule's
    default waits forever when the device has dropped, and then tuning hangs. With it the trial
    fails after ``session_timeout_sec``, is recorded as failed, and the search goes on."""
    secs = int(rpc_config.session_timeout_sec)

    def expired(_sig, _frame):
        raise DeviceTimeout(f"no result from a device under key {rpc_config.tracker_key!r} within {secs} s "
                           f"(the device dropped, hung, or every device stayed busy)")

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(secs)
    return rpc_config.connect_server()


def _rpc_cleanup(session, remote_path):
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_cleanup

    signal.alarm(0)
    try:
        default_cleanup(session, remote_path)
    except Exception:  # noqa: BLE001 - a dropped device cannot delete its file; the trial is over anyway
        pass


def check_tracker(measure: Measure) -> None:
    """Fail early, and clearly, when the tracker is unreachable or has no device under the key."""
    from tvm import rpc

    import socket

    where = f"{measure.tracker_host}:{measure.tracker_port}"
    try:
        socket.create_connection((measure.tracker_host, measure.tracker_port), timeout=10).close()
        queues = rpc.connect_tracker(measure.tracker_host, measure.tracker_port).summary().get("queue_info", {})
    except Exception as exc:  # noqa: BLE001 - socket errors come in many types
        raise ConnectionError(f"cannot reach the RPC tracker at {where}: {exc}. Start one with "
                              f"`python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {measure.tracker_port}`") from exc
    if not queues.get(measure.key, {}).get("free", 0):
        raise ConnectionError(f"the RPC tracker at {where} has no free device under key {measure.key!r} "
                              f"(keys with devices: {sorted(queues) or 'none'}); start one with "
                              f"`python -m tvm.exec.rpc_server --tracker {where} --key {measure.key}`")


def _measure(items: list[tuple[str, tvm.IRModule, Schedule, int]], target: TargetInfo, db: "TuningLog", builder,
             runner) -> list[float | None]:
    """Build and measure scheduled modules in one batch with the tuning builder and runner, and
    commit each as a record of its workload (a failure as 1e10 s). ``items``: ``(what, workload
    module, schedule, log level of a failure naming what)``. Returns each one's best time (None:
    failed)."""
    results = builder.build([ms.builder.BuilderInput(sch.mod, target.tvm()) for _, _, sch, _ in items])
    device = "cuda" if target.kind == "cuda" else "cpu"
    built = [(i, br) for i, br in enumerate(results) if not br.error_msg]
    futures = runner.run([ms.runner.RunnerInput(br.artifact_path, device,
                                                ms.arg_info.ArgInfo.from_prim_func(items[i][1]["main"]))
                          for i, br in built]) if built else []
    secs = {}
    for (i, _), fut in zip(built, futures):
        res = fut.result()
        if res.error_msg is None:
            secs[i] = [float(x) for x in res.run_secs]
        else:
            _failed(items[i], "to run", res.error_msg)
    for i, br in enumerate(results):
        if br.error_msg:
            _failed(items[i], "to build for measuring", br.error_msg)
    for i, (_, mod, sch, _) in enumerate(items):
        db.commit_workload(mod)
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, ms.database.Workload(mod), run_secs=secs.get(i, [1e10]), target=target.tvm(),
            args_info=ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    return [best_secs(secs[i]) if i in secs else None for i in range(len(items))]


def plan_variants(w: "Workload", target: TargetInfo) -> list[tuple[Plan, tvm.IRModule, Schedule]]:
    """The default schedule under each of ``plan_candidates`` (skipping those whose specific
    schedule does not apply): ``(plan, workload module, scheduled)``. None on CUDA, where the
    search starts from the plain compute."""
    if target.is_cuda:
        return []
    lanes = target.lanes(w.spec.dtype)
    out = []
    for plan in plan_candidates(w.spec, lanes):
        try:
            sch, used = default_schedule(w.spec, plan, lanes, target.num_cores)
        except Exception:  # noqa: BLE001 - a blocking the compute cannot take
            continue
        if used == plan:
            out.append((plan, workload(w.spec, plan), sch))
    return out


def _failed(item, how: str, msg: str) -> None:
    what, _, _, level = item
    log.log(level, "tvmconv: %s failed %s: %s", what, how, msg.strip().splitlines()[-1])


def sketch_space(spec: Spec, plan: Plan, target: TargetInfo):
    """MetaSchedule's design space for ``spec`` under ``plan``: the default schedule written as a
    sketch (``schedule_into(sample=True)``). Its register-tile and row splits are
    ``sample_perfect_tile`` decisions starting at the plan's values, the tile may stack output
    rows, an explicit-unroll depth is sampled, and blocked convolutions with kernel taps get a
    second space with the taps outermost in the reduction. The evolutionary search mutates those
    decisions under the XGBoost cost model. (MetaSchedule's generic space, post-order-apply, was
    searched for 2,000 trials on mobilenet_v1 and never beat the hand-written schedule.)"""
    lanes, cores = target.lanes(spec.dtype), target.num_cores
    orders = [True]
    if plan.kind == "ocvec" and not isinstance(spec, DepthwiseSeparableSpec) and math.prod(getattr(spec, "kernel", (1,))) > 1:
        orders.append(False)

    def spaces(sch: Schedule) -> list[Schedule]:
        out = []
        for first in orders:
            s = sch.copy()
            try:
                schedule_into(s, spec, plan, lanes, cores, sample=True, reduce_first=first)
            except Exception as exc:  # noqa: BLE001 - a variant of the sketch this compute cannot take
                if first:
                    raise
                log.debug("tvmconv: sketch with kernel taps outermost skipped for %s: %s", spec.name, exc)
                continue
            out.append(s)
        return out

    return ms.space_generator.ScheduleFn(
        spaces, sch_rules=[],
        postprocs=[ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll()],
        mutator_probs={ms.mutator.MutateTileSize(): 0.9, ms.mutator.MutateUnroll(): 0.1})


def design_space(spec: Spec, plan: Plan, target: TargetInfo):
    """The search's design space: on a CPU the hand-written schedule as a sketch (``sketch_space``);
    on CUDA MetaSchedule's own space for the target (post-order-apply of its CUDA rules:
    multi-level tiling with shared-memory staging and thread binding, cross-thread reduction,
    auto-inlining, unrolling), searched from the plain compute."""
    if target.is_cuda:
        return ms.space_generator.PostOrderApply()
    return sketch_space(spec, plan, target)


def space_id(w: "Workload", target: TargetInfo, db: "TuningLog") -> str:
    """Identifies the search of ``w``: its workload and the sketch traces of its design space (a
    change to the sketch makes a new space, which is searched even where the old one was
    exhausted)."""
    from ..runtime import cache

    ctx = ms.TuneContext(mod=w.search_mod, target=target.tvm(),
                         space_generator=design_space(w.spec, w.search_plan, target), task_name=w.spec.name)
    spaces = [to_json(sch.trace.as_json(remove_postproc=True)) for sch in ctx.generate_design_space()]
    return cache.digest([db.shash(w.search_mod), spaces])[:24]


def known_exhausted(w: "Workload", target: TargetInfo, db: "TuningLog") -> bool:
    """Whether the log records ``w``'s search space as exhausted (without tuning: ``trials=0``)."""
    w.search_plan, w.search_mod, _ = search_start(w, target, db)
    return space_id(w, target, db) in db.exhausted()


def sketch_seed(spec: Spec, plan: Plan, mod: tvm.IRModule, target: TargetInfo) -> Schedule:
    """The sketch with its first decisions (the plan's tiles, one row, no extra unrolling) and
    MetaSchedule's postprocessing: the default schedule as a record the search can mutate (the
    default's own trace samples nothing, so the evolutionary search cannot move from it)."""
    ctx = ms.TuneContext(mod=mod, target=target.tvm(), space_generator=sketch_space(spec, plan, target),
                         task_name=spec.name)
    sch = ctx.generate_design_space()[0]
    sch.enter_postproc()
    for p in ctx.space_generator.postprocs:
        if not p.apply(sch):
            raise ValueError(f"{p} rejected the sketch of {spec.name}")
    return sch


def search_start(w: "Workload", target: TargetInfo, db: "TuningLog", variants=None):
    """``(plan, module, searched)``: the blocking the search tunes (the fastest default schedule
    the log holds among ``w``'s plan and its candidates), its workload module, and how many
    records of that module are search trials (not a plan candidate's default schedule)."""
    if variants is None:
        variants = plan_variants(w, target)
    cands = [(w.plan, w.mod, w.default_trace)] + [(p, mod, _trace_json(sch)) for p, mod, sch in variants]
    defaults = {_dumps(t) for _, _, t in cands}
    best = None
    for plan, mod, trace in cands:
        secs = [s for s, t in db.records.get(db.shash(mod), ()) if s is not None and t == trace]
        if secs and (best is None or min(secs) < best[0]):
            best = (min(secs), plan, mod)
    plan, mod = (best[1], best[2]) if best else (w.plan, w.mod)
    searched = sum(1 for _, t in db.records.get(db.shash(mod), ()) if _dumps(t) not in defaults)
    return plan, mod, searched


def _unmeasured(w: "Workload", variants, db: "TuningLog") -> list[tuple[str, tvm.IRModule, Schedule, int]]:
    """What the log lacks of ``w``'s start: its default schedule (on a first run) and the default
    schedule under the other plan candidates (each once per log: a candidate whose trace the log
    holds is skipped; ``variants`` is ``plan_variants(w, target)``). Plans that change only the
    schedule share the workload of ``w``; the others are workloads of their own. ``candidates``
    considers them all."""
    todo = []
    if not db.records.get(w.shash):
        sch = Schedule(w.mod["main"])
        Trace.apply_json_to_schedule(w.default_trace, sch)
        todo.append((f"the default schedule of {w.spec.name}", w.mod, sch, logging.WARNING))
    for p, mod, sch in variants:
        trace = _trace_json(sch)
        if not any(t == trace for _, t in db.records.get(db.shash(mod), ())):
            todo.append((f"the default schedule of {w.spec.name} with {p}", mod, sch, logging.INFO))
    return todo


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    def __init__(self, workloads: list[Workload], on_update):
        super().__init__()
        self.workloads = workloads
        self.on_update = on_update

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        w = self.workloads[task_id]
        for br, rr in zip(builder_results, runner_results):
            w.trials += 1
            secs = None if br.error_msg or rr.error_msg or rr.run_secs is None else best_secs(
                [float(x) for x in rr.run_secs])
            if secs is None:
                w.failed += 1
            elif w.best_s is None or secs < w.best_s:
                w.best_s = secs
        if self.on_update is not None:
            self.on_update(task_id, w)


@derived_object
class WeightedScheduler(ms.task_scheduler.PyTaskScheduler):
    """MetaSchedule's task scheduler for tvmconv: gives the next batch to the live task with the
    fewest trials per unit of weight (a layer that occurs 4 times in the network gets 4 times the
    trials), counting the trials earlier runs logged (``done_before``, one per task), so a resumed
    run tops up the least-searched workloads first; and first waits for every batch in flight and
    commits it to the log.

    MetaSchedule's own schedulers commit a batch only when they next pick its task (the gradient
    scheduler: not before every task has had a first batch), so a kill lost every trial measured
    since; and the runner timed a batch while the builder compiled the next one on the same
    cores, so trials were measured under load. Here a batch is timed alone and is in the log as
    soon as it has been timed.

    A task whose search returns an empty batch has exhausted its space (the evolutionary search
    found no schedule it has not measured) and is picked no more: MetaSchedule ends a task only
    when its budget is spent, so it would search again and again in vain (10 minutes and more on
    a 7x7 layer, whose sketch has a few dozen points). ``on_exhausted(task index)`` is told."""

    def __init__(self, on_exhausted=None, done_before: list[int] | None = None):
        super().__init__()
        self.trials: dict[int, int] = defaultdict(int, enumerate(done_before or []))
        self.exhausted: set[int] = set()
        self.on_exhausted = on_exhausted

    def next_task_id(self) -> int:
        tasks = self._outer().tasks_
        for i, task in enumerate(tasks):
            if task.runner_futures is not None:  # (join_running_task is MetaSchedule's own: not overridden)
                n = len(self.join_running_task(i))
                self.trials[i] += n
                if n == 0 and i not in self.exhausted:
                    self.exhausted.add(i)
                    if self.on_exhausted is not None:
                        self.on_exhausted(i)
        alive = [i for i, task in enumerate(tasks) if not task.is_terminated and i not in self.exhausted]
        return least_searched(alive, self.trials, [float(task.task_weight) for task in tasks])


def least_searched(alive: list[int], trials: dict[int, int], weights: list[float]) -> int:
    """The task of ``alive`` with the fewest trials per unit of weight (ties: the first), or -1."""
    if not alive:
        return -1
    return min(alive, key=lambda i: (trials[i] / max(weights[i], 1e-9), i))


def _strategy(population: int | None):
    """MetaSchedule's evolutionary search; a smaller population makes tiny test budgets fast."""
    if population is None:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(population_size=population, init_min_unmeasured=min(50, population),
                                                 genetic_num_iters=2)


def prepare(specs: list[tuple[Spec, float]], target: TargetInfo) -> list[Workload]:
    out = []
    for spec, weight in specs:
        if target.is_cuda:  # the compute as written, under the default CUDA schedule
            sch, plan = cuda_default_schedule(spec, target), Plan()
        else:
            sch, plan = default_for(spec, target)
        out.append(Workload(spec=spec, weight=weight, plan=plan, mod=workload(spec, plan),
                            default_trace=_trace_json(sch)))
    return out


def tune(workloads: list[Workload], target: TargetInfo, db: TuningLog, *, trials: int,
         profile: Profile | None = None, measure: Measure | None = None, seed: int | None = None,
         on_update=None, num_trials_per_iter: int = 64, builder_workers: int | None = None,
         population: int | None = None) -> None:
    """Spend ``trials`` measurements per workload (``trials * len(workloads)`` in all, spread by the
    task scheduler by weight, ``WeightedScheduler``), minus what ``db`` already holds for them."""
    if target.kind not in ("llvm", "cuda"):
        raise ValueError(f"target: tuning is implemented for CPU (llvm) and CUDA targets; {target.profile!r} is "
                         f"{target.kind!r}")
    measure = measure or Measure()
    if measure.kind == "rpc":
        check_tracker(measure)
    target_intrinsics(target)
    cuda = target.is_cuda
    # the search's threads: the target's cores on a CPU (the kernels' own), every core for a GPU
    cores = (os.cpu_count() or 1) if cuda else target.num_cores
    # Locally, a CPU trial is timed as the op runs it: without packing a weight the op packs once.
    # (An RPC device allocates its own arguments, without the slack that needs.)
    builder = make_builder(profile, builder_workers or max(1, min(cores, os.cpu_count() or 1)),
                           without_pack=measure.kind != "rpc" and not cuda)
    runner = make_runner(measure, cuda=cuda)
    variants = [plan_variants(w, target) for w in workloads]
    todo = []
    for w, var in zip(workloads, variants):
        w.shash = db.shash(w.mod)
        todo += _unmeasured(w, var, db)  # the default schedule is the first record of a first run
    if todo:  # one batch for all workloads: the builder compiles them in parallel
        _measure(todo, target, db, builder, runner)
    for w, var in zip(workloads, variants):
        w.search_plan, w.search_mod, searched = search_start(w, target, db, var)
        if not searched and not cuda:  # seed the search with the sketch at the fastest blocking's own tiles
            try:
                seed_sch = sketch_seed(w.spec, w.search_plan, w.search_mod, target)
            except Exception as exc:  # noqa: BLE001 - the search then starts from random samples
                log.info("tvmconv: no sketch seed for %s: %s", w.spec.name, str(exc).splitlines()[-1])
            else:
                (secs,) = _measure([(f"the sketch of {w.spec.name}", w.search_mod, seed_sch, logging.WARNING)],
                                   target, db, builder, runner)
                searched, w.trials, w.failed, w.best_s = 1, 1, int(secs is None), secs
                if on_update is not None:
                    on_update(None, w)
        w.done_before = 1 + searched  # the budget counts the default and the search's trials (the seed's too)
    cap = 2 * trials
    done = db.exhausted()
    for w in workloads:
        w.space = space_id(w, target, db)
        w.exhausted = w.space in done
        if w.exhausted and on_update is not None:
            on_update(None, w)
    todo = [w for w in workloads if w.done_before < cap and not w.exhausted]
    budget = trials * len(workloads) - sum(min(w.done_before, cap) for w in workloads)
    if not todo or budget <= 0:
        return
    per_iter = max(1, min(num_trials_per_iter, trials))
    rand = ms.utils.fork_seed(seed, n=len(todo))
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    tasks = [ms.TuneContext(mod=w.search_mod, target=target.tvm(), space_generator=design_space(w.spec, w.search_plan, target),
                            search_strategy=_strategy(population), task_name=w.spec.name, rand_state=r,
                            num_threads=cores).clone() for w, r in zip(todo, rand)]
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [_Progress(todo, on_update)]

    def exhausted(i: int) -> None:
        w = todo[i]
        w.exhausted = True
        db.note_exhausted(w.space, db.trials(w.search_mod))
        log.info("tvmconv: the search space of %s is exhausted (%d trials this run)", w.spec.name, w.trials)
        if on_update is not None:
            on_update(i, w)

    ms.tune_tasks(tasks=tasks, task_weights=[w.weight for w in todo], work_dir=str(db.dir),
                  max_trials_global=budget, max_trials_per_task=cap, num_trials_per_iter=per_iter,
                  builder=builder, runner=runner, database=db, cost_model="xgb",
                  measure_callbacks=callbacks, task_scheduler=WeightedScheduler(exhausted, [w.done_before for w in todo]))


def candidates(w: Workload, db: TuningLog, target: TargetInfo, top: int) -> list[dict]:
    """The ``top`` fastest distinct schedules of ``w`` in ``db`` by their tuning-time measurement
    (the search's, or the default schedule under any of the measured plan candidates), fastest
    first, and after them the default schedule if it is not among them: each a small, diffable
    schedule record whose ``run_secs`` is that measurement (the best of its repeats, in its best
    trial). On a noisy machine the minimum over hundreds of trials favours lucky ones, so the
    tuner times these again through the op before choosing (``tuner.validate``)."""
    from ..runtime import cache

    shash = w.shash or db.shash(w.mod)
    plans = {shash: w.plan}  # workload -> a plan whose compute it is (plans may share one)
    variant_plans = {}  # the trace of each plan candidate -> its plan (the record names it exactly)
    for plan, mod, sch in plan_variants(w, target):
        plans.setdefault(db.shash(mod), plan)
        variant_plans[_dumps(_trace_json(sch))] = plan
    pool = []
    for h, plan in plans.items():
        for s, t in db.records.get(h, []):
            found = variant_plans.get(_dumps(t))
            source = "default" if t == w.default_trace else "plan-search" if found else "metaschedule"
            pool.append((s, t, found or plan, source))
    best: dict[str, tuple] = {}  # (plan, trace) -> its fastest measurement
    for e in pool:
        if e[0] is not None:
            k = _dumps([plan_to_dict(e[2]), e[1]])
            if k not in best or e[0] < best[k][0]:
                best[k] = e
    ranked = sorted(best.values(), key=lambda e: e[0])
    chosen = ranked[:top] + [e for e in ranked[top:] if e[3] == "default"][:1]
    entries = db.records.get(shash, [])
    default = [s for s, t in entries if s is not None and t == w.default_trace]
    return [{
        "format": cache.CACHE_FORMAT_VERSION,
        "key": cache.schedule_key(w.spec, target),
        "name": w.spec.name,
        "spec": w.spec.to_dict(),
        "tvm": cache.tvm_version(),
        "target": target.key_dict,
        "profile": target.profile,
        "plan": plan_to_dict(plan),
        "source": source,
        "trace": trace,
        "run_secs": best_s,
        "gflops": w.spec.flops / best_s / 1e9,
        "default_secs": min(default) if default else None,
        "trials": len(pool),
        "num_cores": target.num_cores,
        "workload_shash": shash,
        "tuned_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    } for best_s, trace, plan, source in chosen]
