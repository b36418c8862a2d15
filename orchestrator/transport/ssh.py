"""SshTransport: a device over SSH with fabric/paramiko, hardened against their known traps.

Strict host keys (known_hosts + a RejectPolicy, never AutoAdd; jump hosts too), a
TCP_USER_TIMEOUT socket, a timeout on every command, quoted argv/env, SFTP without prefetch,
and every paramiko/socket error mapped to the OrchestratorError tree in one function (map_error).
Where the device is (inventory over ssh_config) is decided in target.py.
"""

import contextlib
import math
import os
import posixpath
import socket
import time
import uuid

import invoke
import paramiko

from orchestrator.errors import CommandTimeout, FileTooLarge, TransportError
from orchestrator.transport.hostkeys import (CLOSED, NEGOTIATION_MARGIN_S, banner_failure, banner_message,
                                             changed_host_error, known_hosts_name, open_socket,
                                             stop_transport, trust_host_key, unknown_host_error)
from orchestrator.transport.target import fabric_config, resolve_target
from orchestrator.transport.base import (FOLDER_MODE, Result, Transport, check_env,
                                         command_line)

__all__ = ["SshTransport", "map_error", "trust_host_key"]

# A handshake the server closes before its banner is tried this many times in all (sshd's
# MaxStartups drops excess simultaneous handshakes that way); one that gets no banner within
# connect_timeout_s is not retried: a silent port stays silent.
BANNER_RETRIES = 4
KEEPALIVE_S = 5  # traffic for TCP_USER_TIMEOUT to act on when the link goes quiet


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname, key):
        paramiko.SSHException.__init__(self, "Server %r not found in known_hosts" % hostname)
        self.hostname, self.key = hostname, key


def _unknown_jump_host(target, exc):
    from orchestrator.errors import HostKeyError
    return HostKeyError(target.name, "host key of jump host %s (ProxyJump %s) is not in %s "
                        "(refusing to connect).\n  server key: %s %s\n  check it on the jump "
                        "host, then add it: ssh-keyscan the jump host >> %s"
                        % (exc.hostname, target.proxy_jump, target.known_hosts,
                           exc.key.get_name(), exc.key.fingerprint, target.known_hosts))


class _BannerError(TransportError):
    """No banner: `kind` is hostkeys.SILENT or CLOSED (the message counts one attempt)."""

    def __init__(self, device, message, kind):
        TransportError.__init__(self, device, message)
        self.kind = kind


class _RejectAndRecord(paramiko.RejectPolicy):
    """RejectPolicy that keeps the offered key, so the error can show its fingerprint."""

    def missing_host_key(self, client, hostname, key):
        raise _UnknownHostKey(hostname, key)


def map_error(target, exc, action):
    """The OrchestratorError for exc raised while doing `action` on target (None: not ours)."""
    where = "%s:%d" % (target.host, target.port)
    name = target.name
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, _UnknownHostKey):
        if exc.hostname != known_hosts_name(target.host, target.port):
            return _unknown_jump_host(target, exc)
        return unknown_host_error(target, exc.key)
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_host_error(target, exc)
    kind = banner_failure(exc)
    if kind:
        return _BannerError(name, banner_message(target, kind, 1), kind)
    if isinstance(exc, invoke.CommandTimedOut):
        return CommandTimeout(name, "%s did not finish within %gs on %s (the remote process may "
                                    "still be running)" % (action, exc.timeout, where))
    if isinstance(exc, paramiko.AuthenticationException):
        return TransportError(name, "authentication as %s at %s failed (%s); check user and "
                                    "identity_file" % (target.user, where, exc))
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return TransportError(name, "connection refused by %s: is sshd running and the port right?"
                              % where)
    if isinstance(exc, socket.gaierror):
        return TransportError(name, "cannot resolve host %r: %s" % (target.host, exc))
    if isinstance(exc, TimeoutError):
        return TransportError(name, "%s: timed out talking to %s" % (action, where))
    if isinstance(exc, FileNotFoundError):
        return TransportError(name, "%s: no such file (%s)" % (action, exc))
    if isinstance(exc, PermissionError):
        return TransportError(name, "%s: permission denied (%s)" % (action, exc))
    if isinstance(exc, paramiko.SSHException):
        return TransportError(name, "%s: SSH error with %s: %s" % (action, where, exc or type(exc).__name__))
    if isinstance(exc, (OSError, EOFError)):
        return TransportError(name, "%s: connection to %s lost: %s" % (action, where,
                                                                       exc or type(exc).__name__))
    return None


