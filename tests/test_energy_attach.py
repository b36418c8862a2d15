"""`benchfleet energy attach`: an external power meter's log (PPK2, Monsoon, plain CSV) aligned to
each case's measured window with the device's clock offset, the energy written into the results
and the tables rendered again; bad logs refused with the file, line and column, nothing changed.
And the clock offset itself, measured when a run starts: on this machine (local transport) and
over SSH (the sshd lab).

The run folders are the run's own layout (manifest.json, raw/<device>/, devices/<device>/),
written by the run's own table writer; the results are real agent output (tests/golden) given a
timeline. Times on the controller's clock: T0 + seconds; the device's clock runs 100 s ahead.
"""

import csv
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent import schema
from orchestrator import cli, energy, records
from orchestrator.errors import ConfigError
from orchestrator.run import RunSummary, write_tables

GOLDEN = Path(__file__).resolve().parent / "golden"
T0 = 1796000000.0    # the log's first row, this machine's clock
AHEAD = 100.0        # the device's clock minus this machine's
DEVICE = "pi4"
NONCE = "0123456789abcdef0123456789abcdef"
RUN_ID = "20261204-010000-beef"
VOLTS = 5.0

# The timeline (seconds from T0, controller clock). Case a measures [3, 7] at 3 W; case b, after
# a 4 s cool-down, measures [13, 17]: 3 W for 2 s, then a step to 5 W. Idle is 1 W.
CASES = {"c-00000000aa": dict(started=2, window=(3, 7), finished=8, cooldown=None),
         "c-00000000bb": dict(started=12, window=(13, 17), finished=18, cooldown=4.0)}
IDLE_W = 1.0


def power(t):
    """Watts at T0 + t."""
    if 3 <= t <= 7 or 13 <= t < 15:
        return 3.0
    if 15 <= t <= 17:
        return 5.0
    return IDLE_W


A_J, B_J = 4 * 3.0, 2 * 3.0 + 2 * 5.0   # 12 J, 16 J


def iso(unix):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def result(case_id, started, window, finished, cooldown, offset=AHEAD, windows=None):
    """The golden ok result as case `case_id` of this run, on the device's clock."""
    doc = json.loads((GOLDEN / "result-ok1.json").read_text())
    doc.update(run_id=RUN_ID, nonce=NONCE, case_id=case_id, label="spin " + case_id[-2:],
               started_at=iso(T0 + started + offset), finished_at=iso(T0 + finished + offset))
    doc["device"]["name"] = DEVICE
    doc["timing"].update(wall_start_unix=T0 + window[0] + offset,
                         wall_end_unix=T0 + window[1] + offset)
    if windows is not None:
        doc["timing"]["windows"] = windows
    doc["cooldown"] = {"mode": "fixed", "waited_s": cooldown, "temps_c": {}} if cooldown else \
        {"first": True, "mode": "fixed", "waited_s": 0.0}
    assert schema.check_result(doc) == [] and records.model_problems(doc) == []
    return doc


def skipped(case_id):
    doc = json.loads((GOLDEN / "result-skip1.json").read_text())
    doc.update(run_id=RUN_ID, nonce=NONCE, case_id=case_id)
    doc["device"]["name"] = DEVICE
    return doc


