"""What the default schedules compile to: for every registered variant, the x86-avx512 build's
vector arithmetic is on 512-bit zmm registers and the aarch64 build's on NEON v-registers as four
floats (``.4s``) where the plan vectorises (``ocvec``, ``wvec``, ``staged``), and the register
tile the plan asks for fits the target's register file (``facts.vector_registers``). A record tuned
on x86-avx2 and transferred to x86-avx512 compiles to zmm code too. Nothing runs: the assembly is
read (``inspect_source("s")`` of the LLVM module), so the aarch64 build needs no cross compiler.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import tvm

import tvmconv.functional as TF
from tvmconv import knobs
from tvmconv.backends.target import resolve
from tvmconv.runtime import build, dispatch
from tvmconv.spec import spec_from_dict
from tvmconv.variants import DepthwiseSeparableSpec
from tvmconv.variants.compute import Plan
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS

ROW = {r.label: r for r in SHAPE_TABLE}
# One small float32 spec a variant (32 -> 40 channels at 20x17: two vectors of output channels on
# both targets), and the depthwise row for the ``wvec`` plan, which no variant takes at "wide"
CASES = [(name, "wide") for name in VARIANTS] + [("conv2d", "depthwise")]

# Variants whose default plan is ``plain``: no register tile, so nothing to check of its width or
# registers. channel_shuffle only moves data (no arithmetic at all); the others are written as one
# unblocked compute, and what vectors they have come from LLVM's own vectoriser -- which on
# x86-64-v4 prefers 256-bit vectors (LLVM's prefer-256-bit tuning), so their FMAs are on ymm/xmm,
# not zmm. A variant that gains a vectorised plan must leave this set and meet the checks below.
PLAIN = {"channel_shuffle", "deform_conv2d", "flattened_conv2d", "channel_wise_conv", "squeeze_excitation",
         "effnet_block"}

X86_FMA = re.compile(r"^\s*vfmadd\w*ps\s+(.*)$", re.M)  # packed-single FMAs and their operands
ARM_FMLA = re.compile(r"^\s*fmla\s+(.*)$", re.M)


def _spec(name: str, label: str):
    v = VARIANTS[name]
    case = v.make_case(ROW[label], torch.Generator().manual_seed(0))
    spec = TF.spec_of(v.op, *case.args, **case.kwargs)
    assert spec.dtype == "float32"
    return spec


def _asm(mod, tgt) -> str:
    return tvm.compile(mod, target=tgt.tvm()).mod.inspect_source("s")


def _tiles(plan: Plan, V: int) -> list[int]:
    """Vectors each register tile of ``plan`` holds: ``owi`` pixels by ``vb/V`` vectors of output
    channels (``ocvec``), ``owi`` lanes of one row (``wvec``), each stage's (``staged``)."""
    if plan.kind == "ocvec":
        return [plan.owi * (plan.vb // V)]
    if plan.kind == "wvec":  # (a pointwise layer's: vb channels x rows x owi pixels)
        return [plan.vb * plan.rows * -(-plan.owi // V) if plan.vb > 1 else -(-plan.owi // V)]
    if plan.kind == "staged":
        return [t for _, st in plan.stages for t in _tiles(st, V)]
    return []


def _weight_vectors(plan: Plan, V: int) -> list[int]:
    """Weight vectors beside each register tile of ``plan`` (``_tiles``): a block's vectors of
    output channels (``ocvec``), else two (the budget the rule keeps)."""
    if plan.kind == "ocvec":
        return [plan.vb // V]
    if plan.kind == "staged":
        return [w for _, st in plan.stages for w in _weight_vectors(st, V)]
    if plan.kind == "wvec" and plan.vb > 1:  # (the input vectors a step loads, beside one broadcast)
        return [plan.rows * -(-plan.owi // V)]
    return [2] * len(_tiles(plan, V))


def _check_fits(be, plan: Plan, dtype: str) -> list[int]:
    """The plan's register tiles, each with the broadcast input and the weight vectors beside it
    (``blocking._tile_registers``), within the register file."""
    V = be.lanes(dtype)
    tiles = _tiles(plan, V)
    regs, widen = be.facts.vector_registers, be.registers_per_vector(dtype)
    for t, w in zip(tiles, _weight_vectors(plan, V)):
        assert t <= be.tile_registers(dtype, w)
        assert t * widen + (1 + w) * widen + regs // 32 <= regs, (plan, t, regs)
    return tiles


def _is_zmm(ops: str) -> bool:
    return "%zmm" in ops


def _is_neon_quad(ops: str) -> bool:
    return re.match(r"v\d+\.4s, v\d+\.4s, v\d+\.(4s|s\[\d\])", ops) is not None


# (profile, the fused multiply-adds in its assembly, whether one works on a full-width vector)
ISAS = {"x86-avx512": (X86_FMA, _is_zmm), "arm64-linux": (ARM_FMLA, _is_neon_quad)}


@pytest.mark.parametrize("profile", sorted(ISAS))
@pytest.mark.parametrize("name,label", CASES)
def test_builds_use_full_width_registers_and_the_tile_fits(name, label, profile):
    """x86-avx512: FMAs on 512-bit zmm registers; arm64-linux: NEON fmla on .4s vectors."""
    spec = _spec(name, label)
    tgt = resolve(profile)
    mod, plan = tgt.backend.default_module(spec)
    assert (plan.kind == "plain") == (name in PLAIN), plan
    tiles = _check_fits(tgt.backend, plan, spec.dtype)
    if name in PLAIN:
        return
    pattern, full_width = ISAS[profile]
    fmas = pattern.findall(_asm(mod, tgt))
    wide = [ops for ops in fmas if full_width(ops)]
    # every vector of the tile gets an FMA per step of the reduction, on a full-width register
    assert len(wide) >= max(tiles), (len(wide), tiles)
    if not isinstance(spec, DepthwiseSeparableSpec):  # (its depthwise stage is LLVM-vectorised, narrower)
        assert len(wide) == len(fmas), [f for f in fmas if not full_width(f)][:3]


def test_neon_tiles_use_the_32_registers():
    """The budget counts NEON's 32 registers: a tile of more than 13 vectors (the old 16-register
    budget) where the width allows it."""
    spec = _spec("conv1d", "wide")
    be = resolve("arm64-linux").backend
    plan = be.default_plan(spec)
    assert max(_tiles(plan, be.lanes("float32"))) > 13


def _shipped_avx2(kind: str):
    for path in sorted((knobs.shipped_dir() / "schedules" / "x86-avx2").glob("*.json")):
        d = json.loads(path.read_text())
        if d["plan"].get("kind") == kind and d["spec"].get("dtype", "float32") == "float32":
            return spec_from_dict(d["spec"])
    pytest.skip(f"no shipped x86-avx2 {kind} record")


@pytest.mark.parametrize("kind", ["ocvec", "wvec"])
def test_a_transferred_avx2_record_compiles_to_zmm_code(kind):
    spec = _shipped_avx2(kind)
    avx2, avx512 = resolve("x86-avx2"), resolve("x86-avx512")
    original, _, _ = build.choose(spec, avx2)
    record, source, build_target = build.choose(spec, avx512)
    assert source.startswith("transferred:") and source.endswith(" from x86-avx2"), source
    assert build.record_file(source) and build_target is avx512
    assert record.transferred_from == "x86-avx2" and record.dispatch is None
    # a build of its own: neither the original's dispatch choice nor its library
    assert dispatch.schedule_of(record) != dispatch.schedule_of(original)
    assert build._lib_key(spec, avx512, record) != build._lib_key(spec, avx2, original)
    assert build._lib_key(spec, avx512, record) != build._lib_key(spec, avx512, original)
    mod, plan, used = build.schedule(spec, build_target, record, source)
    assert used == source
    tiles = _check_fits(avx512.backend, plan, spec.dtype)
    if kind == "ocvec":
        assert plan.vb % 16 == 0
    fmas = X86_FMA.findall(_asm(mod, build_target))
    zmm = [ops for ops in fmas if "%zmm" in ops]
    assert zmm and len(zmm) >= max(tiles) and len(zmm) == len(fmas)
