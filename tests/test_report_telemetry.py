"""Results of layout 2 in the tables: telemetry, energy, paced and sustained blocks become
results.csv columns and comparison.md sections; a result without them leaves the columns empty
and adds no section. Device text in them is escaped like every other device string."""

import copy
import csv
import json
from pathlib import Path

from agent import schema
from orchestrator import records, report

GOLDEN = Path(__file__).resolve().parent / "golden"
NEW_COLUMNS = [
    "mode", "temp_start_c", "temp_end_c", "temp_min_c", "temp_max_c", "freq_min_mhz",
    "power_mean_w", "energy_j", "energy_per_inference_mj", "inferences_per_j", "idle_power_w",
    "energy_method", "paced_target_fps", "paced_miss_rate", "paced_dropped", "paced_achieved_fps",
    "paced_p50_from_schedule_ms", "paced_p99_from_schedule_ms", "sustained_drift",
    "sustained_throttle_onset_s"]


def golden_ok(case_id, label):
    doc = json.loads((GOLDEN / "result-ok1.json").read_text())
    doc.update(case_id=case_id, label=label)
    return doc


def telemetry_result():
    doc = golden_ok("c-000000tele", "movenet int8 | edgetpu")
    doc["telemetry"] = {
        "interval_ms": 100.0,
        "sources": [{"name": "power_w:VDD_IN", "kind": "power", "method": "hwmon ina3221",
                     "rate_hz": 9.8, "unit": "W", "channels": ["power_w:VDD_IN"]}],
        "summary": {"temp_start_c": 41.5, "temp_end_c": 47.25, "temp_min_c": 41.0,
                    "temp_max_c": 48.0, "freq_min_mhz": 1420.0, "freq_max_mhz": 1510.0,
                    "power_mean_w": 6.125, "throttled": False, "samples": 52},
        "energy": {"method": "=HYPERLINK(\"x\") sampled | power", "source": "power_w:VDD_IN",
                   "energy_j": 0.30625, "per_inference_mj": 1.2349, "power_mean_w": 6.125,
                   "inferences_per_j": 809.8, "idle_power_w": 2.5, "idle_subtracted": True,
                   "window_s": 0.05, "by_source": {"power_w:VDD_IN": 0.30625,
                                                   "energy_j:package-0": 0.2},
                   "clock_offset_s": None}}
    return doc


def paced_result():
    doc = golden_ok("c-00000paced", "paced 30 fps")
    doc["settings"].update(mode="paced", target_fps=30.0)
    doc["timing"]["paced"] = {
        "target_fps": 30.0, "arrival": "periodic", "deadline_ms": 33.3, "on_late": "skip",
        "frames": 300, "issued": 297, "dropped": 3, "late": 6, "miss_rate": 0.03,
        "achieved_fps": 29.7,
        "from_schedule": {"n": 297, "mean": 12.0, "p50": 11.5, "p90": 15.0, "p99": 41.25,
                          "max": 52.0},
        "from_issue": {"n": 297, "mean": 10.0, "p50": 9.75, "p90": 12.0, "p99": 14.5,
                       "max": 20.0},
        "latencies_from_schedule_ms": [11.5] * 10}
    return doc


def sustained_result(windows=100):
    doc = golden_ok("c-0sustained", "sustained 10 min")
    doc["settings"].update(mode="sustained", duration_s=600.0, window_s=6.0)
    doc["timing"]["windows"] = [
        {"start_s": 6.0 * i, "end_s": 6.0 * (i + 1), "n": 3000, "p50": 2.0 + i / 100.0,
         "p99": 2.5 + i / 100.0 if i % 2 else None, "temp_max_c": 50.0 + i / 10.0,
         "freq_min_mhz": 1500.0 if i < 40 else 1200.0, "power_w": 5.0 if i else None,
         "throttled": i >= 40} for i in range(windows)]
    doc["timing"]["sustained"] = {"duration_s": 600.0, "window_s": 6.0, "drift": 0.495,
                                  "throttle_onset_s": 240.0, "onset_reason": "throttle flag"}
    return doc


