"""``torch.compile(model, backend="tvmconv")``: the captured graph's convolutions on tvmconv.

    fast = torch.compile(model.eval(), backend="tvmconv")                    # then Inductor
    fast = torch.compile(model, backend="tvmconv", options={"inductor": False})  # then eager

TorchDynamo hands the backend a graph of functional calls whose parameters are graph inputs (so a
weight the user changes later is read again on the next call: nothing here is folded into a
constant). On it, as ``tvmconv.convert`` does on a module graph:

* an inference-mode ``F.batch_norm`` after a convolution whose output nothing else reads is folded
  into that convolution's weight and bias, computed in the graph from the current parameters;
* depthwise conv -> [ReLU/ReLU6] -> 1x1 conv -> [ReLU/ReLU6] becomes one
  ``torch.ops.tvmconv.depthwise_separable_conv2d``;
* every other ``conv1d/2d/3d`` becomes its ``torch.ops.tvmconv`` op, which runs the vendor path
  where that was measured faster on this machine (runtime/dispatch.py).

The graph is the one TorchDynamo captured, in-place ops included (``torch.relu_``, ``x.add_``, a
buffer's ``.copy_``, BatchNorm's running statistics and ``num_batches_tracked`` in training): the
passes replace only the nodes they fuse and never drop another (fx's dead-code elimination takes an
in-place call whose result is unused for pure), and a fold or fusion that would move a computation
across an in-place op is not made. A convolution whose tensors have a dtype tvmconv does not run
(bfloat16) stays PyTorch's.

The rest of the graph goes to Inductor (``options={"inductor": False}``: runs as captured).
torch's own "tvm" backend imports ``tvm.relay``, which TVM 0.27 removed.

Registered under the name "tvmconv" through the ``torch_dynamo_backends`` entry point (and when
this module is imported). ``options``: ``inductor`` (default True), ``target`` (a profile name).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx

from .. import ops  # noqa: F401 - registers torch.ops.tvmconv.*
from . import passes
from .._args import SUPPORTED_DTYPES

_CONV_FNS = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3, F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def backend(gm: fx.GraphModule, example_inputs, options: dict | None = None):
    """The ``torch.compile`` backend (see the module docstring); ``options`` is
    ``torch.compile``'s."""
    options = options or {}
    unknown = set(options) - {"inductor", "target"}
    if unknown:
        raise TypeError(f"backend 'tvmconv': unknown options {sorted(unknown)}; it takes 'inductor' and 'target'")
    rewrite(gm, options.get("target") or "")
    if options.get("inductor", True):
        from torch._inductor.compile_fx import compile_fx

        return compile_fx(gm, example_inputs)
    return gm.forward


def rewrite(gm: fx.GraphModule, target: str = "") -> fx.GraphModule:
    """Fold, fuse and swap on ``gm`` in place (see the module docstring); returns it."""
    g = gm.graph
    for node in list(g.nodes):
        if node.op == "call_function" and node.target is F.batch_norm:
            _fold_batchnorm(g, node)
    for node in list(g.nodes):
        if node in g.nodes and _conv(node) is not None:
            _fuse_or_swap(gm, node, target)
    # (no eliminate_dead_code: it would drop in-place calls whose result is unused, such as
    # ``torch.relu_(y)`` or ``num_batches_tracked.add_(1)``; the passes erase what they replace)
    g.lint()
    gm.recompile()
    return gm


def _bind(node: fx.Node, names, defaults) -> dict:
    out = dict(defaults)
    out.update(zip(names, node.args))
    out.update(node.kwargs)
    return out


def _conv(node: fx.Node) -> dict | None:
    """A convolution call's arguments with its spatial dims (``nd``), or None: not one, or padding
    given as a string (kept as PyTorch)."""
    if node.op != "call_function" or node.target not in _CONV_FNS:
        return None
    a = _bind(node, _CONV_ARGS, _CONV_DEFAULTS)
    if isinstance(a["padding"], str) or not isinstance(a["groups"], int):
        return None
    if any(_dtype(n) not in SUPPORTED_DTYPES for n in (node, a["input"])):
        return None  # bfloat16 (torch refuses a weight of another dtype), or a dtype not recorded
    nd = _CONV_FNS[node.target]
    a.update(nd=nd, stride=_ints(a["stride"], nd), padding=_ints(a["padding"], nd), dilation=_ints(a["dilation"], nd))
    return a


def _ints(v, nd: int) -> list[int]:
    return [int(v)] * nd if isinstance(v, int) else [int(x) for x in v]


def _dtype(n) -> torch.dtype | None:
    v = n.meta.get("example_value") if isinstance(n, fx.Node) else None
    return v.dtype if isinstance(v, torch.Tensor) else None


def _mutates(node: fx.Node) -> bool:
    """Whether ``node`` may write a tensor in place (an in-place method or function, an op whose
    schema mutates, a module call): a computation must not be moved across it."""
    if node.op == "call_module":
        return True
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("__")
    if node.op != "call_function":
        return False
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return True
    name = getattr(node.target, "__name__", "")
    return (name.endswith("_") and not name.startswith("__")) or node.is_impure()


