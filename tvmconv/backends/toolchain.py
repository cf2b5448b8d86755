"""The C toolchain a CPU target's libraries are linked with, written once for ``tvmconv export``
and for tuning's builder: native (``$CC``, else gcc), a cross compiler named by the profile
(``build: {"kind": "cross", "cc": ...}``) or, for Android (``build: {"kind": "ndk"}``), the NDK's
clang++ named by ``TVM_NDK_CC``, else zig without the NDK (backends/android.py)."""

from __future__ import annotations

import functools
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

NDK_HELP = "see docs/design.md, 'Phones and ARM boards'"


@dataclass(frozen=True)
class Toolchain:
    """``cc`` and ``ar`` link a target's objects; ``runner`` runs one of its binaries here (qemu
    for aarch64 on another machine, else nothing)."""

    kind: str  # "native", "cross", "ndk" or "zig" (Android without the NDK)
    cc: str
    ar: str
    runner: tuple = field(default=())

    @classmethod
    def for_target(cls, target) -> "Toolchain":
        """The toolchain of ``target``'s profile (native where it has none). Raises ValueError
        for an NDK profile when ``TVM_NDK_CC`` is unset: the one place that checks it."""
        return cls.from_build(cls.build_of(target), target.profile, target.dict.get("mtriple", ""))

    @staticmethod
    def build_of(target) -> dict:
        """How ``target``'s profile builds (its ``build``); native where it has none. Reading it needs
        no tool (``for_target`` checks they are there). ``harness``: the profile whose toolchain builds
        a program of this target's objects to run on this machine, where this one's cannot run here
        (android-arm64: no phone; its objects, linked statically by the Linux aarch64 toolchain, run
        under qemu)."""
        from .target import profiles

        prof = profiles().get(target.profile)
        return prof.build if prof else {"kind": "native"}

    @classmethod
    def from_build(cls, build: dict, profile: str, triple: str = "") -> "Toolchain":
        kind = build.get("kind", "native")
        if kind == "cross":
            cc = build["cc"]
            ar = cc[:-3] + "ar" if cc.endswith("gcc") else "ar"
        elif kind == "ndk":
            cc = os.environ.get("TVM_NDK_CC")
            if cc:
                ar = str(Path(cc).with_name("llvm-ar"))
            else:  # no NDK: zig links for Android (backends/android.py)
                from . import android

                if android.zig() is None:
                    raise ValueError(f"target {profile!r} links for Android: {android.HELP} ({NDK_HELP})")
                kind, cc, ar = "zig", " ".join(android.cc()), "ar"
        else:
            cc, ar = os.environ.get("CC", "gcc"), "ar"
        runner: tuple = ()
        if triple.startswith("aarch64") and platform.machine() not in ("aarch64", "arm64"):
            runner = ("qemu-aarch64-static",)
        return cls(kind=kind, cc=cc, ar=ar, runner=runner)

    def require(self, what: str, *, compiler_always: bool = False) -> None:
        """Raise FileNotFoundError naming ``what`` where a tool is not on PATH: the cross compiler
        (any compiler with ``compiler_always``), and the runner."""
        if self.kind == "cross" or compiler_always:
            _need(self.cc.split()[0], what)
        if compiler_always and self.runner:
            _need(self.runner[0], f"{what} for an aarch64 target")

    def build_library(self, out: Path, name: str, sources: list[str], objects: list[str]) -> None:
        """``lib<name>.so`` and ``lib<name>.a`` in ``out`` from the C and assembly ``sources`` and
        the ``objects`` there: by the Makefile the exporter wrote beside them (its targets of those
        names), or for Android without the NDK compiled and linked by zig against stub libraries
        (backends/android.py), as the Makefile would need the NDK's crt objects."""
        import subprocess

        if self.kind != "zig":
            subprocess.run(["make", "-s", f"lib{name}.so", f"lib{name}.a"], cwd=out, check=True, capture_output=True)
            return
        from . import android

        built = []
        for src in sources:
            obj = Path(src).stem + ".o"
            subprocess.run([*android.cc(), "-O2", "-fPIC", "-c", src, "-o", obj], cwd=out, check=True,
                           capture_output=True)
            built.append(out / obj)
        built += [out / o for o in objects]
        android.link_shared(out / f"lib{name}.so", built, f"lib{name}.so")
        subprocess.run([self.ar, "rcs", f"lib{name}.a", *[o.name for o in built]], cwd=out, check=True,
                       capture_output=True)

    def export_library(self, executable, path: str) -> None:
        """Link ``executable`` (``tvm.compile``'s result) into the shared library ``path``."""
        export_library(executable, str(path), self.kind, self.cc)

    def tuning_export(self):
        """MetaSchedule ``LocalBuilder``'s ``f_export`` (picklable: it runs in the builder's worker
        processes), or None for a native build, where MetaSchedule's own export is the same."""
        if self.kind == "native":
            return None
        return functools.partial(export_to_temp, kind=self.kind, cc=self.cc)


def _need(tool: str, what: str) -> None:
    if shutil.which(tool) is None:
        raise FileNotFoundError(f"{what} needs `{tool}`, which is not on PATH (Debian's aarch64 cross compiler "
                                f"and qemu: bash scripts/cross-tools.sh)")


def export_library(executable, path: str, kind: str, cc: str) -> None:
    if kind == "cross":
        from tvm.support import cc as _cc

        executable.export_library(path, fcompile=_cc.cross_compiler(cc))
    elif kind == "ndk":
        from tvm.support import ndk  # it reads TVM_NDK_CC itself

        executable.export_library(path, fcompile=ndk.create_shared)
    elif kind == "zig":
        executable.export_library(path, fcompile=_zig_shared)
    else:
        executable.export_library(path)


def _zig_shared(output: str, objects: list, options=None) -> None:
    """TVM's ``fcompile`` for Android without the NDK: a kernel library TVM's runtime loads, so
    it names the runtime (``libtvm_runtime.so``) for the error hook it imports."""
    from . import android

    android.link_shared(Path(output), objects, Path(output).name, runtime_stub=True)


_zig_shared.output_format = "so"


def export_to_temp(rt_mod, kind: str, cc: str) -> str:
    """Tuning's export: ``rt_mod`` linked into a fresh temporary directory; returns the path."""
    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    export_library(rt_mod, path, kind, cc)
    return path
