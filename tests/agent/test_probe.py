"""agent.probe on fake root trees (a Pi 4, a Jetson, an empty root) and on this host."""

import json
import os
import time

from agent import probe
from agent_helpers import run_agent

PI_CPUINFO = "".join("processor\t: %d\nBogoMIPS\t: 108.00\n\n" % i for i in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")


def write(root, rel, text, mode="w"):
    path = os.path.join(str(root), rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, mode) as f:
        f.write(text)


def test_device_model_reads_sysfs_first_then_proc_device_tree(tmp_path):
    """A real Pi has both (/proc/device-tree links to sysfs); a chroot with a real procfs (the
    emulated Pi of tests/emulated_pi.py) can only fake the sysfs file."""
    assert probe.device_model(str(tmp_path)) is None
    write(tmp_path, "proc/device-tree/model", b"From procfs\x00", "wb")
    assert probe.device_model(str(tmp_path)) == "From procfs"
    write(tmp_path, "sys/firmware/devicetree/base/model", b"Raspberry Pi 4 Model B Rev 1.4\x00", "wb")
    assert probe.device_model(str(tmp_path)) == "Raspberry Pi 4 Model B Rev 1.4"


def test_pi4_tree_is_recognised(tmp_path):
    write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\x00", "wb")
    write(tmp_path, "proc/cpuinfo", PI_CPUINFO)
    write(tmp_path, "proc/meminfo", "MemTotal:        3884376 kB\nMemFree: 1 kB\nMemAvailable:    3400000 kB\n")
    write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "ondemand\n")
    write(tmp_path, "sys/devices/system/cpu/isolated", "3\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "45678\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    doc = probe.probe(str(tmp_path))
    assert doc["device_model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert doc["cpu_model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert doc["cores"]["listed"] == 4
    assert doc["governor"] == "ondemand" and doc["isolcpus"] == "3"
    assert doc["memory"] == {"total_kb": 3884376, "available_kb": 3400000}
    assert doc["thermal_zones"] == [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 45.678}]
    assert doc["jetson"] is None


def test_jetson_release_and_x86_cpu_model(tmp_path):
    write(tmp_path, "etc/nv_tegra_release", "# R35 (release), REVISION: 4.1, GCID: 33958178\nmore\n")
    write(tmp_path, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i5-4690K\n")
    assert probe.jetson(str(tmp_path)).startswith("# R35 (release), REVISION: 4.1")
    assert probe.cpu_model(str(tmp_path)) == "Intel(R) Core(TM) i5-4690K"


def test_missing_files_never_raise(tmp_path):
    write(tmp_path, "sys/class/thermal/thermal_zone3/temp", "garbage\n")
    os.makedirs(os.path.join(str(tmp_path), "proc/cpuinfo"))  # a folder where a file should be
    doc = probe.probe(str(tmp_path))
    for key in ("device_model", "jetson", "governor", "isolcpus", "cpu_model"):
        assert doc[key] is None
    assert doc["memory"] == {"total_kb": None, "available_kb": None}
    assert doc["thermal_zones"] == []
    json.dumps(doc)


def test_runtime_versions_come_from_metadata_without_import(tmp_path):
    site = tmp_path / "site"
    (site / "tflite_runtime-2.14.0.dist-info").mkdir(parents=True)
    (site / "pycoral-2.0.0-py3.9.egg-info").mkdir()
    (site / "onnxruntime_gpu-1.17.1.dist-info").mkdir()
    found = probe.installed_dists([str(site), str(tmp_path / "missing")])
    assert found == {"tflite_runtime": "2.14.0", "pycoral": "2.0.0", "onnxruntime_gpu": "1.17.1"}
    absent = probe.runtime("benchfleet_no_such_module", ("x",), found)
    assert absent == {"available": False, "version": None,
                      "reason": "benchfleet_no_such_module not installed"}
    json_rt = probe.runtime("json", ("json",), found)  # stdlib: found, no dist
    assert json_rt["available"] is True


def test_probe_of_this_host_is_fast_and_lists_every_runtime():
    start = time.perf_counter()
    doc = probe.probe()
    assert time.perf_counter() - start < 1.0
    assert set(doc["runtimes"]) == set(m for m, _ in probe.RUNTIMES)
    for rt in doc["runtimes"].values():
        assert {"available", "version", "reason", "hint"} <= set(rt)
        assert rt["available"] or rt["hint"]
        assert rt["available"] or rt["reason"]


def test_cli_probe_prints_one_json_document(tmp_path):
    write(tmp_path, "proc/device-tree/model", b"Raspberry Pi 4 Model B Rev 1.4\x00", "wb")
    proc = run_agent(["probe", "--root", str(tmp_path)])
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["device_model"] == "Raspberry Pi 4 Model B Rev 1.4"
