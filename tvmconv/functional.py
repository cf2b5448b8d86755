"""The ops: torch.nn.functional signatures, TVM-compiled kernels.

Each op checks its arguments, builds the variant's spec, loads the compiled kernel (compiled once
per spec and target, then cached), and runs it. Torch tensors go to the kernel without a copy
when they are contiguous; NumPy in gives NumPy out. ``target`` (keyword-only) selects a TVM target;
by default the host CPU.

The ops are generated from the registry (tvmconv.variants): each has its variant's parse
function's signature and docstring, plus ``target``. A variant registered later gets its op here
too (and loses it when unregistered).

Shapes use N batch, C channels, (D, H, W) or L spatial sizes, K kernel sizes.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ._args import Empty
from .runtime.call import SpecOnly, _run, capture_kernels, collect_specs, no_dispatch, spec_of  # noqa: F401 - public
from .variants import registry
from .variants.conv import conv_spec  # noqa: F401 - public here: finds the workloads of a model
from .variants.registry import VARIANTS, Variant

_TARGET = inspect.Parameter("target", inspect.Parameter.KEYWORD_ONLY, default=None)


def _make(v: Variant):
    """The public op of ``v``: parse the arguments, run the spec's kernel. Calls that need autograd,
    or that torch.compile traces, go through ``torch.ops.tvmconv`` (tvmconv.ops); plain inference
    calls run the kernel directly (no dispatcher overhead, and one Python frame: a 10 us layer
    feels each one)."""
    parse, name = v.parse, v.name

    def op(*args, target=None, **kwargs):
        if _compiling() or (_grad_enabled() and _any_requires_grad(args, kwargs)):
            from . import ops

            if target is not None:
                kwargs["target"] = target
            return ops._call(name, args, kwargs)
        try:
            spec, a, tensors, unbatched = parse(*args, **kwargs)
        except Empty as exc:
            return _as_torch(v, exc, args, kwargs)
        return _run(spec, a, tensors, target, unbatched)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = parse.__doc__
    op.__module__ = __name__
    sig = inspect.signature(parse)
    op.__signature__ = sig.replace(parameters=[*sig.parameters.values(), _TARGET])
    return op


_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def _as_torch(v: Variant, exc: Empty, args, kwargs):
    """A call with an empty argument or output: PyTorch's answer (its reference), an empty tensor
    of the right shape, where PyTorch gives one; ``exc`` where it raises (or for NumPy input)."""
    refused = ValueError(str(exc))  # (the documented class, not the subclass)
    if any(isinstance(t, np.ndarray) for t in (*args, *kwargs.values())):
        raise refused from None
    try:
        with torch.no_grad():
            out = v.reference(*args, **kwargs)
    except Exception:  # noqa: BLE001 - PyTorch refuses it too: our error names the argument
        raise refused from None
    if not isinstance(out, torch.Tensor) or out.numel():
        raise refused from None  # (a reference that computes something from an empty tensor is no answer)
    return out.contiguous()


def _any_requires_grad(args, kwargs) -> bool:
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in (*args, *kwargs.values()))


def _added(v: Variant) -> None:
    globals()[v.name] = _make(v)


def _removed(v: Variant) -> None:
    globals().pop(v.name, None)


for _v in VARIANTS.values():
    _added(_v)
registry.subscribe(_added, _removed)
del _v

__all__ = list(VARIANTS)  # the packaged variants; one registered later is an attribute too
