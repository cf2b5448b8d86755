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
