"""Telemetry: the sensors a device has, a sampler thread reading them, and what a window made of
them (docs/METHOD.md "Telemetry and energy"). Stdlib only; runs on Python 3.6.

discover(root, nvml_lib) finds the sources once, resolving every file path then, so that a sample
is a few open/read/close calls (plus NVML calls on a GPU). Sampler reads them every interval_ms
on a daemon thread; summary / energy / series / window_stats / idle_power / record turn its
samples between two time.monotonic() readings (the harness's measured window) into the result's
telemetry object, which passes schema.check_telemetry.

Channel names are "<quantity>_<unit>:<label>":
  temp_c:<zone type>        every thermal zone (a repeated type gets "#2", "#3"; a zone without
                            a type file is named by its folder, thermal_zoneN)
  freq_mhz:cpuN             each core's scaling_cur_freq
  throttle:pi               a Raspberry Pi's get_throttled flags (integer)
  power_w:<rail>            INA3221 (hwmon, IIO), INA238 and INA2xx rails; a RAPL domain's and a
                            GPU's power (e.g. power_w:VDD_IN, power_w:ina219, power_w:package-0,
                            power_w:gpu0)
  energy_j:<name>           RAPL domains and NVML's total energy counter, unwrapped, in joules
                            since the sampler started (energy_j:package-0, energy_j:gpu0)
  temp_c:gpuN, clock_mhz:gpuN.graphics|sm|mem, throttle:gpuN   NVML (throttle reasons bitmask)
Source names: "thermal", "cpufreq", "pi_throttle", the rail / domain label for a power or energy
source ("VDD_IN", "ina219", "package-0"), "gpuN" for a GPU; made unique with "#2", "#3".
"""

import array
import bisect
import ctypes
import glob
import math
import os
import re
import threading
import time

from agent import probe_hw, schema

NAN = float("nan")
NVML_LIB_ENV = "BENCHFLEET_NVML_LIB"     # a libnvidia-ml path to load instead (tests: a stub)
NVML_DEFAULT_LIB = "libnvidia-ml.so.1"
NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_TEMPERATURE_GPU = 0
NVML_CLOCKS = (("graphics", 0), ("sm", 1), ("mem", 2))
# NVML clocks throttle (event) reasons that mean the GPU was slowed against its will: SW power
# cap 0x4, HW slowdown 0x8, SW thermal 0x20, HW thermal 0x40, HW power brake 0x80. Not counted:
# GPU idle 0x1, applications clocks setting 0x2 (a chosen clock), sync boost 0x10 and display
# clock setting 0x100 (neither is the card protecting itself).
NVML_THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
# Raspberry Pi get_throttled: bits 0-3 are "now" (under-voltage, ARM frequency capped,
# throttled, soft temperature limit), bits 16-19 the same "has occurred since boot". A window is
# throttled when a sample in it has a "now" bit, or an "occurred" bit the sample before lacked
# (a throttle between two samples).
PI_NOW_MASK = 0xF
PI_OCCURRED_MASK = 0xF0000
# The firmware driver's sysfs file (Raspberry Pi kernels since 4.14): "%x\n" of the same flags,
# read without starting a process. Only where it is missing is vcgencmd run, at most once a second.
PI_THROTTLE_FILES = ("sys/devices/platform/soc/soc:firmware/get_throttled",
                     "sys/devices/platform/*/soc:firmware/get_throttled",
                     "sys/devices/platform/*firmware*/get_throttled",
                     "sys/devices/platform/*/*firmware*/get_throttled")
VCGENCMD_PERIOD_S = 1.0
VCGENCMD_TIMEOUT_S = 1.0
# A zone reading outside this range (Jetson's -256 C for a sensor that is off) is no reading.
TEMP_RANGE_C = (-60.0, 250.0)
# Zones left out of the temperature summary (still sampled and in the series): a Jetson TX1/TX2/
# Nano "PMIC-Die" zone is a placeholder that reads 100 C whatever the die does.
SUMMARY_SKIP_ZONES = ("PMIC-Die",)
# Primary energy source (energy_j, per_inference_mj): the lowest of these, in discovery order
# among equals. A board's input rail measures the whole device; a supply monitor (INA2xx) sits on
# the supply; NVML and RAPL see only the GPU or the CPU package.
PRIORITY_INPUT_RAIL = 0      # Jetson VDD_IN, POM_5V_IN, VIN_*: an "IN" rail of INA3221/INA238
PRIORITY_SUPPLY = 1          # INA219 / INA226 / INA260 / INA23x (and an INA238 not labelled IN)
PRIORITY_GPU = 2             # NVML
PRIORITY_RAPL_PACKAGE = 3    # RAPL package-N
PRIORITY_RAPL_PSYS = 4       # RAPL psys (platform)
PRIORITY_RAIL = 5            # any other INA3221 rail (a Jetson AGX Xavier has no input rail)
PRIORITY_RAPL_DOMAIN = 6     # RAPL core / uncore / dram
INPUT_RAIL = re.compile(r"(^|_)V?IN(_|$)")
MAX_KEPT = 16384             # samples kept before pairs are merged (see Sampler)
MAX_ZONE_CHANNELS = 128
MAX_CPU_CHANNELS = 128
EXTRAPOLATE_INTERVALS = 3.0  # an energy end may be extrapolated this many intervals, no more
MAX_OPEN_FILES = 192         # sampled files kept open (the rest are opened at each read)


class SysFile(object):
    """A sysfs file the sampler reads every sample, kept open: os.pread at offset 0 is one
    system call where open/read/close is three, and sysfs calls the attribute's show() again
    for every read at offset 0 (Documentation/filesystems/sysfs.rst), so the value is fresh.
    Only on the live root: a test's fake tree replaces its files (a kept descriptor would read
    the old one), and there every read opens the file. A read that fails closes it; the next
    one opens it again (a device that went away reads None)."""
    __slots__ = ("path", "fd")

    def __init__(self, path):
        self.path = path
        self.fd = -1

    def raw(self):
        if self.fd < 0:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return None
        try:
            return os.pread(self.fd, 128, 0)
        except OSError:
            self.close()
            return None

    def close(self):
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1

    def __del__(self):
        self.close()


