"""Convolutions: standard, grouped, depthwise (``groups=C_in``), dilated and transposed, with 1, 2
or 3 spatial dims, as torch.nn.functional defines them.

They share ``ConvSpec``; the kernel always sees them as 3-D (``(N, C, D, H, W)``), with leading
unit spatial dims, so one compute and one schedule serve all. The convolution stage itself
(``compute.conv_stage``) is shared with the fused variants that contain convolutions. The ShuffleNet
unit (``shuffled_group_conv2d``, in ``shuffle.py``) is a ``ConvSpec`` with ``shuffle`` set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .._args import Args, check_divisible, check_groups, check_out_size, check_shape, conv_padding, int_tuple
from ..spec import Pads, Shape, Spec, conv_out_sizes, conv_transpose_out_size, joined, prod
from .compute import Plan, conv_stage, placeholders
from .registry import Case, Parsed, ShapeRow, rand, row_groups, variant


@dataclass(frozen=True)
class ConvSpec(Spec):
    """``input (N, C_in, *in_size)``, ``weight (C_out, C_in/groups, *kernel)`` for a forward
    convolution or ``(C_in, C_out/groups, *kernel)`` for a transposed one.

    ``padding`` holds (before, after) per spatial axis; ``shuffle`` > 0 applies
    ``channel_shuffle(out, shuffle)`` to the result.
    """

    n: int = 1
    c_in: int = 1
    in_size: Shape = (1,)
    c_out: int = 1
    kernel: Shape = (1,)
    stride: Shape = (1,)
    padding: Pads = ((0, 0),)
    dilation: Shape = (1,)
    groups: int = 1
    bias: bool = False
    transposed: bool = False
    output_padding: Shape = (0,)
    shuffle: int = 0

    @property
    def variant(self) -> str:  # type: ignore[override]
        if self.shuffle:
            return "shuffled_group_conv2d"
        return f"conv{'_transpose' if self.transposed else ''}{self.ndim}d"

    @property
    def ndim(self) -> int:
        return len(self.in_size)

    @property
    def out_size(self) -> Shape:
        if self.transposed:
            return tuple(
                conv_transpose_out_size(i, k, s, p, d, op)
                for i, k, s, p, d, op in zip(
                    self.in_size, self.kernel, self.stride, self.padding, self.dilation, self.output_padding
                )
            )
        return conv_out_sizes(self.in_size, self.kernel, self.stride, self.padding, self.dilation)

    @property
    def weight_shape(self) -> Shape:
        if self.transposed:
            return (self.c_in, self.c_out // self.groups, *self.kernel)
        return (self.c_out, self.c_in // self.groups, *self.kernel)

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c_in, *self.in_size)), ("weight", self.weight_shape)]
        if self.bias:
            args.append(("bias", (self.c_out,)))
        return args

    @property
    def flops(self) -> int:
        macs_per_out = (self.c_in // self.groups) * prod(self.kernel)
        if self.transposed:
            # Each input element meets each kernel tap once; inserted zeros are not multiplied.
            return 2 * self.n * self.c_in * prod(self.in_size) * (self.c_out // self.groups) * prod(self.kernel)
        return 2 * prod(self.out_shape) * macs_per_out

    @property
    def kernel_arg_shapes(self):
        return self.as3d().arg_shapes

    @property
    def kernel_out_shape(self):
        return self.as3d().out_shape

    # Kernel-side view: always three spatial dims.
    def as3d(self) -> "ConvSpec":
        pad = 3 - self.ndim
        return dataclasses.replace(
            self,
            in_size=(1,) * pad + self.in_size,
            kernel=(1,) * pad + self.kernel,
            stride=(1,) * pad + self.stride,
            padding=((0, 0),) * pad + self.padding,
            dilation=(1,) * pad + self.dilation,
            output_padding=(0,) * pad + self.output_padding,
        )

    def _name_parts(self):
        parts = [f"n{self.n}", f"c{self.c_in}", f"i{joined(self.in_size)}", f"k{self.c_out}", f"r{joined(self.kernel)}",
                 f"s{joined(self.stride)}", "p" + joined(f"{a}-{b}" if a != b else str(a) for a, b in self.padding),
                 f"d{joined(self.dilation)}", f"g{self.groups}"]
        if self.transposed:
            parts.append(f"op{joined(self.output_padding)}")
        if self.shuffle:
            parts.append(f"sh{self.shuffle}")
        if self.bias:
            parts.append("b")
        return parts


# -- arguments -----------------------------------------------------------------------------------
_STRIDED = torch.strided
_SPECS: dict = {}  # a call's shapes, dtypes and hyper-parameters -> (spec, args, unbatched), once checked


def _batched(x: torch.Tensor, nd: int) -> tuple[torch.Tensor, bool]:
    """torch convs accept an unbatched input of nd+1 dims; add the batch dim."""
    if x.dim() == nd + 1:
        return x.unsqueeze(0), True
    return x, False


def _spec_key(op, nd, x, w, b, *params):
    """A key for ``_SPECS`` when every tensor is a dense torch tensor on the CPU or on one CUDA
    device: a call with the same key passed the same checks and has the same spec. None otherwise."""
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and (b is None or isinstance(b, torch.Tensor))):
        return None
    if not (x.layout is _STRIDED and w.layout is _STRIDED and (b is None or b.layout is _STRIDED)):
        return None
    # is_cpu, not device.type (0.6 us each): CPU tensors need no device in the key. Others all on
    # one device keep it in the key (a device the ops refuse never passes the checks to be kept).
    if x.is_cpu and w.is_cpu and (b is None or b.is_cpu):
        where = None
    else:
        where = x.device
        if w.device != where or (b is not None and b.device != where):
            return None
    # repr, not the values: True == 1 and (1, 1) == [1, 1] in Python, but not to the checks
    return (op, nd, x.shape, x.dtype, w.shape, w.dtype, None if b is None else (b.shape, b.dtype), repr(params),
            where)


def parse_conv(op: str, nd: int, input, weight, bias, stride, padding, dilation, groups,
               transposed=False, output_padding=0, shuffle=0) -> Parsed:
    """``conv_spec`` behind a cache keyed on shapes, dtypes and parameters: a call like an earlier
    one skips the checks (the ops' per-call overhead)."""
    key = _spec_key(op, nd, input, weight, bias, stride, padding, dilation, groups, transposed, output_padding,
                    shuffle)
    hit = _SPECS.get(key) if key is not None else None
    if hit is not None:  # the checks below passed for exactly these shapes, dtypes and parameters
        spec, a, unbatched = hit
        # a plain tuple, Parsed's fields in order: building the NamedTuple costs 0.3 us a call
        return spec, a, [input.unsqueeze(0) if unbatched else input, weight, bias], unbatched
    spec, a, tensors, unbatched = conv_spec(op, nd, input, weight, bias, stride, padding, dilation, groups,
                                            transposed, output_padding, shuffle)
    if key is not None:
        if len(_SPECS) > 4096:
            _SPECS.clear()
        _SPECS[key] = (spec, a, unbatched)
    return Parsed(spec, a, tensors, unbatched)


def conv_spec(op: str, nd: int, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
              transposed=False, output_padding=0, shuffle=0):
    """Check a convolution's arguments as ``torch.nn.functional.<op>`` would and return
    ``(spec, args, [x, w, b], unbatched)``; also used to find the workloads of a model."""
    a = Args(op)
    x, w, b = a.tensors(input=(input, (nd + 1, nd + 2)), weight=(weight, nd + 2), bias=(bias, 1))
    x, unbatched = _batched(x, nd)
    groups = check_groups(groups, op)
    stride = int_tuple(stride, nd, "stride", op, minimum=1)
    dilation = int_tuple(dilation, nd, "dilation", op, minimum=1)
    kernel = tuple(w.shape[2:])
    c_in = x.shape[1]
    check_divisible(c_in, groups, "input channels", op)
    if transposed:
        if isinstance(padding, str):
            raise ValueError(f"{op}: argument 'padding' must be an int or a tuple of {nd} ints for a "
                             f"transposed convolution, got {padding!r}")
        pads = conv_padding(padding, nd, kernel, dilation, stride, op)
        out_pad = int_tuple(output_padding, nd, "output_padding", op, minimum=0)
        for op_, s, d in zip(out_pad, stride, dilation):
            if op_ >= s and op_ >= d:
                raise ValueError(f"{op}: argument 'output_padding' ({out_pad}) must be smaller than either "
                                 f"stride ({stride}) or dilation ({dilation})")
        if w.shape[0] != c_in:
            raise ValueError(f"{op}: argument 'weight' must have shape (C_in={c_in}, C_out/groups, *kernel), "
                             f"got {tuple(w.shape)}")
        c_out = w.shape[1] * groups
    else:
        pads = conv_padding(padding, nd, kernel, dilation, stride, op)
        out_pad = (0,) * nd
        c_out = w.shape[0]
        check_divisible(c_out, groups, "weight.shape[0] (output channels)", op)
        if w.shape[1] * groups != c_in:
            raise ValueError(f"{op}: argument 'weight' must have shape (C_out, C_in/groups={c_in // groups}, "
                             f"*kernel) for input channels {c_in} and groups {groups}, got {tuple(w.shape)}")
    if shuffle:
        check_divisible(c_out, shuffle, "output channels", op, "shuffle_groups")
    check_shape(b, (c_out,), "bias", op, " (one value per output channel)")
    spec = ConvSpec(dtype=a.dtype_name, n=x.shape[0], c_in=c_in, in_size=tuple(x.shape[2:]), c_out=c_out,
                    kernel=kernel, stride=stride, padding=pads, dilation=dilation, groups=groups,
                    bias=b is not None, transposed=transposed, output_padding=out_pad, shuffle=shuffle)
    check_out_size(spec.in_size, spec.out_size, kernel, pads, dilation, op)
    return spec, a, [x, w, b], unbatched


# -- compute -------------------------------------------------------------------------------------
def compute(spec: ConvSpec, plan: Plan):
    s3 = spec.as3d()
    ph = placeholders(s3)
    out = conv_stage(s3, plan, ph["input"], ph["weight"], ph.get("bias"))
    return [ph[nm] for nm, _ in s3.arg_shapes], out


# -- vendor path, test cases, op schema ------------------------------------------------------------
def call_kwargs(spec: ConvSpec) -> dict | None:
    """The non-tensor arguments of ``spec``'s op as keywords (also torch.nn.functional's); None
    for asymmetric padding ('same' with an even kernel), which has no such form."""
    if any(lo != hi for lo, hi in spec.padding):
        return None
    kw = dict(stride=spec.stride, padding=tuple(lo for lo, _ in spec.padding), dilation=spec.dilation)
    if spec.transposed:
        kw["output_padding"] = spec.output_padding
    if spec.shuffle:
        kw["shuffle_groups"] = spec.shuffle
    return {**kw, "groups": spec.groups}


def padded_vendor(spec: ConvSpec):
    """``(description, fn)`` for a forward convolution with asymmetric padding: F.pad first."""
    if spec.transposed:
        return None
    conv = getattr(F, f"conv{spec.ndim}d")
    flat = [p for lo, hi in reversed(spec.padding) for p in (lo, hi)]

    def padded(x, w, b=None):
        y = conv(F.pad(x, flat), w, b, spec.stride, 0, spec.dilation, spec.groups)
        return F.channel_shuffle(y, spec.shuffle) if spec.shuffle else y
    return f"F.pad + F.conv{spec.ndim}d", padded


def row_size(row: ShapeRow, nd: int) -> tuple[int, ...]:
    """The row's spatial size for an nd-dimensional op, with about as many output pixels."""
    h, w = row.size
    return {1: (h * w,), 2: (h, w), 3: (max(3, h // 7), (h + 1) // 2, (w + 1) // 2)}[nd]


def _conv_case(nd: int):
    def make(row: ShapeRow, g: torch.Generator) -> Case:
        gr = row_groups(row)
        x = rand(g, row.n, row.c, *row_size(row, nd))
        w = rand(g, row.oc, row.c // gr, *([row.k] * nd), scale=(row.c // gr * row.k ** nd) ** -0.5)
        return Case((x, w, rand(g, row.oc)),
                    dict(stride=row.stride, padding=row.padding, dilation=row.dilation, groups=gr))
    return make


def _conv_transpose_case(nd: int):
    def make(row: ShapeRow, g: torch.Generator) -> Case:
        gr = row_groups(row)
        x = rand(g, row.n, row.c, *row_size(row, nd))
        w = rand(g, row.c, row.oc // gr, *([row.k] * nd), scale=(row.c * row.k ** nd) ** -0.5)
        out_pad = row.stride - 1 if row.stride > 1 else 0
        return Case((x, w, rand(g, row.oc)),
                    dict(stride=row.stride, padding=row.padding, output_padding=out_pad, groups=gr,
                         dilation=row.dilation))
    return make


_SCHEMA = ("(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups, "
           "str target) -> Tensor")
_TRANSPOSED_SCHEMA = ("(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, "
                      "int[] output_padding, int groups, int[] dilation, str target) -> Tensor")


def conv_family(spec: ConvSpec) -> tuple[str, str]:
    """``(family, kind)`` of a convolution: the row it joins in results and the goal it meets."""
    nd = len(spec.in_size)
    if spec.shuffle:
        return "shuffled_group", "fused"
    if spec.transposed:
        return "transposed", "compute"
    if spec.groups > 1 and spec.groups == spec.c_in:
        return "depthwise", "memory"
    if spec.groups > 1:
        return "grouped", "compute"
    if any(d > 1 for d in spec.dilation):
        return "dilated", "compute"
    if nd != 2:
        return f"conv{nd}d", "compute"
    if all(k == 1 for k in spec.kernel):
        return "pointwise", "compute"
    return "standard", "compute"


def _register(nd: int, transposed: bool, **options):
    name = f"conv{'_transpose' if transposed else ''}{nd}d"
    return variant(spec=ConvSpec, kind="compute", compute=compute, reference=getattr(F, name),
                   cases=(_conv_transpose_case if transposed else _conv_case)(nd),
                   schema=_TRANSPOSED_SCHEMA if transposed else _SCHEMA, nd=nd, vendor=f"F.{name}",
                   call_kwargs=call_kwargs, vendor_fallback=padded_vendor, family=conv_family,
                   templates={"cuda": "tiled"}, **options)


# -- the ops' argument schemas (tvmconv.functional generates the ops from them) -------------------
@_register(1, False)
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``input (N, C_in, L)`` or ``(C_in, L)``, ``weight (C_out, C_in/groups, K)``, ``bias (C_out,)``
    -> ``(N, C_out, L_out)``. Same semantics as torch.nn.functional.conv1d."""
    return parse_conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


@_register(2, False, note="standard, grouped, depthwise (groups=C) and dilated are conv2d with groups/dilation")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``input (N, C_in, H, W)`` or ``(C_in, H, W)``, ``weight (C_out, C_in/groups, KH, KW)``,
    ``bias (C_out,)`` -> ``(N, C_out, H_out, W_out)``. Same semantics as torch.nn.functional.conv2d;
    depthwise is ``groups=C_in`` (channel multiplier m: ``C_out = m*C_in``)."""
    return parse_conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


@_register(3, False)
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``input (N, C_in, D, H, W)``, ``weight (C_out, C_in/groups, KD, KH, KW)`` -> ``(N, C_out, D', H', W')``."""
    return parse_conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


@_register(1, True)
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``input (N, C_in, L)``, ``weight (C_in, C_out/groups, K)`` -> ``(N, C_out, L_out)``. Inserted
    zeros are never multiplied: each output gathers only the kernel taps that hit an input."""
    return parse_conv("conv_transpose1d", 1, input, weight, bias, stride, padding, dilation, groups,
                      transposed=True, output_padding=output_padding)


@_register(2, True)
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``input (N, C_in, H, W)``, ``weight (C_in, C_out/groups, KH, KW)`` -> ``(N, C_out, H_out, W_out)``."""
    return parse_conv("conv_transpose2d", 2, input, weight, bias, stride, padding, dilation, groups,
                      transposed=True, output_padding=output_padding)


@_register(3, True)
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """``input (N, C_in, D, H, W)``, ``weight (C_in, C_out/groups, KD, KH, KW)`` -> ``(N, C_out, D', H', W')``."""
    return parse_conv("conv_transpose3d", 3, input, weight, bias, stride, padding, dilation, groups,
                      transposed=True, output_padding=output_padding)
