"""The registry of variants: what the ops, tests, benchmarks and the CLI enumerate.

A variant is one family module (``tvmconv/variants/<family>.py``) that defines its spec class, its
argument schema (the *parse* function: the op's public signature, without ``target``), its tensor
expression, its independent reference and how one row of the shared shape table becomes concrete
arguments, and registers them with ``@variant(...)`` on the parse function. ``tvmconv.functional``
and ``tvmconv.ops`` generate the public op and the custom op from the entry; adding a variant is
adding a module.

    @variant(spec=MySpec, kind="memory", compute=my_compute, reference=my_reference,
             cases=my_case, schema="(Tensor input, ..., str target) -> Tensor")
    def my_op(input, weight, ...):
        \"\"\"Docstring of the public op (shapes, semantics).\"\"\"
        a = Args("my_op")
        ...
        return Parsed(spec, a, [x, w])

``registered(...)`` (or ``unregister``) takes a variant out again, with what the ops made from it:
tests register toy variants without leaking them into the loops over ``VARIANTS``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import torch

from ..spec import Spec, hash_once


@dataclass(frozen=True)
class ShapeRow:
    """One row of the shared shape table; each variant reads what applies to it."""

    label: str
    n: int = 1
    c: int = 8
    size: tuple[int, int] = (9, 11)
    oc: int = 8
    k: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1


# stride 2, dilation 2, 1x1, 4x4 and 5x5 kernels, one input channel, 3 output channels, odd sizes, batch 2,
# groups 1/2/4/C
SHAPE_TABLE: tuple[ShapeRow, ...] = (
    ShapeRow("base"),
    ShapeRow("stride2", c=8, size=(10, 13), oc=16, stride=2),
    ShapeRow("dilation2", size=(11, 12), padding=2, dilation=2),
    ShapeRow("k1x1", n=2, c=16, size=(7, 7), oc=24, k=1, padding=0),
    ShapeRow("k5x5", c=4, size=(13, 9), oc=8, k=5, padding=2),
    ShapeRow("one_channel", c=1, oc=4),
    ShapeRow("odd_sizes", c=6, size=(13, 7), oc=6, padding=0),
    ShapeRow("batch2_g2", n=2, c=8, oc=8, groups=2),
    ShapeRow("g4_stride2", c=16, size=(12, 11), oc=16, groups=4, stride=2),
    ShapeRow("depthwise", c=8, oc=8, groups=8),
    ShapeRow("depthwise_m2_s2", c=4, size=(12, 12), oc=8, groups=4, stride=2, padding=0),
    ShapeRow("wide", c=32, size=(20, 17), oc=40),
    ShapeRow("blocked_g2", c=32, size=(8, 9), oc=64, groups=2),
    ShapeRow("rgb_out_k4s2", c=16, size=(7, 9), oc=3, k=4, stride=2, padding=1),  # a generator's last layer
)

# The main job's default shape: a MobileNet/ResNet-sized layer.
DEFAULT_ROW = ShapeRow("default", n=1, c=64, size=(56, 56), oc=64, k=3, stride=1, padding=1)


@dataclass(frozen=True)
class Case:
    args: tuple
    kwargs: dict = field(default_factory=dict)


def rand(g: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    """Normal random values of ``shape`` times ``scale`` (the cases' inputs and weights)."""
    return torch.randn(*shape, generator=g) * scale


def row_groups(row: ShapeRow) -> int:
    """The row's groups where they divide its channels, else 1."""
    return row.groups if row.c % row.groups == 0 and row.oc % row.groups == 0 else 1


def torch_activation(x: torch.Tensor, act: str | None) -> torch.Tensor:
    """The references' activations: None, 'relu' or 'relu6'."""
    if act == "relu":
        return torch.nn.functional.relu(x)
    if act == "relu6":
        return torch.nn.functional.relu6(x)
    return x


class Parsed(NamedTuple):
    """What a parse function returns: the spec, the checked ``Args`` (dtype, device, NumPy in),
    the kernel's tensors in the order of ``spec.arg_shapes`` (None for an absent optional one)
    and whether an unbatched input had its batch dim added (removed again from the result). A
    plain tuple of the same four fields does too (the conv fast path returns one)."""

    spec: Spec
    args: Any  # tvmconv._args.Args
    tensors: list
    unbatched: bool = False


@dataclass(frozen=True)
class Variant:
    """One registered op. ``parse`` is its argument schema (public signature without ``target``,
    the public docstring); ``compute(spec, plan)`` its tensor expression; ``reference`` an
    independent PyTorch (or NumPy) implementation taking the op's arguments; ``make_case`` turns a
    ``ShapeRow`` into a ``Case``; ``schema`` is the custom op's (the op's arguments in order,
    lists for per-axis ints, then ``str target``), ``nd`` the length of its ``int[]`` arguments."""

    name: str
    spec: type
    parse: Callable[..., Parsed]
    compute: Callable
    reference: Callable
    make_case: Callable[[ShapeRow, torch.Generator], Case]
    kind: str  # "compute", "memory" or "fused": which roofline applies
    schema: str
    nd: int = 0
    note: str = ""
    vendor: str = ""  # the PyTorch call a user would write, as benchmarks label it
    call_kwargs: Callable[[Spec], dict | None] = lambda spec: None
    vendor_fallback: Callable[[Spec], tuple | None] | None = None  # where call_kwargs has no form
    oracle: Callable[[Spec], tuple] | None = None  # reference_for, where it is not the vendor path
    differentiable: bool = True  # the reference is PyTorch: the custom op's backward differentiates it
    fake: Callable | None = None  # the custom op's shape function where the reference cannot run on fakes
    benched: bool = True  # in default_cases (needs a vendor path to time against)
    # the row a workload joins in results and the goal it meets: a label (the kind is the variant's),
    # or a function of the spec giving ``(family, kind)`` (conv2d is standard, pointwise, depthwise...);
    # empty: the variant's name
    family: str | Callable[[Spec], tuple[str, str]] = ""
    # the schedule template that computes the family on a backend kind, by name (backends/cuda_templates.py
    # holds "tiled", "dwsep" and "effnet"); a kind not named: the backend's default schedule only
    templates: dict = field(default_factory=dict)

    def family_of(self, spec: Spec) -> tuple[str, str]:
        """``(family, kind)`` of a workload of this variant."""
        if callable(self.family):
            return self.family(spec)
        return self.family or self.name, self.kind

    @property
    def op(self) -> Callable:
        """``tvmconv.functional.<name>``."""
        from .. import functional

        return getattr(functional, self.name)

    def run(self, case: Case):
        return self.op(*case.args, **case.kwargs)

    def run_reference(self, case: Case):
        return self.reference(*case.args, **case.kwargs)


VARIANTS: dict[str, Variant] = {}

# (added, removed) callbacks of the modules that make things from entries (functional, ops)
_listeners: list[tuple[Callable[[Variant], None], Callable[[Variant], None]]] = []


def subscribe(added: Callable[[Variant], None], removed: Callable[[Variant], None]) -> None:
    """Call ``added`` for every variant registered from now on (the caller handles the present
    ones itself) and ``removed`` for every one unregistered."""
    _listeners.append((added, removed))


def register(v: Variant) -> Variant:
    if v.name in VARIANTS:
        raise ValueError(f"variant {v.name!r} is already registered")
    hash_once(v.spec)
    VARIANTS[v.name] = v
    for added, _ in _listeners:
        added(v)
    return v


def unregister(name: str) -> None:
    """Take variant ``name`` out of the registry, with its functional op and custom op."""
    v = VARIANTS.pop(name)
    for _, removed in reversed(_listeners):
        removed(v)


def variant(*, spec: type, kind: str, compute: Callable, reference: Callable, cases: Callable, schema: str,
            name: str | None = None, **options):
    """Register the decorated parse function as variant ``name`` (default: the function's name);
    ``options`` are ``Variant``'s optional fields. Returns the function unchanged."""
    def decorate(parse):
        register(Variant(name or parse.__name__, spec, parse, compute, reference, cases, kind, schema, **options))
        return parse
    return decorate


@contextlib.contextmanager
def registered(*variants: Variant):
    """Register ``variants`` for the block only."""
    done = []
    try:
        for v in variants:
            done.append(register(v).name)
        yield variants
    finally:
        for name in reversed(done):
            unregister(name)


def default_cases() -> list[tuple[Variant, Case]]:
    """Every variant on the main job's default shape (``DEFAULT_ROW``), with the inputs ``tvmconv
    bench`` times. deform_conv2d is left out: its vendor path, torchvision, is not a dependency (its
    reference is a NumPy transcription, no vendor)."""
    return [(v, v.make_case(DEFAULT_ROW, torch.Generator().manual_seed(0))) for v in VARIANTS.values() if v.benched]