def _between(first: fx.Node, last: fx.Node) -> list[fx.Node]:
    """The nodes strictly between ``first`` and ``last`` in graph order."""
    out, n = [], first.next
    while n is not last and n.op != "root":
        out.append(n)
        n = n.next
    return out


def _shape(n) -> tuple | None:
    v = n.meta.get("example_value") if isinstance(n, fx.Node) else None
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _fold_batchnorm(g: fx.Graph, bn: fx.Node) -> None:
    """``batch_norm(conv(x, w, b))`` in inference mode -> ``conv(x, w * s, (b - mean) * s + beta)``
    with ``s = gamma / sqrt(var + eps)``, computed in the graph."""
    a = _bind(bn, _BN_ARGS, {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
    conv = a["input"]
    c = _conv(conv) if isinstance(conv, fx.Node) else None
    if c is None or a["training"] is not False or len(conv.users) != 1 or a["running_mean"] is None:
        return
    if any(_mutates(n) for n in _between(conv, bn)):
        return  # the conv would move past an in-place op
    # the fold and the conv go where the BatchNorm was: its arguments (an ``eps`` read by ``item()``
    # under dynamic shapes) may be computed after the conv
    with g.inserting_before(bn):
        s = g.call_function(torch.rsqrt, (g.call_function(torch.add, (a["running_var"], a["eps"])),))
        if a["weight"] is not None:
            s = g.call_function(torch.mul, (s, a["weight"]))
        w = g.call_function(torch.mul, (c["weight"], g.call_method("reshape", (s, [-1] + [1] * (c["nd"] + 1)))))
        shift = g.call_function(torch.neg, (a["running_mean"],)) if c["bias"] is None else \
            g.call_function(torch.sub, (c["bias"], a["running_mean"]))
        b = g.call_function(torch.mul, (shift, s))
        if a["bias"] is not None:
            b = g.call_function(torch.add, (b, a["bias"]))
        new = g.call_function(conv.target, (c["input"], w, b, c["stride"], c["padding"], c["dilation"], c["groups"]))
    new.meta = dict(conv.meta)
    bn.replace_all_uses_with(new)
    g.erase_node(bn)
    g.erase_node(conv)


def _then_act(gm, node: fx.Node) -> tuple[str | None, fx.Node]:
    """``(activation or None, the node after it or node itself)``: passes.then_act, on aten calls."""
    act, nodes = passes.then_act(gm, node)
    return act, (nodes[-1] if nodes else node)


def _fuse_or_swap(gm: fx.GraphModule, node: fx.Node, target: str) -> None:
    g, c = gm.graph, _conv(node)
    if c["nd"] == 2 and _fuse_depthwise_separable(gm, node, c, target):
        return
    op = getattr(torch.ops.tvmconv, f"conv{c['nd']}d").default
    with g.inserting_before(node):
        new = g.call_function(op, (c["input"], c["weight"], c["bias"], c["stride"], c["padding"], c["dilation"],
                                   c["groups"], target))
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    g.erase_node(node)


def _fuse_depthwise_separable(gm, node: fx.Node, dw: dict, target: str) -> bool:
    x, wd, wd_shape = dw["input"], dw["weight"], _shape(dw["weight"])
    c_in = (_shape(x) or (None, None))[1] if _shape(x) and len(_shape(x)) == 4 else None
    if wd_shape is None or c_in is None or not (dw["groups"] == c_in > 1 and wd_shape[0] % c_in == 0):
        return False
    a1, last = _then_act(gm, node)
    pw_node = passes.only_user(last)
    pw = _conv(pw_node) if pw_node is not None else None
    pw_shape = _shape(pw["weight"]) if pw else None
    if pw is None or pw["input"] is not last or pw_shape is None or pw_shape[2:] != (1, 1) or pw_shape[1] != wd_shape[0] \
            or pw["stride"] != [1, 1] or pw["padding"] != [0, 0] or pw["groups"] != 1:
        return False
    a2, end = _then_act(gm, pw_node)
    pattern = {node, last, pw_node, end}
    if any(_mutates(n) for n in _between(node, end) if n not in pattern):
        return False  # the depthwise conv would move past an in-place op
    g = gm.graph
    with g.inserting_before(end):  # (the pointwise weight may be computed after the depthwise conv)
        new = g.call_function(torch.ops.tvmconv.depthwise_separable_conv2d.default,
                              (x, wd, pw["weight"], dw["bias"], pw["bias"], dw["stride"], dw["padding"], dw["dilation"],
                               a1, a2, target))
    new.meta = dict(end.meta)
    end.replace_all_uses_with(new)
    for n in dict.fromkeys([end, pw_node, last, node]):  # last first: each has no users left when erased
        g.erase_node(n)
    return True


def _register() -> None:
    """Register "tvmconv" where the package's entry point does not (a checkout on ``sys.path``,
    not installed): torch loads the entry point itself and would find the name taken."""
    from importlib.metadata import entry_points

    if "tvmconv" not in entry_points(group="torch_dynamo_backends").names:
        from torch._dynamo import register_backend

        register_backend(backend, name="tvmconv")


_register()

__all__ = ["backend", "rewrite"]
