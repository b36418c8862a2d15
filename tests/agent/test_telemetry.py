"""agent/telemetry.py on live fake sysfs trees: a test thread keeps changing the files while a
real Sampler reads them, and every figure is checked against what was planted."""

import os
import shutil
import subprocess
import textwrap
import time

import pytest

from agent import schema, telemetry
from agent_helpers import write_file as _write
from livetree import Live

INTERVAL_MS = 10.0


def _run_sampler(sources, seconds, interval_ms=INTERVAL_MS, during=None):
    """A started Sampler over `sources` for `seconds`; returns it stopped."""
    sampler = telemetry.Sampler(sources, interval_ms).start()
    try:
        if during is not None:
            during(sampler)
        else:
            time.sleep(seconds)
    finally:
        sampler.stop()
    return sampler


def _checked(record):
    assert schema.check_telemetry(record) == []
    assert set(record) == set(schema.TELEMETRY_FIELDS)
    assert set(record["summary"]) == set(schema.TELEMETRY_SUMMARY_FIELDS)
    if record["energy"] is not None:
        assert set(record["energy"]) == set(schema.ENERGY_FIELDS)
    lengths = set(len(v) for v in record["series"].values())
    assert len(lengths) <= 1
    return record


def _close(value, truth, rel):
    assert value is not None, "no value, expected %r" % truth
    assert abs(value - truth) <= rel * abs(truth), "%r is not within %g%% of %r" % (
        value, rel * 100, truth)


def _by_name(sources):
    return dict((s.name, s) for s in sources)


# --- thermal and cpufreq ---------------------------------------------------------------------

def _thermal_tree(root):
    for zone, kind in ((0, "cpu-thermal"), (1, "gpu-thermal"), (2, "cpu-thermal"), (3, None),
                       (10, "PMIC-Die")):
        if kind:
            _write(root, "sys/class/thermal/thermal_zone%d/type" % zone, kind)
        _write(root, "sys/class/thermal/thermal_zone%d/temp" % zone, 30000)
    _write(root, "sys/class/thermal/thermal_zone10/temp", 100000)   # Jetson's fake 100 C
    for cpu, khz in enumerate((1800000, 600000, 1200000, 1500000)):
        _write(root, "sys/devices/system/cpu/cpu%d/cpufreq/scaling_cur_freq" % cpu, khz)


def _planted_temp(seconds):
    """The hottest zone (gpu-thermal) at `seconds` into the writer: 40 C rising 30 C/s."""
    return 40.0 + 30.0 * seconds


def test_thermal_and_cpufreq_follow_a_rising_live_tree(tmp_path):
    root = str(tmp_path)
    _thermal_tree(root)
    sources, notes = telemetry.discover(root)
    names = _by_name(sources)
    assert sorted(names) == ["cpufreq", "thermal"]
    assert names["thermal"].channels == ["temp_c:cpu-thermal", "temp_c:gpu-thermal",
                                         "temp_c:cpu-thermal#2", "temp_c:thermal_zone3",
                                         "temp_c:PMIC-Die"]
    assert names["cpufreq"].channels == ["freq_mhz:cpu%d" % i for i in range(4)]
    assert any("nvml" in n for n in notes)

    def write(s):
        hot = _planted_temp(s)
        for zone, c in ((0, hot - 5), (1, hot), (2, hot - 10), (3, hot - 20)):
            _write(root, "sys/class/thermal/thermal_zone%d/temp" % zone, int(c * 1000))
    live = Live(write)
    windows = {}

    def during(sampler):
        time.sleep(0.05)
        windows["t0"] = time.monotonic()
        time.sleep(0.35)
        windows["t1"] = time.monotonic()
        time.sleep(0.05)
    try:
        sampler = _run_sampler(sources, None, during=during)
    finally:
        live.stop()
    t0, t1 = windows["t0"], windows["t1"]
    s = sampler.summary(t0, t1)
    start, end = _planted_temp(t0 - live.t0), _planted_temp(t1 - live.t0)
    # the first sample after t0 is at most one interval late (plus a busy machine's jitter)
    assert start - 0.5 <= s["temp_start_c"] <= start + 3.0
    assert end - 3.0 <= s["temp_end_c"] <= end + 0.5
    assert s["temp_min_c"] == s["temp_start_c"] and s["temp_max_c"] == s["temp_end_c"]
    assert s["temp_max_c"] < 90.0, "the PMIC-Die placeholder (100 C) must stay out of it"
    assert s["freq_min_mhz"] == 600.0 and s["freq_max_mhz"] == 1800.0
    assert s["power_mean_w"] is None and s["throttled"] is None
    assert 0.35 / 0.01 * 0.4 <= s["samples"] <= 0.35 / 0.01 + 2
    rec = _checked(sampler.record(t0, t1, 1000))
    assert rec["energy"] is None and rec["error"] is None
    info = dict((src["name"], src) for src in rec["sources"])
    assert info["thermal"]["kind"] == "thermal" and info["thermal"]["unit"] == "C"
    assert info["thermal"]["method"] == "sysfs:thermal_zone"
    assert 30.0 <= info["thermal"]["rate_hz"] <= 105.0
    series = rec["series"]
    assert series["temp_c:PMIC-Die"][0] == 100.0
    assert series["freq_mhz:cpu1"][0] == 600.0
    temps = [v for v in series["temp_c:gpu-thermal"] if v is not None]
    assert temps == sorted(temps) and len(temps) == len(series["t_s"])
    assert series["t_s"][0] <= 0.0 <= series["t_s"][1] and series["t_s"][-1] >= t1 - t0
    hot = [t for _, t in ((ts, v) for ts, v in zip(series["t_s"], series["temp_c:gpu-thermal"]))]
    assert all(abs(v - (series["temp_c:cpu-thermal"][i] + 5.0)) < 1.0
               for i, v in enumerate(hot) if v is not None)
    stats = sampler.window_stats(t0, t1)
    assert stats == {"temp_max_c": s["temp_max_c"], "freq_min_mhz": 600.0, "power_w": None,
                     "throttled": None}