def make_run(tmp_path, clock=True, docs=None):
    """A finished run folder of one device, with the run's own results.csv and comparison.md."""
    run_dir = tmp_path / "results" / RUN_ID
    raw = run_dir / "raw" / DEVICE
    raw.mkdir(parents=True)
    if docs is None:
        windows = [{"start_s": 0.0, "end_s": 2.0, "n": 124, "p50": 0.2, "p99": None,
                    "temp_max_c": None, "freq_min_mhz": None, "power_w": None, "throttled": None},
                   {"start_s": 2.0, "end_s": 4.0, "n": 124, "p50": 0.2, "p99": None,
                    "temp_max_c": None, "freq_min_mhz": None, "power_w": None, "throttled": None}]
        docs = [result(cid, windows=windows if cid.endswith("bb") else None, **spec)
                for cid, spec in CASES.items()] + [skipped("c-00000000cc")]
    for doc in docs:
        (raw / (doc["case_id"] + ".json")).write_text(json.dumps(doc))
    manifest = {"run_id": RUN_ID, "nonce": NONCE, "suite": "s.yaml", "inventory": ["inv.yaml"],
                "state": "finished", "schema_version": schema.SCHEMA_VERSION,
                "devices": {DEVICE: {"transport": "ssh", "cases": [d["case_id"] for d in docs],
                                     "skipped": ["c-00000000cc"]}}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    if clock:
        facts = run_dir / "devices" / DEVICE
        facts.mkdir(parents=True)
        (facts / "clock.json").write_text(json.dumps({"measurements": [
            {"offset_s": AHEAD, "uncertainty_s": 0.004, "device_unix": T0 - 60 + AHEAD,
             "controller_unix": T0 - 60, "how": "launch", "method": "date"}]}))
    summary = RunSummary(RUN_ID, run_dir, devices=[DEVICE],
                         results=[records.from_doc(d) for d in docs])
    write_tables(summary)
    return run_dir


def raw_doc(run_dir, case_id):
    return json.loads((run_dir / "raw" / DEVICE / (case_id + ".json")).read_text())


def raw_bytes(run_dir):
    return {p.name: p.read_bytes() for p in sorted((run_dir / "raw" / DEVICE).iterdir())}


def samples(rate_hz, until=20.0):
    n = int(until * rate_hz)
    return [(i / rate_hz, power(i / rate_hz)) for i in range(n + 1)]


def write_log(tmp_path, kind, rate_hz=1000.0, shift=0.0):
    """A meter log of power(t) in one of the formats; shift moves it on the clock."""
    path = tmp_path / ("meter-%s.csv" % kind)
    lines = []
    if kind == "csv":
        lines.append("timestamp,power_w")
        lines += ["%.6f,%.6f" % (T0 + shift + t, w) for t, w in samples(rate_hz)]
    elif kind == "csv-ma-mv":   # unix milliseconds, mA and mV, semicolons, a comment first
        lines.append("# bench supply log")
        lines.append("Time (ms);Current [mA];Voltage (mV)")
        lines += ["%.3f;%.6f;%.1f" % ((T0 + shift + t) * 1000.0, w / 4.8 * 1000.0, 4800.0)
                  for t, w in samples(rate_hz)]
    elif kind == "ppk2":
        lines.append("Timestamp(ms),Current(uA),D0-D7")
        lines += ["%.3f,%.4f,00000000" % (t * 1000.0, w / VOLTS * 1e6)
                  for t, w in samples(rate_hz)]
    elif kind == "monsoon":
        lines.append("Time(s),Main(mA),Main Voltage(V)")
        lines += ["%.6f,%.6f,%.3f" % (t, w / 4.2 * 1000.0, 4.2) for t, w in samples(rate_hz)]
    path.write_text("\n".join(lines) + "\n")
    return path


def attach_args(kind, path, *extra):
    args = ["energy", "attach", "--meter", str(path)]
    if kind in ("ppk2", "monsoon"):
        args += ["--format", kind, "--start", repr(T0)]
    if kind == "ppk2":
        args += ["--voltage", str(VOLTS)]
    return args + list(extra)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHFLEET_CACHE", str(tmp_path / "cache"))


def close(value, expected, share=0.01):
    return value is not None and abs(value - expected) <= share * abs(expected)


@pytest.mark.parametrize("kind,rate", [("csv", 1000.0), ("csv-ma-mv", 1000.0), ("ppk2", 5000.0),
                                       ("monsoon", 5000.0)])
def test_each_format_gives_the_energy_of_each_window_with_the_devices_clock_100s_ahead(
        tmp_path, capsys, kind, rate):
    run_dir = make_run(tmp_path)
    log = write_log(tmp_path, kind, rate)
    assert cli.main(attach_args(kind, log, str(run_dir))) == cli.EXIT_OK
    out = capsys.readouterr()
    assert "2 result(s) of pi4 given meter energy, 0 not covered" in out.out, out
    assert "warning" not in out.err
    a, b = raw_doc(run_dir, "c-00000000aa"), raw_doc(run_dir, "c-00000000bb")
    for doc, joules in ((a, A_J), (b, B_J)):
        e = doc["telemetry"]["energy"]
        assert close(e["energy_j"], joules), (kind, e)
        assert close(e["power_mean_w"], joules / 4.0)
        assert close(e["per_inference_mj"], joules / doc["timing"]["runs"] * 1000.0)
        assert close(e["inferences_per_j"], doc["timing"]["runs"] / joules)
        assert e["window_s"] == pytest.approx(4.0) and e["clock_offset_s"] == AHEAD
        assert e["source"] == "meter:" + log.name and e["idle_subtracted"] is False
        assert e["method"] == "external meter (%s, %d Hz)" % (kind.split("-")[0], rate)
        assert e["by_source"] == {e["source"]: e["energy_j"]}
        assert schema.check_result(doc) == [] and records.model_problems(doc) == []
    # the first case has no cool-down before it; the second's is the meter's idle 1 W
    assert a["telemetry"]["energy"]["idle_power_w"] is None
    assert close(b["telemetry"]["energy"]["idle_power_w"], IDLE_W)
    # a sustained case's windows without a power column get the meter's
    assert [close(w["power_w"], x) for w, x in zip(b["timing"]["windows"], (3.0, 5.0))] == \
        [True, True]


def test_subtract_idle_takes_the_idle_energy_out_and_the_tables_gain_the_energy(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    before_csv = (run_dir / "results.csv").read_text()
    assert "## Energy" not in (run_dir / "comparison.md").read_text()
    log = write_log(tmp_path, "csv")
    assert cli.main(attach_args("csv", log, str(run_dir), "--subtract-idle")) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "no idle gap before it" in out   # case a: energy not subtracted, and said so
    b = raw_doc(run_dir, "c-00000000bb")["telemetry"]["energy"]
    assert close(b["energy_j"], B_J - IDLE_W * 4.0) and b["idle_subtracted"] is True
    assert close(b["power_mean_w"], B_J / 4.0)           # the power is what the meter read
    assert close(b["by_source"]["meter:" + log.name], B_J)
    a = raw_doc(run_dir, "c-00000000aa")["telemetry"]["energy"]
    assert close(a["energy_j"], A_J) and a["idle_subtracted"] is False
    # the tables: the same rows in the same order, with the energy columns filled
    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == \
        [r["case_id"] for r in csv.DictReader(before_csv.splitlines())]
    by_id = {r["case_id"]: r for r in rows}
    assert close(float(by_id["c-00000000bb"]["energy_j"]), B_J - 4.0)
    assert close(float(by_id["c-00000000bb"]["idle_power_w"]), IDLE_W)
    assert by_id["c-00000000bb"]["energy_method"] == "external meter (csv, 1000 Hz)"
    assert close(float(by_id["c-00000000aa"]["energy_per_inference_mj"]), A_J / 248 * 1000.0)
    assert by_id["c-00000000cc"]["energy_j"] == "" and by_id["c-00000000cc"]["status"] == "skipped"
    md = (run_dir / "comparison.md").read_text()
    assert "## Energy" in md and "| spin bb | pi4 | 4 | 48.4 | 20.6" in md
    assert "| 1 (subtracted) | external meter (csv, 1000 Hz) (meter:meter-csv.csv) |" in md, md
    # the device's result as it was is kept once
    kept = json.loads((run_dir / "energy" / "original" / DEVICE / "c-00000000bb.json").read_text())
    assert kept["telemetry"] == {}


def test_the_devices_own_energy_stays_under_by_source(tmp_path, capsys):
    doc = result("c-00000000aa", **CASES["c-00000000aa"])
    doc["telemetry"] = {"interval_ms": 100.0, "energy": {
        "method": "integral of sampled power", "source": "power_w:VDD_IN", "energy_j": 10.5,
        "per_inference_mj": 42.3, "power_mean_w": 2.6, "inferences_per_j": 23.6,
        "idle_power_w": None, "idle_subtracted": False, "window_s": 4.0,
        "by_source": {"energy_j:package-0": 7.25}, "clock_offset_s": None}}
    run_dir = make_run(tmp_path, docs=[doc])
    assert cli.main(attach_args("csv", write_log(tmp_path, "csv"), str(run_dir))) == 0
    e = raw_doc(run_dir, "c-00000000aa")["telemetry"]["energy"]
    assert e["source"] == "meter:meter-csv.csv" and close(e["energy_j"], A_J)
    assert e["by_source"]["power_w:VDD_IN"] == 10.5 and e["by_source"]["energy_j:package-0"] == 7.25
    assert raw_doc(run_dir, "c-00000000aa")["telemetry"]["interval_ms"] == 100.0
    # attached again (another export of the same meter): replaced, nothing lost
    capsys.readouterr()
    assert cli.main(attach_args("csv", write_log(tmp_path, "csv"), str(run_dir), "--json")) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["changed"] == ["c-00000000aa"] and said["tables_rewritten"] is True
    again = raw_doc(run_dir, "c-00000000aa")["telemetry"]["energy"]
    assert sorted(again["by_source"]) == sorted(e["by_source"])
    kept = json.loads((run_dir / "energy" / "original" / DEVICE / "c-00000000aa.json").read_text())
    assert kept["telemetry"]["energy"]["source"] == "power_w:VDD_IN"   # the first original


def test_a_case_outside_the_log_is_left_as_it_is_and_named(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    log = tmp_path / "short.csv"   # covers case a only
    log.write_text("timestamp,power_w\n" + "".join(
        "%.3f,%.3f\n" % (T0 + t, w) for t, w in samples(100.0, until=10.0)))
    assert cli.main(attach_args("csv", log, str(run_dir))) == 0
    out = capsys.readouterr().out
    assert "1 result(s) of pi4 given meter energy, 1 not covered" in out
    assert "spin bb (c-00000000bb): window" in out and "is not inside the log" in out
    assert raw_doc(run_dir, "c-00000000bb")["telemetry"] == {}
    assert close(raw_doc(run_dir, "c-00000000aa")["telemetry"]["energy"]["energy_j"], A_J)


def test_without_a_clock_file_the_offset_is_0_with_a_warning(tmp_path, capsys):
    run_dir = make_run(tmp_path, clock=False)
    log = write_log(tmp_path, "csv", shift=AHEAD)   # a log on the device's clock
    assert cli.main(attach_args("csv", log, str(run_dir))) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "no clock offset was measured for pi4" in err
    assert "assuming its clock equals this machine's (offset 0)" in err
    e = raw_doc(run_dir, "c-00000000aa")["telemetry"]["energy"]
    assert e["clock_offset_s"] == 0 and close(e["energy_j"], A_J)


def bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["missing column", "time not a number", "no window covered",
                                  "ppk2 without --start", "ppk2 without --voltage",
                                  "out of order", "short row", "relative csv times"])
def test_bad_input_exits_2_naming_the_file_line_and_fix_and_changes_nothing(tmp_path, capsys,
                                                                            case):
    run_dir = make_run(tmp_path)
    before = raw_bytes(run_dir), (run_dir / "results.csv").read_bytes()
    good = ["%.3f,%.3f" % (T0 + t, w) for t, w in samples(10.0)]
    if case == "missing column":
        path = bad(tmp_path, "m.csv", "timestamp,foo\n" + "\n".join(good) + "\n")
        args, want = attach_args("csv", path), ["m.csv line 1: no power or current column "
                                                "(found: timestamp, foo)", "give power (W"]
    elif case == "time not a number":
        rows = list(good)
        rows[3] = "abc,2.0"
        path = bad(tmp_path, "m.csv", "timestamp,power_w\n" + "\n".join(rows) + "\n")
        args, want = attach_args("csv", path), ["m.csv line 5, column 'timestamp': 'abc' is not "
                                                "a number; fix or remove the line"]
    elif case == "no window covered":
        path = write_log(tmp_path, "csv", shift=1000.0)
        args, want = attach_args("csv", path), [
            "the log covers no case's window of device pi4: the log spans %.3f" % (T0 + 1000),
            "spin aa (c-00000000aa) %.3f" % (T0 + 3), "Check --start"]
    elif case == "ppk2 without --start":
        path = write_log(tmp_path, "ppk2")
        args, want = ["energy", "attach", "--meter", str(path), "--voltage", "5"], [
            "a ppk2 log gives times from its start: give --start UNIX_SECONDS"]
    elif case == "ppk2 without --voltage":
        path = write_log(tmp_path, "ppk2")
        args, want = ["energy", "attach", "--meter", str(path), "--start", repr(T0)], [
            "a ppk2 log has current only: give --voltage V"]
    elif case == "out of order":
        rows = list(good)
        rows[6], rows[7] = rows[7], rows[6]
        path = bad(tmp_path, "m.csv", "timestamp,power_w\n" + "\n".join(rows) + "\n")
        args, want = attach_args("csv", path), ["m.csv line 9, column 'timestamp'",
                                                "rows must be in time order"]
    elif case == "short row":
        path = bad(tmp_path, "m.csv", "timestamp,current_ma,voltage_v\n%.3f,1,5\n%.3f,2\n"
                   % (T0, T0 + 1))
        args, want = attach_args("csv", path), ["m.csv line 3: 2 value(s), the columns used "
                                                "need 3"]
    else:
        path = bad(tmp_path, "m.csv", "t,power_w\n0,1\n0.5,1\n1,1\n")
        args, want = attach_args("csv", path), ["column 't' starts at 0.0, not a unix time",
                                                "give --start UNIX_SECONDS"]
    assert cli.main(args + [str(run_dir)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    for text in want:
        assert text in err, err
    assert "nothing was run" in err
    assert (raw_bytes(run_dir), (run_dir / "results.csv").read_bytes()) == before
    assert not (run_dir / "energy").exists()


def test_a_run_of_several_devices_needs_device_and_a_busy_run_is_refused(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["devices"]["jetson"] = {"transport": "ssh", "cases": ["c-00000000dd"], "skipped": []}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    log = write_log(tmp_path, "csv", rate_hz=50.0)
    assert cli.main(attach_args("csv", log, str(run_dir))) == cli.EXIT_CONFIG
    assert "2 devices with cases (jetson, pi4): say which the meter measured with --device" in \
        capsys.readouterr().err
    from orchestrator.runlock import FileLock, run_lock_path
    lock = FileLock(run_lock_path(run_dir))
    assert lock.acquire({"user": "someone", "pid": 1, "run_id": RUN_ID}) is None
    try:
        assert cli.main(attach_args("csv", log, str(run_dir), "--device", DEVICE)) == 75
        assert "is being run by someone@? pid 1" in capsys.readouterr().err
    finally:
        lock.release()
    assert cli.main(attach_args("csv", log, str(run_dir), "--device", DEVICE)) == 0


def test_the_log_is_read_as_integral_of_trapezoids_interpolated_at_the_ends(tmp_path):
    path = bad(tmp_path, "ramp.csv", "unix,power(mW)\n%r,0\n%r,1000\n%r,1000\n" % (T0, T0 + 1,
                                                                                   T0 + 3))
    log = energy.read_log(path)
    assert log.fmt == "csv" and list(log.p) == [0.0, 1.0, 1.0]
    assert log.integral(T0, T0 + 1) == pytest.approx(0.5)
    assert log.integral(T0 + 0.5, T0 + 2) == pytest.approx(0.375 + 1.0)
    assert log.mean(T0 + 1.5, T0 + 2.5) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="is not a power unit"):
        energy.read_log(bad(tmp_path, "kw.csv", "time,power(kW)\n%r,1\n%r,1\n" % (T0, T0 + 1)))


# -- the clock offset, measured when the run starts ----------------------------------------------
QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 20, "min_duration_s": 0.3,
         "max_duration_s": 5, "case_timeout_s": 120, "interval_ms": 0}


def test_a_local_run_keeps_its_clock_offset_and_job_and_a_meter_attaches_to_it(tmp_path, capsys):
    """The real controller and agent (transport local): clock.json beside the run, then a meter
    log made from the windows the agent recorded."""
    from orchestrator.run import run_suite, Progress
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "meter", "settings": QUICK, "cooldown": {"mode": "fixed", "seconds": 1.5},
        "models": [{"name": "spin", "synthetic_ms": 0.3}, {"name": "spin2", "synthetic_ms": 0.6}],
        "matrix": [{"runtime": "synthetic"}]}, sort_keys=False))
    with open(os.devnull, "w") as quiet:
        summary = run_suite(suite, [inv], results_dir=tmp_path / "results",
                            progress=Progress(quiet))
    assert summary.counts["ok"] == 2
    facts = summary.run_dir / "devices" / "localhost"
    clock = json.loads((facts / "clock.json").read_text())
    [m] = clock["measurements"]
    assert m["how"] == "launch" and m["method"] in ("date", "python")
    assert abs(m["offset_s"]) <= m["uncertainty_s"] + 0.01 and m["uncertainty_s"] < 5
    assert json.loads((facts / "job.json").read_text())["nonce"] == summary.results[0].nonce
    assert sorted(p.name for p in (summary.run_dir / "raw" / "localhost").iterdir()) == \
        sorted(r.case_id + ".json" for r in summary.results)   # raw/ holds results only
    windows = [(r.timing.wall_start_unix, r.timing.wall_end_unix) for r in summary.results]
    first, last = min(w[0] for w in windows) - 3.0, max(w[1] for w in windows) + 3.0
    log = tmp_path / "bench.csv"
    rows = int((last - first) * 2000)
    log.write_text("timestamp,current_a,voltage_v\n" + "".join(
        "%.6f,0.5,5.0\n" % (first + i / 2000.0) for i in range(rows + 1)))
    assert cli.main(["energy", "attach", str(summary.run_dir), "--meter", str(log)]) == 0
    assert "2 result(s) of localhost given meter energy" in capsys.readouterr().out
    with open(summary.run_dir / "results.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    for r in summary.results:
        span = r.timing.wall_end_unix - r.timing.wall_start_unix
        assert close(float(rows[r.case_id]["energy_j"]), 2.5 * span)
        assert close(float(rows[r.case_id]["energy_per_inference_mj"]),
                     2.5 * span / r.timing.runs * 1000.0)
        assert rows[r.case_id]["label"] == r.label and rows[r.case_id]["mode"] == "back_to_back"
    assert "## Energy" in (summary.run_dir / "comparison.md").read_text()
    # the run's history copy and its report.html got the meter's energy as well
    from orchestrator.history import History
    with History.open(None, tmp_path / "results") as history:
        stored = {r["case_id"]: r for r in history.results(run_ids=[summary.run_id])}
    for case_id, row in rows.items():
        assert stored[case_id]["energy_j"] == pytest.approx(float(row["energy_j"]), rel=1e-6)
    html = (summary.run_dir / "report.html").read_text()
    assert "<h3>Energy</h3>" in html and "mJ per inference" in html   # only with energy
    assert "%.3g" % float(rows[summary.results[0].case_id]["energy_per_inference_mj"]) in html
    doc = json.loads((summary.run_dir / "raw" / "localhost" / (summary.results[0].case_id
                                                              + ".json")).read_text())
    assert doc["telemetry"]["energy"]["clock_offset_s"] == m["offset_s"]


def _facts_run(tmp_path, name):
    run_dir = tmp_path / "run"
    (run_dir / "raw" / name).mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    return run_dir


def _job(name, run_id):
    settings = dict(QUICK, min_duration_s=0.05, input_seed=0, input_pool=1, cv_max=1.0)
    return {"schema_version": schema.SCHEMA_VERSION, "kind": schema.JOB_KIND, "run_id": run_id,
            "nonce": os.urandom(8).hex(), "device": name,
            "cooldown": dict(schema.DEFAULT_COOLDOWN, mode="none", seconds=0.0),
            "cases": [{"case_id": "c-0000000001", "label": "spin",
                       "model": {"name": "spin", "variant": "synthetic", "format": "synthetic",
                                 "sha256": None, "path": None, "synthetic_ms": 0.1},
                       "runtime": {"backend": "synthetic", "threads": 1, "affinity": None,
                                   "precision": "fp32", "options": {}},
                       "settings": settings}]}


def test_the_clock_offset_over_ssh_at_launch_and_by_a_command_where_no_launch_carries_it(
        ssh_lab, tmp_path):
    from orchestrator.config.inventory import Device
    from orchestrator.deploy import build_agent_pyz
    from orchestrator.execute import run_device
    from orchestrator.transport import make_transport
    from orchestrator.transport.local import LocalTransport
    agent_pyz = build_agent_pyz(str(tmp_path / "agentpkg"))
    device = ssh_lab.devices[0].as_device(workdir=str(tmp_path / "wd-ssh"))
    job = _job(device.name, "20261204-020000-c10c")
    assert schema.check_job(job) == []
    run_dir = _facts_run(tmp_path, device.name)
    with make_transport(device) as t:
        outcome = run_device(t, device, job, {}, agent_pyz, run_dir / "raw" / device.name,
                             poll_interval=0.2)
    assert outcome.error is None and [r.status for r in outcome.results] == ["ok"]
    clock = json.loads((run_dir / "devices" / device.name / "clock.json").read_text())
    [m] = clock["measurements"]
    assert m["how"] == "launch" and m["method"] == "date"
    assert abs(m["offset_s"]) <= m["uncertainty_s"] + 0.01   # the lab's sshd is this machine
    assert clock["offset_s"] == m["offset_s"]
    job_kept = json.loads((run_dir / "devices" / device.name / "job.json").read_text())
    assert job_kept == job

    class NoStdin(LocalTransport):   # no launch command: the clock by a command of its own
        def run_input(self, argv, data, timeout, env=None):
            if data is not None:
                raise NotImplementedError
            return LocalTransport.run_input(self, argv, data, timeout, env)
    local = Device(name="nostdin", transport="local", python=sys.executable,
                   workdir=str(tmp_path / "wd-local"))
    run_dir = _facts_run(tmp_path / "b", "nostdin")
    job = _job("nostdin", "20261204-020001-c10c")
    outcome = run_device(NoStdin("nostdin"), local, job, {}, agent_pyz,
                         run_dir / "raw" / "nostdin", poll_interval=0.2)
    assert outcome.error is None
    [m] = json.loads((run_dir / "devices" / "nostdin" / "clock.json").read_text())["measurements"]
    assert m["how"] == "command" and abs(m["offset_s"]) <= m["uncertainty_s"] + 0.01
    # a resume of the run (here: it had finished; collected again) adds its own measurement
    outcome = run_device(LocalTransport("nostdin"), local, job, {}, agent_pyz,
                         run_dir / "raw" / "nostdin", poll_interval=0.2, resume=True)
    assert outcome.error is None and [r.status for r in outcome.results] == ["ok"]
    kept = json.loads((run_dir / "devices" / "nostdin" / "clock.json").read_text())
    assert [x["how"] for x in kept["measurements"]] == ["command", "command"]
    assert kept["offset_s"] == kept["measurements"][-1]["offset_s"]


def test_a_raw_folder_outside_a_run_folder_gets_no_facts(tmp_path):
    from orchestrator.execute import run_facts_dir
    assert run_facts_dir(tmp_path / "raw", "dev") is None
    run_dir = _facts_run(tmp_path, "dev")
    assert run_facts_dir(run_dir / "raw" / "dev", "dev") == run_dir / "devices" / "dev"
    assert run_facts_dir(run_dir / "raw" / "dev", "other") is None
