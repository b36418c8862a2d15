"""File helpers of the agent: durable atomic writes, JSON lines, safe reads, the workdir rule.

Results must survive a power cut or a kill at any instant: a reader sees the old file or the
whole new one, never half of one (temp file in the same folder, fsync, os.replace, fsync folder).
"""

import json
import os
import tempfile


def _fsync_dir(folder):
    # The rename is only durable once the folder entry is on disk; some filesystems and
    # platforms (Windows) cannot open a folder, which is not worth failing a result for.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data, fsync=True):
    """Write `data` to `path` so that readers see either the old or the complete new content.

    fsync=False still renames atomically but skips the disk flush (heartbeats: a lost one is
    harmless, and flushing every second wears SD cards).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(folder)


def copy_regular_file(src, dst, max_bytes):
    """Copy the regular file `src` to `dst` (atomically, as atomic_write_bytes), at most
    max_bytes; returns the bytes copied. Raises ValueError saying why for anything else: a
    symbolic link (never followed, at src or dst: dst is replaced, not written through), not a
    regular file, or larger than max_bytes. OSError for a file that cannot be read."""
    import stat
    mode = os.lstat(src).st_mode
    if stat.S_ISLNK(mode):
        raise ValueError("a symbolic link, not a regular file")
    if not stat.S_ISREG(mode):
        raise ValueError("not a regular file")
    # O_NOFOLLOW: a link swapped in since the lstat is refused (ELOOP), not followed.
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > max_bytes:
            raise ValueError("%d bytes, more than the %d allowed" % (st.st_size, max_bytes))
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError("grew past the %d bytes allowed while read" % max_bytes)
    atomic_write_bytes(dst, data)
    return len(data)


def jsonable(value, not_finite=str):
    """`value` as plain JSON types: dict keys as str, tuples as lists, anything else as its
    str(); a NaN or infinite float becomes not_finite(value) (str by default; None where a
    number or nothing is wanted). Never raises, so a backend's odd fact never fails a result."""
    if isinstance(value, dict):
        return dict((str(k), jsonable(v, not_finite)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [jsonable(v, not_finite) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) \
            else not_finite(value)
    return str(value)


def dumps(doc):
    """JSON text of `doc`; NaN/Infinity refused because the controller rejects them anyway."""
    return json.dumps(doc, allow_nan=False, sort_keys=True)


def atomic_write_json(path, doc, fsync=True):
    """Atomically write `doc` as JSON (see atomic_write_bytes). Raises ValueError on NaN."""
    atomic_write_bytes(path, (dumps(doc) + "\n").encode("utf-8"), fsync=fsync)


def atomic_write_text(path, text, fsync=True):
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def append_jsonl(path, doc, fsync=False):
    """Append one JSON object as one line. A single write() of a short line in append mode is
    not torn by a concurrent reader; readers must still ignore a last line without newline."""
    line = (dumps(doc) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path, max_bytes=None):
    """Parsed JSON of `path`. Raises OSError (missing/unreadable) or ValueError (bad JSON, too big)."""
    with open(path, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError("%s: larger than %d bytes" % (path, max_bytes))
    return json.loads(data.decode("utf-8"))


def read_text(path, limit=65536):
    """Stripped text of a small file (sysfs, procfs), or None for any OSError or decode error."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except (OSError, IOError):
        return None
    try:
        return data.decode("utf-8", "replace").strip()
    except Exception:
        return None


def workdir_for_job(job_path):
    """The device workdir of a job: WORKDIR for WORKDIR/runs/<id>/job.json, else the job's folder.

    The lock and relative model paths hang off it, so the rule lives in one place.
    """
    folder = os.path.dirname(os.path.abspath(job_path))
    runs = os.path.dirname(folder)
    if os.path.basename(runs) == "runs":
        return os.path.dirname(runs)
    return folder


def free_bytes(path):
    """Bytes an unprivileged process may still write in path's filesystem (statvfs f_bavail)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


SYS_ROOT_ENV = "BENCHFLEET_SYS_ROOT"


def sys_root():
    """The folder under which the agent reads /sys and /proc for readiness, cool-downs and
    telemetry: "/" on a device. Tests point BENCHFLEET_SYS_ROOT at a fake tree they keep
    changing, so the real agent reads a live fake device."""
    return os.environ.get(SYS_ROOT_ENV) or "/"
