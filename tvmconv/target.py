"""Targets: the host's TVM target, and normalisation of what users pass as a target.

TVM 0.27 accepts targets in dict/JSON form only. tvmconv always hands TVM the full dict
(kind, mcpu/mtriple/mattr/arch, num-cores), and the same dict is part of every cache key.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass

from . import knobs


@dataclass(frozen=True)
class TargetInfo:
    """A resolved target: ``config`` is the TVM target dict, ``json`` its canonical JSON."""

    config: tuple  # sorted items, so the dataclass stays hashable
    vector_bits: int

    @property
    def dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config}

    @property
    def json(self) -> str:
        return json.dumps(self.dict, sort_keys=True, separators=(",", ":"))

    @property
    def kind(self) -> str:
        return self.dict["kind"]

    @property
    def is_host_runnable(self) -> bool:
        d = self.dict
        if d["kind"] != "llvm":
            return False
        triple = d.get("mtriple", "")
        return not triple or triple.split("-")[0] == platform.machine()

    def lanes(self, dtype: str) -> int:
        bits = {"float16": 16, "float32": 32, "float64": 64}[dtype]
        return max(1, self.vector_bits // bits)

    def tvm(self):
        import tvm

        return tvm.target.Target(self.dict)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _vector_bits(cfg: dict) -> int:
    if cfg.get("kind") != "llvm":
        return 128
    mattr = " ".join(cfg.get("mattr", []))
    triple = cfg.get("mtriple", "")
    if "aarch64" in triple or "arm" in triple or "+neon" in mattr:
        return 128
    if "+avx512f" in mattr:
        return 512
    if "+avx2" in mattr or "+avx" in mattr:
        return 256
    mcpu = cfg.get("mcpu")
    if mcpu:
        import tvm
        from tvm.target import codegen

        t = tvm.target.Target(cfg)
        if codegen.llvm_cpu_has_features("avx512f", t):
            return 512
        if codegen.llvm_cpu_has_features("avx2", t):
            return 256
    return 128


def make(config: dict) -> TargetInfo:
    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    return TargetInfo(config=tuple(sorted(cfg.items())), vector_bits=_vector_bits(config))


@functools.lru_cache(maxsize=1)
def host() -> TargetInfo:
    """The TVM target of this machine: the CPU LLVM names, and all its cores."""
    from tvm.target import codegen

    cfg: dict = {"kind": "llvm", "num-cores": knobs.num_threads()}
    if platform.machine() in ("x86_64", "AMD64"):
        cfg["mcpu"] = codegen.llvm_get_system_cpu()
        flags = _cpu_flags()
        if "avx512f" in flags:
            cfg["mattr"] = ["+avx512f"]
        elif "avx2" in flags:
            cfg["mattr"] = ["+avx2", "+fma"]
    elif platform.machine() in ("aarch64", "arm64"):
        cfg["mtriple"] = "aarch64-linux-gnu"
        cfg["mattr"] = ["+neon"]
    return make(cfg)


def resolve(target=None) -> TargetInfo:
    """Accepts None (``TVMCONV_TARGET`` or the host), a ``TargetInfo``, a TVM target dict, or its
    JSON text. Raises ``ValueError`` naming ``target`` for anything else."""
    if target is None:
        env = knobs.default_target()
        return resolve(env) if env else host()
    if isinstance(target, TargetInfo):
        return target
    if isinstance(target, dict):
        if "kind" not in target:
            raise ValueError(f"target must be a TVM target dict with a 'kind' key, got {target!r}")
        return make(target)
    if isinstance(target, str):
        text = target.strip()
        if text.startswith("{"):
            try:
                return make(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"target is not valid JSON: {exc}") from exc
        if text in ("host", "native", "llvm"):
            return host()
    raise ValueError(
        f"target must be None, 'host', a TVM target dict such as {{'kind': 'llvm', 'mcpu': 'znver3'}}, "
        f"or its JSON text; got {target!r}"
    )


def cores() -> int:
    return int(os.environ.get("TVM_NUM_THREADS") or knobs.num_threads())
