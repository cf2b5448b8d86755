"""Graph passes (tvmconv/graph/passes.py) and what convert builds on them: BatchNorm folding against the
eval-mode model, patterns across nesting and functional calls, per-machine keep, the one list of
workloads."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tvmconv
from tvmconv.graph import converter
from tvmconv.graph import passes as graph
from tvmconv import functional as TF
from tvmconv.backends.llvm import LLVMBackend
from tvmconv.backends.target import resolve
from tvmconv.runtime import build, call, dispatch


def _bn(c: int, g: torch.Generator, cls=nn.BatchNorm2d) -> nn.Module:
    bn = cls(c).eval()
    with torch.no_grad():  # statistics and affine terms far from the identity
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.25, 4, generator=g)
        bn.weight.uniform_(0.5, 2, generator=g)
        bn.bias.uniform_(-1, 1, generator=g)
    return bn


@pytest.mark.parametrize("conv, bn, shape", [
    (lambda: nn.Conv1d(4, 6, 3, padding=1), nn.BatchNorm1d, (2, 4, 9)),
    (lambda: nn.Conv2d(4, 6, 3, stride=2, bias=False), nn.BatchNorm2d, (2, 4, 9, 9)),
    (lambda: nn.Conv2d(4, 8, 3, groups=4, padding=1), nn.BatchNorm2d, (1, 4, 7, 7)),
    (lambda: nn.Conv3d(2, 4, 3), nn.BatchNorm3d, (1, 2, 5, 5, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 4, 2, 1), nn.BatchNorm2d, (1, 4, 5, 5)),
])
def test_batchnorm_folds_into_the_conv_before_it(rng, conv, bn, shape):
    model = nn.Sequential(conv(), None).eval()
    model[1] = _bn(model[0].weight.shape[1 if isinstance(model[0], nn.ConvTranspose2d) else 0], rng, bn)
    x = torch.randn(shape, generator=rng)
    gm = graph.trace(model)
    assert [f.bn for f in graph.fold_batchnorm(gm)] == ["1"]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)
    assert isinstance(model[1], bn)  # the model's own modules are unchanged


def test_batchnorm_stays_where_folding_would_change_the_model(rng):
    class Shared(nn.Module):  # the conv's output also feeds the residual: the BN cannot go into it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), _bn(4, rng)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    model = Shared().eval()
    assert graph.fold_batchnorm(graph.trace(model)) == []
    model.train()  # training mode: batch statistics, nothing to fold
    model = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)).train()
    assert graph.fold_batchnorm(graph.trace(model)) == []


class _Functional(nn.Module):
    """The patterns spread over nested modules and functional calls, with BatchNorm and a residual."""

    def __init__(self, g):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.inner = nn.ModuleDict({"dw": nn.Conv2d(16, 16, 3, padding=1, groups=16), "bn": _bn(16, g)})
        self.pw = nn.Sequential(nn.Conv2d(16, 24, 1), _bn(24, g))
        self.group = nn.Conv2d(24, 24, 1, groups=3)
        self.a = nn.Conv2d(24, 24, (1, 3), padding=(0, 1), groups=24)
        self.b = nn.Conv2d(24, 24, (3, 1), padding=(1, 0), groups=24)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu6(self.inner["bn"](self.inner["dw"](x)))
        y = torch.relu(self.pw(y))
        y = torch.channel_shuffle(F.relu(self.group(y)), 3) + y  # the shuffle's input has one user
        y = F.max_pool2d(self.a(y).relu(), (2, 1))
        return F.relu(self.b(y))


def test_patterns_match_across_nesting_and_functional_calls(rng):
    model = _Functional(rng).eval()
    gm = graph.trace(model)
    assert [f.bn for f in graph.fold_batchnorm(gm)] == ["inner.bn", "pw.1"]
    kinds = [(rw.kind, rw.covered) for rw in graph.rewrites(gm)]
    assert kinds == [("Conv2d", ["stem"]), ("DepthwiseSeparableConv2d", ["inner.dw", "pw.0"]),
                     ("ShuffledGroupConv2d", ["group"]), ("EffNetCore", ["a", "b"])]
    x = torch.randn(1, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    assert [r.kind for r in fast.tvmconv_report.layers] == [k for k, _ in kinds]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # filter_fn leaves a module, and any pattern holding it, alone
    kept = graph.rewrites(graph.trace(model), lambda name, m: name != "pw.0")
    assert "DepthwiseSeparableConv2d" not in [rw.kind for rw in kept] and "inner.dw" in [rw.name for rw in kept]
    # separable=False (tvmconv.compile's graph): the depthwise and pointwise convolutions stay apart
    apart = [(rw.kind, rw.covered) for rw in graph.rewrites(graph.trace(model), separable=False)]
    assert apart == [kinds[0], ("Conv2d", ["inner.dw"]), ("Conv2d", ["pw.0"]), *kinds[2:]]


class _SE(nn.Module):
    """torchvision.ops.SqueezeExcitation's forward, as modules."""

    def __init__(self, c: int, s: int):
        super().__init__()
        self.avgpool, self.fc1, self.fc2 = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Sigmoid()

    def forward(self, x):
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class _SEFunctional(nn.Module):
    def __init__(self, c: int, s: int):
        super().__init__()
        self.conv, self.fc1, self.fc2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, s, 1), nn.Conv2d(s, c, 1)

    def forward(self, x):
        x = self.conv(x)
        y = x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        z = F.adaptive_avg_pool2d(y, 1)  # a pool whose product is not with its input: no SE
        return y * torch.sigmoid(z)


