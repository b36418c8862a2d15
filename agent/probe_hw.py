"""Device-specific probe facts: Raspberry Pi throttling, Jetson release/power mode/clocks, NVIDIA
GPU, Coral Edge TPU, power sensors. Every function takes `root` (a fake tree in tests) and returns
data, never raises, for a missing or garbled file; helper binaries run only when present (5 s cap).
"""

import ctypes
import glob
import os
import re
import shutil
import subprocess

from agent import fsutil

TIMEOUT_S = 5.0  # per helper binary (nvidia-smi, vcgencmd, nvpmodel); a wedged driver must not hang us

# vcgencmd get_throttled bits (Raspberry Pi firmware): low nibble = now, bits 16-19 = since boot.
THROTTLE_BITS = ((0, "under-voltage"), (1, "freq-capped"), (2, "throttled"), (3, "soft-temp-limit"))

# L4T release -> JetPack. Exact pairs NVIDIA published; other revisions fall back to the major.
JETPACK_MAJOR = {28: "3", 31: "4", 32: "4", 34: "5", 35: "5", 36: "6", 38: "7"}
JETPACK_EXACT = {
    "32.4.3": "4.4", "32.4.4": "4.4.1", "32.5.0": "4.5", "32.5.1": "4.5.1", "32.6.1": "4.6",
    "32.7.1": "4.6.1", "32.7.2": "4.6.2", "32.7.3": "4.6.3", "32.7.4": "4.6.4", "32.7.5": "4.6.5",
    "32.7.6": "4.6.6",
    "35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
    "35.6.0": "5.1.4", "35.6.1": "5.1.5",
    "36.3.0": "6.0", "36.4.0": "6.1", "36.4.3": "6.2", "36.4.4": "6.2.1",
}

CORAL_USB_IDS = {
    "1a6e:089a": ("unprovisioned", "Coral USB Accelerator (Global Unichip; no firmware yet)"),
    "18d1:9302": ("provisioned", "Coral USB Accelerator (Google; firmware loaded)"),
}
INA_NAMES = ("ina3221", "ina238", "ina219", "ina226", "ina260", "ina230", "ina231", "ina209")
GPU_DEVFREQ = ("sys/devices/gpu.0/devfreq/*", "sys/class/devfreq/*gpu*", "sys/class/devfreq/*gv11b*",
               "sys/class/devfreq/*ga10b*", "sys/class/devfreq/*gp10b*")
LIB_DIRS = ("usr/lib", "usr/lib/*-linux-gnu", "usr/local/lib", "lib/*-linux-gnu",
            "usr/lib/*-linux-gnu/tegra")


def _read(root, rel):
    return fsutil.read_text(os.path.join(root, rel))


def _int(text):
    try:
        return int(text.strip())
    except (AttributeError, TypeError, ValueError):
        return None


def is_live(root):
    """True when `root` is this machine's own filesystem (binaries and libraries may be used)."""
    return os.path.abspath(root or "/") == "/"


def device_path(root, path):
    """`path` as the device sees it (root stripped), so fake-tree output reads like the real one."""
    if is_live(root):
        return path
    return "/" + os.path.relpath(path, root).replace(os.sep, "/")


