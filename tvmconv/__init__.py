"""tvmconv: every CNN convolution variant as an Apache TVM tensor expression, compiled for your
device and callable on PyTorch tensors and NumPy arrays.

    import tvmconv.functional as TF
    y = TF.conv2d(x, w, b, stride=2, padding=1, groups=4)
    tvmconv.tune("mobilenet_v1", target="x86-avx2", trials=200)   # tuned schedules, cached
    fast = tvmconv.convert(model.eval(), (x,))                      # a model's convs on tvmconv
"""

import logging as _logging

from . import knobs as _knobs

__version__ = "0.1.0"

_logging.getLogger("tvmconv").setLevel(_knobs.log_level())

from . import functional  # noqa: E402
from . import ops  # noqa: E402  (registers torch.ops.tvmconv.*)
from . import models, nn  # noqa: E402
from .convert import convert  # noqa: E402
from .registry import VARIANTS  # noqa: E402
from .tuner import tune  # noqa: E402

__all__ = ["functional", "ops", "nn", "models", "convert", "tune", "VARIANTS", "__version__"]
