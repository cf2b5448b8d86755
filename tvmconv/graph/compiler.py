"""``tvmconv.compile``: a whole network as one compiled module on the host, called once per forward.

    fast = tvmconv.compile(model.eval(), (x,))     # an nn.Module: tensors in, tensors out
    y = fast(x)                                    # one call into TVM's VM: no Python per layer
    fast.profile()                                 # each function timed alone and in the forward,
                                                   # against eager's convolution
    fast.tvmconv_report.print()

The pipeline, on TVM's maintained pieces (the one ``export --model`` runs, ending in the VM here
instead of a C driver):

1. the graph passes ``tvmconv.convert`` runs (passes.py: BatchNorm folded, shuffle, EffNet and
   squeeze-excitation patterns fused, every convolution a tvmconv op; a depthwise and a pointwise
   convolution two kernels unless the fused one is tuned: lowering.exported), then ``torch.export``;
2. TVM Relax's importer with every convolution a ``call_tir`` of tvmconv's kernel for the target
   (its tuned record, else its default schedule); every other op Relax's own, legalized to TIR,
   constants folded, elementwise chains fused (``lowering.relax_module``);
3. each TIR function that is not a tvmconv kernel scheduled by the backend
   (backends/llvm_generic.py: s_tir.dlight's CPU rules and tvmconv's own, each function's loops
   split over the threads and vectorised; LegalizeOps leaves one thread and scalar loops);
4. ``tvm.compile`` to a Relax VM executable, written as a library into the user cache
   (``models/<profile>/<key>.so``) and loaded from there (its parallel loops on PyTorch's thread
   pool, as the ops': backends/openmp.py). The key (``model_key``) covers the model's structure
   and weights, the inputs' shapes, the target and the schedule records, so the same model
   compiled again, in this process or another, is loaded in a second.

The weights are constants of the compiled module. Each call checks the source model's parameters
and buffers (their identity, data pointer and version counter, which in-place updates, optimizer
steps, ``load_state_dict`` and ``.data =`` advance): a change compiles the module again from the
model as it is now, so a result is never stale. A write that bypasses the version counter (through
``.data`` in place, a NumPy view), and a tensor put into a module's ``_parameters`` or ``_buffers``
dict directly (no registration hook sees it), are not seen: call ``fast.refresh()`` after one.

Inputs must have the example's shapes and dtypes (another shape compiles once more, for that
shape); the module runs on the CPU target it was compiled for. An op TVM's importer does not take
runs on PyTorch between compiled pieces of the graph (``fallback=False``: a ValueError naming it and
its module), and a model ``torch.export`` cannot capture runs as ``tvmconv.convert`` makes it; the
report's ``fallback`` says what ran on PyTorch.
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils import _pytree

from ..backends.target import resolve
from ..backends.timing import measure_roofline

log = logging.getLogger("tvmconv")


@dataclass
class FunctionTime:
    """One function of the compiled module, timed alone on random inputs of its shapes
    (``CompiledModel.profile``)."""

    function: str  # its name in the module
    what: str  # the tvmconv workload it computes ("+ epilogue": with the ops after it), or TVM's op
    calls: int  # calls per forward
    seconds: float  # one call (best of the rounds)
    gflops: float | None = None  # a tvmconv kernel's arithmetic rate
    eager_seconds: float | None = None  # its convolution alone through PyTorch (the vendor path)
    in_forward_seconds: float | None = None  # one call as the forward makes it (None: no call, a reshape viewed)
    roofline_seconds: float | None = None  # one call at the machine's roofline: its FLOPs at peak SGEMM speed or
    #                                        its tensors' bytes at copy bandwidth, whichever takes longer

    def of_roofline(self, seconds: float | None) -> float | None:
        """The fraction of the roofline a call taking ``seconds`` reaches (1: as fast as the machine allows)."""
        return self.roofline_seconds / seconds if self.roofline_seconds and seconds else None

    @property
    def roofline_fraction(self) -> float | None:
        """``of_roofline`` of a call as the forward makes it (alone where the forward was not timed)."""
        return self.of_roofline(self.in_forward_seconds or self.seconds)


@dataclass
class CompileReport:
    """What ``compile`` built: its kernels and how long each step took."""

    kernels: list[str] = field(default_factory=list)  # tvmconv workloads in the module
    epilogues: int = 0  # of its kernel calls, those computing the elementwise ops after them in their store
    scheduled: dict[str, int] = field(default_factory=dict)  # other TIR functions per rule
    steps_s: dict[str, float] = field(default_factory=dict)  # seconds per pipeline step
    conversion: object = None  # the ConversionReport of step 1
    fallback: list[str] = field(default_factory=list)  # what runs on PyTorch: "op in module.path (Class)"
    pieces: int = 1  # compiled modules (more than one where ops between them run on PyTorch)
    functions: list[FunctionTime] = field(default_factory=list)  # per function, once ``profile``d
    calls: list = field(default_factory=list, repr=False)  # (library, the call_tir calls of its main)

    @property
    def compile_s(self) -> float:
        return sum(self.steps_s.values())

    def summary(self) -> str:
        rules = ", ".join(f"{n} {r}" for r, n in sorted(self.scheduled.items()))
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.steps_s.items())
        between = f" between {self.pieces} compiled pieces" if self.pieces else ""
        on_torch = f"; on PyTorch{between}: {', '.join(self.fallback)}" if self.fallback else ""
        return (f"{len(self.kernels)} tvmconv kernels ({self.epilogues} with the ops after them fused), other "
                f"functions scheduled: {rules or 'none'}; compiled in {self.compile_s:.1f} s ({steps}){on_torch}")

    def table(self):
        """A rich Table: each function of the module with its time (after ``CompiledModel.profile``),
        then what runs on PyTorch."""
        from rich.table import Table

        t = Table("function", "what", "calls", "ms (all calls)", "in forward ms", "share", "GFLOP/s",
                  "of roofline (alone / in forward)", "eager conv ms", "vs eager", title="tvmconv.compile")
        total = sum(f.seconds * f.calls for f in self.functions) or 1.0
        pct = lambda x: "-" if x is None else f"{x:.0%}"  # noqa: E731
        for f in self.functions:
            t.add_row(f.function, f.what, str(f.calls), f"{f.seconds * f.calls * 1e3:.3f}",
                      "-" if f.in_forward_seconds is None else f"{f.in_forward_seconds * f.calls * 1e3:.3f}",
                      f"{100 * f.seconds * f.calls / total:.1f}%", f"{f.gflops:.1f}" if f.gflops else "-",
                      f"{pct(f.of_roofline(f.seconds))} / {pct(f.of_roofline(f.in_forward_seconds))}",
                      "-" if f.eager_seconds is None else f"{f.eager_seconds * f.calls * 1e3:.3f}",
                      f"{f.eager_seconds / f.seconds:.2f}x" if f.eager_seconds else "-")
        for where in self.fallback:
            t.add_row("(PyTorch)", where, "", "", "", "", "", "", "", "")
        return t

    def weakest(self, share: float = 0.02) -> FunctionTime | None:
        """Of the functions taking at least ``share`` of the forward (after ``CompiledModel.profile``),
        the one furthest below its roofline inside the forward (alone where the forward was not timed)."""
        total = sum(f.seconds * f.calls for f in self.functions) or 1.0
        ranked = [f for f in self.functions if f.seconds * f.calls >= share * total and f.roofline_fraction]
        return min(ranked, key=lambda f: f.roofline_fraction, default=None)

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        if self.functions or self.fallback:
            console.print(self.table())
        console.print(self.summary())
        weak = self.weakest()
        if weak is not None:
            console.print(f"furthest below the roofline: {weak.function} ({weak.what}), "
                          f"{weak.roofline_fraction:.0%} of it")

    def _took(self, step: str, since: float) -> None:
        self.steps_s[step] = self.steps_s.get(step, 0.0) + time.perf_counter() - since


def compile(model: nn.Module, example_inputs, target=None, *, fallback: bool = True) -> CompiledModel:  # noqa: A001
    """``model`` (an ``nn.Module`` in eval mode) as one compiled module (see the module docstring).
    ``example_inputs``: a tensor or a tuple of the model's positional tensor inputs, e.g. one
    ``(N, 3, H, W)`` image batch; ``target``: a CPU profile that runs here (default: this machine's).
    ``fallback``: ops TVM's importer does not take run on PyTorch between compiled pieces of the
    graph (a model ``torch.export`` cannot capture runs as ``tvmconv.convert`` makes it), and the
    report's ``fallback`` names them; False: a ValueError naming the op and its module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"compile: argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not all(isinstance(t, torch.Tensor) for t in example_inputs):
        raise TypeError("compile: argument 'example_inputs' must be a tensor or a tuple of tensors")
    if model.training:
        raise ValueError("compile: the model is in training mode; call model.eval() first (the compiled module "
                         "runs inference: BatchNorm folded, dropout off)")
    tgt = resolve(target)
    if not (tgt.backend.exports_c_library and tgt.runs_here):
        raise ValueError(f"compile: target {tgt.profile!r} does not run on this machine's CPU; compile builds for "
                         f"the host (use `tvmconv export --model` for another)")
    return CompiledModel(model, tuple(example_inputs), tgt, fallback=fallback)


class CompiledModel(nn.Module):
    """The module ``compile`` returns: ``forward(*inputs)`` runs the compiled network."""

    def __init__(self, model: nn.Module, example_inputs: tuple, target, *, fallback: bool = True):
        super().__init__()
        self._source = [model]  # (a list: not a submodule, its parameters are not ours)
        self._target, self._fallback = target, fallback
        self._built: dict = {}  # input signature -> (vm function, output structure)
        self._versions = self._tensors = self._seen = None
        _watch_registrations()
        self.tvmconv_report = CompileReport()
        self._build(example_inputs)

    # -- what the source model is now ---------------------------------------------------------------
    def _state(self) -> tuple:
        """The source model's parameters and buffers as (identity, data pointer, version counter).
        Their list is kept and found again only after a parameter, buffer or submodule was set on
        some module (``_registrations``): walking the module tree costs 0.7 ms a forward on
        MobileNetV2 (Zen 3), reading a kept list's 314 tensors 0.08 ms."""
        if self._tensors is None or self._seen != _registrations[0]:
            src = self._source[0]
            self._seen = _registrations[0]
            self._tensors = (*src.parameters(), *src.buffers())
        return tuple([(id(t), t.data_ptr(), t._version) for t in self._tensors])

    def refresh(self) -> None:
        """Compile again from the source model as it is now (after a write its version counters
        do not see)."""
        examples = [ex for _, ex in self._built.values()]
        self._built.clear()
        for ex in examples:
            self._build(ex)

    def _build(self, example_inputs: tuple) -> None:
        fn, report = build_vm(self._source[0], example_inputs, self._target, fallback=self._fallback)
        self._built[_signature(example_inputs, self._target.backend.device_type)] = (fn, tuple(t.detach().clone() for t in example_inputs))
        self._versions = self._state()
        self.tvmconv_report = report
        log.info("tvmconv.compile: %s", report.summary())

    def profile(self, rounds: int = 5) -> list[FunctionTime]:
        """Time each function of the compiled module alone (its library's function on random
        inputs of its shapes, best of ``rounds``), as the forward calls it (the last compiled
        example's inputs, median of ``rounds`` forwards: caches and threads as the layer before
        leaves them; one compiled piece only), and each tvmconv kernel's convolution through
        PyTorch; stored in ``tvmconv_report.functions`` (``tvmconv_report.print()`` shows them),
        slowest first. Where the time of a forward goes, function by function."""
        import numpy as np
        import tvm

        from ..spec import spec_from_dict

        dev = tvm.cpu()
        roof = measure_roofline(torch.get_num_threads(), target=self._target)  # (the kernels run on PyTorch's pool)
        seen: dict = {}
        for lib, calls in self.tvmconv_report.calls:
            lib = getattr(lib, "mod", lib)  # (an Executable, where no library could be written)
            funcs = lib.imports[0] if lib.imports else lib
            for c in calls:
                key = (c["function"], repr(c["args"]))
                if key in seen:
                    seen[key].calls += 1
                    continue
                tensors = [tvm.runtime.tensor(np.random.rand(*shape).astype(dtype), dev) for shape, dtype in c["args"]]
                t = funcs.time_evaluator(c["function"], dev, number=max(1, rounds), repeat=rounds)(*tensors)
                secs = min(t.results)
                spec = spec_from_dict(c["spec"]) if c["spec"] else None
                nbytes = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in c["args"])  # (each once)
                seen[key] = FunctionTime(c["function"], _what(c["function"], spec), 1, secs,
                                         spec.flops / secs / 1e9 if spec else None,
                                         _eager_seconds(spec, rounds) if spec else None,
                                         roofline_seconds=roof.min_seconds(spec.flops if spec else 0, nbytes))
        if len(self.tvmconv_report.calls) == 1 and not self.tvmconv_report.fallback:
            run, records = instrumented(self.tvmconv_report.calls[0][0], next(reversed(self._built.values()))[1])
            inside = _medians(run, records, max(3, rounds))
            for f in seen.values():
                f.in_forward_seconds = inside[f.function] / f.calls if f.function in inside else None
        self.tvmconv_report.functions = sorted(seen.values(), key=lambda f: -f.seconds * f.calls)
        return self.tvmconv_report.functions

    def forward(self, *inputs):
        if self._state() != self._versions:  # a parameter or buffer changed: never run stale weights
            log.info("tvmconv.compile: the model's parameters changed; compiling it again")
            self.refresh()
        key = _signature(inputs, self._target.backend.device_type)
        if key not in self._built:
            self._build(tuple(inputs))
        fn = self._built[key][0]
        return fn(*inputs)