class _Opener(object):
    """What discovery hands the sources to read: a SysFile (kept open) for the first
    MAX_OPEN_FILES paths when keep_open, else the path itself (opened at each read)."""

    def __init__(self, keep_open):
        self.left = MAX_OPEN_FILES if keep_open and hasattr(os, "pread") else 0

    def __call__(self, path):
        if self.left <= 0:
            return path
        self.left -= 1
        return SysFile(path)


def _path_of(f):
    return f.path if isinstance(f, SysFile) else f


def _read_raw(path):
    """The first bytes of a small file (sysfs), or None: os.open/os.read, no buffered file; a
    SysFile reads through its kept descriptor."""
    if isinstance(path, SysFile):
        return path.raw()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 128)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_int(path, base=10):
    data = _read_raw(path)
    if not data:
        return None
    try:
        return int(data.strip(), base)
    except ValueError:
        return None


def _read_str(path):
    data = _read_raw(path)
    if data is None:
        return None
    return data.decode("utf-8", "replace").strip() or None


def _natural(path):
    """Sort key putting thermal_zone10 after thermal_zone9 and cpu10 after cpu9."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _finite(value):
    """value as a float, or None for None / NaN / infinity."""
    if value is None:
        return None
    value = float(value)
    return value if not (math.isnan(value) or math.isinf(value)) else None


def _local(root, device_path):
    """A probe_hw device path (root stripped) back to a path under root."""
    if probe_hw.is_live(root):
        return device_path
    return os.path.join(root, device_path.lstrip("/"))


class _Names(object):
    """Unique names: a repeated one gets "#2", "#3". file(path): what a source reads (_Opener)."""

    def __init__(self, keep_open=False):
        self.taken = set()
        self.file = _Opener(keep_open)

    def unique(self, name):
        base, n = name, 1
        while name in self.taken:
            n += 1
            name = "%s#%d" % (base, n)
        self.taken.add(name)
        return name


class Source(object):
    """One thing the sampler reads. read() -> {channel: number or None}; it never raises for a
    file that vanished or a garbled reading (None), though the sampler survives one that does.

    period_s: read at most this often (0: every sample); power_channel: the channel holding this
    source's power in W; energy_channel: a cumulative energy counter in J (counter difference is
    then the energy, and power_channel is derived from it by the sampler when derive_power);
    priority: for the primary energy source (None: not a power or energy source)."""

    kind = None
    method = None
    unit = None
    period_s = 0.0
    power_channel = None
    energy_channel = None
    counter_method = None
    derive_power = False
    priority = None

    def __init__(self, name, channels):
        self.name = name
        self.channels = list(channels)

    def reset(self):
        """Forget state from an earlier sampler (counter bases): sources may be reused."""

    def read(self):
        return {}

    def info(self):
        return {"name": self.name, "kind": self.kind, "method": self.method, "unit": self.unit,
                "channels": list(self.channels)}


class ThermalSource(Source):
    kind, method, unit = "thermal", "sysfs:thermal_zone", "C"

    def __init__(self, zones):
        """zones: [(channel, temp file path, zone type or None)]."""
        Source.__init__(self, "thermal", [c for c, _, _ in zones])
        self._zones = [(c, p) for c, p, _ in zones]
        self.summary_channels = [c for c, _, kind in zones if kind not in SUMMARY_SKIP_ZONES]

    def read(self):
        out = {}
        lo, hi = TEMP_RANGE_C
        for channel, path in self._zones:
            milli = _read_int(path)
            value = None if milli is None else milli / 1000.0
            out[channel] = value if value is not None and lo < value < hi else None
        return out


class CpufreqSource(Source):
    kind, method, unit = "cpufreq", "sysfs:scaling_cur_freq", "MHz"

    def __init__(self, cores):
        """cores: [(channel, scaling_cur_freq path)]."""
        Source.__init__(self, "cpufreq", [c for c, _ in cores])
        self._cores = list(cores)

    def read(self):
        out = {}
        for channel, path in self._cores:
            khz = _read_int(path)
            out[channel] = None if khz is None else khz / 1000.0
        return out


class PiThrottleSource(Source):
    """A Raspberry Pi's throttle flags: the firmware's sysfs file, else vcgencmd (1 Hz at most)."""
    kind, unit = "throttle", "flags"
    CHANNEL = "throttle:pi"

    def __init__(self, path=None, binary=None, root="/"):
        Source.__init__(self, "pi_throttle", [self.CHANNEL])
        self._path, self._binary = path, binary
        if path:
            self.method = "sysfs:" + probe_hw.device_path(root, _path_of(path))
        else:
            self.method = "vcgencmd get_throttled"
            self.period_s = VCGENCMD_PERIOD_S

    def read(self):
        if self._path:
            return {self.CHANNEL: _read_int(self._path, 16)}
        return {self.CHANNEL: vcgencmd_throttled(self._binary)}


def vcgencmd_throttled(binary):
    """The integer of `vcgencmd get_throttled`, or None."""
    text, _ = probe_hw.run_text([binary, "get_throttled"], timeout=VCGENCMD_TIMEOUT_S)
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text or "")
    return int(match.group(1), 16) if match else None


class PowerRailSource(Source):
    """One INA rail: its power file (uW hwmon, mW IIO), else bus voltage (mV) times current (mA)."""
    kind, unit = "power", "W"

    def __init__(self, name, method, files, priority):
        Source.__init__(self, name, ["power_w:" + name])
        self.method = method
        self.power_channel = self.channels[0]
        self.priority = priority
        self._uw = files.get("power_uw")
        self._mw = files.get("power_mw")
        self._v = files.get("voltage_mv")
        self._i = files.get("current_ma")

    def read(self):
        if self._uw:
            value = _read_int(self._uw)
            return {self.power_channel: None if value is None else value / 1e6}
        if self._mw:
            value = _read_int(self._mw)
            return {self.power_channel: None if value is None else value / 1e3}
        mv, ma = _read_int(self._v), _read_int(self._i)
        return {self.power_channel: None if mv is None or ma is None else mv * ma / 1e6}


class RaplSource(Source):
    """An x86 RAPL domain's energy_uj, unwrapped (a reading below the last one adds
    max_energy_range_uj) and counted from the sampler's first reading; its power is derived by
    the sampler from successive differences."""
    kind, method, unit = "energy", "rapl:energy_uj", "J"
    counter_method = "rapl:energy_uj"
    derive_power = True

    def __init__(self, name, path, max_range_uj, priority):
        Source.__init__(self, name, ["energy_j:" + name, "power_w:" + name])
        self.energy_channel, self.power_channel = self.channels
        self.priority = priority
        self._path = path
        self._range = max_range_uj
        self.reset()

    def reset(self):
        self._first = None
        self._last = None
        self._offset = 0

    def read(self):
        raw = _read_int(self._path)
        if raw is None:
            return {self.energy_channel: None}
        if self._first is None:
            self._first = raw
        elif raw < self._last and self._range:
            self._offset += self._range
        self._last = raw
        return {self.energy_channel: (raw + self._offset - self._first) / 1e6}


class NvmlSource(Source):
    """One NVIDIA GPU through NVML (ctypes): what it supports of power (mW), temperature, the
    graphics / SM / memory clocks, throttle reasons and the total energy counter (mJ, Volta+;
    when present the GPU's energy is its difference, else the integral of its power)."""
    kind, method, unit = "gpu", "nvml", None

    def __init__(self, lib, handle, index, funcs, caps):
        name = "gpu%d" % index
        channels = []
        if "power" in caps:
            channels.append("power_w:" + name)
        if "temp" in caps:
            channels.append("temp_c:" + name)
        for label, _ in NVML_CLOCKS:
            if "clock_" + label in caps:
                channels.append("clock_mhz:%s.%s" % (name, label))
        if "throttle" in caps:
            channels.append("throttle:" + name)
        if "energy" in caps:
            channels.append("energy_j:" + name)
        Source.__init__(self, name, channels)
        self._lib, self._handle, self._f, self._caps = lib, handle, funcs, caps
        self.power_channel = "power_w:" + name if "power" in caps else None
        if "energy" in caps:
            self.energy_channel = "energy_j:" + name
            self.counter_method = "nvml:nvmlDeviceGetTotalEnergyConsumption"
            self.derive_power = self.power_channel is None
            if self.derive_power:
                self.power_channel = "power_w:" + name
                self.channels.append(self.power_channel)
        self.priority = PRIORITY_GPU if (self.power_channel or self.energy_channel) else None
        self._uint = ctypes.c_uint(0)
        self._ull = ctypes.c_ulonglong(0)
        self.reset()

    def reset(self):
        self._energy_base = None

    def _uint_call(self, fn, *args):
        ref = ctypes.byref(self._uint)
        return self._uint.value if fn(*(args + (ref,))) == NVML_SUCCESS else None

    def _ull_call(self, fn):
        ref = ctypes.byref(self._ull)
        return self._ull.value if fn(self._handle, ref) == NVML_SUCCESS else None

    def read(self):
        f, caps, name, h = self._f, self._caps, self.name, self._handle
        out = {}
        if "power" in caps:
            mw = self._uint_call(f["power"], h)
            out["power_w:" + name] = None if mw is None else mw / 1000.0
        if "temp" in caps:
            out["temp_c:" + name] = self._uint_call(f["temp"], h, NVML_TEMPERATURE_GPU)
        for label, clock in NVML_CLOCKS:
            if "clock_" + label in caps:
                out["clock_mhz:%s.%s" % (name, label)] = self._uint_call(f["clock"], h, clock)
        if "throttle" in caps:
            out["throttle:" + name] = self._ull_call(f["throttle"])
        if "energy" in caps:
            mj = self._ull_call(f["energy"])
            if mj is not None and self._energy_base is None:
                self._energy_base = mj
            out["energy_j:" + name] = None if mj is None else (mj - self._energy_base) / 1000.0
        return out


# --- discovery -------------------------------------------------------------------------------

def _thermal(root, names, notes):
    paths = sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*/temp")),
                   key=_natural)
    if not paths:
        return []
    if len(paths) > MAX_ZONE_CHANNELS:
        notes.append("thermal: %d zones, the first %d sampled" % (len(paths), MAX_ZONE_CHANNELS))
        paths = paths[:MAX_ZONE_CHANNELS]
    zone_names, zones = _Names(), []
    for path in paths:
        folder = os.path.dirname(path)
        kind = _read_str(os.path.join(folder, "type"))
        channel = zone_names.unique("temp_c:" + (kind or os.path.basename(folder)))
        zones.append((channel, names.file(path), kind))
    names.unique("thermal")
    return [ThermalSource(zones)]


