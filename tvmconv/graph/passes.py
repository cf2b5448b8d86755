"""Passes over a model traced with torch.fx: what ``tvmconv.convert`` applies to a model.

    gm = trace(model)                     # tvmconv.nn modules stay single calls
    folded = fold_batchnorm(gm)           # eval-mode BatchNorm folded into the conv before it
    for rw in rewrites(gm): ...           # fusable patterns and single convolutions, not yet applied
    apply(gm, rw)                         # one of them, in place

A pattern is matched on the dataflow, not on neighbours in an ``nn.Sequential``: across nesting,
between modules and functional calls (``F.relu``, ``torch.channel_shuffle``, ``F.max_pool2d``),
wherever each intermediate value has one user. Residual adds and every other op stay PyTorch.

* depthwise conv -> [act] -> 1x1 conv -> [act]              -> ``DepthwiseSeparableConv2d``
* grouped conv -> [ReLU] -> channel shuffle                  -> ``ShuffledGroupConv2d`` -> [ReLU]
* depthwise 1x3 -> [act] -> max-pool 2x1 -> depthwise 3x1 -> [act]  -> ``EffNetCore``
* x -> global average pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid -> times x
  (torchvision's ``SqueezeExcitation``, or the same in functional calls) -> ``SqueezeExcitation``
* any other ``nn.Conv*d`` / ``nn.ConvTranspose*d``           -> its ``tvmconv.nn`` drop-in
* a ``tvmconv.nn`` module running the ``torch`` backend      -> the same module on ``tvmconv``

Activations are ReLU and ReLU6 (modules, ``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6``,
``F.hardtanh(x, 0, 6)``). BatchNorm folding uses torch's ``fuse_conv_bn_eval``.

A module with forward or backward hooks is never folded or fused across (its hooks would see
another computation, or not run): it stays one call, a container included (``hooked``). In-place
calls whose result is unused (``x.add_(1)``, a buffer's ``copy_``) stay in the graph.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .. import nn as tnn
from ..spec import Spec

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RELU_FNS = {F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu6: "relu6"}
_SHUFFLE_FNS = (F.channel_shuffle, torch.channel_shuffle, torch.native_channel_shuffle)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with every tvmconv.nn module but the containers kept as one call (their
    forward checks arguments that a trace cannot give them)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if hooked(m):  # traced through, its hooks would never run
            return True
        if isinstance(m, tnn.TvmconvModule):
            return not getattr(m, "container", False)
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as an ``fx.GraphModule`` sharing its modules and parameters. Raises what torch.fx
    raises for a model it cannot trace (data-dependent control flow), and RuntimeError for one
    whose ``forward`` changes a buffer or parameter in place from values the trace takes for
    constants (``self.count.add_(1)``): torch.fx runs that update once, while tracing (``model``'s
    state has moved), and leaves it out of the graph."""
    state = model.state_dict(keep_vars=True)
    versions = {k: t._version for k, t in state.items()}
    tracer = _Tracer()
    graph = tracer.trace(model)
    moved = [k for k, t in state.items() if t._version != versions[k]]
    if moved:
        raise RuntimeError(f"forward changes {', '.join(moved[:3])} in place from constants; a trace would drop it")
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def hooked(m: nn.Module) -> bool:
    """Whether ``m`` has forward (pre-)hooks or backward hooks of its own."""
    return any(getattr(m, name, None) for name in _HOOKS)