@pytest.mark.parametrize("model, c_in", [(lambda: nn.Sequential(nn.Conv2d(3, 16, 1), _SE(16, 4)), 3),
                                          (lambda: _SEFunctional(16, 8), 16)])
def test_squeeze_excitation_blocks_are_matched(rng, model, c_in):
    model = model().eval()
    x = torch.randn(2, c_in, 6, 5, generator=rng)
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    assert [r.kind for r in fast.tvmconv_report.layers] == ["Conv2d", "SqueezeExcitation"]
    assert any(isinstance(m, tvmconv.nn.SqueezeExcitation) for m in fast.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_value_with_two_users_is_not_fused(rng):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = F.relu(self.dw(x))
            return self.pw(y) + y  # y feeds the add too: the fused kernel would not produce it

    assert [rw.kind for rw in graph.rewrites(graph.trace(Branchy()))] == ["Conv2d", "Conv2d"]


def test_convert_keeps_pytorch_where_it_is_faster_here(rng, monkeypatch, tmp_path):
    """Each replacement is timed against the nodes it replaces; where PyTorch wins on this machine
    the layer stays PyTorch and the choice is stored with the machine's dispatch choices."""
    monkeypatch.setenv("TVMCONV_MACHINE", "convert test machine")
    monkeypatch.setattr(build, "_cache", {})

    def time(_backend, fns, *, rounds=7, threads=None):  # PyTorch (the second) always twice as fast
        return [[2e-3] * rounds, [1e-3] * rounds]

    monkeypatch.setattr(LLVMBackend, "time", time)
    model = _Functional(rng).eval()
    x = torch.randn(1, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,))
    rep = fast.tvmconv_report
    assert not rep.converted and len(rep.kept) == 4
    assert all("PyTorch is faster" in r.reason and r.speedup == pytest.approx(0.5) for r in rep.kept)
    assert not any(isinstance(m, tvmconv.nn.TvmconvModule) for m in fast.modules())
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["speedup"] == pytest.approx(0.5) and len(d["layers"]) == 4 and d["folded"] == ["inner.bn", "pw.1"]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    # the choices were stored: a second conversion reads them instead of timing again
    monkeypatch.setattr(build, "_cache", {})
    fast = tvmconv.convert(model, (x,), time_layers=False)
    assert len(fast.tvmconv_report.kept) == 4 and fast.tvmconv_report.kept[0].tvmconv_s is None
    # a stored choice the layer's own timing in the model contradicts beyond the noise: that decides
    rounds = []

    def faster(_backend, fns, **kw):  # now the kernel (the first) twice as fast
        rounds.append(kw.get("rounds", 7))
        return [[1e-3] * rounds[-1], [2e-3] * rounds[-1]]

    monkeypatch.setattr(LLVMBackend, "time", faster)
    monkeypatch.setattr(build, "_cache", {})
    fast = tvmconv.convert(model, (x,))
    assert len(fast.tvmconv_report.converted) == 4 and rounds.count(dispatch.CALLS) == 4  # (7 of 7 rounds)
    assert all(r.speedup == pytest.approx(2.0) for r in fast.tvmconv_report.converted)


class _Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


