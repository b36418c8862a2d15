"""A device's telemetry, paced and sustained blocks are untrusted like the rest of its result: a
shape the schema does not allow, a number that is not one, a list past its cap is refused with
the field that is wrong, and the row becomes failed/invalid_result (collect keeps the raw file;
every other row of the run stays, tests/test_hostile_outputs.py)."""

import copy
import json
from pathlib import Path

import pytest

from agent import schema
from orchestrator import collect, records

GOLDEN = Path(__file__).parent / "golden" / "result-ok1.json"

GOOD_TELEMETRY = {
    "interval_ms": 100.0,
    "sources": [{"name": "thermal", "kind": "thermal", "method": "sysfs:thermal_zone",
                 "rate_hz": 10.0, "unit": "C", "channels": ["temp_c:cpu-thermal"]},
                {"name": "ina219", "kind": "power", "method": "hwmon:ina219", "rate_hz": 10.0,
                 "unit": "W", "channels": ["power_w:ina219"]}],
    "series": {"t_s": [0.0, 0.1, 0.2], "temp_c:cpu-thermal": [45.0, 46.0, None],
               "power_w:ina219": [4.5, 4.5, 4.5]},
    "summary": {"temp_start_c": 45.0, "temp_end_c": 46.0, "temp_min_c": 45.0, "temp_max_c": 46.0,
                "freq_min_mhz": None, "freq_max_mhz": None, "power_mean_w": 4.5,
                "throttled": False, "samples": 3},
    "energy": {"method": "integral of sampled power", "source": "ina219", "energy_j": 0.9,
               "per_inference_mj": 3.6, "power_mean_w": 4.5, "inferences_per_j": 277.7,
               "idle_power_w": None, "idle_subtracted": False, "window_s": 0.2,
               "by_source": {"ina219": 0.9}, "clock_offset_s": None},
    "error": None,
}


def _doc(**telemetry):
    doc = json.loads(GOLDEN.read_text())
    tel = copy.deepcopy(GOOD_TELEMETRY)
    tel.update(telemetry)
    doc["telemetry"] = tel
    return doc


def _problems(doc):
    job = {"nonce": doc["nonce"], "run_id": doc["run_id"]}
    raw = json.dumps(doc).encode()
    _, problems = collect.parse_result(raw, job, doc["case_id"])
    return problems


def test_a_well_formed_telemetry_block_passes_both_checks():
    doc = _doc()
    assert _problems(doc) == []
    assert records.from_doc(doc).telemetry["energy"]["energy_j"] == 0.9


HOSTILE = [
    ("series past its cap", dict(series={"t_s": [0.0] * 100000}), "telemetry.series.t_s",
     "more than 2000"),
    ("channels of different lengths", dict(series={"t_s": [0.0, 1.0], "x": [1.0]}),
     "telemetry.series.x", "points"),
    ("a value that is text", dict(series={"t_s": [0.0], "x": ["hot"]}), "telemetry.series.x[0]",
     "finite number"),
    ("a null time", dict(series={"t_s": [None]}), "telemetry.series.t_s[0]", "finite number"),
    ("too many channels", dict(series=dict([("t_s", [0.0])] + [("c%d" % i, [1.0])
                                                                for i in range(300)])),
     "telemetry.series", "more than 256"),
    ("a series without times", dict(series={"x": [1.0]}), "telemetry.series.t_s", "required"),
    ("a source that is not an object", dict(sources=["thermal"]), "telemetry.sources[0]",
     "expected an object"),
    ("too many sources", dict(sources=[GOOD_TELEMETRY["sources"][0]] * 65), "telemetry.sources",
     "more than 64"),
    ("an unknown source kind", dict(sources=[dict(GOOD_TELEMETRY["sources"][0], kind="magic")]),
     "telemetry.sources[0].kind", "must be one of"),
    ("energy as text", dict(energy=dict(GOOD_TELEMETRY["energy"], energy_j="lots")),
     "telemetry.energy.energy_j", "expected"),
    ("energy as a boolean", dict(energy=dict(GOOD_TELEMETRY["energy"], per_inference_mj=True)),
     "telemetry.energy.per_inference_mj", "boolean"),
    ("an extra energy field", dict(energy=dict(GOOD_TELEMETRY["energy"], joules=1)),
     "telemetry.energy.joules", "unknown field"),
    ("a by_source flood", dict(energy=dict(GOOD_TELEMETRY["energy"],
                                           by_source=dict(("s%d" % i, 1.0) for i in range(100)))),
     "telemetry.energy.by_source", "more than 64"),
    ("a summary that is a list", dict(summary=[1, 2]), "telemetry.summary", "expected dict"),
    ("a throttle flag that is text", dict(summary=dict(GOOD_TELEMETRY["summary"],
                                                       throttled="no")),
     "telemetry.summary.throttled", "expected bool"),
    ("an unknown telemetry field", dict(extra={"a": 1}), "telemetry.extra", "unknown field"),
]


@pytest.mark.parametrize("changes,field,words", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_telemetry_is_refused_naming_the_field(changes, field, words):
    problems = _problems(_doc(**changes))
    assert any(p.startswith(field + ":") and words in p for p in problems), problems


def _timing_doc(**timing):
    doc = json.loads(GOLDEN.read_text())
    doc["timing"].update(timing)
    return doc


PACED = {"target_fps": 100.0, "arrival": "periodic", "deadline_ms": 10.0, "on_late": "skip",
         "frames": 10, "issued": 10, "dropped": 0, "late": 0, "miss_rate": 0.0,
         "achieved_fps": 100.0, "from_schedule": None, "from_issue": None,
         "latencies_from_schedule_ms": [5.0] * 10}
TIMING_HOSTILE = [
    ("paced frames negative", dict(paced=dict(PACED, frames=-1)), "timing.paced.frames",
     "negative"),
    ("paced arrival unknown", dict(paced=dict(PACED, arrival="bursty")), "timing.paced.arrival",
     "must be one of"),
    ("paced latencies not numbers", dict(paced=dict(PACED, latencies_from_schedule_ms=["x"])),
     "timing.paced.latencies_from_schedule_ms[0]", "finite number"),
    ("paced summary with an extra field", dict(paced=dict(PACED, from_issue={"p42": 1.0})),
     "timing.paced.from_issue.p42", "unknown field"),
    ("windows past their cap", dict(windows=[{"n": 1}] * (schema.MAX_WINDOWS + 1)),
     "timing.windows", "more than"),
    ("a window that is not an object", dict(windows=[1]), "timing.windows[0]",
     "expected an object"),
    ("a window count as text", dict(windows=[{"n": "many"}]), "timing.windows[0].n", "expected"),
    ("a wall clock as text", dict(wall_start_unix="now"), "timing.wall_start_unix", "expected"),
]


@pytest.mark.parametrize("changes,field,words", [h[1:] for h in TIMING_HOSTILE],
                         ids=[h[0] for h in TIMING_HOSTILE])
def test_hostile_mode_blocks_are_refused_naming_the_field(changes, field, words):
    problems = _problems(_timing_doc(**changes))
    assert any(p.startswith(field + ":") and words in p for p in problems), problems