def test_a_file_that_vanishes_gives_none_and_no_crash(tmp_path):
    root = str(tmp_path)
    _thermal_tree(root)
    _write(root, "sys/class/hwmon/hwmon0/name", "ina219")
    _write(root, "sys/class/hwmon/hwmon0/power1_input", 4000000)   # 4 W
    _write(root, "sys/class/hwmon/hwmon1/name", "ina226")
    _write(root, "sys/class/hwmon/hwmon1/in1_input", 5000)
    _write(root, "sys/class/hwmon/hwmon1/curr1_input", 200)        # 1 W
    sources, _ = telemetry.discover(root)
    gone = {}

    def during(sampler):
        time.sleep(0.2)
        os.unlink(os.path.join(root, "sys/class/thermal/thermal_zone1/temp"))
        os.unlink(os.path.join(root, "sys/class/hwmon/hwmon0/power1_input"))
        shutil.rmtree(os.path.join(root, "sys/devices/system/cpu/cpu1"))
        gone["t"] = time.monotonic()
        time.sleep(0.3)
    sampler = _run_sampler(sources, None, during=during)
    assert sampler.error is None
    after = [v for t, v in sampler.samples if t > gone["t"] + 0.02]
    before = [v for t, v in sampler.samples if t < gone["t"] - 0.02]
    assert after and before
    assert all(v["temp_c:gpu-thermal"] is None and v["power_w:ina219"] is None
               and v["freq_mhz:cpu1"] is None for v in after)
    assert all(v["temp_c:cpu-thermal"] == 30.0 and v["power_w:ina226"] == 1.0 for v in after)
    assert all(v["power_w:ina219"] == 4.0 and v["freq_mhz:cpu1"] == 600.0 for v in before)
    t0, t1 = gone["t"] + 0.1, gone["t"] + 0.28
    e = sampler.energy(t0, t1, 100)
    # the vanished rail has no energy there; the next source takes over as the primary
    assert e["by_source"]["ina219"] is None
    assert e["source"] == "ina226"
    _close(e["energy_j"], 1.0 * (t1 - t0), 0.02)
    s = sampler.summary(t0, t1)
    assert s["temp_max_c"] == 30.0 and s["freq_min_mhz"] == 1200.0
    _checked(sampler.record(t0, t1, 100))
    # before it vanished the INA219 (the first supply monitor) was the primary
    e = sampler.energy(gone["t"] - 0.15, gone["t"] - 0.02, 100)
    assert e["source"] == "ina219"
    _close(e["energy_j"], 4.0 * 0.13, 0.02)
    rates = dict((i["name"], i["rate_hz"]) for i in sampler.source_info())
    # the INA219 stopped answering: its rate counts the readings it gave, over their span
    assert rates["ina219"] > 20


def test_a_source_that_raises_is_recorded_and_the_others_go_on(tmp_path):
    root = str(tmp_path)
    _thermal_tree(root)
    sources, _ = telemetry.discover(root)

    class Broken(telemetry.Source):
        kind, method, unit = "power", "test:broken", "W"
        power_channel, priority = "power_w:broken", 0

        def read(self):
            raise RuntimeError("i2c bus wedged")
    broken = Broken("broken", ["power_w:broken"])
    sampler = _run_sampler(sources + [broken], 0.2)
    assert "broken" in sampler.error and "i2c bus wedged" in sampler.error
    t1 = time.monotonic()
    rec = _checked(sampler.record(t1 - 0.15, t1 - 0.02, 10))
    assert rec["summary"]["temp_max_c"] == 30.0 and rec["summary"]["samples"] > 3
    assert rec["energy"]["by_source"] == {"broken": None} and rec["energy"]["energy_j"] is None
    assert "broken" in rec["error"]
    assert dict((i["name"], i["rate_hz"]) for i in rec["sources"])["broken"] is None


