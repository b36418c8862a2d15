"""The Raspberry Pi 4 path end to end, on an emulated Pi 4 (tests/emulated_pi.py: aarch64 Debian
Bookworm under qemu-user-static, Python 3.11, numpy and the real tflite-runtime 2.14 from pip, a
fake device-tree model; reached over real SSH through a chrooting sshd), with the real CLI.

Enabled by BENCHFLEET_EMULATED_PI=1 (.ci/run sets it); skipped with the reason elsewhere.

What this proves: architecture and Python detection (aarch64, 3.11), the tflite backend through
tflite_runtime 2.14 on ARM (threads 1 and 4, XNNPACK), the Edge TPU's absence with its reason
and hint, the `emulated: true` marking in results.csv and comparison.md, and the agent's
supervisor, worker, heartbeat and atomic writes on a device ~2000x slower than this machine.
What it cannot prove: a Coral (no USB accelerator, no libedgetpu), real Pi timings (never read
the numbers), thermal behaviour and throttling (no thermal zones, no vcgencmd), real memory limits.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CACHE = os.environ.get("BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache")

# Smoke settings sized for emulation (~3 s per movenet-tiny inference under qemu).
SUITE = {
    "name": "emulated-pi",
    "settings": {"warmup_runs": 1, "warmup_min_s": 0, "runs": 3, "min_duration_s": 0,
                 "max_duration_s": 120, "case_timeout_s": 900, "interval_ms": 0},
    "cooldown": {"mode": "none"},
    "models": [{"name": "tiny", "builtin": "movenet-tiny",
                "variants": ["tflite-fp32", "tflite-int8", "int8-edgetpu"]}],
    "matrix": [{"runtime": "tflite", "models": ["tiny"], "variants": ["tflite-fp32", "tflite-int8"],
                "threads": [1, 4]},
               {"runtime": "edgetpu", "models": ["tiny"], "variants": ["int8-edgetpu"]}],
}

pytestmark = pytest.mark.slow


def run_cli(*args, timeout=1800):
    env = dict(os.environ, BENCHFLEET_CACHE=CACHE)
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def pi_inventory(emulated_pi, tmp_path_factory):
    return emulated_pi.write_inventory(tmp_path_factory.mktemp("pi-inv") / "pi.yaml")


@pytest.fixture(scope="module")
def probed(pi_inventory, emulated_pi):
    """(probe document, text output) of `benchfleet devices probe` on the emulated Pi."""
    proc = run_cli("devices", "probe", "-i", pi_inventory, "--json", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)[emulated_pi.device.name]
    assert doc["error"] is None, doc["error"]
    text = run_cli("devices", "probe", "-i", pi_inventory, timeout=600)
    assert text.returncode == 0, text.stdout + text.stderr
    return doc["probe"], text.stdout + text.stderr


def test_probe_reports_aarch64_python_311_tflite_runtime_214_and_no_edge_tpu(probed):
    probe, text = probed
    assert probe["machine"] == "aarch64" and "aarch64" in probe["platform"]
    assert probe["python"]["version"].startswith("3.11.")
    assert probe["python"]["executable"] == "/root/pi-venv/bin/python"
    assert probe["device_model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert probe["raspberry_pi"]["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert probe["cpu_model"] == "Raspberry Pi 4 Model B Rev 1.4" and probe["cores"]["listed"] == 4
    runtimes = probe["runtimes"]
    assert runtimes["tflite_runtime"]["available"] and runtimes["tflite_runtime"]["version"] == "2.14.0"
    assert not runtimes["ai_edge_litert"].get("available") and not runtimes["tensorflow"].get("available")
    assert not runtimes["pycoral"].get("available")
    assert probe["coral"]["present"] is False
    assert probe["coral"]["hint"] == "libedgetpu.so.1 not found: sudo apt-get install libedgetpu1-std"
    # The text a user reads: tflite through tflite_runtime 2.14; edgetpu refused with reason and fix.
    assert "emulated-pi4 can run: synthetic, tflite (2.14.0)" in text
    edgetpu = next(l for l in text.splitlines() if l.strip().startswith("edgetpu "))
    assert "libedgetpu" in edgetpu and "fix: " in edgetpu, edgetpu
    print(edgetpu)


@pytest.fixture(scope="module")
def pi_run(probed, pi_inventory, tmp_path_factory):
    """(run folder, CLI process) of `benchfleet run` of SUITE on the emulated Pi (after the probe,
    so the plan knows what the device lacks)."""
    tmp = tmp_path_factory.mktemp("pi-run")
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    proc = run_cli("run", suite, "-i", pi_inventory, "--results-dir", tmp / "results")
    # Exit 0: every tflite case ok (int8 too), the edgetpu case skipped.
    assert proc.returncode == 0 and ", 0 failed ->" in proc.stdout, proc.stdout + proc.stderr
    runs = [p for p in (tmp / "results").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0], proc


def rows_of(run_dir):
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def test_run_gives_ok_tflite_runtime_rows_on_aarch64_marked_emulated(pi_run):
    run_dir, proc = pi_run
    rows = [r for r in rows_of(run_dir) if r["backend"] == "tflite"]
    assert sorted((r["variant"], r["threads"]) for r in rows) == [
        ("tflite-fp32", "1"), ("tflite-fp32", "4"), ("tflite-int8", "1"), ("tflite-int8", "4")]
    for row in rows:
        raw = json.loads((run_dir / "raw" / row["device"] / (row["case_id"] + ".json")).read_text())
        assert raw["device"]["machine"] == "aarch64" and raw["device"]["python"].startswith("3.11.")
        assert row["emulated"] == "True"
        assert row["status"] == "ok", row["reason"]
        assert row["runtime_version"] == "2.14.0"
        assert raw["environment"]["backend"]["runtime_module"] == "tflite_runtime.interpreter"
        assert int(row["runs"]) >= 3 and float(row["p50_ms"]) > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["devices"]["emulated-pi4"]["emulated"] is True
    comparison = (run_dir / "comparison.md").read_text()
    assert "emulated-pi4 (emulated)" in proc.stdout.splitlines()[0]
    assert "| emulated-pi4 (emulated) |" in comparison
    assert "Emulated device(s): emulated-pi4." in comparison and "not comparable" in comparison


def test_run_skips_the_edgetpu_case_with_the_reason(pi_run):
    run_dir, _ = pi_run
    (row,) = [r for r in rows_of(run_dir) if r["backend"] == "edgetpu"]
    assert row["status"] == "skipped" and row["reason"], row
    assert row["emulated"] == "True"
    print(row["reason"])


def test_agent_heartbeat_events_and_atomic_writes_worked_on_the_device(pi_run, emulated_pi):
    """The supervisor, its worker per case, the heartbeat and the atomic result writes ran under
    the emulated interpreter: the device's run folder holds them, no temporary file is left."""
    run_dir, _ = pi_run
    out = Path(str(emulated_pi.rootfs) + "/root/benchfleet/runs") / run_dir.name / "out"
    names = sorted(os.listdir(out))
    assert "heartbeat" in names and "events.jsonl" in names and "done" in names, names
    assert not [n for n in names if ".tmp" in n or n.startswith(".")], names
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events, "no events"
