"""Build step: the repository's top-level ``targets/``, ``schedules/`` and ``costmodels/`` travel inside the wheel
as ``tvmconv/_shipped/`` (found through importlib.resources, see knobs.shipped_dir) without a
second copy in git. The raw tuning logs (tuning_logs/, about 90 MB) stay in the repository."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("targets", "schedules", "costmodels")


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository itself
        here = Path(__file__).resolve().parent
        for name in SHIPPED:
            dest = Path(self.build_lib) / "tvmconv" / "_shipped" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(here / name, dest)


setup(cmdclass={"build_py": BuildPyWithShipped})
