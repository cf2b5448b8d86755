"""PyTorch integration: custom ops (opcheck over the whole registry), autograd, tvmconv.nn modules
(state_dict both ways), tvmconv.models against their PyTorch twins, convert, torch.compile and
torch.export. References: torch.nn, torch.nn.functional and tvmconv.reference."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tvmconv
from tvmconv import functional as TF
from tvmconv import models as M
from tvmconv import nn as tnn
from tvmconv import ops
from tvmconv.variants.registry import SHAPE_TABLE, VARIANTS, ShapeRow

ROWS = {r.label: r for r in SHAPE_TABLE}
TINY = ShapeRow("tiny", n=1, c=4, size=(5, 6), oc=4, k=3, stride=1, padding=1, groups=2)


def _case(name: str, row: ShapeRow, dtype=torch.float32, grad=False, seed=0):
    case = VARIANTS[name].make_case(row, torch.Generator().manual_seed(seed))
    conv = (lambda a: a.to(dtype).requires_grad_(grad) if isinstance(a, torch.Tensor) else a)
    return tuple(conv(a) for a in case.args), {k: conv(v) for k, v in case.kwargs.items()}


# -- the custom-op registry --------------------------------------------------------------------
def test_registry_covers_every_op():
    registered = {n.split("::")[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("tvmconv::")}
    assert registered == set(ops.OPS) == set(TF.__all__) == set(VARIANTS)


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_opcheck(name):
    """torch.library.opcheck (schema, fake tensor, autograd registration, AOT dispatch) on float32
    inputs, and on float64 inputs that require grad (the backward path) for ops that have one."""
    args, kwargs = _case(name, ROWS["stride2"])
    torch.library.opcheck(ops.OPS[name].op, ops.schema_args(name, args, kwargs))
    if ops.OPS[name].reference is not None:
        args, kwargs = _case(name, TINY, torch.float64, grad=True)
        torch.library.opcheck(ops.OPS[name].op, ops.schema_args(name, args, kwargs))


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_custom_op_matches_reference(name):
    args, kwargs = _case(name, ROWS["g4_stride2"] if name != "deform_conv2d" else ROWS["base"])
    got = getattr(ops, name)(*args, **kwargs)
    want = VARIANTS[name].reference(*args, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(n for n, o in ops.OPS.items() if o.reference is not None))
def test_gradcheck(name):
    args, kwargs = _case(name, TINY, torch.float64, grad=True)
    tensors = [a for a in args if isinstance(a, torch.Tensor)]

    def f(*ts):
        it = iter(ts)
        return TF.__dict__[name](*[next(it) if isinstance(a, torch.Tensor) else a for a in args], **kwargs)

    assert torch.autograd.gradcheck(f, tensors, eps=1e-6, atol=1e-5)


def test_deform_backward_is_a_clear_error():
    args, kwargs = _case("deform_conv2d", TINY, grad=True)
    y = TF.deform_conv2d(*args, **kwargs)
    with pytest.raises(RuntimeError, match="deform_conv2d: no backward"):
        y.sum().backward()


def test_functional_traces_under_compile_fullgraph():
    args, kwargs = _case("depthwise_separable_conv2d", ROWS["base"])

    @torch.compile(fullgraph=True, backend="eager")
    def f(*a):
        return TF.depthwise_separable_conv2d(*a, **kwargs).relu() * 2

    torch.testing.assert_close(f(*args), VARIANTS["depthwise_separable_conv2d"].reference(*args, **kwargs).relu() * 2,
                               rtol=1e-4, atol=1e-4)


# -- drop-in modules -----------------------------------------------------------------------------
DROP_IN = [
    (nn.Conv1d, tnn.Conv1d, dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (2, 4, 17)),
    (nn.Conv2d, tnn.Conv2d, dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, groups=2), (1, 4, 11, 9)),
    (nn.Conv2d, tnn.Conv2d, dict(in_channels=4, out_channels=4, kernel_size=2, padding="same", bias=False),
     (1, 4, 8, 7)),
    (nn.Conv2d, tnn.Conv2d, dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, padding_mode="reflect"),
     (1, 3, 9, 9)),
    (nn.Conv3d, tnn.Conv3d, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, dilation=1), (1, 2, 5, 6, 7)),
    (nn.ConvTranspose1d, tnn.ConvTranspose1d, dict(in_channels=4, out_channels=2, kernel_size=3, stride=2),
     (1, 4, 9)),
    (nn.ConvTranspose2d, tnn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1,
                                                   output_padding=1, groups=2), (1, 4, 7, 6)),
    (nn.ConvTranspose3d, tnn.ConvTranspose3d, dict(in_channels=2, out_channels=3, kernel_size=2, stride=2),
     (1, 2, 3, 4, 5)),
]


@pytest.mark.parametrize("torch_cls,tv_cls,kw,shape", DROP_IN, ids=lambda v: getattr(v, "__name__", None))
def test_drop_in_state_dict_both_ways(torch_cls, tv_cls, kw, shape):
    torch.manual_seed(0)
    ref, tv = torch_cls(**kw), tv_cls(**kw)
    assert isinstance(tv, torch_cls) and tv.state_dict().keys() == ref.state_dict().keys()
    tv.load_state_dict(ref.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), ref(x), rtol=1e-4, atol=1e-4)
    back = torch_cls(**kw)
    back.load_state_dict(tv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(back(x), ref(x))


def test_conv_transpose_output_size_argument():
    torch.manual_seed(0)
    ref = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    tv = tnn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    tv.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(tv(x, output_size=[10, 10]), ref(x, output_size=[10, 10]), rtol=1e-4, atol=1e-4)


def test_drop_in_module_trains_like_torch():
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 3, padding=1).double()
    tv = tnn.Conv2d(3, 4, 3, padding=1).double()
    tv.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    (ref(x) ** 2).sum().backward()
    (tv(x) ** 2).sum().backward()
    torch.testing.assert_close(tv.weight.grad, ref.weight.grad)
    torch.testing.assert_close(tv.bias.grad, ref.bias.grad)


FUSED = [
    (lambda b: tnn.DepthwiseSeparableConv2d(8, 16, 3, 2, 1, mid_activation="relu", activation="relu6", backend=b),
     (1, 8, 11, 10)),
    (lambda b: tnn.ShuffledGroupConv2d(8, 12, 1, groups=4, backend=b), (1, 8, 7, 7)),
    (lambda b: tnn.ShuffleUnit(16, 16, 2, 1, backend=b), (1, 16, 8, 8)),
    (lambda b: tnn.ShuffleUnit(16, 48, 4, 2, backend=b), (1, 16, 8, 8)),
    (lambda b: tnn.EffNetBlock(8, 16, backend=b), (1, 8, 8, 8)),
    (lambda b: tnn.SpatialSeparableConv2d(4, 6, 3, stride=2, padding=1, backend=b), (1, 4, 9, 9)),
    (lambda b: tnn.FlattenedConv2d(4, 6, 3, padding=1, backend=b), (1, 4, 9, 8)),
    (lambda b: tnn.ChannelWiseConv(2, 3, padding=1, backend=b), (1, 8, 5, 5)),
    (lambda b: tnn.SqueezeExcitation(8, 2, backend=b), (2, 8, 5, 5)),
]


@pytest.mark.parametrize("make,shape", FUSED, ids=lambda v: None if callable(v) else str(v))
def test_fused_module_matches_its_torch_composition(make, shape):
    torch.manual_seed(0)
    tv, ref = make("tvmconv"), make("torch")
    ref.load_state_dict(tv.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(tv(x), ref(x), rtol=1e-4, atol=1e-4)


def test_squeeze_excitation_state_dict_names_are_torchvision_s():
    m = tnn.SqueezeExcitation(8, 2)
    assert set(m.state_dict()) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    d = tnn.DeformConv2d(4, 6, 3)
    assert set(d.state_dict()) == {"weight", "bias"}


def test_deform_module_matches_reference():
    args, kwargs = _case("deform_conv2d", ROWS["base"])
    x, off, w, b = args[:4]
    m = tnn.DeformConv2d(w.shape[1] * (x.shape[1] // w.shape[1]), w.shape[0], w.shape[2:], kwargs.get("stride", 1),
                         kwargs.get("padding", 0), kwargs.get("dilation", 1), groups=x.shape[1] // w.shape[1])
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
        torch.testing.assert_close(m(x, off, kwargs.get("mask")), VARIANTS["deform_conv2d"].reference(*args, **kwargs),
                                   rtol=1e-4, atol=1e-4)


# -- bad input -----------------------------------------------------------------------------------
def test_errors_name_the_layer_and_argument():
    model = M.mobilenet_v1(width_mult=0.25).eval()
    with pytest.raises(TypeError, match=r"layer 'features\.0'.*'input'.*float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"layer 'features\.0'.*'input'"):
        model(torch.zeros(3, 32))
    with pytest.raises(ValueError, match=r"layer 'features\.0'.*'input'.*device"), torch.no_grad():
        model.features[0](torch.zeros(1, 3, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="backend"):
        tnn.Conv2d(3, 4, 3, backend="cuda")


# -- models, convert, compile, export ------------------------------------------------------------
MODEL_CASES = [("mobilenet_v1", dict(width_mult=0.25), (1, 3, 64, 64)),
               ("shufflenet_v1", dict(groups=3), (1, 3, 64, 64)),
               ("shufflenet_v1", dict(groups=8), (1, 3, 32, 32)),
               ("effnet", {}, (2, 3, 32, 32)),
               ("channelnet", {}, (1, 3, 32, 32)),
               ("mobilenet_v2", dict(width_mult=0.25), (1, 3, 32, 32)),
               ("resnet18", {}, (1, 3, 32, 32))]


@pytest.fixture(scope="module", params=MODEL_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def model_pair(request):
    name, kw, shape = request.param
    torch.manual_seed(0)
    tv = M.MODELS[name](backend="tvmconv", **kw).eval()
    twin = M.MODELS[name](backend="torch", **kw).eval()
    twin.load_state_dict(tv.state_dict())
    return tv, twin, torch.randn(shape)


def test_model_matches_its_pytorch_twin(model_pair):
    tv, twin, x = model_pair
    assert not any(isinstance(m, tnn.TvmconvModule) and m.backend == "tvmconv" for m in twin.modules())
    with torch.no_grad():
        torch.testing.assert_close(tv(x), twin(x), rtol=1e-4, atol=1e-4)


def test_convert_twin(model_pair):
    tv, twin, x = model_pair
    fast = tvmconv.convert(twin, (x,), dispatch=False, time_layers=False)
    rep = fast.tvmconv_report
    assert rep.converted and not rep.kept and rep.max_abs_error < 1e-4
    for name, m in fast.named_modules():  # plain torch convs left only as parameter holders of fused modules
        if type(m) in tnn.DROP_IN:
            assert isinstance(fast.get_submodule(name.rpartition(".")[0]), tnn.TvmconvModule), name
    assert any(type(m) is nn.Conv2d for m in twin.modules())  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(fast(x), twin(x), rtol=1e-4, atol=1e-4)


def test_compile_fullgraph(model_pair):
    tv, twin, x = model_pair
    compiled = torch.compile(tv, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), twin(x), rtol=1e-4, atol=1e-4)


def test_export_captures_tvmconv_ops():
    torch.manual_seed(0)
    model = M.mobilenet_v1(width_mult=0.25).eval()
    x = torch.randn(1, 3, 32, 32)
    ep = torch.export.export(model, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "tvmconv.depthwise_separable_conv2d.default" in targets and "tvmconv.conv2d.default" in targets
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), model(x))


def test_convert_resnet_style_model_with_inductor():
    """A torchvision-style model (nn.Sequential blocks, residual adds, BatchNorm) converted, then
    compiled with the default Inductor backend: same outputs."""
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

    model = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), Block(16), nn.Conv2d(16, 16, 3, groups=16, padding=1),
                          nn.ReLU6(), nn.Conv2d(16, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10)).eval()
    x = torch.randn(2, 3, 32, 32)
    fast = tvmconv.convert(model, (x,), dispatch=False, time_layers=False)
    kinds = [r.kind for r in fast.tvmconv_report.converted]
    assert "DepthwiseSeparableConv2d" in kinds and kinds.count("Conv2d") == 3
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fast, fullgraph=True)(x), model(x), rtol=1e-4, atol=1e-4)


def test_convert_keeps_what_it_cannot_run_and_reports_untraceable_models():
    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1, padding_mode="zeros").to(torch.bfloat16))
    mixed_in = torch.randn(1, 3, 8, 8)

    class M2(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = mixed[0], mixed[1]

        def forward(self, x):
            return self.b(self.a(x).to(torch.bfloat16)).float()

    fast = tvmconv.convert(M2(), (mixed_in,), dispatch=False, time_layers=False)
    kept = fast.tvmconv_report.kept
    assert [r.name for r in kept] == ["b"] and "bfloat16" in kept[0].reason
    assert [r.name for r in fast.tvmconv_report.converted] == ["a"]

    with pytest.warns(UserWarning, match="does not run on example_inputs"):
        same = tvmconv.convert(mixed, (torch.randn(1, 5, 8, 8),), report=False)
    assert same is mixed and "does not run" in same.tvmconv_report.error


# -- torch semantics -------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shapes, kw", [
    ("conv2d", ((2, 4, 7, 7), (6, 2, 3, 3), (6,)), dict(padding=1, groups=2, stride=2)),
    ("conv1d", ((4, 9), (6, 4, 3), None), dict(dilation=2)),  # unbatched
    ("conv_transpose2d", ((2, 4, 5, 5), (4, 3, 3, 3), (3,)), dict(stride=2, padding=1, output_padding=1)),
    ("conv3d", ((1, 2, 4, 4, 4), (3, 2, 2, 2, 2), None), {}),
])
def test_plain_conv_backward_is_pytorchs(rng, monkeypatch, name, shapes, kw):
    """The gradients of the plain convolutions come from aten.convolution_backward on the saved
    tensors: PyTorch's exactly, and the forward is not run again."""
    import tvmconv.ops as tops

    leaves = [None if s is None else torch.randn(s, generator=rng, dtype=torch.float64) for s in shapes]
    mine = [None if t is None else t.clone().requires_grad_() for t in leaves]
    ref = [None if t is None else t.clone().requires_grad_() for t in leaves]
    out = getattr(TF, name)(*mine, **kw)
    want = getattr(F, name)(*ref, **kw)
    monkeypatch.setitem(vars(tops.OPS[name]), "reference", None)  # a recomputed forward would fail now
    g = torch.randn(want.shape, generator=rng, dtype=torch.float64)
    out.backward(g)
    want.backward(g)
    for a, b in zip(mine, ref):
        if a is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10)


def test_channels_last_in_channels_last_out(rng):
    x = torch.randn(2, 8, 9, 9, generator=rng).to(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, generator=rng)
    want = F.conv2d(x, w, padding=1)
    with torch.no_grad():
        for ctx in (TF.no_dispatch(), contextlib.nullcontext()):  # the kernel, and the op as dispatched
            with ctx:
                got = TF.conv2d(x, w, padding=1)
            assert got.is_contiguous(memory_format=torch.channels_last) and got.stride() == want.stride()
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    compiled = torch.compile(lambda a: TF.conv2d(a, w, padding=1), fullgraph=True, backend="eager")
    with torch.no_grad():
        assert compiled(x).stride() == want.stride()
