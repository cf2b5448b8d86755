"""Build kernels (TVM-facing): pick the schedule, compile, cache compiled kernels.

``load(spec, target)`` is the one entry point the ops use:

1. a kernel already loaded in this process: a dictionary lookup;
2. a compiled library in the user cache (``kernels/<profile>/<lib key>.so``): loaded, not rebuilt,
   when its manifest and the directory pass ``cache.library_ok``;
3. otherwise the schedule is chosen -- the tuned record from the shipped or user cache (falling
   back through the profile's ``compatible`` profiles: a record of one with another vector width
   is transferred, re-derived for this target by its backend, and always compiled for this
   target), else the default schedule with a warning
   once per process naming the command that would tune it -- compiled, and the library written
   to the user cache (atomically, when its lock is free).

A record that no longer applies, a library that does not load, or a schedule that does not compile
never makes an op fail: each falls back to the next option and says so.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.s_tir import Schedule

from . import cache, dispatch, untuned
from .record import ScheduleRecord
from ..spec import Spec
from ..backends.base import supported
from ..backends.target import TargetInfo
from ..variants.compute import Plan, plan_from_dict, plan_to_dict, prim_func

log = logging.getLogger("tvmconv")

# the code a kernel is made from, relative to the package: a change to any of them rebuilds. Every
# backend module, not a name pattern: a target's facts (target.py), the one-thread threshold
# (launch.py) and the toolchain shape the library too, and a backend file added later is covered
KERNEL_SOURCES = ("variants/*.py", "backends/*.py", "runtime/build.py")
# ...and the code a compiled model is made from besides its kernels (the graph passes, fusion, layouts)
COMPILER_SOURCES = ("graph/*.py", "suites/workloads.py")


@dataclass
class Kernel:
    """A compiled kernel: ``func(*args, out)`` with tensors shaped as ``spec.arg_shapes``."""

    spec: Spec
    target: TargetInfo
    plan: Plan
    func: object
    executable: object
    compile_seconds: float
    # "default", "unscheduled" (fallback), "tuned:<record file>" or, for a record of a compatible
    # profile re-derived for this target, "transferred:<record file> from <profile>"
    schedule_source: str
    loaded_from: str = ""  # the cached library it was loaded from, if any
    # "tvmconv", "vendor" (measured faster on this machine) or "undecided" (the op's first calls
    # time both: runtime/dispatch.py), and where that came from (dispatch.CALIBRATED, ...)
    dispatch: str = "tvmconv"
    dispatch_source: str = ""
    schedule_id: str = "default"  # the record's schedule (cache.schedule_id), or "default"
    pack: object = None  # pack(weight, packed) where ``func`` takes a packed weight (split_weight_pack)
    packed_index: int = -1  # which of the op's tensors ``func`` takes packed
    packed_shape: tuple = ()

    def __post_init__(self):
        # The shapes ``func`` takes, computed once: the ops' own (see natural_signature), so a call
        # passes the caller's tensors without a view (a torch view costs about 3 us)
        self.arg_views = [shape for _, shape in self.spec.arg_shapes]
        self.out_view = self.out_shape = self.spec.out_shape

    def __call__(self, *args):
        self.func(*args)


# Keyed by the spec object itself (a frozen dataclass: hashing it is cheaper than its JSON digest)
_cache: dict[tuple[Spec, TargetInfo], Kernel] = {}
_lock = threading.Lock()  # guards _key_locks only: never held while compiling
_key_locks: dict[tuple[Spec, TargetInfo], threading.Lock] = {}
_warned_untuned = False


def sources(patterns=KERNEL_SOURCES) -> list[Path]:
    """The package's files ``patterns`` (relative to the package) name, in a fixed order."""
    package = Path(__file__).parents[1]
    return [path for pattern in patterns for path in sorted(package.glob(pattern))]


def code_version(patterns=KERNEL_SOURCES) -> str:
    """A digest of the code that shapes a kernel (``patterns``: of a compiled model, with
    ``COMPILER_SOURCES``), so a changed compute, schedule or pass never loads a stale library."""
    h = hashlib.sha256(cache.tvm_version().encode())
    for path in sources(patterns):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_CODE_VERSION = code_version()


