"""Independent references: what a user would write today with PyTorch (or NumPy where PyTorch
has nothing). Tests check tvmconv against these; benchmarks time them as the vendor path.

Each lives with its variant (``tvmconv/variants/<family>.py``, ``Variant.reference``) and takes the
same arguments as the tvmconv op of the same name, as torch tensors; ``reference.<variant name>``
finds it. This module answers, for a spec, how PyTorch computes it.
"""

from __future__ import annotations

import inspect

import torch

from .variants.registry import VARIANTS
from .variants.shuffle import channel_shuffle_numpy  # noqa: F401 - public here


def __getattr__(name: str):
    if name in VARIANTS:
        return VARIANTS[name].reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def call_kwargs(spec) -> dict | None:
    """The non-tensor arguments of ``spec``'s op, as keywords that both
    ``tvmconv.functional.<spec.variant>`` and its reference take. None where they have no such
    form: asymmetric padding, and deform_conv2d (its ``mask`` comes after them)."""
    return VARIANTS[spec.variant].call_kwargs(spec)


def vendor_for(spec):
    """``(description, fn)``: the PyTorch call a user would write for ``spec``; ``fn`` takes the
    op's tensor arguments in order (None for absent optional ones). None where PyTorch has no
    path worth dispatching to."""
    v = VARIANTS[spec.variant]
    kw = v.call_kwargs(spec)
    if kw is not None:
        fn = v.reference
        return v.vendor or f"F.{spec.variant}", lambda *tensors: fn(*tensors, **kw)
    return v.vendor_fallback(spec) if v.vendor_fallback is not None else None


def reference_for(spec):
    """``(description, fn)`` like ``vendor_for``, for every variant: deform_conv2d's is the NumPy
    transcription of torchvision's kernel, taking ``(input, offset, weight, bias, mask)``."""
    v = VARIANTS[spec.variant]
    return v.oracle(spec) if v.oracle is not None else vendor_for(spec)


def random_args(spec, g: torch.Generator) -> tuple[list, list[torch.Tensor]]:
    """Random tensors for ``spec``'s op: its tensor arguments in the functional signature's order
    (None where absent), and the kernel's views of them in the kernel's argument order."""
    dt = getattr(torch, spec.dtype)
    tensors = {n: torch.randn(*shape, generator=g, dtype=dt) * 0.5 for n, shape in spec.arg_shapes}
    params = list(inspect.signature(VARIANTS[spec.variant].parse).parameters)
    full = [tensors.get(p) for p in params if p in tensors or "bias" in p or p == "mask"]
    kernel = [tensors[n].contiguous().view(shape) for (n, _), (_, shape) in zip(spec.arg_shapes,
                                                                               spec.kernel_arg_shapes)]
    return full, kernel
