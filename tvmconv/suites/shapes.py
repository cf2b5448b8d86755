"""Named tables of real layer shapes to tune and benchmark.

Each suite is a list of ``(spec, count)``: the distinct workloads of a network, with how often each
occurs (the task scheduler's weight). Batch 1, float32, as deployed.

* ``mobilenet_v1``   MobileNet v1 (Howard et al. 2017), 224x224, width 1.0: the stem conv and the
  13 depthwise-separable blocks (depthwise 3x3 + BN + ReLU + pointwise + BN + ReLU, BN folded
  into biases), as fused ``depthwise_separable_conv2d`` workloads.
* ``shufflenet_v1_g3``, ``shufflenet_v1_g8``   ShuffleNet v1 (Zhang et al. 2017), 224x224, 1x:
  the stem, then per unit a grouped 1x1 conv with the channel shuffle fused
  (``shuffled_group_conv2d``), a depthwise 3x3 and a grouped 1x1 conv. Stage 2's first 1x1 conv
  is not grouped, as in the paper; stride-2 units output ``C_out - C_in`` channels (the rest comes
  from the average-pool shortcut).
* ``effnet``   EffNet (Freeman et al. 2018) for 32x32 CIFAR images, three blocks of 32/64/128
  channels: a 1x1 bottleneck to ``C_out/2``, the EffNet depthwise part (1x3, max pool 2x1, 3x1),
  and a 1x2 convolution with stride (1, 2) to ``C_out``.
* ``resnet18``   every distinct convolution of ResNet-18, 224x224.
* ``ansor``      the single-operator shapes of the Ansor paper (Zheng et al. OSDI 2020), C1D, C2D,
  C3D, GRP, DIL, DEP and T2D, read from TVM's own table
  (``tvm.s_tir.meta_schedule.testing.te_workload.CONFIGS``) and converted to NCHW.
"""

from __future__ import annotations

from collections import OrderedDict

from ..spec import Spec

from ..variants import ConvSpec, DepthwiseSeparableSpec, EffNetSpec


def conv(c_in: int, size, c_out: int, k, s=1, p=0, d=1, g=1, *, n: int = 1, bias: bool = False,
         shuffle: int = 0, transposed: bool = False, output_padding=0) -> ConvSpec:
    """A ConvSpec from a layer's numbers; ``size``, ``k``, ``s``, ``p``, ``d`` are ints or tuples."""
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    nd = len(size)

    def tup(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd

    return ConvSpec(n=n, c_in=c_in, in_size=size, c_out=c_out, kernel=tup(k), stride=tup(s),
                    padding=tuple((q, q) for q in tup(p)), dilation=tup(d), groups=g, bias=bias,
                    transposed=transposed, output_padding=tup(output_padding), shuffle=shuffle)


def _add(table: "OrderedDict[Spec, int]", spec: Spec, count: int = 1) -> None:
    table[spec] = table.get(spec, 0) + count


def mobilenet_v1() -> list[tuple[Spec, int]]:
    t: OrderedDict = OrderedDict()
    _add(t, conv(3, 224, 32, 3, 2, 1, bias=True))
    blocks = [(32, 64, 1, 112), (64, 128, 2, 112), (128, 128, 1, 56), (128, 256, 2, 56), (256, 256, 1, 28),
              (256, 512, 2, 28)] + [(512, 512, 1, 14)] * 5 + [(512, 1024, 2, 14), (1024, 1024, 1, 7)]
    for c_in, c_out, s, hw in blocks:
        _add(t, DepthwiseSeparableSpec(c_in=c_in, in_size=(hw, hw), c_out=c_out, kernel=(3, 3), stride=(s, s),
                                       padding=((1, 1), (1, 1)), dw_bias=True, pw_bias=True,
                                       mid_activation="relu", activation="relu"))
    return list(t.items())


def shufflenet_v1(g: int) -> list[tuple[Spec, int]]:
    out_channels = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}[g]
    t: OrderedDict = OrderedDict()
    _add(t, conv(3, 224, 24, 3, 2, 1, bias=True))
    c_in, hw = 24, 56  # after the stem and a 3x3/2 max pool
    for stage, repeats in ((2, 4), (3, 8), (4, 4)):
        c_out = out_channels * 2 ** (stage - 2)
        mid = c_out // 4
        for unit in range(repeats):
            stride = 2 if unit == 0 else 1
            g1 = 1 if (stage == 2 and unit == 0) else g
            _add(t, conv(c_in, hw, mid, 1, 1, 0, g=g1, bias=True, shuffle=g if g1 > 1 else 0))
            _add(t, conv(mid, hw, mid, 3, stride, 1, g=mid, bias=True))
            hw_out = hw // stride
            _add(t, conv(mid, hw_out, c_out - c_in if stride == 2 else c_out, 1, 1, 0, g=g, bias=True))
            c_in, hw = c_out, hw_out
    return list(t.items())


