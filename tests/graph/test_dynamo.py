"""``torch.compile(model, backend="tvmconv")`` (tvmconv/graph/dynamo.py): fullgraph, eager's answers,
BatchNorm folded in the graph from the current parameters, patterns fused."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tvmconv.graph import dynamo as tc


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1)
        self.head = nn.Conv1d(16, 4, 3)

    def forward(self, x):
        y = F.relu(self.bn(self.stem(x)))
        y = F.relu6(self.pw(F.relu6(self.dw(y)))) + y.repeat(1, 2, 1, 1)  # a residual stays PyTorch
        return self.head(y.flatten(2))


@pytest.fixture
def net(rng):
    torch.manual_seed(0)
    m = _Net().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1, generator=rng)
        m.bn.running_var.uniform_(0.5, 2, generator=rng)
        m.bn.weight.uniform_(0.5, 2, generator=rng)
    return m


def test_the_graph_gets_tvmconv_ops(net, rng):
    seen = []

    def spy(gm, example_inputs):
        seen.append(tc.rewrite(gm))
        return gm.forward

    x = torch.randn(2, 3, 8, 8, generator=rng)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, backend=spy, fullgraph=True)(x), net(x), rtol=1e-4, atol=1e-4)
    targets = [str(n.target) for n in seen[0].graph.nodes if n.op == "call_function"]
    assert "tvmconv.depthwise_separable_conv2d.default" in targets and "tvmconv.conv1d.default" in targets
    assert targets.count("tvmconv.conv2d.default") == 1  # the stem; the other two are fused
    assert not any("batch_norm" in t or t.endswith("conv2d>") for t in targets)


@pytest.mark.parametrize("inductor", [False, True])
def test_backend_runs_fullgraph_and_matches_eager(net, rng, inductor):
    x = torch.randn(1, 3, 8, 8, generator=rng)
    torch._dynamo.reset()
    fast = torch.compile(net, backend="tvmconv", fullgraph=True, options={"inductor": inductor})
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-4)
        # BatchNorm is folded in the graph from the parameters of each call, not into constants
        net.bn.weight.mul_(3)
        net.stem.weight.add_(0.1)
        torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-4)


def test_unknown_options_are_refused(net):
    torch._dynamo.reset()
    with pytest.raises(Exception, match="unknown options"):
        torch.compile(net, backend="tvmconv", options={"fast": True})(torch.randn(1, 3, 8, 8))


# -- in-place ops, training, dynamic shapes, dtypes (issue 33: each failed before) -----------------
class _InPlace(nn.Module):
    """Convolutions whose results (and an input, and a buffer) are changed in place, the result of
    the in-place call unused."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("seen", torch.zeros(8))

    def forward(self, x):
        x.mul_(2)  # the caller's input
        y = self.c1(x)
        torch.relu_(y)
        z = self.c2(y)
        z.add_(1)
        F.relu(z, inplace=True)
        self.calls.add_(1)
        self.seen.copy_(z.mean((0, 2, 3)))
        return z


@pytest.mark.parametrize("inductor", [False, True])
def test_in_place_ops_whose_result_is_unused_are_kept(rng, inductor):
    torch._dynamo.reset()
    m, twin = _InPlace().eval(), _InPlace().eval()
    twin.load_state_dict(m.state_dict())
    x = torch.randn(1, 8, 10, 10, generator=rng)
    fast = torch.compile(m, backend="tvmconv", options={"inductor": inductor})
    with torch.no_grad():
        for _ in range(2):
            xa, xb = x.clone(), x.clone()
            torch.testing.assert_close(fast(xa), twin(xb), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(xa, xb)  # the input was doubled in place by both
    assert m.calls.item() == twin.calls.item() == 2
    torch.testing.assert_close(m.seen, twin.seen, rtol=1e-4, atol=1e-4)


def test_training_updates_batchnorm_statistics(rng):
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3),
                      nn.BatchNorm2d(8)).train()
    twin = copy.deepcopy(m)
    fast = torch.compile(m, backend="tvmconv", options={"inductor": False})
    for _ in range(3):
        x = torch.randn(2, 3, 8, 8, generator=rng)
        torch.testing.assert_close(fast(x), twin(x), rtol=1e-4, atol=1e-4)
    for bn, ref in ((m[1], twin[1]), (m[4], twin[4])):
        assert bn.num_batches_tracked.item() == ref.num_batches_tracked.item() == 3
        torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-4, atol=1e-5)


def test_dynamic_shapes_with_batchnorm(net, rng):
    torch._dynamo.reset()
    fast = torch.compile(net, backend="tvmconv", dynamic=True, options={"inductor": False})
    with torch.no_grad():
        for n, size in ((1, 8), (3, 10), (2, 12)):
            x = torch.randn(n, 3, size, size, generator=rng)
            torch.testing.assert_close(fast(x), net(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("inductor", [False, True])
def test_bfloat16_stays_pytorch(net, rng, inductor):
    torch._dynamo.reset()
    m = net.to(torch.bfloat16)
    seen = []

    def spy(gm, example_inputs):
        seen.append(tc.rewrite(gm))
        return gm.forward

    x = torch.randn(1, 3, 8, 8, generator=rng, dtype=torch.bfloat16)
    with torch.no_grad():
        want = m(x)
        torch.testing.assert_close(torch.compile(m, backend=spy)(x), want)
        torch._dynamo.reset()
        got = torch.compile(m, backend="tvmconv", options={"inductor": inductor})(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    assert not any("tvmconv" in str(n.target) for n in seen[0].graph.nodes)
