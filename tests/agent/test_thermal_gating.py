"""Thermal gating (docs/METHOD.md step 8): the idle baseline, the wait, the re-warm, and the
INVALID verdict of a case whose device had not settled, on live fake sysfs trees."""

import json
import os
import threading
import time

from agent import fsutil, runner
from agent_helpers import make_job, read_events, run_agent, synthetic_case, workdir_writer


def _zone(root, name, milli, kind=None):
    folder = os.path.join(root, "sys/class/thermal", name)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fsutil.atomic_write_text(os.path.join(folder, "temp"), "%d\n" % milli, fsync=False)
    if kind:
        fsutil.atomic_write_text(os.path.join(folder, "type"), kind + "\n", fsync=False)


def _stat(root, busy, idle):
    """A /proc/stat whose cpu line has `busy` user jiffies and `idle` idle jiffies."""
    folder = os.path.join(root, "proc")
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fsutil.atomic_write_text(os.path.join(folder, "stat"),
                             "cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 %d 0 0 %d 0 0 0 0 0 0\n"
                             % (busy, idle, busy, idle), fsync=False)


def test_rewarm_keeps_a_cpu_busy_for_the_time_asked():
    before = os.times()
    spent = runner.rewarm(0.3)
    after = os.times()
    cpu = (after[0] - before[0]) + (after[1] - before[1])
    assert spent >= 0.3
    # computing, not sleeping: a sleep of 0.3 s takes about a millisecond of CPU; a busy loop
    # takes its share of a core, half of one or more on a loaded 2-core CI machine
    assert cpu >= 0.2 * spent, "re-warm must compute, not sleep (%.3f s of CPU)" % cpu


def test_busy_share_reads_proc_stat_deltas(tmp_path):
    root = str(tmp_path)
    _stat(root, 100, 100)

    def sleep(_):  # over the interval: 90 busy jiffies, 10 idle
        _stat(root, 190, 110)
    assert abs(runner.cpu_busy_share(root, sleep=sleep) - 0.9) < 1e-9
    assert runner.cpu_busy_share(str(tmp_path / "none"), sleep=lambda _: None) is None


def test_baseline_is_measured_again_when_the_device_was_busy(tmp_path):
    """A run that starts on a busy device (a build just finished) waits until it is quiet and
    takes the baseline then: the cooler temperature, not the busy one."""
    root = str(tmp_path)
    _zone(root, "thermal_zone0", 65000)
    _stat(root, 0, 0)
    now = [0.0]
    jiffies = [0, 0]
    calls = [0]

    def sleep(s):
        now[0] += s
        calls[0] += 1
        # busy (95%) for the first three intervals, then idle (5%); the zone cools meanwhile
        busy = calls[0] <= 3
        jiffies[0] += 95 if busy else 5
        jiffies[1] += 5 if busy else 95
        _stat(root, jiffies[0], jiffies[1])
        _zone(root, "thermal_zone0", 65000 if busy else 44000)
    cfg = {"mode": "thermal", "seconds": 5.0, "delta_c": 3.0, "max_wait_s": 300.0}
    baseline, facts = runner.thermal_baseline(cfg, root, sleep, lambda: now[0])
    assert facts["busy_share"] > 0.9 and facts["remeasured"] is True
    assert facts["busy_share_after"] < 0.1
    assert facts["first_c"] == {"thermal_zone0": 65.0}
    assert baseline == {"thermal_zone0": 44.0}


def test_quiet_device_keeps_its_first_baseline(tmp_path):
    root = str(tmp_path)
    _zone(root, "thermal_zone0", 41000)
    _stat(root, 0, 0)

    def sleep(_):
        _stat(root, 5, 95)
    baseline, facts = runner.thermal_baseline({"max_wait_s": 10.0}, root, sleep, lambda: 0.0)
    assert baseline == {"thermal_zone0": 41.0} and "remeasured" not in facts


def test_thermal_wait_records_the_hot_zones_and_rewarms(tmp_path):
    root = str(tmp_path)
    _zone(root, "thermal_zone0", 80000)
    _zone(root, "thermal_zone1", 40000)
    now = [0.0]

    def sleep(s):
        now[0] += s
    cfg = {"mode": "thermal", "seconds": 5.0, "delta_c": 3.0, "max_wait_s": 7, "rewarm_s": 0.0}
    rec = runner.thermal_wait(cfg, {"thermal_zone0": 40.0, "thermal_zone1": 40.0}, root, sleep,
                              lambda: now[0])
    assert rec["settled"] is False and rec["hot"] == ["thermal_zone0"]
    assert rec["rewarm_s"] == 0.0 and rec["delta_c"] == 3.0


def test_case_after_an_unsettled_cooldown_is_invalid(tmp_path):
    """The real agent on a fake tree: the zone is at its baseline when the run starts and a test
    thread heats it once the first case runs; the second case's cool-down gives up at
    max_wait_s, re-warms, and that case is INVALID saying why, while the first stays VALID of
    noise reasons aside."""
    root = str(tmp_path / "sys-root")
    _zone(root, "thermal_zone0", 40000, "cpu-thermal")
    write_job = workdir_writer(tmp_path)
    settings = dict(runs=60, min_duration_s=0.1, cv_max=0.0, p50_ci_max=1.0, drift_max=10.0,
                    interval_ms=0.0)
    job = make_job([synthetic_case("c-one", 0.2, **settings),
                    synthetic_case("c-two", 0.2, **settings)],
                   cooldown={"mode": "thermal", "seconds": 0.0, "delta_c": 3.0,
                             "max_wait_s": 1.0, "rewarm_s": 0.2})
    job_path, out = write_job(job)
    stop = threading.Event()

    def heat():
        events = os.path.join(out, "events.jsonl")
        while not stop.is_set():
            if os.path.exists(events) and "case_start" in open(events).read():
                _zone(root, "thermal_zone0", 75000)
                return
            time.sleep(0.01)
    thread = threading.Thread(target=heat)
    thread.start()
    try:
        proc = run_agent(["run", job_path, "--out", out], extra_env={fsutil.SYS_ROOT_ENV: root})
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stderr
    first = json.load(open(os.path.join(out, "c-one.json")))
    second = json.load(open(os.path.join(out, "c-two.json")))
    assert first["validity"]["status"] == "VALID", first["validity"]
    assert first["cooldown"].get("first") is True
    assert second["validity"]["status"] == "INVALID"
    assert any(r.startswith("not settled") and "thermal_zone0" in r
               for r in second["validity"]["reasons"]), second["validity"]["reasons"]
    cd = second["cooldown"]
    assert cd["settled"] is False and cd["hot"] == ["thermal_zone0"]
    assert cd["baseline_c"] == {"thermal_zone0": 40.0} and cd["temps_c"]["thermal_zone0"] == 75.0
    assert 1.0 <= cd["waited_s"] < 3.0 and cd["rewarm_s"] >= 0.2
    assert [e["event"] for e in read_events(out)].count("cooldown") == 1