_registrations = [0]  # parameters, buffers and submodules set on any module in this process


def _registered(*_) -> None:
    _registrations[0] += 1


@functools.cache
def _watch_registrations() -> None:
    """Count every parameter, buffer and submodule set (assigned, registered, ``load_state_dict``
    with ``assign=True``) through torch's global hooks, so that a compiled module walks its source
    model's tree again only after one: a new tensor is a new identity the kept list cannot see."""
    from torch.nn.modules import module

    module.register_module_parameter_registration_hook(_registered)
    module.register_module_buffer_registration_hook(_registered)
    module.register_module_module_registration_hook(_registered)


def instrumented(lib, inputs: tuple):
    """``(run, records)``: ``run()`` calls the compiled module ``lib``'s main on ``inputs`` (torch
    tensors), each call it makes appended to ``records`` as ``(function name, seconds)`` (the VM's
    instrument, before and after each call: a microsecond or two of its own). Warmed once."""
    import tvm
    from tvm import relax

    from ..runtime.call import _kernel_arg

    vm = relax.VirtualMachine(lib, tvm.cpu())
    args = [tvm.runtime.from_dlpack(_kernel_arg(t.detach())) for t in inputs]
    records: list = []
    started = [0.0]

    def instrument(func, symbol, before, ret, *rest):
        now = time.perf_counter()
        if before:
            started[0] = now
        else:
            records.append((str(symbol), now - started[0]))
        return 0  # (carry on)

    vm["main"](*args)
    vm.set_instrument(instrument)
    return (lambda: vm["main"](*args)), records


