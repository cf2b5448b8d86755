"""One frozen, normalised spec per convolution variant.

A spec is built once, at the API boundary, from user arguments that have already been checked
(see ``tvmconv._args``). Everything downstream -- the tensor expression, the schedule, the cache
key, benchmark labels -- reads that one object.

Every spec knows:
    ``variant``       the registry name of the op
    ``arg_shapes``    the kernel's input tensors, in call order: ``[(name, shape), ...]``
    ``out_shape``     the output tensor's shape
    ``flops``         multiply-adds count twice; comparisons and activations are not counted
    ``bytes_moved``   compulsory traffic: every input read once and the output written once
    ``name``          a readable, file-safe label
    ``key``           a stable hash of the sorted JSON of the spec (the cache key's spec part)

This module holds the base class and what every spec shares (validation, reading one back from
JSON); each family's spec class lives with its variant in ``tvmconv/variants/<family>.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import ClassVar

SPEC_FORMAT_VERSION = 1

Shape = tuple[int, ...]
Pads = tuple[tuple[int, int], ...]


_DTYPE_BYTES = {"float16": 2, "float32": 4, "float64": 8}
DTYPES = tuple(_DTYPE_BYTES)  # the dtypes a spec may name



def prod(xs) -> int:
    return int(math.prod(xs))


def conv_out_size(size: int, k: int, s: int, pad: int | tuple[int, int], d: int) -> int:
    """A convolution's output length along one axis: input ``size``, ``k`` taps, stride ``s``,
    ``pad`` as (before, after) or one number for both, dilation ``d`` (the one place it is written)."""
    before, after = (pad, pad) if isinstance(pad, int) else pad
    return (size + before + after - d * (k - 1) - 1) // s + 1


def conv_out_sizes(in_size, kernel, stride, padding, dilation) -> Shape:
    """``conv_out_size`` per spatial axis."""
    return tuple(conv_out_size(i, k, s, p, d) for i, k, s, p, d in zip(in_size, kernel, stride, padding, dilation))


def conv_transpose_out_size(size: int, k: int, s: int, pad: tuple[int, int], d: int, op: int) -> int:
    # For transposed convolution ``pad`` is torch's symmetric padding stored as (p, p).
    return (size - 1) * s - 2 * pad[0] + d * (k - 1) + op + 1


@dataclass(frozen=True)
class Spec:
    variant: ClassVar[str] = ""
    dtype: str = "float32"

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["variant"] = self.variant
        d["spec_format"] = SPEC_FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    @property
    def name(self) -> str:
        short = {"float16": "f16", "float32": "f32", "float64": "f64"}[self.dtype]
        return f"{self.variant}_{short}_" + "_".join(self._name_parts())

    def _name_parts(self) -> list[str]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    # -- shapes and costs ---------------------------------------------------------------------
    @property
    def arg_shapes(self) -> list[tuple[str, Shape]]:
        raise NotImplementedError

    @property
    def out_shape(self) -> Shape:
        """``(N, C_out, *out_size)``, the convolutions' output; a spec shaped otherwise overrides it."""
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self) -> int:
        raise NotImplementedError

    # The kernel's own view of its arguments (ConvSpec adds unit spatial dims); the ops reshape
    # tensors to these shapes, which is always a view.
    @property
    def kernel_arg_shapes(self) -> list[tuple[str, Shape]]:
        return self.arg_shapes

    @property
    def kernel_out_shape(self) -> Shape:
        return self.out_shape

    @property
    def bytes_moved(self) -> int:
        elems = sum(prod(s) for _, s in self.arg_shapes) + prod(self.out_shape)
        return elems * _DTYPE_BYTES[self.dtype]


def joined(xs) -> str:
    """``(3, 3)`` as ``3x3``: dims in a spec's name."""
    return "x".join(str(x) for x in xs)


ACTIVATIONS = (None, "relu", "relu6")


# -- validation --------------------------------------------------------------------------------
# TVM indexes a kernel's buffers with 32-bit integers (a larger literal ends in "Literal value ...
# exceeds range of int32", a larger product wraps): every size, parameter and tensor stays below.
INDEX_MAX = 2**31 - 1
_CHOICES = {"dtype": DTYPES, "activation": ACTIVATIONS, "mid_activation": ACTIVATIONS}
_MAY_BE_ZERO = {"padding", "output_padding", "shuffle"}