def _cpufreq(root, names, notes):
    paths = sorted(glob.glob(os.path.join(
        root, "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")), key=_natural)
    if not paths:
        return []
    if len(paths) > MAX_CPU_CHANNELS:
        notes.append("cpufreq: %d cores, the first %d sampled" % (len(paths), MAX_CPU_CHANNELS))
        paths = paths[:MAX_CPU_CHANNELS]
    cores = [("freq_mhz:" + os.path.basename(os.path.dirname(os.path.dirname(p))),
              names.file(p)) for p in paths]
    names.unique("cpufreq")
    return [CpufreqSource(cores)]


def _pi_throttle(root, names, notes):
    seen = set()
    for pattern in PI_THROTTLE_FILES:
        for path in sorted(glob.glob(os.path.join(root, pattern))):
            if path in seen:
                continue
            seen.add(path)
            if _read_int(path, 16) is not None:
                names.unique("pi_throttle")
                return [PiThrottleSource(path=names.file(path), root=root)]
            notes.append("pi_throttle: %s unreadable" % probe_hw.device_path(root, path))
    binary = probe_hw.find_binary(root, "vcgencmd")
    if not binary:
        return []
    if vcgencmd_throttled(binary) is None:
        notes.append("pi_throttle: vcgencmd get_throttled gave no flags")
        return []
    names.unique("pi_throttle")
    return [PiThrottleSource(binary=binary, root=root)]


