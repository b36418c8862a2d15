"""`benchfleet devices status`: whether each device's agent lock is held, and by which run.

The lock (WORKDIR/agent.lock) is held by every process of a run that measures; the agent's
`lock` command reads it without taking it. A device that cannot be reached says why.
"""

from __future__ import annotations

import concurrent.futures

from orchestrator import deploy
from orchestrator.errors import OrchestratorError, TransportError
from orchestrator.escape import terminal


def read_lock(t, dev, agent_path, workdir) -> dict:
    """{"held": bool, "holder": dict or None} from the device's `agent lock WORKDIR` (its answer
    is untrusted: capped, depth-checked and shape-checked).

    Raises:
        TransportError: the command failed or its answer is unusable.
    """
    from orchestrator.collect import loads_untrusted
    res = t.run([dev.python, agent_path, "lock", workdir], timeout=dev.command_timeout_s,
                env=dict(dev.env) or None)
    state = None
    if res.exit_code == 0 and len(res.stdout) <= 64 * 1024:
        try:
            state = loads_untrusted(res.stdout)
        except ValueError:
            pass
    if not isinstance(state, dict):
        raise TransportError(dev.name, "agent lock exited %d with an unusable answer: %s"
                             % (res.exit_code, terminal(res.stderr.strip()[-300:])))
    holder = state.get("holder")
    return {"held": state.get("held") is True, "holder": holder if isinstance(holder, dict) else None}


def one_status(dev, agent=None) -> dict:
    """read_lock's answer, or {"error": text}, for one device."""
    from orchestrator.transport import make_transport
    try:
        with make_transport(dev) as t:
            workdir = t.expand(dev.workdir)
            remote, _ = deploy.install_agent(t, workdir, agent)
            return read_lock(t, dev, remote, workdir)
    except OrchestratorError as exc:
        return {"error": str(exc)}


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
