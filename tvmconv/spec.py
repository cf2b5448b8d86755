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

Convolutions of 1, 2 and 3 spatial dims share ``ConvSpec``; the kernel always sees them as 3-D
(``(N, C, D, H, W)``), with leading unit spatial dims, so one compute and one schedule serve all.
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



def _prod(xs) -> int:
    return int(math.prod(xs))


def conv_out_size(size: int, k: int, s: int, pad: tuple[int, int], d: int) -> int:
    return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


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
        raise NotImplementedError

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
        elems = sum(_prod(s) for _, s in self.arg_shapes) + _prod(self.out_shape)
        return elems * _DTYPE_BYTES[self.dtype]


def _j(xs) -> str:
    return "x".join(str(x) for x in xs)


# ----------------------------------------------------------------------------------------------
# Standard, grouped, depthwise, dilated, transposed convolutions (1-D, 2-D, 3-D), and the
# ShuffleNet unit (grouped convolution with the channel shuffle folded into its output index).
# ----------------------------------------------------------------------------------------------
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
        return tuple(
            conv_out_size(i, k, s, p, d)
            for i, k, s, p, d in zip(self.in_size, self.kernel, self.stride, self.padding, self.dilation)
        )

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
    def out_shape(self) -> Shape:
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self) -> int:
        macs_per_out = (self.c_in // self.groups) * _prod(self.kernel)
        if self.transposed:
            # Each input element meets each kernel tap once; inserted zeros are not multiplied.
            return 2 * self.n * self.c_in * _prod(self.in_size) * (self.c_out // self.groups) * _prod(self.kernel)
        return 2 * _prod(self.out_shape) * macs_per_out

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
        parts = [f"n{self.n}", f"c{self.c_in}", f"i{_j(self.in_size)}", f"k{self.c_out}", f"r{_j(self.kernel)}",
                 f"s{_j(self.stride)}", "p" + _j(f"{a}-{b}" if a != b else str(a) for a, b in self.padding),
                 f"d{_j(self.dilation)}", f"g{self.groups}"]
        if self.transposed:
            parts.append(f"op{_j(self.output_padding)}")
        if self.shuffle:
            parts.append(f"sh{self.shuffle}")
        if self.bias:
            parts.append("b")
        return parts


# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeformConv2dSpec(Spec):
    """torchvision.ops.deform_conv2d: ``input (N, C_in, H, W)``, ``offset (N, 2*og*kh*kw, OH, OW)``,
    ``weight (C_out, C_in/groups, kh, kw)``, optional ``mask (N, og*kh*kw, OH, OW)`` and bias."""

    variant: ClassVar[str] = "deform_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_out: int = 1
    kernel: Shape = (1, 1)
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    dilation: Shape = (1, 1)
    groups: int = 1
    offset_groups: int = 1
    mask: bool = False
    bias: bool = False

    @property
    def out_size(self) -> Shape:
        return tuple(conv_out_size(i, k, s, (p, p), d) for i, k, s, p, d in
                     zip(self.in_size, self.kernel, self.stride, self.padding, self.dilation))

    @property
    def arg_shapes(self):
        kk = _prod(self.kernel)
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("offset", (self.n, 2 * self.offset_groups * kk, *self.out_size)),
                ("weight", (self.c_out, self.c_in // self.groups, *self.kernel))]
        if self.mask:
            args.append(("mask", (self.n, self.offset_groups * kk, *self.out_size)))
        if self.bias:
            args.append(("bias", (self.c_out,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self):
        kk = _prod(self.kernel)
        # the MACs plus the bilinear interpolation (4 products, 3 adds per sampled value)
        sampled = self.n * self.c_in * kk * _prod(self.out_size)
        return 2 * _prod(self.out_shape) * (self.c_in // self.groups) * kk + 7 * sampled

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{_j(self.in_size)}", f"k{self.c_out}", f"r{_j(self.kernel)}",
                f"s{_j(self.stride)}", f"p{_j(self.padding)}", f"d{_j(self.dilation)}", f"g{self.groups}",
                f"og{self.offset_groups}"] + (["m"] if self.mask else []) + (["b"] if self.bias else [])


# ----------------------------------------------------------------------------------------------
ACTIVATIONS = (None, "relu", "relu6")


@dataclass(frozen=True)
class DepthwiseSeparableSpec(Spec):
    """MobileNet / Xception block: depthwise ``(C*m, 1, kh, kw)`` then pointwise ``(C_out, C*m, 1, 1)``."""

    variant: ClassVar[str] = "depthwise_separable_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    multiplier: int = 1
    c_out: int = 1
    kernel: Shape = (3, 3)
    stride: Shape = (1, 1)
    padding: Pads = ((0, 0), (0, 0))
    dilation: Shape = (1, 1)
    dw_bias: bool = False
    pw_bias: bool = False
    mid_activation: str | None = None
    activation: str | None = None

    @property
    def c_mid(self) -> int:
        return self.c_in * self.multiplier

    @property
    def out_size(self):
        return tuple(conv_out_size(i, k, s, p, d) for i, k, s, p, d in
                     zip(self.in_size, self.kernel, self.stride, self.padding, self.dilation))

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("depthwise_weight", (self.c_mid, 1, *self.kernel)),
                ("pointwise_weight", (self.c_out, self.c_mid, 1, 1))]
        if self.dw_bias:
            args.append(("depthwise_bias", (self.c_mid,)))
        if self.pw_bias:
            args.append(("pointwise_bias", (self.c_out,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self):
        hw = _prod(self.out_size)
        return 2 * self.n * hw * self.c_mid * (_prod(self.kernel) + self.c_out)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{_j(self.in_size)}", f"m{self.multiplier}", f"k{self.c_out}",
                f"r{_j(self.kernel)}", f"s{_j(self.stride)}",
                "p" + _j(f"{a}-{b}" if a != b else str(a) for a, b in self.padding), f"d{_j(self.dilation)}",
                f"a{self.mid_activation or 'none'}-{self.activation or 'none'}"]


@dataclass(frozen=True)
class SpatialSeparableSpec(Spec):
    """EffNet-style kx1 then 1xk: ``weight_kx1 (C_mid, C_in/g, k, 1)``, ``weight_1xk (C_out, C_mid/g, 1, k)``."""

    variant: ClassVar[str] = "spatial_separable_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_mid: int = 1
    c_out: int = 1
    k: int = 3
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    dilation: Shape = (1, 1)
    groups: int = 1
    bias1: bool = False
    bias2: bool = False

    @property
    def mid_size(self):
        h, w = self.in_size
        return (conv_out_size(h, self.k, self.stride[0], (self.padding[0],) * 2, self.dilation[0]), w)

    @property
    def out_size(self):
        mh, w = self.mid_size
        return (mh, conv_out_size(w, self.k, self.stride[1], (self.padding[1],) * 2, self.dilation[1]))

    def stages(self) -> tuple["ConvSpec", "ConvSpec"]:
        """The kx1 and 1xk convolutions as specs of their own."""
        common = dict(dtype=self.dtype, n=self.n, groups=self.groups, output_padding=(0, 0))
        first = ConvSpec(c_in=self.c_in, in_size=self.in_size, c_out=self.c_mid, kernel=(self.k, 1),
                         stride=(self.stride[0], 1), padding=((self.padding[0],) * 2, (0, 0)),
                         dilation=(self.dilation[0], 1), bias=self.bias1, **common)
        second = ConvSpec(c_in=self.c_mid, in_size=self.mid_size, c_out=self.c_out, kernel=(1, self.k),
                          stride=(1, self.stride[1]), padding=((0, 0), (self.padding[1],) * 2),
                          dilation=(1, self.dilation[1]), bias=self.bias2, **common)
        return first, second

    @property
    def kernel_arg_shapes(self):
        """``arg_shapes`` with the input and weights in the 3-D views of the two stages."""
        first, second = (dict(s.kernel_arg_shapes) for s in self.stages())
        views = {"input": first["input"], "weight_kx1": first["weight"], "weight_1xk": second["weight"]}
        return [(name, views.get(name, shape)) for name, shape in self.arg_shapes]

    @property
    def kernel_out_shape(self):
        return self.stages()[1].kernel_out_shape

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("weight_kx1", (self.c_mid, self.c_in // self.groups, self.k, 1)),
                ("weight_1xk", (self.c_out, self.c_mid // self.groups, 1, self.k))]
        if self.bias1:
            args.append(("bias_kx1", (self.c_mid,)))
        if self.bias2:
            args.append(("bias_1xk", (self.c_out,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self):
        return 2 * self.n * self.k * (self.c_mid * (self.c_in // self.groups) * _prod(self.mid_size)
                                      + self.c_out * (self.c_mid // self.groups) * _prod(self.out_size))

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{_j(self.in_size)}", f"m{self.c_mid}", f"k{self.c_out}",
                f"r{self.k}", f"s{_j(self.stride)}", f"p{_j(self.padding)}", f"d{_j(self.dilation)}",
                f"g{self.groups}"]


@dataclass(frozen=True)
class FlattenedSpec(Spec):
    """Flattened convolution: lateral ``(C_out, C_in, 1, 1)``, vertical ``(C_out, 1, kh, 1)``,
    horizontal ``(C_out, 1, 1, kw)``, applied in that order."""

    variant: ClassVar[str] = "flattened_conv2d"
    n: int = 1
    c_in: int = 1
    in_size: Shape = (1, 1)
    c_out: int = 1
    kernel: Shape = (3, 3)
    stride: Shape = (1, 1)
    padding: Shape = (0, 0)
    bias: bool = False

    @property
    def out_size(self):
        return tuple(conv_out_size(i, k, s, (p, p), 1) for i, k, s, p in
                     zip(self.in_size, self.kernel, self.stride, self.padding))

    @property
    def arg_shapes(self):
        kh, kw = self.kernel
        args = [("input", (self.n, self.c_in, *self.in_size)),
                ("lateral_weight", (self.c_out, self.c_in, 1, 1)),
                ("vertical_weight", (self.c_out, 1, kh, 1)),
                ("horizontal_weight", (self.c_out, 1, 1, kw))]
        if self.bias:
            args.append(("bias", (self.c_out,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c_out, *self.out_size)

    @property
    def flops(self):
        h, w = self.in_size
        oh, ow = self.out_size
        kh, kw = self.kernel
        return 2 * self.n * self.c_out * (self.c_in * h * w + kh * oh * w + kw * oh * ow)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c_in}", f"i{_j(self.in_size)}", f"k{self.c_out}", f"r{_j(self.kernel)}",
                f"s{_j(self.stride)}", f"p{_j(self.padding)}"] + (["b"] if self.bias else [])


@dataclass(frozen=True)
class ChannelWiseSpec(Spec):
    """ChannelNets' channel-wise convolution: a 1-D convolution sliding along the channel axis,
    shared by every spatial position. The ``C`` channels form ``groups`` slices of ``C/groups``;
    slice ``g`` is convolved with ``weight[g]`` (length ``k``), giving ``L`` outputs, and the
    result has ``groups * L`` channels."""

    variant: ClassVar[str] = "channel_wise_conv"
    n: int = 1
    c: int = 1
    spatial: Shape = (1, 1)
    groups: int = 1
    k: int = 1
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    bias: bool = False

    @property
    def l_out(self) -> int:
        return conv_out_size(self.c // self.groups, self.k, self.stride, (self.padding,) * 2, self.dilation)

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.spatial)), ("weight", (self.groups, self.k))]
        if self.bias:
            args.append(("bias", (self.groups,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.groups * self.l_out, *self.spatial)

    @property
    def flops(self):
        return 2 * _prod(self.out_shape) * self.k

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{_j(self.spatial)}", f"g{self.groups}", f"r{self.k}",
                f"s{self.stride}", f"p{self.padding}", f"d{self.dilation}"] + (["b"] if self.bias else [])


@dataclass(frozen=True)
class SqueezeExcitationSpec(Spec):
    """``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with ``fc1 (C_r, C)`` and ``fc2 (C, C_r)``,
    as torchvision.ops.SqueezeExcitation computes it."""

    variant: ClassVar[str] = "squeeze_excitation"
    n: int = 1
    c: int = 1
    spatial: Shape = (1, 1)
    c_reduced: int = 1
    bias1: bool = True
    bias2: bool = True

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.spatial)), ("fc1_weight", (self.c_reduced, self.c))]
        if self.bias1:
            args.append(("fc1_bias", (self.c_reduced,)))
        args.append(("fc2_weight", (self.c, self.c_reduced)))
        if self.bias2:
            args.append(("fc2_bias", (self.c,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c, *self.spatial)

    @property
    def flops(self):
        hw = _prod(self.spatial)
        return self.n * (2 * self.c * hw + 4 * self.c * self.c_reduced)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{_j(self.spatial)}", f"r{self.c_reduced}"]


@dataclass(frozen=True)
class EffNetSpec(Spec):
    """EffNet's spatial core: depthwise 1x3 (pad 0,1), max-pool 2x1 (stride 2,1), depthwise 3x1
    (pad 1,0). Weights ``(C, 1, 1, 3)`` and ``(C, 1, 3, 1)``; optional biases and ReLU after each
    depthwise convolution."""

    variant: ClassVar[str] = "effnet_block"
    n: int = 1
    c: int = 1
    in_size: Shape = (2, 1)
    bias1: bool = False
    bias2: bool = False
    activation: str | None = None

    @property
    def out_size(self):
        return (self.in_size[0] // 2, self.in_size[1])

    @property
    def arg_shapes(self):
        args = [("input", (self.n, self.c, *self.in_size)),
                ("weight_1x3", (self.c, 1, 1, 3)), ("weight_3x1", (self.c, 1, 3, 1))]
        if self.bias1:
            args.append(("bias_1x3", (self.c,)))
        if self.bias2:
            args.append(("bias_3x1", (self.c,)))
        return args

    @property
    def out_shape(self):
        return (self.n, self.c, *self.out_size)

    @property
    def flops(self):
        return 2 * 3 * self.n * self.c * (_prod(self.in_size) + _prod(self.out_size))

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{_j(self.in_size)}", f"a{self.activation or 'none'}"]


@dataclass(frozen=True)
class ChannelShuffleSpec(Spec):
    """``torch.nn.functional.channel_shuffle``: ``(N, g*k, *S) -> view (N, g, k, *S) -> transpose``."""

    variant: ClassVar[str] = "channel_shuffle"
    n: int = 1
    c: int = 1
    spatial: Shape = ()
    groups: int = 1

    @property
    def arg_shapes(self):
        return [("input", (self.n, self.c, *self.spatial))]

    @property
    def out_shape(self):
        return (self.n, self.c, *self.spatial)

    @property
    def flops(self):
        return 0

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{_j(self.spatial) or '0'}", f"g{self.groups}"]


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
        if _prod(shape) > INDEX_MAX:
            raise ValueError(f"{where}: the {name} would have {_prod(shape):,} elements {shape}; tvmconv's kernels "
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
    classes = {c.variant: c for c in _all_subclasses(Spec) if isinstance(c.variant, str) and c.variant}
    for nd in (1, 2, 3):
        classes[f"conv{nd}d"] = classes[f"conv_transpose{nd}d"] = ConvSpec
    classes["shuffled_group_conv2d"] = ConvSpec
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


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def hash_once(cls):
    """After ``@dataclass(frozen=True)``: hash an object's fields once and keep the result (the ops
    look a kernel up by spec and target on every call). The kept hash is never pickled: string
    hashes differ between processes."""
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

    cls.__hash__ = __hash__
    cls.__getstate__ = __getstate__
    return cls


for _cls in (Spec, *_all_subclasses(Spec)):
    hash_once(_cls)
