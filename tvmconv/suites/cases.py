"""A workload's case: random inputs of its shapes, the tvmconv op and the vendor path that computes
it, its family (the row it joins in results, the goal it meets), and both paths timed interleaved.
The measurement core that ``tvmconv bench``, calibrate and tuning's validation share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import functional as TF
from .. import reference as R
from ..backends.target import TargetInfo
from ..spec import Spec
from ..variants.registry import VARIANTS, default_cases


@dataclass
class Case:
    label: str  # the workload's name
    family: str  # the variant family (standard, pointwise, grouped, depthwise, ...)
    kind: str  # compute | memory | fused: which goal applies
    vendor: str  # what the vendor path is
    op: object  # the tvmconv functional op
    reference: object  # the vendor path, same arguments
    args: tuple
    kwargs: dict = field(default_factory=dict)
    count: int = 1


def family_of(spec: Spec) -> tuple[str, str]:
    """``(family, kind)`` of a workload: the row it joins in the results, the goal it meets (its
    variant's, ``Variant.family_of``)."""
    return VARIANTS[spec.variant].family_of(spec)


def case_for(spec: Spec, count: int = 1, seed: int = 0) -> Case:
    """Random inputs of ``spec``'s shapes, the tvmconv op and the vendor path that computes it."""
    kw = R.call_kwargs(spec)
    if kw is None:
        raise ValueError(f"bench: no vendor path for {spec.name} (asymmetric padding, or no PyTorch op)")
    v = spec.variant
    family, kind = family_of(spec)
    full, _ = R.random_args(spec, torch.Generator().manual_seed(seed))
    return Case(spec.name, family, kind, R.vendor_for(spec)[0], getattr(TF, v), getattr(R, v), tuple(full), kw,
                count)


def variant_cases() -> list[Case]:
    """Every registered variant on the main job's default shape (the embedded default)."""
    return [Case(v.name, "standard" if v.name == "conv2d" else v.name, v.kind,
                 f"PyTorch {v.reference.__module__.split('.')[0]} path", v.op, v.reference, c.args, c.kwargs)
            for v, c in default_cases()]


def on_device(case: Case, target: TargetInfo) -> Case:
    """``case`` with its tensors on the GPU for a CUDA target (as they are otherwise)."""
    backend = target.backend
    move = lambda v: backend.to_device(v) if isinstance(v, torch.Tensor) else v  # noqa: E731
    return Case(case.label, case.family, case.kind, backend.vendor_name(case.vendor), case.op, case.reference,
                tuple(move(a) for a in case.args), {k: move(v) for k, v in case.kwargs.items()}, case.count)


def time_case(case: Case, target: TargetInfo, threads: int, *, rounds: int = 7,
              dispatched: bool = False) -> tuple[list, ...]:
    """Seconds per call of the tvmconv kernel (dispatch off: the kernel itself, whatever tuning
    recorded) and of the vendor path, interleaved, with ``threads`` PyTorch threads; ``dispatched``:
    a third list, the op as a user calls it (dispatch on: the kernel or the vendor path, as chosen
    for this machine), in the same rounds. On a CUDA target (tensors on the GPU): GPU time from
    CUDA events, TF32 off (the backend's ``vendor_mode``)."""
    backend = target.backend
    fns = [lambda: case.op(*case.args, **case.kwargs, target=target),
           lambda: case.reference(*case.args, **case.kwargs)]
    with torch.no_grad(), backend.vendor_mode():
        if not dispatched:
            with TF.no_dispatch():
                return tuple(backend.time(fns, rounds=rounds, threads=threads))

        def kernel():
            with TF.no_dispatch():
                fns[0]()

        return tuple(backend.time([kernel, fns[1], fns[0]], rounds=rounds, threads=threads))


def settle_dispatch(case: Case, target: TargetInfo, kern, threads: int, *, rounds: int = 7,
                    source: str = "calibrate") -> str:
    """Decide ``kern``'s path on this machine from interleaved rounds of both paths, as ``tvmconv
    calibrate`` does (``dispatch.settle`` stores it), unless it is decided already. Returns it."""
    from ..runtime import dispatch

    if kern.dispatch != dispatch.UNDECIDED:
        return kern.dispatch
    a, b, _ = dispatch.measure(lambda k: time_case(case, target, threads, rounds=k)[:2], rounds)
    return dispatch.settle(kern, a, b, source)
