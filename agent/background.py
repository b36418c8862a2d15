"""Background load beside a case (runtime.background): busy CPU cores, or a shell command.

A deployed model shares its device with other work (a camera pipeline, a network stack). The
worker starts the load before the backend loads and warms up, and stops it once the measurement
ends; the result's environment.background says what ran and what it really consumed.

  start(spec, log_dir, name) -> a Background (None for no load), once the load runs
  Background.stop() -> the record (JSON types only); never raises

Kinds (schema.background_problems checks the shape):
  {"kind": "cpu", "percent": P, "cores": N}: N forked processes, each busy P% of every 10 ms
    period (spinning) and asleep the rest, each pinned to one CPU: the first N of the CPUs the
    agent may use (the supervisor's affinity mask, not the case's own runtime.affinity), from
    the lowest, one each, round again when N is more. So "cpu 50% x 2" always means two given
    cores half busy, and N = the core count puts a load beside the case on whichever core it
    runs (left to the scheduler, two loads could share one core, or leave the case's alone).
    Where pinning fails (no sched_setaffinity, a cpuset) a process runs unpinned; the record
    says which. Each dies with the worker (PR_SET_PDEATHSIG, and it checks its parent every
    period) and stays in the worker's process group, so the supervisor's kill of that group on
    a timeout takes them too.
  {"kind": "command", "command": "..."}: `/bin/sh -c COMMAND` in a session and process group of
    its own, stdout and stderr into a capped log file (LOG_CAP_BYTES, rotated once to .1). A
    keeper process (a fork of the worker, in a session of its own as well) is the command's
    parent: it writes the log and, when the worker closes its pipe (stop(), or the worker's
    death, even by SIGKILL), kills the command's whole group (SIGTERM, SIGKILL after
    TERM_GRACE_S), reaps it, reports and exits. So nothing the command started outlives the
    case, grandchildren included, whatever kills the worker.

Stdlib only, Python 3.6.
"""

import errno
import gc
import json
import os
import select
import signal
import subprocess
import sys
import time

PERIOD_S = 0.01          # cpu: the duty cycle's period
START_TIMEOUT_S = 10.0   # how long start() waits for the load to say it runs
EARLY_EXIT_S = 0.2       # command: a non-zero exit this soon after the spawn fails the case
TERM_GRACE_S = 2.0       # SIGTERM, then SIGKILL after this
LOG_CAP_BYTES = 1 << 20  # command log: at most this per file (the log, then log.1)
TAIL_BYTES = 2048        # the log's tail kept in the record
SUPERVISOR_ENV = "BENCHFLEET_SUPERVISOR_PID"   # runner.SUPERVISOR_ENV (not imported: a cycle)


class BackgroundError(Exception):
    """The background load could not be started (the case fails with this reason)."""