def test_no_sources_at_all(tmp_path):
    sources, notes = telemetry.discover(str(tmp_path))
    assert sources == []
    assert notes and all(isinstance(n, str) for n in notes)
    sampler = _run_sampler(sources, 0.1)
    t1 = time.monotonic()
    rec = _checked(sampler.record(t1 - 0.08, t1, 50))
    assert rec["energy"] is None and rec["sources"] == []
    assert all(rec["summary"][k] is None for k in schema.TELEMETRY_SUMMARY_FIELDS
               if k != "samples")
    assert sampler.idle_power(t1 - 0.08, t1) == {}
    assert sampler.window_stats(t1 - 0.08, t1) == {"temp_max_c": None, "freq_min_mhz": None,
                                                   "power_w": None, "throttled": None}


# --- Raspberry Pi throttle flags ------------------------------------------------------------

def test_pi_throttle_flag_set_mid_window_sysfs(tmp_path):
    root = str(tmp_path)
    rel = "sys/devices/platform/soc/soc:firmware/get_throttled"
    _write(root, rel, "0")
    _write(root, "usr/bin/vcgencmd", "#!/bin/sh\nexit 1\n")   # must not be used: sysfs wins
    sources, _ = telemetry.discover(root)
    (pi,) = sources
    assert pi.kind == "throttle" and pi.channels == ["throttle:pi"]
    assert pi.method == "sysfs:/" + rel and pi.period_s == 0.0
    marks = {}

    def during(sampler):
        time.sleep(0.15)
        marks["set"] = time.monotonic()
        _write(root, rel, "50005")          # under-voltage and throttled, now and occurred
        time.sleep(0.15)
        marks["clear"] = time.monotonic()
        _write(root, rel, "50000")          # back to normal: only the sticky bits remain
        time.sleep(0.15)
        marks["occurred"] = time.monotonic()
        _write(root, rel, "70000")          # a throttle between two samples: a new sticky bit
        time.sleep(0.1)
    sampler = _run_sampler(sources, None, during=during)
    s_before = sampler.summary(marks["set"] - 0.13, marks["set"] - 0.01)
    s_during = sampler.summary(marks["set"] - 0.1, marks["set"] + 0.1)
    s_after = sampler.summary(marks["clear"] + 0.03, marks["occurred"] - 0.01)
    s_sticky = sampler.summary(marks["occurred"] - 0.01, marks["occurred"] + 0.08)
    assert s_before["throttled"] is False
    assert s_during["throttled"] is True
    assert s_after["throttled"] is False
    assert s_sticky["throttled"] is True
    assert sampler.window_stats(marks["set"] + 0.02, marks["clear"] - 0.02)["throttled"] is True
    rec = _checked(sampler.record(marks["set"] - 0.1, marks["set"] + 0.1, 10))
    flags = [v for v in rec["series"]["throttle:pi"] if v is not None]
    assert 0 in flags and 0x50005 in flags and all(isinstance(v, int) for v in flags)


def test_pi_throttle_through_vcgencmd_at_most_once_a_second(tmp_path):
    root = str(tmp_path)
    calls = os.path.join(root, "calls")
    script = _write(root, "usr/bin/vcgencmd", textwrap.dedent("""\
        #!/bin/sh
        echo x >> %s
        echo "throttled=0x50005"
        """ % calls))
    os.chmod(script, 0o755)
    sources, _ = telemetry.discover(root)
    (pi,) = sources
    assert pi.method == "vcgencmd get_throttled" and pi.period_s == 1.0
    with open(calls) as f:
        assert len(f.readlines()) == 1       # discovery checked it once
    sampler = _run_sampler(sources, 0.5)
    with open(calls) as f:
        assert len(f.readlines()) == 2       # 0.5 s at 10 ms: one read, not fifty
    t1 = time.monotonic()
    s = sampler.summary(t1 - 0.6, t1)
    assert s["throttled"] is True
    rec = _checked(sampler.record(t1 - 0.6, t1, 10))
    # read once: one point holds it, the others are gaps (not repeated readings)
    assert [v for v in rec["series"]["throttle:pi"] if v is not None] == [0x50005]
    assert dict((i["name"], i["rate_hz"]) for i in rec["sources"])["pi_throttle"] is None


# --- power rails -----------------------------------------------------------------------------

