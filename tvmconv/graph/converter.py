"""``tvmconv.convert``: run a model's convolutions on tvmconv kernels.

    fast = tvmconv.convert(model.eval(), (x,))          # quiet; fast.tvmconv_report holds the report
    fast.tvmconv_report.print()                          # per layer and end to end, before and after
    json.dumps(fast.tvmconv_report.to_dict())
    fast = torch.compile(fast, fullgraph=True)          # tvmconv ops are custom ops: no graph break

The model (a deep copy: the original is untouched) is traced with torch.fx and rewritten on its
graph (graph/passes.py): eval-mode BatchNorm is folded into the convolution before it, fusable
patterns become one kernel (depthwise -> act -> pointwise -> act, grouped conv -> channel shuffle,
EffNet's 1x3 -> pool -> 3x1) wherever they occur, across nesting and functional calls, and every
other convolution becomes its tvmconv.nn drop-in. Residual adds and all other ops stay PyTorch.
The result is an ``fx.GraphModule`` with the model's submodule names.

A layer stays PyTorch where tvmconv is slower on this machine: each replacement is timed against
the nodes it replaces, on the input the model gives it (interleaved rounds, ``dispatch.judge``), and
the choice is stored as this model's (``model_name``: its class and input shapes) with the
machine's dispatch choices (runtime/dispatch.py): a later conversion of the model reads it, and for
that model it wins over the op's own choice (a layer the op alone would send to PyTorch runs its
kernel here where the model's timing says so). It is also the op's first choice where the op had
none. ``dispatch=False`` converts every layer. ``filter_fn(name, module) -> False`` leaves a module alone.

The original is never run: its outputs, and its time, come from a copy, so a model in training
mode keeps its BatchNorm statistics, and buffers a ``forward`` updates, as they were; the converted
model starts from the same state (what convert's own runs changed in it is put back) and updates it
per forward as eager does (a training-mode BatchNorm is not folded). Random draws in ``forward``
(dropout) see the same seed in the original's run and the converted one, and the caller's random
state is left as it was. Hooks: the model's own move to the converted model; a module with hooks
is never folded or fused across and a container with hooks stays one call (its convolutions swapped
one by one); the report lists them. The converted model loads the original's ``state_dict`` (keys
of fused modules renamed, folded BatchNorm folded anew).

A model torch.fx cannot trace (data-dependent control flow) has its convolutions swapped one by
one instead (no folding, no fused patterns; the report says why). The converted model is run on
``example_inputs`` and compared with the original (float32 tolerance); a mismatch raises. Layers
that cannot run on tvmconv (dtype, device, padding mode) stay, with the reason in the report. A
model that cannot run on ``example_inputs`` is returned unchanged, with the reason and a warning.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .. import functional as TF
from .. import knobs
from .. import nn as tnn
from ..backends import timing
from ..backends.target import resolve
from ..runtime import build, dispatch
from . import passes

log = logging.getLogger("tvmconv")
SUPPORTED = (torch.float32, torch.float64)


@dataclass
class LayerReport:
    name: str  # the replaced module's qualified name (the first, for a fused pattern)
    kind: str  # what it became, e.g. "Conv2d", "DepthwiseSeparableConv2d", or "kept"
    covered: list[str] = field(default_factory=list)  # the modules it replaces
    workloads: list[str] = field(default_factory=list)
    schedule: str = ""  # "tuned", "transferred", "default" or "" (not run)
    tvmconv_s: float | None = None  # the replacement alone, dispatch off
    torch_s: float | None = None  # the PyTorch nodes it replaces
    reason: str = ""  # why it was kept

    @property
    def speedup(self) -> float | None:
        return self.torch_s / self.tvmconv_s if self.tvmconv_s and self.torch_s else None


@dataclass
class ConversionReport:
    layers: list[LayerReport] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)  # BatchNorm modules folded into convolutions
    hooked: list[str] = field(default_factory=list)  # modules with hooks: kept whole, nothing fused across
    traced: bool = True  # False: torch.fx could not trace the model (``note`` says why)
    note: str = ""
    max_abs_error: float | None = None
    torch_s: float | None = None  # the whole model, before (the original)
    tvmconv_s: float | None = None  # and after, timed interleaved on example_inputs
    error: str = ""  # set when the model could not be converted at all
    folds: list = field(default_factory=list, repr=False)  # (passes.Fold, the folded weight) per BatchNorm

    @property
    def converted(self) -> list[LayerReport]:
        return [r for r in self.layers if r.kind != "kept"]

    @property
    def kept(self) -> list[LayerReport]:
        return [r for r in self.layers if r.kind == "kept"]

    @property
    def speedup(self) -> float | None:
        return self.torch_s / self.tvmconv_s if self.tvmconv_s and self.torch_s else None

    def to_dict(self) -> dict:
        """The report as plain data (``json.dumps`` takes it), with each layer's speed-up and the
        end-to-end one."""
        out = asdict(replace(self, folds=[]))
        out.pop("folds")
        for d, r in zip(out["layers"], self.layers):
            d["speedup"] = r.speedup
        out["speedup"] = self.speedup
        return out

    def table(self):
        from rich.table import Table

        t = Table("layer", "tvmconv module", "workload", "schedule", "tvmconv ms", "torch ms", "speed-up",
                  title="tvmconv.convert")
        ms = (lambda s: "-" if s is None else f"{s * 1e3:.3f}")
        for r in self.converted:
            t.add_row(r.name, r.kind, "\n".join(r.workloads) or "(not run)", r.schedule or "-", ms(r.tvmconv_s),
                      ms(r.torch_s), f"{r.speedup:.2f}x" if r.speedup else "-")
        for r in self.kept:
            t.add_row(r.name, "kept", r.reason, "", ms(r.tvmconv_s), ms(r.torch_s), f"{r.speedup:.2f}x" if r.speedup
                      else "")
        if self.speedup:
            t.add_row("whole model", "", "", "", ms(self.tvmconv_s), ms(self.torch_s), f"{self.speedup:.2f}x",
                      style="bold")
        return t

    def summary(self) -> str:
        if self.error:
            return f"not converted: {self.error}"
        text = (f"{len(self.converted)} layers on tvmconv, {len(self.kept)} kept PyTorch, {len(self.folded)} "
                f"BatchNorm folded")
        if self.max_abs_error is not None:
            text += f"; outputs match the original (max abs difference {self.max_abs_error:.3g})"
        if self.speedup:
            text += f"; whole model {self.torch_s * 1e3:.3f} -> {self.tvmconv_s * 1e3:.3f} ms ({self.speedup:.2f}x)"
        if self.hooked:
            text += f"; modules with hooks kept whole, nothing fused across them: {', '.join(self.hooked)}"
        return text + (f"; {self.note}" if self.note else "")

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        console.print(self.table())
        console.print(self.summary())


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _unsupported(m: nn.Module, target) -> str:
    """Why ``m``'s parameters cannot run on tvmconv for ``target`` ('' when they can)."""
    for p in m.parameters(recurse=True):
        if p.dtype not in SUPPORTED:
            return f"dtype {p.dtype} (tvmconv runs float32 and float64)"
        if p.device.type != target.backend.device_type:
            return f"parameters on {p.device}, target {target.profile} runs on {target.kind}"
    if isinstance(m, nn.modules.conv._ConvTransposeNd) and m.padding_mode != "zeros":
        return f"padding_mode {m.padding_mode!r}"
    return ""


