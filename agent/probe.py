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

from agent import AGENT_VERSION, fsutil
from agent.worker import thermal_temps

# module -> distribution names that provide it (the first installed one gives the version).
RUNTIMES = (
    ("numpy", ("numpy",)),
    ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly",
                    "tensorflow-aarch64", "tensorflow-intel")),
    ("ai_edge_litert", ("ai-edge-litert", "ai-edge-litert-nightly")),
    ("tflite_runtime", ("tflite-runtime", "tflite_runtime")),
    ("pycoral", ("pycoral",)),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11")),
)


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
    """Board name from the device tree (Raspberry Pi, Jetson); NUL-terminated in the file."""
    text = _read(root, "proc/device-tree/model")
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


def runtimes():
    installed = installed_dists(sys.path)
    return dict((module, runtime(module, dists, installed)) for module, dists in RUNTIMES)


def probe(root="/"):
    """The whole probe document (see docs/PROTOCOL.md `probe`). Never raises for a missing file."""
    return {
        "agent_version": AGENT_VERSION,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "implementation": platform.python_implementation()},
        "cpu_model": cpu_model(root),
        "cores": cores(root),
        "governor": governor(root),
        "isolcpus": isolcpus(root),
        "memory": memory(root),
        "device_model": device_model(root),
        "jetson": jetson(root),
        "thermal_zones": thermal_zones(root),
        "runtimes": runtimes(),
    }
