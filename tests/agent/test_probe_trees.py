"""agent.probe on fake trees standing in for the seed hardware (Pi 4 + USB Coral, Jetson Nano
JetPack 4, Jetson Orin JetPack 6, GTX 1660 host): none of it can be attached here, so each test
that reads a fake tree says so in its name. Fake helper binaries run as real subprocesses."""

import glob
import importlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from agent import fsutil, probe, probe_hw
from agent_helpers import REPO
from fixtures import trees


def build(tmp_path, name, builder, **kwargs):
    root = str(tmp_path / name)
    os.makedirs(root)
    builder(root, **kwargs)
    return root


@pytest.fixture
def pi4(tmp_path):
    return build(tmp_path, "pi4", trees.make_pi4_coral)


@pytest.fixture
def nano(tmp_path):
    return build(tmp_path, "nano", trees.make_jetson_nano_jp4)


@pytest.fixture
def orin(tmp_path):
    return build(tmp_path, "orin", trees.make_jetson_orin_jp6)


@pytest.fixture
def gtx(tmp_path):
    return build(tmp_path, "gtx", trees.make_gtx1660_host)


def test_pi4_coral_fake_tree_reports_board_cpu_and_throttle_flags(pi4):
    doc = probe.probe(pi4)
    assert doc["device_model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert doc["cpu_core"] == "Cortex-A72"
    assert doc["cores"]["listed"] == 4 and doc["governor"] == "ondemand"
    assert doc["thermal_zones"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 48.0}]
    throttled = doc["raspberry_pi"]["throttled"]
    assert throttled["raw"] == "0x50000" and throttled["reason"] is None
    assert throttled["now"] == [] and throttled["occurred"] == ["under-voltage", "throttled"]
    assert doc["jetson"] is None and doc["jetson_info"] is None
    assert doc["gpu"]["gpus"] == [] and doc["power_sensors"] == []


def test_pi4_coral_fake_tree_detects_unprovisioned_usb_accelerator_and_libedgetpu(pi4):
    coral = probe.probe(pi4)["coral"]
    assert coral["present"] is True
    found = [(d["kind"], d["id"], d["state"], d["path"], d["speed_mbps"]) for d in coral["devices"]]
    assert found == [("usb", "1a6e:089a", "unprovisioned", "/sys/bus/usb/devices/2-1", 5000)]
    assert coral["libedgetpu"] == "/usr/lib/aarch64-linux-gnu/libedgetpu.so.1"
    assert coral["hint"] is None


def test_pi4_coral_fake_tree_after_first_inference_reports_provisioned_google_id(tmp_path):
    root = build(tmp_path, "pi4p", trees.make_pi4_coral, provisioned=True)
    devices = probe_hw.coral(root)["devices"]
    assert [(d["id"], d["state"]) for d in devices] == [("18d1:9302", "provisioned")]


def test_throttle_bits_decode_into_current_and_since_boot_names():
    assert probe_hw.decode_throttled(0x0) == {"now": [], "occurred": []}
    assert probe_hw.decode_throttled(0xF000F) == {
        "now": ["under-voltage", "freq-capped", "throttled", "soft-temp-limit"],
        "occurred": ["under-voltage", "freq-capped", "throttled", "soft-temp-limit"]}
    assert probe_hw.decode_throttled(0x20002) == {"now": ["freq-capped"], "occurred": ["freq-capped"]}


def test_jetson_nano_fake_tree_reports_power_mode(nano):
    info = probe.probe(nano)["jetson_info"]
    assert (info["release"], info["revision"], info["l4t"]) == ("R32", "7.1", "32.7.1")
    assert (info["jetpack"], info["jetpack_major"]) == ("4.6.1", "4")
    assert info["jetpack_hint"] == "JetPack 4.6.1"
    pm = info["nvpmodel"]
    assert (pm["mode_id"], pm["mode_name"], pm["source"]) == (0, "MAXN", "/var/lib/nvpmodel/status")
    assert (pm["default_id"], pm["default_name"]) == (0, "MAXN")


def test_jetson_nano_fake_tree_reports_jetson_clocks_on(nano):
    clocks = probe.probe(nano)["jetson_info"]["jetson_clocks"]
    assert clocks["state"] == "on"
    assert clocks["cpu"] == {"cpus": 4, "locked_cpus": 4, "locked": True}
    assert clocks["gpu"]["path"] == "/sys/devices/gpu.0/devfreq/57000000.gpu"
    assert clocks["gpu"]["locked"] is True and clocks["gpu"]["max_hz"] == 921600000
    assert clocks["emc"]["cur_hz"] == 1600000000


def test_jetson_nano_fake_tree_lists_ina3221_iio_rails(nano):
    sensors = probe.probe(nano)["power_sensors"]
    assert [(s["kind"], s["label"], s["readable"]) for s in sensors] == [
        ("ina3221x-iio", "POM_5V_IN", True), ("ina3221x-iio", "POM_5V_GPU", True),
        ("ina3221x-iio", "POM_5V_CPU", True)]
    assert sensors[1]["files"]["current_ma"] == (
        "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_current1_input")
    assert all(set(s) >= {"kind", "path", "label", "readable"} for s in sensors)


def test_jetson_orin_fake_tree_reports_jp6_and_15w_mode_from_nvpmodel_binary(orin):
    info = probe.probe(orin)["jetson_info"]
    assert (info["l4t"], info["jetpack"], info["jetpack_major"]) == ("36.3.0", "6.0", "6")
    pm = info["nvpmodel"]
    assert (pm["mode_id"], pm["mode_name"], pm["source"]) == (2, "15W", "nvpmodel -q")
    assert info["jetson_clocks"]["state"] == "off"
    assert info["jetson_clocks"]["cpu"] == {"cpus": 8, "locked_cpus": 0, "locked": False}
    assert info["jetson_clocks"]["gpu"]["path"] == "/sys/class/devfreq/17000000.gpu"


def test_jetson_orin_fake_tree_falls_back_to_status_file_when_nvpmodel_fails(tmp_path):
    root = build(tmp_path, "orin-broken", trees.make_jetson_orin_jp6,
                 nvpmodel_body="echo 'NVPM ERROR'; exit 1")
    pm = probe_hw.nvpmodel(root)
    assert (pm["mode_id"], pm["mode_name"], pm["source"]) == (2, "15W", "/var/lib/nvpmodel/status")


def test_jetson_orin_fake_tree_lists_hwmon_rails_and_skips_shunt_channels(orin):
    sensors = probe.probe(orin)["power_sensors"]
    assert [(s["kind"], s["label"], s["readable"]) for s in sensors] == [
        ("ina3221", "VDD_IN", True), ("ina3221", "VDD_CPU_GPU_CV", True), ("ina3221", "VDD_SOC", True)]
    assert sensors[0]["path"] == "/sys/class/hwmon/hwmon1"
    assert sensors[0]["files"] == {"voltage_mv": "/sys/class/hwmon/hwmon1/in1_input",
                                   "current_ma": "/sys/class/hwmon/hwmon1/curr1_input"}


def test_jetson_orin_fake_tree_with_curr4_reports_the_sum_channel_as_a_sum_not_a_rail(tmp_path):
    # INA3221 hwmon ABI: curr4_input is the sum of the channels' currents and in7_input the sum
    # of shunt voltages (uV); neither is a rail "ina3221 ch4".
    root = build(tmp_path, "orin-curr4", trees.make_jetson_orin_jp6, curr4=True)
    sensors = probe_hw.power_sensors(root)
    assert [s["label"] for s in sensors] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    assert not any("/curr4_input" in p or "/in7_input" in p
                   for s in sensors for p in s["files"].values())
    expected = {"label": "sum of shunt voltages", "readable": True,
                "files": {"current_ma": "/sys/class/hwmon/hwmon1/curr4_input",
                          "shunt_uv": "/sys/class/hwmon/hwmon1/in7_input"}}
    assert [s["sum"] for s in sensors] == [expected] * 3


def test_jetson_orin_fake_tree_rail_power_is_bus_voltage_times_current(orin):
    sensors = probe.probe(orin)["power_sensors"]
    assert [s["power_w"] for s in sensors] == [5080 * 1328 / 1e6, 5072 * 320 / 1e6,
                                               5072 * 504 / 1e6]
    assert sensors[0]["sum"] == {"label": "sum of shunt voltages", "readable": True,
                                 "files": {"shunt_uv": "/sys/class/hwmon/hwmon1/in7_input"}}


def test_jetson_nano_fake_tree_iio_rail_power_comes_from_its_power_file_in_mw(nano):
    sensors = probe_hw.power_sensors(nano)
    assert [s["power_w"] for s in sensors] == [5064 * 912 // 1000 / 1e3,
                                               5056 * 40 // 1000 / 1e3, 5048 * 280 // 1000 / 1e3]
    assert all("sum" not in s for s in sensors)  # the ina3221x IIO driver has no sum channel


def test_ina3221_channel_labelled_nc_and_channels_past_3_are_not_rails(tmp_path):
    hw = "sys/class/hwmon/hwmon2/"
    trees.write(str(tmp_path), hw + "name", "ina3221\n")
    for n, label in ((1, "VDD_GPU_SOC"), (2, "NC"), (3, None)):
        if label:
            trees.write(str(tmp_path), hw + "in%d_label" % n, label + "\n")
        trees.write(str(tmp_path), hw + "in%d_input" % n, "19000\n")
        trees.write(str(tmp_path), hw + "curr%d_input" % n, "100\n")
    trees.write(str(tmp_path), hw + "curr4_input", "200\n")
    trees.write(str(tmp_path), hw + "in4_input", "40\n")  # shunt voltage of channel 1 (uV)
    sensors = probe_hw.power_sensors(str(tmp_path))
    assert [(s["label"], s["power_w"]) for s in sensors] == [("VDD_GPU_SOC", 1.9),
                                                            ("ina3221 ch3", 1.9)]
    assert sensors[0]["sum"]["files"] == {"current_ma": "/" + hw + "curr4_input"}
    assert sensors[0]["sum"]["label"] == "sum of shunt voltages"  # no in7_label: the ABI's name


@pytest.mark.parametrize("line, l4t, jetpack, major, hint", [
    ("# R32 (release), REVISION: 7.1, GCID: 1", "32.7.1", "4.6.1", "4", "JetPack 4.6.1"),
    ("# R35 (release), REVISION: 4.1, GCID: 2", "35.4.1", "5.1.2", "5", "JetPack 5.1.2"),
    ("# R36 (release), REVISION: 4.3, GCID: 3", "36.4.3", "6.2", "6", "JetPack 6.2"),
    # The releases the table lacked: the newest of JetPack 4, 5 and 6.
    ("# R32 (release), REVISION: 7.6, GCID: 4", "32.7.6", "4.6.6", "4", "JetPack 4.6.6"),
    ("# R35 (release), REVISION: 6.1, GCID: 5", "35.6.1", "5.1.5", "5", "JetPack 5.1.5"),
    ("# R36 (release), REVISION: 4.4, GCID: 6", "36.4.4", "6.2.1", "6", "JetPack 6.2.1"),
    ("# R32 (release), REVISION: 9.9", "32.9.9", None, "4", "JetPack 4.x"),
    ("# R99 (release), REVISION: 1.0", "99.1.0", None, None, None),
])
def test_l4t_release_maps_to_jetpack_hint(tmp_path, line, l4t, jetpack, major, hint):
    trees.write(str(tmp_path), "etc/nv_tegra_release", line + "\n")
    info = probe_hw.l4t_release(str(tmp_path))
    assert (info["l4t"], info["jetpack"], info["jetpack_major"], info["jetpack_hint"]) == (
        l4t, jetpack, major, hint)


def test_gtx1660_fake_host_reports_gpu_from_nvidia_smi(gtx):
    doc = probe.probe(gtx)
    assert doc["cpu_model"] == "Intel(R) Core(TM) i5-4690K CPU @ 3.50GHz"
    assert doc["cpu_core"] is None and doc["governor"] == "performance"
    gpu = doc["gpu"]
    assert gpu["source"] == "nvidia-smi" and gpu["driver_version"] == "535.183.01"
    assert gpu["gpus"] == [{"name": "NVIDIA GeForce GTX 1660", "driver_version": "535.183.01",
                            "memory_total_mib": 6144, "power_limit_w": 120.0, "clocks_sm_mhz": 1530}]
    # NVML is never loaded for a fake root: the host's library would describe the wrong machine.
    assert gpu["nvml"]["available"] is False and "live root" in gpu["nvml"]["reason"]


def test_gtx1660_fake_host_without_nvidia_smi_reads_proc_driver(tmp_path):
    root = build(tmp_path, "gtx-nosmi", trees.make_gtx1660_host, with_nvidia_smi=False)
    gpu = probe_hw.gpu(root)
    assert gpu["source"] == "/proc/driver/nvidia" and gpu["driver_version"] == "535.183.01"
    assert [(g["name"], g["bus"]) for g in gpu["gpus"]] == [
        ("NVIDIA GeForce GTX 1660", "0000:01:00.0")]


def test_gtx1660_fake_host_lists_rapl_zones_and_libnvinfer(gtx):
    doc = probe.probe(gtx)
    assert [(s["kind"], s["label"], s["readable"], s["path"]) for s in doc["power_sensors"]] == [
        ("rapl", "package-0", True, "/sys/class/powercap/intel-rapl:0"),
        ("rapl", "core", True, "/sys/class/powercap/intel-rapl:0:0")]
    trt = doc["runtimes"]["tensorflow"]["tensorrt"]
    assert trt["libnvinfer"] == "/usr/lib/x86_64-linux-gnu/libnvinfer.so.8.6.1"
    assert doc["runtimes"]["tensorrt"]["libnvinfer"] == trt["libnvinfer"]
    if doc["runtimes"]["tensorflow"]["available"]:  # this host's TF: a CPU build, no TensorRT
        assert isinstance(trt["built_with_tensorrt"], bool) and trt["trt_convert"] is True
    assert trt["usable"] is (trt["built_with_tensorrt"] is not False and trt["trt_convert"])
    assert trt["usable"] or trt["reason"]


def test_rapl_zone_that_cannot_be_read_is_listed_unreadable_with_hint(tmp_path):
    trees.write(str(tmp_path), "sys/class/powercap/intel-rapl:0/name", "package-0\n")
    os.makedirs(str(tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj"))  # unreadable as a file
    (sensor,) = probe_hw.power_sensors(str(tmp_path))
    assert (sensor["kind"], sensor["label"], sensor["readable"]) == ("rapl", "package-0", False)
    assert "root-only" in sensor["hint"]


def test_every_runtime_has_a_hint_exactly_when_unavailable(pi4):
    for module, entry in probe.probe(pi4)["runtimes"].items():
        assert {"available", "version", "reason", "hint"} <= set(entry), module
        assert (entry["hint"] is None) is entry["available"], module


def _stand_in_site(tmp_path, monkeypatch, files):
    site = tmp_path / "site"
    for rel in files:
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    monkeypatch.syspath_prepend(str(site))
    # find_spec answers from sys.modules first: hide a real package another test imported.
    for top in set(rel.split("/")[0] for rel in files if ".dist-info" not in rel):
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()


def test_pycoral_stand_in_package_is_available_only_with_libedgetpu(tmp_path, monkeypatch, pi4):
    _stand_in_site(tmp_path, monkeypatch, ["pycoral/__init__.py", "pycoral-2.0.0.dist-info/METADATA"])
    with_lib = probe.runtimes(pi4)["pycoral"]
    assert (with_lib["available"], with_lib["version"], with_lib["hint"]) == (True, "2.0.0", None)
    assert with_lib["libedgetpu"] == "/usr/lib/aarch64-linux-gnu/libedgetpu.so.1"
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    without = probe.runtimes(empty)["pycoral"]
    assert without["available"] is False
    assert without["reason"] == "libedgetpu.so.1 not found: sudo apt-get install libedgetpu1-std"
    assert without["hint"] == "sudo apt-get install libedgetpu1-std"


def test_missing_pycoral_reason_names_the_apt_package(tmp_path):
    entry = probe.runtimes(str(tmp_path))["pycoral"]
    if entry["version"] is None:  # pycoral is not installed on this machine
        assert entry["reason"] == ("pycoral not installed: sudo apt-get install python3-pycoral "
                                   "(Coral apt repository)")


def test_onnxruntime_stand_in_reports_provider_libraries_and_defers_providers(tmp_path, monkeypatch):
    _stand_in_site(tmp_path, monkeypatch, [
        "onnxruntime/__init__.py", "onnxruntime-1.17.1.dist-info/METADATA",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so",
        "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
        "onnxruntime/capi/libonnxruntime_providers_shared.so"])
    ort = probe.runtimes(str(tmp_path))["onnxruntime"]
    assert (ort["available"], ort["version"]) == (True, "1.17.1")
    assert ort["providers"] is None and ort["providers_reason"] == "known at run time"
    assert ort["provider_libs"] == ["cuda", "tensorrt"]


def test_empty_root_never_raises_and_reports_nothing_found(tmp_path):
    doc = probe.probe(str(tmp_path))
    assert doc["jetson_info"] is None and doc["raspberry_pi"] is None
    assert doc["power_sensors"] == [] and doc["coral"]["present"] is False
    assert doc["gpu"]["gpus"] == [] and doc["gpu"]["reason"]
    fsutil.dumps(doc)


def test_garbage_root_never_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(probe_hw, "TIMEOUT_S", 0.5)  # the fake vcgencmd hangs
    root = build(tmp_path, "garbage", trees.make_garbage_tree)
    doc = probe.probe(root)
    fsutil.dumps(doc)
    assert doc["cpu_model"] is None and doc["memory"] == {"total_kb": None, "available_kb": None}
    assert doc["raspberry_pi"]["throttled"]["reason"] == "vcgencmd timed out"
    assert doc["gpu"]["gpus"] == [] and "unexpected nvidia-smi output" in doc["gpu"]["reason"]
    assert doc["jetson_info"] is None and doc["coral"]["libedgetpu"] is None
    assert [d["state"] for d in doc["coral"]["devices"]] == [
        "no /dev node (gasket/apex driver not loaded?)"]
    rails = [s for s in doc["power_sensors"] if s["kind"].startswith("ina")]
    assert rails and not any(s["readable"] for s in rails)
    orin_pm = probe_hw.nvpmodel(root)  # nvpmodel exits 1, the status file is junk
    assert orin_pm["mode_id"] is None and orin_pm["reason"]


@pytest.mark.parametrize("name", sorted(trees.BUILDERS))
def test_fake_tree_probe_is_fast_and_json_clean(tmp_path, name):
    root = build(tmp_path, name, trees.BUILDERS[name])
    start = time.perf_counter()
    doc = probe.probe(root)
    assert time.perf_counter() - start < 1.0
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def _python36():
    try:
        pyenv_root = subprocess.check_output(["pyenv", "root"], universal_newlines=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.6*", "bin", "python")))
    return found[0] if found else None


PYTHON36 = _python36()
if PYTHON36 is None and os.environ.get("BENCHFLEET_REQUIRE_PYENV"):
    raise RuntimeError("BENCHFLEET_REQUIRE_PYENV is set but pyenv has no Python 3.6")

HARDWARE_KEYS = ("device_model", "cpu_model", "cpu_core", "cores", "governor", "memory", "jetson",
                 "jetson_info", "raspberry_pi", "gpu", "coral", "thermal_zones", "power_sensors")


@pytest.mark.skipif(PYTHON36 is None, reason="pyenv Python 3.6 not found")
@pytest.mark.parametrize("name", sorted(trees.BUILDERS) + ["empty"])
def test_fake_tree_probe_under_python36_matches_this_interpreter(tmp_path, name):
    root = build(tmp_path, name, trees.BUILDERS.get(name, lambda r: r))
    proc = subprocess.run([PYTHON36, "-m", "agent", "probe", "--root", root], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc36 = json.loads(proc.stdout)
    assert doc36["python"]["version"].startswith("3.6.")
    here = probe.probe(root)
    assert dict((k, doc36[k]) for k in HARDWARE_KEYS) == dict((k, here[k]) for k in HARDWARE_KEYS)
    assert set(doc36["runtimes"]) == set(here["runtimes"])


# A stand-in libnvidia-ml.so.1 (two GPUs; the second answers NOT_SUPPORTED for power, as a
# Jetson does), so the ctypes calls run against a real shared library. No GPU is attached here.
NVML_STAND_IN_C = r"""
#include <stdlib.h>
#include <string.h>
int nvmlInit_v2(void) { const char *rc = getenv("STAND_IN_NVML_INIT_RC"); return rc ? atoi(rc) : 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { *h = (void *)(size_t)(i + 1); return 0; }
int nvmlDeviceGetName(void *h, char *name, unsigned int len) {
    strncpy(name, (size_t)h == 1 ? "NVIDIA GeForce GTX 1660" : "Orin (nvgpu)", len); return 0; }
int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
    if ((size_t)h == 1) { *mw = 45250; return 0; } return 3; }
"""


def _nvml_in_child(libdir, init_rc=None):
    env = dict(os.environ, PYTHONPATH=REPO, LD_LIBRARY_PATH=libdir)
    if init_rc is not None:
        env["STAND_IN_NVML_INIT_RC"] = str(init_rc)
    code = "import json; from agent import probe_hw; print(json.dumps(probe_hw.nvml('/')))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc not found: cannot build the NVML stand-in")
def test_nvml_stand_in_library_reports_names_and_not_supported_power(tmp_path):
    (tmp_path / "nvml.c").write_text(NVML_STAND_IN_C)
    subprocess.check_call(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "libnvidia-ml.so.1"),
                           str(tmp_path / "nvml.c")])
    doc = _nvml_in_child(str(tmp_path))
    assert doc["available"] is True and doc["reason"] is None
    assert doc["devices"] == [
        {"index": 0, "name": "NVIDIA GeForce GTX 1660", "power_w": 45.25, "power_supported": True},
        {"index": 1, "name": "Orin (nvgpu)", "power_w": "NOT_SUPPORTED", "power_supported": False}]
    failed = _nvml_in_child(str(tmp_path), init_rc=9)  # NVML_ERROR_DRIVER_NOT_LOADED
    assert failed["available"] is False and "code 9" in failed["reason"]
