"""``tvmconv.compile`` (tvmconv/graph/compiler.py): a whole network as one compiled module, against the
same model in eager PyTorch; weights changed after compiling are never run stale."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree

import tvmconv
from tvmconv.graph import compiler, lowering
from tvmconv.models import shufflenet as sv2


class _Net(nn.Module):
    """What the deployed networks hold between their convolutions: BatchNorm, ReLU6, hardswish,
    SiLU, squeeze-excitation, a residual add, a channel split and concat, pooling, a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                                nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.unit = sv2.ShuffleV2Block(torch_make(), 16, 16, 1)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        x = self.stem(x)
        y = self.dw(x) + x
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.head(self.unit(y * s))


def torch_make():
    from tvmconv.models._common import _Make

    return _Make("torch")


def _randomised(m: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5, generator=g)
                bn.running_var.uniform_(0.5, 2, generator=g)
                bn.weight.uniform_(0.5, 1.5, generator=g)
                bn.bias.uniform_(-0.5, 0.5, generator=g)
    return m.eval()


def _close(got, want, rel: float = 1e-4):
    scale = max(1.0, float(want.abs().max()))
    torch.testing.assert_close(got, want, rtol=rel, atol=rel * scale)


@pytest.fixture(scope="module")
def compiled():
    torch.manual_seed(0)
    model = _randomised(_Net())
    x = torch.randn(2, 3, 32, 32)
    return model, x, tvmconv.compile(model, (x,))


def test_the_compiled_network_matches_eager(compiled):
    model, x, fast = compiled
    with torch.no_grad():
        _close(fast(x), model(x))
        x2 = torch.randn_like(x)
        _close(fast(x2), model(x2))
    rep = fast.tvmconv_report
    assert rep.kernels and sum(rep.scheduled.values()) > 0 and rep.compile_s > 0


def test_a_depthwise_and_a_pointwise_convolution_stay_two_kernels(compiled):
    model, x, fast = compiled
    ran = set(fast.tvmconv_report.kernels)
    rule = lowering.fuse_where_tuned()  # (none of these is tuned)
    assert ran == {s.name for s, _ in tvmconv.workloads(model, (x,), separable=rule)}  # what tune --model takes
    assert not any(k.startswith("depthwise_separable") for k in ran)
    assert any(s.variant == "depthwise_separable_conv2d" for s, _ in tvmconv.workloads(model, (x,)))  # convert's


def test_the_report_times_each_function_and_prints(compiled, capsys):
    _, x, fast = compiled
    rows = fast.profile(rounds=3)
    rep = fast.tvmconv_report
    assert rows is rep.functions and len(rows) >= len(set(rep.kernels))
    assert [r.seconds * r.calls for r in rows] == sorted((r.seconds * r.calls for r in rows), reverse=True)
    kernels = [r for r in rows if r.gflops is not None]
    assert {r.what.split(" + ")[0] for r in kernels} == set(rep.kernels)
    assert all(r.seconds > 0 and r.eager_seconds > 0 for r in kernels)
    assert sum(r.calls for r in rows) == sum(len(calls) for _, calls in rep.calls)
    # each kernel also timed as the forward calls it, each call recorded once (a reshape the VM
    # makes a view of its input is no call: None)
    assert all(r.in_forward_seconds > 0 for r in kernels)
    run, records = compiler.instrumented(rep.calls[0][0], (x,))
    run()
    called = [c["function"] for c in rep.calls[0][1] if c["spec"]]
    assert sorted(name for name, _ in records if name in called) == sorted(called)
    rep.print()
    out = capsys.readouterr().out
    assert "tvmconv.compile" in out and "compiled in" in out and rep.table().row_count == len(rows)


