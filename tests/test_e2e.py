"""The whole `benchfleet run` as a user runs it: a real CLI subprocess, real TFLite and TensorFlow
inference on a generated model, over the local transport and over two real sshd devices.

The printed table and results.csv must carry the numbers of the raw per-case results.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agent import schema
from extras import needs
from orchestrator import records

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache")

SUITE = {
    "name": "e2e",
    "settings": {"warmup_runs": 3, "warmup_min_s": 0.05, "runs": 30, "min_duration_s": 0.3,
                 "max_duration_s": 10, "case_timeout_s": 240},
    "cooldown": {"mode": "fixed", "seconds": 0.2},
    "models": [{"name": "tiny", "builtin": "movenet-tiny",
                "variants": ["tflite-fp32", "tflite-int8", "savedmodel"]},
               {"name": "spin", "synthetic_ms": 0.5}],
    "matrix": [{"runtime": "synthetic"},
               {"runtime": "tflite", "models": ["tiny"], "threads": [1]},
               {"runtime": "tensorflow", "models": ["tiny"]}],
}
CASES = 4   # synthetic, tflite fp32, tflite int8, tensorflow
QUICKSTART_CASES = 7


def run_cli(*args, timeout=600):
    env = dict(os.environ, BENCHFLEET_CACHE=CACHE)
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    return path


def local_inventory(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    return path


def _closing_server():
    """A listening socket whose connections are closed at once, from a daemon thread."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    return server


