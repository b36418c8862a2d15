"""SSH host keys: open a socket to a target, fetch its key, and trust it on request.

Host keys are checked strictly (known_hosts + RejectPolicy). This module builds the HostKeyError
messages (fingerprint and the exact fix) and implements `benchfleet devices trust NAME`.
"""

import contextlib
import os
import socket
import tempfile
import threading

import paramiko

from orchestrator.errors import HostKeyError, TransportError
from orchestrator.transport.target import resolve_target

# A silently cut link fails a blocked send after this long instead of ~16 min of retransmits.
TCP_USER_TIMEOUT_MS = 10_000
# The key exchange may take this long past connect_timeout_s once the banner came (slow CPUs).
NEGOTIATION_MARGIN_S = 5.0


def known_hosts_name(host, port):
    """The known_hosts key OpenSSH and paramiko use: `host` on port 22, else `[host]:port`."""
    return host if int(port) == 22 else "[%s]:%d" % (host, int(port))


def open_socket(target):
    """TCP socket to the target with TCP_USER_TIMEOUT and keepalive set: keepalives alone never
    give up on a silently cut link (paramiko), a blocked send with TCP_USER_TIMEOUT does."""
    try:
        sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
    except socket.timeout:
        raise TransportError(target.name, "no TCP connection to %s:%d within %g s: the host is "
                             "down, or a firewall drops the packets; check host and port (or "
                             "raise connect_timeout_s for a slow link)"
                             % (target.host, target.port, target.connect_timeout)) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
    except OSError:
        sock.close()
        raise
    return sock


def stop_transport(transport, timeout=5.0):
    """Stop paramiko's reader thread, then let its socket close.

    paramiko's own close() closes the socket while its thread may still be reading it (the thread
    then logs 'Socket exception: Bad file descriptor'), and a failed handshake leaves the thread
    finishing on its own. Here the thread is told to stop, notices within its 0.1 s read poll,
    closes its socket itself and is joined before this returns.
    """
    if transport is None:
        return
    transport.active = False
    transport.packetizer.close()
    if transport.is_alive() and transport is not threading.current_thread():
        transport.join(timeout)
    transport.sock.close()


# Why a handshake stopped before the banner: "silent" (accepts TCP, never answers) or "closed".
SILENT, CLOSED = "silent", "closed"


def banner_failure(exc):
    """SILENT or CLOSED for paramiko's "Error reading SSH protocol banner", else None."""
    if not isinstance(exc, paramiko.SSHException) or "protocol banner" not in str(exc):
        return None
    cause = exc.__cause__ or exc.__context__
    return SILENT if isinstance(cause, socket.timeout) else CLOSED


def banner_message(target, kind, attempts):
    where = "%s:%d" % (target.host, target.port)
    tries = "%d attempt%s" % (attempts, "" if attempts == 1 else "s")
    if kind == SILENT:
        return ("no SSH banner from %s within %g s (%s): the port takes TCP connections but "
                "nothing answers as sshd would (a hung sshd, or a port forward to nothing); check "
                "the port, or raise connect_timeout_s for a slow device"
                % (where, target.connect_timeout, tries))
    return ("%s closed the connection before sending its SSH protocol banner (%s): sshd's "
            "MaxStartups may be turning away connections (too many at once), or the port is "
            "not sshd" % (where, tries))


def fetch_host_key(target, prefer=()):
    """The server's host key from a bare handshake (no authentication); key types in `prefer`
    (those known_hosts already holds) are asked for first, as OpenSSH does."""
    sock = open_socket(target)
    transport = paramiko.Transport(sock)
    try:
        if prefer:
            # An RSA key is known as ssh-rsa but signed with SHA-2 by any current sshd.
            prefer = [a for k in prefer for a in (
                ("rsa-sha2-512", "rsa-sha2-256", k) if k == "ssh-rsa" else (k,))]
            options = transport.get_security_options()
            options.key_types = [k for k in prefer if k in options.key_types] + [
                k for k in options.key_types if k not in prefer]
        # The banner wait decides; the negotiation's own limit comes later, so a silent port
        # fails as "no banner" rather than racing to a half-open session.
        transport.banner_timeout = target.connect_timeout
        transport.start_client(timeout=target.connect_timeout + NEGOTIATION_MARGIN_S)
        return transport.get_remote_server_key()
    finally:
        stop_transport(transport)
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