def _jetson5_tree(root, link_class=True):
    """An Orin-like INA3221 (JetPack 5 hwmon): VDD_IN, VDD_CPU_GPU_CV, NC."""
    dev = "sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040/hwmon/hwmon3"
    for n, label, mv, ma in ((1, "VDD_IN", 5000, 1200), (2, "VDD_CPU_GPU_CV", 5000, 400),
                             (3, "NC", 0, 0)):
        _write(root, dev + "/in%d_label" % n, label)
        _write(root, dev + "/in%d_input" % n, mv)
        _write(root, dev + "/curr%d_input" % n, ma)
    _write(root, dev + "/name", "ina3221")
    _write(root, dev + "/curr4_input", 1600)    # the chip's sum channel: never a rail
    _write(root, dev + "/in7_input", 900)
    links = ["sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"]
    if link_class:
        links.append("sys/class/hwmon/hwmon3")
    for link in links:
        path = os.path.join(root, link)
        os.makedirs(os.path.dirname(path))
        os.symlink(os.path.join(root, dev), path)
    return dev


def test_jetson_ina3221_hwmon_energy_of_a_power_step(tmp_path):
    root = str(tmp_path)
    dev = _jetson5_tree(root)
    sources, _ = telemetry.discover(root)
    names = _by_name(sources)
    assert sorted(names) == ["VDD_CPU_GPU_CV", "VDD_IN"], "the class and i2c views are one chip"
    assert names["VDD_IN"].method == "hwmon:ina3221" and names["VDD_IN"].kind == "power"
    assert names["VDD_IN"].channels == ["power_w:VDD_IN"]
    marks = {}

    def during(sampler):
        time.sleep(0.05)
        marks["t0"] = time.monotonic()
        time.sleep(0.2)
        _write(root, dev + "/curr1_input", 1800)      # 6 W -> 9 W
        marks["step"] = time.monotonic()
        time.sleep(0.2)
        marks["t1"] = time.monotonic()
        time.sleep(0.05)
    sampler = _run_sampler(sources, None, during=during)
    t0, step, t1 = marks["t0"], marks["step"], marks["t1"]
    e = sampler.energy(t0, t1, 700)
    truth = 6.0 * (step - t0) + 9.0 * (t1 - step)
    assert e["source"] == "VDD_IN"
    _close(e["energy_j"], truth, 0.03)
    _close(e["by_source"]["VDD_CPU_GPU_CV"], 2.0 * (t1 - t0), 0.01)
    assert e["method"].startswith("integral of sampled power (hwmon:ina3221 VDD_IN, ")
    assert e["method"].endswith(" Hz)")
    _close(e["per_inference_mj"], truth / 700 * 1000.0, 0.03)
    _close(e["power_mean_w"], truth / (t1 - t0), 0.03)
    _close(e["inferences_per_j"], 700 / truth, 0.03)
    assert e["window_s"] == t1 - t0 and e["idle_subtracted"] is False
    assert e["idle_power_w"] is None and e["clock_offset_s"] is None
    # per-window figures (sustained mode) and the idle power the supervisor takes
    _close(sampler.window_stats(t0 + 0.02, step - 0.02)["power_w"], 6.0, 0.01)
    _close(sampler.window_stats(step + 0.02, t1 - 0.02)["power_w"], 9.0, 0.01)
    idle = sampler.idle_power(t0 + 0.02, step - 0.02)
    assert sorted(idle) == ["VDD_CPU_GPU_CV", "VDD_IN"]
    _close(idle["VDD_IN"], 6.0, 0.01)
    sub = sampler.energy(t0, t1, 700, idle_power_w={"VDD_IN": 5.0}, subtract_idle=True)
    assert sub["idle_power_w"] == 5.0 and sub["idle_subtracted"] is True
    _close(sub["energy_j"], truth - 5.0 * (t1 - t0), 0.06)
    nosub = sampler.energy(t0, t1, 700, idle_power_w={"VDD_IN": 5.0})
    assert nosub["idle_subtracted"] is False and nosub["energy_j"] == e["energy_j"]
    rec = _checked(sampler.record(t0, t1, 700, idle_power_w={"VDD_IN": 5.0}))
    _close(rec["summary"]["power_mean_w"], truth / (t1 - t0), 0.03)
    assert set(rec["series"]) == {"t_s", "power_w:VDD_IN", "power_w:VDD_CPU_GPU_CV"}
    assert set(v for v in rec["series"]["power_w:VDD_IN"]) == {6.0, 9.0}


def test_jetson_ina3221_under_the_i2c_driver_only(tmp_path):
    root = str(tmp_path)
    _jetson5_tree(root, link_class=False)
    sources, _ = telemetry.discover(root)
    assert sorted(s.name for s in sources) == ["VDD_CPU_GPU_CV", "VDD_IN"]
    sampler = _run_sampler(sources, 0.25)
    t1 = time.monotonic() - 0.02
    _close(sampler.energy(t1 - 0.2, t1, 1)["energy_j"], 6.0 * 0.2, 0.01)


