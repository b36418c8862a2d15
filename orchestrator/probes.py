"""Device probes: run the agent's `probe` on devices and cache each document for the planner."""

import concurrent.futures
import json
from pathlib import Path

from agent.fsutil import atomic_write_json
from orchestrator import deploy
from orchestrator.cache import cache_root
from orchestrator.errors import OrchestratorError


def probe_cache_path(device_name: str) -> Path:
    return cache_root() / "probes" / (device_name + ".json")


def cached_probes(inventory) -> dict:
    """Probe documents cached by `benchfleet devices probe`, by device name (missing: absent)."""
    probes = {}
    for dev in inventory:
        path = probe_cache_path(dev.name)
        try:
            probes[dev.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
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
            return None, "agent probe exited %d: %s" % (res.exit_code, res.stderr.strip()[-500:])
        doc = json.loads(res.stdout)
    except (OrchestratorError, ValueError) as exc:
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
