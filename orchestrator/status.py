"""`benchfleet devices status`: whether each device's agent lock is held, and by which run.

The lock (WORKDIR/agent.lock) is held by every process of a run that measures; the agent's
`lock` command reads it without taking it. A device that cannot be reached says why.
"""

from __future__ import annotations

import concurrent.futures
import json

from orchestrator import deploy
from orchestrator.errors import OrchestratorError


def one_status(dev, agent=None) -> dict:
    """{"held": bool, "holder": dict or None} or {"error": text} for one device."""
    from orchestrator.transport import make_transport
    try:
        with make_transport(dev) as t:
            workdir = t.expand(dev.workdir)
            remote, _ = deploy.install_agent(t, workdir, agent)
            res = t.run([dev.python, remote, "lock", workdir], timeout=dev.command_timeout_s,
                        env=dict(dev.env) or None)
        if res.exit_code != 0:
            return {"error": "agent lock exited %d: %s" % (res.exit_code, res.stderr.strip()[-300:])}
        state = json.loads(res.stdout)
    except ValueError as exc:
        return {"error": "the agent's answer is unusable: %s" % exc}
    except OrchestratorError as exc:
        return {"error": str(exc)}
    if not isinstance(state, dict):
        return {"error": "the agent's answer is not an object"}
    holder = state.get("holder")
    return {"held": state.get("held") is True, "holder": holder if isinstance(holder, dict) else None}


def device_status(devices) -> dict:
    """one_status for every device, in parallel; {name: state} in the order given."""
    if not devices:
        return {}
    agent = deploy.local_agent()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(devices))) as pool:
        return dict(zip([d.name for d in devices],
                        pool.map(lambda d: one_status(d, agent), devices)))


def status_lines(states) -> list[str]:
    from orchestrator.execute import describe_holder
    lines = []
    for name, state in states.items():
        if state.get("error"):
            lines.append("%s: unknown (%s)" % (name, state["error"]))
        elif state.get("held"):
            lines.append("%s: busy: %s" % (name, describe_holder(state.get("holder") or {})))
        else:
            lines.append("%s: free" % name)
    return lines or ["no devices"]
