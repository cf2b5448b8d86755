"""Only tvmconv/backends/ branches on the device kind: every other module asks the target's
backend (``target.backend``: its facts, schedules, toolchain, timing, vendor path).

The rule, checked on the syntax tree of every module of the package outside tvmconv/backends/:

* no attribute named ``is_cuda`` or ``is_host_runnable`` is read (a target's, or a tensor's);
* no comparison (``==``, ``!=``, ``in``, ``not in``, ``is``) has as an operand a device kind's
  string ("cuda", "llvm", "cpu") or a build kind's ("native", "cross", "ndk"), or a tuple, list
  or set literal holding one -- whatever it is compared with (a ``.kind``, a ``.type``, a variable);
* no ``match`` case matches one of those strings;
* no ``startswith``/``endswith`` call tests a platform's name ("android", "aarch64", "arm", "x86") in a
  triple or a profile: the profile says what that platform needs (its build `harness`, ``Toolchain.build_of``).

Strings passed as arguments (``device="cuda"``) are not branches and are not checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tvmconv

ROOT = Path(tvmconv.__file__).parent
KIND_ATTRIBUTES = {"is_cuda", "is_host_runnable"}
KIND_STRINGS = {"cuda", "llvm", "cpu", "native", "cross", "ndk", "zig"}
PLATFORMS = ("android", "aarch64", "arm", "x86")
EXEMPT_DIRS = ("backends",)


def _is_kind_string(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in KIND_STRINGS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_kind_string(e) for e in node.elts)
    return False


def device_kind_branches(source: str) -> list[tuple[int, str]]:
    """``(line, what)`` for every device-kind branch in ``source`` (the rule above)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in KIND_ATTRIBUTES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Compare) and any(_is_kind_string(x) for x in [node.left, *node.comparators]):
            found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.MatchValue) and _is_kind_string(node.value):
            found.append((node.lineno, f"case {ast.unparse(node.value)}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("startswith", "endswith") \
                and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith(PLATFORMS)
                        for a in node.args):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_rule_catches_what_it_names():
    src = ("if t.is_cuda: pass\nif t.kind == 'cuda': pass\nif d.type in ('cpu', 'cuda'): pass\n"
           "x = 'a' if k != \"llvm\" else 'b'\nmatch k:\n    case 'cuda': pass\nok = t.kind == 'ocvec'\n"
           "torch.ones(3, device='cuda')\nif triple.endswith('android'): pass\nif tools.kind == 'zig': pass\n"
           "if name.startswith('conv'): pass\n")
    assert sorted(line for line, _ in device_kind_branches(src)) == [1, 2, 3, 4, 6, 9, 10]


def test_no_device_kind_branch_outside_backends():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in EXEMPT_DIRS:
            continue
        for line, what in device_kind_branches(path.read_text()):
            bad.append(f"tvmconv/{rel.as_posix()}:{line}: {what}")
    assert not bad, "device-kind branches outside tvmconv/backends/ (ask target.backend):\n" + "\n".join(bad)