def _jetson_i2c_ina3221(root, seen):
    """INA3221 hwmon folders under the i2c driver (JetPack 5+) that /sys/class/hwmon did not
    show (a partial tree), as probe_hw sensors: rails 1-3, "NC" ones skipped."""
    sensors = []
    pattern = os.path.join(root, "sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")
    for folder in sorted(glob.glob(pattern)):
        if os.path.realpath(folder) in seen:
            continue
        for n in probe_hw.INA3221_RAILS:
            files = dict((q, os.path.join(folder, "%s%d_input" % (prefix, n))) for q, prefix in
                         (("voltage_mv", "in"), ("current_ma", "curr"), ("power_uw", "power")))
            files = dict((q, p) for q, p in files.items() if os.path.exists(p))
            if "current_ma" not in files and "power_uw" not in files:
                continue
            label = (_read_str(os.path.join(folder, "in%d_label" % n))
                     or "ina3221 ch%d" % n)
            if label.upper() == "NC":
                continue
            sensors.append(probe_hw._sensor(root, "ina3221", folder, label, files))
    return sensors


def _rail_name(sensor):
    """A rail's name: its label; a single-channel INA2xx without one by its chip name."""
    kind, label = sensor["kind"], sensor["label"]
    if kind == "ina3221x-iio" or kind == "ina3221":
        return label
    chip_label = _read_str(os.path.join(sensor["_folder"], "label"))
    if re.match(r"^%s ch\d+$" % re.escape(kind), label):
        return chip_label or kind
    return label


def _power_rails(root, names, notes, sensors):
    seen = set(os.path.realpath(_local(root, s["path"])) for s in sensors
               if s["kind"] in probe_hw.INA_NAMES)
    rails = [s for s in sensors if s["kind"] != "rapl"] + _jetson_i2c_ina3221(root, seen)
    out = []
    for sensor in rails:
        sensor["_folder"] = _local(root, sensor["path"])
        kind = sensor["kind"]
        if not sensor["readable"]:
            notes.append("power: %s rail %s unreadable (%s)" % (kind, sensor["label"],
                                                                sensor["path"]))
            continue
        files = dict((q, _local(root, p)) for q, p in sensor["files"].items())
        needed = ("power_uw",) if "power_uw" in files else (
            ("power_mw",) if "power_mw" in files else ("voltage_mv", "current_ma"))
        if not all(q in files for q in needed):
            notes.append("power: %s rail %s has no power file and not both voltage and current"
                         % (kind, sensor["label"]))
            continue
        files = dict((q, names.file(p)) for q, p in files.items() if q in needed)
        if kind == "ina3221x-iio":
            method = "iio:ina3221"
        else:
            method = "hwmon:" + kind
        inputish = bool(INPUT_RAIL.search(sensor["label"].upper()))
        if kind in ("ina3221", "ina3221x-iio"):
            priority = PRIORITY_INPUT_RAIL if inputish else PRIORITY_RAIL
        elif kind == "ina238" and inputish:
            priority = PRIORITY_INPUT_RAIL
        else:
            priority = PRIORITY_SUPPLY
        out.append(PowerRailSource(names.unique(_rail_name(sensor)), method, files, priority))
    return out


def _rapl(root, names, notes, sensors):
    zones = [(_local(root, s["path"]), s) for s in sensors if s["kind"] == "rapl"]
    seen = set(os.path.realpath(folder) for folder, _ in zones)
    nested = os.path.join(root, "sys/class/powercap/intel-rapl:*/intel-rapl:*")
    for folder in sorted(glob.glob(nested), key=_natural):  # sub-zones a flat listing lacked
        energy = os.path.join(folder, "energy_uj")
        if os.path.realpath(folder) not in seen and os.path.exists(energy):
            seen.add(os.path.realpath(folder))
            zones.append((folder, {"label": _read_str(os.path.join(folder, "name"))
                                   or os.path.basename(folder),
                                   "readable": _read_int(energy) is not None,
                                   "path": probe_hw.device_path(root, folder)}))
    out = []
    for folder, sensor in zones:
        if not sensor["readable"]:
            notes.append("rapl: %s energy_uj unreadable (%s)" % (
                sensor["label"], sensor.get("hint") or "root-only since Linux 5.10"))
            continue
        label = sensor["label"]
        if label.startswith("package"):
            priority = PRIORITY_RAPL_PACKAGE
        elif label == "psys":
            priority = PRIORITY_RAPL_PSYS
        else:
            priority = PRIORITY_RAPL_DOMAIN
        max_range = _read_int(os.path.join(folder, "max_energy_range_uj"))
        if not max_range:
            notes.append("rapl: %s has no max_energy_range_uj: a wrap cannot be undone" % label)
        out.append(RaplSource(names.unique(label), names.file(os.path.join(folder, "energy_uj")),
                              max_range or 0, priority))
    return out


def _nvml_funcs(lib):
    """{key: ctypes function with argtypes} of the NVML calls used; KeyError names a missing one."""
    c_uint, c_int, c_void_p = ctypes.c_uint, ctypes.c_int, ctypes.c_void_p
    c_ull = ctypes.c_ulonglong
    ptr = ctypes.POINTER
    table = (
        ("init", ("nvmlInit_v2", "nvmlInit"), []),
        ("count", ("nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"), [ptr(c_uint)]),
        ("handle", ("nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"),
         [c_uint, ptr(c_void_p)]),
        ("power", ("nvmlDeviceGetPowerUsage",), [c_void_p, ptr(c_uint)]),
        ("temp", ("nvmlDeviceGetTemperature",), [c_void_p, c_int, ptr(c_uint)]),
        ("clock", ("nvmlDeviceGetClockInfo",), [c_void_p, c_int, ptr(c_uint)]),
        ("throttle", ("nvmlDeviceGetCurrentClocksThrottleReasons",
                      "nvmlDeviceGetCurrentClocksEventReasons"), [c_void_p, ptr(c_ull)]),
        ("energy", ("nvmlDeviceGetTotalEnergyConsumption",), [c_void_p, ptr(c_ull)]),
    )
    funcs = {}
    for key, symbols, argtypes in table:
        for symbol in symbols:
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.argtypes, fn.restype = argtypes, c_int
                funcs[key] = fn
                break
    return funcs


