"""Telemetry through the real agent (supervisor, forked worker, harness, sampler) on a live fake
device: BENCHFLEET_SYS_ROOT points the agent at a tree a test thread keeps changing while the
cases run. Temperatures rise, a supply monitor reads more power while a case runs than while
the device cools down, a Pi throttle flag is raised in the middle of a case, and the results
say each: the temperature summary, energy per inference and idle power, the INVALID verdict.
"""

import json
import os
import threading
import time

from agent import fsutil, schema
from agent_helpers import (events_so_far, make_job, read_events, run_agent, synthetic_case,
                           workdir_writer, write_file)

CASE_W = 4.5    # what the fake INA219 reads while a case runs
IDLE_W = 1.5    # and while the supervisor cools down
THROTTLE = "sys/devices/platform/soc/soc:firmware/get_throttled"






class FakeDevice(object):
    """A thread that plays a device: a case_start in events.jsonl means load (CASE_W, the zone
    heating 20 C/s from 45 C), a case_end means idle (IDLE_W); throttle_case (a case id) gets
    its throttle flag raised 0.3 s after it starts."""

    def __init__(self, root, out, throttle_case=None):
        self.root, self.out, self.throttle_case = root, out, throttle_case
        write_file(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
        write_file(root, "sys/class/thermal/thermal_zone0/temp", 45000)
        write_file(root, "sys/class/hwmon/hwmon0/name", "ina219")
        write_file(root, "sys/class/hwmon/hwmon0/power1_input", int(IDLE_W * 1e6))
        write_file(root, THROTTLE, "0")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.daemon = True

    def run(self):
        started = None
        throttled = False
        while not self.stop.wait(0.005):
            events = events_so_far(self.out)
            running = [e for e in events if e["event"] in ("case_start", "case_end")]
            busy = bool(running) and running[-1]["event"] == "case_start"
            if busy and started is None:
                started = (time.monotonic(), running[-1]["case_id"])
            if not busy:
                started = None
            watts = CASE_W if busy else IDLE_W
            write_file(self.root, "sys/class/hwmon/hwmon0/power1_input", int(watts * 1e6))
            if started is not None:
                heat = 45.0 + 20.0 * (time.monotonic() - started[0])
                write_file(self.root, "sys/class/thermal/thermal_zone0/temp", int(heat * 1000))
                if started[1] == self.throttle_case and not throttled and \
                        time.monotonic() - started[0] > 0.3:
                    write_file(self.root, THROTTLE, "50005")   # under-voltage + capped, now and since
                    throttled = True
            elif throttled:
                write_file(self.root, THROTTLE, "50000")       # over now; "occurred" stays set

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


SETTINGS = dict(runs=200, min_duration_s=1.0, warmup_min_s=0.2, p50_ci_max=1.0, drift_max=10.0,
                interval_ms=20.0)


def _run(tmp_path, cases, throttle_case=None, cooldown=None):
    root = str(tmp_path / "device")
    write_job = workdir_writer(tmp_path)
    job_path, out = write_job(make_job(cases, cooldown=cooldown or {"mode": "fixed",
                                                                     "seconds": 1.0}))
    with FakeDevice(root, out, throttle_case):
        proc = run_agent(["run", job_path, "--out", out], extra_env={fsutil.SYS_ROOT_ENV: root})
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    docs = {}
    for case in cases:
        with open(os.path.join(out, case["case_id"] + ".json")) as f:
            docs[case["case_id"]] = json.load(f)
        assert schema.check_result(docs[case["case_id"]]) == []
    return docs, out


def test_energy_temperature_and_idle_power_from_a_live_device(tmp_path):
    docs, out = _run(tmp_path, [synthetic_case("c-first", 0.5, **SETTINGS),
                                synthetic_case("c-second", 0.5, subtract_idle=True, **SETTINGS)])
    first, second = docs["c-first"], docs["c-second"]
    for doc in (first, second):
        tel = doc["telemetry"]
        kinds = dict((s["name"], s["kind"]) for s in tel["sources"])
        assert kinds["thermal"] == "thermal" and kinds["pi_throttle"] == "throttle"
        assert "power" in kinds.values()
        summary = tel["summary"]
        # the zone heats during the case: it ends hotter than it starts, never below 45 C
        assert 45.0 <= summary["temp_start_c"] < summary["temp_end_c"] <= summary["temp_max_c"]
        assert summary["throttled"] is False
        assert abs(summary["power_mean_w"] - CASE_W) < 0.05 * CASE_W
        assert len(tel["series"]["t_s"]) > 20
        energy = tel["energy"]
        window = doc["timing"]["measure_s"]
        assert abs(energy["window_s"] - window) < 0.05 * window
        # energy = power x window; per inference = energy / runs
        assert abs(energy["energy_j"] - CASE_W * window) < 0.05 * CASE_W * window or \
            energy["idle_subtracted"]
        assert doc["timing"]["wall_start_unix"] < doc["timing"]["wall_end_unix"]
    e1, e2 = first["telemetry"]["energy"], second["telemetry"]["energy"]
    runs = first["timing"]["runs"]
    assert abs(e1["per_inference_mj"] - e1["energy_j"] / runs * 1000.0) < 1e-6 * e1["per_inference_mj"]
    assert abs(e1["inferences_per_j"] - runs / e1["energy_j"]) < 1e-6 * e1["inferences_per_j"]
    # the first case had no cool-down before it; the second's idle power is the fake's idle
    assert e1["idle_power_w"] is None and e1["idle_subtracted"] is False
    assert abs(second["cooldown"]["idle_power_w"]["ina219"] - IDLE_W) < 0.1 * IDLE_W
    assert abs(e2["idle_power_w"] - IDLE_W) < 0.1 * IDLE_W and e2["idle_subtracted"] is True
    above = (CASE_W - IDLE_W) * e2["window_s"]
    assert abs(e2["energy_j"] - above) < 0.08 * above
    assert first["validity"]["status"] == "VALID", first["validity"]


def test_a_throttle_flag_raised_mid_case_makes_it_invalid(tmp_path):
    docs, _ = _run(tmp_path, [synthetic_case("c-calm", 0.5, **SETTINGS),
                              synthetic_case("c-hot", 0.5, **SETTINGS)], throttle_case="c-hot")
    calm, hot = docs["c-calm"], docs["c-hot"]
    assert calm["validity"]["status"] == "VALID", calm["validity"]
    assert calm["telemetry"]["summary"]["throttled"] is False
    assert hot["telemetry"]["summary"]["throttled"] is True
    assert hot["validity"]["status"] == "INVALID"
    assert any(r.startswith("throttling during the measured window") and "pi_throttle" in r
               for r in hot["validity"]["reasons"]), hot["validity"]["reasons"]
    flags = hot["telemetry"]["series"]["throttle:pi"]
    assert flags[0] == 0 and 0x50005 in flags


def test_sustained_windows_carry_the_telemetry_columns(tmp_path):
    settings = dict(SETTINGS, mode="sustained", duration_s=1.2, window_s=0.3)
    docs, _ = _run(tmp_path, [synthetic_case("c-long", 0.5, **settings)],
                   throttle_case="c-long")
    doc = docs["c-long"]
    windows = doc["timing"]["windows"]
    assert len(windows) == 4
    assert all(abs(w["power_w"] - CASE_W) < 0.1 * CASE_W for w in windows)
    temps = [w["temp_max_c"] for w in windows]
    assert temps == sorted(temps) and temps[-1] > temps[0]
    # the flag is raised 0.3 s after case_start: load and warm-up come first, so it is already
    # up in the first window or the one after
    flagged = [w["throttled"] for w in windows]
    assert flagged[-1] is True
    onset = doc["timing"]["sustained"]
    first_flag = windows[flagged.index(True)]["start_s"]
    assert onset["throttle_onset_s"] == first_flag and onset["onset_reason"] == "throttle flag"


def test_interval_zero_runs_no_sampler(tmp_path):
    docs, out = _run(tmp_path, [synthetic_case("c-quiet", 0.2, **dict(SETTINGS, interval_ms=0.0))])
    assert docs["c-quiet"]["telemetry"] == {}
    assert [e["event"] for e in read_events(out)].count("case_end") == 1


def test_idle_power_is_sampled_in_a_child_the_supervisor_never_shares(tmp_path):
    """The supervisor's idle meter forks a sampler for the wait: the mean power comes back over
    a pipe, the child is gone after stop(), and the supervisor process itself never imported the
    telemetry module (no NVML, no open sensor files for the workers it forks later)."""
    import subprocess
    import sys
    from agent_helpers import REPO
    root = str(tmp_path / "device")
    write_file(root, "sys/class/hwmon/hwmon0/name", "ina219")
    write_file(root, "sys/class/hwmon/hwmon0/power1_input", int(2.25e6))
    code = (
        "import json, os, sys, time\n"
        "from agent import runner\n"
        "meter = runner.IdleMeter([{'settings': {'interval_ms': 20.0}}])\n"
        "meter.start()\n"
        "pid = meter.child[0]\n"
        "time.sleep(0.5)\n"
        "watts = meter.stop()\n"
        "gone = not os.path.exists('/proc/%d' % pid)\n"
        "print(json.dumps([watts, gone, 'agent.telemetry' in sys.modules]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=REPO, **{fsutil.SYS_ROOT_ENV: root}))
    assert proc.returncode == 0, proc.stderr
    watts, gone, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(watts["ina219"] - 2.25) < 0.01
    assert gone is True and imported is False
