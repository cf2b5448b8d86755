"""The variants: one module per family, each registering its ops with ``@variant`` (registry.py).

    conv.py                 conv1d/2d/3d (standard, grouped, depthwise, dilated), conv_transpose1d/2d/3d
    shuffle.py              channel_shuffle, shuffled_group_conv2d (ShuffleNet unit)
    deform.py               deform_conv2d
    depthwise_separable.py  depthwise_separable_conv2d
    spatial_separable.py    spatial_separable_conv2d
    flattened.py            flattened_conv2d
    channel_wise.py         channel_wise_conv
    squeeze_excitation.py   squeeze_excitation
    effnet.py               effnet_block

compute.py holds what their tensor expressions share; registry.py the shared shape table and the
registry. Importing this package registers every family; ``VARIANTS`` is name -> ``Variant``.
"""

from . import conv, shuffle, deform, depthwise_separable, spatial_separable, flattened  # noqa: F401, I001
from . import channel_wise, squeeze_excitation, effnet  # noqa: F401
from .channel_wise import ChannelWiseSpec
from .conv import ConvSpec
from .deform import DeformConv2dSpec
from .depthwise_separable import DepthwiseSeparableSpec
from .effnet import EffNetSpec
from .flattened import FlattenedSpec
from .registry import VARIANTS, Variant, registered, unregister, variant
from .shuffle import ChannelShuffleSpec
from .spatial_separable import SpatialSeparableSpec
from .squeeze_excitation import SqueezeExcitationSpec

__all__ = ["VARIANTS", "Variant", "variant", "registered", "unregister", "ConvSpec", "ChannelShuffleSpec",
           "DeformConv2dSpec", "DepthwiseSeparableSpec", "SpatialSeparableSpec", "FlattenedSpec", "ChannelWiseSpec",
           "SqueezeExcitationSpec", "EffNetSpec"]