def _nvml(root, names, notes, nvml_lib):
    path = nvml_lib or os.environ.get(NVML_LIB_ENV)
    if not path:
        if not probe_hw.is_live(root):
            notes.append("nvml: not queried for a fake root %s (give nvml_lib)" % root)
            return []
        path = NVML_DEFAULT_LIB
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        notes.append("nvml: %s not loadable: %s" % (path, exc))
        return []
    funcs = _nvml_funcs(lib)
    for key in ("init", "count", "handle"):
        if key not in funcs:
            notes.append("nvml: %s lacks the %s call" % (path, key))
            return []
    rc = funcs["init"]()
    if rc != NVML_SUCCESS:
        notes.append("nvml: nvmlInit failed (NVML code %d)" % rc)
        return []
    count = ctypes.c_uint(0)
    rc = funcs["count"](ctypes.byref(count))
    if rc != NVML_SUCCESS:
        notes.append("nvml: nvmlDeviceGetCount failed (NVML code %d)" % rc)
        return []
    out = []
    for index in range(min(count.value, schema.MAX_TELEMETRY_SOURCES)):
        handle = ctypes.c_void_p()
        rc = funcs["handle"](index, ctypes.byref(handle))
        if rc != NVML_SUCCESS:
            notes.append("nvml: GPU %d: no handle (NVML code %d)" % (index, rc))
            continue
        caps, uint, ull = set(), ctypes.c_uint(0), ctypes.c_ulonglong(0)
        probes = [("power", "power", (handle, ctypes.byref(uint))),
                  ("temp", "temp", (handle, NVML_TEMPERATURE_GPU, ctypes.byref(uint))),
                  ("throttle", "throttle", (handle, ctypes.byref(ull))),
                  ("energy", "energy", (handle, ctypes.byref(ull)))]
        probes += [("clock_" + label, "clock", (handle, clock, ctypes.byref(uint)))
                   for label, clock in NVML_CLOCKS]
        for cap, key, args in probes:
            if key in funcs and funcs[key](*args) == NVML_SUCCESS:
                caps.add(cap)
        if not caps:
            notes.append("nvml: GPU %d reports nothing the sampler reads" % index)
            continue
        source = NvmlSource(lib, handle, index, funcs, caps)
        source.name = names.unique(source.name)
        out.append(source)
    return out


def discover(root="/", nvml_lib=None, keep_open=None):
    """(sources, notes): every telemetry source under `root` ("/" on a device, a fake tree in
    tests), file paths resolved now. notes say why something present could not be used (no
    NVML library, a root-only RAPL counter); discovery never raises.

    nvml_lib: the NVML library to load (default $BENCHFLEET_NVML_LIB, else libnvidia-ml.so.1,
    which is loaded only for the live root "/"). keep_open: keep the sampled files open
    (SysFile; default: on the live root only)."""
    if keep_open is None:
        keep_open = probe_hw.is_live(root)
    names, notes, sources = _Names(keep_open), [], []
    try:
        sensors = probe_hw.power_sensors(root)
    except Exception as exc:   # probe_hw never raises; a bug there must not cost the case
        notes.append("power: probe failed: %s: %s" % (type(exc).__name__, exc))
        sensors = []
    steps = (("thermal", lambda: _thermal(root, names, notes)),
             ("cpufreq", lambda: _cpufreq(root, names, notes)),
             ("pi_throttle", lambda: _pi_throttle(root, names, notes)),
             ("power", lambda: _power_rails(root, names, notes, sensors)),
             ("rapl", lambda: _rapl(root, names, notes, sensors)),
             ("nvml", lambda: _nvml(root, names, notes, nvml_lib)))
    for label, step in steps:
        try:
            sources.extend(step())
        except Exception as exc:
            notes.append("%s: discovery failed: %s: %s" % (label, type(exc).__name__, exc))
    if len(sources) > schema.MAX_TELEMETRY_SOURCES:
        notes.append("%d sources, the first %d kept" % (len(sources),
                                                        schema.MAX_TELEMETRY_SOURCES))
        sources = sources[:schema.MAX_TELEMETRY_SOURCES]
    return sources, notes


# --- sampler ---------------------------------------------------------------------------------

def _nanmin(a, b):
    if a != a:
        return b
    if b != b:
        return a
    return a if a < b else b


def _nanmax(a, b):
    if a != a:
        return b
    if b != b:
        return a
    return a if a > b else b


def _fold(values, fn):
    """fn over a slice of floats, NaN skipped; None when all are NaN."""
    out = NAN
    for v in values:
        out = fn(out, v)
    return None if out != out else out