def only_run_dir(results):
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def check_run_outputs(run_dir, devices, stdout, cases=CASES):
    """Every file of a run is there and every number shown comes from the raw results."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "finished" and set(manifest["devices"]) == set(devices)
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cases * len(devices)
    table = stdout[stdout.index("case "):]   # stdout is the result only; progress is on stderr
    assert all(d in table.splitlines()[0] for d in devices)
    for row in rows:
        raw = (run_dir / "raw" / row["device"] / (row["case_id"] + ".json")).read_text()
        result = records.parse_result(raw)
        assert schema.check_result(json.loads(raw)) == []
        assert result.status == row["status"] == "ok", (row["reason"], row["label"])
        lat = result.timing.latencies_ms
        assert len(lat) == result.timing.runs
        if result.timing.paced is None:
            assert result.timing.runs >= result.settings["runs"]
        else:   # paced: `runs` counts frames scheduled, some of which may have been dropped
            assert result.timing.paced["frames"] >= result.settings["runs"]
        # results.csv keeps what a nanosecond clock resolves: ms to 6 decimals, no float noise.
        ns = 1e-6
        assert float(row["p50_ms"]) == pytest.approx(statistics.median(lat), abs=ns)
        assert float(row["first_ms"]) == pytest.approx(result.timing.first_ms, abs=ns)
        assert float(row["mean_ms"]) == pytest.approx(statistics.fmean(lat), abs=ns)
        assert all(len(row[k].partition(".")[2]) <= 6 for k in row if k.endswith("_ms") and row[k])
        # The label's line in the printed table shows this p50 as formatted by the report.
        from orchestrator.report import cell, flat_row, fold
        first = fold(row["label"])[0]   # a long label wraps onto a second line
        line = next(l for l in table.splitlines() if l.startswith(first + "  "))
        assert cell(flat_row(result)) in line
    return rows


@pytest.mark.slow
@needs("tensorflow", "ai_edge_litert")
def test_run_over_local_and_two_ssh_devices_prints_raw_numbers_and_rerun_uploads_nothing(
        tmp_path, suite_file, ssh_lab):
    lab = ssh_lab.write_inventory(tmp_path / "lab.yaml", python=sys.executable)
    local = local_inventory(tmp_path)
    results = tmp_path / "results"
    proc = run_cli("run", suite_file, "-i", lab, "-i", local, "--results-dir", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = [d.name for d in ssh_lab.devices] + ["localhost"]
    rows = check_run_outputs(only_run_dir(results), names, proc.stdout)
    local_rows = [r for r in rows if r["device"] == "localhost"]
    assert {r["backend"] for r in local_rows} == {"synthetic", "tflite", "tensorflow"}
    spin = next(r for r in local_rows if r["backend"] == "synthetic")
    assert float(spin["p50_ms"]) >= 0.5   # the busy-wait is a floor the harness cannot beat
    for dev in ssh_lab.devices:   # separate workdirs, each holding its own run
        assert list(Path(dev.workdir, "runs").iterdir())
    # Again, without the TensorFlow case (it only costs time here): the agent and the .tflite
    # blobs are on every device already, so nothing is uploaded.
    rerun = dict(SUITE, matrix=[e for e in SUITE["matrix"] if e["runtime"] != "tensorflow"])
    again_suite = tmp_path / "again.yaml"
    again_suite.write_text(yaml.safe_dump(rerun, sort_keys=False))
    again = run_cli("run", again_suite, "-i", lab, "-i", local, "--results-dir", tmp_path / "again")
    assert again.returncode == 0, again.stdout + again.stderr
    for name in names:
        assert "[%s] deployed (0 file(s) uploaded)" % name in again.stderr


@pytest.mark.slow
@needs("tensorflow", "ai_edge_litert")
def test_quickstart_suite_runs_on_this_machine(tmp_path):
    """The README's first command: the quickstart suite on the embedded localhost device (the
    SSH path of the same flow is the test above)."""
    results = tmp_path / "results"
    proc = run_cli("run", "suites/quickstart.yaml", "-i", local_inventory(tmp_path),
                   "--results-dir", results, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = check_run_outputs(only_run_dir(results), ["localhost"], proc.stdout,
                             cases=QUICKSTART_CASES)
    assert {r["backend"] for r in rows} == {"synthetic", "tflite", "litert", "tensorflow"}


def _silent_server():
    """A listening socket that accepts and never says a word (held by the kernel's backlog)."""
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


@pytest.mark.slow
@needs("tensorflow", "ai_edge_litert")
def test_quickstart_with_an_unreachable_device_prints_no_traceback(tmp_path):
    """The README's first command with two devices nobody can reach beside this machine: one
    that takes TCP and never answers, one that refuses. Each fails its rows with one clear line;
    this machine's results are all there; nothing of paramiko reaches the console."""
    silent = _silent_server()
    silent_port = silent.getsockname()[1]
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused_port = s.getsockname()[1]
    away = tmp_path / "away.yaml"
    common = {"host": "127.0.0.1", "user": "root", "connect_timeout_s": 2.0,
              "known_hosts": str(tmp_path / "kh"), "workdir": "~/bf"}
    away.write_text(yaml.safe_dump({"devices": {
        "silent": dict(common, port=silent_port),
        "refused": dict(common, port=refused_port)}}))
    results = tmp_path / "results"
    try:
        proc = run_cli("run", "suites/quickstart.yaml", "-i", local_inventory(tmp_path), "-i",
                       away, "--results-dir", results, timeout=900)
    finally:
        silent.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for noise in ("Traceback", "paramiko", "No existing session", "Bad file descriptor"):
        assert noise not in out, out
    with open(only_run_dir(results) / "results.csv") as f:
        rows = list(csv.DictReader(f))
    mine = [r for r in rows if r["device"] == "localhost"]
    assert len(mine) == QUICKSTART_CASES and all(r["status"] == "ok" for r in mine), mine
    for name, words in (("silent", "no SSH banner from 127.0.0.1:%d within 2 s" % silent_port),
                        ("refused", "connection refused")):
        theirs = [r for r in rows if r["device"] == name]
        assert theirs and all(r["status"] == "failed" and words in r["reason"]
                              for r in theirs), theirs


@pytest.mark.slow
def test_bad_device_fails_its_rows_and_never_stops_the_others(tmp_path, ssh_lab):
    suite = dict(SUITE, matrix=[{"runtime": "synthetic"}], models=[SUITE["models"][1]])
    suite_path = tmp_path / "spin.yaml"
    suite_path.write_text(yaml.safe_dump(suite))
    good = ssh_lab.devices[0]
    mute = _closing_server()   # accepts and hangs up: paramiko's "protocol banner" failure
    inv = {"devices": {"good": dict(good.fields(), python=sys.executable),
                       "gone": dict(good.fields(), port=1, connect_timeout_s=2.0),
                       "mute": dict(good.fields(), port=mute.getsockname()[1],
                                    connect_timeout_s=2.0),
                       "stranger": dict(good.fields(), known_hosts=str(tmp_path / "empty_kh"))}}
    (tmp_path / "empty_kh").write_text("")
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(yaml.safe_dump(inv))
    results = tmp_path / "results"
    try:
        proc = run_cli("run", suite_path, "-i", inv_path, "--results-dir", results)
    finally:
        mute.close()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    with open(only_run_dir(results) / "results.csv") as f:
        rows = {r["device"]: r for r in csv.DictReader(f)}
    assert rows["good"]["status"] == "ok"
    assert rows["gone"]["status"] == "failed" and "[gone] device error" in proc.stderr
    assert rows["mute"]["status"] == "failed" and "protocol banner" in rows["mute"]["reason"]
    assert "Traceback" not in proc.stderr   # one line per bad device, no library noise
    assert rows["stranger"]["status"] == "failed"
    assert "SHA256:" in rows["stranger"]["reason"]       # the fingerprint to check
    # and how to trust it, with the -i this run was given, ready to paste
    assert "benchfleet devices trust stranger -i %s" % inv_path in rows["stranger"]["reason"]
    assert (tmp_path / "empty_kh").read_text() == ""      # never added silently


def test_bad_inventory_exits_2_with_every_problem_and_runs_nothing(tmp_path, suite_file):
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "a.yaml").write_text("devices:\n  pi:\n    host: x\n    port: abc\n")
    (tmp_path / "inv" / "b.yaml").write_text("devices:\n  pi:\n    host: y\n    colour: red\n")
    results = tmp_path / "results"
    proc = run_cli("run", suite_file, "-i", tmp_path / "inv", "--results-dir", results)
    assert proc.returncode == 2
    err = proc.stderr
    assert "Traceback" not in err
    assert "a.yaml: devices.pi.port:" in err
    assert "b.yaml: devices.pi.colour: unknown field" in err
    assert "duplicate" in err and "a.yaml" in err and "b.yaml" in err
    assert not results.exists()