def convert(model: nn.Module, example_inputs, target=None, *, filter_fn=None, dispatch: bool = True,
            time_layers: bool = True, report: bool = False, rtol: float = 1e-4, atol: float = 1e-4,
            separable: bool | Callable = True) -> nn.Module:
    """A copy of ``model`` whose convolutions run tvmconv kernels (see the module docstring).
    ``example_inputs``: a tensor or a tuple of the model's positional inputs. ``dispatch``: keep a
    layer PyTorch where it is faster on this machine. ``time_layers``: time each layer and the whole
    model before and after. ``separable``: a depthwise convolution and the pointwise one after it
    run as one fused kernel (False: as two; a callable: fused where it returns True for that
    kernel's spec, e.g. ``lowering.fuse_where_tuned``, ``tvmconv.compile``'s rule). The returned
    model carries ``.tvmconv_report`` (a ``ConversionReport``); ``report=True`` prints it, else its
    summary is logged (INFO)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError("convert: argument 'example_inputs' must be a tensor or a tuple of the model's inputs, "
                        f"got {type(example_inputs).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"convert: argument 'filter_fn' must be callable (name, module) -> bool, got {filter_fn!r}")
    if not (isinstance(separable, bool) or callable(separable)):
        raise TypeError(f"convert: argument 'separable' must be a bool or a callable(spec) -> bool, got {separable!r}")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        return _convert(model, example_inputs, target, filter_fn, dispatch, time_layers, report, rtol, atol,
                        separable)


def _convert(model, example_inputs, target, filter_fn, dispatch, time_layers, report, rtol, atol,
             separable) -> nn.Module:
    tgt = resolve(target)
    rep = ConversionReport()
    ref = copy.deepcopy(model)  # run instead of the original, which stays untouched
    try:
        expected = _run_seeded(ref, example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported, not raised
        rep.error = f"the model does not run on example_inputs: {type(exc).__name__}: {exc}"
        warnings.warn(f"tvmconv.convert: {rep.error}; the model is returned unchanged", stacklevel=3)
        model.tvmconv_report = rep
        _tell(rep, report)
        return model
    new = copy.deepcopy(model)
    state = _State(new)  # what convert's own runs change in it (statistics, buffers) is put back
    rep.hooked = [name or "(the model)" for name, m in new.named_modules() if passes.hooked(m)]
    gm, found = _plan(new, example_inputs, tgt, rep, filter_fn, separable)
    if gm is not None:
        converted = _convert_graph(gm, found, tgt, target, rep, dispatch_on=dispatch, time_layers=time_layers,
                                   model=model_name(model, example_inputs))
        state.follow(converted, rep.folds)
        passes.copy_hooks(new, converted)
        new = converted
    tnn.set_target(new, target)
    tnn.name_layers(new)
    state.restore()
    rep.max_abs_error = _check(new, example_inputs, expected, rtol, atol)
    if time_layers:
        with torch.no_grad():
            a, b = tgt.backend.time([lambda: new(*example_inputs), lambda: ref(*example_inputs)], rounds=5)
        rep.tvmconv_s, rep.torch_s = timing.median(a), timing.median(b)
    state.restore()
    new.tvmconv_report = rep
    _tell(rep, report)
    return new


def _tell(rep: ConversionReport, report: bool) -> None:
    if report:
        rep.print()
    else:
        log.info("tvmconv.convert: %s", rep.summary())


_SEED = 20261206  # the same random draws (dropout) in the original's run and the converted one's


def _run_seeded(model: nn.Module, example_inputs):
    """``model(*example_inputs)`` without autograd, on a fixed seed, the caller's random state kept."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return model(*example_inputs)