class Sampler(object):
    """Reads every source each interval_ms on a daemon thread, from start() to stop().

    Storage is columnar (array('d') per channel, NaN for no reading), so a sample costs 8 bytes
    a channel. Memory is bounded and the resolution stays uniform: when max_kept samples are
    held, adjacent pairs are merged into the later one, and from then on every kept sample takes
    in twice as many samples as they arrive (1, 2, 4, ... per kept sample). What a merge keeps
    exact:
      - energy: every power source is integrated (trapezoid) as samples arrive and each kept
        sample carries the cumulative energy at its time (a counter source carries its unwrapped
        counter), so an energy over any window is a difference of two interpolated cumulative
        values, whatever was merged in between;
      - extremes: each kept sample carries the min / max hottest-zone temperature, the min / max
        CPU frequency and the throttle flag of every raw sample it stands for, and how many;
      - sparse channels (vcgencmd at 1 Hz) keep the pair's last reading, not a gap.
    Only the instantaneous values of the series lose resolution (12 h at 100 ms: 432000 samples
    become 13500, one every 3.2 s, still finer than the 2000-point series), and a window's
    ends are exact to one kept sample. Memory: max_kept * (channels + 7 + power sources) * 8
    bytes at most (30 channels: under 5 MB), however long the case.

    samples: [(t_monotonic, {channel: value or None})] of the kept samples. error: the first
    failure (a source that raised, the thread dying), else None. A source that raises is
    recorded and read again next time; the others go on.
    """

    def __init__(self, sources, interval_ms=100, clock=time.monotonic, max_kept=MAX_KEPT):
        self.sources = list(sources)
        self.interval_ms = float(interval_ms)
        self.clock = clock
        self.max_kept = max(2, int(max_kept) + int(max_kept) % 2)  # even: merges pair up
        self.error = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._started = None
        self._stopped = None
        self._channels = []
        for src in self.sources:
            self._channels.extend(c for c in src.channels if c not in self._channels)
        self._sparse = set(c for s in self.sources if s.period_s for c in s.channels)
        self._zones = [c for s in self.sources if s.kind == "thermal"
                       for c in getattr(s, "summary_channels", s.channels)]
        self._cpus = [c for s in self.sources if s.kind == "cpufreq" for c in s.channels]
        self._pi = [c for s in self.sources if s.kind == "throttle" for c in s.channels]
        self._gpu_thr = [c for s in self.sources if s.kind == "gpu" for c in s.channels
                         if c.startswith("throttle:")]
        self._tracks = [s for s in self.sources if s.priority is not None]
        self._reads = dict((s.name, [0, None, None]) for s in self.sources)
        self._last_read = {}
        self._errors = {}
        self._t = array.array("d")
        self._n = array.array("d")
        self._hot = array.array("d")       # hottest zone, this sample
        self._aggs = dict((k, array.array("d")) for k in ("hot_min", "hot_max", "f_min", "f_max",
                                                          "thr"))
        self._cols = dict((c, array.array("d")) for c in self._channels)
        self._cum = dict((s.name, array.array("d")) for s in self._tracks)
        self._integral = {}    # power source: (t, W, J) of its last reading
        self._counter = {}     # derived power: (t, J) of the counter's last reading
        self._pi_last = None
        self._per = 1          # samples each kept sample takes in (doubles with each merge)

    # -- the thread --
    def start(self):
        for src in self.sources:
            src.reset()
        self._started = self.clock()
        self._thread = threading.Thread(target=self._loop, name="telemetry-sampler")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        """Stop and join (one last sample is taken, so the window's end has one after it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30.0)
        if self._stopped is None:
            self._stopped = self.clock()

    def _loop(self):
        interval = self.interval_ms / 1000.0
        try:
            due = self.clock()
            while True:
                self._sample()
                if self._stop.is_set():
                    break
                due += interval
                delay = due - self.clock()
                if delay < 0:       # late (a slow read): the next one is an interval from now
                    due, delay = self.clock(), 0.0
                if self._stop.wait(delay):
                    self._sample()
                    break
        except Exception as exc:
            self.error = self.error or "sampler stopped: %s: %s" % (type(exc).__name__, exc)
        self._stopped = self.clock()

    def _sample(self):
        clock = self.clock
        begin = clock()
        values = {}
        fresh = []
        for src in self.sources:
            if src.period_s:
                last = self._last_read.get(src.name)
                if last is not None and begin - last < src.period_s:
                    continue
                self._last_read[src.name] = begin
            try:
                out = src.read()
            except Exception as exc:
                self._source_error(src, exc)
                continue
            if any(v is not None for v in out.values()):
                fresh.append(src.name)
            values.update(out)
        t = (begin + clock()) / 2.0
        for name in fresh:
            count = self._reads[name]
            count[0] += 1
            if count[1] is None:
                count[1] = t
            count[2] = t
        self.add(t, values)

    def _source_error(self, src, exc):
        n = self._errors.get(src.name, 0) + 1
        self._errors[src.name] = n
        if self.error is None:
            self.error = "source %s raised %s: %s" % (src.name, type(exc).__name__, exc)

    # -- storage --
    def add(self, t, values):
        """Take in one sample {channel: value} read at monotonic time t (the thread's own path;
        public so that tests can feed a long synthetic run)."""
        with self._lock:
            self._derive(t, values)
            hot = f_min = f_max = NAN
            for c in self._zones:
                v = values.get(c)
                if v is not None:
                    hot = _nanmax(hot, v)
            for c in self._cpus:
                v = values.get(c)
                if v is not None:
                    f_min = _nanmin(f_min, v)
                    f_max = _nanmax(f_max, v)
            thr = self._throttled(values)
            cums = [(src.name, self._cumulative(src, t, values)) for src in self._tracks]
            aggs = self._aggs
            if self._t and self._n[-1] < self._per:
                # the last kept sample is still taking in samples: fold this one into it
                self._t[-1] = t
                self._n[-1] += 1.0
                self._hot[-1] = hot
                for key, value, fn in (("hot_min", hot, _nanmin), ("hot_max", hot, _nanmax),
                                       ("f_min", f_min, _nanmin), ("f_max", f_max, _nanmax),
                                       ("thr", thr, _nanmax)):
                    aggs[key][-1] = fn(aggs[key][-1], value)
                sparse = self._sparse
                for channel, col in self._cols.items():
                    v = values.get(channel)
                    if v is not None:
                        col[-1] = v
                    elif channel not in sparse:
                        col[-1] = NAN
                for name, value in cums:
                    self._cum[name][-1] = value
                return
            if len(self._t) >= self.max_kept:
                self._merge_pairs()
            self._t.append(t)
            self._n.append(1.0)
            self._hot.append(hot)
            for key, value in (("hot_min", hot), ("hot_max", hot), ("f_min", f_min),
                               ("f_max", f_max), ("thr", thr)):
                aggs[key].append(value)
            for channel, col in self._cols.items():
                v = values.get(channel)
                col.append(NAN if v is None else float(v))
            for name, value in cums:   # looked up now: a merge made new arrays
                self._cum[name].append(value)

    def _derive(self, t, values):
        for src in self._tracks:
            if not src.derive_power:
                continue
            energy = values.get(src.energy_channel)
            if energy is None:
                continue
            last = self._counter.get(src.name)
            if last is not None and t > last[0]:
                values[src.power_channel] = (energy - last[1]) / (t - last[0])
            self._counter[src.name] = (t, energy)

    def _throttled(self, values):
        flag = NAN
        for c in self._pi:
            v = values.get(c)
            if v is None:
                continue
            v = int(v)
            new = v & ~self._pi_last & PI_OCCURRED_MASK if self._pi_last is not None else 0
            self._pi_last = v
            flag = _nanmax(flag, 1.0 if (v & PI_NOW_MASK or new) else 0.0)
        for c in self._gpu_thr:
            v = values.get(c)
            if v is not None:
                flag = _nanmax(flag, 1.0 if int(v) & NVML_THROTTLE_MASK else 0.0)
        return flag

    def _cumulative(self, src, t, values):
        if src.energy_channel:
            v = values.get(src.energy_channel)
            return NAN if v is None else float(v)
        p = values.get(src.power_channel)
        if p is None:
            return NAN
        last = self._integral.get(src.name)
        energy = 0.0 if last is None else last[2] + (last[1] + p) / 2.0 * (t - last[0])
        self._integral[src.name] = (t, p, energy)
        return energy

    def _merge_pairs(self):
        """Halve the kept samples, each pair into its later one (see the class doc); from now
        on each kept sample takes in twice as many samples."""
        self._per *= 2
        def later(col):
            return col[1::2]

        def pairwise(col, fn):
            return array.array("d", (fn(a, b) for a, b in zip(col[0::2], col[1::2])))

        def last_reading(a, b):
            return a if b != b else b
        self._t = later(self._t)
        self._n = pairwise(self._n, lambda a, b: a + b)
        self._hot = later(self._hot)
        for key, fn in (("hot_min", _nanmin), ("hot_max", _nanmax), ("f_min", _nanmin),
                        ("f_max", _nanmax), ("thr", _nanmax)):
            self._aggs[key] = pairwise(self._aggs[key], fn)
        for channel in list(self._cols):
            col = self._cols[channel]
            self._cols[channel] = (pairwise(col, last_reading) if channel in self._sparse
                                   else later(col))
        for name in list(self._cum):
            self._cum[name] = later(self._cum[name])

    @property
    def samples(self):
        with self._lock:
            cols = [(c, self._cols[c]) for c in self._channels]
            return [(t, dict((c, _finite(col[i])) for c, col in cols))
                    for i, t in enumerate(self._t)]

    # -- windows --
    def _span(self, t0, t1):
        """Indices [lo, hi) of the kept samples with t0 <= t <= t1."""
        return bisect.bisect_left(self._t, t0), bisect.bisect_right(self._t, t1)

    def _around(self, t0, t1):
        """_span, or the samples either side of a window too short to hold one."""
        lo, hi = self._span(t0, t1)
        if hi > lo:
            return lo, hi
        return max(0, lo - 1), min(len(self._t), hi + 1)

    def _cum_at(self, name, t):
        """The cumulative energy (J) of track `name` at time t: linear between the kept samples
        around t (the interval's mean power), extrapolated with the nearest slope for at most
        EXTRAPOLATE_INTERVALS intervals past the readings; None without readings near t."""
        cum, ts = self._cum[name], self._t
        n = len(ts)
        i = bisect.bisect_left(ts, t)
        j = i
        while j < n and cum[j] != cum[j]:
            j += 1
        k = i - 1
        while k >= 0 and cum[k] != cum[k]:
            k -= 1
        if j < n and ts[j] == t:
            return cum[j]
        if k >= 0 and j < n:
            if ts[j] == ts[k]:
                return cum[j]
            return cum[k] + (cum[j] - cum[k]) * (t - ts[k]) / (ts[j] - ts[k])
        reach = EXTRAPOLATE_INTERVALS * self.interval_ms / 1000.0
        end = k if k >= 0 else j
        if end < 0 or end >= n or abs(t - ts[end]) > reach:
            return None
        step = -1 if end == k else 1
        other = end + step
        while 0 <= other < n and cum[other] != cum[other]:
            other += step
        if not 0 <= other < n or ts[other] == ts[end]:
            return cum[end]
        slope = (cum[end] - cum[other]) / (ts[end] - ts[other])
        return cum[end] + slope * (t - ts[end])

    def _energy_of(self, name, t0, t1):
        a, b = self._cum_at(name, t0), self._cum_at(name, t1)
        return None if a is None or b is None else b - a

    def _primary(self, by_source):
        """The primary energy source: the lowest priority with an energy for the window."""
        ranked = sorted(enumerate(self._tracks), key=lambda item: (item[1].priority, item[0]))
        for _, src in ranked:
            if by_source.get(src.name) is not None:
                return src
        return ranked[0][1] if ranked else None

    def _window_power(self, t0, t1):
        by_source = dict((s.name, self._energy_of(s.name, t0, t1)) for s in self._tracks)
        primary = self._primary(by_source)
        if primary is None or by_source.get(primary.name) is None or t1 <= t0:
            return None
        return by_source[primary.name] / (t1 - t0)

    def _throttle_in(self, lo, hi):
        if not (self._pi or self._gpu_thr):
            return None
        flag = _fold(self._aggs["thr"][lo:hi], _nanmax)
        return None if flag is None else bool(flag)

    def summary(self, t0, t1):
        """schema.TELEMETRY_SUMMARY_FIELDS over [t0, t1] (monotonic); None where no source."""
        with self._lock:
            lo, hi = self._around(t0, t1)
            span = self._span(t0, t1)
            hots = [v for v in self._hot[lo:hi] if v == v]
            return {
                "temp_start_c": hots[0] if hots else None,
                "temp_end_c": hots[-1] if hots else None,
                "temp_min_c": _fold(self._aggs["hot_min"][lo:hi], _nanmin),
                "temp_max_c": _fold(self._aggs["hot_max"][lo:hi], _nanmax),
                "freq_min_mhz": _fold(self._aggs["f_min"][lo:hi], _nanmin),
                "freq_max_mhz": _fold(self._aggs["f_max"][lo:hi], _nanmax),
                "power_mean_w": _finite(self._window_power(t0, t1)),
                "throttled": self._throttle_in(lo, hi),
                "samples": int(sum(self._n[span[0]:span[1]])),
            }

    def window_stats(self, t0, t1):
        """One sustained-mode window: {"temp_max_c", "freq_min_mhz", "power_w", "throttled"}."""
        with self._lock:
            lo, hi = self._around(t0, t1)
            return {"temp_max_c": _fold(self._aggs["hot_max"][lo:hi], _nanmax),
                    "freq_min_mhz": _fold(self._aggs["f_min"][lo:hi], _nanmin),
                    "power_w": _finite(self._window_power(t0, t1)),
                    "throttled": self._throttle_in(lo, hi)}

    def idle_power(self, t0, t1):
        """{source: mean watts over [t0, t1]} of every power / energy source with readings."""
        with self._lock:
            out = {}
            if t1 <= t0:
                return out
            for src in self._tracks:
                energy = self._energy_of(src.name, t0, t1)
                if energy is not None:
                    out[src.name] = energy / (t1 - t0)
            return out

    def rate_hz(self, name):
        count, first, last = self._reads.get(name) or (0, None, None)
        if count < 2 or last <= first:
            return None
        return (count - 1) / (last - first)

    def energy(self, t0, t1, inferences, idle_power_w=None, subtract_idle=False):
        """schema.ENERGY_FIELDS over [t0, t1], or None without a power or energy source.

        by_source: every power / energy source's joules (a power source: the trapezoid integral
        of its samples, linear at the window's ends; a counter: the difference of the unwrapped
        counter, linear at the ends). The primary source (PRIORITY_* order) gives energy_j and
        the figures from it; idle_power_w ({source: W} from the cool-down) gives its idle power,
        subtracted (idle W * window s) when subtract_idle."""
        with self._lock:
            if not self._tracks:
                return None
            by_source = dict((s.name, _finite(self._energy_of(s.name, t0, t1)))
                             for s in self._tracks)
            src = self._primary(by_source)
        window_s = t1 - t0
        energy = by_source.get(src.name)
        if src.energy_channel:
            method = "counter difference (%s %s)" % (src.counter_method, src.name)
        else:
            rate = self.rate_hz(src.name)
            method = "integral of sampled power (%s %s, %s Hz)" % (
                src.method, src.name, "%.1f" % rate if rate else "?")
        idle = _finite((idle_power_w or {}).get(src.name))
        subtracted = bool(subtract_idle and idle is not None and energy is not None)
        if subtracted:
            energy -= idle * window_s
        return {
            "method": method, "source": src.name, "energy_j": energy,
            "per_inference_mj": energy / inferences * 1000.0
            if energy is not None and inferences else None,
            "power_mean_w": energy / window_s if energy is not None and window_s > 0 else None,
            "inferences_per_j": inferences / energy if energy and energy > 0 and inferences
            else None,
            "idle_power_w": idle, "idle_subtracted": subtracted,
            "window_s": window_s if window_s >= 0 else None,
            "by_source": by_source, "clock_offset_s": None,
        }

    def series(self, t0, t1, max_points=schema.MAX_SERIES_POINTS):
        """{"t_s": [seconds from t0], channel: [values]} of the kept samples in [t0, t1] and the
        one either side, at most max_points (buckets of consecutive samples: a bucket's last time
        and each channel's last reading in it) and schema.MAX_TELEMETRY_CHANNELS channels."""
        with self._lock:
            lo, hi = self._span(t0, t1)
            lo, hi = max(0, lo - 1), min(len(self._t), hi + 1)
            n = hi - lo
            if n <= 0:
                return {}
            m = min(n, max(1, int(max_points)))
            bounds = [lo + (k * n) // m for k in range(m + 1)]
            series = {"t_s": [round(self._t[b - 1] - t0, 4) for b in bounds[1:]]}
            for channel in self._ordered_channels()[:schema.MAX_TELEMETRY_CHANNELS]:
                col, values = self._cols[channel], []
                integer = channel.startswith("throttle:")
                for a, b in zip(bounds, bounds[1:]):
                    v = NAN
                    for i in range(b - 1, a - 1, -1):
                        if col[i] == col[i]:
                            v = col[i]
                            break
                    if v != v or math.isinf(v):
                        values.append(None)
                    else:
                        values.append(int(v) if integer else round(v, 4))
                series[channel] = values
            return series

    def _ordered_channels(self):
        order = ("throttle", "power", "gpu", "energy", "thermal", "cpufreq")
        out = []
        for kind in order:
            for src in self.sources:
                if src.kind == kind:
                    out.extend(c for c in src.channels if c not in out)
        out.extend(c for c in self._channels if c not in out)
        return out

    def source_info(self):
        out = []
        for src in self.sources:
            info = src.info()
            info["rate_hz"] = _finite(self.rate_hz(src.name))
            out.append(info)
        return out

    def record(self, t0, t1, inferences, idle_power_w=None, subtract_idle=False):
        """The result's telemetry object (schema.TELEMETRY_FIELDS) over the window [t0, t1]."""
        error = self.error
        if error is not None and self._errors:
            error = "%s (raised: %s)" % (error, ", ".join(
                "%s %d times" % (k, v) for k, v in sorted(self._errors.items())))
        return {"interval_ms": self.interval_ms, "sources": self.source_info(),
                "series": self.series(t0, t1), "summary": self.summary(t0, t1),
                "energy": self.energy(t0, t1, inferences, idle_power_w, subtract_idle),
                "error": error}
