"""A tuning run's budget: the time limit (``parse_duration``), the deadline of each phase, and the
order the budget is spent in (``heaviest_first``).

With a time limit the run is planned backwards from its end: distilling the log into records
(``api.validate``: a few kernels compiled and timed through the op per workload) gets a reserve
estimated from one compile measured at the start; the search (plan candidates first, on every
workload, then MetaSchedule on the layers that cost most) gets the rest and stops at its deadline.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

# Trials per workload when only a time limit is given: a cap that a 10-minute run never reaches,
# so the limit decides (a trial is a schedule compiled and timed: well over 0.1 s here).
TRIALS_WITH_LIMIT = 1000

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value) -> float | None:
    """Seconds from ``value``: a number of seconds (int/float > 0), or a string ``"90s"``,
    ``"10m"``, ``"1.5h"`` (a bare number string is seconds); None stays None. Raises ValueError
    naming ``time_limit`` otherwise."""
    if value is None:
        return None
    secs = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", value.lower())
        if m:
            secs = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if secs is None or not math.isfinite(secs) or secs <= 0:
        raise ValueError(f"time_limit must be a positive number of seconds or a duration like '90s', '10m' or "
                         f"'1h', got {value!r}")
    return secs


@dataclass
class Deadlines:
    """Absolute times (``time.time()``) a limited run plans by: ``search`` (the child's search
    stops starting work that would end past it) and ``end`` (the whole call's)."""

    start: float
    end: float
    search: float

    @classmethod
    def plan(cls, start: float, limit_s: float, reserve_s: float) -> "Deadlines":
        """The search gets what the validation ``reserve_s`` leaves of ``limit_s`` (at least a
        tenth of it: where the reserve is larger, validation is cut short instead, ``api``)."""
        end = start + limit_s
        return cls(start=start, end=end, search=end - min(reserve_s, 0.9 * limit_s))

    def left(self, now: float | None = None) -> float:
        return self.end - (time.time() if now is None else now)


# Per workload, validation compiles the top candidates, the default and a saved record, and times
# them with the vendor path in interleaved rounds (about 2 s of timing at 5 rounds: settle and
# minimum round time per callable).
VALIDATE_KERNELS = 5
VALIDATE_TIMING_S = 2.5
DISTILL_OVERHEAD_S = 3.0  # reading the log back and writing the records


def validation_reserve(n_workloads: int, compile_s: float) -> float:
    """Seconds to keep for distilling ``n_workloads`` with validation, one kernel compile taking
    ``compile_s`` (measured at the start of the run)."""
    return DISTILL_OVERHEAD_S + n_workloads * (VALIDATE_KERNELS * compile_s + VALIDATE_TIMING_S)


def heaviest_first(costs: list[float | None], weights: list[float]) -> list[int]:
    """Indexes of workloads by ``cost * weight`` (seconds per call times occurrences in the
    network: what the layer costs the model), largest first; unmeasured ones (cost None) last, in
    their order."""
    known = [i for i, c in enumerate(costs) if c is not None]
    rest = [i for i, c in enumerate(costs) if c is None]
    return sorted(known, key=lambda i: (-costs[i] * weights[i], i)) + rest
