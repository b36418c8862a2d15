"""The supervisor (`agent run JOB --out DIR`): lock, status, heartbeat, events, one worker per case.

It never loads a framework itself, so it outlives any worker that crashes or hangs and writes
that case's failed result. Progress is only ever files in DIR (see docs/PROTOCOL.md).
"""

import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import agent
from agent import fsutil, schema, worker

HEARTBEAT_S = 1.0
THERMAL_POLL_S = 2.0


class _Interrupted(Exception):
    def __init__(self, signum):
        Exception.__init__(self, signum)
        self.signum = signum


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except (ValueError, AttributeError):
        return "signal %d" % signum


def _event(out_dir, name, **fields):
    fields.update(t=time.time(), event=name)
    fsutil.append_jsonl(os.path.join(out_dir, "events.jsonl"), fields)


def _status(out_dir, state, exit_code=None, sig=None, error=None):
    fsutil.atomic_write_json(os.path.join(out_dir, "status.json"), {
        "state": state, "pid": os.getpid(), "exit_code": exit_code, "signal": sig, "error": error})


LOCK_NAME = "agent.lock"
SUPERVISOR_ENV = "BENCHFLEET_SUPERVISOR_PID"   # the worker dies when this process is gone


def acquire_lock(workdir, holder=None):
    """(fd, None) holding an exclusive flock on <workdir>/agent.lock, or (None, holder).

    `holder` (a dict: run_id, since, controller) is written into the file with our pid, so a
    run that finds the device busy can say who holds it. flock dies with the last process that
    has the file open: the supervisor passes its fd to each worker, so the lock is held for as
    long as anything of this run measures, and a crashed agent never leaves it behind.
    """
    import fcntl
    path = os.path.join(workdir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (OSError, IOError):
        found = _read_holder(fd)
        os.close(fd)
        return None, found
    os.ftruncate(fd, 0)
    info = dict(holder or {}, pid=os.getpid())
    os.write(fd, (json.dumps(info, sort_keys=True) + "\n").encode("utf-8"))
    return fd, None


def _read_holder(fd):
    """What a lock file says of its holder: the JSON written by acquire_lock, else {"pid": text}."""
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {"pid": text or "unknown"}


def lock_status(workdir):
    """{"held": bool, "holder": dict or None} for <workdir>/agent.lock (never creates it)."""
    import fcntl
    path = os.path.join(workdir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {"held": False, "holder": None}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (OSError, IOError):
            return {"held": True, "holder": _read_holder(fd)}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {"held": False, "holder": None}
    finally:
        os.close(fd)


def _die_with_parent():
    """Be killed when the parent dies (Linux PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def die_with_supervisor():
    """In a worker: be killed when the supervisor dies (Linux PR_SET_PDEATHSIG), and stop at once
    if it is already gone, so that no case measures on after the run that owns the lock died."""
    expected = os.environ.get(SUPERVISOR_ENV)
    if not expected:
        return
    _die_with_parent()   # not Linux: the supervisor's own kill paths still apply
    if str(os.getppid()) != expected:
        os._exit(schema.EXIT_INTERRUPTED)


class Heartbeat(threading.Thread):
    """Rewrites DIR/heartbeat with epoch seconds every HEARTBEAT_S: the controller's proof of life."""

    def __init__(self, out_dir):
        threading.Thread.__init__(self, name="heartbeat")
        self.daemon = True
        self.path = os.path.join(out_dir, "heartbeat")
        self.stopped = threading.Event()

    def beat(self):
        try:
            fsutil.atomic_write_text(self.path, "%.3f\n" % time.time(), fsync=False)
        except OSError as exc:
            sys.stderr.write("agent: heartbeat write failed: %s\n" % exc)

    def run(self):
        while not self.stopped.is_set():
            self.beat()
            self.stopped.wait(HEARTBEAT_S)


WORKER_MODE_ENV = "BENCHFLEET_WORKER"   # "exec": a fresh interpreter per case instead of a fork


class ForkedWorker(object):
    """A case worker forked from the supervisor: the same wait/poll/kill as subprocess.Popen.

    A fork skips what a fresh interpreter costs per case (0.1-0.3 s of CPU on this class of
    machine, more on a Pi): the interpreter start, site and the agent's imports. It is still a
    process of its own per case: the supervisor never imports a framework, so each case imports
    TensorFlow or TFLite afresh in its child, and a crash or hang stays in that child. Only the
    forking thread exists in the child (the heartbeat thread does not), signal handlers are the
    defaults again, and it leads a session of its own, as the exec'd worker does.
    """

    def __init__(self, job_path, case_id, out_dir, env):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _forked_case(job_path, case_id, out_dir, env)   # never returns
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:   # reaped elsewhere: its result file still tells
                pid, status = self.pid, 0
            if pid:
                self.returncode = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                                   else os.WEXITSTATUS(status))
        return self.returncode

    def wait(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired("agent case worker", timeout)
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, 0.05)   # as subprocess.Popen.wait does
        return self.returncode

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass


def _forked_case(job_path, case_id, out_dir, env):
    """The body of a forked worker: `agent case JOB CASE_ID --out DIR`, then os._exit."""
    code = schema.EXIT_INTERNAL
    try:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()
        os.environ.update(env)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        try:
            code = worker.run_case(job_path, case_id, out_dir)
        except (OSError, ValueError) as exc:   # as the `case` command: a usage error
            sys.stderr.write("agent: usage error: %s\n" % exc)
            code = schema.EXIT_USAGE
    except BaseException:   # noqa: B902 - nothing may return into the supervisor's code
        try:
            import traceback
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def worker_argv(job_path, case_id, out_dir):
    """(argv, extra env) that run this same agent as a case worker, from the zipapp or a tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(agent.__file__)))
    tail = ["case", job_path, case_id, "--out", out_dir]
    if os.path.isfile(root):  # agent/ lives inside agent.pyz
        return [sys.executable, root] + tail, {}
    path = os.environ.get("PYTHONPATH")
    return [sys.executable, "-m", "agent"] + tail, {
        "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _existing_result(path, nonce):
    """The valid result at `path` written for this job's nonce, else None (missing, stale, bad)."""
    try:
        doc = fsutil.read_json(path, max_bytes=schema.MAX_RESULT_BYTES)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("nonce") != nonce or schema.check_result(doc):
        return None
    return doc


def thermal_wait(cfg, baseline, root="/", sleep=time.sleep, clock=time.monotonic):
    """Cool-down per job.cooldown (every key of schema.DEFAULT_COOLDOWN): none, fixed (sleep),
    thermal (every zone within delta_c of the run-start baseline, polled, at most max_wait_s;
    no zones -> fixed seconds; then rewarm_s of busy CPU). Returns a record: settled is False
    when a zone was still above baseline + delta_c at the deadline (the case is then INVALID),
    with the zones that were (`hot`)."""
    mode = cfg["mode"]
    seconds = float(cfg["seconds"])
    record = {"mode": mode, "waited_s": 0.0, "baseline_c": baseline, "temps_c": None}
    start = clock()
    if mode == "thermal" and baseline:
        delta = float(cfg["delta_c"])
        deadline = start + float(cfg["max_wait_s"])
        while True:
            temps = worker.thermal_temps(root)
            hot = sorted(z for z, t in temps.items() if z in baseline and t > baseline[z] + delta)
            if not hot or clock() >= deadline:
                record.update(temps_c=temps, settled=not hot, delta_c=delta,
                              max_wait_s=float(cfg["max_wait_s"]))
                if hot:
                    record["hot"] = hot
                break
            sleep(min(THERMAL_POLL_S, max(0.0, deadline - clock())))
    elif mode in ("fixed", "thermal"):
        if mode == "thermal":
            record["fallback"] = "no thermal zones: fixed %g s" % seconds
        sleep(seconds)
        record["temps_c"] = worker.thermal_temps(root)
    record["waited_s"] = round(clock() - start, 3)
    if mode == "thermal":
        record["rewarm_s"] = rewarm(float(cfg.get("rewarm_s") or 0.0), clock)
    return record


def rewarm(seconds, clock=time.monotonic):
    """Keep one CPU busy for `seconds` (after a thermal wait the governor has let the clocks fall;
    the case's own warm-up then starts from a device that is awake). Returns the seconds spent."""
    start = clock()
    end = start + seconds
    x = 0
    while clock() < end:
        for i in range(1000):
            x += i
    return round(clock() - start, 3)


def cpu_busy_share(root="/", interval_s=0.5, sleep=time.sleep):
    """The share of CPU time that was not idle over `interval_s` (from /proc/stat), or None."""
    def read():
        text = fsutil.read_text(os.path.join(root, "proc/stat")) or ""
        for line in text.splitlines():
            if line.startswith("cpu "):
                try:
                    values = [int(v) for v in line.split()[1:]]
                except ValueError:
                    return None
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                return sum(values), idle
        return None
    first = read()
    sleep(interval_s)
    second = read()
    if not first or not second or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return max(0.0, min(1.0, 1.0 - float(idle) / total))


BUSY_SHARE = 0.5   # a device busier than this when a thermal run starts is not idle


def thermal_baseline(cfg, root="/", sleep=time.sleep, clock=time.monotonic):
    """The idle temperatures a thermal cool-down returns to, taken when the run starts. A device
    that is busy then (more than BUSY_SHARE of its CPU time) is not idle: wait, polling, until
    it is quiet (at most max_wait_s), then measure again. Returns (baseline, facts)."""
    baseline = worker.thermal_temps(root)
    facts = {"busy_share": cpu_busy_share(root, sleep=sleep)}
    if facts["busy_share"] is None or facts["busy_share"] <= BUSY_SHARE or not baseline:
        return baseline, facts
    deadline = clock() + float(cfg["max_wait_s"])
    share = facts["busy_share"]
    while share is not None and share > BUSY_SHARE and clock() < deadline:
        sleep(min(THERMAL_POLL_S, max(0.0, deadline - clock())))
        share = cpu_busy_share(root, sleep=sleep)
    facts.update(remeasured=True, busy_share_after=share, first_c=baseline)
    return worker.thermal_temps(root), facts


_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class DiskFull(Exception):
    """The workdir's filesystem is (nearly) full: the run stops with EXIT_DISK_FULL."""

    def __init__(self, workdir, free=None):
        if free is None:
            try:
                free = fsutil.free_bytes(workdir)
            except OSError:
                free = 0
        Exception.__init__(self, "device disk full (%s, %d MB free; a case needs %d MB): free "
                                 "space on the device, then rerun"
                           % (workdir, free // (1024 * 1024), schema.MIN_FREE_BYTES // (1024 * 1024)))


def is_disk_full(exc):
    return isinstance(exc, (OSError, IOError)) and getattr(exc, "errno", None) in _FULL_ERRNOS


def check_free_space(workdir, free_bytes=None):
    """DiskFull unless the workdir's filesystem has schema.MIN_FREE_BYTES free."""
    free = fsutil.free_bytes(workdir) if free_bytes is None else free_bytes
    if free < schema.MIN_FREE_BYTES:
        raise DiskFull(workdir, free)


class Reserve(object):
    """RESERVE_BYTES written at start and freed when the disk fills, so that the last status,
    events, agent.log line and exit-code file can still be written."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, ".reserve")
        try:
            with open(self.path, "wb") as f:
                f.write(b"\0" * schema.RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        except (OSError, IOError):
            self.release()

    def release(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _supervisor_result(job, case, out_dir, substatus, reason):
    doc = worker.base_result(job, case, "failed", substatus, reason)
    return worker.write_result(out_dir, doc)


class Runner(object):
    """One `agent run`: holds the job, the out folder and the live worker (to kill on a signal)."""

    def __init__(self, job_path, job, out_dir, workdir=None, lock_fd=None):
        self.job_path, self.job, self.out_dir = job_path, job, out_dir
        self.workdir = workdir or out_dir
        self.lock_fd = lock_fd   # passed to every worker: the lock lives as long as they do
        self.proc = None

    def run_worker(self, case, cooldown):
        """Run one case in a child process; return its result document (written either way)."""
        case_id = case["case_id"]
        path = os.path.join(self.out_dir, case_id + ".json")
        if os.path.exists(path):
            os.unlink(path)  # a stale file (other nonce) must never pass for this run's result
        extra = {worker.COOLDOWN_ENV: json.dumps(cooldown), SUPERVISOR_ENV: str(os.getpid())}
        timeout = float(case["settings"]["case_timeout_s"])
        # Own session: a timeout kills the worker's whole process group (framework helpers too).
        # The lock's fd goes with it (a fork inherits it; an exec'd worker gets it passed).
        if hasattr(os, "fork") and os.environ.get(WORKER_MODE_ENV) != "exec":
            self.proc = ForkedWorker(self.job_path, case_id, self.out_dir, extra)
        else:
            argv, env_extra = worker_argv(self.job_path, case_id, self.out_dir)
            env = dict(os.environ, **env_extra)
            env.update(extra)
            fds = (self.lock_fd,) if self.lock_fd is not None else ()
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                         start_new_session=True, pass_fds=fds)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_worker()
            return _supervisor_result(self.job, case, self.out_dir, "timeout",
                                      "case ran past case_timeout_s=%g s; worker killed" % timeout)
        except BaseException:  # SIGTERM/SIGINT reach us here: the worker must not outlive us
            self.kill_worker()
            raise
        finally:
            _kill_group(self.proc.pid)   # anything the worker started and left behind
            self.proc = None
        doc = _existing_result(path, self.job["nonce"])
        if doc is not None:
            return doc
        check_free_space(self.workdir)  # a worker that died on a full disk: say so, not rc
        if rc < 0:
            return _supervisor_result(self.job, case, self.out_dir, "crashed",
                                      "worker killed by %s" % _signal_name(-rc))
        return _supervisor_result(self.job, case, self.out_dir, "error",
                                  "worker exited with code %d without a result (see agent.log)" % rc)

    def kill_worker(self):
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait()

    def run_cases(self):
        cases, cfg, out = self.job["cases"], self.job["cooldown"], self.out_dir
        root = fsutil.sys_root()
        baseline, facts = thermal_baseline(cfg, root) if cfg["mode"] == "thermal" else ({}, {})
        idle = IdleMeter(cases)
        ran_before = False
        for index, case in enumerate(cases):
            info = {"case_id": case["case_id"], "label": case.get("label"), "index": index,
                    "total": len(cases)}
            done = _existing_result(os.path.join(out, case["case_id"] + ".json"), self.job["nonce"])
            if done is not None:  # resume: this run already measured it
                _event(out, "case_end", status=done["status"], p50_ms=_p50(done), resumed=True, **info)
                continue
            cooldown = {"mode": cfg["mode"], "waited_s": 0.0, "first": True}
            if ran_before and cfg["mode"] != "none":
                idle.start()
                try:
                    cooldown = thermal_wait(cfg, baseline, root)
                finally:
                    cooldown["idle_power_w"] = idle.stop()
                _event(out, "cooldown", case_id=case["case_id"], waited_s=cooldown["waited_s"])
            elif not ran_before and facts:
                cooldown["baseline"] = facts
            check_free_space(self.workdir)
            _event(out, "case_start", **info)
            doc = self.run_worker(case, cooldown)
            ran_before = True
            _event(out, "case_end", status=doc["status"], p50_ms=_p50(doc), **info)


class IdleMeter(object):
    """Idle power sampled during each cool-down (docs/METHOD.md "Telemetry and energy"): the
    device's power sources, read by a sampler while the supervisor waits. Nothing runs on a
    device without a power source or when no case asks for telemetry (interval_ms 0).

    The sampler runs in a child process of its own, started for the wait and gone after it:
    the supervisor itself never loads NVML or opens sensor files, so the workers it forks
    later inherit none of that state."""

    STOP_TIMEOUT_S = 10.0

    def __init__(self, cases):
        intervals = [float(c["settings"].get("interval_ms", schema.DEFAULT_SETTINGS["interval_ms"]))
                     for c in cases]
        self.interval_ms = min([i for i in intervals if i > 0] or [0])
        self.child = None   # (pid, stop pipe write end, result pipe read end)

    def start(self):
        if not self.interval_ms or not hasattr(os, "fork"):
            return
        try:
            stop_r, stop_w = os.pipe()
            out_r, out_w = os.pipe()
            pid = os.fork()
        except OSError as exc:   # idle power is a figure: it never costs the run
            sys.stderr.write("agent: idle power sampling unavailable: %r\n" % (exc,))
            return
        if pid == 0:   # the child: sample until the stop pipe closes, answer, leave
            code = 1
            try:
                os.close(stop_w)
                os.close(out_r)
                _die_with_parent()
                watts = _sample_idle(self.interval_ms, stop_r)
                os.write(out_w, json.dumps(watts).encode("utf-8"))
                code = 0
            except BaseException:
                pass
            finally:
                os._exit(code)
        os.close(stop_r)
        os.close(out_w)
        self.child = (pid, stop_w, out_r)

    def stop(self):
        """{source: mean watts} over the wait, or None."""
        child, self.child = self.child, None
        if child is None:
            return None
        pid, stop_w, out_r = child
        os.close(stop_w)   # the child's signal to stop sampling
        data = b""
        try:
            deadline = time.monotonic() + self.STOP_TIMEOUT_S
            while time.monotonic() < deadline:
                ready, _, _ = select.select([out_r], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                chunk = os.read(out_r, 65536)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(out_r)
            _reap(pid)
        try:
            watts = json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            watts = None
        return watts if isinstance(watts, dict) and watts else None


def _sample_idle(interval_ms, stop_fd):
    """In the idle child: the power sources sampled until stop_fd closes; {source: mean W}."""
    from agent import telemetry
    found, _ = telemetry.discover(fsutil.sys_root())
    sources = [s for s in found if s.kind in ("power", "energy", "gpu")]
    if not sources:
        return {}
    sampler = telemetry.Sampler(sources, interval_ms)
    started = time.monotonic()
    sampler.start()
    try:
        select.select([stop_fd], [], [])   # readable (EOF) once the supervisor closes it
    finally:
        sampler.stop()
    return sampler.idle_power(started, time.monotonic()) or {}


def _reap(pid, timeout_s=5.0):
    """Wait for a child; SIGKILL it if it has not gone within timeout_s."""
    from agent.background import _reap as wait_for
    status, _ = wait_for(pid, time.monotonic() + timeout_s)
    if status is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        wait_for(pid, time.monotonic() + timeout_s)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass   # already gone


def _p50(doc):
    return ((doc.get("timing") or {}).get("summary") or {}).get("p50")


def load_job(job_path):
    """(job, problems): problems are 'JOB: field: message' lines, empty when the job is usable."""
    try:
        job = fsutil.read_json(job_path)
    except (OSError, ValueError) as exc:
        return None, ["%s: cannot read job: %s" % (job_path, exc)]
    return job, ["%s: %s" % (job_path, p) for p in schema.check_job(job)]


def _on_signal(signum, frame):
    raise _Interrupted(signum)


def run_job(job_path, out_dir):
    """Run every case of job_path, writing into out_dir. Returns a schema.EXIT_* code."""
    job, problems = load_job(job_path)
    if problems:
        sys.stderr.write("\n".join(problems) + "\n")
        return schema.EXIT_USAGE
    workdir = fsutil.workdir_for_job(job_path)
    lock_fd, holder = acquire_lock(workdir, {"run_id": job["run_id"], "since": schema.utc_now(),
                                             "controller": job.get("controller") or {}})
    if lock_fd is None:
        sys.stderr.write("agent: %s is busy: agent.lock held by pid %s (run %s)\n"
                         % (workdir, holder.get("pid"), holder.get("run_id") or "unknown"))
        if os.path.isdir(out_dir):   # who holds it, for the controller to show
            fsutil.atomic_write_json(os.path.join(out_dir, "busy.json"), holder)
        return schema.EXIT_BUSY
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    reserve = Reserve(out_dir)
    runner = Runner(os.path.abspath(job_path), job, os.path.abspath(out_dir), workdir, lock_fd)
    beat = Heartbeat(out_dir)
    old = [signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)]
    code, sig, error, completed = schema.EXIT_OK, None, None, False
    try:
        _status(out_dir, "running")
        beat.beat()
        beat.start()
        _event(out_dir, "run_start", run_id=job["run_id"], pid=os.getpid(), total=len(job["cases"]))
        runner.run_cases()
        completed = True
    except _Interrupted as exc:
        runner.kill_worker()
        code, sig = schema.EXIT_INTERRUPTED, _signal_name(exc.signum)
    except DiskFull as exc:
        runner.kill_worker()
        code, error = schema.EXIT_DISK_FULL, str(exc)
    except Exception as exc:
        runner.kill_worker()
        if is_disk_full(exc):  # a write failed with ENOSPC/EDQUOT: the same class, not a bug
            code, error = schema.EXIT_DISK_FULL, "%s (%s)" % (DiskFull(workdir), exc)
        else:
            import traceback
            traceback.print_exc()
            code, error = schema.EXIT_INTERNAL, "%s: %s" % (type(exc).__name__, exc)
    finally:
        for s, handler in zip((signal.SIGTERM, signal.SIGINT), old):
            signal.signal(s, handler)
        beat.stopped.set()
        reserve.release()  # before the last writes: on a full disk they need its room
        if code == schema.EXIT_DISK_FULL:
            sys.stderr.write("agent: %s\n" % error)
        try:
            _status(out_dir, "done", code, sig, error)
            _event(out_dir, "run_end", exit_code=code, signal=sig)
            if completed:  # created last: a reader that sees it has every other file complete
                open(os.path.join(out_dir, "done"), "w").close()
        except (OSError, IOError) as exc:
            if not is_disk_full(exc):
                raise
            code = schema.EXIT_DISK_FULL  # not even the reserve's room: the exit code says it
            sys.stderr.write("agent: %s\n" % DiskFull(workdir))
        finally:
            os.close(lock_fd)
    return code
