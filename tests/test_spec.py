"""Specs: normal form, stable keys that change with every field, and their cost model."""

import dataclasses

import pytest
import torch

from tvmconv.variants import ConvSpec, DepthwiseSeparableSpec, SqueezeExcitationSpec

BASE = ConvSpec(n=1, c_in=64, in_size=(56, 56), c_out=64, kernel=(3, 3), stride=(1, 1), padding=((1, 1), (1, 1)),
                dilation=(1, 1), groups=1, bias=True, output_padding=(0, 0))

CHANGES = {
    "dtype": "float64", "n": 2, "c_in": 32, "in_size": (56, 55), "c_out": 128, "kernel": (3, 1),
    "stride": (2, 2), "padding": ((1, 2), (1, 1)), "dilation": (1, 2), "groups": 2, "bias": False,
    "transposed": True, "output_padding": (1, 0), "shuffle": 2,
}


def test_every_field_is_covered_by_the_table():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(ConvSpec)}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_key_changes_when_one_field_changes(field):
    other = dataclasses.replace(BASE, **{field: CHANGES[field]})
    assert other.key != BASE.key
    assert other != BASE


def test_key_is_stable_and_order_independent():
    same = ConvSpec(**{f.name: getattr(BASE, f.name) for f in reversed(dataclasses.fields(ConvSpec))})
    assert same.key == BASE.key
    assert BASE.key == "%s" % BASE.key and len(BASE.key) == 32
    assert '"variant":"conv2d"' in BASE.to_json()


def test_key_differs_across_variants_with_equal_fields():
    a = SqueezeExcitationSpec(n=1, c=8, spatial=(4, 4), c_reduced=2)
    b = DepthwiseSeparableSpec(n=1, c_in=8, in_size=(4, 4))
    assert a.key != b.key


def test_readable_name():
    assert BASE.name == "conv2d_f32_n1_c64_i56x56_k64_r3x3_s1x1_p1x1_d1x1_g1_b"
    assert dataclasses.replace(BASE, padding=((0, 1), (1, 1))).name.count("p0-1x1") == 1


def test_shapes_and_flops_agree_with_torch():
    x = torch.empty(1, 64, 56, 56, device="meta")
    w = torch.empty(64, 64, 3, 3, device="meta")
    y = torch.nn.functional.conv2d(x, w, padding=1)
    assert BASE.out_shape == tuple(y.shape)
    assert BASE.flops == 2 * 64 * 56 * 56 * 64 * 9
    assert BASE.bytes_moved == 4 * (64 * 56 * 56 * 2 + 64 * 64 * 9 + 64)


def test_transposed_out_shape_agrees_with_torch():
    s = dataclasses.replace(BASE, transposed=True, stride=(2, 2), output_padding=(1, 1), c_out=32, groups=2)
    x = torch.empty(1, 64, 56, 56, device="meta")
    w = torch.empty(64, 16, 3, 3, device="meta")
    y = torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, groups=2)
    assert s.out_shape == tuple(y.shape)
    assert s.weight_shape == tuple(w.shape)
