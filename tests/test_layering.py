"""The runtime does not pull in the search: an op that runs a tuned record loads it without
importing any of tvmconv's tuning modules that import MetaSchedule (they patch sys.modules for
MetaSchedule's workers, see tuning/intrinsics.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import tvmconv

PROBE = textwrap.dedent("""
    import sys, torch
    import tvmconv.functional as TF
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    with TF.capture_kernels() as ks:
        TF.conv2d(x, w, padding=1, target="x86-avx2")
    assert ks[0].schedule_source.startswith("tuned:"), ks[0].schedule_source
    print(" ".join(sorted(m for m in sys.modules if m.startswith("tvmconv.tuning."))) or "none")
""")


def _tuning_modules_importing_metaschedule() -> set[str]:
    """The modules of tvmconv.tuning that import MetaSchedule themselves or through another."""
    root = Path(tvmconv.__file__).parent
    files = {f"tvmconv.tuning.{p.stem}": p for p in (root / "tuning").glob("*.py") if p.stem != "__init__"}
    graph = {name: _module_level_imports(path, name, set(files)) for name, path in files.items()}
    found = {name for name, path in files.items() if "meta_schedule" in path.read_text()}
    while True:
        more = {name for name, deps in graph.items() if deps & found} - found
        if not more:
            return found
        found |= more


def test_running_a_tuned_record_does_not_import_the_search():
    searching = _tuning_modules_importing_metaschedule()
    assert {"tvmconv.tuning.log", "tvmconv.tuning.measure", "tvmconv.tuning.space",
            "tvmconv.tuning.scheduler", "tvmconv.tuning.candidates"} <= searching
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = set(run.stdout.strip().splitlines()[-1].split()) - {"none"}
    assert not imported & searching, imported


def test_the_command_line_starts_without_torch_or_tvm():
    """``tvmconv --help`` and ``--version`` answer at once: the package loads its submodules on
    first use, and the CLI imports what a command needs inside the command."""
    probe = "import sys, tvmconv, tvmconv.tools.cli; print('torch' in sys.modules, 'tvm' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["False", "False"], run.stderr[-2000:]


def test_importing_tvmconv_ops_registers_every_custom_op():
    probe = ("import torch, tvmconv.ops, tvmconv.functional as TF; "
             "print(all(hasattr(torch.ops.tvmconv, n) for n in TF.__all__))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "True", run.stderr[-2000:]


def _module_level_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The tvmconv modules ``name`` imports when it is imported (imports inside functions run
    later, on use, and make no cycle at import time)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else base)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in modules and m != name}


def test_the_package_has_no_import_cycle():
    root = Path(tvmconv.__file__).parent
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    graph = {name: _module_level_imports(path, name, set(files)) for name, path in files.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for dep in graph[name]:
            assert dep not in path, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    for name in graph:
        visit(name, [name])
