"""Tensor intrinsics, kept out of the way of MetaSchedule's workers.

``light_intrinsics()``: importing ``tvm.s_tir.tensor_intrin`` registers every tensor intrinsic
TVM has (CUDA, ROCm, Hexagon...) and takes 30-40 s here. MetaSchedule imports it in every builder
worker, and the builder starts fresh workers per batch, so each batch of trials would time out.
fp32 CPU schedules use none of them: the package is replaced by an empty one whose submodules can
still be imported on demand. Every tuning module that imports MetaSchedule calls it first (the
builder workers import those modules to unpickle the build function), hence their ``E402``s.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def light_intrinsics() -> None:
    """Put an empty ``tvm.s_tir.tensor_intrin`` in place of TVM's (see the module docstring)."""
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    import tvm.s_tir

    found = importlib.util.find_spec(name)
    if found is None:  # pragma: no cover - a TVM without the package
        return
    mod = types.ModuleType(name)
    mod.__path__ = list(found.submodule_search_locations or [])
    mod.__file__ = found.origin
    sys.modules[name] = mod
    tvm.s_tir.tensor_intrin = mod


def target_intrinsics(target) -> None:
    """Register the tensor intrinsics MetaSchedule's rules for ``target`` look up by name (ARM's
    NEON/SDOT, x86's VNNI...): only its backend's module of ``tvm.s_tir.tensor_intrin``."""
    importlib.import_module(f"tvm.s_tir.tensor_intrin.{target.backend.intrinsics_module}")