def _last_line(exc: Exception) -> str:
    """TVM puts the message on the last line of its multi-line errors."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _warn_untuned(spec: Spec, target: TargetInfo) -> None:
    """The first untuned workload of the process is warned about at once; every one is noted
    (``untuned``: when the process ends, one warning lists them all with one command)."""
    global _warned_untuned
    log.info("tvmconv: no tuned schedule for %s on %s", spec.name, target.profile)
    if target.profile in untuned.UNNAMED:
        return
    untuned.note(spec, target)
    if _warned_untuned:
        return
    _warned_untuned = True
    log.warning("tvmconv: no tuned schedule for %s on %s; using its default schedule. Tune it with:\n"
                "    tvmconv tune --target %s --spec '%s'\n(warned once per process: if more untuned workloads "
                "follow, they are listed when the process ends, with one command that tunes them all; "
                "TVMCONV_LOG_LEVEL=INFO names each as it comes)", spec.name, target.profile, target.profile,
                spec.to_json())


def record_source(name: str, transferred_from: str | None = None) -> str:
    """The ``schedule_source`` of a kernel built from record file ``name``: ``tuned:<name>``, or
    ``transferred:<name> from <profile>`` for a record of a compatible profile re-derived here."""
    return f"transferred:{name} from {transferred_from}" if transferred_from else f"tuned:{name}"


def from_record(source: str) -> bool:
    """Whether a kernel's ``schedule_source`` names a record (tuned here, or transferred)."""
    return source.startswith(("tuned:", "transferred:"))


def record_kind(source: str) -> str | None:
    """``tuned`` or ``transferred`` for a ``schedule_source`` that names a record, else None."""
    return source.split(":", 1)[0] if from_record(source) else None


def record_file(source: str) -> str | None:
    """The record file a ``schedule_source`` names, or None."""
    if not from_record(source):
        return None
    return source.split(":", 1)[1].split(" from ", 1)[0]


def choose(spec: Spec, target: TargetInfo) -> tuple[ScheduleRecord | None, str, TargetInfo]:
    """Which schedule ``spec`` gets on ``target``: ``(record or None, source label, build target)``.
    The build target is ``target`` itself: a record of a compatible profile is the backend's
    transfer of it (``Backend.transfer_record``), never that profile's code."""
    if not supported(target):
        return None, "unscheduled", target
    found = cache.tuned_record(spec, target)
    if found:
        record, path, rec_target = found
        if rec_target is target:
            return record, record_source(path.name), target
        try:
            moved = target.backend.transfer_record(record, spec, rec_target)
        except Exception as exc:  # noqa: BLE001 - a record that cannot be transferred must not break the op
            log.warning("tvmconv: record %s of %s does not transfer to %s (%s); using the default schedule",
                        path.name, rec_target.profile, target.profile, _last_line(exc))
            moved = None
        if moved is record:
            return record, record_source(path.name), target
        if moved is not None:
            return moved, record_source(path.name, rec_target.profile), target
    _warn_untuned(spec, target)
    return None, "default", target


def schedule(spec: Spec, target: TargetInfo, record: ScheduleRecord | None, source: str):
    """Return ``(IRModule, plan, source)`` for the choice ``choose`` made."""
    if source == "unscheduled":
        return tvm.IRModule({"main": prim_func(spec)}), Plan(), source
    if record is not None:
        try:
            return apply_record(spec, record), plan_from_dict(record.plan), source
        except Exception as exc:  # noqa: BLE001 - a stale record must not break the op
            log.warning("tvmconv: tuned record %s no longer applies (%s); using the default schedule",
                        record_file(source), _last_line(exc))
    mod, plan = target.backend.default_module(spec)
    return mod, plan, "default"


def apply_record(spec: Spec, record: ScheduleRecord) -> tvm.IRModule:
    """The scheduled module a distilled record describes (raises if the trace no longer applies).
    Here, not in the search module: an op with a tuned record must not import the search."""
    from tvm.s_tir.schedule import Trace

    sch = Schedule(prim_func(spec, plan_from_dict(record.plan)))
    Trace.apply_json_to_schedule(record.trace, sch)
    return sch.mod