def effnet() -> list[tuple[Spec, int]]:
    t: OrderedDict = OrderedDict()
    c_in, hw = 3, 32
    for c_out in (32, 64, 128):
        mid = c_out // 2
        _add(t, conv(c_in, hw, mid, 1, bias=True))
        _add(t, EffNetSpec(c=mid, in_size=(hw, hw), bias1=True, bias2=True, activation="relu"))
        _add(t, conv(mid, (hw // 2, hw), c_out, (1, 2), (1, 2), 0, bias=True))
        c_in, hw = c_out, hw // 2
    return list(t.items())


def resnet18() -> list[tuple[Spec, int]]:
    t: OrderedDict = OrderedDict()
    _add(t, conv(3, 224, 64, 7, 2, 3))
    _add(t, conv(64, 56, 64, 3, 1, 1), 4)
    for c_in, c_out, hw in ((64, 128, 56), (128, 256, 28), (256, 512, 14)):
        _add(t, conv(c_in, hw, c_out, 3, 2, 1))
        _add(t, conv(c_in, hw, c_out, 1, 2, 0))
        _add(t, conv(c_out, hw // 2, c_out, 3, 1, 1), 3)
    return list(t.items())


def ansor() -> list[tuple[Spec, int]]:
    from tvm.s_tir.meta_schedule.testing.te_workload import CONFIGS

    t: OrderedDict = OrderedDict()
    for n, length, ci, co, k, s, p in CONFIGS["C1D"][1]:
        _add(t, conv(ci, (length,), co, k, s, p, n=n))
    for n, h, w, ci, co, k, s, p in CONFIGS["C2D"][1]:
        _add(t, conv(ci, (h, w), co, k, s, p, n=n))
    for n, d, h, w, ci, co, k, s, p in CONFIGS["C3D"][1]:
        _add(t, conv(ci, (d, h, w), co, k, s, p, n=n))
    for n, h, w, ci, co, k, s, p, dil, g in CONFIGS["GRP"][1]:
        _add(t, conv(ci, (h, w), co, k, s, p, dil, g, n=n))
    for n, h, w, ci, co, k, s, p, dil in CONFIGS["DIL"][1]:
        _add(t, conv(ci, (h, w), co, k, s, p, dil, n=n))
    for n, h, w, c, k, s, p in CONFIGS["DEP"][1]:
        _add(t, conv(c, (h, w), c, k, s, p, g=c, n=n))
    for n, h, w, ci, co, k, s, p in CONFIGS["T2D"][1]:
        _add(t, conv(ci, (h, w), co, k, s, p, n=n, transposed=True))
    return list(t.items())


def variants() -> list[tuple[Spec, int]]:
    """Every variant on the main job's default shape (``tvmconv bench`` with no suite), as
    ``registry.default_cases`` makes them."""
    from .. import functional as TF
    from ..variants.registry import default_cases

    table: OrderedDict = OrderedDict()
    for v, case in default_cases():
        _add(table, TF.spec_of(v.op, *case.args, **case.kwargs))
    return list(table.items())


# the networks' layers; ``suite("all")`` is all of them
NETWORK_SUITES = {
    "mobilenet_v1": mobilenet_v1,
    "shufflenet_v1_g3": lambda: shufflenet_v1(3),
    "shufflenet_v1_g8": lambda: shufflenet_v1(8),
    "effnet": effnet,
    "resnet18": resnet18,
    "ansor": ansor,
}
SUITES = {**NETWORK_SUITES, "variants": variants}


def suite(name: str) -> list[tuple[Spec, int]]:
    """The workloads of suite ``name`` (``'all'``: every network suite, counts summed)."""
    if name == "all":
        t: OrderedDict = OrderedDict()
        for fn in NETWORK_SUITES.values():
            for spec, count in fn():
                _add(t, spec, count)
        return list(t.items())
    if name not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES) + ['all']}, got {name!r}")
    return SUITES[name]()
