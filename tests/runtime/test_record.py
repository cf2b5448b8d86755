"""The schedule record (runtime/record.py): typed fields, one reader and writer, versioned."""

import json
from pathlib import Path

import pytest

from tvmconv.backends.target import resolve
from tvmconv.runtime import cache
from tvmconv.runtime.cache import new_record
from tvmconv.runtime.record import RECORD_FORMAT, Candidate, Dispatch, RecordError, ScheduleRecord, Validation
from tvmconv.suites import conv

SHIPPED = sorted((Path(__file__).parents[2] / "schedules").glob("*/*.json"))
SPEC = conv(8, 10, 16, 3, 1, 1)


def _record() -> ScheduleRecord:
    return new_record(SPEC, resolve("x86-avx2"), plan={"kind": "ocvec", "vb": 2}, trace=[[["GetSBlock"]], []],
                      run_secs=1e-5, source="metaschedule", gflops=3.5, default_secs=2e-5, trials=9,
                      dispatch=Dispatch(choice="vendor", tvmconv_s=1e-5, vendor_s=5e-6, vendor="F.conv2d"),
                      validated=Validation(how="through the op", candidates=(
                          Candidate(id="a", source="default", plan={"kind": "plain"}, tuning_secs=2e-5,
                                    op_secs=None),)))


def test_a_record_round_trips_through_json():
    rec = _record()
    obj = json.loads(json.dumps(rec.to_dict()))
    again = ScheduleRecord.from_dict(obj)
    assert again == rec and again.to_dict() == obj
    assert again.key == cache.schedule_key(SPEC, resolve("x86-avx2")) and again.name == SPEC.name
    assert again.dispatch_choice == "vendor" and again.validated.candidates[0].op_secs is None
    assert "record_format" not in obj  # version 1 is the layout without the field


def test_unknown_and_absent_fields_are_kept_as_they_were():
    obj = {**_record().to_dict(), "note": {"by": "hand"}}
    del obj["gflops"]
    rec = ScheduleRecord.from_dict(obj)
    assert rec.gflops is None and rec.extra == {"note": {"by": "hand"}} and rec.to_dict() == obj


def test_the_version_is_checked():
    obj = _record().to_dict()
    assert ScheduleRecord.from_dict({**obj, "record_format": RECORD_FORMAT}).record_format == RECORD_FORMAT
    with pytest.raises(RecordError, match="newer tvmconv") as err:
        ScheduleRecord.from_dict({**obj, "record_format": RECORD_FORMAT + 1})
    assert err.value.field == "record_format"
    with pytest.raises(RecordError) as err:
        ScheduleRecord.from_dict({**obj, "record_format": "1"})
    assert err.value.field == "record_format"


BAD = {
    "run_secs": ({"run_secs": -1.0}, "run_secs"),
    "run_secs null": ({"run_secs": None}, "run_secs"),
    "key": ({"key": 7}, "key"),
    "trace": ({"trace": "GetSBlock"}, "trace"),
    "plan": ({"plan": []}, "plan"),
    "plan.vb": ({"plan": {"kind": "ocvec", "vb": "x"}}, "plan.vb"),
    "plan stage": ({"plan": {"stages": [["a", {"rows": 0}]]}}, "plan.stages[0].rows"),
    "trials": ({"trials": 2.5}, "trials"),
    "dispatch": ({"dispatch": "vendor"}, "dispatch"),
    "dispatch.choice": ({"dispatch": {"choice": "gpu"}}, "dispatch.choice"),
    "validated.candidates": ({"validated": {"candidates": [{"op_secs": "fast"}]}}, "validated.candidates[0].op_secs"),
}


@pytest.mark.parametrize("change, field", BAD.values(), ids=BAD.keys())
def test_a_bad_field_is_a_clear_error_naming_it(change, field):
    with pytest.raises(RecordError) as err:
        ScheduleRecord.from_dict({**_record().to_dict(), **change})
    assert err.value.field == field and str(err.value).startswith(field)


def test_a_missing_field_is_named():
    obj = _record().to_dict()
    del obj["spec"]
    with pytest.raises(RecordError, match="spec is missing"):
        ScheduleRecord.from_dict(obj)
    with pytest.raises(RecordError, match="not a JSON object"):
        ScheduleRecord.from_dict([obj])


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_record_parses_and_round_trips_byte_for_byte(path):
    text = path.read_text()
    rec = ScheduleRecord.from_dict(json.loads(text))
    assert rec.record_format == RECORD_FORMAT and rec.run_secs > 0 and rec.profile == path.parent.name
    assert json.dumps(rec.to_dict(), indent=1, sort_keys=True) + "\n" == text  # as cache.write_record writes it


def test_shipped_records_exist():
    assert len(SHIPPED) >= 50


def test_a_record_error_survives_pickling():
    """(Tuning hands its errors from the search process to the parent pickled.)"""
    import pickle

    err = pickle.loads(pickle.dumps(RecordError("plan.vb", "is 'x', not a positive integer")))
    assert err.field == "plan.vb" and str(err) == "plan.vb is 'x', not a positive integer"


def test_the_machine_a_dispatch_choice_was_measured_on_round_trips():
    d = Dispatch(choice="tvmconv", tvmconv_s=1e-5, vendor_s=2e-5, machine="0123456789ab",
                 machine_description="a CPU, x86-avx2, 2 threads")
    rec = _record().replace(dispatch=d)
    obj = json.loads(json.dumps(rec.to_dict()))
    assert obj["dispatch"]["machine"] == "0123456789ab" and ScheduleRecord.from_dict(obj) == rec
    assert _record().dispatch.machine is None and "machine" not in _record().to_dict()["dispatch"]  # absent stays absent
    with pytest.raises(RecordError, match="dispatch.machine"):
        ScheduleRecord.from_dict({**obj, "dispatch": {**obj["dispatch"], "machine": 5}})
