"""Every tvmconv op as a ``torch.library`` custom op in the ``tvmconv`` namespace.

    y = torch.ops.tvmconv.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, "")     # the schema's form
    y = tvmconv.ops.conv2d(x, w, b, padding=1)                                # torch.nn.functional's form

Each op has a fake (shape-only) implementation, so ``torch.compile(fullgraph=True)`` traces models
that call them without a graph break and ``torch.export`` captures them as ``tvmconv.*`` nodes.
The fake implementation is the independent PyTorch reference applied to fake tensors: shapes
agree with the kernel by construction, and ``opcheck`` verifies it.

Autograd: the forward runs the tvmconv kernel. The plain convolutions' backward is PyTorch's
``aten.convolution_backward`` on the saved input and weight; the fused variants' recomputes the
PyTorch reference and differentiates it (correct gradients, PyTorch speed). ``deform_conv2d``
has no PyTorch reference to differentiate and raises a clear error in backward.

``OPS`` is name -> ``CustomOp`` (schema, functional op, reference), made from each registered
variant (tvmconv.variants); a variant registered later gets its custom op too. Tests loop over it.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import functional as TF
from .runtime.call import memory_format
from ._args import conv_padding, int_tuple
from .variants import registry
from .variants.registry import VARIANTS, Variant

NAMESPACE = "tvmconv"


@dataclass(frozen=True)
class CustomOp:
    name: str
    schema: str
    functional: Callable  # tvmconv.functional.<name>
    reference: Callable | None  # differentiable PyTorch reference (None: no backward)
    nd: int  # spatial dims of the int[] arguments
    fake: Callable | None = None  # shape function where the reference cannot run on fake tensors

    @property
    def op(self):
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default


def _target_arg(target) -> str:
    """The ``target`` keyword as the schema's string: '' for the host, a profile name, or JSON."""
    if target is None:
        return ""
    if isinstance(target, str):
        return target
    if isinstance(target, dict):
        return json.dumps(target, sort_keys=True)
    from .backends.target import TargetInfo

    if isinstance(target, TargetInfo):
        return target.profile if target.profile != "custom" else target.json
    raise TypeError(f"argument 'target' must be None, a profile name, a TVM target dict or JSON, got {target!r}")


def _impl(op: CustomOp):
    def impl(*args):
        *rest, target = args
        rest = [a.detach() if isinstance(a, torch.Tensor) else a for a in rest]
        return op.functional(*rest, target=target or None)
    return impl


def _fake(op: CustomOp):
    def fake(*args):
        if op.fake is not None:
            return op.fake(*args[:-1])
        out = op.reference(*args[:-1])
        # dense, as the kernel's output: channels_last after a channels_last input, as torch's
        x = args[0]
        fmt = memory_format(x) if out.dim() == 4 else torch.contiguous_format
        return out.new_empty(out.shape).contiguous(memory_format=fmt)
    return fake


def _setup_context(ctx, inputs, output):
    ctx.inputs = inputs
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])


_CONVS = {f"conv{nd}d": (nd, False) for nd in (1, 2, 3)} | {f"conv_transpose{nd}d": (nd, True) for nd in (1, 2, 3)}


def _conv_backward(op: CustomOp):
    """The plain convolutions' backward: ``aten.convolution_backward``, PyTorch's own, from the
    saved input and weight (no forward recomputed)."""
    nd, transposed = _CONVS[op.name]

    def backward(ctx, grad):
        x, w, b, *rest = ctx.inputs
        x, w = ctx.saved_tensors[:2]
        if transposed:
            stride, padding, output_padding, groups, dilation = rest[:5]
        else:
            (stride, padding, dilation, groups), output_padding = rest[:4], [0] * nd
        need = ctx.needs_input_grad
        unbatched = x.dim() == nd + 1
        if unbatched:
            x, grad = x.unsqueeze(0), grad.unsqueeze(0)
        bias_sizes = None if b is None else [w.shape[1] * groups if transposed else w.shape[0]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad.contiguous(), x, w, bias_sizes, stride, padding, dilation, transposed, output_padding, groups,
            [need[0], need[1], b is not None and need[2]])
        if unbatched and gx is not None:
            gx = gx.squeeze(0)
        return (gx, gw, gb) + (None,) * (len(ctx.inputs) - 3)
    return backward


