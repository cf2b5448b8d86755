"""``tvmconv.models``: small efficient CNNs built from ``tvmconv.nn``, each with a plain-PyTorch twin,
and the torchvision classification networks people deploy, written in plain PyTorch.

    net = tvmconv.models.mobilenet_v1(width_mult=0.5).eval()
    twin = tvmconv.models.mobilenet_v1(width_mult=0.5, backend="torch").eval()
    twin.load_state_dict(net.state_dict())            # identical weights, identical keys

``backend="torch"`` builds the twin from torch.nn modules (``nn.Conv2d``, ``nn.ChannelShuffle``,
``nn.Sequential`` of the stages a fused block replaces, under the same names); blocks PyTorch has
no module for (channel-wise convolution, squeeze-excitation) are tvmconv.nn modules running their
PyTorch reference. ``tvmconv.convert(twin, ...)`` turns a twin back into fused tvmconv layers.
BatchNorm is folded into the convolution biases (the inference form). No weights are downloaded:
they are random, or loaded with ``load_state_dict`` from a local file.

tvmconv's own networks (``tvmconv_nets.py``; ``backend="tvmconv"`` by default):

* ``mobilenet_v1``: MobileNet v1, a stem and 13 depthwise-separable blocks, ``width_mult``.
* ``shufflenet_v1``: ShuffleNet v1 1x, stages of grouped 1x1 convolutions and channel shuffles, ``groups``.
* ``effnet``: EffNet for CIFAR-sized inputs, three EffNet blocks (1x3 and 3x1 depthwise, pooling).
* ``channelnet``: a small ChannelNet with channel-wise and group channel-wise convolutions.

torchvision's networks (``backend="torch"`` by default; ``backend="tvmconv"`` makes every
convolution a ``tvmconv.nn.Conv2d``; random weights, initialised as torchvision initialises them).
Module names, nesting and order are torchvision's, so a torchvision ``state_dict`` loads with
``load_state_dict``; parameter counts at ``num_classes=1000`` are torchvision's:

* ``mobilenet_v2`` (``mobilenet.py``): MobileNet v2, 17 inverted residuals, ReLU6, dropout before
  the classifier; 3,504,872 parameters.
* ``mobilenet_v3_large`` (``mobilenet.py``): MobileNet v3 large, hardswish, squeeze-excitation with
  hardsigmoid; 5,483,032 parameters.
* ``shufflenet_v2_x1_0`` (``shufflenet.py``): ShuffleNet v2 1.0x, channel split, concatenation and
  shuffle; 2,278,604 parameters.
* ``efficientnet_b0`` (``efficientnet.py``): EfficientNet-B0, MBConv with SiLU, squeeze-excitation
  and stochastic depth (the identity in eval); 5,288,548 parameters.
* ``resnet18`` (``resnet.py``): ResNet-18, basic blocks; 11,689,512 parameters.
* ``resnet50`` (``resnet.py``): ResNet-50, bottleneck blocks; 25,557,032 parameters.
* ``mnasnet1_0`` (``mnasnet.py``): MNASNet 1.0, inverted residual stacks; 4,383,312 parameters.
* ``squeezenet1_1`` (``squeezenet.py``): SqueezeNet 1.1, fire modules, a convolutional classifier;
  1,235,496 parameters.

``MODELS`` maps each name to its builder; every builder takes ``num_classes`` and the keywords
``backend`` and ``target``. ``input_size(name)``: the side of the square image it takes.
"""

from ._common import (_Classifier, _conv_bn, _finish, _Make, _make_divisible, Conv2dNormActivation,
                      SqueezeExcitation)
from .efficientnet import EfficientNet, MBConv, StochasticDepth, efficientnet_b0, stochastic_depth
from .mnasnet import MNASNet, mnasnet1_0
from .mobilenet import InvertedResidual, InvertedResidualV3, MobileNetV3, mobilenet_v2, mobilenet_v3_large
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from .shufflenet import ShuffleNetV2, ShuffleV2Block, channel_shuffle, shufflenet_v2_x1_0
from .squeezenet import Fire, SqueezeNet, squeezenet1_1
from .tvmconv_nets import SHUFFLENET_CHANNELS, channelnet, effnet, mobilenet_v1, shufflenet_v1

MODELS = {"mobilenet_v1": mobilenet_v1, "shufflenet_v1": shufflenet_v1, "effnet": effnet, "channelnet": channelnet,
          "mobilenet_v2": mobilenet_v2, "resnet18": resnet18, "mobilenet_v3_large": mobilenet_v3_large,
          "shufflenet_v2_x1_0": shufflenet_v2_x1_0, "efficientnet_b0": efficientnet_b0, "resnet50": resnet50,
          "mnasnet1_0": mnasnet1_0, "squeezenet1_1": squeezenet1_1}



def input_size(name: str) -> int:
    """The side of the square ``(N, 3, side, side)`` image network ``name`` takes: 32 for ``effnet``
    (CIFAR-sized), 224 for the others."""
    return 32 if name == "effnet" else 224


__all__ = ["input_size", "mobilenet_v1", "shufflenet_v1", "effnet", "channelnet", "mobilenet_v2", "resnet18", "mobilenet_v3_large",
           "shufflenet_v2_x1_0", "efficientnet_b0", "resnet50", "mnasnet1_0", "squeezenet1_1", "MODELS"]