def test_the_report_puts_each_function_against_the_machines_roofline(compiled, monkeypatch):
    """A made-up machine (10 GFLOP/s, 1 GB/s) so that the roofline is known: a kernel's is the longer
    of its FLOPs at that peak and its tensors' bytes at that bandwidth; another function's, its bytes."""
    import math

    import numpy as np

    from tvmconv.backends.timing import Roofline
    from tvmconv.spec import spec_from_dict

    _, _, fast = compiled
    monkeypatch.setattr(compiler, "measure_roofline", lambda threads, target=None: Roofline(1e10, 1e9, threads))
    rows = {r.function: r for r in fast.profile(rounds=1)}
    for call in fast.tvmconv_report.calls[0][1]:
        nbytes = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in call["args"])
        flops = spec_from_dict(call["spec"]).flops if call["spec"] else 0
        row = rows[call["function"]]
        assert row.roofline_seconds == pytest.approx(max(flops / 1e10, nbytes / 1e9))
        assert row.of_roofline(row.seconds) == pytest.approx(row.roofline_seconds / row.seconds)
    weak = fast.tvmconv_report.weakest(share=0.0)
    assert weak.of_roofline(weak.in_forward_seconds or weak.seconds) == min(
        r.of_roofline(r.in_forward_seconds or r.seconds) for r in rows.values())


def test_a_network_compiles_and_matches_eager_at_batch_8():
    """A deployed network's structure (MobileNetV2: inverted residuals, ReLU6, the classifier) at
    batch 8; benchmarks/coverage.py checks all twelve at 224x224."""
    torch.manual_seed(0)
    model = _randomised(tvmconv.models.mobilenet_v2(width_mult=0.25, num_classes=10))
    x = torch.randn(8, 3, 32, 32)
    fast = tvmconv.compile(model, (x,))
    with torch.no_grad():
        _close(fast(x), model(x))


def test_changed_weights_are_never_run_stale(compiled):
    model, x, fast = compiled
    with torch.no_grad():
        model.stem[0].weight.mul_(1.5)  # an in-place update (an optimizer step is one)
        _close(fast(x), model(x))
        model.load_state_dict({k: v * 0.9 if v.is_floating_point() else v for k, v in model.state_dict().items()})
        _close(fast(x), model(x))
        conv = model.stem[0]
        conv.weight.data = conv.weight.data * 0.5  # a new tensor under the same parameter
        _close(fast(x), model(x))
        conv.weight = nn.Parameter(conv.weight * 2)  # a new parameter (the kept list is found again)
        _close(fast(x), model(x))


def test_unchanged_weights_are_not_compiled_again(compiled, monkeypatch):
    """A parameter set on another module (a model built beside it) finds the list again, but the
    source model's tensors are the same: no new compile."""
    model, x, fast = compiled
    fast(x)
    monkeypatch.setattr(fast, "refresh", lambda: pytest.fail("compiled again"))
    nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        _close(fast(x), model(x))


def test_another_input_shape_compiles_again(compiled):
    model, _, fast = compiled
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        _close(fast(x), model(x))


def test_wrong_arguments_are_named():
    m = nn.Sequential(nn.Conv2d(3, 4, 3)).train()
    with pytest.raises(ValueError, match="training mode"):
        tvmconv.compile(m, (torch.randn(1, 3, 8, 8),))
    with pytest.raises(TypeError, match="example_inputs"):
        tvmconv.compile(m.eval(), [1, 2])
    with pytest.raises(TypeError, match="model"):
        tvmconv.compile(lambda x: x, (torch.randn(1, 3, 8, 8),))


def test_the_same_model_compiled_again_is_loaded_from_the_cache(compiled):
    model, x, _ = compiled
    again = tvmconv.compile(model, (x,))
    assert list(again.tvmconv_report.steps_s) == ["load"] and again.tvmconv_report.kernels
    with torch.no_grad():
        _close(again(x), model(x))
    from tvmconv.graph.compiler import model_key
    from tvmconv.backends.target import resolve

    key = model_key(model, (x,), resolve(None))
    with torch.no_grad():
        model.head[0].bias.add_(1)
    assert model_key(model, (x,), resolve(None)) != key  # other weights: another module
    assert model_key(model, (torch.randn(1, 3, 32, 32),), resolve(None)) != model_key(model, (x,), resolve(None))