def _leaves(value):
    if isinstance(value, tuple):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def check_spec(spec: Spec) -> None:
    """Raise ValueError naming the field where ``spec`` is not one the kernels can run: a field of
    the wrong type (``n="1"``, ``bias=1``), a name outside its list (dtype, activations: they
    become file names and C identifiers), a size out of range, channels that do not divide into
    their groups, or an index past 32 bits. The ops check their arguments before this; specs read
    from files or the command line get no other check."""
    where = f"{spec.variant} spec"
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if f.name in _CHOICES:
            if value not in _CHOICES[f.name]:
                raise ValueError(f"{where}: field {f.name!r} must be one of {_CHOICES[f.name]}, got {value!r}")
        elif isinstance(f.default, bool):
            if type(value) is not bool:
                raise ValueError(f"{where}: field {f.name!r} must be true or false, got {value!r}")
        else:
            if not isinstance(value, (int, tuple)) or isinstance(value, bool):
                raise ValueError(f"{where}: field {f.name!r} must be an integer or a list of them, got {value!r}")
            if isinstance(f.default, tuple) and f.default and isinstance(f.default[0], tuple) != (
                    isinstance(value, tuple) and bool(value) and isinstance(value[0], tuple)):
                raise ValueError(f"{where}: field {f.name!r} has the wrong nesting: {value!r}")
            low = 0 if f.name in _MAY_BE_ZERO else 1
            for leaf in _leaves(value):
                if type(leaf) is not int or not low <= leaf <= INDEX_MAX:
                    raise ValueError(f"{where}: field {f.name!r} must hold integers in [{low}, 2**31-1], "
                                     f"got {value!r}")
    _check_axes(spec, where)
    _check_groups(spec, where)
    for name, shape in [*spec.arg_shapes, ("output", spec.out_shape)]:
        if min(shape, default=1) < 1:
            raise ValueError(f"{where}: the {name} would have shape {shape}; every size must be at least 1")
        if prod(shape) > INDEX_MAX:
            raise ValueError(f"{where}: the {name} would have {prod(shape):,} elements {shape}; tvmconv's kernels "
                             f"index with 32-bit integers, so a tensor holds at most 2**31-1 elements")


def _check_axes(spec: Spec, where: str) -> None:
    """Per-axis tuples agree in length, and no index a kernel computes along an axis (padded
    input, dilated kernel, strided output) passes 32 bits."""
    size = getattr(spec, "in_size", None)
    if size is None:
        return
    for name in ("kernel", "stride", "padding", "dilation", "output_padding"):
        value = getattr(spec, name, None)
        if isinstance(value, tuple) and len(value) != len(size):
            raise ValueError(f"{where}: field {name!r} has {len(value)} entries for {len(size)} spatial dims")
    ones = (1,) * len(size)
    kernel = getattr(spec, "kernel", (getattr(spec, "k", 1),) * len(size))
    pads = getattr(spec, "padding", ((0, 0),) * len(size))
    for a, (i, k, s, d) in enumerate(zip(size, kernel, getattr(spec, "stride", ones), getattr(spec, "dilation", ones))):
        pad = pads[a] if isinstance(pads[a], tuple) else (pads[a], pads[a])
        if i + sum(pad) + d * (k - 1) + s * i > INDEX_MAX:
            raise ValueError(f"{where}: along spatial axis {a}, size {i}, padding {pad}, stride {s} and dilation "
                             f"{d} of a {k}-tap kernel reach indices past 2**31-1, which tvmconv's kernels "
                             f"cannot address")


def _check_groups(spec: Spec, where: str) -> None:
    groups = getattr(spec, "groups", 1)
    pairs = [("c_in", groups), ("c", groups), ("c_mid", groups), ("c_out", groups),
             ("c_in", getattr(spec, "offset_groups", 1)), ("c_out", getattr(spec, "shuffle", 0) or 1)]
    for field, g in pairs:
        channels = getattr(spec, field, None)
        if channels is not None and channels % g:
            raise ValueError(f"{where}: field {field!r} ({channels}) must be divisible by its groups ({g})")


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def spec_from_dict(d: dict) -> Spec:
    """The spec ``to_dict`` wrote (also accepts its JSON as printed by the untuned warning)."""
    if not isinstance(d, dict) or "variant" not in d:
        raise ValueError(f"spec must be a JSON object with a 'variant' field, got {d!r}")
    from .variants import VARIANTS  # the family modules import this one

    classes = {name: v.spec for name, v in VARIANTS.items()}
    cls = classes.get(d["variant"])
    if cls is None:
        raise ValueError(f"spec variant must be one of {sorted(classes)}, got {d['variant']!r}")
    if d.get("spec_format", SPEC_FORMAT_VERSION) != SPEC_FORMAT_VERSION:
        raise ValueError(f"spec format {d.get('spec_format')} is not {SPEC_FORMAT_VERSION}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names - {"variant", "spec_format"}
    if unknown:
        raise ValueError(f"spec fields {sorted(unknown)} are not fields of {cls.__name__}")
    spec = cls(**{k: _tuplify(v) for k, v in d.items() if k in names})
    check_spec(spec)
    if spec.variant != d["variant"]:
        raise ValueError(f"spec fields describe a {spec.variant}, not the {d['variant']} its 'variant' names")
    return spec


def hash_once(cls):
    """After ``@dataclass(frozen=True)``: hash an object's fields once and keep the result (the ops
    look a kernel up by spec and target on every call). The kept hash is never pickled: string
    hashes differ between processes. Applying it twice to a class changes nothing."""
    if getattr(cls.__dict__.get("__hash__"), "hash_once", False):
        return cls
    fields_hash = cls.__hash__

    def __hash__(self):
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = fields_hash(self)
            object.__setattr__(self, "_hash", value)
            return value

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    __hash__.hash_once = True
    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


hash_once(Spec)