def _medians(run, records: list, rounds: int) -> dict:
    """Seconds per forward each function takes, all its calls, median over ``rounds`` forwards."""
    per: dict = {}
    for _ in range(rounds):
        records.clear()
        run()
        totals: dict = {}
        for name, secs in records:
            totals[name] = totals.get(name, 0.0) + secs
        for name, secs in totals.items():
            per.setdefault(name, []).append(secs)
    return {name: statistics.median(v) for name, v in per.items()}


def build_vm(model: nn.Module, example_inputs: tuple, tgt, *, fallback: bool = True):
    """``(run, CompileReport)``: ``run(*inputs)`` calls the compiled network (see the module
    docstring) on tensors of the example's shapes; from the user cache where this model, with
    these weights and inputs, was compiled before (``model_key``). ``fallback``: see ``compile``."""
    from . import lowering

    rep = CompileReport()
    t0 = time.perf_counter()
    key = model_key(model, example_inputs, tgt)
    run = _cached_runner(key, tgt, rep)
    if run is not None:
        rep._took("load", t0)
        return run, rep
    try:
        ep = lowering.exported(model, example_inputs, tgt)
    except Exception as exc:  # noqa: BLE001 - torch.export's many errors for a graph it cannot capture
        if not fallback:
            raise
        return _on_pytorch(model, example_inputs, rep, exc), rep
    rep._took("graph", t0)
    if fallback and not all(map(lowering.importable, ep.graph.nodes)):
        return _partitioned(ep, example_inputs, key, tgt, rep), rep
    return _compiled(ep, key, tgt, rep), rep


