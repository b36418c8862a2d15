"""The transport seam: how the controller runs commands and moves files on one device.

Transport is the interface; LocalTransport (subprocess + local files, `transport: local`) lives
here, SshTransport (fabric, strict host keys) in orchestrator/sshtransport.py. make_transport picks.
"""

import os
import re
import shlex
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import CommandTimeout, TransportError

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


def check_env(device_name, env):
    """Refuse env names outside ^[A-Z_][A-Z0-9_]*$ (a name is never quoted, so it must be safe)."""
    for name in env or {}:
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise TransportError(device_name, "bad environment variable name %r: names must match "
                                 "%s" % (name, ENV_NAME.pattern))


def command_line(argv, env=None):
    """One shell string for argv: every word quoted; env as `env A='v' ...` (never inline export)."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings, got %r" % (argv,))
    words = [shlex.quote(a) for a in argv]
    if env:
        # `env NAME=value cmd` keeps the value one word and out of the remote shell's parsing.
        words = ["env"] + ["%s=%s" % (k, shlex.quote(str(v))) for k, v in env.items()] + words
    return " ".join(words)


def detached_script(argv, log_path, exit_path, env=None):
    """sh script starting argv detached from the session, recording its exit code in exit_path.

    The wrapper `sh -c` writes the exit code (128+signal for a kill), so the controller can tell a
    crash or EXIT_BUSY from a dropped connection even though nothing waits for the process.
    """
    inner = "%s; echo $? > %s" % (command_line(argv, env), shlex.quote(exit_path))
    return "nohup setsid sh -c %s < /dev/null > %s 2>&1 &" % (shlex.quote(inner),
                                                               shlex.quote(log_path))


class Transport:
    """Commands and files on one device. Paths may start with ~ (the device user's home)."""

    def __init__(self, name):
        self.name = name

    # -- interface -------------------------------------------------------------------------
    def run(self, argv, timeout, env=None):
        """Run argv (no shell), return Result; raise CommandTimeout past timeout seconds."""
        raise NotImplementedError

    def put(self, local_path, remote_path):
        """Upload atomically: write remote .tmp-<random> in the same folder, then rename."""
        raise NotImplementedError

    def get(self, remote_path, local_path):
        raise NotImplementedError

    def exists(self, remote_path):
        raise NotImplementedError

    def read_bytes(self, remote_path, max_bytes, offset=0):
        """The file's bytes from offset, None if absent; TransportError if larger than max_bytes."""
        raise NotImplementedError

    def listdir(self, remote_path):
        raise NotImplementedError

    def mkdirs(self, remote_path):
        raise NotImplementedError

    def expand(self, remote_path):
        """Absolute path: a leading ~ becomes the device user's home."""
        raise NotImplementedError

    def start_detached(self, argv, cwd, log_path, exit_path, env=None):
        """Start argv in cwd detached (survives the session); stdout+stderr to log_path.

        log_path and exit_path are relative to cwd; exit_path receives the exit code.
        """
        check_env(self.name, env)
        script = "cd %s || exit 1; %s" % (shlex.quote(self.expand(cwd)),
                                  detached_script(argv, log_path, exit_path, env))
        result = self.run(["sh", "-c", script], timeout=60)
        if result.exit_code != 0:
            raise TransportError(self.name, "could not start %s: %s" % (argv[0], result.stderr.strip()))

    def close(self):
        """Drop the connection; the next call reconnects (lazily)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalTransport(Transport):
    """The embedded default: the device is this machine, reached by subprocess and local files."""

    def expand(self, remote_path):
        return os.path.expanduser(str(remote_path))

    def run(self, argv, timeout, env=None):
        check_env(self.name, env)
        full_env = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()})
        try:
            # A session of its own so a timeout kills the whole group, like a remote hang-up would.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=full_env, start_new_session=True)
        except OSError as exc:
            raise TransportError(self.name, "cannot run %s: %s" % (argv[0], exc)) from exc
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(self.name, "command did not finish within %gs: %s"
                                 % (timeout, command_line(argv))) from None
        return Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def start_detached(self, argv, cwd, log_path, exit_path, env=None):
        check_env(self.name, env)
        inner = "%s; echo $? > %s" % (command_line(argv, env), shlex.quote(exit_path))
        cwd = self.expand(cwd)
        with open(os.path.join(cwd, log_path), "ab") as log:
            # start_new_session: a Ctrl-C on the controller does not reach the agent (like nohup).
            proc = subprocess.Popen(["sh", "-c", inner], cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._reap_later(proc)

    @staticmethod
    def _reap_later(proc):
        import threading
        # Reap the wrapper so it does not linger as a zombie in the controller process.
        threading.Thread(target=proc.wait, daemon=True, name="reap-%d" % proc.pid).start()

    def put(self, local_path, remote_path):
        dest = Path(self.expand(remote_path))
        tmp = dest.parent / (".tmp-%s" % uuid.uuid4().hex)
        try:
            with open(local_path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise TransportError(self.name, "upload %s -> %s failed: %s" % (local_path, dest, exc)) from exc

    def get(self, remote_path, local_path):
        src = self.expand(remote_path)
        tmp = "%s.tmp-%s" % (local_path, uuid.uuid4().hex)
        try:
            with open(src, "rb") as inp, open(tmp, "wb") as out:
                while chunk := inp.read(1 << 20):
                    out.write(chunk)
            os.replace(tmp, local_path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise TransportError(self.name, "download %s failed: %s" % (src, exc)) from exc

    def exists(self, remote_path):
        return os.path.exists(self.expand(remote_path))

    def read_bytes(self, remote_path, max_bytes, offset=0):
        path = self.expand(remote_path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size - offset > max_bytes:
                    raise TransportError(self.name, "%s is %d bytes, more than the %d allowed"
                                         % (path, size - offset, max_bytes))
                f.seek(offset)
                return f.read(max_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(self.name, "cannot read %s: %s" % (path, exc)) from exc

    def listdir(self, remote_path):
        try:
            return sorted(os.listdir(self.expand(remote_path)))
        except OSError as exc:
            raise TransportError(self.name, "cannot list %s: %s" % (remote_path, exc)) from exc

    def mkdirs(self, remote_path):
        try:
            os.makedirs(self.expand(remote_path), exist_ok=True)
        except OSError as exc:
            raise TransportError(self.name, "cannot create %s: %s" % (remote_path, exc)) from exc


def make_transport(device, **kwargs):
    """LocalTransport for `transport: local`, else SshTransport (kwargs go to SshTransport)."""
    if getattr(device, "transport", "ssh") == "local":
        return LocalTransport(device.name)
    from orchestrator.sshtransport import SshTransport
    return SshTransport(device, **kwargs)
