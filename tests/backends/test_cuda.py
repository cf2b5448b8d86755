"""CUDA: the ops on CUDA tensors, torch's current stream, tuning, and the default CUDA schedule.

Tests marked ``gpu`` need a CUDA GPU (the lent GPU machine: ``TVMCONV_TEST_DEVICE=cuda pytest
tests/test_cuda.py tests/test_variants.py``); the others run everywhere, CI included. CI also
compiles every variant to CUDA source and cubin (tests/test_export.py).
"""

import json

import pytest
import torch
import torch.nn.functional as F

import tvmconv
from tvmconv import functional as TF
from tvmconv.runtime import build
from tvmconv.backends.target import resolve

from ..conftest import assert_close

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the lent GPU machine)")


def test_tuning_a_cuda_target_without_a_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match=r"'cuda-sm90' is a CUDA target and this machine has no CUDA GPU"):
        tvmconv.tune([TF.spec_of(TF.conv2d, torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3))],
                     target="cuda-sm90", trials=1, progress=False)


@gpu
def test_ops_run_on_the_tensors_gpu_and_match_cudnn():
    x = torch.randn(2, 16, 20, 20, device="cuda")
    w = torch.randn(32, 4, 3, 3, device="cuda")
    b = torch.randn(32, device="cuda")
    y = TF.conv2d(x, w, b, stride=2, padding=1, groups=4)
    assert y.device == x.device
    with torch.backends.cudnn.flags(allow_tf32=False):
        want = F.conv2d(x, w, b, stride=2, padding=1, groups=4)
    assert_close(y, want, atol=1e-4, rtol=1e-4)
    assert build.load(TF.spec_of(TF.conv2d, x, w, b, 2, 1, 1, 4), resolve("cuda-sm90")).target.backend.kind == "cuda"


@gpu
def test_kernels_run_on_torchs_current_stream():
    """The op is queued on the caller's stream: its input, written last by a long chain of work on
    a side stream, is read only after that chain (on another stream it would read zeros)."""
    x = torch.randn(1, 32, 56, 56, device="cuda")
    w = torch.randn(32, 1, 3, 3, device="cuda")
    TF.conv2d(x, w, padding=1, groups=32)  # compile outside the timed part
    src = torch.zeros_like(x)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(30):  # tens of milliseconds of work ahead of the copy
            a = torch.tanh(a @ a)
        src.copy_(x + 0 * a[0, 0])
        y = TF.conv2d(src, w, padding=1, groups=32)
    side.synchronize()
    assert_close(y, F.conv2d(x, w, padding=1, groups=32), atol=1e-4, rtol=1e-4)


@gpu
def test_custom_op_and_module_on_the_gpu():
    x = torch.randn(1, 8, 12, 12, device="cuda")
    w = torch.randn(8, 8, 3, 3, device="cuda")
    y = torch.ops.tvmconv.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1, "")
    assert_close(y, F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    m = tvmconv.nn.Conv2d(8, 8, 3, padding=1).cuda().eval()
    ref = torch.nn.Conv2d(8, 8, 3, padding=1).cuda().eval()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert_close(m(x), ref(x), atol=1e-4, rtol=1e-4)


@gpu
def test_mixed_devices_are_refused():
    x = torch.randn(1, 4, 6, 6, device="cuda")
    with pytest.raises(ValueError, match=r"argument 'weight' is on device 'cpu' but input is on 'cuda:0'"):
        TF.conv2d(x, torch.randn(4, 4, 3, 3))
    with pytest.raises(ValueError, match=r"the tensors are on 'cuda:0' but target 'x86-avx2' is a CPU target"):
        TF.conv2d(x, torch.randn(4, 4, 3, 3, device="cuda"), target="x86-avx2")


@gpu
def test_tune_a_cuda_workload(tmp_path):
    spec = TF.spec_of(TF.conv2d, torch.randn(1, 8, 10, 10), torch.randn(8, 1, 3, 3), None, 1, 1, 1, 8)
    (res,) = tvmconv.tune([spec], target="cuda-sm90", trials=8, cache_dir=tmp_path, progress=False,
                          num_trials_per_iter=8)
    assert res.trials_total >= 2 and res.best_s is not None and res.record_path
    rec = json.loads(open(res.record_path).read())
    assert rec["profile"] == "cuda-sm90" and rec["target"]["kind"] == "cuda"


DIRECT_ROWS = ("base", "stride2", "k1x1", "depthwise_m2_s2", "odd_sizes", "rgb_out_k4s2")


@pytest.mark.parametrize("variant", sorted(__import__("tvmconv.variants.registry", fromlist=["VARIANTS"]).VARIANTS))
def test_direct_cuda_schedule_computes_the_reference(variant):
    """cuda_direct_schedule (the CUDA default where no dlight rule applies or compiles) on the shape
    table's rows that broke on the H100 (unit reductions, strided multiplier-2 depthwise, no
    padding), its thread loops run serially (``serial``) on the CPU, against the PyTorch reference."""
    from tvmconv.backends.cuda_schedules import cuda_direct_schedule
    from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS

    from .test_cuda_templates import run_serially

    v = VARIANTS[variant]
    for row in (r for r in SHAPE_TABLE if r.label in DIRECT_ROWS):
        case = v.make_case(row, torch.Generator().manual_seed(3))
        spec = TF.spec_of(v.op, *case.args, **case.kwargs)
        run_serially(spec, cuda_direct_schedule(spec).mod)