def _compiled(ep, key: str, tgt, rep: CompileReport):
    """The runner of ``ep`` compiled (Relax, scheduled, built) and stored under ``key``; ``rep``
    gains its kernels and steps."""
    import tvm
    from tvm import relax

    from . import lowering

    t0 = time.perf_counter()
    mod, kernels = lowering.relax_module(ep, tgt, schedule=False)
    rep._took("relax", t0)
    t0 = time.perf_counter()
    mod, scheduled = tgt.backend.schedule_model_functions(mod)
    rep._took("schedule", t0)
    t0 = time.perf_counter()
    ex = tvm.compile(mod, target=tgt.tvm())
    meta = {"kernels": [spec.name for spec in kernels.values()], "scheduled": scheduled,
            "epilogues": sum(1 for name in kernels if lowering.fused(name)),
            "out_spec": _pytree.treespec_dumps(ep.call_spec.out_spec), "calls": _calls(mod, kernels)}
    lib = _stored(key, ex, meta, tgt)
    _count(rep, meta, lib)
    run = _runner(relax.VirtualMachine(lib, tvm.cpu())["main"], ep.call_spec.out_spec)
    rep._took("build", t0)
    return run


def _cached_runner(key: str, tgt, rep: CompileReport):
    """The runner of the module stored under ``key`` (its kernels counted in ``rep``), or None."""
    import tvm
    from tvm import relax

    found = _load_cached(key, tgt)
    if found is None:
        return None
    lib, meta = found
    _count(rep, meta, lib)
    return _runner(relax.VirtualMachine(lib, tvm.cpu())["main"], _pytree.treespec_loads(meta["out_spec"]))


