"""What is measured and tuned, below tuning and the command line: the named suites of layer shapes
(``shapes``), the workloads of a spec, suite, model or exported file (``workloads``), and a
workload's case timed against its vendor path (``cases``)."""

from .shapes import SUITES, conv, suite

__all__ = ["SUITES", "conv", "suite"]
