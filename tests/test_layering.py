"""The runtime does not pull in the search: an op that runs a tuned record loads it without
importing tvmconv's tuning module (which patches sys.modules for MetaSchedule's workers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import sys, torch
    import tvmconv.functional as TF
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    with TF.capture_kernels() as ks:
        TF.conv2d(x, w, padding=1, target="x86-avx2")
    assert ks[0].schedule_source.startswith("tuned:"), ks[0].schedule_source
    print("tvmconv.kernels.tuning" in sys.modules)
""")


def test_running_a_tuned_record_does_not_import_the_search():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "False"


def test_the_command_line_starts_without_torch_or_tvm():
    """``tvmconv --help`` and ``--version`` answer at once: the package loads its submodules on
    first use, and the CLI imports what a command needs inside the command."""
    probe = "import sys, tvmconv, tvmconv.cli; print('torch' in sys.modules, 'tvm' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["False", "False"], run.stderr[-2000:]


def test_using_an_op_registers_the_custom_ops():
    probe = ("import torch, tvmconv.functional as TF; "
             "print(all(hasattr(torch.ops.tvmconv, n) for n in TF.__all__))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "True", run.stderr[-2000:]