def find_binary(root, name):
    """Executable `name`: PATH on the live root, else root/usr/bin, usr/sbin, bin, opt/vc/bin."""
    if is_live(root):
        return shutil.which(name) or next(
            (p for p in ("/usr/sbin/" + name, "/opt/vc/bin/" + name) if os.access(p, os.X_OK)), None)
    for rel in ("usr/bin", "usr/sbin", "bin", "opt/vc/bin"):
        path = os.path.join(root, rel, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_text(argv, timeout=None):
    """(stdout text, None) of a helper binary, or (None, reason) when it failed or timed out."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL,
                              timeout=TIMEOUT_S if timeout is None else timeout)
    except subprocess.TimeoutExpired:
        return None, "%s timed out" % os.path.basename(argv[0])
    except (OSError, ValueError) as exc:
        return None, "%s failed: %s" % (os.path.basename(argv[0]), exc)
    if proc.returncode != 0:
        return None, "%s exited %d" % (os.path.basename(argv[0]), proc.returncode)
    # Decoded by hand: the locale may be C/ASCII (3.6 under ssh) and a driver may print junk.
    return proc.stdout.decode("utf-8", "replace"), None


def find_library(root, stem):
    """Path of lib<stem>.so* under root's library folders (or the live ld.so cache), else None."""
    for pattern in LIB_DIRS:
        hits = sorted(p for p in glob.glob(os.path.join(root, pattern, "lib%s.so*" % stem))
                      if os.path.isfile(p))
        if hits:
            return device_path(root, hits[0])
    if is_live(root):
        # The ld.so cache names every library ldconfig knows; reading it is what
        # ctypes.util.find_library does, minus the ldconfig/gcc subprocesses it may start.
        try:
            with open("/etc/ld.so.cache", "rb") as f:
                data = f.read(8 << 20)
        except (OSError, IOError):
            return None
        match = re.search(br"/[\w./+-]*/lib%s\.so[\w.]*" % re.escape(stem.encode()), data)
        return match.group(0).decode("ascii", "replace") if match else None
    return None


def decode_throttled(value):
    """vcgencmd throttle bits -> {"now": [names], "occurred": [names]}."""
    return {"now": [name for bit, name in THROTTLE_BITS if value & (1 << bit)],
            "occurred": [name for bit, name in THROTTLE_BITS if value & (1 << (bit + 16))]}


def pi_throttled(root="/"):
    """`vcgencmd get_throttled` decoded: raw hex, value, now/occurred flag names, or a reason."""
    out = {"raw": None, "value": None, "now": None, "occurred": None, "reason": None}
    binary = find_binary(root, "vcgencmd")
    if not binary:
        out["reason"] = "vcgencmd not found"
        return out
    text, out["reason"] = run_text([binary, "get_throttled"])
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text or "")
    if text is not None and not match:
        out["reason"] = "unexpected vcgencmd output: %r" % text[:80]
    if match:
        out["raw"], out["value"] = match.group(1), int(match.group(1), 16)
        out.update(decode_throttled(out["value"]))
    return out


def raspberry_pi(root="/", model=None):
    """{"model", "throttled"} on a Raspberry Pi (device-tree model or vcgencmd present), else None."""
    if not (model or "").startswith("Raspberry Pi") and not find_binary(root, "vcgencmd"):
        return None
    return {"model": model, "throttled": pi_throttled(root)}


def l4t_release(root="/"):
    """{"release", "revision", "l4t", "jetpack", "jetpack_major"} from /etc/nv_tegra_release."""
    text = _read(root, "etc/nv_tegra_release")
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)", text or "")
    if not match:
        return None
    major, revision = int(match.group(1)), match.group(2)
    l4t = "%d.%s" % (major, revision)
    full = l4t if l4t.count(".") >= 2 else l4t + ".0"
    jp_major = JETPACK_MAJOR.get(major)
    jetpack = JETPACK_EXACT.get(full)
    hint = ("JetPack %s" % (jetpack or jp_major + ".x")) if (jetpack or jp_major) else None
    return {"release": "R%d" % major, "revision": revision, "l4t": l4t, "jetpack": jetpack,
            "jetpack_major": jp_major, "jetpack_hint": hint}


