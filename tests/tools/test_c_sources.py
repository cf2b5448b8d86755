"""Every C source the package ships (tools/c/, backends/openmp_launch.c) compiles as C with every
warning an error, written out the way the code writes it: the fragments inlined, the templates
filled in, in a folder that holds only what an export writes (so a file that still needed a
fragment would not build)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import tvmconv
from tvmconv.backends import openmp
from tvmconv.tools import c_sources
from tvmconv.tools import export as X
from tvmconv.tools import export_model as XM
from tvmconv.suites import conv

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

PACKAGE = Path(tvmconv.__file__).parent
FRAGMENTS = {"tools/c/libc_decls.h", "tools/c/ffi_types.h"}  # compiled inside the files that include them


def _program() -> XM.Program:
    """A small model program: two steps, float and int64 buffers, two outputs."""
    b = XM.Buffer
    return XM.Program(funcs={"k0": None, "k1": None},
                      buffers=[b("input", (1, 4, 3), "float32"), b("const", (4,), "float32", 0),
                               b("temp", (1, 4, 3), "float32", 0), b("temp", (2,), "int64", 64)],
                      steps=[("k0", [0, 1, 2]), ("k1", [2, 3])], inputs=[0], outputs=[2, 3], weights=b"",
                      arena=128, kernels={})


def _written() -> dict[str, tuple[str, str]]:
    """``{packaged file: (the file the code writes from it, its text)}``."""
    exported = [X.Exported(conv(3, (7, 7), 5, 3), "tvmconv_k", 1, "default", None)]
    return {
        "backends/openmp_launch.c": ("openmp_launch.c", openmp.launch_source()),
        "tools/c/runtime.c": ("tvmconv_runtime.c", c_sources.text("runtime.c")),
        "tools/c/kernels_head.h": ("tvmconv_kernels.h", X._kernels_header(exported)),
        "tools/c/kernels_example.c": ("example.c", c_sources.text("kernels_example.c")),
        "tools/c/model.h": ("tvmconv_model.h", XM._header(_program())),
        "tools/c/model.c": ("tvmconv_model.c", XM._driver(_program())),
        "tools/c/model_example.c": ("model_example.c", c_sources.text("model_example.c")),
        "tools/c/model_weights.S": ("tvmconv_model_weights.S", c_sources.text("model_weights.S")),
    }


def test_every_packaged_c_source_is_compiled_here():
    shipped = {p.relative_to(PACKAGE).as_posix() for ext in ("c", "h", "S") for p in PACKAGE.rglob(f"*.{ext}")}
    assert shipped == set(_written()) | FRAGMENTS
    assert {f"tools/c/{n}" for n in c_sources.names()} == {s for s in shipped if s.startswith("tools/c/")}


@pytest.mark.parametrize("source", sorted(s for s in _written() if not s.endswith(".h")))
def test_the_c_source_compiles_without_warnings(source, tmp_path):
    for name, text in _written().values():
        (tmp_path / name).write_text(text)
    (tmp_path / "tvmconv_model_weights.bin").write_bytes(bytes(64))  # (the assembly's .incbin)
    name = _written()[source][0]
    # -c to an object: the assembler (.S) runs too, and a header's error shows in the file including it
    run = subprocess.run(["gcc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-c", name, "-o", "out.o"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr

