"""Locks on this machine: a run's own (its folder, while a controller runs it) and the sweep lock
(one suite into one results folder at a time, so a scheduled sweep never overlaps the last one;
kept under CACHE/locks/, keyed by the suite and the results folder's absolute path).

Both are flock()s on a small file holding who took it (user, host, pid, run, since). flock dies
with its process, so a killed controller never leaves a stale lock behind: that is also how
`benchfleet runs` tells a run that is still going from one whose controller was killed.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from pathlib import Path

from agent import schema
from orchestrator.errors import SweepBusy


def controller_identity() -> dict:
    """Who runs this controller: shown to anyone who finds a device or a sweep busy."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid()}


class FileLock:
    """An exclusive flock on `path`, held until release() or the end of this process."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None

    def acquire(self, info: dict):
        """None when taken (info written in the file), else what the file says of its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            return holder
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(dict(info, since=schema.utc_now()), sort_keys=True) + "\n")
                 .encode("utf-8"))
        self.fd = fd
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def holder_of(path):
    """What holds the lock at `path` (a dict), or None when nobody does (or there is no file)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None


def _holder(fd) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        doc = json.loads(os.read(fd, 4096).decode("utf-8", "replace"))
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {}


def describe(holder: dict) -> str:
    return "%s@%s pid %s%s%s" % (holder.get("user", "?"), holder.get("host", "?"),
                                 holder.get("pid", "?"),
                                 ", run %s" % holder["run_id"] if holder.get("run_id") else "",
                                 ", since %s" % holder["since"] if holder.get("since") else "")


def sweep_lock(results_dir, suite_name: str, run_id: str | None = None) -> FileLock:
    """The sweep lock of `suite_name` into `results_dir`, taken.

    Raises:
        SweepBusy (exit 75): another controller holds it; nothing was started.
    """
    # Kept in the controller's cache, not the results folder: that holds run folders only.
    import hashlib
    from orchestrator.cache import cache_root
    where = os.path.abspath(str(results_dir))
    key = hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]
    lock = FileLock(cache_root() / "locks" / ("sweep-%s-%s.lock" % (suite_name, key)))
    try:
        holder = lock.acquire(dict(controller_identity(), run_id=run_id, suite=suite_name,
                                   results_dir=where))
    except OSError as exc:
        from orchestrator.errors import ConfigError
        raise ConfigError("cannot take the sweep lock %s: %s; check that the benchfleet cache "
                          "folder is writable (BENCHFLEET_CACHE)" % (lock.path, exc)) from None
    if holder is not None:
        raise SweepBusy("suite %s is already running into %s (%s); this run did not start. "
                        "Overlapping runs would measure on the same devices at once: wait for "
                        "it, or give this run another --results-dir"
                        % (suite_name, results_dir, describe(holder)))
    return lock


def run_lock_path(run_dir) -> Path:
    return Path(run_dir) / ".controller.lock"
