"""The default schedules' old home, kept for tvmconv/tuning/ until it asks the target's backend
(``target.backend.default_schedule`` and friends): the CPU schedules are in llvm_schedules.py,
the CUDA ones in cuda_schedules.py. Names only; no code of its own."""

from .cuda_schedules import cuda_default, cuda_default_schedule, cuda_direct_schedule  # noqa: F401
from .llvm_schedules import default_for, default_schedule, schedule_into  # noqa: F401

__all__ = ["cuda_default", "cuda_default_schedule", "cuda_direct_schedule", "default_for", "default_schedule",
           "schedule_into"]