def test_bad_suite_exits_2_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels:\n  - name: s\n    synthetic_ms: 1\n"
                   "matrix:\n  - runtime: synthetic\n    threads: [one]\n")
    proc = run_cli("plan", bad, "-i", local_inventory(tmp_path))
    assert proc.returncode == 2
    assert "bad.yaml: matrix[0].threads[0]:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_of_movenet_suite_explains_every_skip():
    proc = run_cli("plan", "suites/movenet.yaml", "-i", "inventory", "-i", "inventory/examples")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for device in ("gtx1660-host", "rpi4-coral", "jetson-nano"):
        assert device in out
        # The hint repeats the -i the user gave, so it can be pasted as it is.
        assert "`benchfleet devices probe %s -i inventory/examples`" % device in out
    skips = [l for l in out.splitlines() if l.strip().startswith("SKIP")]
    assert skips and all("  " in l.strip()[5:] for l in skips)   # every skip carries a reason


@pytest.mark.slow
@needs("tensorflow", "tf2onnx", "onnxruntime")
def test_onnxruntime_profile_travels_back_with_the_result(tmp_path):
    suite = {"name": "prof", "settings": SUITE["settings"], "cooldown": {"mode": "none", "seconds": 0},
             "models": [{"name": "tiny", "builtin": "movenet-tiny", "variants": ["onnx"]}],
             "matrix": [{"runtime": "onnxruntime", "options": {"profile": True}}]}
    path = tmp_path / "prof.yaml"
    path.write_text(yaml.safe_dump(suite))
    results = tmp_path / "results"
    proc = run_cli("run", path, "-i", local_inventory(tmp_path), "--results-dir", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw_dir = only_run_dir(results) / "raw" / "localhost"
    [result] = [p for p in raw_dir.glob("c-*.json") if p.name.count(".") == 1]
    doc = json.loads(result.read_text())
    assert doc["runtime"]["provider"] == "CPUExecutionProvider"
    trace = raw_dir / doc["environment"]["artifacts"]["profile.json"]
    events = json.loads(trace.read_text())
    assert isinstance(events, list) and any(e.get("cat") == "Node" for e in events)