def test_a_change_to_any_kernel_or_pass_module_compiles_again(monkeypatch):
    """The cache keys cover every module a kernel or a compiled model is made from: each backend
    module (a target's facts, the launch threshold, a backend added later), the variants, and the
    graph passes; a change to any of them gives other keys, never a stale library."""
    from pathlib import Path

    from tvmconv.runtime import build

    package = Path(tvmconv.__file__).parent
    kernel = {p.relative_to(package).as_posix() for p in build.sources()}
    assert {p.relative_to(package).as_posix() for p in package.glob("backends/*.py")} <= kernel
    assert {"backends/target.py", "backends/launch.py", "variants/compute.py", "runtime/build.py"} <= kernel
    model = {p.relative_to(package).as_posix() for p in build.sources((*build.KERNEL_SOURCES,
                                                                         *build.COMPILER_SOURCES))}
    assert kernel | {f"graph/{m}.py" for m in ("passes", "converter", "dynamo", "lowering", "compiler")} | {"suites/workloads.py"} <= model
    for pattern in (*build.KERNEL_SOURCES, *build.COMPILER_SOURCES):  # (a module moved leaves no pattern behind)
        assert build.sources((pattern,)), f"{pattern} names no file"
    before = compiler._compiler_code()
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: read(p) + (b"#" if p.name == "lowering.py" else b""))
    compiler._compiler_code.cache_clear()
    try:
        assert compiler._compiler_code() != before
        assert build.code_version() == build._CODE_VERSION  # (the kernels' digest does not take the passes)
    finally:
        monkeypatch.undo()
        compiler._compiler_code.cache_clear()


