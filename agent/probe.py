"""Host probe (`agent probe`): what this device is and which runtimes it has, as one JSON document.

Each fact is a small function of `root` (a fake tree in tests) that returns None for a missing
file instead of raising. Runtimes are found without importing them (TensorFlow alone takes
seconds to import): importlib's finder plus the installed distribution's METADATA.
"""

import importlib.util
import os
import platform
import re
import socket
import sys

from agent import AGENT_VERSION, fsutil, probe_hw
from agent.backends import catalog
from agent.worker import thermal_temps

# The runtime modules every backend may need, from the backend catalog.
RUNTIMES = tuple((m.name, m.dists) for m in catalog.MODULES)
HINTS = dict((m.name, m.hint) for m in catalog.MODULES)
EDGETPU_HINT = "sudo apt-get install libedgetpu1-std"


def _read(root, rel):
    return fsutil.read_text(os.path.join(root, rel))


def cpu_model(root="/"):
    """Model text from /proc/cpuinfo ("model name" on x86, "Model"/"Hardware" on ARM boards)."""
    text = _read(root, "proc/cpuinfo")
    if not text:
        return None
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        if fields.get(key):
            return fields[key]
    return None


# (CPU implementer, CPU part) from ARM cpuinfo -> core name; ARM boards give no "model name".
ARM_CORES = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd0c"): "Neoverse-N1", ("0x4e", "0x004"): "Carmel",
}


