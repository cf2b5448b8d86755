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


@pytest.fixture
def counted_cuda_hook(monkeypatch):
    """TVM's CUDA compile hook, counted (``calls``), with the binary cache installed in front of
    it for the test; TVM's own hook back afterwards."""
    import shutil

    import tvm_ffi

    from tvmconv.backends import cuda

    if shutil.which("nvcc") is None:
        pytest.skip("needs nvcc")
    tvm_compile = cuda._tvm_hook()
    calls = []

    def counted(code):
        calls.append(len(code))
        return tvm_compile(code)

    monkeypatch.setattr(cuda, "_tvm_compile", counted)
    cuda.use_binary_cache.cache_clear()
    cuda.use_binary_cache()
    yield calls
    cuda.use_binary_cache.cache_clear()
    tvm_ffi.register_global_func("tvm_callback_cuda_compile", tvm_compile, override=True)


def _cuda_source() -> str:
    import tvm

    from tvmconv.backends.cuda_schedules import cuda_direct_schedule

    spec = TF.spec_of(TF.conv2d, torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3))
    return tvm.compile(cuda_direct_schedule(spec).mod, target=resolve("cuda-sm90").tvm()).mod.imports[0].inspect_source()


def test_cuda_binaries_are_compiled_once_and_kept_in_the_cache(counted_cuda_hook):
    """TVM 0.27 compiles a CUDA library's source every time the library is loaded, through its
    ``tvm_callback_cuda_compile`` hook: the binary cache answers it from the user cache after the
    first time, and compiles over a file left there under a binary's name."""
    import tvm
    import tvm_ffi

    from tvmconv.backends import cuda
    from tvmconv.runtime import cache

    hook = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
    src = _cuda_source()
    with tvm.target.Target(resolve("cuda-sm90").tvm()):  # (on a GPU machine: the GPU's arch)
        first = bytes(hook(src))
        assert bytes(hook(src)) == first and len(counted_cuda_hook) == 1
        path = cuda.binary_path(src)
        assert path.parent == cache.user_root() / "machine" / "cuda-bin" and path.read_bytes() == first
        path.write_bytes(b"not a binary")
        assert bytes(hook(src)) == first and len(counted_cuda_hook) == 2
        assert path.read_bytes() == first


def test_the_binary_cache_never_fails_a_load(counted_cuda_hook):
    """Where the cache cannot answer (no arch to key on: no GPU and no target here), TVM's own
    compile runs, as it would without the cache, and says what it says."""
    import tvm_ffi

    with pytest.raises(Exception, match="No CUDA architecture"):
        tvm_ffi.get_global_func("tvm_callback_cuda_compile")(_cuda_source())
    assert len(counted_cuda_hook) == 1
