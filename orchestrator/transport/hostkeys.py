"""SSH targets and host keys: resolve a device (ssh_config alias), open a socket, fetch and trust keys.

Host keys are checked strictly (known_hosts + RejectPolicy). This module builds the HostKeyError
messages (fingerprint and the exact fix) and implements `benchfleet devices trust NAME`.
"""

import os
import socket
from dataclasses import dataclass, field

import paramiko

from orchestrator.errors import HostKeyError, TransportError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
# A silently cut link fails a blocked send after this long instead of ~16 min of retransmits.
TCP_USER_TIMEOUT_MS = 10_000


@dataclass
class Target:
    """Where a device really is, after its ssh_config alias (if any) is applied."""

    name: str                    # device name, for messages
    conn_host: str               # what fabric.Connection gets (the alias when there is one)
    host: str                    # resolved HostName (what known_hosts is keyed on)
    port: int
    user: str | None
    connect_timeout: float
    known_hosts: str
    proxy: bool = False          # ProxyCommand/ProxyJump: fabric opens the socket itself
    ssh_config: dict = field(default_factory=dict)


def fabric_config(ssh_config_path=None):
    """A fabric Config that loads ~/.ssh/config (or ssh_config_path) so aliases resolve."""
    from fabric import Config
    if ssh_config_path:
        return Config(runtime_ssh_path=os.path.expanduser(str(ssh_config_path)))
    return Config()


def resolve_target(device, config=None):
    """Target for device: its ssh_alias's HostName/Port/User win, device fields fill the gaps."""
    config = config or fabric_config()
    alias = getattr(device, "ssh_alias", None)
    conn_host = alias or device.host
    if not conn_host:
        raise TransportError(device.name, "no host: set host or ssh_alias in the inventory")
    lookup = dict(config.base_ssh_config.lookup(conn_host))
    if alias:
        port = int(lookup.get("port") or getattr(device, "port", None) or 22)
        user = lookup.get("user") or getattr(device, "user", None)
    else:
        port = int(getattr(device, "port", None) or lookup.get("port") or 22)
        user = getattr(device, "user", None) or lookup.get("user")
    timeout = getattr(device, "connect_timeout_s", None) or float(lookup.get("connecttimeout", 10))
    known = getattr(device, "known_hosts", None) or DEFAULT_KNOWN_HOSTS
    return Target(device.name, conn_host, lookup.get("hostname", conn_host), port, user,
                  float(timeout), os.path.expanduser(str(known)),
                  proxy=bool(lookup.get("proxyjump") or lookup.get("proxycommand")),
                  ssh_config=lookup)


def known_hosts_name(host, port):
    """The known_hosts key OpenSSH and paramiko use: `host` on port 22, else `[host]:port`."""
    return host if int(port) == 22 else "[%s]:%d" % (host, int(port))


def open_socket(target):
    """TCP socket to the target with TCP_USER_TIMEOUT and keepalive set (see RELIABILITY.md)."""
    sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
    except OSError:
        sock.close()
        raise
    return sock


def fetch_host_key(target):
    """The server's host key from a bare handshake (no authentication)."""
    sock = open_socket(target)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=target.connect_timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()
        sock.close()


def describe_key(key):
    return "%s %s" % (key.get_name(), key.fingerprint)


def unknown_host_error(target, key):
    """HostKeyError for a host missing from known_hosts: what the key is and how to trust it."""
    shown = describe_key(key) if key is not None else "(could not fetch the key)"
    return HostKeyError(target.name, (
        "host key of %s:%d is not in %s (refusing to connect).\n"
        "  server key: %s\n"
        "  check this fingerprint on the device (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then "
        "trust it with:\n"
        "    benchfleet devices trust %s\n"
        "  or: ssh-keyscan -p %d %s >> %s"
    ) % (target.host, target.port, target.known_hosts, shown, target.name, target.port,
         target.host, target.known_hosts))


def changed_host_error(target, exc):
    """HostKeyError for a host whose key differs from the one in known_hosts."""
    return HostKeyError(target.name, (
        "host key of %s:%d has CHANGED: do not trust it blindly, this may be an attack.\n"
        "  known_hosts (%s): %s\n"
        "  server now offers: %s\n"
        "  If the device was reinstalled, verify the new fingerprint on the device itself, then "
        "remove the old entry:\n"
        "    ssh-keygen -R '%s' -f %s\n"
        "  and run: benchfleet devices trust %s"
    ) % (target.host, target.port, target.known_hosts, describe_key(exc.expected_key),
         describe_key(exc.key), known_hosts_name(target.host, target.port), target.known_hosts,
         target.name))


def trust_host_key(device, known_hosts_path=None, config=None):
    """Fetch the device's host key and append it to known_hosts; return its SHA256 fingerprint.

    An entry already present with the same key is left alone; a different key of the same type
    raises HostKeyError (changed) rather than being overwritten.
    """
    target = resolve_target(device, config)
    if known_hosts_path:
        target.known_hosts = os.path.expanduser(str(known_hosts_path))
    try:
        key = fetch_host_key(target)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        raise TransportError(device.name, "cannot fetch the host key of %s:%d: %s"
                             % (target.host, target.port, exc)) from exc
    name = known_hosts_name(target.host, target.port)
    path = target.known_hosts
    known = paramiko.HostKeys()
    if os.path.exists(path):
        known.load(path)
    entry = known.lookup(name) or {}
    old = entry.get(key.get_name())
    if old is not None:
        if old == key:
            return key.fingerprint
        raise changed_host_error(target, paramiko.BadHostKeyException(name, key, old))
    _append_line(path, "%s %s %s\n" % (name, key.get_name(), key.get_base64()))
    return key.fingerprint


def _append_line(path, line):
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a+") as f:
        # A file whose last line lacks a newline would glue our entry onto it.
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                line = "\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