def test_jetpack4_iio_rails(tmp_path):
    root = str(tmp_path)
    dev = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    _write(root, dev + "/rail_name_0", "POM_5V_IN")
    _write(root, dev + "/in_power0_input", 3000)         # mW
    _write(root, dev + "/in_voltage0_input", 5000)
    _write(root, dev + "/in_current0_input", 600)
    _write(root, dev + "/rail_name_1", "POM_5V_GPU")
    _write(root, dev + "/in_voltage1_input", 5000)       # no power file: V * I
    _write(root, dev + "/in_current1_input", 200)
    sources, _ = telemetry.discover(root)
    names = _by_name(sources)
    assert sorted(names) == ["POM_5V_GPU", "POM_5V_IN"]
    assert names["POM_5V_IN"].method == "iio:ina3221"
    marks = {}

    def during(sampler):
        time.sleep(0.05)
        marks["t0"] = time.monotonic()
        time.sleep(0.25)
        marks["t1"] = time.monotonic()
        time.sleep(0.03)
    sampler = _run_sampler(sources, None, during=during)
    t0, t1 = marks["t0"], marks["t1"]
    e = _checked(sampler.record(t0, t1, 10))["energy"]
    assert e["source"] == "POM_5V_IN" and "iio:ina3221 POM_5V_IN" in e["method"]
    _close(e["energy_j"], 3.0 * (t1 - t0), 0.01)
    _close(e["by_source"]["POM_5V_GPU"], 1.0 * (t1 - t0), 0.01)


def test_ina2xx_supply_monitors(tmp_path):
    root = str(tmp_path)
    _write(root, "sys/class/hwmon/hwmon0/name", "ina219")
    _write(root, "sys/class/hwmon/hwmon0/power1_input", 3000000)   # uW
    _write(root, "sys/class/hwmon/hwmon0/in1_input", 5100)
    _write(root, "sys/class/hwmon/hwmon0/curr1_input", 580)
    _write(root, "sys/class/hwmon/hwmon1/name", "ina226")
    _write(root, "sys/class/hwmon/hwmon1/in1_input", 12000)        # no power file: V * I
    _write(root, "sys/class/hwmon/hwmon1/curr1_input", 250)
    _write(root, "sys/class/hwmon/hwmon2/name", "ina260")
    _write(root, "sys/class/hwmon/hwmon2/label", "PSU")
    _write(root, "sys/class/hwmon/hwmon2/power1_input", 1500000)
    _write(root, "sys/class/hwmon/hwmon3/name", "ina219")           # a second one
    _write(root, "sys/class/hwmon/hwmon3/power1_input", 500000)
    _write(root, "sys/class/hwmon/hwmon4/name", "coretemp")         # not a power monitor
    _write(root, "sys/class/hwmon/hwmon4/temp1_input", 50000)
    sources, _ = telemetry.discover(root)
    assert [(s.name, s.method, s.channels) for s in sources] == [
        ("ina219", "hwmon:ina219", ["power_w:ina219"]),
        ("ina226", "hwmon:ina226", ["power_w:ina226"]),
        ("PSU", "hwmon:ina260", ["power_w:PSU"]),
        ("ina219#2", "hwmon:ina219", ["power_w:ina219#2"])]
    watts = {}

    def write(s):   # the INA226 load rises linearly: 3 W + 10 W/s
        watts[s] = 3.0 + 10.0 * s
        _write(root, "sys/class/hwmon/hwmon1/curr1_input", int(round(watts[s] * 1000 / 12.0)))
    live = Live(write, 0.001)
    try:
        sampler = _run_sampler(sources, 0.45)
    finally:
        live.stop()
    t0, t1 = live.t0 + 0.05, live.t0 + 0.4
    e = sampler.energy(t0, t1, 10)
    assert e["source"] == "ina219"
    _close(e["energy_j"], 3.0 * 0.35, 0.01)
    _close(e["by_source"]["PSU"], 1.5 * 0.35, 0.01)
    _close(e["by_source"]["ina219#2"], 0.5 * 0.35, 0.01)
    # integral of 3 + 10 s over [0.05, 0.4] = 1.05 + 5 * (0.16 - 0.0025) = 1.8375 J
    _close(e["by_source"]["ina226"], 1.8375, 0.03)
    _checked(sampler.record(t0, t1, 10))


# --- RAPL ------------------------------------------------------------------------------------