def _backward(op: CustomOp):
    if op.name in _CONVS:
        return _conv_backward(op)

    def backward(ctx, grad):
        if op.reference is None:
            raise RuntimeError(f"tvmconv.{op.name}: no backward (its reference is not differentiable); use "
                               f"torchvision.ops.{op.name} for training, or call it under torch.no_grad()")
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if isinstance(a, torch.Tensor) else a for a in ctx.inputs]
        need = [isinstance(a, torch.Tensor) and ctx.needs_input_grad[i] for i, a in enumerate(args)]
        with torch.enable_grad():
            leaves = [a.detach().requires_grad_(n) if isinstance(a, torch.Tensor) else a for a, n in zip(args, need)]
            out = op.reference(*leaves[:-1])
            wanted = [leaf for leaf, n in zip(leaves, need) if n]
            grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True) if wanted else ())
        return tuple(next(grads) if n else None for n in need)
    return backward


def _register(v: Variant) -> CustomOp:
    op = CustomOp(v.name, v.schema, getattr(TF, v.name), v.reference if v.differentiable else None, v.nd, v.fake)
    cop = torch.library.custom_op(f"{NAMESPACE}::{v.name}", _impl(op), mutates_args=(), schema=v.schema)
    cop.register_fake(_fake(op))
    cop.register_autograd(_backward(op), setup_context=_setup_context)
    _LIBRARIES[v.name] = cop
    return op


_LIBRARIES: dict = {}  # name -> torch's CustomOpDef, to take an unregistered variant's op out again
OPS: dict[str, CustomOp] = {}


def _added(v: Variant) -> None:
    OPS[v.name] = _register(v)
    globals()[v.name] = _wrapper(v.name)


def _removed(v: Variant) -> None:
    """Drop ``v``'s custom op: torch.library has no public way to delete an op, so this destroys
    the op's private library (``CustomOpDef._lib``); registering the name again would also work,
    as torch overwrites a custom op of the same name."""
    OPS.pop(v.name, None)
    globals().pop(v.name, None)
    cop = _LIBRARIES.pop(v.name, None)
    lib = getattr(cop, "_lib", None)
    if lib is not None:
        lib._destroy()


# -- torch.nn.functional-style wrappers -------------------------------------------------------
def _call(name: str, args, kwargs):
    return OPS[name].op(*schema_args(name, args, kwargs))


def schema_args(name: str, args, kwargs) -> tuple:
    """Bind ``args``/``kwargs`` to ``tvmconv.functional.<name>``'s signature and normalise them to
    the custom op's schema (ints to int lists, 'same' padding resolved, shuffle_groups defaulted,
    target as a string). Argument errors are the functional op's own, raised by the kernel call."""
    op = OPS[name]
    sig = inspect.signature(op.functional)
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    target = _target_arg(a.pop("target"))
    x = a[next(iter(a))]
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"tvmconv.ops.{name}: argument 'input' must be a torch.Tensor (use tvmconv.functional "
                        f"for NumPy arrays), got {type(x).__name__}")
    if "padding" in a and isinstance(a["padding"], str) and op.nd and "output_padding" not in a:
        weight = a.get("weight", a.get("depthwise_weight"))
        kernel = tuple(weight.shape[2:])
        pads = conv_padding(a["padding"], op.nd, kernel, int_tuple(a.get("dilation", 1), op.nd, "dilation", name,
                                                                    minimum=1),
                            int_tuple(a.get("stride", 1), op.nd, "stride", name, minimum=1), name)
        if any(lo != hi for lo, hi in pads):  # torch's 'same' with an even kernel: pad the odd pixel first
            flat = [p for lo, hi in reversed(pads) for p in (lo, hi)]
            a[next(iter(a))] = F.pad(x, flat)
            pads = ((0, 0),) * op.nd
        a["padding"] = [lo for lo, _ in pads]
    if name == "shuffled_group_conv2d" and a["shuffle_groups"] is None:
        a["shuffle_groups"] = a["groups"]
    for key, value in a.items():
        if key in ("stride", "padding", "dilation", "output_padding") and op.nd:
            a[key] = list(int_tuple(value, op.nd, key, name, minimum=0))
    return (*a.values(), target)


def _wrapper(name: str):
    fn = OPS[name].functional

    def wrapper(*args, **kwargs):
        return _call(name, args, kwargs)

    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__signature__ = inspect.signature(fn)
    wrapper.__doc__ = (f"``torch.ops.tvmconv.{name}`` with ``tvmconv.functional.{name}``'s signature "
                       f"(traceable by torch.compile and torch.export, differentiable).\n\n{fn.__doc__}")
    return wrapper


for _v in VARIANTS.values():
    _added(_v)
registry.subscribe(_added, _removed)
del _v

__all__ = ["OPS", "CustomOp", *OPS]
