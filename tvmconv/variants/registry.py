"""The registry of variants: what tests, benchmarks and the CLI enumerate.

Adding a variant is adding one ``Variant`` entry: its op, its independent reference, and
``make_case``, which turns one row of the shared shape table into concrete arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import functional as TF
from .. import reference as R


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


@dataclass(frozen=True)
class Variant:
    name: str
    op: Callable
    reference: Callable
    make_case: Callable[[ShapeRow, torch.Generator], Case]
    kind: str  # "compute", "memory" or "fused": which roofline applies
    note: str = ""

    def run(self, case: Case):
        return self.op(*case.args, **case.kwargs)

    def run_reference(self, case: Case):
        return self.reference(*case.args, **case.kwargs)


def _r(g: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _groups(row: ShapeRow) -> int:
    return row.groups if row.c % row.groups == 0 and row.oc % row.groups == 0 else 1


def _size(row: ShapeRow, nd: int) -> tuple[int, ...]:
    """The row's spatial size for an nd-dimensional op, with about as many output pixels."""
    h, w = row.size
    return {1: (h * w,), 2: (h, w), 3: (max(3, h // 7), (h + 1) // 2, (w + 1) // 2)}[nd]


def _conv_case(nd: int):
    def make(row: ShapeRow, g: torch.Generator) -> Case:
        gr = _groups(row)
        x = _r(g, row.n, row.c, *_size(row, nd))
        w = _r(g, row.oc, row.c // gr, *([row.k] * nd), scale=(row.c // gr * row.k ** nd) ** -0.5)
        return Case((x, w, _r(g, row.oc)),
                    dict(stride=row.stride, padding=row.padding, dilation=row.dilation, groups=gr))
    return make


def _conv_transpose_case(nd: int):
    def make(row: ShapeRow, g: torch.Generator) -> Case:
        gr = _groups(row)
        x = _r(g, row.n, row.c, *_size(row, nd))
        w = _r(g, row.c, row.oc // gr, *([row.k] * nd), scale=(row.c * row.k ** nd) ** -0.5)
        out_pad = row.stride - 1 if row.stride > 1 else 0
        return Case((x, w, _r(g, row.oc)),
                    dict(stride=row.stride, padding=row.padding, output_padding=out_pad, groups=gr,
                         dilation=row.dilation))
    return make


def _channel_shuffle_case(row: ShapeRow, g: torch.Generator) -> Case:
    groups = row.groups if row.groups > 1 and row.c % row.groups == 0 else (2 if row.c % 2 == 0 else 1)
    return Case((_r(g, row.n, row.c, *row.size), groups))


def _deform_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = _groups(row)
    og = 2 if row.c % 2 == 0 and row.c > 1 else 1
    x = _r(g, row.n, row.c, *row.size)
    w = _r(g, row.oc, row.c // gr, row.k, row.k, scale=(row.c // gr * row.k ** 2) ** -0.5)
    oh = (row.size[0] + 2 * row.padding - row.dilation * (row.k - 1) - 1) // row.stride + 1
    ow = (row.size[1] + 2 * row.padding - row.dilation * (row.k - 1) - 1) // row.stride + 1
    # offsets of a few pixels, so that samples fall between pixels and outside the image
    off = _r(g, row.n, 2 * og * row.k * row.k, oh, ow, scale=2.0)
    mask = torch.rand(row.n, og * row.k * row.k, oh, ow, generator=g)
    return Case((x, off, w, _r(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, mask=mask))


def _dwsep_case(row: ShapeRow, g: torch.Generator) -> Case:
    m = row.oc // row.c if row.oc % row.c == 0 and row.oc >= row.c else 1
    cm = row.c * m
    x = _r(g, row.n, row.c, *row.size)
    return Case((x, _r(g, cm, 1, row.k, row.k, scale=row.k ** -1.0), _r(g, row.oc, cm, 1, 1, scale=cm ** -0.5),
                 _r(g, cm), _r(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, mid_activation="relu6",
                     activation="relu"))


def _shuffled_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = _groups(row)
    sg = gr if gr > 1 else (2 if row.oc % 2 == 0 else 1)
    x = _r(g, row.n, row.c, *row.size)
    w = _r(g, row.oc, row.c // gr, row.k, row.k, scale=(row.c // gr * row.k ** 2) ** -0.5)
    return Case((x, w, _r(g, row.oc)), dict(stride=row.stride, padding=row.padding, dilation=row.dilation,
                                             groups=gr, shuffle_groups=sg))


def _spatial_sep_case(row: ShapeRow, g: torch.Generator) -> Case:
    gr = _groups(row)
    x = _r(g, row.n, row.c, *row.size)
    w1 = _r(g, row.oc, row.c // gr, row.k, 1, scale=(row.c // gr * row.k) ** -0.5)
    w2 = _r(g, row.oc, row.oc // gr, 1, row.k, scale=(row.oc // gr * row.k) ** -0.5)
    return Case((x, w1, w2, _r(g, row.oc), _r(g, row.oc)),
                dict(stride=row.stride, padding=row.padding, dilation=row.dilation, groups=gr))


def _flattened_case(row: ShapeRow, g: torch.Generator) -> Case:
    x = _r(g, row.n, row.c, *row.size)
    return Case((x, _r(g, row.oc, row.c, 1, 1, scale=row.c ** -0.5), _r(g, row.oc, 1, row.k, 1),
                 _r(g, row.oc, 1, 1, row.k), _r(g, row.oc)), dict(stride=row.stride, padding=row.padding))


def _channel_wise_case(row: ShapeRow, g: torch.Generator) -> Case:
    groups = row.groups if row.c % row.groups == 0 else 1
    cg = row.c // groups
    k = min(row.k, cg + 2 * ((row.k - 1) // 2)) if cg > 0 else 1
    k = max(1, min(k, cg + 2 * ((k - 1) // 2)))
    pad = (k - 1) // 2
    return Case((_r(g, row.n, row.c, *row.size), _r(g, groups, k), _r(g, groups)),
                dict(stride=min(row.stride, max(1, cg)), padding=pad, dilation=1))


def _se_case(row: ShapeRow, g: torch.Generator) -> Case:
    cr = max(1, row.c // 4)
    return Case((_r(g, row.n, row.c, *row.size), _r(g, cr, row.c, scale=row.c ** -0.5), _r(g, cr),
                 _r(g, row.c, cr, scale=cr ** -0.5), _r(g, row.c)))


def _effnet_case(row: ShapeRow, g: torch.Generator) -> Case:
    return Case((_r(g, row.n, row.c, *row.size), _r(g, row.c, 1, 1, 3), _r(g, row.c, 1, 3, 1), _r(g, row.c),
                 _r(g, row.c)), dict(activation="relu"))


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("conv1d", TF.conv1d, R.conv1d, _conv_case(1), "compute"),
    Variant("conv2d", TF.conv2d, R.conv2d, _conv_case(2), "compute",
            "standard, grouped, depthwise (groups=C) and dilated are conv2d with groups/dilation"),
    Variant("conv3d", TF.conv3d, R.conv3d, _conv_case(3), "compute"),
    Variant("conv_transpose1d", TF.conv_transpose1d, R.conv_transpose1d, _conv_transpose_case(1), "compute"),
    Variant("conv_transpose2d", TF.conv_transpose2d, R.conv_transpose2d, _conv_transpose_case(2), "compute"),
    Variant("conv_transpose3d", TF.conv_transpose3d, R.conv_transpose3d, _conv_transpose_case(3), "compute"),
    Variant("channel_shuffle", TF.channel_shuffle, R.channel_shuffle, _channel_shuffle_case, "memory"),
    Variant("deform_conv2d", TF.deform_conv2d, R.deform_conv2d, _deform_case, "compute",
            "reference is a NumPy transcription of torchvision's kernel"),
    Variant("depthwise_separable_conv2d", TF.depthwise_separable_conv2d, R.depthwise_separable_conv2d,
            _dwsep_case, "fused"),
    Variant("shuffled_group_conv2d", TF.shuffled_group_conv2d, R.shuffled_group_conv2d, _shuffled_case, "fused"),
    Variant("spatial_separable_conv2d", TF.spatial_separable_conv2d, R.spatial_separable_conv2d,
            _spatial_sep_case, "fused"),
    Variant("flattened_conv2d", TF.flattened_conv2d, R.flattened_conv2d, _flattened_case, "fused"),
    Variant("channel_wise_conv", TF.channel_wise_conv, R.channel_wise_conv, _channel_wise_case, "memory"),
    Variant("squeeze_excitation", TF.squeeze_excitation, R.squeeze_excitation, _se_case, "memory"),
    Variant("effnet_block", TF.effnet_block, R.effnet_block, _effnet_case, "fused"),
)}


def default_cases() -> list[tuple[Variant, Case]]:
    """Every variant on the main job's default shape (``DEFAULT_ROW``), with the inputs ``tvmconv
    bench`` times. deform_conv2d is left out: its vendor path, torchvision, is not a dependency (its
    reference is a NumPy transcription, no vendor)."""
    return [(v, v.make_case(DEFAULT_ROW, torch.Generator().manual_seed(0)))
            for name, v in VARIANTS.items() if name != "deform_conv2d"]
