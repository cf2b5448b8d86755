"""A regular install carries the product: the wheel holds the target profiles and the shipped
schedules, and an op run from it, outside the checkout, finds its shipped record."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs in a virtual environment holding only the wheel (its dependencies reached through a .pth
# file naming this environment's site-packages, so nothing is downloaded again).
PROBE = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    import tvmconv, tvmconv.functional as TF
    from tvmconv import knobs
    from tvmconv.backends import target
    assert sys.argv[1] in tvmconv.__file__, tvmconv.__file__
    assert "_shipped" in str(knobs.shipped_dir()), knobs.shipped_dir()
    assert {"x86-avx2", "x86-avx512", "arm64-linux"} <= set(target.profiles()), sorted(target.profiles())
    from tvmconv.backends import openmp
    from tvmconv.tools import c_sources
    assert "tvmconv_parallel_launch" in openmp.launch_source()
    assert "tvmconv_model_run" in c_sources.render("model.c", **dict.fromkeys(
        ("decls", "shapes", "bufs", "steps", "most", "n_steps", "n_bufs", "arena", "in_offsets", "in_bytes",
         "input_slot", "outputs"), "1"))
    x, w = torch.randn(1, 64, 56, 56), torch.randn(64, 64, 3, 3)
    with TF.capture_kernels() as ks:
        y = TF.conv2d(x, w, padding=1, target="x86-avx2")
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), atol=1e-3, rtol=1e-3)
    print(ks[0].schedule_source)
""")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
                   check=True, cwd=out)
    (whl,) = out.glob("tvmconv-*.whl")
    return whl


def test_the_wheel_carries_profiles_and_schedules_but_not_the_logs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if n.startswith("tvmconv/_shipped/")]
    assert "tvmconv/_shipped/targets/x86-avx2.json" in shipped
    schedules = [n for n in shipped if n.startswith("tvmconv/_shipped/schedules/x86-avx2/")]
    assert len(schedules) == len(list((REPO / "schedules" / "x86-avx2").glob("*.json")))
    assert not [n for n in names if "tuning_logs" in n]


def test_the_wheel_carries_the_c_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "tvmconv"
    sources = {p.relative_to(REPO).as_posix() for ext in ("c", "h", "S") for p in package.rglob(f"*.{ext}")}
    assert {"tvmconv/backends/openmp_launch.c", "tvmconv/tools/c/runtime.c", "tvmconv/tools/c/model.c"} <= sources
    assert sources <= names, sorted(sources - names)


@pytest.mark.skipif(not (REPO / "targets").is_dir(), reason="needs the repository's shipped data")
def test_an_op_run_from_the_installed_wheel_finds_its_shipped_record(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True)
    # the dependencies, after the wheel's own files on sys.path (this environment's tvmconv is an
    # editable install, which a .pth-added directory does not bring along)
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TVMCONV_SHIPPED", "PYTHONPATH"))}
    env["TVMCONV_CACHE_DIR"] = str(tmp_path / "cache")
    run = subprocess.run([str(python), "-c", PROBE, str(site)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("tuned:"), run.stdout