def test_rapl_counter_that_wraps_during_the_window(tmp_path):
    root = str(tmp_path)
    pkg = "sys/class/powercap/intel-rapl:0"
    _write(root, pkg + "/name", "package-0")
    _write(root, pkg + "/max_energy_range_uj", 3000000)     # wraps every 3 J: every 0.3 s
    _write(root, pkg + "/energy_uj", 2500000)
    core = pkg + "/intel-rapl:0:0"                           # a nested sub-zone only
    _write(root, core + "/name", "core")
    _write(root, core + "/max_energy_range_uj", 262143328850)
    _write(root, core + "/energy_uj", 262143328850 - 300000)  # wraps once, 0.3 J in
    _write(root, "sys/class/powercap/intel-rapl-mmio:0/name", "package-0")   # not RAPL MSR
    _write(root, "sys/class/powercap/intel-rapl-mmio:0/energy_uj", 1)
    sources, _ = telemetry.discover(root)
    names = _by_name(sources)
    assert sorted(names) == ["core", "package-0"]
    assert names["package-0"].kind == "energy" and names["package-0"].method == "rapl:energy_uj"
    assert names["package-0"].channels == ["energy_j:package-0", "power_w:package-0"]

    def write(s):   # 10 W on the package, 4 W on the core, both counters wrapping
        _write(root, pkg + "/energy_uj", int(2500000 + 10e6 * s) % 3000000)
        _write(root, core + "/energy_uj",
               int(262143328850 - 300000 + 4e6 * s) % 262143328850)
    live = Live(write, 0.001)
    try:
        sampler = _run_sampler(sources, 0.75)
    finally:
        live.stop()
    t0, t1 = live.t0 + 0.05, live.t0 + 0.7
    e = sampler.energy(t0, t1, 400)
    assert e["source"] == "package-0"
    assert e["method"] == "counter difference (rapl:energy_uj package-0)"
    _close(e["energy_j"], 10.0 * 0.65, 0.03)        # two wraps inside the window
    _close(e["by_source"]["core"], 4.0 * 0.65, 0.03)
    rec = _checked(sampler.record(t0, t1, 400))
    cum = [v for v in rec["series"]["energy_j:package-0"] if v is not None]
    assert cum == sorted(cum) and cum[-1] - cum[0] > 6.0, "the counter is unwrapped"
    powers = [v for v in rec["series"]["power_w:package-0"] if v is not None]
    assert sorted(powers)[len(powers) // 2] == pytest.approx(10.0, rel=0.2)
    _close(rec["summary"]["power_mean_w"], 10.0, 0.03)


def test_rapl_root_only_counter_gives_a_note(tmp_path):
    root = str(tmp_path)
    pkg = "sys/class/powercap/intel-rapl:0"
    _write(root, pkg + "/name", "package-0")
    # what a non-root reader meets since Linux 5.10 (a folder in its place fails the same way
    # for root, who may read a mode-0 file)
    os.makedirs(os.path.join(root, pkg, "energy_uj"))
    sources, notes = telemetry.discover(root)
    assert sources == []
    assert any("package-0" in n and "unreadable" in n for n in notes)


# --- long runs -------------------------------------------------------------------------------

class _Fake(telemetry.Source):
    method = "test:fed"


def test_a_long_run_stays_bounded_and_exact(tmp_path):
    zones = _Fake("thermal", ["temp_c:soc"])
    zones.kind = "thermal"
    cpus = _Fake("cpufreq", ["freq_mhz:cpu0"])
    cpus.kind = "cpufreq"
    pi = _Fake("pi_throttle", ["throttle:pi"])
    pi.kind = "throttle"
    rail = _Fake("VDD_IN", ["power_w:VDD_IN"])
    rail.kind, rail.power_channel, rail.priority = "power", "power_w:VDD_IN", 0
    sampler = telemetry.Sampler([zones, cpus, pi, rail], 100, max_kept=2048)
    n, spike, dip, flag = 40000, 31234, 23456, 35111
    for i in range(n):   # 67 minutes at 100 ms, fed directly
        sampler.add(i * 0.1, {"temp_c:soc": 99.0 if i == spike else 40.0 + i * 1e-4,
                              "freq_mhz:cpu0": 600.0 if i == dip else 1500.0,
                              "throttle:pi": 4 if i == flag else 0,
                              "power_w:VDD_IN": 5.0 if i % 2 else 7.0})
    kept = sampler.samples
    assert 1024 <= len(kept) <= 2048
    steps = [b[0] - a[0] for a, b in zip(kept, kept[1:])]
    assert max(steps) - min(steps) < 0.01, "the kept samples are evenly spaced"
    per = 32    # 40000 samples in at most 2048: each kept one stands for 32
    assert steps[0] == pytest.approx(per * 0.1)
    t0, t1 = 1000.0, 3900.0
    s = sampler.summary(t0, t1)
    assert abs(s["samples"] - 29001) <= per     # exact to one kept sample at each end
    assert s["temp_max_c"] == 99.0 and s["freq_min_mhz"] == 600.0 and s["throttled"] is True
    _close(s["temp_min_c"], 40.0 + 10000 * 1e-4, 0.001)
    assert sampler.summary(t0, 3500.0)["throttled"] is False
    e = sampler.energy(t0, t1, 29000)
    _close(e["energy_j"], 6.0 * (t1 - t0), 0.001)       # mean of 5 and 7 W, merges or not
    _close(sampler.window_stats(2000.0, 2010.0)["power_w"], 6.0, 0.05)
    series = sampler.series(t0, t1)
    assert len(series["t_s"]) == 908      # 2900 s of kept samples 3.2 s apart, and one each side
    assert all(len(v) == len(series["t_s"]) for v in series.values())
    assert len(sampler.series(t0, t1, max_points=50)["t_s"]) == 50
    rec = _checked(sampler.record(t0, t1, 29000))
    assert rec["summary"] == s


def test_series_is_downsampled_to_the_cap(tmp_path):
    rail = _Fake("ina219", ["power_w:ina219"])
    rail.kind, rail.power_channel, rail.priority = "power", "power_w:ina219", 1
    sampler = telemetry.Sampler([rail], 10)
    for i in range(12000):
        sampler.add(i * 0.01, {"power_w:ina219": 2.0})
    series = sampler.series(5.0, 100.0)
    assert len(series["t_s"]) == schema.MAX_SERIES_POINTS
    assert len(series["power_w:ina219"]) == schema.MAX_SERIES_POINTS
    assert series["t_s"] == sorted(series["t_s"]) and 95.0 <= series["t_s"][-1] <= 95.02
    _close(sampler.energy(5.0, 100.0, 1)["energy_j"], 2.0 * 95.0, 1e-9)


# --- NVML ------------------------------------------------------------------------------------

NVML_STUB = r"""
#include <stdlib.h>
#include <time.h>
typedef struct { int index; } gpu_t;
static gpu_t gpus[2] = {{0}, {1}};
static double t_init, t_switch;
static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int after(void) { return now() >= t_switch; }
int nvmlInit_v2(void) {
#ifdef FAIL_INIT
    return 9;   /* NVML_ERROR_DRIVER_NOT_LOADED */
#endif
    const char *at = getenv("NVML_STUB_SWITCH_AT");
    t_init = now();
    t_switch = at ? atof(at) : t_init + 1e9;
    return 0;
}
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
    if (i > 1) return 2;
    *h = &gpus[i]; return 0;
}
/* gpu0: 150 W, 250 W after the switch; gpu1: 75 W */
int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    *mw = ((gpu_t *)h)->index ? 75000 : (after() ? 250000 : 150000); return 0;
}
int nvmlDeviceGetTemperature(void *h, int sensor, unsigned int *c) {
    if (sensor != 0) return 2;
    *c = ((gpu_t *)h)->index ? 50 : 40 + (unsigned int)((now() - t_init) * 20.0); return 0;
}
int nvmlDeviceGetClockInfo(void *h, int type, unsigned int *mhz) {
    if (type == 0) *mhz = 1500; else if (type == 1) *mhz = after() ? 1200 : 1410;
    else if (type == 2) *mhz = 1593; else return 2;
    return 0;
}
/* gpu0: idle, then HW thermal slowdown; gpu1: applications clocks (not a throttle) */
int nvmlDeviceGetCurrentClocksThrottleReasons(void *h, unsigned long long *r) {
    *r = ((gpu_t *)h)->index ? 0x2ULL : (after() ? 0x41ULL : 0x1ULL); return 0;
}
/* gpu0 only (Volta+): mJ since init, consistent with its power; gpu1: NOT_SUPPORTED */
int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
    double t = now(), e;
    if (((gpu_t *)h)->index) return 3;
    if (t < t_switch) e = 150.0 * (t - t_init);
    else e = 150.0 * (t_switch - t_init) + 250.0 * (t - t_switch);
    *mj = 123456789ULL + (unsigned long long)(e * 1000.0); return 0;
}
"""


@pytest.fixture(scope="module")
def nvml_stubs(tmp_path_factory):
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        pytest.skip("no C compiler for the NVML stub")
    folder = str(tmp_path_factory.mktemp("nvml"))
    source = os.path.join(folder, "stub.c")
    with open(source, "w") as f:
        f.write(NVML_STUB)
    out = {}
    for name, flags in (("ok", []), ("fail", ["-DFAIL_INIT"])):
        lib = os.path.join(folder, name, "libnvidia-ml.so.1")
        os.makedirs(os.path.dirname(lib))
        subprocess.check_call([compiler, "-shared", "-fPIC", "-O1"] + flags +
                              ["-o", lib, source])
        out[name] = lib
    return out


def test_nvml_through_a_stub_library(tmp_path, nvml_stubs, monkeypatch):
    switch = time.monotonic() + 0.35
    monkeypatch.setenv("NVML_STUB_SWITCH_AT", "%.6f" % switch)
    monkeypatch.setenv(telemetry.NVML_LIB_ENV, nvml_stubs["ok"])   # the env var path
    sources, notes = telemetry.discover(str(tmp_path))
    assert not [n for n in notes if n.startswith("nvml")]
    gpu0, gpu1 = sources
    assert (gpu0.name, gpu0.kind, gpu0.method) == ("gpu0", "gpu", "nvml")
    assert gpu0.channels == ["power_w:gpu0", "temp_c:gpu0", "clock_mhz:gpu0.graphics",
                             "clock_mhz:gpu0.sm", "clock_mhz:gpu0.mem", "throttle:gpu0",
                             "energy_j:gpu0"]
    assert "energy_j:gpu1" not in gpu1.channels and "power_w:gpu1" in gpu1.channels
    sampler = _run_sampler(sources, 0.75)
    t0, t1 = switch - 0.25, switch + 0.3
    e = sampler.energy(t0, t1, 55)
    assert e["source"] == "gpu0"
    assert e["method"] == "counter difference (nvml:nvmlDeviceGetTotalEnergyConsumption gpu0)"
    _close(e["energy_j"], 150.0 * 0.25 + 250.0 * 0.3, 0.02)
    _close(e["by_source"]["gpu1"], 75.0 * 0.55, 0.01)      # no counter: the power integral
    before = sampler.summary(t0, switch - 0.03)
    after = sampler.summary(switch + 0.03, t1)
    assert before["throttled"] is False and after["throttled"] is True
    _close(before["power_mean_w"], 150.0, 0.02)
    _close(after["power_mean_w"], 250.0, 0.02)
    rec = _checked(sampler.record(t0, t1, 55))
    series = rec["series"]
    temps = [v for v in series["temp_c:gpu0"] if v is not None]
    assert temps == sorted(temps) and temps[-1] > temps[0] and set(series["temp_c:gpu1"]) == {50}
    assert set(series["clock_mhz:gpu0.sm"]) == {1410, 1200}
    assert set(series["clock_mhz:gpu0.mem"]) == {1593}
    assert set(series["throttle:gpu0"]) == {0x1, 0x41} and set(series["throttle:gpu1"]) == {2}
    assert set(series["power_w:gpu0"]) == {150.0, 250.0}
    energies = series["energy_j:gpu0"]
    assert energies == sorted(energies) and energies[0] >= 0.0
    rates = dict((i["name"], i["rate_hz"]) for i in rec["sources"])
    assert rates["gpu0"] > 20 and rates["gpu1"] > 20


def test_nvml_missing_or_failing_gives_a_note_and_no_source(tmp_path, nvml_stubs):
    sources, notes = telemetry.discover(str(tmp_path), nvml_lib=str(tmp_path / "nope.so.1"))
    assert sources == []
    assert any(n.startswith("nvml:") and "not loadable" in n for n in notes)
    sources, notes = telemetry.discover(str(tmp_path), nvml_lib=nvml_stubs["fail"])
    assert sources == []
    assert "nvml: nvmlInit failed (NVML code 9)" in notes


# --- kept-open files (the live root) ----------------------------------------------------------

def test_kept_open_files_read_fresh_values_with_one_descriptor(tmp_path):
    """On a device the sampled files stay open (pread at offset 0, one system call); sysfs
    re-runs show() for it. A regular file rewritten in place stands in for the attribute."""
    root = str(tmp_path)
    _thermal_tree(root)
    sources, _ = telemetry.discover(root, keep_open=True)
    thermal = _by_name(sources)["thermal"]
    kept = [f for _, f in thermal._zones]
    assert all(isinstance(f, telemetry.SysFile) for f in kept)
    path = os.path.join(root, "sys/class/thermal/thermal_zone1/temp")

    def write(s):   # in place, fixed width: the kept descriptor sees every value
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"%06d\n" % int(40000 + 100000 * s), 0)
        finally:
            os.close(fd)
    live = Live(write, 0.002)
    try:
        sampler = _run_sampler(sources, 0.2)
    finally:
        live.stop()
    fd = kept[1].fd
    assert fd >= 0 and os.path.samestat(os.fstat(fd), os.stat(path))
    temps = [v["temp_c:gpu-thermal"] for _, v in sampler.samples]
    assert len(set(temps)) > 5 and temps == sorted(temps) and temps[0] < 45.0 < temps[-1]
    # a read that fails closes the descriptor and the next read opens the path again
    broken = telemetry.SysFile(str(tmp_path))           # a folder: open works, pread fails
    assert broken.raw() is None and broken.fd == -1
    gone = telemetry.SysFile(str(tmp_path / "missing"))
    assert gone.raw() is None and gone.fd == -1
    # the cap: past MAX_OPEN_FILES, files are opened at each read
    opener = telemetry._Opener(True)
    opener.left = 1
    assert isinstance(opener("a"), telemetry.SysFile) and opener("b") == "b"
    assert telemetry._Opener(False)("c") == "c"