def copy_hooks(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst`` the module hooks ``src`` has (``dst`` replaces ``src`` as a whole)."""
    for name in dir(nn.Module()):
        if name.endswith("_hooks") or "_hooks_" in name:
            value = getattr(src, name, None)
            if isinstance(value, dict) and value:
                setattr(dst, name, copy.copy(value))


# -- reading the graph ----------------------------------------------------------------------------
def _module(gm: fx.GraphModule, node, types) -> nn.Module | None:
    if isinstance(node, fx.Node) and node.op == "call_module":
        m = gm.get_submodule(node.target)
        if type(m) in types:  # exact types: a subclass may compute something else
            return m
    return None


def _hooked_node(gm: fx.GraphModule, node) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_module" and hooked(gm.get_submodule(node.target))


def _calls(gm: fx.GraphModule, target: str) -> int:
    return sum(1 for n in gm.graph.nodes if n.op == "call_module" and n.target == target)


def only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def act_of(gm: fx.GraphModule, node: fx.Node, arg: fx.Node) -> str | None:
    """'relu' or 'relu6' when ``node`` applies that activation to ``arg`` (and nothing else)."""
    if not isinstance(node, fx.Node) or not node.args or node.args[0] is not arg:
        return None
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return tnn._act_name(m) if type(m) in (nn.ReLU, nn.ReLU6, nn.Hardtanh) and len(node.args) == 1 else None
    if node.op == "call_method" and node.target in ("relu", "relu_") and len(node.args) == 1:
        return "relu"
    if node.op != "call_function":
        return None
    if node.target in _RELU_FNS and len(node.args) == 1:
        return _RELU_FNS[node.target]
    if node.target is F.hardtanh:
        lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        return "relu6" if (lo, hi) == (0, 6) else None
    return None


def then_act(gm, node: fx.Node) -> tuple[str | None, list[fx.Node]]:
    """The activation applied to ``node`` by its only user, if any: ``(name, [that user])``."""
    user = only_user(node)
    act = act_of(gm, user, node) if user is not None else None
    return (act, [user]) if act else (None, [])


def _shuffle_groups(gm, node: fx.Node, arg: fx.Node) -> int | None:
    if not isinstance(node, fx.Node) or not node.args or node.args[0] is not arg:
        return None
    if node.op == "call_module" and type(gm.get_submodule(node.target)) is nn.ChannelShuffle:
        return gm.get_submodule(node.target).groups
    if node.op == "call_function" and node.target in _SHUFFLE_FNS:
        groups = node.args[1] if len(node.args) > 1 else node.kwargs.get("groups")
        return groups if isinstance(groups, int) else None
    return None


def _pool_2x1(gm, node: fx.Node, arg: fx.Node) -> bool:
    """``node`` is a 2x1 max-pool with stride 2x1 of ``arg``, no padding, dilation or ceil mode."""
    if not isinstance(node, fx.Node) or not node.args or node.args[0] is not arg:
        return False
    pair = nn.modules.utils._pair
    if node.op == "call_module":
        p = gm.get_submodule(node.target)
        return (type(p) is nn.MaxPool2d and pair(p.kernel_size) == (2, 1) and pair(p.stride) == (2, 1)
                and pair(p.padding) == (0, 0) and pair(p.dilation) == (1, 1) and not p.ceil_mode
                and not p.return_indices)
    if node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d):
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
        kw = {**dict(zip(names, node.args[1:])), **node.kwargs}
        stride = kw.get("stride") or kw.get("kernel_size")
        return (pair(kw.get("kernel_size")) == (2, 1) and pair(stride) == (2, 1) and pair(kw.get("padding", 0)) == (0, 0)
                and pair(kw.get("dilation", 1)) == (1, 1) and not kw.get("ceil_mode", False)
                and not kw.get("return_indices", False))
    return False


def _conv2d(m, *, depthwise=False, kernel=None, pointwise=False) -> bool:
    if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return False
    if depthwise and not (m.groups == m.in_channels and m.out_channels % m.in_channels == 0 and m.groups > 1):
        return False
    if kernel is not None and m.kernel_size != kernel:
        return False
    return not pointwise or (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
                             and m.groups == 1)


# -- BatchNorm --------------------------------------------------------------------------------------
_FOLDABLE = (torch.float32, torch.float64)  # folding in bfloat16/float16 rounds the weights anew


@dataclass(frozen=True)
class Fold:
    """A BatchNorm folded into the convolution before it (qualified module names)."""

    bn: str
    conv: str
    eps: float
    transpose: bool


def fold_batchnorm(gm: fx.GraphModule) -> list[Fold]:
    """Fold each eval-mode BatchNorm whose input is a float32/float64 convolution used nowhere else
    into that convolution (a folded copy replaces it; the model's own modules are not changed),
    neither module having hooks. Returns the folds made."""
    folded = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1:
            continue
        bn = gm.get_submodule(node.target)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.training or not bn.track_running_stats:
            continue
        prev = node.args[0]
        conv = _module(gm, prev, _CONVS + _CONV_TRANSPOSES)
        if conv is None or conv.training or len(prev.users) != 1 or _calls(gm, prev.target) != 1:
            continue
        if bn.running_mean is None or bn.num_features != (conv.out_channels):
            continue
        if hooked(bn) or hooked(conv) or conv.weight.dtype not in _FOLDABLE:
            continue
        transpose = type(conv) in _CONV_TRANSPOSES
        gm.add_submodule(prev.target, fuse_conv_bn_eval(conv, bn, transpose=transpose))
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded.append(Fold(node.target, prev.target, bn.eps, transpose))
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return folded


# -- rewrites ----------------------------------------------------------------------------------------
@dataclass
class Rewrite:
    """One replacement, not yet applied: ``nodes`` (the first takes the input; the last's value is
    what the replacement computes) become one call of ``module``; ``after`` re-applies a ReLU the
    shuffle commuted with."""

    name: str  # the first covered module's qualified name
    kind: str  # the tvmconv module's class name
    module: nn.Module
    nodes: list[fx.Node]
    covered: list[str] = field(default_factory=list)  # qualified names of the modules it replaces
    after: str | None = None

    @property
    def input(self) -> fx.Node:
        return self.nodes[0].args[0]

    def original(self, gm: fx.GraphModule) -> Callable:
        """The replaced nodes as a callable of the input: the PyTorch path this rewrite competes with."""
        g = fx.Graph()
        env = {self.input: g.placeholder("x")}
        for n in self.nodes:
            env[n] = g.node_copy(n, lambda a: env[a])
        g.output(env[self.nodes[-1]])
        return fx.GraphModule(gm, g)


def rewrites(gm: fx.GraphModule, filter_fn: Callable[[str, nn.Module], bool] | None = None, *,
             separable: bool | Callable[[str], bool] = True) -> list[Rewrite]:
    """Every rewrite of ``gm``, in graph order, each node in at most one (fused patterns first).
    ``filter_fn(name, module) -> False`` leaves a module (and any pattern holding it) alone;
    ``separable`` False leaves a depthwise convolution and the pointwise one after it apart (a
    callable: those whose depthwise module's name it refuses)."""
    taken: set = set()
    out: list[Rewrite] = []
    keep = (lambda n: True) if filter_fn is None else (
        lambda n: n.op != "call_module" or filter_fn(n.target, gm.get_submodule(n.target)))
    for node in gm.graph.nodes:
        if node in taken or node.op != "call_module" or _calls(gm, node.target) != 1:
            continue
        rw = (None if _hooked_node(gm, node) else _fused(gm, node, separable)) or _single(gm, node)
        if rw is not None and len(rw.nodes) > 1 and any(_hooked_node(gm, n) for n in rw.nodes):
            rw = _single(gm, node)  # never fused across a module with hooks
        if rw is None or any(n in taken for n in rw.nodes) or not all(keep(n) for n in rw.nodes):
            continue
        taken.update(rw.nodes)
        rw.covered = [n.target for n in rw.nodes if n.op == "call_module"]
        out.append(rw)
    return out


def _fused(gm, node: fx.Node, separable: bool | Callable[[str], bool] = True) -> Rewrite | None:
    m = gm.get_submodule(node.target)
    if _conv2d(m, pointwise=True):
        if rw := _squeeze_excitation(gm, node, m):
            return rw
    if (separable(node.target) if callable(separable) else separable) and _conv2d(m, depthwise=True):
        if rw := _depthwise_separable(gm, node, m):
            return rw
    if _conv2d(m, depthwise=True, kernel=(1, 3)):
        if rw := _effnet_core(gm, node, m):
            return rw
    if _conv2d(m):
        return _shuffled(gm, node, m)
    return None


def _depthwise_separable(gm, node, dw) -> Rewrite | None:
    a1, acts1 = then_act(gm, node)
    last = acts1[-1] if acts1 else node
    nxt = only_user(last)
    pw = _module(gm, nxt, (nn.Conv2d,))
    if pw is None or not _conv2d(pw, pointwise=True) or pw.in_channels != dw.out_channels or nxt.args != (last,) \
            or _calls(gm, nxt.target) != 1:
        return None
    a2, acts2 = then_act(gm, nxt)
    return Rewrite(node.target, "DepthwiseSeparableConv2d", tnn.DepthwiseSeparableConv2d.from_convs(dw, pw, a1, a2),
                   [node, *acts1, nxt, *acts2])


def _effnet_core(gm, node, a) -> Rewrite | None:
    if a.stride != (1, 1) or a.padding != (0, 1) or a.out_channels != a.in_channels:
        return None
    a1, acts1 = then_act(gm, node)
    last = acts1[-1] if acts1 else node
    pool = only_user(last)
    if pool is None or not _pool_2x1(gm, pool, last):
        return None
    nxt = only_user(pool)
    b = _module(gm, nxt, (nn.Conv2d,))
    if b is None or not _conv2d(b, depthwise=True, kernel=(3, 1)) or b.stride != (1, 1) or b.padding != (1, 0) \
            or not (b.in_channels == b.out_channels == a.out_channels) or nxt.args != (pool,) \
            or _calls(gm, nxt.target) != 1:
        return None
    a2, acts2 = then_act(gm, nxt)
    if a1 != a2:
        return None
    return Rewrite(node.target, "EffNetCore", tnn.EffNetCore.from_convs(a, b, a1), [node, *acts1, pool, nxt, *acts2])


def _squeeze_excitation(gm, node, fc1) -> Rewrite | None:
    """``node`` (fc1) as the first conv of a squeeze-excitation block: the pool before it, then
    ReLU, fc2, sigmoid and the product with the pool's input after it."""
    pool = node.args[0] if len(node.args) == 1 else None
    if not isinstance(pool, fx.Node) or not pool.args or not _global_avg_pool(gm, pool) or len(pool.users) != 1 \
            or (pool.op == "call_module" and _calls(gm, pool.target) != 1):
        return None
    x = pool.args[0]
    act = only_user(node)
    fc2_node = only_user(act) if act is not None and act_of(gm, act, node) == "relu" else None
    fc2 = _module(gm, fc2_node, (nn.Conv2d,))
    if fc2 is None or not _conv2d(fc2, pointwise=True) or fc2_node.args != (act,) or _calls(gm, fc2_node.target) != 1 \
            or (fc2.in_channels, fc2.out_channels) != (fc1.out_channels, fc1.in_channels):
        return None
    sig = only_user(fc2_node)
    mul = only_user(sig) if sig is not None and _is_sigmoid(gm, sig, fc2_node) else None
    if mul is None or not _is_product(mul, sig, x):
        return None
    return Rewrite(node.target, "SqueezeExcitation", tnn.SqueezeExcitation.from_convs(fc1, fc2),
                   [pool, node, act, fc2_node, sig, mul])


def _global_avg_pool(gm, node: fx.Node) -> bool:
    """``node`` averages its input over the last two dims, keeping them (size 1)."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return type(m) is nn.AdaptiveAvgPool2d and nn.modules.utils._pair(m.output_size) == (1, 1)
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in (1, (1, 1), [1, 1])
    if (node.op, node.target) in (("call_method", "mean"), ("call_function", torch.mean)):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        return keep is True and isinstance(dims, (tuple, list)) and sorted(dims) in ([2, 3], [-2, -1])
    return False


def _is_sigmoid(gm, node: fx.Node, arg: fx.Node) -> bool:
    if node.args != (arg,) or node.kwargs:
        return False
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)) is nn.Sigmoid
    return (node.op == "call_function" and node.target in (torch.sigmoid, F.sigmoid)) or \
        (node.op == "call_method" and node.target == "sigmoid")


def _is_product(node: fx.Node, a: fx.Node, b: fx.Node) -> bool:
    import operator

    if node.kwargs or len(node.args) != 2 or set(node.args) != {a, b}:
        return False
    return (node.op == "call_function" and node.target in (operator.mul, torch.mul)) or \
        (node.op == "call_method" and node.target == "mul")


def _shuffled(gm, node, conv) -> Rewrite | None:
    user = only_user(node)
    relu = user if user is not None and act_of(gm, user, node) == "relu" else None
    last = relu or node
    shuffle = only_user(last)
    groups = _shuffle_groups(gm, shuffle, last) if shuffle is not None else None
    if not groups or conv.out_channels % groups:
        return None
    new = drop_in(conv, tnn.ShuffledGroupConv2d)
    new.shuffle_groups = groups
    # the ReLU commutes with the shuffle (a permutation of channels): it runs after the fused conv
    return Rewrite(node.target, "ShuffledGroupConv2d", new, [node, *([relu] if relu else []), shuffle],
                   after="relu" if relu else None)


def _single(gm, node) -> Rewrite | None:
    m = gm.get_submodule(node.target)
    if isinstance(m, tnn.TvmconvModule):
        if m.backend != "torch" or getattr(m, "container", False):
            return None
        new = copy.copy(m)  # the same parameters, on the tvmconv backend
        new.backend = "tvmconv"
        return Rewrite(node.target, type(m).__name__, new, [node])
    new = drop_in(m)
    return Rewrite(node.target, type(new).__name__, new, [node]) if new is not None else None


def drop_in(m: nn.Module, cls=None) -> nn.Module | None:
    """``m`` (a torch.nn convolution) as its tvmconv.nn drop-in (or ``cls``), sharing its
    parameters, buffers and hyper-parameters; None for a module that has none."""
    cls = cls or tnn.DROP_IN.get(type(m))
    if cls is None:
        return None
    new = cls.__new__(cls)
    new.__dict__ = dict(m.__dict__)
    new._init_tvmconv(None)
    return new


def apply(gm: fx.GraphModule, rw: Rewrite) -> None:
    """Replace ``rw``'s nodes in ``gm`` by one call of its module, installed under ``rw.name``
    (fused modules hold the replaced convolutions as children). Call ``finish`` after the last."""
    first, last = rw.nodes[0], rw.nodes[-1]
    gm.add_submodule(rw.name, rw.module)
    with gm.graph.inserting_before(first):
        new = gm.graph.call_module(rw.name, (rw.input,))
        if rw.after == "relu":
            new = gm.graph.call_function(F.relu, (new,))
    last.replace_all_uses_with(new)
    for n in reversed(rw.nodes):
        gm.graph.erase_node(n)


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    # (no eliminate_dead_code: it takes an in-place call whose result is unused, a buffer's
    # ``add_``, for dead; apply erases what it replaces)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


__all__ = ["trace", "fold_batchnorm", "rewrites", "apply", "finish", "drop_in", "Rewrite", "Fold", "act_of", "hooked",
           "copy_hooks"]


# -- convolution nodes of an exported program (torch.export): what lowering and the workload lists read --
_CONV = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONVT = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_CONVOLUTION = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
                "groups")


@functools.lru_cache(maxsize=1)
def _conv_ops():
    aten = torch.ops.aten
    ops = {}
    for nd in (1, 2, 3):
        packet = getattr(aten, f"conv{nd}d")
        for overload in packet.overloads():
            ops[getattr(packet, overload)] = (f"conv{nd}d", nd, _CONV, False)
        packet = getattr(aten, f"conv_transpose{nd}d")
        for overload in packet.overloads():
            ops[getattr(packet, overload)] = (f"conv_transpose{nd}d", nd, _CONVT, True)
    ops[aten.convolution.default] = ("convolution", None, _CONVOLUTION, None)
    return ops


def conv_op_names() -> set[str]:
    """The names (``OpOverload.__name__``) of every node ``node_spec`` reads: TVM Relax's torch
    importer looks converters up by them."""
    from .. import ops

    return {op.__name__ for op in _conv_ops()} | {f"{name}.default" for name in ops.OPS}


def node_value(arg):
    """An exported node's value (its ``meta['val']``: a fake tensor), or ``arg`` where it is no node."""
    meta = getattr(arg, "meta", None)
    if meta is not None:
        return meta.get("val")
    return arg


def node_spec(node) -> tuple[Spec, dict] | None:
    """A convolution node of an exported program, a ``tvmconv.*`` op or an aten convolution, as
    ``(spec, {argument name: the node's argument})``; None for any other node."""
    from ..functional import conv_spec

    if node.op != "call_function":
        return None
    found = _tvmconv_node(node)
    if found is not None or node.target not in _conv_ops():
        return found
    op, nd, names, transposed = _conv_ops()[node.target]
    bound = dict(zip(names, node.args))
    bound.update(node.kwargs)
    x, w = node_value(bound["input"]), node_value(bound["weight"])
    b = node_value(bound.get("bias"))
    if op == "convolution":
        transposed = bool(bound["transposed"])
        nd = w.dim() - 2
        op = f"conv_transpose{nd}d" if transposed else f"conv{nd}d"
    cpu = (torch.empty(tuple(x.shape), dtype=x.dtype), torch.empty(tuple(w.shape), dtype=w.dtype),
           None if b is None else torch.empty(tuple(b.shape), dtype=b.dtype))
    kw = {k: bound[k] for k in ("stride", "padding", "dilation", "groups") if k in bound}
    if transposed:
        kw["output_padding"] = bound.get("output_padding", 0)
    return conv_spec(op, nd, *cpu, transposed=transposed, **kw)[0], bound


def _tvmconv_node(node):
    """``(spec, bound arguments)`` of a ``tvmconv.*`` custom-op node (its schema's arguments are
    the functional op's, in order), else None."""
    import inspect

    from .. import ops
    from ..functional import spec_of

    name = getattr(getattr(node.target, "_schema", None), "name", "")
    if not name.startswith(f"{ops.NAMESPACE}::") or name.split("::", 1)[1] not in ops.OPS:
        return None
    op = ops.OPS[name.split("::", 1)[1]]
    args = node.args[:-1]  # (the last is the target)
    values = [torch.empty(tuple(v.shape), dtype=v.dtype) if isinstance(v := node_value(a), torch.Tensor) else v
              for a in args]
    return spec_of(op.functional, *values), dict(zip(inspect.signature(op.functional).parameters, args))