def rows_of(docs):
    for doc in docs:
        assert schema.check_result(doc) == [] and records.model_problems(doc) == [], doc["case_id"]
    return [report.flat_row(records.from_doc(d)) for d in docs]


def written(rows, tmp_path):
    report.write_csv(rows, tmp_path / "results.csv")
    with open(tmp_path / "results.csv", newline="") as f:
        return {r["case_id"]: r for r in csv.DictReader(f)}


def markdown(rows):
    header, body = report.comparison(rows, [rows[0]["device"]])
    return report.render_markdown(header, body, rows, rows[0]["run_id"])


DEPLOYMENT_COLUMNS = ["background", "op_profile_top", "inputs"]


def test_the_new_columns_are_appended_after_the_old_ones():
    tail = NEW_COLUMNS + DEPLOYMENT_COLUMNS + ["emulated"]
    assert report.COLUMNS[-len(tail):] == tail
    assert report.COLUMNS.index("finished_at") == len(report.COLUMNS) - len(tail) - 1


def test_telemetry_paced_and_sustained_blocks_fill_their_columns(tmp_path):
    plain = golden_ok("c-00000plain", "plain")
    got = written(rows_of([telemetry_result(), paced_result(), sustained_result(), plain]),
                  tmp_path)
    tele = got["c-000000tele"]
    assert (tele["mode"], tele["temp_start_c"], tele["temp_end_c"], tele["temp_min_c"],
            tele["temp_max_c"], tele["freq_min_mhz"], tele["power_mean_w"]) == \
        ("back_to_back", "41.5", "47.25", "41.0", "48.0", "1420.0", "6.125")
    assert (tele["energy_j"], tele["energy_per_inference_mj"], tele["inferences_per_j"],
            tele["idle_power_w"]) == ("0.30625", "1.2349", "809.8", "2.5")
    assert tele["energy_method"] == "'=HYPERLINK(\"x\") sampled | power"   # inert for a sheet
    paced = got["c-00000paced"]
    assert (paced["mode"], paced["paced_target_fps"], paced["paced_miss_rate"],
            paced["paced_dropped"], paced["paced_achieved_fps"],
            paced["paced_p50_from_schedule_ms"], paced["paced_p99_from_schedule_ms"]) == \
        ("paced", "30.0", "0.03", "3", "29.7", "11.5", "41.25")
    sustained = got["c-0sustained"]
    assert (sustained["mode"], sustained["sustained_drift"],
            sustained["sustained_throttle_onset_s"]) == ("sustained", "0.495", "240.0")
    # a result without the blocks (an older or back-to-back one): empty, mode the default
    assert got["c-00000plain"]["mode"] == "back_to_back"
    assert all(got["c-00000plain"][c] == "" for c in NEW_COLUMNS[1:])
    assert all(tele[c] == "" for c in NEW_COLUMNS if c.startswith(("paced_", "sustained_")))


def test_a_skipped_or_failed_row_and_a_malformed_block_leave_the_columns_empty(tmp_path):
    skipped = json.loads((GOLDEN / "result-skip1.json").read_text())
    failed = json.loads((GOLDEN / "result-fail1.json").read_text())
    odd = golden_ok("c-00000oddty", "odd")
    odd["telemetry"] = {"summary": {"temp_max_c": True}, "energy": None}
    rows = rows_of([skipped, failed]) + [report.flat_row(records.from_doc(odd))]
    got = written(rows, tmp_path)
    for row in got.values():
        assert all(row[c] == "" for c in NEW_COLUMNS[1:]), row
    assert "## Energy" not in markdown(rows) and "## Paced" not in markdown(rows)