@pytest.mark.parametrize("op_choice,in_model", [("vendor", "tvmconv"), ("tvmconv", "vendor")])
def test_a_choice_made_in_the_model_wins_there_and_leaves_the_op_alone(rng, monkeypatch, op_choice, in_model):
    """Issue 37: convert's timing of a layer on its input in the model is stored as that model's
    choice (``<model>/<workload>``); for that model it wins over the op-level choice, which stays."""
    monkeypatch.setenv("TVMCONV_MACHINE", f"in-model test machine {op_choice}")
    monkeypatch.setattr(build, "_cache", {})
    model, x = _Stem().eval(), torch.randn(1, 3, 8, 8, generator=rng)
    kern = build.load(TF.spec_of(TF.conv2d, x, model.conv.weight, model.conv.bias, padding=1), resolve(None))
    fast_op, slow_op = ([1e-3] * 7, [2e-3] * 7) if op_choice == "tvmconv" else ([2e-3] * 7, [1e-3] * 7)
    dispatch.settle(kern, fast_op, slow_op, "calibrate")  # the op alone, decided
    assert kern.dispatch == op_choice
    timed = []

    def time(_backend, fns, *, rounds=7, threads=None):  # in the model: the other way round
        timed.append(rounds)
        return [[1e-3] * rounds, [2e-3] * rounds] if in_model == "tvmconv" else [[2e-3] * rounds, [1e-3] * rounds]

    monkeypatch.setattr(LLVMBackend, "time", time)
    fast = tvmconv.convert(model, (x,), time_layers=False)
    assert timed  # (timed although the op had its choice: none was made in this model yet)
    converted = [m for m in fast.modules() if isinstance(m, tvmconv.nn.TvmconvModule)]
    assert len(converted) == (in_model == "tvmconv")
    assert kern.dispatch == op_choice  # the op-level choice stays
    name = converter.model_name(model, (x,))
    assert name == "_Stem(1x3x8x8)" and dispatch.model_choice(name, kern)["choice"] == in_model
    vendor_calls = []

    def vendor(spec):  # the vendor path, counted
        return lambda *t: vendor_calls.append(spec) or F.conv2d(t[0], t[1], t[2], padding=1)

    monkeypatch.setattr(call, "_vendor", vendor)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
        assert not vendor_calls  # the model's choice: its kernel, or PyTorch's own layer
        TF.conv2d(x, model.conv.weight, model.conv.bias, padding=1)
    assert len(vendor_calls) == (op_choice == "vendor")  # the op alone: its own choice
    # a second conversion (a new process: the file) reads the model's choice without timing
    dispatch.forget()
    monkeypatch.setattr(build, "_cache", {})
    timed.clear()
    again = tvmconv.convert(model, (x,), time_layers=False)
    assert not timed and len(again.tvmconv_report.converted) == (in_model == "tvmconv")


def test_workloads_are_the_kernels_convert_runs(rng, tmp_path):
    model = tvmconv.models.mobilenet_v2(width_mult=0.25, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32, generator=rng)
    found = tvmconv.workloads(model, (x,))
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    with torch.no_grad(), TF.no_dispatch(), TF.capture_kernels() as kernels:
        fast(x)
    ran: dict = {}
    for k in kernels:
        ran[k.spec] = ran.get(k.spec, 0) + 1
    assert found == list(ran.items()) and all(s.n == 2 for s, _ in found)
    assert {s.variant for s, _ in found} == {"conv2d", "depthwise_separable_conv2d"}
    # the converted model, exported: its tvmconv.* nodes are the same workloads
    path = tmp_path / "fast.pt2"
    torch.export.save(torch.export.export(fast, (x,)), str(path))
    from tvmconv.suites.workloads import workloads

    assert workloads(path) == found
    assert workloads(model, example_inputs=(x,)) == found  # what tune(model) takes
    # a rule for the depthwise-separable pairs (tvmconv.compile's: fused where that kernel is tuned)
    wide = {s for s, _ in found if s.variant == "depthwise_separable_conv2d" and s.c_in >= 64}
    ruled = tvmconv.workloads(model, (x,), separable=lambda spec: spec in wide)
    assert wide and {s for s, _ in ruled if s.variant == "depthwise_separable_conv2d"} == wide
    assert len(ruled) > len(found) and all(s.variant == "conv2d" for s, _ in ruled if s not in dict(found))


