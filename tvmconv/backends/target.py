"""Targets: named target profiles (``targets/*.json``), host detection, and what users pass.

A *profile* is one JSON file: the TVM target (dict form, the only form TVM 0.27 accepts), the host
target for device targets, how to build (``native``, ``cross`` with a C compiler, ``ndk`` through
``TVM_NDK_CC``), how to measure while tuning (``local``, or ``rpc`` through a tracker
``host:port`` and a device key), the vendor path it is compared with, and the machine facts the
default schedules are written for (``facts``: ``vector_bits``, ``vector_registers``, ``l1d_bytes``,
``l2_bytes``; on GPUs ``registers_per_thread`` and ``multiprocessors``). A target without a
profile, or a profile without facts, gets the facts its ISA implies (``isa_facts``), and a target
this machine runs the cache sizes of its CPU (``cpu_cache_facts``, from sysfs). Profiles ship in the
repository's ``targets/``; a user adds or overrides one by dropping a file into
``$TVMCONV_CACHE_DIR/targets/`` (or ``TVMCONV_TARGETS_DIR``) -- no code change -- a directory
that must be the user's own (see ``profile_dirs``).

``resolve(target)`` turns whatever a user passes (None, a profile name, a TVM target dict or its
JSON, a ``TargetInfo``) into a ``TargetInfo``: the full TVM target dict (with ``num-cores``) plus
the profile name that names its cache directories.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from .. import knobs, storage
from ..spec import hash_once

BUILD_KINDS = ("native", "cross", "ndk")
MEASURE_KINDS = ("local", "rpc")


@dataclass(frozen=True)
class Facts:
    """What the default schedules know of the machine. Sizes in bytes, widths in bits; 0: unknown
    or not applicable (a GPU thread has no vector register file, a CPU no multiprocessors)."""

    vector_bits: int = 128  # the widest SIMD vector (a GPU thread: its widest load)
    vector_registers: int = 0  # SIMD registers per core (AVX2 16, AVX-512 32, NEON 32)
    l1d_bytes: int = 0  # L1 data cache per core (a GPU: L1/shared memory per multiprocessor)
    l2_bytes: int = 0
    registers_per_thread: int = 0  # GPUs
    multiprocessors: int = 0  # GPUs

    @classmethod
    def from_dict(cls, d: dict, where: str = "") -> "Facts":
        known = {f for f in cls.__dataclass_fields__}
        bad = sorted(set(d) - known)
        if bad or not all(isinstance(v, int) and v >= 0 for v in d.values()):
            raise ValueError(f"target profile {where}: facts takes non-negative integers for {sorted(known)}, got {d!r}")
        return cls(**d)


@hash_once
@dataclass(frozen=True)
class TargetInfo:
    """A resolved target: ``config`` is the TVM target dict as sorted items (hashable)."""

    config: tuple
    vector_bits: int
    profile: str = "custom"
    facts: Facts = field(default_factory=Facts)

    @property
    def dict(self) -> dict:
        return {k: _unfreeze(v) for k, v in self.config}

    @property
    def json(self) -> str:
        return json.dumps(self.dict, sort_keys=True, separators=(",", ":"))

    @property
    def key_dict(self) -> dict:
        """The target as it enters cache keys: everything that changes code generation (kind,
        mcpu, mtriple, mattr, arch, host); ``num-cores`` is a run-time property and is left out."""
        return {k: v for k, v in self.dict.items() if k != "num-cores"}

    @property
    def kind(self) -> str:
        return self.dict["kind"]

    @property
    def num_cores(self) -> int:
        return int(self.dict.get("num-cores", 1))

    @functools.cached_property
    def backend(self):
        """The ``Backend`` of this target's device kind (the class ``registry`` holds for it), made
        once per target object: the ops ask on every call."""
        from .registry import backend_class

        return backend_class(self.kind)(self)

    @functools.cached_property
    def runs_here(self) -> bool:
        """Whether this machine's CPU runs the target's code, computed once per target object (the
        ops ask on every call)."""
        return _runs_here(self.dict, self.vector_bits)

    def lanes(self, dtype: str) -> int:
        bits = {"float16": 16, "float32": 32, "float64": 64}[dtype]
        return max(1, self.vector_bits // bits)

    def tvm(self):
        import tvm

        return tvm.target.Target(self.dict)


@dataclass(frozen=True)
class Profile:
    """One ``targets/<name>.json`` file."""

    name: str
    description: str
    target: dict
    host: dict | None = None
    build: dict = field(default_factory=lambda: {"kind": "native"})
    measure: dict = field(default_factory=lambda: {"kind": "local"})
    vendor: str = "torch-cpu"
    compatible: tuple = ()
    path: str = ""
    facts: dict = field(default_factory=dict)

    def target_info(self, num_cores: int | None = None) -> TargetInfo:
        cfg = dict(self.target)
        if self.host:
            cfg["host"] = dict(self.host)
        if cfg["kind"] == "llvm":
            cfg.setdefault("num-cores", num_cores or knobs.num_threads())
        return make(cfg, profile=self.name, facts=self.facts)


def _unfreeze(v):
    if isinstance(v, tuple):
        if all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v) and v:
            return {k: _unfreeze(x) for k, x in v}
        return [_unfreeze(x) for x in v]
    return v


def _freeze(v):
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _runs_here(d: dict, vector_bits: int) -> bool:
    """Whether this machine's CPU runs code for the target dict ``d`` of ``vector_bits`` vectors."""
    if d["kind"] != "llvm":
        return False
    triple = d.get("mtriple", "")
    arch = triple.split("-")[0] if triple else platform.machine()
    if not (arch == platform.machine() or (arch, platform.machine()) in {("arm64", "aarch64"),
                                                                        ("aarch64", "arm64")}):
        return False
    # an x86 target's vectors need the CPU's: AVX-512 code on an AVX2 Zen 3 dies of SIGILL
    # (its launch timing did, planning a kernel for x86-avx512 there)
    flags = _cpu_flags()
    need = {512: "avx512f", 256: "avx2"}.get(vector_bits) if arch in ("x86_64", "AMD64") else None
    return need is None or not flags or need in flags


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (read once: every target resolved asks)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


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
    if cfg.get("mcpu"):
        import tvm
        from tvm.target import codegen

        t = tvm.target.Target(cfg)
        if codegen.llvm_cpu_has_features("avx512f", t):
            return 512
        if codegen.llvm_cpu_has_features("avx2", t):
            return 256
    return 128