def _count(rep: CompileReport, meta: dict, lib) -> None:
    rep.calls.append((lib, meta.get("calls", [])))
    rep.kernels += meta["kernels"]
    rep.epilogues += meta.get("epilogues", 0)
    for rule, n in meta["scheduled"].items():
        rep.scheduled[rule] = rep.scheduled.get(rule, 0) + n


def _calls(mod, kernels: dict) -> list[dict]:
    """The ``call_tir`` calls of ``mod``'s main: function name, argument and output shapes and
    dtypes, and for a tvmconv kernel its spec (as a dict); what ``profile`` times."""
    from tvm import relax

    out = []
    for block in mod["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if not (isinstance(v, relax.Call) and v.op.name == "relax.call_tir"):
                continue
            args = [a.ty for a in v.args[1].fields] + [b.var.ty]
            if not all(isinstance(a, relax.TensorType) and getattr(a, "shape", None) is not None for a in args):
                continue  # (a tuple output: not timed)
            name = v.args[0].name_hint
            spec = kernels.get(name)
            out.append({"function": name, "args": [[[int(d) for d in a.shape], str(a.dtype)] for a in args],
                        "spec": spec.to_dict() if spec is not None else None})
    return out


def _partitioned(ep, example_inputs: tuple, key: str, tgt, rep: CompileReport):
    """``ep`` split where TVM's importer does not take an op: each run of ops it takes compiled
    (stored under ``key`` and the piece's name), the others left to PyTorch between them
    (torch.fx's ``split_module`` over the graph in order, so the pieces form a chain)."""
    import hashlib

    from torch.fx.passes.split_module import split_module

    from . import lowering

    t0 = time.perf_counter()
    gm = ep.module()
    for node in list(gm.graph.nodes):  # (export's input guard: the runner checks shapes itself)
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
    part, piece, last = {}, 0, None
    for node in gm.graph.nodes:
        if node.op == "call_function":
            ok = lowering.importable(node)
            piece += last is not None and ok != last
            part[node], last = piece, ok
            if not ok:
                rep.fallback.append(lowering.where(node))
    log.warning("tvmconv.compile: TVM's importer does not take %s; those ops run on PyTorch between compiled "
                "pieces of the model", ", ".join(dict.fromkeys(rep.fallback)))
    split = split_module(gm, None, lambda node: part.get(node, 0))
    calls = [node for node in split.graph.nodes if node.op == "call_module"]
    for node in calls:
        _own_weights(split, node)
    seen: dict = {}
    hooks = [split.get_submodule(n.target).register_forward_pre_hook(
        lambda _m, args, name=n.target: seen.setdefault(name, args)) for n in calls]
    with torch.no_grad():
        split(*example_inputs)
    for h in hooks:
        h.remove()
    rep._took("graph", t0)
    rep.pieces = 0
    for node in calls:
        sub = split.get_submodule(node.target)
        ops = [n for n in sub.graph.nodes if n.op == "call_function"]
        if not all(map(lowering.importable, ops)) or all(n.target.__name__ == "getitem" for n in ops):
            continue
        piece_key = hashlib.blake2b(f"{key}/{node.target}".encode(), digest_size=16).hexdigest()
        t0 = time.perf_counter()
        run = _cached_runner(piece_key, tgt, rep)
        if run is None:
            with torch.no_grad():
                sub_ep = torch.export.export(sub, seen[node.target])
            rep._took("graph", t0)
            run = _compiled(sub_ep, piece_key, tgt, rep)
        else:
            rep._took("load", t0)
        setattr(split, node.target, _Piece(run))
        rep.pieces += 1
    out_spec = ep.call_spec.out_spec

    def run_split(*inputs):
        with torch.no_grad():
            return _pytree.tree_unflatten(list(split(*inputs)), out_spec)

    return run_split


def _own_weights(split, call) -> None:
    """The tensors ``split_module`` passes to the piece ``call`` as inputs (the weights it reads)
    made the piece's own buffers: its export then holds them as constants, which the kernels'
    weight packing folds."""
    import operator

    sub = split.get_submodule(call.target)
    args = []
    for k, (ph, arg) in enumerate(zip([n for n in sub.graph.nodes if n.op == "placeholder"], call.args)):
        if not (isinstance(arg, torch.fx.Node) and arg.op == "get_attr"):
            args.append(arg)
            continue
        sub.register_buffer(f"_w{k}", operator.attrgetter(arg.target)(split))
        with sub.graph.inserting_before(ph):
            ph.replace_all_uses_with(sub.graph.get_attr(f"_w{k}"))
        sub.graph.erase_node(ph)
    call.args = tuple(args)
    sub.recompile()
    split.recompile()


def _what(function: str, spec) -> str:
    from . import lowering

    if spec is None:
        return function
    return spec.name + (" + epilogue" if lowering.fused(function) else "")


def _eager_seconds(spec, rounds: int) -> float | None:
    """The best time of ``spec``'s convolution through PyTorch (its vendor path) on random inputs."""
    from ..backends import timing
    from ..reference import random_args, vendor_for

    found = vendor_for(spec)
    if found is None:
        return None
    args, _ = random_args(spec, torch.Generator().manual_seed(0))
    with torch.no_grad():
        (times,) = timing.interleaved_many([lambda: found[1](*args)], rounds=rounds, settle_s=0.0)
    return min(times)


class _Piece(nn.Module):
    """A compiled piece of a partitioned model, where its graph module was."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def forward(self, *args):
        return self.run(*args)


def _on_pytorch(model: nn.Module, example_inputs: tuple, rep: CompileReport, exc: Exception):
    """A model ``torch.export`` cannot capture, as ``tvmconv.convert`` makes it (each convolution a
    tvmconv op, the rest PyTorch)."""
    from . import converter

    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("tvmconv.compile: torch.export cannot capture the model (%s); it runs as tvmconv.convert makes it",
                why)
    rep.fallback.append(f"the whole model (torch.export: {why})")
    rep.pieces = 0
    t0 = time.perf_counter()
    fast = converter.convert(model, example_inputs)
    rep._took("convert", t0)

    def run(*inputs):
        with torch.no_grad():
            return fast(*inputs)

    return run


# -- the compiled models in the user cache ------------------------------------------------------------
def model_key(model: nn.Module, example_inputs: tuple, tgt) -> str:
    """What a compiled model is made of: the model's structure (its modules' reprs and their
    classes' ``forward`` source), every parameter and buffer's bytes, the inputs' shapes and dtypes,
    the target, TVM's version, the code that makes kernels and the schedule records in the caches."""
    import hashlib
    import inspect

    from ..runtime import cache

    h = hashlib.blake2b(digest_size=16)
    h.update(repr(model).encode())
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        try:
            h.update(inspect.getsource(cls.forward).encode())
        except (OSError, TypeError):  # (a class defined where its source is not kept)
            h.update(cls.__qualname__.encode())
    for name, t in (*model.state_dict(keep_vars=True).items(),):
        t = t.detach()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    records = sorted(f"{p.name}:{p.stat().st_mtime_ns}" for r in cache.roots()
                     for p in (r / "schedules" / tgt.profile).glob("*.json"))
    h.update(cache.digest({"inputs": [[list(t.shape), str(t.dtype)] for t in example_inputs], "records": records,
                           "target": tgt.key_dict, "code": _compiler_code(), "format": 1}).encode())
    return h.hexdigest()


@functools.cache
def _compiler_code() -> str:
    """The digest of the code a compiled model is made from: its kernels' and the passes'."""
    from ..runtime import build

    return build.code_version((*build.KERNEL_SOURCES, *build.COMPILER_SOURCES))


def _paths(key: str, tgt) -> tuple:
    from ..runtime import cache

    lib = cache.user_root() / "models" / tgt.profile / f"{key}.so"
    return lib, lib.with_suffix(".json")


def _load_cached(key: str, tgt):
    """``(loaded library, its metadata)`` of a model compiled before, or None. Loaded only from a
    trusted directory, as a regular file whose bytes its manifest hashes (runtime/cache.py)."""
    import tvm

    from ..runtime import cache

    lib, meta_path = _paths(key, tgt)
    if not cache.trusted(lib.parent):
        return None
    meta = cache.read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("key") != key or meta.get("file") != cache.file_manifest(lib):
        return None
    try:
        loaded = tvm.runtime.load_module(str(lib))
    except Exception as exc:  # noqa: BLE001 - intact but unloadable: compiled again
        log.warning("tvmconv.compile: cannot load %s (%s); compiling the model again", lib, exc)
        return None
    tgt.backend.adopt_library(lib)
    return loaded, meta


def _stored(key: str, ex, meta: dict, tgt):
    """``ex`` written as a library into the user cache (beside its metadata) and loaded back, its
    parallel loops on the ops' thread pool (backends/openmp.py); into a private temporary directory
    where the cache cannot hold it; ``ex`` itself where no library can be linked here."""
    import tempfile

    import tvm

    from ..runtime import cache

    lib, meta_path = _paths(key, tgt)
    if not cache.trusted(lib.parent):
        lib = Path(tempfile.mkdtemp(prefix="tvmconv-model-")) / lib.name
    try:
        with cache.lock(lib, timeout=cache.SHORT_LOCK_TIMEOUT_S), cache.atomic_path(lib, suffix=".so") as tmp:
            tgt.backend.export_library(ex, str(tmp))
            cache.write_json(meta_path, {**meta, "key": key, "file": cache.file_manifest(tmp)})
    except Exception as exc:  # noqa: BLE001 - no C compiler, a read-only cache: the module runs from memory
        log.warning("tvmconv.compile: cannot write the compiled model (%s); running it from memory", exc)
        return ex
    loaded = tvm.runtime.load_module(str(lib))
    tgt.backend.adopt_library(lib)
    return loaded


def _runner(main, out_spec):
    """The compiled ``main`` on torch tensors: inputs handed over dense and 64-byte aligned, outputs
    copied out of the VM's memory and given the structure the model returns (``out_spec``, the
    exported program's pytree spec)."""
    import tvm

    from ..runtime.call import _kernel_arg

    def run(*inputs):
        out = main(*[tvm.runtime.from_dlpack(_kernel_arg(t.detach())) for t in inputs])
        flat = [out] if isinstance(out, tvm.runtime.Tensor) else list(out)
        return _pytree.tree_unflatten([torch.from_dlpack(o).clone() for o in flat], out_spec)

    return run


def _signature(inputs, device_type: str) -> tuple:
    for i, t in enumerate(inputs):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"compiled model: input {i} must be a tensor, got {type(t).__name__}")
        if t.device.type != device_type:
            raise ValueError(f"compiled model: input {i} is on {t.device}; the module runs on {device_type}")
    return tuple((tuple(t.shape), t.dtype) for t in inputs)


__all__ = ["compile", "CompiledModel", "CompileReport"]
