"""Measuring trials: MetaSchedule's builder and runner as tvmconv configures them, locally or
through an RPC tracker, and one batch measured and committed to the log (``measure_batch``).

The builder and runner functions run in MetaSchedule's worker processes (module-level, so they
pickle). What differs by device kind (the library export, the runner's device, repeats and
argument allocation) the target's backend says.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
from dataclasses import dataclass

from .intrinsics import light_intrinsics  # first: it must run before MetaSchedule is imported

light_intrinsics()  # (a no-op once done: see intrinsics)

import tvm  # noqa: E402
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind  # noqa: E402
from tvm.ir.utils import derived_object  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402
from tvm.s_tir import Schedule  # noqa: E402
from tvm.s_tir.meta_schedule.builder import local_builder  # noqa: E402

from ..backends.target import TargetInfo  # noqa: E402
from .log import TuningLog, best_secs  # noqa: E402

log = logging.getLogger("tvmconv")


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


def make_builder(target: TargetInfo, workers: int, without_pack: bool = False):
    """MetaSchedule's local builder for ``target``, exporting with its toolchain (native, cross
    compiler or NDK: ``Backend.tuning_export``). ``without_pack``: measure kernels without their
    weight packing (``build_module``). Raises ValueError for an NDK target without ``TVM_NDK_CC``."""
    return _Builder(f_build=functools.partial(build_module, without_pack=without_pack),
                    f_export=target.backend.tuning_export(), max_workers=workers, timeout_sec=120)


POOL_BATCHES = 8  # batches one builder pool compiles before it is replaced


def _nothing() -> None:
    """A task that only makes a pool start its worker (see ``_Builder``)."""


@derived_object
class _Builder(ms.builder.LocalBuilder._cls):
    """MetaSchedule's LocalBuilder with one worker pool for several batches, started at once.

    A worker starts by importing TVM (and torch, which tvm_ffi imports): about 5 s on a 2-vCPU
    machine. LocalBuilder paid that at its construction (a pool started only to check that the
    build functions resolve, then thrown away) and again for every batch: a tune of one small
    workload spent 15 of its 30 s waiting for workers. Here the workers start while the runner and
    the plan phase are set up, and serve ``POOL_BATCHES`` batches (LocalBuilder starts a pool per
    batch for a leak in long-lived workers: a few batches bound it). A build function that does not
    resolve shows as the first batch's errors."""

    def __init__(self, **kwargs):
        self._pool, self._batches = None, 0
        super().__init__(**kwargs)

    def _sanity_check(self) -> None:
        self._fresh_pool()

    def _fresh_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self._pool, self._batches = PopenPoolExecutor(max_workers=self.max_workers, timeout=self.timeout_sec,
                                                      initializer=self.initializer), 0
        for _ in range(self.max_workers):  # (not waited for: each starts its worker)
            self._pool.submit(_nothing)

    def build(self, build_inputs: list) -> list:
        if self._batches >= POOL_BATCHES:
            self._fresh_pool()
        self._batches += 1
        jobs = [(self.f_build, self.f_export, b.mod, b.target, local_builder._serialize_params(b.params))
                for b in build_inputs]
        results = []
        for r in self._pool.map_with_error_catching(lambda job: local_builder._worker_func(*job), jobs):
            if r.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                results.append(ms.builder.BuilderResult(None, f"LocalBuilder: Timeout, killed after "
                                                              f"{self.timeout_sec} seconds"))
            else:
                results.append(ms.builder.BuilderResult(None, f"LocalBuilder: An exception occurred\n{r.value}"))
        return results


@derived_object
class _Runner(ms.runner.LocalRunner._cls):
    """MetaSchedule's LocalRunner whose worker starts at construction without being waited for
    (LocalRunner waits for it to import TVM, about 5 s, before the first batch is even built)."""

    def _sanity_check(self) -> None:
        self.pool.submit(_nothing)


def make_runner(measure: Measure, target: TargetInfo):
    """MetaSchedule's runner for ``measure`` of ``target``'s kernels, each repeat filling its
    backend's ``runner_repeat_ms``. Kernels measured without their weight packing (the backend's
    ``measure_without_pack``) are allocated with slack (``alloc_with_slack``); the others by
    MetaSchedule's own allocation."""
    backend = target.backend
    cfg = ms.runner.EvaluatorConfig(number=measure.number, repeat=measure.repeat,
                                    min_repeat_ms=backend.runner_repeat_ms(measure.min_repeat_ms),
                                    enable_cpu_cache_flush=False)
    if measure.kind == "rpc":
        rpc = ms.runner.RPCConfig(tracker_host=measure.tracker_host, tracker_port=measure.tracker_port,
                                  tracker_key=measure.key, session_timeout_sec=measure.session_timeout_s)
        return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=cfg, max_workers=1,
                                   f_create_session=_rpc_session, f_cleanup=_rpc_cleanup)
    if backend.measure_without_pack(measure.kind):
        return _Runner(evaluator_config=cfg, f_alloc_argument=alloc_with_slack)
    return _Runner(evaluator_config=cfg)


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


def measure_batch(items: list[tuple[str, tvm.IRModule, Schedule, int]], target: TargetInfo, db: TuningLog, builder,
                  runner) -> list[float | None]:
    """Build and measure scheduled modules in one batch with the tuning builder and runner, and
    commit each as a record of its workload (a failure as 1e10 s). ``items``: ``(what, workload
    module, schedule, log level of a failure naming what)``. Returns each one's best time (None:
    failed)."""
    results = builder.build([ms.builder.BuilderInput(sch.mod, target.tvm()) for _, _, sch, _ in items])
    device = target.backend.runner_device
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


def _failed(item, how: str, msg: str) -> None:
    what, _, _, level = item
    log.log(level, "tvmconv: %s failed %s: %s", what, how, msg.strip().splitlines()[-1])