def _nvpmodel_conf(root):
    # /etc/nvpmodel.conf: "< POWER_MODEL ID=0 NAME=MAXN >" lines and "< PM_CONFIG DEFAULT=0 >".
    text = _read(root, "etc/nvpmodel.conf") or ""
    modes = dict((int(i), name) for i, name in
                 re.findall(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)", text))
    default = re.search(r"<\s*PM_CONFIG\s+DEFAULT\s*=\s*(\d+)", text)
    return modes, int(default.group(1)) if default else None


def nvpmodel(root="/"):
    """Jetson power mode: current id/name (`nvpmodel -q`, else the status file) and the default."""
    modes, default = _nvpmodel_conf(root)
    out = {"mode_id": None, "mode_name": None, "default_id": default,
           "default_name": modes.get(default), "source": None, "reason": None}
    binary = find_binary(root, "nvpmodel")
    if binary:
        text, out["reason"] = run_text([binary, "-q"])
        name = re.search(r"NV Power Mode:\s*(\S.*)", text or "")
        ident = re.search(r"^\s*(\d+)\s*$", text or "", re.M)
        if name or ident:
            out["mode_name"] = name.group(1).strip() if name else None
            out["mode_id"] = int(ident.group(1)) if ident else None
            out["source"], out["reason"] = "nvpmodel -q", None
    if out["source"] is None:
        status = _read(root, "var/lib/nvpmodel/status")
        match = re.search(r"(?:pmode\s*:\s*)?(\d+)", status or "")
        if match:
            out["mode_id"], out["source"] = int(match.group(1)), "/var/lib/nvpmodel/status"
            out["reason"] = None
        elif not out["reason"]:
            out["reason"] = "no nvpmodel binary and no /var/lib/nvpmodel/status"
    if out["mode_name"] is None and out["mode_id"] is not None:
        out["mode_name"] = modes.get(out["mode_id"])
    return out


def _freq_range(folder, low, high, cur):
    lo, hi, now = (_int(_read(folder, name)) for name in (low, high, cur))
    return {"min_hz": lo, "max_hz": hi, "cur_hz": now,
            "locked": (lo == hi) if lo is not None and hi is not None else None}


def cpu_clocks(root="/"):
    """Per-CPU cpufreq min/max (kHz): locked when every readable CPU has min == max."""
    locked, total = 0, 0
    for folder in sorted(glob.glob(os.path.join(root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq"))):
        lo = _int(fsutil.read_text(os.path.join(folder, "scaling_min_freq")))
        hi = _int(fsutil.read_text(os.path.join(folder, "scaling_max_freq")))
        if lo is not None and hi is not None:
            total += 1
            locked += lo == hi
    return {"cpus": total, "locked_cpus": locked, "locked": (locked == total) if total else None}


def gpu_devfreq(root="/"):
    """The integrated GPU's devfreq min/max/cur in Hz (Jetson), or None where none is found."""
    for pattern in GPU_DEVFREQ:
        for folder in sorted(glob.glob(os.path.join(root, pattern))):
            info = _freq_range(folder, "min_freq", "max_freq", "cur_freq")
            if info["min_hz"] is not None or info["max_hz"] is not None:
                info["path"] = device_path(root, folder)
                return info
    return None


def emc_clock(root="/"):
    """External memory controller clock (debugfs; readable as root only), or None."""
    for rel, low, high, cur in (
            ("sys/kernel/debug/bpmp/debug/clk/emc", "min_rate", "max_rate", "rate"),  # Xavier, Orin
            ("sys/kernel/debug/clk/emc", "clk_min_rate", "clk_max_rate", "clk_rate")):  # Nano, TX2
        folder = os.path.join(root, rel)
        info = _freq_range(folder, low, high, cur)
        if any(info[k] is not None for k in ("min_hz", "max_hz", "cur_hz")):
            locked = _int(fsutil.read_text(os.path.join(folder, "mrq_rate_locked")))
            if locked is not None:
                info["locked"] = bool(locked)
            info["path"] = device_path(root, folder)
            return info
    return None


def jetson_clocks(root="/"):
    """jetson_clocks: "on" when CPU and GPU clocks are pinned (min == max), else "off"/"unknown"."""
    cpu, gpu = cpu_clocks(root), gpu_devfreq(root)
    known = [x for x in (cpu["locked"], gpu and gpu["locked"]) if x is not None]
    state = "unknown" if not known else ("on" if all(known) else "off")
    return {"state": state, "cpu": cpu, "gpu": gpu, "emc": emc_clock(root)}


def jetson_info(root="/"):
    """L4T/JetPack, nvpmodel and jetson_clocks on a Jetson (nv_tegra_release present), else None."""
    release = l4t_release(root)
    if release is None:
        return None
    release["nvpmodel"] = nvpmodel(root)
    release["jetson_clocks"] = jetson_clocks(root)
    return release


def _smi_number(text):
    match = re.match(r"\s*([\d.]+)", text or "")
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


def nvidia_smi(root="/"):
    """([gpu dicts], reason) from `nvidia-smi --query-gpu`; ([], reason) when absent or failing."""
    binary = find_binary(root, "nvidia-smi")
    if not binary:
        return [], "nvidia-smi not found"
    text, reason = run_text([binary, "--query-gpu=name,driver_version,memory.total,power.limit,"
                                     "clocks.sm", "--format=csv,noheader"])
    gpus = []
    for line in (text or "").splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 5 and cells[0]:
            mem, watts, mhz = (_smi_number(c) for c in cells[2:])
            gpus.append({"name": cells[0], "driver_version": cells[1], "power_limit_w": watts,
                         "memory_total_mib": None if mem is None else int(mem),
                         "clocks_sm_mhz": None if mhz is None else int(mhz)})
    if text is not None and not gpus:
        reason = "unexpected nvidia-smi output: %r" % text[:80]
    return gpus, reason


def nvidia_proc(root="/"):
    """(driver version, [gpu dicts]) from /proc/driver/nvidia (there whenever the driver is loaded)."""
    version = _read(root, "proc/driver/nvidia/version") or ""
    match = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.[\d.]+)", version)
    gpus = []
    for path in sorted(glob.glob(os.path.join(root, "proc/driver/nvidia/gpus/*/information"))):
        fields = {}
        for line in (fsutil.read_text(path) or "").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if fields.get("model"):
            gpus.append({"name": fields["model"], "bus": os.path.basename(os.path.dirname(path)),
                         "driver_version": match.group(1) if match else None})
    return (match.group(1) if match else None), gpus


def nvml(root="/"):
    """NVML via ctypes on the live root: device names and whether power draw is readable."""
    if not is_live(root):
        return {"available": False, "reason": "NVML is only queried on the live root", "devices": []}
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError as exc:
        return {"available": False, "reason": "libnvidia-ml.so.1 not loadable: %s" % exc,
                "devices": []}
    init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit", None)
    rc = init() if init else -1
    if rc != 0:
        return {"available": False, "reason": "nvmlInit failed (NVML code %d)" % rc, "devices": []}
    devices = []
    try:
        count = ctypes.c_uint(0)
        lib.nvmlDeviceGetCount_v2(ctypes.byref(count))
        for index in range(count.value):
            handle, name = ctypes.c_void_p(), ctypes.create_string_buffer(96)
            if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            lib.nvmlDeviceGetName(handle, name, 96)
            milliwatts = ctypes.c_uint(0)
            prc = lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(milliwatts))
            # 3 = NVML_ERROR_NOT_SUPPORTED: Jetson and some boards; power then comes from hwmon rails.
            power = milliwatts.value / 1000.0 if prc == 0 else ("NOT_SUPPORTED" if prc == 3 else None)
            devices.append({"index": index, "name": name.value.decode("utf-8", "replace"),
                            "power_w": power, "power_supported": prc == 0})
    except AttributeError as exc:  # an old NVML lacking a _v2 entry point
        return {"available": False, "reason": "NVML symbol missing: %s" % exc, "devices": devices}
    finally:
        shutdown = getattr(lib, "nvmlShutdown", None)
        if shutdown:
            shutdown()
    return {"available": True, "reason": None, "devices": devices}


def gpu(root="/"):
    """NVIDIA GPUs: nvidia-smi first, /proc/driver/nvidia as fallback; NVML on the live root."""
    gpus, reason = nvidia_smi(root)
    source = "nvidia-smi" if gpus else None
    driver, proc_gpus = nvidia_proc(root)
    if not gpus and proc_gpus:
        gpus, source = proc_gpus, "/proc/driver/nvidia"
    if not gpus:
        reason = "%s; no /proc/driver/nvidia/gpus" % reason
    driver = (gpus[0].get("driver_version") if gpus else None) or driver
    return {"source": source, "driver_version": driver, "gpus": gpus,
            "reason": None if gpus else reason, "nvml": nvml(root)}


def coral(root="/"):
    """Edge TPUs: USB accelerators by id (with provisioned state), PCIe/M.2 by /dev/apex_*."""
    devices = []
    for folder in sorted(glob.glob(os.path.join(root, "sys/bus/usb/devices/*"))):
        ident = "%s:%s" % (_read(folder, "idVendor"), _read(folder, "idProduct"))
        if ident.lower() in CORAL_USB_IDS:
            state, name = CORAL_USB_IDS[ident.lower()]
            # speed 480 = USB 2: the accelerator works there, but inference is markedly slower.
            devices.append({"kind": "usb", "id": ident.lower(), "state": state, "name": name,
                            "path": device_path(root, folder),
                            "speed_mbps": _int(_read(folder, "speed"))})
    apex = set(os.path.basename(p) for p in glob.glob(os.path.join(root, "dev/apex_*")))
    apex |= set(os.path.basename(p) for p in glob.glob(os.path.join(root, "sys/class/apex/*")))
    for name in sorted(apex):
        node = os.path.join(root, "dev", name)
        ready = os.path.exists(node) and not os.path.isdir(node)
        devices.append({"kind": "pcie", "id": name, "name": "Coral PCIe/M.2 Edge TPU",
                        "state": "ready" if ready else "no /dev node (gasket/apex driver not loaded?)",
                        "path": "/dev/" + name, "speed_mbps": None})
    lib = find_library(root, "edgetpu")
    return {"present": bool(devices), "devices": devices, "libedgetpu": lib,
            "hint": None if lib else "libedgetpu.so.1 not found: sudo apt-get install libedgetpu1-std"}


def _listdir(folder):
    try:
        return sorted(os.listdir(folder))
    except (OSError, TypeError):
        return []


# INA3221 hwmon ABI (Documentation/hwmon/ina3221.rst): channels 1-3 are the rails, inN_label names
# them, in1-3_input is bus voltage (mV), curr1-3_input current (mA); in4-6_input are their shunt
# voltages (uV). in7_input is the sum of shunt voltages (uV, labelled by in7_label) and curr4_input
# the sum of currents (mA, only when every shunt resistor is the same): a sum, never a rail.
INA3221_RAILS = (1, 2, 3)


def _ina3221_sum(root, folder):
    files = dict((q, os.path.join(folder, name)) for q, name in
                 (("current_ma", "curr4_input"), ("shunt_uv", "in7_input")))
    files = dict((q, p) for q, p in files.items() if os.path.exists(p))
    if not files:
        return None
    return {"label": _read(folder, "in7_label") or "sum of shunt voltages",
            "readable": all(_int(fsutil.read_text(p)) is not None for p in files.values()),
            "files": dict((q, device_path(root, p)) for q, p in files.items())}


def _hwmon_sensors(root):
    sensors = []
    for folder in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
        kind = _read(folder, "name") or _read(folder, "device/name")
        if kind not in INA_NAMES:
            continue
        names = " ".join(_listdir(folder))
        channels = sorted(set(int(n) for n in re.findall(r"(?:curr|power)(\d+)_input", names)))
        chip_sum = None
        if kind == "ina3221":
            channels = [n for n in channels if n in INA3221_RAILS]
            chip_sum = _ina3221_sum(root, folder)
        for n in channels:
            # A rail has a current or power file; voltage-only channels (INA2xx in0, INA3221
            # in4-in7) are shunt voltages, not rails.
            files = dict((q, os.path.join(folder, "%s%d_input" % (prefix, n))) for q, prefix in
                         (("voltage_mv", "in"), ("current_ma", "curr"), ("power_uw", "power")))
            files = dict((q, p) for q, p in files.items() if os.path.exists(p))
            label = (_read(folder, "in%d_label" % n) or _read(folder, "curr%d_label" % n)
                     or "%s ch%d" % (kind, n))
            if kind == "ina3221" and label.upper() == "NC":  # Jetson: channel not connected
                continue
            sensor = _sensor(root, kind, folder, label, files)
            if kind == "ina3221":
                sensor["sum"] = chip_sum  # the chip's sum channel, shared by its rails
            sensors.append(sensor)
    return sensors


def _iio_sensors(root):
    # JetPack 4 (Nano, TX2): the ina3221x driver exposes rails through IIO, not hwmon.
    sensors = []
    for folder in sorted(glob.glob(os.path.join(root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*"))):
        for label_path in sorted(glob.glob(os.path.join(folder, "rail_name_*"))):
            n = label_path.rsplit("_", 1)[-1]
            files = dict((q, os.path.join(folder, "in_%s%s_input" % (prefix, n))) for q, prefix in
                         (("voltage_mv", "voltage"), ("current_ma", "current"), ("power_mw", "power")))
            files = dict((q, p) for q, p in files.items() if os.path.exists(p))
            label = fsutil.read_text(label_path) or "rail %s" % n
            sensors.append(_sensor(root, "ina3221x-iio", folder, label, files))
    return sensors


def _power_w(values):
    """Watts from one reading of a rail's files: its power file, else bus voltage times current."""
    if values.get("power_uw") is not None:
        return values["power_uw"] / 1e6
    if values.get("power_mw") is not None:
        return values["power_mw"] / 1e3
    if values.get("voltage_mv") is not None and values.get("current_ma") is not None:
        return values["voltage_mv"] * values["current_ma"] / 1e6
    return None


def _sensor(root, kind, folder, label, files):
    values = dict((q, _int(fsutil.read_text(p))) for q, p in files.items())
    readable = bool(files) and all(v is not None for v in values.values())
    sensor = {"kind": kind, "path": device_path(root, folder), "label": label, "readable": readable,
              "files": dict((q, device_path(root, p)) for q, p in files.items())}
    if kind != "rapl":
        sensor["power_w"] = _power_w(values) if readable else None  # one reading, at probe time
    return sensor


def _rapl_sensors(root):
    sensors = []
    for folder in sorted(glob.glob(os.path.join(root, "sys/class/powercap/intel-rapl:*"))):
        energy = os.path.join(folder, "energy_uj")
        if not os.path.exists(energy):
            continue
        sensor = _sensor(root, "rapl", folder, _read(folder, "name") or os.path.basename(folder),
                         {"energy_uj": energy})
        if not sensor["readable"]:  # root-only since Linux 5.10 (CVE-2020-8694)
            sensor["hint"] = "energy_uj is root-only: run the agent as root or chmod o+r it"
        sensors.append(sensor)
    return sensors


def power_sensors(root="/"):
    """INA rails (hwmon, Jetson IIO) and RAPL zones: [{"kind","path","label","readable","files"}];
    INA rails add "power_w" (one reading) and INA3221 hwmon rails "sum" (the chip's sum channel)."""
    return _hwmon_sensors(root) + _iio_sensors(root) + _rapl_sensors(root)