class _State:
    """A model's buffers as they were (``restore`` puts them back), and the original's
    ``state_dict`` keys for the converted model (``follow``)."""

    def __init__(self, model: nn.Module):
        self.saved = [(b, b.detach().clone()) for b in model.buffers()]
        self.names = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}

    def restore(self) -> None:
        with torch.no_grad():
            for b, v in self.saved:
                b.copy_(v)

    def follow(self, converted: nn.Module, folds: list) -> None:
        """Let ``converted`` load the original's state_dict: a key whose tensor moved (into a fused
        module) is renamed, and a folded BatchNorm with its convolution is folded anew (``folds``:
        ``(passes.Fold, the folded convolution's weight)``)."""
        now = converted.state_dict(keep_vars=True)
        # the converted key -> the original's, for a tensor now (also) under another name
        renamed = {k: self.names[id(t)] for k, t in now.items() if self.names.get(id(t), k) != k}
        where = {id(t): k for k, t in now.items()}
        refold = [(f, where[id(w)].rpartition(".")[0]) for f, w in folds if id(w) in where]
        if renamed or refold:
            converted._register_load_state_dict_pre_hook(functools.partial(_original_keys, renamed, set(now), refold))


def _original_keys(renamed: dict, keys: set, refold: list, state_dict, prefix, *_):
    """``load_state_dict`` pre-hook: the original model's keys as the converted model's."""
    for f, into in refold:
        conv, bn = prefix + f.conv + ".", prefix + f.bn + "."
        stats = [bn + k for k in ("running_mean", "running_var")]
        if conv + "weight" not in state_dict or not all(k in state_dict for k in stats):
            continue
        w, b = fuse_conv_bn_weights(state_dict.pop(conv + "weight"), state_dict.pop(conv + "bias", None),
                                    state_dict.pop(stats[0]), state_dict.pop(stats[1]), f.eps,
                                    state_dict.pop(bn + "weight", None), state_dict.pop(bn + "bias", None),
                                    transpose=f.transpose)
        state_dict.pop(bn + "num_batches_tracked", None)
        state_dict[prefix + into + ".weight"], state_dict[prefix + into + ".bias"] = w.detach(), b.detach()
    moved = set()
    for new, old in renamed.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict[prefix + old]
            moved.add(old)
    for old in moved - keys:  # (a key the converted model also has stays)
        state_dict.pop(prefix + old)


