"""SSH host keys: open a socket to a target, fetch its key, and trust it on request.

Host keys are checked strictly (known_hosts + RejectPolicy). This module builds the HostKeyError
messages (fingerprint and the exact fix) and implements `benchfleet devices trust NAME`.
"""

import os
import socket

import paramiko

from orchestrator.errors import HostKeyError, TransportError
from orchestrator.transport.target import resolve_target

# A silently cut link fails a blocked send after this long instead of ~16 min of retransmits.
TCP_USER_TIMEOUT_MS = 10_000


def known_hosts_name(host, port):
    """The known_hosts key OpenSSH and paramiko use: `host` on port 22, else `[host]:port`."""
    return host if int(port) == 22 else "[%s]:%d" % (host, int(port))


def open_socket(target):
    """TCP socket to the target with TCP_USER_TIMEOUT and keepalive set: keepalives alone never
    give up on a silently cut link (paramiko), a blocked send with TCP_USER_TIMEOUT does."""
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
        "    benchfleet devices trust %s%s\n"
        "  or: ssh-keyscan -p %d %s >> %s"
    ) % (target.host, target.port, target.known_hosts, shown, target.name, target.cli_flag,
         target.port, target.host, target.known_hosts))


def changed_host_error(target, exc):
    """HostKeyError for a host whose key differs from the one in known_hosts."""
    return HostKeyError(target.name, (
        "host key of %s:%d has CHANGED: do not trust it blindly, this may be an attack.\n"
        "  known_hosts (%s): %s\n"
        "  server now offers: %s\n"
        "  If the device was reinstalled, verify the new fingerprint on the device itself, then "
        "remove the old entry:\n"
        "    ssh-keygen -R '%s' -f %s\n"
        "  and run: benchfleet devices trust %s%s"
    ) % (target.host, target.port, target.known_hosts, describe_key(exc.expected_key),
         describe_key(exc.key), known_hosts_name(target.host, target.port), target.known_hosts,
         target.name, target.cli_flag))


class TrustRefused(TransportError):
    """The user did not confirm a new host key (benchfleet devices add without --yes)."""


def trust_host_key(device, known_hosts_path=None, config=None, confirm=None):
    """Fetch the device's host key and append it to known_hosts; return its SHA256 fingerprint.

    confirm: callable(target, key) -> bool, asked before a new key is written (None: trust).
    An entry already present with the same key is left alone; a different key of the same type
    raises HostKeyError (changed) rather than being overwritten.

    Raises:
        TransportError: the key cannot be fetched. HostKeyError: the key changed.
        TrustRefused: confirm said no.
    """
    target = resolve_target(device, config)
    if known_hosts_path:
        target.known_hosts = os.path.expanduser(str(known_hosts_path))
    if target.proxy:
        raise TransportError(device.name, "cannot fetch a host key through %s; run ssh-keyscan "
                             "-p %d %s on the jump host and add its output to %s"
                             % ("ProxyJump " + target.proxy_jump if target.proxy_jump
                                else "a ProxyCommand", target.port, target.host,
                                target.known_hosts))
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
    old = (known.lookup(name) or {}).get(key.get_name())
    if old is not None:
        if old == key:
            return key.fingerprint
        raise changed_host_error(target, paramiko.BadHostKeyException(name, key, old))
    if confirm is not None and not confirm(target, key):
        raise TrustRefused(device.name, "host key %s of %s:%d not trusted; nothing was written"
                           % (describe_key(key), target.host, target.port))
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