def arm_core(root="/"):
    """Core name of an ARM CPU (e.g. Cortex-A72 on a Pi 4) from cpuinfo's implementer/part ids."""
    text = _read(root, "proc/cpuinfo") or ""
    impl = re.search(r"^CPU implementer\s*:\s*(0x[0-9a-fA-F]+)", text, re.M)
    part = re.search(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", text, re.M)
    if not (impl and part):
        return None
    key = (impl.group(1).lower(), part.group(1).lower())
    return ARM_CORES.get(key, "ARM %s:%s" % key)


def cores(root="/"):
    """Logical cores listed in cpuinfo, and those this process may use (affinity)."""
    text = _read(root, "proc/cpuinfo") or ""
    listed = len(re.findall(r"^processor\s*:", text, re.M)) or None
    usable = None
    if hasattr(os, "sched_getaffinity") and root == "/":
        usable = len(os.sched_getaffinity(0))
    return {"listed": listed, "usable": usable, "os_cpu_count": os.cpu_count() if root == "/" else None}


def governor(root="/"):
    return _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def isolcpus(root="/"):
    return _read(root, "sys/devices/system/cpu/isolated")


def memory(root="/"):
    """MemTotal and MemAvailable in kB from /proc/meminfo."""
    out = {"total_kb": None, "available_kb": None}
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("MemTotal:", "MemAvailable:") and parts[1].isdigit():
            out["total_kb" if parts[0] == "MemTotal:" else "available_kb"] = int(parts[1])
    return out


def device_model(root="/"):
    """Board name from the device tree (Raspberry Pi, Jetson); NUL-terminated in the file.
    sysfs first (/proc/device-tree is a link to it on a real board; a chroot with a real procfs
    can only provide the sysfs file), then /proc/device-tree."""
    text = _read(root, "sys/firmware/devicetree/base/model") or \
        _read(root, "proc/device-tree/model")
    return text.rstrip("\x00").strip() if text else None


def jetson(root="/"):
    """First line of /etc/nv_tegra_release (L4T release) on a Jetson, else None."""
    text = _read(root, "etc/nv_tegra_release")
    return text.splitlines()[0] if text else None


def thermal_zones(root="/"):
    """Readable zones: name, type, temperature in C."""
    zones = []
    for name, temp in sorted(thermal_temps(root).items()):
        kind = _read(root, "sys/class/thermal/%s/type" % name)
        zones.append({"zone": name, "type": kind, "temp_c": temp})
    return zones


_INFO = re.compile(r"^(.+?)-([^-]+?)(?:-py[\d.]+)?\.(?:dist-info|egg-info)$", re.I)


def _norm(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def installed_dists(paths):
    """{normalized distribution name: version} from the *.dist-info / *.egg-info folders in
    `paths` (Debian's python3-pycoral installs an egg-info). First path wins, like imports."""
    found = {}
    for folder in paths:
        try:
            names = os.listdir(folder or ".")
        except (OSError, TypeError):
            continue
        for name in names:
            match = _INFO.match(name)
            if match:
                found.setdefault(_norm(match.group(1)), match.group(2))
    return found


def _source_version(origin):
    # Fallback when no metadata exists (a runtime copied in by hand): read __version__ from source.
    folder = os.path.dirname(origin or "")
    for name in ("version.py", "_version.py", "__init__.py"):
        text = fsutil.read_text(os.path.join(folder, name), limit=200000) or ""
        match = re.search(r"^_?_?version_?_?\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if match:
            return match.group(1)
    return None


def runtime(module, dists, installed):
    """{"available", "version", "reason"} for one runtime module, found without importing it.

    installed: installed_dists(sys.path).
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError) as exc:
        return {"available": False, "version": None, "reason": "find_spec failed: %s" % exc}
    if spec is None:
        return {"available": False, "version": None, "reason": "%s not installed" % module}
    version = next((installed[_norm(d)] for d in dists if _norm(d) in installed), None)
    version = version or _source_version(spec.origin)
    return {"available": True, "version": version,
            "reason": None if version else "installed, version unknown"}


def _package_dir(module):
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError, AttributeError):
        return None
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    return locations[0] if locations else None


def tf_tensorrt(root="/"):
    """Whether the installed TensorFlow was built with TensorRT, read from its files (no import:
    importing TensorFlow takes seconds). build_info.py says so on TF >= 2.5; the TF-TRT python
    package ships in every wheel, so libnvinfer must be findable as well."""
    folder = _package_dir("tensorflow")
    info = fsutil.read_text(os.path.join(folder or "", "python/platform/build_info.py"),
                            limit=200000) if folder else None
    flag = re.search(r"['\"]is_tensorrt_build['\"]\s*[,:]\s*(True|False)", info or "")
    built = (flag.group(1) == "True") if flag else None
    trt_convert = bool(folder) and os.path.isfile(
        os.path.join(folder, "python/compiler/tensorrt/trt_convert.py"))
    lib = probe_hw.find_library(root, "nvinfer")
    usable = bool(built is not False and trt_convert and lib)
    reason = None
    if not usable:
        reason = ("tensorflow not installed" if not folder else
                  "tensorflow built without TensorRT" if built is False else
                  "no tensorflow/python/compiler/tensorrt" if not trt_convert else
                  "libnvinfer not found (TensorRT not installed)")
    return {"built_with_tensorrt": built, "trt_convert": trt_convert, "libnvinfer": lib,
            "usable": usable, "reason": reason}


def onnxruntime_provider_libs():
    """Execution-provider libraries shipped in the installed onnxruntime (cuda, tensorrt, ...).
    The providers themselves are only known after importing it, at run time."""
    folder = _package_dir("onnxruntime")
    names = []
    try:
        names = os.listdir(os.path.join(folder, "capi")) if folder else []
    except OSError:
        pass
    found = set()
    for name in names:
        match = re.match(r"^(?:lib)?onnxruntime_providers_(\w+?)\.(?:so|dll|dylib)", name)
        if match and match.group(1) != "shared":
            found.add(match.group(1))
    return sorted(found)


def runtimes(root="/"):
    """Every RUNTIMES module: {"available", "version", "reason", "hint"} plus runtime extras
    (tensorflow: "tensorrt"; pycoral: "libedgetpu"; onnxruntime: "providers")."""
    installed = installed_dists(sys.path)
    found = dict((module, runtime(module, dists, installed)) for module, dists in RUNTIMES)
    coral = found["pycoral"]
    coral["libedgetpu"] = probe_hw.find_library(root, "edgetpu")
    if not coral["available"]:
        coral["reason"] = "pycoral not installed: %s" % HINTS["pycoral"]
    elif not coral["libedgetpu"]:
        coral.update(available=False, hint=EDGETPU_HINT,
                     reason="libedgetpu.so.1 not found: %s" % EDGETPU_HINT)
    found["tensorflow"]["tensorrt"] = tf_tensorrt(root)
    found["tensorrt"]["libnvinfer"] = found["tensorflow"]["tensorrt"]["libnvinfer"]
    ort = found["onnxruntime"]
    ort.update(providers=None, providers_reason="known at run time",
               provider_libs=onnxruntime_provider_libs() if ort["available"] else [])
    for module, entry in found.items():
        entry.setdefault("hint", None if entry["available"] else HINTS.get(module))
    return found


def probe(root="/"):
    """The whole probe document (see docs/PROTOCOL.md `probe`). Never raises for a missing file."""
    model = device_model(root)
    return {
        "agent_version": AGENT_VERSION,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "implementation": platform.python_implementation()},
        "cpu_model": cpu_model(root),
        "cpu_core": arm_core(root),
        "cores": cores(root),
        "governor": governor(root),
        "isolcpus": isolcpus(root),
        "memory": memory(root),
        "device_model": model,
        "jetson": jetson(root),
        "jetson_info": probe_hw.jetson_info(root),
        "raspberry_pi": probe_hw.raspberry_pi(root, model),
        "gpu": probe_hw.gpu(root),
        "coral": probe_hw.coral(root),
        "thermal_zones": thermal_zones(root),
        "power_sensors": probe_hw.power_sensors(root),
        "runtimes": runtimes(root),
    }