def with_epilogue(spec: Spec, target: TargetInfo, record: ScheduleRecord | None, epilogue) -> tvm.IRModule | None:
    """``spec``'s kernel on ``target`` computing ``epilogue`` (a ``compute.Epilogue``) in the store
    of its output: the schedule ``choose`` gave (``record``'s trace, else the default schedule's)
    replayed on ``prim_func(spec, plan, epilogue)``. None where that does not apply (an output
    stage that is a reduction, a trace that no longer replays): the caller keeps the ops apart."""
    from tvm.s_tir.schedule import Trace

    try:
        if record is not None:
            plan, trace = plan_from_dict(record.plan), record.trace
        else:
            default, plan = target.backend.default_schedule(spec)
            trace = default.trace.as_json()
        sch = Schedule(prim_func(spec, plan, epilogue))
        Trace.apply_json_to_schedule(trace, sch)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the ops apart, never wrong
        log.info("tvmconv: no epilogue fused into %s (%s)", spec.name, _last_line(exc))
        return None
    return _vectorize_output(sch, target.backend.lanes(spec.dtype)).mod


def _vectorize_output(sch: Schedule, lanes: int) -> Schedule:
    """``sch`` with its output stage's arithmetic in whole vectors where the schedule left that
    stage's innermost loop scalar: that loop itself where it holds whole vectors (wvec's output
    row), else the loop above it where that one does (ocvec's output: the register tile's width,
    rounded up and predicated, under the tile's channels, which the accumulator holds innermost,
    the pixels a loop around it: unrolled, the 14 pixels of an AVX2 tile with a SiLU each spilled
    the register file, 154 vector moves to the stack against 8); a row shorter than a vector (7
    wide) as one vector.
    An epilogue runs per element there (a scalar SiLU cost four to eight times its convolution).
    ``sch`` as it was where neither applies."""
    from tvm import tirx

    try:
        trial = sch.copy()
        out = trial.get_sblock(trial.mod["main"].params[-1].name)  # (a stage is named after its output)
        loops = trial.get_loops(out)
        if trial.get(loops[-1]).kind != tirx.ForKind.SERIAL:
            return sch
        extents = [trial.get(lp).extent for lp in loops[-2:]]
        whole = [isinstance(e, tirx.IntImm) and int(e) % lanes == 0 for e in extents]
        if whole[-1] and _partial_tile(trial.mod, int(extents[-1])):
            return sch  # (``vectorize_partial_tiles`` does it, last)
        if whole[-1]:
            trial.vectorize(trial.split(loops[-1], [None, lanes])[-1])
        elif len(loops) >= 2 and whole[0]:  # (the pixels a loop, not unrolled: 14 copies of a SiLU spilled)
            trial.reorder(loops[-1], loops[-2])
            trial.vectorize(trial.split(loops[-2], [None, lanes])[-1])
        elif isinstance(extents[-1], tirx.IntImm) and 1 < int(extents[-1]) < lanes:
            trial.vectorize(loops[-1])  # a row shorter than a vector (7 wide): one vector, a lane unused
        else:
            return sch
        return trial
    except Exception:  # noqa: BLE001 - not as placed: left as the trace made it
        return sch


def _partial_tile(mod: tvm.IRModule, tile: int) -> int:
    """How many elements of a row the last output tile of ``tile`` elements holds, where fewer
    than ``tile`` (0 where the tiles divide the row)."""
    return int(mod["main"].params[-1].shape[-1]) % tile