class SshTransport(Transport):
    """One device over SSH. Connects lazily; close() drops the link and the next call reconnects."""

    def __init__(self, device, config=None, ssh_config_path=None):
        Transport.__init__(self, device.name)
        self.device = device
        self._config = config or fabric_config(ssh_config_path)
        self.target = resolve_target(device, self._config)
        self._conn = None
        self._home = None

    # -- connection ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _mapped(self, action):
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged below
            mapped = map_error(self.target, exc, action)
            if mapped is None:
                raise
            if not self.is_active():
                self.close()  # a dead link: the next call reconnects
            raise mapped from exc

    def _connection(self):
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        self.close()
        for attempt in range(1, BANNER_RETRIES + 1):
            try:
                with self._mapped("connect"):
                    self._conn = self._open_once()
                return self._conn
            except _BannerError as exc:
                if exc.kind != CLOSED or attempt == BANNER_RETRIES:
                    raise TransportError(self.name, banner_message(self.target, exc.kind,
                                                                   attempt)) from None
                time.sleep(0.5 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _open_once(self):
        t = self.target
        kwargs = self._connect_kwargs()
        if t.identity_files:
            kwargs["key_filename"] = list(t.identity_files)
            if t.sources.get("identity_file") == "inventory":
                # A key written in the inventory is the key: no agent or default keys besides.
                kwargs.update(allow_agent=False, look_for_keys=False)
        sock = None
        gateway = False   # False, not None: fabric would build its own jump hosts (AutoAdd)
        if t.proxy_jump:
            gateway = self._jump_chain(t.proxy_jump)
        elif t.proxy_command:
            gateway = t.proxy_command
        else:
            sock = kwargs["sock"] = open_socket(t)
        conn = self._strict(t.conn_host, gateway, kwargs, user=t.user, port=t.port)
        opened = False
        try:
            conn.open()
            conn.transport.set_keepalive(KEEPALIVE_S)
            opened = True
            return conn
        finally:
            if not opened:
                # Connection.close() is a no-op after a failed open: it would leak thread + socket.
                stop_transport(conn.client.get_transport())
                conn.client.close()
                if sock is not None:
                    sock.close()

    def _connect_kwargs(self):
        timeout = self.target.connect_timeout
        return {"banner_timeout": timeout, "auth_timeout": timeout}

    def _strict(self, host, gateway, connect_kwargs, **fields):
        """A fabric Connection that checks host keys against known_hosts and refuses unknown ones.

        Fabric's defaults are AutoAddPolicy and no known_hosts; both are replaced before open().
        """
        from fabric import Connection
        t = self.target
        # fabric's connect_timeout also bounds the key exchange: past the banner wait, so a silent
        # port ends as "no banner" instead of racing into "No existing session".
        conn = Connection(host, config=self._config, gateway=gateway, forward_agent=False,
                          connect_timeout=math.ceil(t.connect_timeout + NEGOTIATION_MARGIN_S),
                          connect_kwargs=connect_kwargs, **fields)
        if os.path.exists(t.known_hosts):
            conn.client.load_system_host_keys(t.known_hosts)
        conn.client.set_missing_host_key_policy(_RejectAndRecord())
        return conn

    def _jump_chain(self, proxy_jump):
        """Strict connections for ProxyJump "a,b" (a first): each hop's own ssh_config entry
        applies, as with OpenSSH, but its host key is checked like the device's."""
        gateway = False
        for hop in [h.strip() for h in proxy_jump.split(",") if h.strip()]:
            gateway = self._strict(hop, gateway, self._connect_kwargs())
        return gateway

    def is_active(self):
        return self._conn is not None and self._conn.is_connected

    def close(self):
        conn, self._conn = self._conn, None
        while conn is not None:   # the device's connection, then each jump host's
            try:
                if conn._sftp is not None:   # closed while paramiko's thread still runs
                    with contextlib.suppress(Exception):
                        conn._sftp.close()
                    conn._sftp = None
                stop_transport(conn.client.get_transport())
                conn.close()
            finally:
                conn.client.close()
            conn = conn.gateway if not isinstance(conn.gateway, (str, bool)) else None

    def _sftp(self):
        return self._connection().sftp()

    # -- commands --------------------------------------------------------------------------
    def run(self, argv, timeout, env=None):
        check_env(self.name, env)
        cmd = command_line(argv, env)
        start = time.monotonic()
        with self._mapped("command %s" % argv[0]):
            r = self._connection().run(cmd, timeout=timeout, in_stream=False, hide=True, warn=True,
                                       pty=False)
        if timeout and time.monotonic() - start >= timeout and r.exited != 0:
            # invoke raises CommandTimedOut only once its timer thread has finished killing the
            # command; when the channel closes first it returns as if the command had ended
            # (seen under load). A command killed at its timeout is a timeout either way.
            raise CommandTimeout(self.name, "command %s did not finish within %gs on %s (the "
                                            "remote process may still be running)"
                                 % (argv[0], timeout, self.target.host))
        return Result(r.exited, r.stdout, r.stderr)

    MAX_OUTPUT = 1 << 20   # what run_input keeps of each stream (its commands print a few lines)

    def run_input(self, argv, data, timeout, env=None):
        """One exec channel: argv, data on its stdin, stdout and stderr read to the end."""
        check_env(self.name, env)
        cmd = command_line(argv, env)
        deadline = time.monotonic() + timeout
        with self._mapped("command %s" % argv[0]):
            chan = self._connection().client.get_transport().open_session(
                timeout=self.target.connect_timeout)
            try:
                chan.settimeout(max(0.1, deadline - time.monotonic()))
                chan.exec_command(cmd)
                chan.sendall(data)
                chan.shutdown_write()
                out, err = bytearray(), bytearray()
                while True:
                    chan.settimeout(max(0.0, deadline - time.monotonic()) or 0.001)
                    try:
                        if chan.recv_stderr_ready():
                            err += chan.recv_stderr(65536)[:max(0, self.MAX_OUTPUT - len(err))]
                            continue
                        chunk = chan.recv(65536)
                    except socket.timeout:
                        raise CommandTimeout(self.name, "%s did not finish within %gs on %s:%d "
                                             "(the remote process may still be running)" % (
                                                 argv[0], timeout, self.target.host,
                                                 self.target.port)) from None
                    if not chunk:
                        break
                    out += chunk[:max(0, self.MAX_OUTPUT - len(out))]
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)[:max(0, self.MAX_OUTPUT - len(err))]
                code = chan.recv_exit_status()
            finally:
                chan.close()
        return Result(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    # -- files -----------------------------------------------------------------------------
    def expand(self, remote_path):
        path = str(remote_path)
        if path == "~" or path.startswith("~/"):
            if self._home is None:
                with self._mapped("find the home folder"):
                    self._home = self._sftp().normalize(".")
            return self._home + path[1:]
        return path

    def put(self, local_path, remote_path):
        dest = self.expand(remote_path)
        tmp = posixpath.join(posixpath.dirname(dest), ".tmp-%s" % uuid.uuid4().hex)
        with self._mapped("upload %s -> %s" % (local_path, dest)):
            sftp = self._sftp()
            try:
                sftp.put(str(local_path), tmp, confirm=True)
                sftp.chmod(tmp, os.stat(local_path).st_mode & 0o777)
                # posix-rename replaces dest atomically: a present name always has full content.
                sftp.posix_rename(tmp, dest)
            except BaseException:
                with contextlib.suppress(Exception):
                    sftp.remove(tmp)
                raise

    def get(self, remote_path, local_path):
        src = self.expand(remote_path)
        tmp = "%s.tmp-%s" % (local_path, uuid.uuid4().hex)
        with self._mapped("download %s" % src):
            try:
                # prefetch=False: prefetching downloads can stall forever (paramiko#926).
                self._sftp().get(src, tmp, prefetch=False)
                os.replace(tmp, local_path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def exists(self, remote_path):
        path = self.expand(remote_path)
        with self._mapped("stat %s" % path):
            try:
                self._sftp().stat(path)
                return True
            except FileNotFoundError:
                return False

    def file_size(self, remote_path):
        path = self.expand(remote_path)
        with self._mapped("stat %s" % path):
            try:
                return self._sftp().stat(path).st_size   # one SFTP request, no process started
            except FileNotFoundError:
                return None

    def read_bytes(self, remote_path, max_bytes, offset=0):
        path = self.expand(remote_path)
        with self._mapped("read %s" % path):
            sftp = self._sftp()
            try:
                size = sftp.stat(path).st_size
                if size - offset > max_bytes:
                    raise FileTooLarge(self.name, path, size - offset, max_bytes)
                with sftp.open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(max(0, size - offset))
            except FileNotFoundError:
                return None

    def listdir(self, remote_path):
        path = self.expand(remote_path)
        with self._mapped("list %s" % path):
            return sorted(self._sftp().listdir(path))

    def mkdirs(self, remote_path):
        path = self.expand(remote_path)
        with self._mapped("create folder %s" % path):
            sftp = self._sftp()
            # Up from the folder to the first that exists (a new run's folder: three looks, not
            # one per path component), then down, making each missing one FOLDER_MODE.
            missing = []
            current = posixpath.normpath(path)
            while current not in ("/", ".", ""):
                try:
                    sftp.stat(current)
                    break
                except FileNotFoundError:
                    missing.append(current)
                    current = posixpath.dirname(current)
            for folder in reversed(missing):
                try:
                    sftp.mkdir(folder, mode=FOLDER_MODE)   # whatever the server's umask:
                    sftp.chmod(folder, FOLDER_MODE)
                except OSError:
                    sftp.stat(folder)  # made meanwhile by someone else: fine; else raise