def isa_facts(cfg: dict) -> dict:
    """The facts a target's ISA implies, for a target without a profile or a profile without
    ``facts``: the vector width from its features; 32 vector registers for AVX-512 and AArch64,
    else 16; 32 KiB L1d and 256 KiB L2, the smallest of current cores; on CUDA, 255 registers a thread."""
    bits = _vector_bits(cfg)
    if cfg.get("kind") != "llvm":
        return {"vector_bits": bits, "registers_per_thread": 255}
    triple = cfg.get("mtriple", "")
    arm = "aarch64" in triple or "arm" in triple or "+neon" in " ".join(cfg.get("mattr", []))
    return {"vector_bits": bits, "vector_registers": 32 if bits >= 512 or arm else 16, "l1d_bytes": 32768,
            "l2_bytes": 262144}


# Where Linux describes the caches of a CPU: index<i>/{level,type,size}, size as "32K" or "1M"
SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


@functools.lru_cache(maxsize=None)
def cpu_cache_facts(root: Path = SYSFS_CACHES) -> dict:
    """This CPU's L1 data and L2 cache sizes (``l1d_bytes``, ``l2_bytes``) as Linux reports them
    for its first core; {} for what it does not report (another OS, a container without /sys).
    The ISA's sizes are the smallest of current cores: an Ice Lake has a 48 KiB L1d, a Zen 3 a
    512 KiB L2, an Ice Lake server 1.25 MiB."""
    found = {}
    names = {("1", "Data"): "l1d_bytes", ("2", "Unified"): "l2_bytes"}
    for index in sorted(root.glob("index*")) if root.is_dir() else ():
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
            scale = {"K": 1024, "M": 1024 ** 2}.get(size[-1:], 1)
            value = int(size.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
        if (level, kind) in names and value > 0:
            found.setdefault(names[level, kind], value)
    return found


def make(config: dict, profile: str = "custom", facts: dict | None = None) -> TargetInfo:
    """A TargetInfo: ``facts`` (a profile's) override those its ISA implies, field by field; for a
    target this machine runs, its CPU's cache sizes (``cpu_cache_facts``) come between the two:
    the shipped profiles name an ISA, not a machine, and leave the caches to the CPU that runs them."""
    isa = isa_facts(config)
    here = cpu_cache_facts() if _runs_here(config, {**isa, **(facts or {})}["vector_bits"]) else {}
    merged = {**isa, **here, **(facts or {})}
    f = Facts.from_dict(merged, profile)
    return TargetInfo(config=_freeze(config), vector_bits=f.vector_bits, profile=profile, facts=f)


# -- profiles -------------------------------------------------------------------------------------
def shipped_profiles_dir() -> Path:
    return knobs.shipped_dir() / "targets"


def profile_dirs() -> list[Path]:
    """Where profiles are read from, later entries overriding earlier ones by name. The user's
    directory counts only when no one else can write it (``storage.trusted``, which warns): a
    profile's build command runs on ``tvmconv export``."""

    user = knobs.targets_dir()
    return [shipped_profiles_dir()] + ([user] if storage.trusted(user) else [])


def _profile_from_file(path: Path) -> Profile:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"target profile {path} is not readable JSON: {exc}") from exc
    if not isinstance(d, dict) or not isinstance(d.get("target"), dict) or "kind" not in d["target"]:
        raise ValueError(f"target profile {path} must be an object with a 'target' TVM target dict "
                         f"holding a 'kind'")
    name = d.get("name", path.stem)
    if name != path.stem:
        raise ValueError(f"target profile {path}: 'name' ({name!r}) must match the file name ({path.stem!r})")
    build = d.get("build") or {"kind": "native"}
    measure = d.get("measure") or {"kind": "local"}
    if build.get("kind") not in BUILD_KINDS:
        raise ValueError(f"target profile {path}: build.kind must be one of {BUILD_KINDS}, got {build.get('kind')!r}")
    if measure.get("kind") not in MEASURE_KINDS:
        raise ValueError(f"target profile {path}: measure.kind must be one of {MEASURE_KINDS}, "
                         f"got {measure.get('kind')!r}")
    facts = d.get("facts") or {}
    if not isinstance(facts, dict):
        raise ValueError(f"target profile {path}: facts must be an object, got {facts!r}")
    Facts.from_dict({**isa_facts(d["target"]), **facts}, str(path))  # reported here, not at first use
    return Profile(name=name, description=d.get("description", ""), target=d["target"], host=d.get("host"),
                   build=build, measure=measure, vendor=d.get("vendor", "torch-cpu"),
                   compatible=tuple(d.get("compatible", ())), path=str(path), facts=facts)


