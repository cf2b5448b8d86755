"""The package's layers (docs/design.md): each imports only the ones before it, deferred imports
included, but for a short list with reasons; no import circle. The runtime does not pull in the
search: an op that runs a tuned record loads it without importing any of tvmconv's tuning modules
that import MetaSchedule (they patch sys.modules for MetaSchedule's workers, see
tuning/intrinsics.py). The command line starts without torch or TVM."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    graph = {name: _imports(path, name, set(files)) for name, path in files.items()}
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


def _imports(path: Path, name: str, modules: set[str], deferred: bool = False) -> set[str]:
    """The tvmconv modules ``name`` imports when it is imported; with ``deferred``, also those its
    functions import when they run."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # (imports for type checkers only never run)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    out = set()
    for node in ast.walk(tree) if deferred else tree.body:
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


def _package_graph(deferred: bool) -> dict[str, set[str]]:
    root = Path(tvmconv.__file__).parent
    files = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
             for p in root.rglob("*.py")}
    return {name: _imports(path, name, set(files), deferred) for name, path in files.items()}


# The layers of docs/design.md's picture, in order: a module imports its own layer and those before
# it, at import time and in its functions alike (the package's __init__, a facade that loads the
# public names on first use, is no layer).
LAYERS = (
    ("tvmconv.knobs", "tvmconv.storage", "tvmconv.spec", "tvmconv._args"),
    ("tvmconv.variants", "tvmconv.reference"),
    ("tvmconv.backends",),
    ("tvmconv.runtime",),
    ("tvmconv.functional", "tvmconv.ops", "tvmconv.nn"),
    ("tvmconv.models",),
    ("tvmconv.graph",),
    ("tvmconv.suites",),
    ("tvmconv.tuning",),
    ("tvmconv.tools", "tvmconv.__main__"),
)
# The imports of a later layer, each with its reason. Keep it short: a new entry is a design decision.
UPWARD = {
    ("tvmconv._args", "tvmconv.backends.registry"):
        "argument checks refuse a tensor on a device no backend runs: the backends' registry knows "
        "their device types (importing it registers the backends)",
    ("tvmconv.spec", "tvmconv.variants"):
        "spec_from_dict rebuilds a spec of any family, and the families (which import spec) register "
        "their spec classes in variants",
    ("tvmconv.variants.registry", "tvmconv.functional"):
        "Variant.op is the op tvmconv.functional generates from the registry",
}


# Deferred imports that close a circle inside a layer, each with its reason.
CIRCLES = {
    ("tvmconv.functional", "tvmconv.ops"):
        "an op called with autograd or under torch.compile goes through its custom op, which "
        "tvmconv.ops generates from the functional ops",
}


def _layer(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in layer):
            return i
    return None


def test_every_module_has_a_layer():
    assert [m for m in _package_graph(False) if m != "tvmconv" and _layer(m) is None] == []


def test_imports_go_to_earlier_layers_deferred_ones_included():
    """design.md: each layer imports only the ones above it. Imports inside functions count too:
    they close circles the module-level check cannot see ("the cache imports the backends, the
    backends import the cache")."""
    found = {(name, dep) for name, deps in _package_graph(True).items() if name != "tvmconv"
             for dep in deps if dep != "tvmconv" and _layer(dep) > _layer(name)}
    assert found == set(UPWARD), sorted(found ^ set(UPWARD))


@pytest.mark.parametrize("deferred", [False, True], ids=["module level", "deferred included"])
def test_the_package_has_no_import_cycle(deferred):
    """No circle at import time; with the imports inside functions, none but through ``UPWARD`` and
    ``CIRCLES``."""
    listed = {**UPWARD, **CIRCLES}
    graph = {name: deps - {dep for (n, dep) in listed if n == name} if deferred else deps
             for name, deps in _package_graph(deferred).items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        for dep in graph[name]:
            assert dep not in path, "import cycle: " + " -> ".join(path[path.index(dep):] + [dep])
            if dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    for name in graph:
        visit(name, [name])