def test_comparison_md_has_an_energy_a_paced_and_a_sustained_section():
    rows = rows_of([telemetry_result(), paced_result(), sustained_result()])
    text = markdown(rows)
    energy = text[text.index("## Energy"):text.index("## Paced")]
    assert "| case | device | power mean W | mJ per inference | inferences per J | idle W | " \
           "method | other sources |" in energy
    # device text escaped for Markdown: the | of the label and the method cannot split a cell
    assert "| movenet int8 \\| edgetpu | golden-device | 6.12 | 1.23 | 809.8 | 2.5 (subtracted) " \
           "| =HYPERLINK(\"x\") sampled \\| power (power\\_w:VDD\\_IN) | energy\\_j:package-0 " \
           "0.2 J |" in energy, energy
    paced = text[text.index("## Paced"):text.index("## Sustained")]
    assert "| paced 30 fps | golden-device | 30 | 3.0% | 3 | 29.7 | 11.5 / 41.2 | 9.75 / 14.5 |" \
        in paced, paced
    sustained = text[text.index("## Sustained"):]
    assert "### golden-device, sustained 10 min" in sustained
    assert "drift +49.5%, throttle onset at 240 s (throttle flag)" in sustained
    assert "60 of 100 windows shown, evenly picked" in sustained
    lines = [line for line in sustained.splitlines() if line.startswith("| ")]
    assert lines[0] == "| start s | n | p50 ms | p99 ms | temp max C | freq min MHz | power W | " \
                       "throttled |"
    assert len(lines) == 61   # the header and 60 windows
    assert lines[1] == "| 0 | 3000 | 2.00 | n/e | 50.0 | 1500 | - | no |"   # the first window
    assert lines[-1] == "| 594 | 3000 | 2.99 | 3.49 | 59.9 | 1200 | 5 | yes |"   # and the last


def test_a_short_sustained_case_shows_every_window_and_no_sections_without_blocks():
    rows = rows_of([sustained_result(windows=5)])
    text = markdown(rows)
    assert "windows shown" not in text and "## Energy" not in text and "## Paced" not in text
    assert len([line for line in text[text.index("## Sustained"):].splitlines()
                if line.startswith("| ")]) == 6
    plain = rows_of([golden_ok("c-00000plain", "plain")])
    text = markdown(plain)
    assert "## Energy" not in text and "## Paced" not in text and "## Sustained" not in text


def test_a_copied_row_still_renders_without_its_result():
    [row] = rows_of([sustained_result(windows=3)])
    copied = dict(row)   # a plain dict (e.g. --json rows read back): no per-window table
    text = markdown([copied])
    assert "## Sustained" in text and "No per-window table in this result." in text
    assert copy.copy(row).result is row.result


def test_pick_windows_spreads_evenly_and_keeps_both_ends():
    picked = report.pick_windows(list(range(4320)))
    assert len(picked) == 60 and picked[0] == 0 and picked[-1] == 4319
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {73, 74}
    assert report.pick_windows([1, 2, 3]) == [1, 2, 3]


def test_an_emulated_device_says_so_in_results_csv_and_comparison_md(tmp_path):
    from orchestrator.run import mark_emulated
    real = golden_ok("c-00000000real", "movenet int8 | tflite")
    emulated = mark_emulated(records.from_doc(golden_ok("c-000000000emu", "movenet fp32 | tflite")),
                             True)
    assert emulated.device["emulated"] is True and mark_emulated(real, False) is real
    rows = rows_of([real]) + [report.flat_row(emulated)]
    got = written(rows, tmp_path)
    assert got["c-00000000real"]["emulated"] == "" and got["c-000000000emu"]["emulated"] == "True"
    text = markdown(rows)
    assert "Emulated device(s): %s." % rows[1]["device"] in text and "not comparable" in text
    assert "Emulated" not in markdown(rows[:1])
    header, _ = report.comparison(rows, ["real-pi", rows[1]["device"]])
    assert header[1:] == ["real-pi", rows[1]["device"] + " (emulated)"]