def vectorize_partial_tiles(func, lanes: int):
    """``func`` (a kernel's PrimFunc with the epilogue ``with_epilogue`` placed, its parameters as
    the kernel declares them) with its output stage in vectors where a row's last tile is partial
    (width 28 in tiles of 16): vectorised as it is, the loop's predicate depends on the lane and TVM
    turns the whole loop back into scalar code (a SiLU after a depthwise convolution cost 4x). The
    loop is partitioned instead: first the elements every tile holds, in whole vectors and a shorter
    one, then the rest, whose predicate is the tile's, the same for every lane. A last step: the
    partitions' blocks share iteration variables, which compile but which a new ``Schedule``
    refuses. ``func`` as it is where this does not apply."""
    from tvm import tirx

    try:
        sch = Schedule(tvm.IRModule({"main": func}))
        loop = sch.get_loops(sch.get_sblock(func.params[-1].name))[-1]
        tile = sch.get(loop).extent
        if sch.get(loop).kind != tirx.ForKind.SERIAL or not isinstance(tile, tirx.IntImm) or int(tile) % lanes:
            return func
        rest = _partial_tile(sch.mod, int(tile))
        if not rest:
            return func
        for part in sch.loop_partition(loop, [*([lanes] * (rest // lanes)), *([rest % lanes] if rest % lanes else []),
                                              None]):
            sch.vectorize(part)
        return sch.mod["main"]
    except Exception:  # noqa: BLE001 - not as placed: the scalar loop stays
        return func


def natural_signature(mod: tvm.IRModule, spec: Spec, finish=None) -> tvm.IRModule:
    """``mod`` with ``main`` taking its tensors in the op's own shapes (``spec.arg_shapes``,
    ``spec.out_shape``) rather than the kernel's 3-D-spatial views of them (``kernel_arg_shapes``):
    the body reads the same memory through buffers declared on the parameters' data. ``finish``:
    done to ``main`` first (``vectorize_partial_tiles``)."""
    main = finish(mod["main"]) if finish else mod["main"]
    return tvm.IRModule({"main": _with_shapes(main, _op_shapes(spec, main), spec)})


def _op_shapes(spec: Spec, func) -> list:
    """The shapes the op gives ``func``'s parameters: its arguments', an epilogue's tensors' as
    they are (None), its output's."""
    extra = len(func.params) - len(spec.arg_shapes) - 1
    return [shape for _, shape in spec.arg_shapes] + [None] * extra + [spec.out_shape]


def _with_shapes(func, shapes: list, spec: Spec):
    """``func`` whose parameters take ``shapes`` (None: as they are), aliasing the old buffers."""
    from tvm import tirx

    if len(shapes) != len(func.params):
        raise ValueError(f"{spec.name}: the kernel takes {len(func.params)} tensors, the op {len(shapes)}")
    params, body = [], func.body
    for param, shape in zip(func.params, shapes):
        if shape is None or tuple(int(d) for d in param.shape) == tuple(shape):
            params.append(param)
            continue
        natural = tirx.decl_buffer(shape, param.dtype, param.name)
        body = tirx.DeclBuffer(param, body, data=tirx.buffer_data(natural))
        params.append(natural)
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)


def _pack_stage(mod: tvm.IRModule):
    """The ``wpack`` stage of ``mod``'s ``main`` where it is a loop nest of its own at the top level
    and the only reader of the weight: ``(func, weight buffer, packed buffer, kernel body, pack
    body)``, the two bodies ``main``'s root block with the other top-level loop nests (the packed
    buffer no longer allocated there) and with only the packing's; else None."""
    from tvm import s_tir, tirx

    sch = Schedule(mod)
    try:
        blk = sch.get_sblock("wpack")
    except Exception:  # noqa: BLE001 - no such stage
        return None
    func, node = mod["main"], sch.get(blk)
    realize = func.body
    root = realize.block
    seq = list(root.body.seq) if isinstance(root.body, tirx.SeqStmt) else [root.body]
    top = sch.get(sch.get_loops(blk)[0]) if sch.get_loops(blk) else None
    at = [i for i, st in enumerate(seq) if top is not None and st.same_as(top)]
    if len(at) != 1 or len(node.reads) != 1 or len(node.writes) != 1:
        return None
    weight, packed = node.reads[0].source, node.writes[0].source
    if not any(p.same_as(weight) for p in func.params):
        return None

    def blocks(parent):
        for b in sch.get_child_blocks(parent):
            yield b
            yield from blocks(b)

    for b in blocks(sch.get_sblock("root")):
        other = sch.get(b)
        if not other.same_as(node) and any(r.source.same_as(weight) for r in other.reads):
            return None
        if not other.same_as(node) and any(sch.get(loop).same_as(top) for loop in sch.get_loops(b)):
            return None  # something else lives in the packing loop nest

    def with_root(body, allocs):
        block = s_tir.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, body, root.init, allocs,
                             root.match_buffers, root.annotations)
        return s_tir.SBlockRealize(realize.iter_values, realize.predicate, block)

    rest = seq[:at[0]] + seq[at[0] + 1:]
    allocs = [b for b in root.alloc_buffers if not b.same_as(packed)]
    kernel = with_root(tirx.SeqStmt(rest) if len(rest) > 1 else rest[0], allocs)
    return func, weight, packed, kernel, with_root(seq[at[0]], [])


