"""Device probes: run the agent's `probe` on devices and cache each document for the planner."""

import concurrent.futures
from pathlib import Path

from agent.fsutil import atomic_write_json
from orchestrator import deploy
from orchestrator.cache import cache_root
from orchestrator.errors import OrchestratorError
from orchestrator.escape import terminal


# A probe is a few KB; what a device prints past this is refused, not parsed.
MAX_PROBE_BYTES = 4 * 1024 * 1024
# The parts of a probe the controller reads (the planner's and the catalog's rules), with the
# type each must have; a part of another type is dropped, as if the device had not said it, so a
# hostile or broken probe can make a case run and fail, never the planner raise.
_DICT_PARTS = ("runtimes", "cores", "gpu", "coral")
_RUNTIME_TEXT = ("version", "reason", "hint")


def checked_probe(doc):
    """A probe document from a device, with every part the controller reads of the right type.

    Raises:
        ValueError: not a JSON object.
    """
    if not isinstance(doc, dict):
        raise ValueError("the probe is not a JSON object")
    doc = dict(doc)
    for part in _DICT_PARTS:
        if part in doc and not isinstance(doc[part], dict):
            del doc[part]
    if "jetson" in doc and not isinstance(doc["jetson"], (str, type(None))):   # nv_tegra_release
        del doc["jetson"]
    runtimes = {}
    for name, entry in (doc.get("runtimes") or {}).items():
        if not isinstance(entry, dict):
            continue
        entry = dict(entry, available=entry.get("available") is True)
        for key in _RUNTIME_TEXT:
            if key in entry and not isinstance(entry[key], (str, type(None))):
                del entry[key]
        if "tensorrt" in entry and not isinstance(entry["tensorrt"], dict):
            del entry["tensorrt"]
        runtimes[name] = entry
    if "runtimes" in doc:
        doc["runtimes"] = runtimes
    return doc


def parse_probe(raw):
    """The checked probe document in a device's output (str or bytes).

    Raises:
        ValueError: too large, not UTF-8, not JSON, nested too deeply, or not an object.
    """
    from orchestrator.collect import loads_untrusted
    size = len(raw.encode("utf-8", "replace") if isinstance(raw, str) else raw)
    if size > MAX_PROBE_BYTES:
        raise ValueError("the probe output is %d bytes, past the %d a probe may take"
                         % (size, MAX_PROBE_BYTES))
    return checked_probe(loads_untrusted(raw))


def probe_cache_path(device_name: str) -> Path:
    return cache_root() / "probes" / (device_name + ".json")


def cached_probes(inventory) -> dict:
    """Probe documents cached by `benchfleet devices probe`, by device name (missing: absent)."""
    probes = {}
    for dev in inventory:
        path = probe_cache_path(dev.name)
        try:
            probes[dev.name] = parse_probe(path.read_bytes())
        except (OSError, ValueError):
            continue   # unreadable or damaged: planned as unprobed
    return probes


def probe_device(dev, agent=None):
    """(probe document, None) or (None, error text) for one device; a success is cached."""
    from orchestrator.transport import make_transport
    try:
        with make_transport(dev) as t:
            remote, _ = deploy.install_agent(t, t.expand(dev.workdir), agent)
            res = t.run([dev.python, remote, "probe"], timeout=dev.command_timeout_s,
                        env=dict(dev.env) or None)
        if res.exit_code != 0:
            return None, "agent probe exited %d: %s" % (res.exit_code,
                                                        terminal(res.stderr.strip()[-500:]))
        doc = parse_probe(res.stdout)
    except ValueError as exc:
        return None, "the agent's probe output is unusable: %s" % exc
    except OrchestratorError as exc:
        return None, str(exc)
    path = probe_cache_path(dev.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(str(path), doc)
    return doc, None


def probe_devices(devices) -> dict:
    """probe_device on each device in parallel. Returns {name: (probe_doc or None, error or None)}."""
    agent = deploy.local_agent()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip([d.name for d in devices], pool.map(lambda d: probe_device(d, agent), devices)))
