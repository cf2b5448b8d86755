"""The CUDA schedule templates (backends/cuda_templates.py), checked without a GPU: each template,
its thread loops run one after another on the CPU (``cuda_schedules.serial``), computes what
PyTorch computes for every variant it takes on the shared shape table; every suite workload's
settings fit a CUDA block and compile to CUDA; a template's trace replays as a record does."""

import re

import pytest
import torch
import tvm

from tvmconv import functional as TF
from tvmconv import reference as R
from tvmconv.backends import cuda_templates as CT
from tvmconv.backends.cuda_schedules import serial
from tvmconv.backends.target import resolve
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS

from ..conftest import assert_close

TEMPLATED = sorted(name for name, v in VARIANTS.items()
                   if CT.template_of(TF.spec_of(v.op, *v.make_case(SHAPE_TABLE[0], torch.Generator()).args,
                                                **v.make_case(SHAPE_TABLE[0], torch.Generator()).kwargs)))


def run_serially(spec, mod: tvm.IRModule) -> None:
    """Run scheduled CUDA module ``mod`` of ``spec`` on the CPU, thread loops serial, and compare
    it with the PyTorch reference."""
    full, views = R.random_args(spec, torch.Generator().manual_seed(4))
    cpu = serial(mod)
    out = torch.full([int(d) for d in cpu["main"].params[-1].shape], float("nan"))
    tvm.compile(cpu, target={"kind": "llvm"})["main"](*[t.contiguous() for t in views], out)
    want = torch.as_tensor(R.reference_for(spec)[1](*full))
    assert_close(out.reshape(want.shape), want, atol=2e-4, rtol=2e-4)


def test_the_templates_cover_the_families_the_issue_names():
    assert {"conv1d", "conv2d", "conv3d", "conv_transpose2d", "shuffled_group_conv2d",
            "depthwise_separable_conv2d", "effnet_block"} <= set(TEMPLATED)


@pytest.mark.parametrize("variant", TEMPLATED)
def test_template_computes_the_reference(variant):
    """Every shape-table row, the rough model's first and last setting in turn (so both ends of the
    knob ranges run: register tiles, K tiles, tiles larger than the output, depthwise's registers)."""
    v = VARIANTS[variant]
    for i, row in enumerate(SHAPE_TABLE):
        case = v.make_case(row, torch.Generator().manual_seed(3))
        spec = TF.spec_of(v.op, *case.args, **case.kwargs)
        cands = CT.candidates(spec)
        assert cands, row.label
        knobs = cands[0] if i % 2 == 0 else cands[-1]
        run_serially(spec, CT.schedule(spec, knobs).mod)


def test_serial_needs_thread_loops():
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3))
    from tvmconv.variants.compute import prim_func

    with pytest.raises(ValueError, match="no thread loops"):
        serial(tvm.IRModule({"main": prim_func(spec)}))


def test_suite_settings_fit_a_block_and_compile_to_cuda():
    """For every suite workload: settings that fit a block (threads, registers, shared memory as
    the model counts it); the best-ranked one compiles to CUDA within a block's threads and shared memory
    (what TVM really allocates, which the model only estimates; the GPU plan checks every one)."""
    from tvmconv.suites.workloads import workloads
    from tvmconv.tuning.gpu_plan import over_limits

    target = resolve("cuda-sm90").tvm()
    for spec, _ in workloads("all"):
        cands = CT.candidates(spec)
        assert 1 <= len(cands) <= 16, spec.name
        assert len(set(cands)) == len(cands)
        for kn in cands:
            assert kn.threads <= CT.MAX_THREADS and kn.ci * kn.yi * kn.xi <= CT.MAX_REGISTER_TILE
            assert sum(CT._tile_inputs(spec, kn)) * 4 <= CT.SHARED_BYTES
        src = tvm.compile(CT.schedule(spec, cands[0]).mod, target=target).mod.imports[0].inspect_source()
        assert "__global__" in src and over_limits(src) is None, spec.name


def test_grouped_tiles_stay_in_a_group():
    """A channel tile that could straddle two groups makes TVM stage every channel it might touch
    (it measured 24,192 floats of shared memory for a 128-float tile): grouped settings divide the
    group's channels."""
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 768, 14, 14), torch.randn(192, 96, 1, 1), None, 1, 0, 1, 8)
    for kn in CT.candidates(spec):
        assert (192 // 8) % (kn.tc * kn.ci) == 0


def test_a_template_trace_replays_as_a_record():
    """The plan stores a template's trace in a schedule record; the runtime replays it onto the
    compute the record names (``build.apply_record``) and gets the same module."""
    from tvmconv.backends.llvm_schedules import trace_json
    from tvmconv.runtime.build import apply_record
    from tvmconv.runtime.cache import new_record
    from tvmconv.variants.compute import plan_to_dict

    x, w, b = torch.randn(1, 24, 10, 10), torch.randn(48, 8, 1, 1), torch.randn(48)
    spec = TF.spec_of(TF.shuffled_group_conv2d, x, w, b, groups=3)  # (its own compute: ``plan``)
    knobs = CT.candidates(spec)[0]
    sch = CT.schedule(spec, knobs)
    rec = new_record(spec, resolve("cuda-sm90"), plan=plan_to_dict(CT.plan(spec)), trace=trace_json(sch),
                     run_secs=1e-5)
    replayed = apply_record(spec, rec)
    tvm.ir.assert_structural_equal(replayed, sch.mod)
    run_serially(spec, replayed)


def test_knobs_round_trip_and_name_themselves():
    kn = CT.Knobs("tiled", tc=8, ci=2, ty=4, yi=1, tx=8, xi=2, bk=16, weights="local")
    assert CT.Knobs.from_dict(kn.to_dict()) == kn
    assert re.fullmatch(r"tiled c8x2 y4x1 x8x2 k16 u64 w-local", kn.label())


def test_tuning_a_cuda_target_measures_the_templates_first():
    """``tvmconv tune --target cuda-sm90`` (on a GPU) starts with its plan phase: the default
    schedule and the template's best-ranked settings, before MetaSchedule's search."""
    from tvmconv.tuning.space import plan_variants, prepare

    target = resolve("cuda-sm90")
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 32, 28, 28), torch.randn(32, 1, 3, 3), None, 1, 1, 1, 32)
    (w,) = prepare([(spec, 1)], target)
    variants = plan_variants(w, target)
    assert len(variants) == 6
    assert all("threadIdx.x" in sch.mod.script() and "shared" in sch.mod.script() for _, _, sch in variants)
