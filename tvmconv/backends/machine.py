"""The machine a dispatch choice was measured on: the device model (CPU model, or GPU name), the
target it ran (its ISA: the target as it enters cache keys) and the thread count.

Whether the tvmconv kernel or the vendor path is faster depends on all three: the shipped x86
records were decided on an AMD Zen 3, and on an AVX-512 Xeon their choice sent 17 of 92 suite
workloads to the slower path. A choice therefore holds only where it was measured, named by
``Machine.key`` (a short stable hash) and described by ``Machine.description``.

``TVMCONV_MACHINE`` (knobs.machine) replaces the device model, so tests can simulate another
machine; everything else is read from this one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from dataclasses import dataclass

from .. import knobs
from .target import TargetInfo


@dataclass(frozen=True)
class Machine:
    key: str  # 12 hex digits: digest of device, target key and threads
    device: str  # "Intel(R) Xeon(R) Processor @ 2.80GHz", "NVIDIA H100 80GB HBM3"
    profile: str  # the target profile ("x86-avx512"; "custom" for a target dict)
    threads: int

    @property
    def description(self) -> str:
        return f"{self.device}, {self.profile}, {self.threads} threads"

    def to_dict(self) -> dict:
        return {"key": self.key, "device": self.device, "profile": self.profile, "threads": self.threads}


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """This CPU's model name (/proc/cpuinfo's ``model name``; else the platform's words)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):  # x86; some aarch64 kernels
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@functools.lru_cache(maxsize=64)
def _machine(target: TargetInfo, override: str | None) -> Machine:
    device = override or target.backend.device_model()
    threads = target.backend.cores
    facts = {"device": device, "target": target.key_dict, "threads": threads}
    pool = target.backend.thread_pool
    if pool not in ("", "tvm"):  # (TVM's own pool: the keys measured before there was a choice)
        facts["pool"] = pool
    blob = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return Machine(hashlib.sha256(blob.encode()).hexdigest()[:12], device, target.profile, threads)


def machine_of(target: TargetInfo) -> Machine:
    """The machine ``target``'s kernels run on here (``TVMCONV_MACHINE`` replaces the device model)."""
    return _machine(target, knobs.machine())