def profiles() -> dict[str, Profile]:
    """Every readable profile by name. An unreadable user file is reported and skipped."""
    import logging

    found: dict[str, Profile] = {}
    for d in profile_dirs():
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*.json")):
            try:
                found[path.stem] = _profile_from_file(path)
            except ValueError as exc:
                logging.getLogger("tvmconv").warning("tvmconv: skipping %s", exc)
    return found


@functools.lru_cache(maxsize=64)
def _named(name: str, *_where) -> TargetInfo:
    """A profile's TargetInfo, read once per process and setting of the variables that locate the
    profile files (``_where``). Ops resolve their ``target`` on every call: no file reads there,
    and one object, so its cached properties hold."""
    return profile(name).target_info()


def profile(name: str) -> Profile:
    found = profiles()
    if name not in found:
        raise ValueError(f"target must be a profile name from {sorted(found)} (see `tvmconv targets`), "
                         f"a TVM target dict, or 'host'; got {name!r}")
    return found[name]


def detect_profile_name() -> str | None:
    """The profile matching this machine's CPU, from its feature flags."""
    machine = platform.machine()
    if machine in ("x86_64", "AMD64"):
        flags = _cpu_flags()
        if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
            return "x86-avx512"
        if {"avx2", "fma"} <= flags:
            return "x86-avx2"
        return None
    if machine in ("aarch64", "arm64"):
        return "arm64-linux"
    return None


@functools.lru_cache(maxsize=1)
def host() -> TargetInfo:
    """This machine's target: its detected profile (so tuned schedules apply), else the CPU LLVM
    names with all cores."""
    name = detect_profile_name()
    found = profiles()
    if name in found:
        info = found[name].target_info()
        if info.runs_here:
            return info
    from tvm.target import codegen

    cfg: dict = {"kind": "llvm", "num-cores": knobs.num_threads()}
    if platform.machine() in ("x86_64", "AMD64"):
        cfg["mcpu"] = codegen.llvm_get_system_cpu()
    elif platform.machine() in ("aarch64", "arm64"):
        cfg["mtriple"] = "aarch64-linux-gnu"
        cfg["mattr"] = ["+neon"]
    return make(cfg, profile="host")


def resolve(target=None) -> TargetInfo:
    """Accepts None (``TVMCONV_TARGET`` or the host), ``'host'``, a profile name such as
    ``'x86-avx2'``, a ``TargetInfo``, a TVM target dict, or its JSON text. Raises ``ValueError``
    naming ``target`` for anything else."""
    if target is None:
        env = knobs.default_target()
        return resolve(env) if env else host()
    if isinstance(target, TargetInfo):
        return target
    if isinstance(target, Profile):
        return target.target_info()
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
        if text in ("host", "native"):
            return host()
        env = os.environ
        return _named(text, env.get("TVMCONV_TARGETS_DIR"), env.get("TVMCONV_CACHE_DIR"), env.get("XDG_CACHE_HOME"),
                      env.get("TVMCONV_SHIPPED_DIR"))
    raise ValueError(f"target must be None, 'host', a profile name, a TVM target dict such as "
                     f"{{'kind': 'llvm', 'mcpu': 'znver3'}}, or its JSON text; got {target!r}")