def changed_host_error(target, exc, known=None):
    """HostKeyError for a host whose key differs from the one(s) in known_hosts."""
    known = known or [exc.expected_key]
    return HostKeyError(target.name, (
        "host key of %s:%d has CHANGED: do not trust it blindly, this may be an attack.\n"
        "  known_hosts (%s): %s\n"
        "  server now offers: %s\n"
        "  If the device was reinstalled, verify the new fingerprint on the device itself "
        "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then replace the old entry:\n"
        "    benchfleet devices trust %s%s --replace"
    ) % (target.host, target.port, target.known_hosts, "; ".join(describe_key(k) for k in known),
         describe_key(exc.key), target.name, target.cli_flag))


class TrustRefused(TransportError):
    """The user did not confirm a new host key (benchfleet devices add without --yes)."""


def trust_host_key(device, known_hosts_path=None, config=None, confirm=None, replace=False,
                   replaced=None):
    """Fetch the device's host key and add it to known_hosts; return its SHA256 fingerprint.

    confirm: callable(target, key) -> bool, asked before a new key is written (None: trust).
    An entry already holding the offered key is left alone. Any other key known for the host, of
    whatever type, raises HostKeyError (changed) unless `replace`: then every entry for the host
    is swapped for the offered key (other hosts' lines untouched) and the old keys' descriptions
    are appended to `replaced` (a list) when given.

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
    name = known_hosts_name(target.host, target.port)
    path = target.known_hosts
    hosts = paramiko.HostKeys()
    if os.path.exists(path):
        hosts.load(path)
    known = dict(hosts.lookup(name) or {})   # key type -> key
    try:
        key = fetch_host_key(target, prefer=list(known))
    except TransportError:
        raise
    except (OSError, paramiko.SSHException, EOFError) as exc:
        kind = banner_failure(exc)
        if kind:
            raise TransportError(device.name, banner_message(target, kind, 1)) from None
        raise TransportError(device.name, "cannot fetch the host key of %s:%d: %s"
                             % (target.host, target.port, exc or type(exc).__name__)) from None
    if known.get(key.get_name()) == key:
        return key.fingerprint
    if known and not replace:
        old = known.get(key.get_name()) or next(iter(known.values()))
        raise changed_host_error(target, paramiko.BadHostKeyException(name, key, old),
                                 list(known.values()))
    if confirm is not None and not confirm(target, key):
        raise TrustRefused(device.name, "host key %s of %s:%d not trusted; nothing was written"
                           % (describe_key(key), target.host, target.port))
    line = "%s %s %s\n" % (name, key.get_name(), key.get_base64())
    if known:
        _replace_lines(path, name, line)
        if replaced is not None:
            replaced.extend(describe_key(k) for k in known.values())
    else:
        _append_line(path, line)
    return key.fingerprint


def _names_host(line, name):
    """Whether a known_hosts line is an entry for `name` (plain or hashed host names)."""
    entry = paramiko.hostkeys.HostKeyEntry.from_line(line) if line.strip() and \
        not line.lstrip().startswith("#") else None
    if entry is None:
        return False
    for host in entry.hostnames:
        if host == name or (host.startswith("|1|") and paramiko.HostKeys.hash_host(name, host)
                            == host):
            return True
    return False


def _replace_lines(path, name, line):
    """known_hosts without its entries for `name`, then `line`: written to a temporary file in
    the same folder and renamed over the old one (0600), so a crash leaves one or the other."""
    with open(path) as f:
        kept = [l for l in f if not _names_host(l, name)]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".known_hosts-", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.writelines(kept + [line])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
