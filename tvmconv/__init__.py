"""tvmconv: every CNN convolution variant as an Apache TVM tensor expression, compiled for your
device and callable on PyTorch tensors and NumPy arrays.

    import tvmconv.functional as TF
    y = TF.conv2d(x, w, b, stride=2, padding=1, groups=4)
    tvmconv.tune("mobilenet_v1", target="x86-avx2", trials=200)   # tuned schedules, cached
    fast = tvmconv.convert(model.eval(), (x,))                      # a model's convs on tvmconv
    fast = tvmconv.compile(model.eval(), (x,))                      # the whole model, one module

The submodules load on first use (PEP 562), so ``import tvmconv`` and the command line's
``--help`` do not pay for importing PyTorch and TVM. Importing ``tvmconv.functional`` (or using
any op) registers the custom ops ``torch.ops.tvmconv.*``.
"""

import importlib as _importlib
import logging as _logging

from . import knobs as _knobs

__version__ = "0.1.0"

_logging.getLogger("tvmconv").setLevel(_knobs.log_level())

# public name -> (module, attribute or None for the module itself)
_LAZY = {
    "functional": ("functional", None),
    "ops": ("ops", None),
    "nn": ("nn", None),
    "models": ("models", None),
    "convert": ("graph.converter", "convert"),
    "compile": ("graph.compiler", "compile"),
    "workloads": ("graph.converter", "workloads"),
    "tune": ("tuning.api", "tune"),
    "VARIANTS": ("variants.registry", "VARIANTS"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tvmconv' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = _importlib.import_module(f".{module}", __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value  # found once
    return value


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["functional", "ops", "nn", "models", "convert", "compile", "workloads", "tune", "VARIANTS", "__version__"]
