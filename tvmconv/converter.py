"""``tvmconv.convert``: run a model's convolutions on tvmconv kernels.

    fast = tvmconv.convert(model.eval(), (x,))          # prints a per-layer report
    fast = torch.compile(fast, fullgraph=True)          # tvmconv ops are custom ops: no graph break

What is replaced (in a deep copy; the original is untouched, parameters are shared):
* ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` -> their ``tvmconv.nn`` drop-ins;
* inside ``nn.Sequential`` containers, recognised patterns become one fused kernel:
  depthwise conv [-> ReLU/ReLU6] -> 1x1 conv [-> ReLU/ReLU6] (``DepthwiseSeparableConv2d``),
  grouped conv [-> ReLU] -> ``nn.ChannelShuffle`` (``ShuffledGroupConv2d``), and depthwise 1x3
  [-> act] -> ``MaxPool2d((2, 1))`` -> depthwise 3x1 [-> act] (``EffNetCore``). A pattern that
  fills a whole Sequential replaces it (submodule names, so state_dict keys, are kept);
* tvmconv.nn modules running the ``torch`` backend switch to ``tvmconv``.

The converted model is run on ``example_inputs`` and its outputs are compared with the original's
(float32 tolerance); a mismatch raises. Layers that cannot run on tvmconv (dtype, device, padding
mode) stay as they were and are listed in the report with the reason. A model that cannot run on
``example_inputs`` is returned unchanged, with the reason in the report and a warning.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from . import functional as TF
from . import nn as tnn
from .backends import timing
from .backends.target import resolve
from .runtime import build

SUPPORTED = (torch.float32, torch.float64)
_ACTS = (nn.ReLU, nn.ReLU6)


@dataclass
class LayerReport:
    name: str
    kind: str  # what it became, e.g. "Conv2d", "DepthwiseSeparableConv2d", or "kept"
    workloads: list[str] = field(default_factory=list)
    schedule: str = ""  # "tuned", "transferred", "default", "mixed" or "" (not run)
    tvmconv_s: float | None = None
    torch_s: float | None = None
    reason: str = ""  # why it was kept

    @property
    def speedup(self) -> float | None:
        return self.torch_s / self.tvmconv_s if self.tvmconv_s and self.torch_s else None


@dataclass
class ConversionReport:
    layers: list[LayerReport] = field(default_factory=list)
    max_abs_error: float | None = None
    error: str = ""  # set when the model could not be converted at all

    @property
    def converted(self) -> list[LayerReport]:
        return [r for r in self.layers if r.kind != "kept"]

    @property
    def kept(self) -> list[LayerReport]:
        return [r for r in self.layers if r.kind == "kept"]

    def table(self):
        from rich.table import Table

        t = Table("layer", "tvmconv module", "workload", "schedule", "tvmconv ms", "torch ms", "speed-up",
                  title="tvmconv.convert")
        ms = (lambda s: "-" if s is None else f"{s * 1e3:.3f}")
        for r in self.converted:
            t.add_row(r.name, r.kind, "\n".join(r.workloads) or "(not run)", r.schedule or "-", ms(r.tvmconv_s),
                      ms(r.torch_s), f"{r.speedup:.2f}x" if r.speedup else "-")
        for r in self.kept:
            t.add_row(r.name, "kept", r.reason, "", "", "", "")
        return t

    def print(self) -> None:
        from rich.console import Console

        console = Console()
        console.print(self.table())
        if self.error:
            console.print(f"[red]not converted:[/red] {self.error}")
        elif self.max_abs_error is not None:
            console.print(f"{len(self.converted)} layers on tvmconv, {len(self.kept)} kept; outputs match the "
                          f"original (max abs difference {self.max_abs_error:.3g})")


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


def _is_conv2d(m, *, depthwise=None, kernel=None, pointwise=False) -> bool:
    if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return False
    if depthwise and not (m.groups == m.in_channels and m.out_channels % m.in_channels == 0 and m.groups > 1):
        return False
    if kernel is not None and m.kernel_size != kernel:
        return False
    if pointwise and not (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0) and m.groups == 1):
        return False
    return True


def _act_at(mods, i):
    """(activation name, length) of an optional ReLU/ReLU6 at ``mods[i]``."""
    if i < len(mods) and isinstance(mods[i], _ACTS):
        return tnn._act_name(mods[i]), 1
    return None, 0


def _match(mods: list[nn.Module], i: int, target):
    """A fused replacement for a pattern starting at ``mods[i]``: (module, length) or None."""
    m = mods[i]
    if not isinstance(m, nn.Conv2d) or _unsupported(m, target):
        return None
    # depthwise -> [act] -> pointwise -> [act]
    if _is_conv2d(m, depthwise=True):
        a1, n1 = _act_at(mods, i + 1)
        j = i + 1 + n1
        if j < len(mods) and _is_conv2d(mods[j], pointwise=True) and mods[j].in_channels == m.out_channels:
            a2, n2 = _act_at(mods, j + 1)
            return tnn.DepthwiseSeparableConv2d.from_convs(m, mods[j], a1, a2, target=None), j + 1 + n2 - i
    # depthwise 1x3 -> [act] -> maxpool 2x1 -> depthwise 3x1 -> [act]
    if _is_conv2d(m, depthwise=True, kernel=(1, 3)) and m.stride == (1, 1) and m.padding == (0, 1) \
            and m.out_channels == m.in_channels:
        a1, n1 = _act_at(mods, i + 1)
        j = i + 1 + n1
        pool = mods[j] if j < len(mods) else None
        if isinstance(pool, nn.MaxPool2d) and nn.modules.utils._pair(pool.kernel_size) == (2, 1) and \
                nn.modules.utils._pair(pool.stride) == (2, 1) and nn.modules.utils._pair(pool.padding) == (0, 0) \
                and nn.modules.utils._pair(pool.dilation) == (1, 1) and not pool.ceil_mode and j + 1 < len(mods):
            c = mods[j + 1]
            if _is_conv2d(c, depthwise=True, kernel=(3, 1)) and c.stride == (1, 1) and c.padding == (1, 0) \
                    and c.in_channels == c.out_channels == m.out_channels:
                a2, n2 = _act_at(mods, j + 2)
                if a1 == a2:
                    return tnn.EffNetCore.from_convs(m, c, a1, target=None), j + 2 + n2 - i
    # grouped conv -> [relu] -> channel shuffle
    if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        k = i + 1
        if k < len(mods) and type(mods[k]) is nn.ReLU:
            k += 1
        if k < len(mods) and isinstance(mods[k], nn.ChannelShuffle) and m.out_channels % mods[k].groups == 0:
            new = tnn.ShuffledGroupConv2d.__new__(tnn.ShuffledGroupConv2d)
            new.__dict__ = dict(m.__dict__)
            new._init_tvmconv(None)
            new.shuffle_groups = mods[k].groups
            return new, k + 1 - i  # the ReLU commutes with the shuffle: it stays, the shuffle goes
    return None


def _fuse_sequentials(root: nn.Module, target, fused: dict[str, tuple[list[str], nn.Module]]) -> None:
    for name, seq in list(root.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        mods = [seq._modules[k] for k in keys]
        i = 0
        while i < len(mods):
            found = _match(mods, i, target)
            if found is None:
                i += 1
                continue
            new, n = found
            covered = [f"{name}.{k}" if name else k for k in keys[i:i + n]]
            if i == 0 and n == len(mods) and name and not isinstance(new, tnn.ShuffledGroupConv2d):
                parent_name, _, attr = name.rpartition(".")
                parent = root.get_submodule(parent_name) if parent_name else root
                setattr(parent, attr, new)
                fused[name] = (covered, new)
                break
            seq._modules[keys[i]] = new
            keep_relu = isinstance(new, tnn.ShuffledGroupConv2d) and n == 3
            for k in keys[i + 1:i + n]:
                if not (keep_relu and isinstance(seq._modules[k], nn.ReLU)):
                    seq._modules[k] = nn.Identity()
            fused[covered[0]] = (covered, new)
            i += n


def _swap_leaves(root: nn.Module, target, converted: dict[str, nn.Module], kept: dict[str, str]) -> None:
    owned: list[str] = []  # fused modules: their nn.Conv2d children only hold parameters
    for name, m in list(root.named_modules()):
        if any(name.startswith(p + ".") for p in owned):
            continue
        if isinstance(m, tnn.TvmconvModule) and not getattr(m, "container", False):
            owned.append(name)
        if isinstance(m, tnn.TvmconvModule):
            if m.backend == "torch":
                m.backend = "tvmconv"
                if not getattr(m, "container", False):
                    converted[name] = m
            continue
        cls = tnn.DROP_IN.get(type(m))
        if cls is None:
            continue
        why = _unsupported(m, target)
        if why:
            kept[name] = why
            continue
        new = cls.__new__(cls)
        new.__dict__ = dict(m.__dict__)  # the same parameters, buffers and hyper-parameters
        new._init_tvmconv(None)
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        setattr(parent, attr, new)
        converted[name] = new


def _record_inputs(model: nn.Module, example_inputs) -> tuple[object, dict[str, tuple]]:
    seen: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        def hook(_m, args, name=name):
            if name not in seen:
                seen[name] = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            out = model(*example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def convert(model: nn.Module, example_inputs, target=None, *, report: bool = True, time_layers: bool = True,
            rtol: float = 1e-4, atol: float = 1e-4) -> nn.Module:
    """A copy of ``model`` whose convolutions run tvmconv kernels (see the module docstring).
    ``example_inputs``: a tensor or a tuple of the model's positional inputs. The returned model
    carries ``.tvmconv_report`` (a ``ConversionReport``); ``report=True`` prints it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert: argument 'model' must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError("convert: argument 'example_inputs' must be a tensor or a tuple of the model's inputs, "
                        f"got {type(example_inputs).__name__}")
    tgt = resolve(target)
    rep = ConversionReport()
    try:
        expected, inputs = _record_inputs(model, example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model is reported, not raised
        rep.error = f"the model does not run on example_inputs: {type(exc).__name__}: {exc}"
        warnings.warn(f"tvmconv.convert: {rep.error}; the model is returned unchanged", stacklevel=2)
        model.tvmconv_report = rep
        if report:
            rep.print()
        return model
    new = copy.deepcopy(model)
    fused: dict[str, tuple[list[str], nn.Module]] = {}
    converted: dict[str, nn.Module] = {}
    kept: dict[str, str] = {}
    _fuse_sequentials(new, tgt, fused)
    _swap_leaves(new, tgt, converted, kept)
    tnn.set_target(new, target)
    tnn.name_layers(new)
    with torch.no_grad():
        got = new(*example_inputs)
    exp_t, got_t = _tensors(expected), _tensors(got)
    if len(exp_t) != len(got_t) or any(a.shape != b.shape for a, b in zip(exp_t, got_t)):
        raise RuntimeError("tvmconv.convert: the converted model's outputs differ in structure from the original's")
    err = max(((a.double() - b.double()).abs().max().item() for a, b in zip(exp_t, got_t)), default=0.0)
    for a, b in zip(exp_t, got_t):
        if not torch.allclose(b, a, rtol=rtol, atol=atol * max(1.0, a.abs().max().item())):
            raise RuntimeError(f"tvmconv.convert: the converted model's output differs from the original's by "
                               f"{err:.3g} (tolerance rtol={rtol}, atol={atol} relative to the output's scale); "
                               f"please report this model")
    rep.max_abs_error = err
    originals = dict(model.named_modules())
    for name, (covered, mod) in fused.items():
        seq = [originals[c] for c in covered]
        rep.layers.append(_layer(name, mod, lambda x, seq=seq: _chain(seq, x), inputs.get(covered[0]), time_layers))
    for name, mod in converted.items():
        if name in fused:
            continue
        rep.layers.append(_layer(name, mod, originals[name], inputs.get(name), time_layers))
    rep.layers += [LayerReport(name, "kept", reason=why) for name, why in kept.items()]
    new.tvmconv_report = rep
    if report:
        rep.print()
    return new


def _chain(mods, x):
    for m in mods:
        x = m(x)
    return x


def _layer(name: str, mod: nn.Module, original, args, time_layers: bool) -> LayerReport:
    r = LayerReport(name, type(mod).__name__)
    if args is None:
        return r
    with torch.no_grad(), TF.capture_kernels() as kernels:
        mod(*args)
    r.workloads = list(dict.fromkeys(k.spec.name for k in kernels))
    sources = {build.record_kind(k.schedule_source) or "default" for k in kernels}
    r.schedule = sources.pop() if len(sources) == 1 else ("mixed" if sources else "")
    if time_layers:
        with torch.no_grad():
            a, b = timing.interleaved(lambda: mod(*args), lambda: original(*args), rounds=3, min_round_s=0.005,
                                      warmup=1, settle_s=0.0)
        r.tvmconv_s, r.torch_s = timing.median(a), timing.median(b)
    return r


__all__ = ["convert", "ConversionReport", "LayerReport"]
