"""The C that ``tvmconv export`` writes, kept as files in ``tools/c/`` (shipped in the wheel) and
read here when an export writes them.

Two fragments are shared. ``libc_decls.h`` declares the libc functions the generated C calls,
with the prototypes glibc and Android's bionic share, so that the files need only the compiler's
own headers: they build for Linux and, without the NDK's headers, for Android
(backends/android.py). (runtime.c keeps pthread_mutex_t and pthread_cond_t as opaque 64-byte
blocks for the same reason: their size differs between the two, 40 to 48 bytes, and all zeros is
both libraries' static initializer.) ``ffi_types.h`` holds the DLPack and tvm-ffi types of a
kernel's calling convention, so that C callers need neither header (one that includes dlpack.h
or tvm-ffi's c_api.h first keeps its own). A file includes a fragment with a plain
``#include "libc_decls.h"`` line, which ``text`` replaces by the fragment, so that every file an
export writes stands alone. The templates (``model.h``, ``model.c``) hold ``${name}``
placeholders (``string.Template``) that ``render`` fills in; ``kernels_head.h`` is the start of
``tvmconv_kernels.h``, whose kernel table export.py appends.
"""

from __future__ import annotations

import re
from importlib import resources
from string import Template

# the fragments inlined where a file includes them (any other #include stays as written)
_FRAGMENT = re.compile(r'^#include "(libc_decls\.h|ffi_types\.h)"\n', re.MULTILINE)


def text(name: str) -> str:
    """``tools/c/<name>`` with the fragments it includes inlined."""
    raw = resources.files(__package__).joinpath("c", name).read_text(encoding="utf-8")
    return _FRAGMENT.sub(lambda m: text(m[1]), raw)


def render(name: str, **values) -> str:
    """The template ``tools/c/<name>`` with its ``${key}`` placeholders replaced by ``values``
    (every one must be given: KeyError names one that is not)."""
    return Template(text(name)).substitute(values)


def names() -> list[str]:
    """Every file in ``tools/c/``."""
    return sorted(f.name for f in resources.files(__package__).joinpath("c").iterdir() if f.is_file())