def split_weight_pack(mod: tvm.IRModule, spec: Spec, finish=None) -> tvm.IRModule | None:
    """Where the schedule packs a weight inside the kernel (the ``wpack`` stage, a loop nest of its
    own), the library the ops call: ``pack(weight, packed)`` holds that loop nest, and ``main``
    takes ``packed`` where it took the weight. The op packs on every call, in a parallel pass of
    its own into a buffer it keeps (runtime.call._packed says why not once). Both take the op's own
    shapes; ``finish`` is done to ``main`` first (``vectorize_partial_tiles``). None where the
    schedule does not allow the split (the packing inside another loop nest, or the weight read
    elsewhere)."""
    from tvm import tirx

    found = _pack_stage(mod)
    if found is None:
        return None
    func, weight, packed, kernel, packing = found
    main = tirx.PrimFunc([packed if p.same_as(weight) else p for p in func.params], kernel, func.ret_type,
                         func.attrs)
    main = finish(main) if finish else main
    pack = tirx.PrimFunc([weight, packed], packing, func.ret_type, func.attrs)
    natural = dict(spec.arg_shapes)
    if weight.name not in natural:
        return None
    shapes = [None if name == weight.name else shape for name, shape in spec.arg_shapes]
    shapes += _op_shapes(spec, main)[len(shapes):]
    return tvm.IRModule({"main": _with_shapes(main, shapes, spec),
                         "pack": _with_shapes(pack, [natural[weight.name], None], spec).with_attr(
                             "global_symbol", "pack")})


# How many elements a tensor allocated for measuring has beyond its own (tuning.alloc_with_slack):
# a kernel measured without its weight packing (drop_weight_pack) reads the packed weight, padded
# to whole vector blocks, through the weight's memory.
def measure_slack(numel: int) -> int:
    return numel + 4096


def drop_weight_pack(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` for measuring what the op runs: where ``split_weight_pack`` would take the packing
    out of the kernel (the op packs in a pass of its own), ``main`` without its ``wpack`` loop nest,
    reading the packed weight through the weight's own memory. The signature is unchanged, so MetaSchedule
    allocates the arguments as before; the values read are the random ones it filled in, and the
    padding of a packed weight larger than the weight falls in ``measure_slack``. Unchanged where
    there is no such stage or its packed weight would not fit."""
    from tvm import tirx

    found = _pack_stage(mod)
    if found is None:
        return mod
    func, weight, packed, kernel, _ = found
    size = lambda buf: math.prod(int(d) for d in buf.shape)  # noqa: E731
    if size(packed) > size(weight) + measure_slack(size(weight)) or packed.dtype != weight.dtype:
        return mod
    body = tirx.DeclBuffer(packed, kernel, data=tirx.buffer_data(weight))
    main = tirx.PrimFunc(func.params, body, func.ret_type, func.attrs)
    return tvm.IRModule({**{gv.name_hint: f for gv, f in mod.functions.items()}, "main": main})


def packed_layout(spec: Spec, plan: Plan) -> tuple[int, tuple[int, ...]]:
    """``(index of the packed weight among the op's tensors, packed shape)`` for a library with a
    ``pack`` function (see split_weight_pack): read off the compute the plan writes."""
    node = Schedule(prim_func(spec, plan))
    node = node.get(node.get_sblock("wpack"))
    names = [name for name, _ in spec.arg_shapes]
    return names.index(node.reads[0].source.name), tuple(int(d) for d in node.writes[0].source.shape)


def _lib_key(spec: Spec, target: TargetInfo, record: ScheduleRecord | None) -> str:
    # the default schedule's plan depends on this machine (its one-thread threshold: backends/launch.py)
    schedule = record.schedule if record else {"default": plan_to_dict(target.backend.default_plan(spec))}
    return cache.digest({"code": _CODE_VERSION, "backend": target.backend.code_hash(), "abi": "natural+pack",
                         "target": target.dict, "spec": spec.to_dict(), "schedule": schedule})[:32]


def compile_spec(spec: Spec, target: TargetInfo, record: ScheduleRecord | None = None) -> Kernel:
    """Schedule and compile ``spec`` for ``target`` (or load the compiled library from the user
    cache), with ``record`` or else the schedule ``choose`` picks; a schedule that fails to compile
    falls back to the unscheduled definition (correct, slow) with a warning rather than failing the op."""
    t0 = time.perf_counter()
    if record is None:
        record, source, build_target = choose(spec, target)
    else:
        source, build_target = record_source(record.name or spec.name, record.transferred_from), target
    path = None
    backend = target.backend
    torch_callable = backend.torch_callable  # the ops call it (on the CPU, or a GPU)
    if torch_callable and source != "unscheduled":
        lib_key = _lib_key(spec, build_target, record)
        path = cache.kernel_path(target, lib_key)
        lib = _load_library(path, lib_key, spec, target)
        if lib is not None:
            plan = backend.default_plan(spec)
            if record is not None:
                plan = plan_from_dict(record.plan)
            kern = Kernel(spec, target, plan, lib["main"], lib, time.perf_counter() - t0, source, str(path))
            return _with_pack(_with_dispatch(kern, record), lib)
    mod, plan, source = schedule(spec, build_target, record, source)
    if source == "default" and record is not None:
        path = None  # the record did not apply: do not cache the default under the record's key
    backend.before_compile()
    if backend.packs_weights:
        mod = split_weight_pack(mod, spec) or natural_signature(mod, spec)
    elif torch_callable:
        mod = natural_signature(mod, spec)
    try:
        ex = tvm.compile(mod, target=build_target.tvm())
    except Exception as exc:  # a schedule bug must not make the op unusable
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        plan, path = Plan(), None
        fallback = backend.compile_fallback(spec)
        if fallback is not None:  # (CUDA: an unscheduled kernel would run on the host, on device memory)
            log.warning("tvmconv: %s schedule of %s failed to compile (%s); using the %s backend's fallback "
                        "schedule", source, spec.name, why, target.kind)
            source, mod = "default", natural_signature(fallback, spec)
        else:
            log.warning("tvmconv: %s schedule of %s failed to compile (%s); using the unscheduled kernel", source,
                        spec.name, why)
            source = "unscheduled"
            mod = tvm.IRModule({"main": prim_func(spec, plan)})
            mod = natural_signature(mod, spec) if torch_callable else mod
        ex = tvm.compile(mod, target=target.tvm())
    if path is not None:
        if cache.save_library(path, ex.export_library, path.stem, spec, build_target):
            # run what the next process will load, set up as the backend sets up a loaded library
            ex = _load_library(path, path.stem, spec, target) or ex
    func = ex["main"] if torch_callable else None
    kern = Kernel(spec, target, plan, func, ex, time.perf_counter() - t0, source)
    kern = _with_dispatch(kern, record if from_record(source) else None)
    return _with_pack(kern, ex) if backend.packs_weights else kern


def _with_pack(kern: Kernel, lib) -> Kernel:
    """Fill in the kernel's ``pack`` function and packed layout when ``lib`` has one."""
    try:
        pack = lib["pack"]
    except (AttributeError, KeyError, RuntimeError):
        return kern
    kern.pack = pack
    kern.packed_index, kern.packed_shape = packed_layout(kern.spec, kern.plan)
    return kern


def _with_dispatch(kern: Kernel, record: ScheduleRecord | None) -> Kernel:
    """Fill in which path the op takes on this machine (``record``: the one the kernel applies)."""
    kern.schedule_id = dispatch.schedule_of(record)
    if kern.func is not None:  # (a kernel the ops cannot call here has nothing to decide)
        kern.dispatch, kern.dispatch_source = dispatch.decide(kern.spec, kern.target, record)
    return kern


def _load_library(path: Path, lib_key: str, spec: Spec, target: TargetInfo):
    if not cache.library_ok(path, lib_key, spec):
        return None
    target.backend.before_load()
    try:
        lib = tvm.runtime.load_module(str(path))
    except Exception as exc:  # noqa: BLE001 - intact but unloadable (a missing runtime symbol...)
        cache.set_aside(path, f"does not load: {_last_line(exc)}")
        return None
    target.backend.adopt_library(path)
    return lib


def load(spec: Spec, target: TargetInfo) -> Kernel:
    """The compiled kernel for ``spec`` on ``target``, compiling it on first use."""
    key = (spec, target)
    kern = _cache.get(key)
    if kern is not None:
        return kern
    # One lock per kernel: a slow compile holds up the threads waiting for that kernel only
    with _lock:
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        kern = _cache.get(key)
        if kern is None:
            kern = compile_spec(spec, target)
            _cache[key] = kern
    return kern


def use_kernel(kern: Kernel) -> None:
    """Make ``kern`` the kernel the ops call for its spec and target in this process (until
    ``clear_memory_cache``): how tuning times a record's kernel through the op."""
    with _lock:
        _cache[(kern.spec, kern.target)] = kern


def clear_memory_cache() -> None:
    with _lock:
        _cache.clear()