def test_a_model_fx_cannot_trace_has_its_convs_swapped_one_by_one(rng):
    class Branching(nn.Module):  # data-dependent control flow: no graph
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y) if y.sum() > -1e9 else y

    model = Branching().eval()
    x = torch.randn(1, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,), time_layers=False)
    rep = fast.tvmconv_report
    assert not rep.traced and "cannot trace" in rep.note and [r.kind for r in rep.layers] == ["Conv2d", "Conv2d"]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    assert [s.c_out for s, _ in tvmconv.workloads(model, (x,))] == [4, 4]


# -- what convert keeps of the model (issue 33: each failed before) --------------------------------
def _state(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_convert_leaves_a_training_model_as_it_was_and_converts_it_faithfully(rng):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(8, 4, 1)).train()
    twin = __import__("copy").deepcopy(model)
    before, rng_before = _state(model), torch.get_rng_state()
    x = torch.randn(2, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,), dispatch=False)  # timed too: many forwards in training mode
    for k, v in _state(model).items():  # the original: not one statistic moved
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert fast.tvmconv_report.folded == [] and fast.training
    for k, v in _state(fast).items():  # the converted copy starts where the original is
        if k in before:
            torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    for _ in range(2):  # and follows it forward by forward, statistics included
        torch.manual_seed(1)
        a = fast(x)
        torch.manual_seed(1)
        torch.testing.assert_close(a, twin(x), rtol=1e-4, atol=1e-4)
    assert fast.get_submodule("1").num_batches_tracked.item() == twin[1].num_batches_tracked.item() == 2
    torch.testing.assert_close(fast.get_submodule("1").running_var, twin[1].running_var)


class _Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("last", torch.zeros(4))

    def forward(self, x):
        self.calls.add_(1)
        y = self.conv(x)
        self.last.copy_(y.mean((0, 2, 3)))
        return y + self.calls


def test_convert_keeps_buffer_updates_in_forward(rng):
    model = _Counting().eval()
    x = torch.randn(1, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,), dispatch=False)
    assert model.calls.item() == 0 and fast.calls.item() == 0  # neither changed by convert's own runs
    with torch.no_grad():
        for i in (1, 2):
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
            assert fast.calls.item() == model.calls.item() == i
    torch.testing.assert_close(fast.last, model.last, rtol=1e-4, atol=1e-4)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return F.relu(self.pw(F.relu(self.dw(x))))


def _hooked_net(g):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8, g), nn.ReLU(), _Block(),
                         nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


def test_convert_keeps_hooks_and_never_fuses_across_them(rng):
    x = torch.randn(1, 3, 8, 8, generator=rng)
    model = _hooked_net(rng)
    seen: dict = {}

    def hook(name):
        return lambda m, inp, out: seen.setdefault(name, []).append(out.detach().clone())

    for name in ("1", "3", "4"):  # a BatchNorm, a container, a depthwise conv that would fuse
        model.get_submodule(name).register_forward_hook(hook(name))
    model.register_forward_hook(hook("model"))
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    rep = fast.tvmconv_report
    assert rep.folded == [] and "DepthwiseSeparableConv2d" not in [r.kind for r in rep.layers]
    assert set(rep.hooked) == {"1", "3", "4", "(the model)"} and "hooks" in rep.summary()
    assert "3.dw" in [r.name for r in rep.converted]  # inside the hooked container, one by one
    seen.clear()
    with torch.no_grad():
        got = fast(x)
        theirs = {k: v[-1] for k, v in seen.items()}
        seen.clear()
        want = model(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert set(theirs) == {"1", "3", "4", "model"}
    for k, v in seen.items():
        torch.testing.assert_close(theirs[k], v[-1], rtol=1e-4, atol=1e-4)


def test_the_converted_model_loads_the_originals_state_dict(rng):
    model = _Functional(rng).eval()
    x = torch.randn(1, 3, 8, 8, generator=rng)
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    other = _Functional(torch.Generator().manual_seed(7)).eval()  # other weights, other statistics
    fast.load_state_dict(other.state_dict())  # the original's keys: fused and folded modules too
    with torch.no_grad():
        torch.testing.assert_close(fast(x), other(x), rtol=1e-4, atol=1e-4)


def test_batchnorm_in_bfloat16_is_not_folded(rng):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), _bn(8, rng), nn.ReLU()).eval().to(torch.bfloat16)
    x = torch.randn(1, 3, 8, 8, generator=rng, dtype=torch.bfloat16)
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    assert fast.tvmconv_report.folded == [] and [r.kind for r in fast.tvmconv_report.layers] == ["kept"]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0, atol=0)
