"""The GPU plan (tuning/gpu_plan.py), rehearsed without a GPU: the stub timer stands in for the
measurement; everything else -- candidates, compilation on worker processes, CUDA binaries,
records, results, the log, the time budget -- runs as on the lent machine."""

import json
import shutil

import pytest
import torch

from tvmconv import functional as TF
from tvmconv.backends.target import resolve
from tvmconv.runtime import cache
from tvmconv.runtime.build import apply_record
from tvmconv.tuning import gpu_plan

from ..backends.test_cuda_templates import run_serially

HAS_NVCC = shutil.which("nvcc") is not None


def _specs():
    """One workload per template: a grouped 3x3 conv, a depthwise-separable block, an EffNet block."""
    return [TF.spec_of(TF.conv2d, torch.randn(1, 16, 12, 12), torch.randn(16, 8, 3, 3), torch.randn(16), 1, 1, 1, 2),
            TF.spec_of(TF.depthwise_separable_conv2d, torch.randn(1, 8, 10, 10), torch.randn(8, 1, 3, 3),
                       torch.randn(16, 8, 1, 1), padding=1, mid_activation="relu"),
            TF.spec_of(TF.effnet_block, torch.randn(1, 8, 8, 10), torch.randn(8, 1, 1, 3), torch.randn(8, 1, 3, 1))]


def test_rehearsal_writes_records_that_replay_and_compute_the_reference(tmp_path):
    target = resolve("cuda-sm90")
    specs = _specs()
    binaries = cache.user_root() / "machine" / "cuda-bin"
    before = len(list(binaries.glob("*.bin")))
    rows = gpu_plan.run(specs, target, tmp_path, timer=gpu_plan.StubTimer(target), workers=2, per_workload=2,
                        binaries=HAS_NVCC, progress=False)
    assert [r["workload"] for r in rows] == [s.name for s in specs]
    for spec, row in zip(specs, rows):
        assert row["stub"] and row["candidates"] == 3 and row["ran"] == 3  # the default and two settings
        assert row["speedup"] == pytest.approx(row["vendor_s"] / row["tvmconv_s"])
        rec = cache.read_record(tmp_path / "schedules" / "cuda-sm90" / f"{spec.name}-{cache.schedule_key(spec, target)[:16]}.json")
        assert rec is not None and rec.run_secs == row["tvmconv_s"] and rec.dispatch.choice == row["dispatch"]
        assert rec.source in ("gpu-plan", "default")
        run_serially(spec, apply_record(spec, rec))  # what the runtime will build from it
    cands = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert len(cands) == 9 and all(c["error"] is None and c["median_s"] > 0 for c in cands)
    assert len((tmp_path / "plan.jsonl").read_text().splitlines()) == 3
    summary = (tmp_path / "summary.md").read_text()
    assert "made up" in summary and "| depthwise_separable | 1 |" in summary
    assert "compiled 9 of 9 candidates" in (tmp_path / "plan.log").read_text()
    assert not list((tmp_path / "schedules").glob("*/*.lock"))
    if HAS_NVCC:  # one binary per distinct CUDA source, in the binary cache the runtime's loads read
        assert len(list(binaries.glob("*.bin"))) - before >= 7


def test_a_candidate_that_does_not_compile_is_reported_not_fatal(tmp_path):
    target = resolve("cuda-sm90")
    spec = _specs()[0]
    jobs = gpu_plan.jobs_for([spec], 1)
    jobs[1].knobs = {**jobs[1].knobs, "ci": 3, "tc": 1000}  # more threads than a block has
    built = gpu_plan.build(jobs[1], target.profile, str(tmp_path), binaries=False)
    assert built.library is None and built.error
    ok = gpu_plan.build(jobs[0], target.profile, str(tmp_path), binaries=False)
    row = gpu_plan.measure_workload(spec, [built, ok], target, tmp_path, gpu_plan.StubTimer(target))
    assert row["ran"] == 1 and row["schedule"] == "default"
    lines = [json.loads(x) for x in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert lines[0]["error"] == built.error and lines[1]["error"] is None


def test_the_budget_ends_the_plan_with_what_it_has(tmp_path):
    """With no time left to measure, the plan stops before the first workload and says so: nothing
    half-written, the summary still there."""
    target = resolve("cuda-sm90")
    rows = gpu_plan.run(_specs()[:1], target, tmp_path, timer=gpu_plan.StubTimer(target), workers=1,
                        per_workload=1, binaries=False, budget_s=4, progress=False)
    assert rows == []
    assert "budget spent" in (tmp_path / "plan.log").read_text()
    assert (tmp_path / "summary.md").is_file() and not (tmp_path / "plan.jsonl").exists()
