"""Every tvmconv op as a ``torch.library`` custom op in the ``tvmconv`` namespace.

    y = torch.ops.tvmconv.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, "")     # the schema's form
    y = tvmconv.ops.conv2d(x, w, b, padding=1)                                # torch.nn.functional's form

Each op has a fake (shape-only) implementation, so ``torch.compile(fullgraph=True)`` traces models
that call them without a graph break and ``torch.export`` captures them as ``tvmconv.*`` nodes.
The fake implementation is the independent PyTorch reference applied to fake tensors: shapes
agree with the kernel by construction, and ``opcheck`` verifies it.

Autograd: the forward runs the tvmconv kernel; the backward recomputes the PyTorch reference and
differentiates it (correct gradients, PyTorch speed). ``deform_conv2d`` has no PyTorch reference
to differentiate and raises a clear error in backward.

``OPS`` is the registry: name -> ``CustomOp`` (schema, functional op, reference). Tests loop over it.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import functional as TF
from . import reference as R
from ._args import conv_padding, int_tuple

NAMESPACE = "tvmconv"


@dataclass(frozen=True)
class CustomOp:
    name: str
    schema: str
    functional: Callable  # tvmconv.functional.<name>
    reference: Callable | None  # differentiable PyTorch reference (None: no backward)
    nd: int  # spatial dims of the int[] arguments

    @property
    def op(self):
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default


def _conv_schema(transposed: bool) -> str:
    if transposed:
        return ("(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] output_padding, "
                "int groups, int[] dilation, str target) -> Tensor")
    return ("(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups, "
            "str target) -> Tensor")


_TABLE: list[tuple[str, str, Callable | None, int]] = [
    *[(f"conv{n}d", _conv_schema(False), getattr(F, f"conv{n}d"), n) for n in (1, 2, 3)],
    *[(f"conv_transpose{n}d", _conv_schema(True), getattr(F, f"conv_transpose{n}d"), n) for n in (1, 2, 3)],
    ("channel_shuffle", "(Tensor input, int groups, str target) -> Tensor", R.channel_shuffle, 0),
    ("deform_conv2d", "(Tensor input, Tensor offset, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
                      "int[] dilation, Tensor? mask, str target) -> Tensor", None, 2),
    ("depthwise_separable_conv2d", "(Tensor input, Tensor depthwise_weight, Tensor pointwise_weight, "
                                   "Tensor? depthwise_bias, Tensor? pointwise_bias, int[] stride, int[] padding, "
                                   "int[] dilation, str? mid_activation, str? activation, str target) -> Tensor",
     R.depthwise_separable_conv2d, 2),
    ("shuffled_group_conv2d", "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
                              "int[] dilation, int groups, int shuffle_groups, str target) -> Tensor",
     R.shuffled_group_conv2d, 2),
    ("spatial_separable_conv2d", "(Tensor input, Tensor weight_kx1, Tensor weight_1xk, Tensor? bias_kx1, "
                                 "Tensor? bias_1xk, int[] stride, int[] padding, int[] dilation, int groups, "
                                 "str target) -> Tensor", R.spatial_separable_conv2d, 2),
    ("flattened_conv2d", "(Tensor input, Tensor lateral_weight, Tensor vertical_weight, Tensor horizontal_weight, "
                         "Tensor? bias, int[] stride, int[] padding, str target) -> Tensor", R.flattened_conv2d, 2),
    ("channel_wise_conv", "(Tensor input, Tensor weight, Tensor? bias, int stride, int padding, int dilation, "
                          "str target) -> Tensor", R.channel_wise_conv, 0),
    ("squeeze_excitation", "(Tensor input, Tensor fc1_weight, Tensor? fc1_bias, Tensor fc2_weight, "
                           "Tensor? fc2_bias, str target) -> Tensor", R.squeeze_excitation, 0),
    ("effnet_block", "(Tensor input, Tensor weight_1x3, Tensor weight_3x1, Tensor? bias_1x3, Tensor? bias_3x1, "
                     "str? activation, str target) -> Tensor", R.effnet_block, 0),
]


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


def _deform_shape(x, offset, weight, bias, stride, padding, dilation, mask, target):
    kh, kw = weight.shape[2:]
    oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return x.new_empty((x.shape[0], weight.shape[0], oh, ow))


def _fake(op: CustomOp):
    def fake(*args):
        if op.reference is None:
            return _deform_shape(*args)
        out = op.reference(*args[:-1])
        return out.new_empty(out.shape)  # contiguous, as the kernel's output
    return fake


def _setup_context(ctx, inputs, output):
    ctx.inputs = inputs
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])


def _backward(op: CustomOp):
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


def _register() -> dict[str, CustomOp]:
    ops = {}
    for name, schema, ref, nd in _TABLE:
        op = CustomOp(name, schema, getattr(TF, name), ref, nd)
        qual = f"{NAMESPACE}::{name}"
        cop = torch.library.custom_op(qual, _impl(op), mutates_args=(), schema=schema)
        cop.register_fake(_fake(op))
        cop.register_autograd(_backward(op), setup_context=_setup_context)
        ops[name] = op
    return ops


OPS: dict[str, CustomOp] = _register()


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


conv1d = _wrapper("conv1d")
conv2d = _wrapper("conv2d")
conv3d = _wrapper("conv3d")
conv_transpose1d = _wrapper("conv_transpose1d")
conv_transpose2d = _wrapper("conv_transpose2d")
conv_transpose3d = _wrapper("conv_transpose3d")
channel_shuffle = _wrapper("channel_shuffle")
deform_conv2d = _wrapper("deform_conv2d")
depthwise_separable_conv2d = _wrapper("depthwise_separable_conv2d")
shuffled_group_conv2d = _wrapper("shuffled_group_conv2d")
spatial_separable_conv2d = _wrapper("spatial_separable_conv2d")
flattened_conv2d = _wrapper("flattened_conv2d")
channel_wise_conv = _wrapper("channel_wise_conv")
squeeze_excitation = _wrapper("squeeze_excitation")
effnet_block = _wrapper("effnet_block")

__all__ = ["OPS", "CustomOp", *OPS]
