"""tvmconv's own four networks, built from ``tvmconv.nn`` (``backend="tvmconv"``) or as their
plain-PyTorch twins under the same names (``backend="torch"``): MobileNet v1, ShuffleNet v1,
EffNet and a small ChannelNet."""

from __future__ import annotations

from torch import nn

from ._common import _Classifier, _finish, _Make


def mobilenet_v1(width_mult: float = 1.0, num_classes: int = 1000, *, backend: str = "tvmconv",
                 target=None) -> nn.Module:
    """MobileNet v1 (Howard et al. 2017): a 3x3/2 stem and 13 depthwise-separable blocks. The
    resolution multiplier is the input size you feed (224 * rho). ``(N, 3, H, W) -> (N, num_classes)``."""
    if not width_mult > 0:
        raise ValueError(f"argument 'width_mult' must be positive, got {width_mult}")
    make = _Make(backend, target)

    def ch(c: int) -> int:
        return max(8, int(c * width_mult))

    layers: list[nn.Module] = [make.conv(3, ch(32), 3, 2, 1), nn.ReLU()]
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    layers += [make.dwsep(ch(a), ch(b), s) for a, b, s in plan]
    return _finish(_Classifier(nn.Sequential(*layers), ch(1024), num_classes))


SHUFFLENET_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}


def shufflenet_v1(groups: int = 3, num_classes: int = 1000, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """ShuffleNet v1 (Zhang et al. 2018), scale 1x, ``groups`` in 1, 2, 3, 4, 8: a 3x3/2 stem,
    3x3/2 max pool, stages of 4, 8 and 4 shuffle units. ``(N, 3, H, W) -> (N, num_classes)``."""
    if groups not in SHUFFLENET_CHANNELS:
        raise ValueError(f"argument 'groups' must be one of {sorted(SHUFFLENET_CHANNELS)}, got {groups!r}")
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 24, 3, 2, 1), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c_in = 24
    for stage, repeats in ((2, 4), (3, 8), (4, 4)):
        c_out = SHUFFLENET_CHANNELS[groups] * 2 ** (stage - 2)
        for unit in range(repeats):
            layers.append(make.shuffle_unit(c_in, c_out, groups, 2 if unit == 0 else 1,
                                            first_group=not (stage == 2 and unit == 0)))
            c_in = c_out
    return _finish(_Classifier(nn.Sequential(*layers), c_in, num_classes))


def effnet(num_classes: int = 10, input_size: int = 32, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """EffNet (Freeman et al. 2018) for CIFAR-sized inputs: three EffNet blocks (32, 64, 128
    channels), each halving height and width, then a linear layer. ``(N, 3, S, S) -> (N, num_classes)``."""
    if input_size < 8 or input_size % 8:
        raise ValueError(f"argument 'input_size' must be a multiple of 8, got {input_size}")
    make = _Make(backend, target)
    blocks = [make.effnet_block(a, b) for a, b in ((3, 32), (32, 64), (64, 128))]
    return _finish(_Classifier(nn.Sequential(*blocks), 128 * (input_size // 8) ** 2, num_classes, pool=False))


def channelnet(num_classes: int = 1000, *, backend: str = "tvmconv", target=None) -> nn.Module:
    """A small ChannelNet (Gao et al. 2018): a stem and four depthwise-separable blocks, then a
    depthwise-separable channel-wise block (3x3 depthwise, channel-wise convolution in place of the
    1x1) and a group channel-wise block (grouped 1x1, then a channel-wise convolution mixing the
    groups). ``(N, 3, H, W) -> (N, num_classes)``."""
    make = _Make(backend, target)
    layers: list[nn.Module] = [make.conv(3, 32, 3, 2, 1), nn.ReLU()]
    layers += [make.dwsep(a, b, s) for a, b, s in ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2))]
    layers += [make.conv(256, 256, 3, 1, 1, groups=256), nn.ReLU(), make.channel_wise(1, 7, padding=3), nn.ReLU()]
    layers += [make.conv(256, 256, 1, groups=2), nn.ReLU(), make.channel_wise(1, 7, padding=3)]
    return _finish(_Classifier(nn.Sequential(*layers), 256, num_classes))
