"""LocalTransport: the embedded default (`transport: local`): this machine, by subprocess and files."""

import os
import signal
import subprocess
import uuid
from pathlib import Path

from orchestrator.errors import CommandTimeout, FileTooLarge, TransportError
from orchestrator.transport.base import (FOLDER_MODE, Result, Transport, check_env, command_line,
                                         detached_command)


class LocalTransport(Transport):
    """The embedded default: the device is this machine, reached by subprocess and local files."""

    def expand(self, remote_path):
        return os.path.expanduser(str(remote_path))

    def run(self, argv, timeout, env=None):
        return self.run_input(argv, None, timeout, env)

    def run_input(self, argv, data, timeout, env=None):
        """argv with data on its stdin (None: /dev/null)."""
        check_env(self.name, env)
        full_env = dict(os.environ, **{k: str(v) for k, v in (env or {}).items()})
        stdin = subprocess.DEVNULL if data is None else subprocess.PIPE
        try:
            # A session of its own so a timeout kills the whole group, like a remote hang-up would.
            proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=full_env, start_new_session=True)
        except OSError as exc:
            raise TransportError(self.name, "cannot run %s: %s" % (argv[0], exc)) from exc
        try:
            out, err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(self.name, "command did not finish within %gs: %s"
                                 % (timeout, command_line(argv))) from None
        return Result(proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def start_detached(self, argv, cwd, log_path, exit_path, env=None):
        check_env(self.name, env)
        inner = detached_command(argv, exit_path, env)
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

    def file_size(self, remote_path):
        path = self.expand(remote_path)
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TransportError(self.name, "cannot stat %s: %s" % (path, exc)) from exc

    def read_bytes(self, remote_path, max_bytes, offset=0):
        path = self.expand(remote_path)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size - offset > max_bytes:
                    raise FileTooLarge(self.name, path, size - offset, max_bytes)
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
        # os.makedirs gives only the last folder its mode: each missing one is made 0700 here.
        path = os.path.abspath(self.expand(remote_path))
        missing = []
        while not os.path.isdir(path) and path != os.path.dirname(path):
            missing.append(path)
            path = os.path.dirname(path)
        try:
            for folder in reversed(missing):
                try:
                    os.mkdir(folder, FOLDER_MODE)
                except FileExistsError:
                    if not os.path.isdir(folder):
                        raise
                    continue   # made meanwhile by someone else
                os.chmod(folder, FOLDER_MODE)   # whatever the umask
        except OSError as exc:
            raise TransportError(self.name, "cannot create %s: %s" % (remote_path, exc)) from exc