class _Tails(nn.Module):
    """A convolution followed by each elementwise tail of the deployed networks, and one whose
    output the model also returns (so the op after it may not be fused into it)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.d, self.e = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)
        self.scale = nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)

    def forward(self, x):
        y = F.relu6(self.a(x))  # MobileNetV2
        z = F.relu(self.b(y) + x)  # ResNet's residual
        h = F.hardswish(self.c(z))  # MobileNetV3
        s = F.silu(self.d(h)) * self.scale  # EfficientNet, a per-channel scale
        e = self.e(s)
        return F.relu(e), e


def test_the_ops_after_a_convolution_are_computed_in_its_store():
    """ReLU6, add+ReLU, hardswish and SiLU times a per-channel scale each become their
    convolution's epilogue: the module holds no pass of its own for them; a convolution whose
    output is also returned keeps its ReLU apart. The results are eager's, NaN included."""
    from tvm import relax

    torch.manual_seed(0)
    model, x = _Tails().eval(), torch.randn(1, 8, 10, 10)
    mod, kernels = lowering.relax_module(lowering.exported(model, (x,)), "x86-avx2", schedule=False)
    calls = [b.value.args[0].name_hint for b in mod["main"].body.blocks[0].bindings
             if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"]
    assert sum(map(lowering.fused, calls)) == 4, calls
    assert len([c for c in calls if not c.startswith("tvmconv_k")]) == 1, calls  # e's ReLU alone
    fast = tvmconv.compile(model, (x,))
    assert fast.tvmconv_report.epilogues >= 1
    x[0, 1, 2, 3] = float("nan")
    with torch.no_grad():
        for got, want in zip(fast(x), model(x)):
            assert torch.equal(got.isnan(), want.isnan())
            _close(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_an_epilogue_after_a_partial_last_tile_is_vectorised_and_keeps_eagers_answer():
    """A depthwise convolution 28 wide (tiles of 16: the last holds 12) with BatchNorm and SiLU in
    its store: the store's loop is partitioned into whole vectors (the predicated loop ran as
    scalar code, 4x the convolution), and the results are eager's, NaN included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(240, 240, 5, padding=2, groups=240), nn.BatchNorm2d(240), nn.SiLU()).eval()
    nn.init.normal_(model[1].running_mean)
    x = torch.randn(1, 240, 28, 28)  # (an EfficientNet-B0 layer)
    mod, kernels = lowering.relax_module(lowering.exported(model, (x,)), "x86-avx2", schedule=False)
    (name,) = [n for n in kernels if lowering.fused(n)]
    vectorised = re.findall(r"T\.vectorized\(([^)]*)\)", mod[name].script())
    # (the store: elements 0-8 and 8-12, which every tile holds, and 12-16, which the first only)
    assert vectorised.count("8") == 3 and vectorised[-2:] == ["8, 12", "12, 16"], vectorised
    _nan_kept(model, x, (0, 3, 5, 27))


def _nan_kept(model: nn.Module, x: torch.Tensor, at: tuple) -> None:
    """``model`` compiled gives eager's answer on ``x``, and on ``x`` with a NaN ``at`` one element."""
    fast = tvmconv.compile(model, (x,))
    x[at] = float("nan")
    with torch.no_grad():
        got, want = fast(x), model(x)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    _close(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_an_epilogue_on_a_row_shorter_than_a_vector_is_one_vector():
    """A depthwise convolution 7 wide (EfficientNet-B0's last stage) with BatchNorm and SiLU in
    its store: the row of 7 is one vector (as a scalar loop its SiLU cost twice the convolution)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 64, 5, padding=2, groups=64), nn.BatchNorm2d(64), nn.SiLU()).eval()
    nn.init.normal_(model[1].running_mean)
    x = torch.randn(1, 64, 7, 7)
    mod, kernels = lowering.relax_module(lowering.exported(model, (x,)), "x86-avx2", schedule=False)
    (name,) = [n for n in kernels if lowering.fused(n)]
    assert re.findall(r"T\.vectorized\(([^)]*)\)", mod[name].script())[-1] == "7"
    _nan_kept(model, x, (0, 5, 6, 6))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
                                  nn.MaxPool2d(3, 1, 1, dilation=2)], ids=repr)
def test_max_pooling_keeps_nan_and_minus_infinity_as_eager(pool):
    """A NaN in a pooling window is the window's maximum, as torch gives it (TVM's legalization,
    a max, passed over it: 1.15 where eager gave NaN); -inf and padding are not."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 9)
    x[1, 1] = float("-inf")
    _nan_kept(nn.Sequential(pool).eval(), x, (1, 2, 4, 4))


def test_an_example_input_holding_nan_compiles_and_keeps_eagers_nan():
    """convert's check of the rewritten graph (run on the example) takes NaN where eager has it as
    the same answer: such an example was "a converted output that differs by nan"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()
    x = torch.randn(1, 3, 8, 8)
    x[0, 1, 2, 2] = float("nan")
    fast = tvmconv.compile(model, (x,))
    with torch.no_grad():
        got, want = fast(x), model(x)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    _close(got.nan_to_num(0.0), want.nan_to_num(0.0))


class _ScaledPointwise(nn.Module):
    """EfficientNet's squeeze-excitation (SiLU, sigmoid) rescaling the input of a pointwise convolution."""

    def __init__(self, c: int = 32):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, 8, 1), nn.Conv2d(8, c, 1)
        self.pw, self.bn = nn.Conv2d(c, 24, 1, bias=False), nn.BatchNorm2d(24)

    def forward(self, x):
        g = torch.sigmoid(self.fc2(F.silu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.bn(self.pw(g * x))


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("hw", [20, 16])  # on AVX2: its weight packed (ocvec), as it is (the pixel tile)
def test_a_rescale_before_a_pointwise_convolution_scales_its_weight_at_batch_1(n, hw):
    """``pw(x * s)`` as ``(pw.weight * s)(x)`` at batch 1: C_out x C products instead of C x H x W,
    eager's answer either way, NaN included."""
    from tvmconv.backends.target import resolve

    torch.manual_seed(0)
    model = _randomised(_ScaledPointwise())
    x = torch.randn(n, 32, hw, hw)
    mod, specs = lowering.relax_module(lowering.exported(model, (x,)), "x86-avx2", schedule=False)
    (pw,) = {s for s in specs.values() if s.c_in == 32 and s.c_out == 24}
    assert resolve("x86-avx2").backend.default_plan(pw).kind == ("ocvec" if hw == 20 else "wvec")
    shapes = [tuple(int(d) for d in b.var.ty.shape) for b in mod["main"].body.blocks[0].bindings
              if hasattr(b.var.ty, "shape") and b.var.ty.shape is not None]
    assert ((n, 32, hw, hw) in shapes) == (n > 1)  # (at batch 1 no product the size of the activation)
    _nan_kept(model, x, (n - 1, 3, 4, 5))


class _Odd(nn.Module):
    def forward(self, x):
        return torch.special.i0e(x)  # (no Relax converter for it)


class _WithOddOps(nn.Module):
    """Convolutions around an op TVM's importer does not take, one more in forward itself, and a
    nested output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Sequential(_Odd()),
                                  nn.Conv2d(8, 8, 1), nn.Hardswish())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.body(x)
        return {"y": self.head(torch.special.i0e(y)), "z": (y * 2, x + 1)}


def test_an_op_the_importer_does_not_take_is_named_with_its_module():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(_Odd())).eval()
    with pytest.raises(ValueError, match=r"does not take.*i0e.* in 1\.0"):
        tvmconv.compile(model, (torch.randn(1, 3, 8, 8),), fallback=False)


def test_ops_the_importer_does_not_take_run_on_pytorch_between_compiled_pieces():
    torch.manual_seed(0)
    model, x = _randomised(_WithOddOps()), torch.randn(2, 3, 10, 10)
    fast = tvmconv.compile(model, (x,))
    rep = fast.tvmconv_report
    assert rep.pieces == 3 and len(set(rep.kernels)) == 3, rep.summary()
    assert rep.fallback == ["special_i0e.default in body.3.0 (tests.graph.test_compiler._Odd)",
                            "special_i0e.default in the model's forward"], rep.fallback
    with torch.no_grad():
        for x2 in (x, torch.randn_like(x)):
            got, want = fast(x2), model(x2)
            assert set(got) == {"y", "z"} and len(got["z"]) == 2
            for g, w in zip(_pytree.tree_leaves(got), _pytree.tree_leaves(want)):
                _close(g, w)
        other = torch.randn(1, 3, 12, 12)  # another shape: split and compiled again for it
        for g, w in zip(_pytree.tree_leaves(fast(other)), _pytree.tree_leaves(model(other))):
            _close(g, w)
    again = tvmconv.compile(model, (x,)).tvmconv_report  # the pieces from the cache
    assert "load" in again.steps_s and "relax" not in again.steps_s and again.pieces == 3


def test_a_model_torch_export_cannot_capture_runs_as_convert_makes_it():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y.relu() if y.sum() > 0 else -y  # (data-dependent: torch.export refuses it)

    torch.manual_seed(0)
    model, x = Branchy().eval(), torch.randn(1, 3, 8, 8)
    fast = tvmconv.compile(model, (x,))
    assert fast.tvmconv_report.pieces == 0 and fast.tvmconv_report.fallback[0].startswith("the whole model")
    with torch.no_grad():
        for x2 in (x, -x):
            _close(fast(x2), model(x2))
    with pytest.raises(Exception):  # noqa: B017 - torch.export's own error
        tvmconv.compile(model, (x,), fallback=False)
