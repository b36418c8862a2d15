"""The transport seam: how the controller runs commands and moves files on one device.

Transport is the interface every transport implements (local.py, ssh.py), plus the quoting rules
that every command line to a device goes through.
"""

import re
import shlex
from dataclasses import dataclass

from orchestrator.errors import TransportError

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


# Folders benchfleet creates on a device (and locally for the embedded one): the user's alone.
FOLDER_MODE = 0o700


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


def detached_command(argv, exit_path, env=None):
    """sh command running argv and recording its exit code in exit_path when it ends.

    The wrapper writes the exit code (128+signal for a kill), so the controller can tell a crash
    or EXIT_BUSY from a dropped connection even though nothing waits for the process. It runs
    under umask 077: what the agent writes (results, logs, its cache) is the device user's alone,
    whatever umask sshd or the login gives the session.
    """
    return "umask 077; %s; echo $? > %s" % (command_line(argv, env), shlex.quote(exit_path))


def detached_script(argv, cwd, log_path, exit_path, env=None):
    """sh script starting detached_command in cwd, detached from the session (survives it)."""
    inner = detached_command(argv, exit_path, env)
    return "cd %s || exit 1; nohup setsid sh -c %s < /dev/null > %s 2>&1 &" % (
        shlex.quote(cwd), shlex.quote(inner), shlex.quote(log_path))


class Transport:
    """Commands and files on one device. Paths may start with ~ (the device user's home)."""

    def __init__(self, name):
        self.name = name

    # -- interface -------------------------------------------------------------------------
    def run(self, argv, timeout, env=None):
        """Run argv (no shell), return Result; raise CommandTimeout past timeout seconds."""
        raise NotImplementedError

    def run_input(self, argv, data, timeout, env=None):
        """run() with `data` (bytes) on the command's stdin, then end of file. Transports that
        cannot raise NotImplementedError (callers fall back to separate steps)."""
        raise NotImplementedError

    def put(self, local_path, remote_path):
        """Upload atomically: write remote .tmp-<random> in the same folder, then rename."""
        raise NotImplementedError

    def get(self, remote_path, local_path):
        raise NotImplementedError

    def exists(self, remote_path):
        raise NotImplementedError

    def file_size(self, remote_path):
        """The size in bytes of the file (links followed), None if absent: one cheap look."""
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
        script = detached_script(argv, self.expand(cwd), log_path, exit_path, env)
        result = self.run(["sh", "-c", script], timeout=60)
        if result.exit_code != 0:
            raise TransportError(self.name, "could not start %s: %s" % (argv[0], result.stderr.strip()))

    def close(self):
        """Drop the connection; the next call reconnects (lazily)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
