"""How the controller reaches a device: the Transport interface (base), this machine (local),
SSH with strict host keys (ssh, hostkeys). make_transport picks one for a device."""

from orchestrator.transport.base import Result, Transport, command_line

__all__ = ["Result", "Transport", "command_line", "make_transport"]


def make_transport(device, **kwargs):
    """LocalTransport for `transport: local`, else SshTransport (kwargs go to SshTransport)."""
    if device.transport == "local":
        from orchestrator.transport.local import LocalTransport
        return LocalTransport(device.name)
    from orchestrator.transport.ssh import SshTransport
    return SshTransport(device, **kwargs)
