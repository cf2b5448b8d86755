"""Adding a variant is adding one module: a toy variant (per-channel affine + ReLU), defined
entirely here and registered for the test only, gets a working functional op, custom op (fake
implementation included), reference check over the shared shape table and bench case.

The toy is registered inside ``registry.registered``, which unregisters it (and its functional
op and custom op) on the way out, so the other tests' loops over ``VARIANTS`` never see it.
torch.library has no public call that deletes a custom op: ``tvmconv.ops`` destroys the op's
private library, and registering the same name again overwrites it, so one fixed name serves
every test that registers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from tvm import te

import tvmconv
import tvmconv.functional as TF
from tvmconv import ops, reference
from tvmconv._args import Args, check_shape
from tvmconv.spec import Shape, Spec, joined, prod, spec_from_dict
from tvmconv.backends.target import resolve
from tvmconv.tools import bench as B
from tvmconv.variants import registry
from tvmconv.variants.compute import Plan, apply_activation, placeholders
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS, Case, Parsed, ShapeRow, rand

from . import test_variants  # its reference check, called here (importing the test itself would collect it)

TOY = "toy_affine_relu"


@dataclass(frozen=True)
class AffineReluSpec(Spec):
    variant: ClassVar[str] = TOY
    n: int = 1
    c: int = 1
    spatial: Shape = (1, 1)

    @property
    def arg_shapes(self):
        return [("input", (self.n, self.c, *self.spatial)), ("scale", (self.c,)), ("shift", (self.c,))]

    @property
    def out_shape(self):
        return (self.n, self.c, *self.spatial)

    @property
    def flops(self):
        return 2 * prod(self.out_shape)

    def _name_parts(self):
        return [f"n{self.n}", f"c{self.c}", f"i{joined(self.spatial)}"]


def compute(spec: AffineReluSpec, plan: Plan):
    ph = placeholders(spec)
    x, s, t = ph["input"], ph["scale"], ph["shift"]
    out = te.compute(spec.out_shape, lambda nn, c, *sp: apply_activation(x[(nn, c, *sp)] * s[c] + t[c], "relu",
                                                                          spec.dtype), name="out")
    return [x, s, t], out


def toy_reference(x, scale, shift):
    view = (1, -1) + (1,) * (x.dim() - 2)
    return torch.relu(x * scale.reshape(view) + shift.reshape(view))


def make_case(row: ShapeRow, g: torch.Generator) -> Case:
    return Case((rand(g, row.n, row.c, *row.size), rand(g, row.c), rand(g, row.c)))


def toy_affine_relu(input, scale, shift):
    """``relu(input * scale + shift)`` per channel: ``input (N, C, *spatial)``, ``scale (C,)``,
    ``shift (C,)`` -> ``(N, C, *spatial)``."""
    a = Args(TOY)
    x, s, t = a.tensors(input=(input, range(3, 6)), scale=(scale, 1), shift=(shift, 1))
    check_shape(s, (x.shape[1],), "scale", TOY)
    check_shape(t, (x.shape[1],), "shift", TOY)
    return Parsed(AffineReluSpec(dtype=a.dtype_name, n=x.shape[0], c=x.shape[1], spatial=tuple(x.shape[2:])),
                  a, [x, s, t])


TOY_VARIANT = registry.Variant(
    TOY, AffineReluSpec, toy_affine_relu, compute, toy_reference, make_case, kind="memory",
    schema="(Tensor input, Tensor scale, Tensor shift, str target) -> Tensor", vendor="x * scale + shift, relu",
    call_kwargs=lambda spec: {})


@pytest.fixture
def toy():
    with registry.registered(TOY_VARIANT):
        yield VARIANTS[TOY]
    assert TOY not in VARIANTS and TOY not in ops.OPS and not hasattr(TF, TOY)


def test_the_functional_op_matches_the_reference(toy):
    case = toy.make_case(SHAPE_TABLE[3], torch.Generator().manual_seed(0))
    got = TF.toy_affine_relu(*case.args)
    torch.testing.assert_close(got, toy_reference(*case.args))
    assert toy.op is TF.toy_affine_relu and tvmconv.functional.toy_affine_relu.__doc__ == toy_affine_relu.__doc__
    assert "target" in str(__import__("inspect").signature(TF.toy_affine_relu))
    got_np = TF.toy_affine_relu(*(a.numpy() for a in case.args))  # NumPy in, NumPy out
    torch.testing.assert_close(torch.from_numpy(got_np), toy_reference(*case.args))
    with pytest.raises(ValueError, match="argument 'scale' must have shape"):
        TF.toy_affine_relu(case.args[0], case.args[1][:1], case.args[2])


def test_the_spec_reads_back_and_the_reference_module_finds_it(toy):
    case = toy.make_case(SHAPE_TABLE[0], torch.Generator().manual_seed(0))
    spec = TF.spec_of(TF.toy_affine_relu, *case.args)
    assert spec_from_dict(spec.to_dict()) == spec and spec.name == f"{TOY}_f32_n1_c8_i9x11"
    assert reference.toy_affine_relu is toy_reference
    assert reference.vendor_for(spec)[0] == "x * scale + shift, relu"


def test_the_custom_op_runs_and_traces(toy):
    x, s, t = toy.make_case(SHAPE_TABLE[1], torch.Generator().manual_seed(1)).args
    got = torch.ops.tvmconv.toy_affine_relu(x, s, t, "")
    torch.testing.assert_close(got, toy_reference(x, s, t))
    torch.library.opcheck(torch.ops.tvmconv.toy_affine_relu.default, (x, s, t, ""))
    xg = x.clone().requires_grad_()
    ops.toy_affine_relu(xg, s, t).sum().backward()  # the backward differentiates the reference
    torch.testing.assert_close(xg.grad, torch.where(toy_reference(x, s, t) > 0, s.reshape(1, -1, 1, 1), 0.0)
                               .expand_as(x))


def test_the_reference_check_covers_it(toy):
    for row in SHAPE_TABLE:  # the loop tests/variants/test_variants.py runs for every variant
        test_variants.test_matches_reference(TOY, row)


def test_a_bench_case_runs_it(toy):
    case = next(c for c in B.variant_cases() if c.label == TOY)  # on the default row
    roof = B.measure_roofline(1, gemm_n=128, copy_mb=8)
    rec = B.run_case(case, resolve("x86-avx2"), roof, rounds=1)
    assert rec["max_rel_err"] < 1e-5 and rec["flops"] == 2 * 64 * 56 * 56 and rec["kind"] == "memory"


def test_its_family_label_and_cuda_template_come_from_its_entry():
    """The row a workload joins in results and the CUDA template that computes it are the variant's
    to say (``Variant.family``, ``Variant.templates``): bench, calibrate and the CUDA backend ask the
    registry, and no module outside the family names it."""
    import dataclasses

    from tvmconv.backends.cuda_templates import template_of
    from tvmconv.suites.cases import case_for, family_of

    x, s, t = TOY_VARIANT.make_case(SHAPE_TABLE[0], torch.Generator().manual_seed(0)).args
    with registry.registered(TOY_VARIANT):
        spec = TF.spec_of(TF.toy_affine_relu, x, s, t)
        assert family_of(spec) == (TOY, "memory")  # no label: the variant's name, its kind
        assert template_of(spec) is None  # no template: the backend's default schedule
    with registry.registered(dataclasses.replace(TOY_VARIANT, family="affine", templates={"cuda": "tiled"})):
        assert family_of(spec) == ("affine", "memory") and case_for(spec).family == "affine"
        assert template_of(spec) == "tiled"
    by_rank = dataclasses.replace(TOY_VARIANT, family=lambda sp: (f"affine{len(sp.spatial)}d", "fused"))
    with registry.registered(by_rank):
        assert family_of(spec) == ("affine2d", "fused")
