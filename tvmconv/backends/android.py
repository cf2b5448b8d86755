"""Android libraries linked without the NDK: zig from PyPI (``pip install 'tvmconv[android]'``).

TVM emits the kernels with LLVM for the triple ``aarch64-linux-android``; the generated C (the
parallel runtime, a model's driver, the example) includes only the compiler's own headers
(tools/c/libc_decls.h). Linking needs no Android sysroot either: stub libraries built here,
one function per symbol the objects import, stand for bionic's ``libc.so`` and ``libm.so`` (and
``libtvm_runtime.so`` for a kernel TVM's runtime loads) and only record ``DT_NEEDED``, as the
NDK's own stubs do. What Android's loader requires (bionic's android-changes-for-ndk-developers):
a ``SONAME``, ``DT_NEEDED`` by SONAME, no text relocations, no writable and executable segment,
16 KB page alignment for Android 15+ devices (Google Play requires it since November 2025), and a
SysV hash table beside the GNU one for old devices. ``check_elf`` reads those back with readelf.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

TRIPLE = "aarch64-linux-android"
LINK_FLAGS = ["-shared", "-nostdlib", "-Wl,-z,max-page-size=16384", "-Wl,--hash-style=both", "-Wl,-z,noexecstack",
              "-Wl,-z,defs", "-Wl,-z,relro", "-Wl,-z,now"]
HELP = "install zig with `pip install 'tvmconv[android]'`, or set TVM_NDK_CC to the NDK's clang++"
# bionic's libm; every other imported symbol is libc's
_LIBM = re.compile(r"^(a?(sin|cos|tan)h?|atan2|exp(2|m1)?|log(2|10|1p)?|pow|sqrt|cbrt|hypot|erfc?|[lt]gamma|ceil|floor|"
                   r"trunc|round|l?l?rint|nearbyint|fmod|remainder|fabs|fm(in|ax)|fma|copysign|ldexp|frexp|modf)[fl]?$")


def zig() -> str | None:
    """The zig compiler: the ``ziglang`` wheel's, else one on PATH."""
    try:
        import ziglang
    except ImportError:
        return shutil.which("zig")
    path = Path(ziglang.__file__).parent / "zig"
    return str(path) if path.exists() else shutil.which("zig")


def cc() -> list[str]:
    """The command that compiles C and links for Android; raises FileNotFoundError without zig."""
    path = zig()
    if path is None:
        raise FileNotFoundError(f"linking for Android without the NDK needs zig: {HELP}")
    return [path, "cc", "-target", TRIPLE]


def undefined_symbols(paths) -> set[str]:
    """The global symbols the ELF objects or archives at ``paths`` import and do not define among them."""
    defined, wanted = set(), set()
    for path in paths:
        for member in _elf_members(Path(path).read_bytes()):
            for name, undef in _symbols(member):
                (wanted if undef else defined).add(name)
    return wanted - defined


def link_shared(out: Path, objects: list, soname: str, *, runtime_stub: bool = False) -> None:
    """Link ``objects`` into the Android shared library ``out`` named ``soname``, against stubs of
    the libraries providing what they import (``runtime_stub``: the TVM runtime's error hook
    too, for a kernel loaded by TVM's runtime)."""
    with tempfile.TemporaryDirectory(prefix="tvmconv-android-") as tmp:
        stubs = _stubs(Path(tmp), undefined_symbols(objects), runtime_stub)
        cmd = [*cc(), *LINK_FLAGS, f"-Wl,-soname,{soname}", "-o", str(out), *map(str, objects), *map(str, stubs)]
        subprocess.run(cmd, check=True, capture_output=True)


def _stubs(d: Path, symbols: set, runtime_stub: bool) -> list[Path]:
    groups: dict[str, list[str]] = {"libc.so": [], "libm.so": []}
    for s in sorted(symbols):
        if runtime_stub and s.startswith("TVMFFI"):
            groups.setdefault("libtvm_runtime.so", []).append(s)
        else:
            groups["libm.so" if _LIBM.match(s) else "libc.so"].append(s)
    out = []
    for soname, names in groups.items():
        if not names:
            continue
        src, lib = d / f"{soname}.c", d / soname
        src.write_text("".join(f"void {n}(void) {{}}\n" for n in names))
        subprocess.run([*cc(), "-shared", "-nostdlib", f"-Wl,-soname,{soname}", "-o", str(lib), str(src)], check=True,
                       capture_output=True)
        out.append(lib)
    return out


def check_elf(path) -> list[str]:
    """What Android's loader would refuse in the shared library at ``path`` (empty: nothing),
    read with readelf."""
    def readelf(*flags):
        return subprocess.run(["readelf", "-W", *flags, str(path)], check=True, capture_output=True, text=True).stdout

    problems = []
    dynamic, segments, sections = readelf("-d"), readelf("-l"), readelf("-S")
    if "(SONAME)" not in dynamic:
        problems.append("no SONAME")
    if "(TEXTREL)" in dynamic or re.search(r"\(FLAGS\).*TEXTREL", dynamic):
        problems.append("text relocations")
    for needed in re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", dynamic):
        if "/" in needed:
            problems.append(f"DT_NEEDED by path: {needed}")
    for line in segments.splitlines():
        fields = line.split()
        if fields[:1] == ["LOAD"]:
            flags, align = " ".join(fields[6:-1]), int(fields[-1], 16)
            if align < 16384:
                problems.append(f"a LOAD segment aligned to {align} bytes, not 16 KB")
            if "W" in flags and "E" in flags:
                problems.append("a writable and executable segment")
        if fields[:1] == ["GNU_STACK"] and "E" in " ".join(fields[6:-1]):
            problems.append("an executable stack")
    for table in (".hash", ".gnu.hash"):
        if f" {table} " not in sections:
            problems.append(f"no {table} section")
    if "AArch64" not in readelf("-h"):
        problems.append("not an AArch64 library")
    return problems


# -- a little ELF reading (objects and ar archives of them) ---------------------------------------
def _elf_members(data: bytes):
    if data.startswith(b"!<arch>\n"):
        at = 8
        while at + 60 <= len(data):
            size = int(data[at + 48:at + 58])
            body = data[at + 60:at + 60 + size]
            if body.startswith(b"\x7fELF"):
                yield body
            at += 60 + size + (size & 1)
    elif data.startswith(b"\x7fELF"):
        yield data


def _symbols(elf: bytes):
    """``(name, undefined)`` of each global or weak symbol of a little-endian ELF64 object."""
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    for _, kind, _, _, off, size, link, _, _, entsize in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strtab = sections[link]
        for i in range(1, size // entsize):
            name_off, info, _, shndx, _, _ = struct.unpack_from("<IBBHQQ", elf, off + i * entsize)
            if info >> 4 not in (1, 2):  # STB_GLOBAL, STB_WEAK
                continue
            start = strtab[4] + name_off
            name = elf[start:elf.index(b"\0", start)].decode()
            if name:
                yield name, shndx == 0


__all__ = ["zig", "cc", "link_shared", "check_elf", "undefined_symbols", "TRIPLE", "HELP"]
