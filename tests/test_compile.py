"""``torch.compile(model, backend="tvmconv")`` (tvmconv/compile.py): fullgraph, eager's answers,
BatchNorm folded in the graph from the current parameters, patterns fused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tvmconv import compile as tc


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
