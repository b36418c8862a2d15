"""The readiness snapshot taken before and after every case (docs/METHOD.md step 1), on fake device
trees standing in for a Jetson and a Pi, and the throttle check that invalidates a result."""

import time

from agent import worker
from fixtures import trees


def test_jetson_nano_fake_tree_readiness_records_power_mode_and_clocks(tmp_path):
    root = trees.make_jetson_nano_jp4(str(tmp_path))
    snap = worker.readiness(root)
    jetson = snap["jetson"]
    assert (jetson["nvpmodel"]["mode_id"], jetson["nvpmodel"]["mode_name"]) == (0, "MAXN")
    assert jetson["jetson_clocks"]["state"] == "on"
    assert snap["raspberry_pi"] is None


def test_pi4_fake_tree_readiness_records_throttle_flags(tmp_path):
    root = trees.make_pi4_coral(str(tmp_path))
    snap = worker.readiness(root)
    throttled = snap["raspberry_pi"]["throttled"]
    assert throttled["raw"] == "0x50000" and throttled["now"] == []
    assert "under-voltage" in " ".join(throttled["occurred"])
    assert snap["jetson"] is None


def test_readiness_of_this_host_is_cheap_and_plain(tmp_path):
    start = time.perf_counter()
    snap = worker.readiness()
    assert time.perf_counter() - start < 0.5
    assert set(snap) >= {"governor", "isolcpus", "loadavg", "temps_c", "jetson", "raspberry_pi"}


def _pi(value, now, occurred):
    return {"raspberry_pi": {"throttled": {"value": value, "now": now, "occurred": occurred}}}


def test_throttling_during_the_run_is_an_invalid_reason():
    calm = _pi(0, [], [])
    assert worker.throttle_reasons(calm, calm) == []
    hot = _pi(0x20002, ["freq-capped"], ["freq-capped"])
    reasons = worker.throttle_reasons(calm, hot)
    assert reasons == ["throttling active after the run: freq-capped",
                       "throttle counters changed during the run: freq-capped"]
    assert worker.throttle_reasons({}, {}) == []   # not a Pi: nothing to say


def _write(root, rel, text):
    import os
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_busy_start_governor_and_a_clock_change_are_warnings_not_verdicts(tmp_path):
    import os
    root = str(tmp_path)
    cores = os.cpu_count()
    _write(root, "proc/loadavg", "%d.50 1.00 0.50 3/200 1234\n" % (cores + 1))
    _write(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "ondemand\n")
    _write(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1500000\n")
    _write(root, "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "1500000\n")
    before = worker.readiness(root)
    assert before["cur_freq_khz"] == {"cpu0": 1500000, "cpu1": 1500000}
    _write(root, "sys/devices/system/cpu/cpu1/cpufreq/scaling_cur_freq", "600000\n")  # throttled
    after = worker.readiness(root)
    notes = worker.readiness_warnings(before, after)
    assert notes == [
        "warning: load average %d.50 at the start, above the %d cores (background load?)"
        % (cores + 1, cores),
        "warning: CPU governor ondemand, not performance: the clock may change under the case",
        "warning: CPU frequency changed during the case: cpu1 1500->600 MHz"]
    # a quiet device with the performance governor and steady clocks: nothing to say
    _write(root, "proc/loadavg", "0.10 0.10 0.10 1/200 1234\n")
    _write(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n")
    steady = worker.readiness(root)
    assert worker.readiness_warnings(steady, steady) == []