def _check(new: nn.Module, example_inputs, expected, rtol: float, atol: float) -> float:
    got = _run_seeded(new, example_inputs)
    exp_t, got_t = _tensors(expected), _tensors(got)
    if len(exp_t) != len(got_t) or any(a.shape != b.shape for a, b in zip(exp_t, got_t)):
        raise RuntimeError("tvmconv.convert: the converted model's outputs differ in structure from the original's")
    err = max((_difference(a, b) for a, b in zip(exp_t, got_t) if a.numel()), default=0.0)
    for a, b in zip(exp_t, got_t):  # (an example holding NaN or inf: the same NaN and inf are the same answer)
        scale = a.nan_to_num(0.0, 0.0, 0.0).abs().max().item() if a.numel() else 0.0
        if not torch.allclose(b, a, rtol=rtol, atol=atol * max(1.0, scale), equal_nan=True):
            raise RuntimeError(f"tvmconv.convert: the converted model's output differs from the original's by "
                               f"{err:.3g} (tolerance rtol={rtol}, atol={atol} relative to the output's scale); "
                               f"please report this model")
    return err


def _difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |a - b|: 0 where both are equal (the same inf) or both NaN, inf where one only is NaN."""
    same = (a == b) | (a.isnan() & b.isnan())
    return torch.where(same, 0.0, (a.double() - b.double()).abs().nan_to_num(nan=float("inf"))).max().item()


def _plan(new: nn.Module, example_inputs, tgt, rep: ConversionReport, filter_fn, separable: bool | Callable = True):
    """Trace ``new`` (the model's copy), fold its BatchNorm and find its rewrites, each with its
    input on ``example_inputs``: ``(graph module, [(rewrite, input or None), ...])``. An untraceable
    model gets ``(None, [])``, its convolutions swapped one by one in place (``rep`` says why)."""
    try:
        gm = passes.trace(new)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds for an untraceable model
        rep.traced = False
        rep.note = (f"torch.fx cannot trace the model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}): "
                    "its convolutions were swapped one by one, without BatchNorm folding or fused patterns")
        _swap_leaves(new, tgt, rep, filter_fn)
        return None, []
    folds = passes.fold_batchnorm(gm)
    rep.folded = [f.bn for f in folds]
    rep.folds = [(f, gm.get_submodule(f.conv).weight) for f in folds]
    found = passes.rewrites(gm, filter_fn, separable=bool(separable))
    for node in gm.graph.nodes:  # a container with hooks is one call: its convolutions one by one
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if m is not None and passes.hooked(m) and next(m.children(), None) is not None:
            _swap_leaves(m, tgt, rep, filter_fn, prefix=node.target + ".")
    inputs = _Recorder(gm, {rw.input for rw in found}).record(example_inputs)
    if callable(separable):  # fused where it says so for the fused kernel's spec, else two kernels
        apart = {rw.name for rw in found if isinstance(rw.module, tnn.DepthwiseSeparableConv2d)
                 and not _fuse(separable, rw.module, inputs.get(rw.input))}
        if apart:
            found = passes.rewrites(gm, filter_fn, separable=lambda name: name not in apart)
            inputs = _Recorder(gm, {rw.input for rw in found}).record(example_inputs)
    return gm, [(rw, inputs.get(rw.input)) for rw in found]


def _fuse(rule: Callable, module: nn.Module, x) -> bool:
    """``rule(spec)`` for the spec of the kernel ``module(x)`` runs."""
    from ..runtime.call import spec_of

    try:
        return x is not None and bool(rule(spec_of(module, x)))
    except (ValueError, TypeError):  # (an input the op refuses: convert keeps that layer PyTorch)
        return False


def model_name(model: nn.Module, example_inputs) -> str:
    """What names ``model``'s own dispatch choices (``dispatch.model_choice``): its class and the
    shapes of its inputs, e.g. ``MobileNetV2(1x3x224x224)``."""
    shapes = ",".join("x".join(map(str, t.shape)) for t in example_inputs if isinstance(t, torch.Tensor))
    return f"{type(model).__qualname__}({shapes})"


def _convert_graph(gm: fx.GraphModule, found: list, tgt, target, rep: ConversionReport, *, dispatch_on: bool,
                   time_layers: bool, model: str) -> fx.GraphModule:
    """Decide and apply ``found`` (``_plan``'s) on ``gm``; the layers go to ``rep``."""
    chosen = []
    for rw, x in found:
        original = rw.original(gm)  # (before any rewrite changes the modules it calls)
        layer, use = _decide(rw, original, x, tgt, target, dispatch_on, time_layers, model)
        rep.layers.append(layer)
        if use:
            chosen.append(rw)
    for rw in chosen:
        passes.apply(gm, rw)
    return passes.finish(gm)


class _Recorder(fx.Interpreter):
    """Runs the graph once and keeps the values of ``wanted`` nodes (the replacements' inputs)."""

    def __init__(self, gm: fx.GraphModule, wanted: set):
        super().__init__(gm)
        self.wanted, self.seen = wanted, {}

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.wanted and isinstance(out, torch.Tensor):
            self.seen[n] = out.detach().clone()
        return out

    def record(self, example_inputs) -> dict:
        with torch.no_grad():
            self.run(*example_inputs)
        return self.seen


def _decide(rw: passes.Rewrite, original, x, tgt, target, dispatch_on: bool, time_layers: bool, model: str):
    """``(layer report, whether to apply rw)``: tvmconv where it runs and (with ``dispatch_on``)
    is not slower than the PyTorch nodes it replaces in ``model`` (``model_name``) on this machine."""
    r = LayerReport(rw.name, rw.kind, covered=rw.covered)
    why = _unsupported(rw.module, tgt)
    if why or x is None:
        r.kind, r.reason = "kept", why or "not reached on example_inputs"
        return r, False
    mod = rw.module
    tnn.set_target(mod, target)
    try:
        with torch.no_grad(), TF.capture_kernels() as kernels:
            mod(x)
    except (ValueError, TypeError) as exc:  # an argument tvmconv refuses and torch takes
        r.kind, r.reason = "kept", f"{type(exc).__name__}: {exc}"
        return r, False
    r.workloads = list(dict.fromkeys(k.spec.name for k in kernels))
    sources = {build.record_kind(k.schedule_source) or "default" for k in kernels}
    r.schedule = sources.pop() if len(sources) == 1 else ("mixed" if sources else "")
    kern = kernels[-1] if len(kernels) == 1 else None
    deciding = dispatch_on and knobs.dispatch() and kern is not None
    stored = dispatch.model_choice(model, kern) if deciding else None
    if time_layers or (deciding and not (stored and stored["decided"])):
        def kernel():
            with TF.no_dispatch():
                mod(x)
        with torch.no_grad():  # (the layer against the nodes it replaces, on its input in the model)
            a, b, _ = dispatch.measure(lambda k: tgt.backend.time([kernel, lambda: original(x)], rounds=k))
        r.tvmconv_s, r.torch_s = timing.median(a), timing.median(b)
        if deciding:
            stored = dispatch.settle_in_model(model, kern, a, b)
            if kern.dispatch == dispatch.UNDECIDED:  # (the op's first measurement too)
                dispatch.settle(kern, a, b, "convert")
    if not deciding:
        return r, True
    # this model's choice wins over the op-level one; within the noise, the kernel (judge's rule)
    if stored["choice"] == "vendor":
        slower = 1 / stored["margin"]
        r.kind, r.reason = "kept", f"PyTorch is faster in this model (the kernel took {slower:.2f}x its time)"
        return r, False
    if kern.dispatch == "vendor":  # (the op alone went to PyTorch: in this model the kernel runs)
        for m in mod.modules():
            if isinstance(m, tnn.TvmconvModule):
                m.dispatch = False
    return r, True


def workloads(model: nn.Module, example_inputs, *, filter_fn=None, separable: bool | Callable = True) -> list[tuple]:
    """The kernels ``convert(model, example_inputs, dispatch=False, filter_fn=filter_fn,
    separable=separable)`` runs (``separable=lowering.fuse_where_tuned(target)``: those
    ``tvmconv.compile`` runs),
    as ``[(spec, calls per forward), ...]`` in graph order: fused patterns as one spec, each at the
    batch size its layer sees. Found without compiling a kernel (``functional.collect_specs``);
    what ``tvmconv.tune(model)``, ``calibrate``, ``bench`` and ``export`` take for a model."""
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    new, tgt = copy.deepcopy(model).eval(), resolve(None)
    gm, found = _plan(new, example_inputs, tgt, ConversionReport(), filter_fn, separable)
    with torch.no_grad(), TF.collect_specs() as specs:
        if gm is None:  # (its leaves swapped)
            new(*example_inputs)
        for rw, x in found:
            if x is None or _unsupported(rw.module, tgt):
                continue
            try:
                rw.module(x)
            except (ValueError, TypeError):  # a layer convert keeps PyTorch
                continue
    counts: dict = {}
    for spec in specs:
        counts[spec] = counts.get(spec, 0) + 1
    return list(counts.items())


def _swap_leaves(root: nn.Module, tgt, rep: ConversionReport, filter_fn, prefix: str = "") -> None:
    """The untraceable model's fallback (and a hooked container's): each convolution module
    swapped for its drop-in, each tvmconv.nn module switched to the tvmconv backend. ``prefix``:
    ``root``'s qualified name in the model, with a dot."""
    owned: list[str] = []  # fused modules: their nn.Conv2d children only hold parameters
    for local, m in list(root.named_modules()):
        name = prefix + local if local else prefix.rstrip(".")
        if any(name.startswith(p + ".") for p in owned) or (filter_fn is not None and name and not filter_fn(name, m)):
            continue
        if isinstance(m, tnn.TvmconvModule):
            if not getattr(m, "container", False):
                owned.append(name)
            if m.backend == "torch":
                m.backend = "tvmconv"
                if not getattr(m, "container", False):
                    rep.layers.append(LayerReport(name, type(m).__name__, covered=[name]))
            continue
        if type(m) not in tnn.DROP_IN:
            continue
        why = _unsupported(m, tgt)
        if why:
            rep.layers.append(LayerReport(name, "kept", covered=[name], reason=why))
            continue
        new = passes.drop_in(m)
        parent_name, _, attr = local.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, attr, new)
        rep.layers.append(LayerReport(name, type(new).__name__, covered=[name]))


__all__ = ["convert", "workloads", "ConversionReport", "LayerReport"]
