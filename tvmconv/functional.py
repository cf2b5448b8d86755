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

import functools
import inspect

import torch

from .runtime.call import SpecOnly, _run, capture_kernels, no_dispatch, spec_of  # noqa: F401 - public here
from .variants import registry
from .variants.conv import conv_spec  # noqa: F401 - public here: finds the workloads of a model
from .variants.registry import VARIANTS, Variant

_TARGET = inspect.Parameter("target", inspect.Parameter.KEYWORD_ONLY, default=None)


def _make(v: Variant):
    """The public op of ``v``: parse the arguments, run the spec's kernel."""
    parse = v.parse

    def op(*args, target=None, **kwargs):
        spec, a, tensors, unbatched = parse(*args, **kwargs)
        return _run(spec, a, tensors, target, unbatched)

    op.__name__ = op.__qualname__ = v.name
    op.__doc__ = parse.__doc__
    sig = inspect.signature(parse)
    op.__signature__ = sig.replace(parameters=[*sig.parameters.values(), _TARGET])
    return _traceable(op)


# -- autograd and torch.compile go through the custom ops ---------------------------------------
def _traceable(fn):
    """Calls that need autograd, or that torch.compile traces, go through ``torch.ops.tvmconv``
    (tvmconv.ops); plain inference calls run the kernel directly (no dispatcher overhead)."""
    name = fn.__name__

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(
                isinstance(t, torch.Tensor) and t.requires_grad for t in (*args, *kwargs.values()))):
            from . import ops

            return ops._call(name, args, kwargs)
        return fn(*args, **kwargs)

    return op


def _added(v: Variant) -> None:
    globals()[v.name] = _make(v)


def _removed(v: Variant) -> None:
    globals().pop(v.name, None)


for _v in VARIANTS.values():
    _added(_v)
registry.subscribe(_added, _removed)
del _v

__all__ = list(VARIANTS)  # the packaged variants; one registered later is an attribute too
