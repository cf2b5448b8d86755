"""tvmconv.models' torchvision-style networks in plain PyTorch (nothing compiled): torchvision's
parameter counts and state_dict keys, forward shapes, determinism in eval, torch.export."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from tvmconv import models as M

# torchvision's parameter counts at num_classes=1000 (its weights' "num_params" metadata)
PARAMS = {"mobilenet_v2": 3_504_872, "resnet18": 11_689_512, "mobilenet_v3_large": 5_483_032,
          "shufflenet_v2_x1_0": 2_278_604, "efficientnet_b0": 5_288_548, "resnet50": 25_557_032,
          "mnasnet1_0": 4_383_312, "squeezenet1_1": 1_235_496}
# Networks with torchvision's module names and nesting (all of them)
TORCHVISION_KEYED = ["mobilenet_v2", "resnet18", "mobilenet_v3_large", "shufflenet_v2_x1_0", "efficientnet_b0",
                     "resnet50", "mnasnet1_0", "squeezenet1_1"]
# torchvision 0.29.1's state_dict of each: the number of entries, and the first 16 hex digits of
# the sha256 of its "key:shape" lines, in order ("\n".join(f"{k}:{tuple(v.shape)}" ...))
TORCHVISION_STATE = {"mobilenet_v2": (314, "2a375ead3e9604e1"), "resnet18": (122, "3e58b0798c806a0c"),
                     "mobilenet_v3_large": (312, "9cb349b03a916ada"), "shufflenet_v2_x1_0": (338, "9bd21e2f90c0ee03"),
                     "efficientnet_b0": (360, "e1f159b97ca4b202"), "resnet50": (320, "781bb16f43b8f96f"),
                     "mnasnet1_0": (314, "b168e491e6cb97c0"), "squeezenet1_1": (52, "d93224ce3d6af260")}
KEYS = {
    "mobilenet_v2": ["features.0.0.weight", "features.0.1.running_mean", "features.1.conv.0.0.weight",
                     "features.1.conv.1.weight", "features.1.conv.2.running_var", "features.2.conv.0.0.weight",
                     "features.2.conv.2.weight", "features.17.conv.3.bias", "features.18.0.weight",
                     "classifier.1.weight", "classifier.1.bias"],
    "resnet18": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.running_var",
                 "layer2.0.downsample.0.weight", "layer3.0.downsample.1.bias", "layer4.1.conv2.weight", "fc.weight",
                 "fc.bias"],
    "resnet50": ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight",
                 "layer2.0.downsample.1.running_var", "layer3.5.conv3.weight", "layer4.2.bn3.running_var",
                 "fc.weight", "fc.bias"],
    "mobilenet_v3_large": ["features.0.0.weight", "features.0.1.running_var", "features.1.block.0.0.weight",
                           "features.4.block.2.fc1.weight", "features.4.block.2.fc2.bias",
                           "features.16.0.weight", "classifier.0.weight", "classifier.3.weight"],
    "efficientnet_b0": ["features.0.0.weight", "features.1.0.block.0.0.weight", "features.1.0.block.1.fc1.weight",
                        "features.2.0.block.3.1.bias", "features.6.3.block.2.fc2.weight", "features.8.1.running_mean",
                        "classifier.1.weight"],
    "shufflenet_v2_x1_0": ["conv1.0.weight", "stage2.0.branch1.0.weight", "stage2.1.branch2.6.running_var",
                           "stage3.7.branch2.3.weight", "stage4.0.branch1.2.weight", "conv5.0.weight", "fc.weight"],
    "mnasnet1_0": ["layers.0.weight", "layers.3.weight", "layers.8.0.layers.0.weight", "layers.13.0.layers.7.bias",
                   "layers.14.weight", "layers.15.running_var", "classifier.1.weight"],
    "squeezenet1_1": ["features.0.weight", "features.3.squeeze.weight", "features.12.expand3x3.bias",
                      "classifier.1.weight", "classifier.1.bias"],
}
ABSENT = {"mobilenet_v2": ["features.2.conv.2.0.weight", "classifier.weight"],
          "resnet18": ["features.0.weight", "classifier.weight", "layer1.0.downsample.0.weight"],
          "shufflenet_v2_x1_0": ["stage2.1.branch1.0.weight"], "mobilenet_v3_large": ["features.1.block.2.fc1.weight"],
          "efficientnet_b0": ["classifier.weight"], "resnet50": ["features.0.weight"]}
ALL = list(PARAMS)
X224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def built() -> dict[str, nn.Module]:
    out = {}
    for name in ALL:
        torch.manual_seed(0)
        out[name] = M.MODELS[name](backend="torch").eval()  # as the command line builds them
    return out


@pytest.fixture(scope="module")
def outputs(built) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {name: model(X224) for name, model in built.items()}


@pytest.mark.parametrize("name", ALL)
def test_parameter_count_is_torchvisions(built, name):
    assert sum(p.numel() for p in built[name].parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", ALL)
def test_forward_224_is_finite_and_deterministic_in_eval(built, outputs, name):
    a = outputs[name]
    with torch.no_grad():
        b = built[name](X224)
    assert a.shape == (1, 1000) and torch.isfinite(a).all()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_forward_batch_2_at_64(built, name):
    with torch.no_grad():
        y = built[name](torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", TORCHVISION_KEYED)
def test_state_dict_keys_are_torchvisions(built, name):
    sd = built[name].state_dict()
    for key in KEYS[name]:
        assert key in sd, key
    for key in ABSENT.get(name, []):
        assert key not in sd, key
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items())
    assert (len(sd), hashlib.sha256(text.encode()).hexdigest()[:16]) == TORCHVISION_STATE[name]


@pytest.mark.parametrize("name", TORCHVISION_KEYED)
def test_tvmconv_backend_has_the_same_keys_and_loads_the_torch_weights(built, name):
    tv = M.MODELS[name](backend="tvmconv")  # tvmconv.nn convolutions: built only, nothing compiled
    assert any(type(m).__module__ == "tvmconv.nn" for m in tv.modules())
    tv.load_state_dict(built[name].state_dict())


@pytest.mark.parametrize("name", TORCHVISION_KEYED)
def test_initialised_as_torchvision(built, name):
    model = built[name]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
        if isinstance(m, nn.Conv2d) and m.bias is not None and name != "shufflenet_v2_x1_0":  # (PyTorch's init)
            assert not m.bias.any()
    if name == "mobilenet_v2":
        assert 0.009 < model.classifier[1].weight.std() < 0.011  # normal(0, 0.01)
    if name == "mobilenet_v3_large":
        assert 0.009 < model.classifier[3].weight.std() < 0.011  # normal(0, 0.01)
    if name == "efficientnet_b0":
        assert model.classifier[1].weight.abs().max() <= 1 / 1000 ** 0.5  # uniform(+-1/sqrt(out_features))
    if name == "squeezenet1_1":
        assert 0.009 < model.classifier[1].weight.std() < 0.011  # the final conv: normal(0, 0.01)


def test_torchvision_building_blocks():
    from tvmconv.models.efficientnet import StochasticDepth
    from tvmconv.models.mobilenet import InvertedResidualV3

    assert [M._make_divisible(v, 8) for v in (4, 12, 16, 83, 84, 240 // 4, 1280 * 0.75)] == [8, 16, 16, 80, 88, 64, 960]
    sd = StochasticDepth(0.5, "row")
    x = torch.ones(64, 3, 2, 2)
    assert sd.eval()(x) is x
    y = sd.train()(x)
    rows = y.flatten(1)
    assert set(rows.unique().tolist()) <= {0.0, 2.0} and all(len(r.unique()) == 1 for r in rows)  # whole rows
    with pytest.raises(ValueError):
        StochasticDepth(1.5, "row")(x)
    # MobileNet v2: ReLU6 blocks, a projection without activation, dropout before the classifier
    v2 = M.mobilenet_v2()
    assert isinstance(v2.features[2], M.InvertedResidual) and isinstance(v2.features[2].conv[1][2], nn.ReLU6)
    assert [type(m) for m in v2.features[2].conv[2:]] == [nn.Conv2d, nn.BatchNorm2d]
    assert isinstance(v2.classifier[0], nn.Dropout) and v2.classifier[0].p == 0.2
    # ResNet-18: basic blocks, a downsampling shortcut where a stage starts with stride 2
    r18 = M.resnet18()
    assert all(isinstance(b, M.BasicBlock) for b in r18.layer1) and r18.layer1[0].downsample is None
    assert r18.layer2[0].downsample[0].stride == (2, 2) and r18.fc.in_features == 512
    # MobileNet v3: hardswish blocks and squeeze-excitation with a hardsigmoid
    v3 = M.mobilenet_v3_large()
    se = v3.features[4].block[2]
    assert isinstance(se, M.SqueezeExcitation) and isinstance(se.scale_activation, nn.Hardsigmoid)
    assert isinstance(v3.features[-1][2], nn.Hardswish) and isinstance(v3.features[7], InvertedResidualV3)
    # EfficientNet: SiLU squeeze-excitation with a sigmoid, stochastic depth growing to 0.2 * 15/16
    b0 = M.efficientnet_b0()
    se = b0.features[2][0].block[2]
    assert isinstance(se.activation, nn.SiLU) and isinstance(se.scale_activation, nn.Sigmoid)
    assert b0.features[7][0].stochastic_depth.p == pytest.approx(0.2 * 15 / 16)
    # ShuffleNet v2's shuffle interleaves the two halves
    from tvmconv.models.shufflenet import channel_shuffle

    z = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(z, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_registered_under_torchvisions_names():
    assert set(PARAMS) <= set(M.MODELS)
    assert set(M.MODELS) <= set(M.__all__)
    assert M.MODELS["efficientnet_b0"](num_classes=10).classifier[1].out_features == 10


@pytest.mark.parametrize("name", ALL)
def test_torch_export(built, name):
    ep = torch.export.export(built[name], (X224,), strict=False)
    (out,) = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    assert tuple(out.meta["val"].shape) == (1, 1000)
    # traced in eval: stochastic depth gone, dropout and BatchNorm in their inference form
    calls = [n for n in ep.graph.nodes if n.op == "call_function"]
    assert not any("bernoulli" in str(n.target) for n in calls)
    assert all(n.args[2] is False for n in calls if "dropout" in str(n.target))  # (input, p, train)
    norms = [n for n in calls if "batch_norm" in str(n.target)]
    assert all(n.args[5] is False for n in norms) and (not norms) == (name == "squeezenet1_1")  # args[5]: training
