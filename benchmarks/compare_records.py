"""Same-run A/B of two versions of the shipped schedule records: for every workload of a suite,
the record at a git revision against the record in the working tree, both compiled and called
through the op (`tvmconv.functional`, dispatch off), interleaved, median of 9 rounds.

    python benchmarks/compare_records.py SUITE REVISION [NAME_FILTER,...] > out.jsonl
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tvmconv.runtime import cache
from tvmconv.runtime.record import ScheduleRecord

from tvmconv import suites

from tvmconv.backends import timing
from tvmconv.backends.target import resolve
from tvmconv.tuning.api import op_times


def main(suite: str, rev: str, only: str = "") -> None:
    tgt = resolve("x86-avx2")
    for spec, _ in suites.suite(suite):
        if only and not any(k in spec.name for k in only.split(",")):
            continue
        new, path = cache.find_record(spec, tgt)
        old = ScheduleRecord.from_dict(json.loads(subprocess.check_output(
            ["git", "show", f"{rev}:schedules/{tgt.profile}/{Path(path).name}"])))
        if old.schedule == new.schedule:
            print(json.dumps({"workload": spec.name, "same": True}), flush=True)
            continue
        (a, b), _ = op_times(spec, tgt, [old, new], rounds=9)
        if a is None or b is None:  # the op fell back to its default schedule
            print(json.dumps({"workload": spec.name, "error": f"the {'old' if a is None else 'new'} record does not "
                                                             f"apply to the current compute"}), flush=True)
            continue
        print(json.dumps({"workload": spec.name, "same": False, "old_source": old.source, "new_source": new.source,
                          "old_s": timing.median(a), "new_s": timing.median(b), "old_spread": timing.spread(a),
                          "new_spread": timing.spread(b), "speedup": timing.median(a) / timing.median(b)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