def start(spec, log_dir=None, name="background"):
    """Start the load `spec` describes and return once it runs: a Background, or None for no
    load (spec None or kind "none"). A command's log is LOG_DIR/NAME.log (a temporary file,
    removed at stop, when log_dir is None). Raises BackgroundError when the load cannot start,
    or when a command exits non-zero within EARLY_EXIT_S (naming it, its code, its log's end)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BackgroundError("runtime.background must be an object, got %r" % (spec,))
    kind = spec.get("kind")
    if kind in (None, "none"):
        return None
    if not hasattr(os, "fork"):
        raise BackgroundError("background load needs os.fork (not available on this platform)")
    if kind == "cpu":
        percent, cores = spec.get("percent"), spec.get("cores")
        if (not isinstance(percent, (int, float)) or isinstance(percent, bool)
                or not 1 <= percent <= 100):
            raise BackgroundError("background cpu: percent must be 1 to 100, got %r" % (percent,))
        if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= 1024:
            raise BackgroundError("background cpu: cores must be 1 to 1024, got %r" % (cores,))
        load = CpuLoad(percent, cores)
    elif kind == "command":
        command = spec.get("command")
        if not isinstance(command, str) or not command.strip() or "\x00" in command:
            raise BackgroundError("background command: a non-empty command line is needed, "
                                  "got %r" % (command,))
        load = CommandLoad(command, log_dir, name)
    else:
        raise BackgroundError("unknown background kind %r (none, cpu or command)" % (kind,))
    load.start()
    return load


def stop(load):
    """load.stop() for a Background, None for None (no load ran)."""
    return None if load is None else load.stop()


# --- helpers shared by the children ---------------------------------------------------------

def _pdeathsig_setter():
    """A function that asks Linux to SIGKILL the calling process when its parent dies
    (PR_SET_PDEATHSIG), or None. Made in the parent: a child only calls it (no dlopen there)."""
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        return None

    def arm():
        try:
            prctl(1, signal.SIGKILL, 0, 0, 0)
        except Exception:
            pass
    return arm


def _close_fds(keep):
    """In a fresh child: close every fd above 2 not in `keep` (a copy of a pipe's write end the
    worker holds would hide EOF from its reader; the agent's lock fd stays with the worker)."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        fds = range(3, 1024)
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _child_setup(parent, arm, keep):
    """The first steps of a forked child: default signals, no cyclic GC (it could finalize a
    file object of the worker's and close an fd of ours), die with the parent, fds closed."""
    gc.disable()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    if arm is not None:
        arm()
    if os.getppid() != parent:   # the parent died before the request was made
        os._exit(0)
    _close_fds(keep)


def _proc_cpu_s(pid):
    """CPU seconds (user + system) of a live process from /proc/<pid>/stat, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, IOError, ValueError, IndexError):
        return None


def _reap(pid, deadline):
    """(status, rusage) of child `pid`, waiting until `deadline` (monotonic); (None, None) if it
    has not exited by then or is not our child."""
    delay = 0.001
    while True:
        try:
            got, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            return None, None
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            return None, None
        if got:
            return status, usage
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _usable_cpus():
    """The CPUs the agent may use: the supervisor's affinity mask (the worker's own may be the
    case's pinning), else this process's; None where affinity is unknown."""
    get = getattr(os, "sched_getaffinity", None)
    if get is None:
        return None
    sup = os.environ.get(SUPERVISOR_ENV) or ""
    for pid in ([int(sup)] if sup.isdigit() else []) + [0]:
        try:
            return sorted(get(pid))
        except (OSError, ValueError):
            continue
    return None


def _status_text(status):
    """(exit_code, signal name) of a wait status."""
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return None, _signal_name(os.WTERMSIG(status))
    return os.WEXITSTATUS(status), None


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except (ValueError, AttributeError):
        return "signal %d" % signum


def _plural(n, word):
    return "%s %s%s" % (n, word, "" if n == 1 else "s")


class Background(object):
    kind = None

    def __init__(self):
        self.started_at = self.stopped_at = None
        self._record = None

    def stop(self):
        """The record of what ran (JSON types); kills and reaps everything; never raises."""
        if self._record is not None:
            return self._record
        record = {"kind": self.kind, "started_at": self.started_at}
        try:
            record.update(self._stop())
        except Exception as exc:   # a record, never an exception: the case's result counts
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
            try:
                self._kill_all()
            except Exception:
                pass
        record.setdefault("stopped_at", self.stopped_at or time.time())
        self._record = record
        return record

    def _stop(self):
        raise NotImplementedError

    def _kill_all(self):
        raise NotImplementedError


# --- cpu ------------------------------------------------------------------------------------

def _duty_cycle(percent, parent, clock=time.monotonic, sleep=time.sleep):
    """Busy `percent` of every PERIOD_S, asleep the rest, until the parent is gone."""
    busy = PERIOD_S * percent / 100.0
    getppid = os.getppid
    t = clock()
    while True:
        end = t + busy
        while clock() < end:
            pass
        t += PERIOD_S
        now = clock()
        if t > now:
            sleep(t - now)
        else:
            t = now   # behind (preempted): the next period starts now, no catch-up burst
        if getppid() != parent:
            os._exit(0)


class CpuLoad(Background):
    kind = "cpu"

    def __init__(self, percent, cores):
        Background.__init__(self)
        self.percent, self.cores = percent, cores
        self.pids = []
        self.cpus = None     # the CPUs the agent may use
        self.unpinned = 0    # processes whose sched_setaffinity failed (they run unpinned)
        self._mono0 = None

    def start(self):
        arm = _pdeathsig_setter()
        self.cpus = _usable_cpus()
        parent = os.getpid()
        ready_r, ready_w = os.pipe()
        mono0 = time.monotonic()   # the share's wall time counts the start-up the CPU time does
        try:
            for cpu in self._planned():
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    self._child(parent, arm, ready_w, cpu)   # never returns
                self.pids.append(pid)
            os.close(ready_w)
            ready_w = None
            got = self._await_ready(ready_r)
        except BaseException:
            self._kill_all()
            raise
        finally:
            os.close(ready_r)
            if ready_w is not None:
                os.close(ready_w)
        if got < self.cores:
            self._kill_all()
            raise BackgroundError("background cpu load: %d of %d processes started within %g s"
                                  % (got, self.cores, START_TIMEOUT_S))
        self.started_at, self._mono0 = time.time(), mono0

    def _planned(self):
        """Each process's CPU: the usable ones from the lowest, round again past the last."""
        return [self.cpus[i % len(self.cpus)] if self.cpus else None
                for i in range(self.cores)]

    def _child(self, parent, arm, ready_w, cpu):
        try:
            _child_setup(parent, arm, (ready_w,))
            word = b"0"   # started, not pinned
            if cpu is not None:
                try:
                    os.sched_setaffinity(0, [cpu])
                    word = b"1"
                except OSError:
                    pass
            os.write(ready_w, word)
            os.close(ready_w)
            _duty_cycle(self.percent, parent)
        finally:
            os._exit(0)

    def _await_ready(self, fd):
        """How many processes said they run (a byte each: b"1" pinned, b"0" not)."""
        got, deadline = 0, time.monotonic() + START_TIMEOUT_S
        while got < self.cores:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                break
            data = os.read(fd, 4096)
            if not data:
                break   # every write end closed: the children that will say so have
            got += len(data)
            self.unpinned += data.count(b"0")
        return got

    def _kill_all(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in self.pids:
            _reap(pid, time.monotonic() + 5.0)

    def _stop(self):
        self.stopped_at = time.time()
        wall = time.monotonic() - self._mono0 if self._mono0 is not None else None
        seen = dict((pid, _proc_cpu_s(pid)) for pid in self.pids)   # fallback to rusage
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + TERM_GRACE_S
        each, source, left = [], "rusage", []
        for pid in self.pids:
            status, usage = _reap(pid, deadline)
            if status is None:
                left.append(pid)
            each.append(usage)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for i, pid in enumerate(self.pids):
            if pid in left:
                each[i] = _reap(pid, time.monotonic() + 5.0)[1]
        cpu_each = []
        for pid, usage in zip(self.pids, each):
            if usage is not None:
                cpu_each.append(round(usage.ru_utime + usage.ru_stime, 4))
            else:
                cpu_each.append(seen.get(pid))
                source = "proc"
        known = [c for c in cpu_each if c is not None]
        cpu_s = round(sum(known), 4) if len(known) == len(cpu_each) else None
        share = (cpu_s / (wall * self.cores)) if cpu_s is not None and wall else None
        record = {
            "percent": self.percent, "cores": self.cores, "cpus": self._planned(),
            "usable_cpus": self.cpus, "pinned": self.cpus is not None and not self.unpinned,
            "unpinned": self.unpinned if self.cpus is not None else self.cores,
            "period_ms": PERIOD_S * 1000.0, "pids": list(self.pids),
            "stopped_at": self.stopped_at, "duration_s": round(wall, 4) if wall else wall,
            "cpu_s": cpu_s, "cpu_s_each": cpu_each, "measured_by": source,
            "achieved_percent": round(share * 100.0, 2) if share is not None else None,
        }
        record["summary"] = ("achieved %.0f%% of %s (asked %g%%)"
                             % (share * 100.0, _plural(self.cores, "core"), self.percent)
                             if share is not None else "CPU use not measured")
        if left:
            record["killed"] = left   # did not end on SIGTERM within TERM_GRACE_S
        return record


# --- command --------------------------------------------------------------------------------

def _send(fd, **event):
    try:
        os.write(fd, (json.dumps(event, sort_keys=True) + "\n").encode("utf-8"))
    except OSError:
        pass   # the worker is gone: the clean-up goes on regardless


class _Log(object):
    """The command's output into PATH, at most LOG_CAP_BYTES a file: past that, PATH becomes
    PATH.1 (an older .1 is dropped) and PATH starts again, so the tail is always kept."""

    def __init__(self, path, cap=LOG_CAP_BYTES):
        self.path, self.cap = path, cap
        self.total = self.dropped = self.size = 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def write(self, data):
        self.total += len(data)
        while data:
            if self.size >= self.cap:
                os.close(self.fd)
                if os.path.exists(self.path + ".1"):
                    self.dropped += os.path.getsize(self.path + ".1")
                os.rename(self.path, self.path + ".1")
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                                  0o644)
                self.size = 0
            part = data[:self.cap - self.size]
            os.write(self.fd, part)
            self.size += len(part)
            data = data[len(part):]


def _peek_exit(pid):
    """The wait status of child `pid` if it has exited, without reaping it (the zombie keeps its
    pid, so its process group id can never be reused before the group is killed); else None."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return None
    try:
        info = waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    except OSError:
        return None
    if info is None or not info.si_pid:
        return None
    if info.si_code == os.CLD_EXITED:
        return {"exit_code": info.si_status, "exit_signal": None}
    return {"exit_code": None, "exit_signal": _signal_name(info.si_status)}


def _keeper(command, control_r, status_w, log_path, arm):
    """The command's parent (a fork of the worker, a session of its own): spawn, log, and on EOF
    of `control_r` (stop() or the worker's death) kill the command's group, reap, report."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        log = _Log(log_path)
    except OSError as exc:
        _send(status_w, event="error", error="cannot write its log %s: %s" % (log_path, exc))
        return
    out_r, out_w = os.pipe()
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    try:   # the command's exit wakes the select below at once
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        idle_s = 5.0
    except (ValueError, OSError):
        idle_s = 0.05   # no wake-up: poll
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL,
                                stdout=out_w, stderr=out_w, close_fds=True,
                                start_new_session=True, preexec_fn=arm)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        _send(status_w, event="error", error="cannot run /bin/sh -c %r: %s" % (command, exc))
        return
    os.close(out_w)
    pid = proc.pid
    _send(status_w, event="spawned", pid=pid, t=time.time())
    exited = None
    reading = [control_r, out_r, wake_r]

    def pump(timeout):
        """One select round: log output, note the command's exit; False on control EOF."""
        try:
            ready, _, _ = select.select(reading, [], [], timeout)
        except (OSError, ValueError):
            ready = []
        go_on = True
        for fd in ready:
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except OSError:
                    pass
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if fd == out_r:
                if data:
                    try:
                        log.write(data)
                    except OSError:
                        pass   # a full disk loses the log, never the clean-up
                else:
                    reading.remove(out_r)
            elif not data:   # control: only EOF is ever sent
                reading.remove(control_r)
                go_on = False
        return go_on

    while True:
        if exited is None:
            exited = _peek_exit(pid)
            if exited is not None:
                _send(status_w, event="exited", t=time.time(), **exited)
        if control_r not in reading or not pump(idle_s):
            break
    stop_t = time.time()
    running = exited is None and _peek_exit(pid) is None
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        pass   # the whole group is gone already
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline and not (_peek_exit(pid) and out_r not in reading):
        pump(min(0.05, max(0.0, deadline - time.monotonic())))
    termed = _peek_exit(pid) is not None
    try:   # whatever of the group is left: a child that ignores SIGTERM or closed its output
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    status, usage = _reap(pid, time.monotonic() + 5.0)
    drain_end = time.monotonic() + 0.5
    while out_r in reading and time.monotonic() < drain_end:
        pump(0.05)
    sent = ("SIGTERM" if termed else "SIGKILL") if running else None
    code, sig = _status_text(status)
    _send(status_w, event="stopped", t=stop_t, running_at_stop=running, exit_code=code,
          exit_signal=sig, stop_signal=sent,
          cpu_s=round(usage.ru_utime + usage.ru_stime, 4) if usage is not None else None,
          log_bytes=log.total, log_dropped=log.dropped)


class CommandLoad(Background):
    kind = "command"

    def __init__(self, command, log_dir=None, name="background"):
        Background.__init__(self)
        self.command = command
        self.temp_log = log_dir is None
        if log_dir is None:
            import tempfile
            log_dir = tempfile.mkdtemp(prefix="benchfleet-bg.")
        self.log_path = os.path.join(log_dir, name + ".log")
        self.keeper_pid = self.pid = None
        self._control_w = self._status_r = None
        self._buf = b""
        self._events = []
        self._eof = False

    def start(self):
        arm = _pdeathsig_setter()
        parent = os.getpid()
        control_r, control_w = os.pipe()
        status_r, status_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _child_setup(parent, None, (control_r, status_w))   # outlives the worker
                _keeper(self.command, control_r, status_w, self.log_path, arm)
                code = 0
            except BaseException:
                try:
                    import traceback
                    traceback.print_exc()
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(control_r)
        os.close(status_w)
        self.keeper_pid, self._control_w, self._status_r = pid, control_w, status_r
        spawned = self._wait_event(("spawned", "error"), time.monotonic() + START_TIMEOUT_S)
        if spawned is None or spawned["event"] == "error":
            record = self.stop()
            raise BackgroundError("background command %r did not start: %s" % (
                self.command, spawned["error"] if spawned else "no word from its keeper within "
                "%g s (%s)" % (START_TIMEOUT_S, record.get("error") or "see agent.log")))
        self.pid = spawned["pid"]
        self.started_at = spawned["t"]
        left = EARLY_EXIT_S + 0.05 - (time.time() - spawned["t"])   # + the keeper's report
        ended = self._wait_event(("exited",), time.monotonic() + max(0.0, left))
        if ended is not None and (ended["exit_code"] != 0 or ended["exit_signal"]):
            record = self.stop()
            how = ("exited with code %d" % ended["exit_code"] if ended["exit_signal"] is None
                   else "was killed by %s" % ended["exit_signal"])
            tail = (record.get("log_tail") or "").strip().splitlines()[-5:]
            raise BackgroundError("background command %r %s within %g s of its start; %s" % (
                self.command, how, EARLY_EXIT_S,
                ("its log ends: %s" % " | ".join(tail)[-500:]) if tail else "its log is empty"))

    def _read_events(self, timeout):
        """Read what the keeper said within `timeout` (at least one line, EOF or the timeout)."""
        if self._eof:
            return
        try:
            ready, _, _ = select.select([self._status_r], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            ready = []
        if not ready:
            return
        data = os.read(self._status_r, 65536)
        if not data:
            self._eof = True
            return
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                self._events.append(json.loads(line.decode("utf-8")))
            except ValueError:
                pass

    def _wait_event(self, names, deadline):
        while True:
            for event in self._events:
                if event.get("event") in names:
                    return event
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                return None
            self._read_events(left)

    def _kill_all(self):
        for pid, kill in ((self.pid, os.killpg), (self.keeper_pid, os.kill)):
            if pid:
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.keeper_pid:
            _reap(self.keeper_pid, time.monotonic() + 5.0)

    def _stop(self):
        self.stopped_at = time.time()
        if self._control_w is not None:
            os.close(self._control_w)   # the keeper's signal: kill, reap, report, exit
            self._control_w = None
        done = self._wait_event(("stopped",), time.monotonic() + TERM_GRACE_S + 8.0)
        keeper_status, _ = _reap(self.keeper_pid, time.monotonic() + 2.0)
        if done is None or keeper_status is None:
            self._kill_all()
        if self._status_r is not None:
            os.close(self._status_r)
            self._status_r = None
        ended = next((e for e in self._events if e.get("event") == "exited"), None)
        record = {
            "command": self.command, "stopped_at": self.stopped_at,
            "pids": [p for p in (self.pid,) if p], "pgid": self.pid,
            "keeper_pid": self.keeper_pid,
            "duration_s": round(self.stopped_at - self.started_at, 4) if self.started_at else None,
            "running_at_stop": done.get("running_at_stop") if done else None,
            "exit_code": ended.get("exit_code") if ended else None,
            "exit_signal": ended.get("exit_signal") if ended else None,
            "ended_after_s": (round(ended["t"] - self.started_at, 4)
                              if ended and self.started_at else None),
            "stop_signal": done.get("stop_signal") if done else None,
            "cpu_s": done.get("cpu_s") if done else None,
            "log": None if self.temp_log else os.path.basename(self.log_path),
            "log_bytes": done.get("log_bytes") if done else None,
            "log_tail": _tail(self.log_path, TAIL_BYTES),
        }
        if done is None:
            record["error"] = "the keeper did not report; the group was killed with SIGKILL"
        if self.temp_log:
            for path in (self.log_path, self.log_path + ".1"):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            try:
                os.rmdir(os.path.dirname(self.log_path))
            except OSError:
                pass
        return record


def _tail(path, size):
    """The last `size` bytes of PATH (PATH.1 before it when PATH is shorter), as text."""
    data = b""
    for name in (path, path + ".1"):
        try:
            with open(name, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - (size - len(data))))
                data = f.read() + data
        except (OSError, IOError):
            pass
        if len(data) >= size:
            break
    return data[-size:].decode("utf-8", "replace")
