"""Where a device really is: its inventory fields, else its ~/.ssh/config entry, else defaults.

An inventory field that is written wins; where the inventory is silent, ssh_config supplies
HostName, Port, User, IdentityFile, ConnectTimeout and ProxyJump/ProxyCommand, as `ssh NAME`
would. Every effective value remembers where it came from (`benchfleet devices list -v`).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field

from orchestrator.errors import TransportError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_PORT = 22
DEFAULT_CONNECT_TIMEOUT_S = 10.0
INVENTORY, SSH_CONFIG, DEFAULT = "inventory", "ssh_config", "default"


@dataclass
class Target:
    """The effective SSH destination of one device."""

    name: str                    # device name, for messages
    conn_host: str               # the name looked up in ssh_config (alias or host)
    host: str                    # resolved HostName (what the socket and known_hosts use)
    port: int
    user: str
    connect_timeout: float
    known_hosts: str
    identity_files: list = field(default_factory=list)
    proxy_jump: str | None = None
    proxy_command: str | None = None
    sources: dict = field(default_factory=dict)   # field -> inventory | ssh_config | default
    ssh_config: dict = field(default_factory=dict)
    cli_flag: str = ""           # ' -i PATH' when hints must name the user's inventory

    @property
    def proxy(self) -> bool:
        """A jump host or proxy command: the socket is not ours to open."""
        return bool(self.proxy_jump or self.proxy_command)

    def describe(self) -> list:
        """(field, effective value, source) rows for `devices list -v`."""
        rows = [("host", self.host), ("port", self.port), ("user", self.user),
                ("identity_file", ", ".join(self.identity_files) or None),
                ("connect_timeout_s", self.connect_timeout), ("proxy_jump", self.proxy_jump),
                ("proxy_command", self.proxy_command), ("known_hosts", self.known_hosts)]
        return [(k, v, self.sources.get(k, DEFAULT)) for k, v in rows]


def fabric_config(ssh_config_path=None):
    """A fabric Config that loads ~/.ssh/config (or ssh_config_path) so entries resolve."""
    from fabric import Config
    if ssh_config_path:
        return Config(runtime_ssh_path=os.path.expanduser(str(ssh_config_path)))
    return Config()


def _pick(sources, key, written, from_config, default, convert=lambda v: v):
    if written is not None:
        sources[key] = INVENTORY
        return written
    if from_config is not None:
        sources[key] = SSH_CONFIG
        return convert(from_config)
    sources[key] = DEFAULT
    return default


def resolve_target(device, config=None) -> Target:
    """The Target of a device (a config.inventory.Device).

    Raises:
        TransportError: no host at all, or an ssh_config value that is not a number where one
        is needed (Port, ConnectTimeout).
    """
    config = config or fabric_config()
    conn_host = device.ssh_alias or device.host
    if not conn_host:
        raise TransportError(device.name, "no host: set host or ssh_alias in the inventory")
    lookup = dict(config.base_ssh_config.lookup(conn_host))
    src = {}
    try:
        host = _pick(src, "host", None, lookup.get("hostname"), conn_host)
        if src["host"] == DEFAULT:
            src["host"] = INVENTORY
        port = _pick(src, "port", device.port, lookup.get("port"), DEFAULT_PORT, int)
        timeout = _pick(src, "connect_timeout_s", device.connect_timeout_s,
                        lookup.get("connecttimeout"), DEFAULT_CONNECT_TIMEOUT_S, float)
    except ValueError as exc:
        raise TransportError(device.name, "ssh_config entry for %s has a bad number: %s"
                             % (conn_host, exc)) from None
    user = _pick(src, "user", device.user, lookup.get("user"), None) or getpass.getuser()
    written = [os.path.expanduser(device.identity_file)] if device.identity_file else None
    identities = _pick(src, "identity_file", written, lookup.get("identityfile"), [],
                       lambda v: [os.path.expanduser(p) for p in v])
    jump = _pick(src, "proxy_jump", device.proxy_jump, lookup.get("proxyjump"), None)
    command = None if jump else _pick(src, "proxy_command", None, lookup.get("proxycommand"), None)
    if str(jump).lower() == "none":   # OpenSSH's way of switching an inherited jump off
        jump = None
    src["known_hosts"] = INVENTORY if device.known_hosts != DEFAULT_KNOWN_HOSTS else DEFAULT
    return Target(device.name, conn_host, host, int(port), user, float(timeout),
                  os.path.expanduser(device.known_hosts), identities, jump, command, src, lookup,
                  device.cli_flag)
