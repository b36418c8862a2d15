"""Background load beside a case (agent/background.py): real processes, no mocks."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent import background, fsutil, runner, schema
from agent_helpers import REPO, events_so_far, make_job, run_agent, synthetic_case

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; the agent's load is for Linux devices")


def _stat(pid):
    """(state, ppid, pgrp, session) of a process from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except (OSError, IOError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _alive(pid):
    """Running (a zombie waiting for its reaper is not)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _processes():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _group(pgid):
    return [p for p in _processes() if _alive(p) and (_stat(p) or (0, 0, None))[2] == pgid]


def _children(ppid):
    return [p for p in _processes() if _alive(p) and (_stat(p) or (0, None))[1] == ppid]


def _eventually(check, timeout=5.0):
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


# --- background.py alone ----------------------------------------------------------------

def test_cpu_half_of_one_core_uses_half_a_cpu_second_and_leaves_nothing():
    load = background.start({"kind": "cpu", "percent": 50, "cores": 1})
    pids = list(load.pids)
    assert len(pids) == 1 and _alive(pids[0])
    time.sleep(1.0)
    record = load.stop()
    assert 0.35 <= record["cpu_s"] <= 0.65, record
    assert record["measured_by"] == "rusage" and 0.95 <= record["duration_s"] < 2.0
    assert 35 <= record["achieved_percent"] <= 65
    assert record["summary"].startswith("achieved ") and "of 1 core (asked 50%)" in record["summary"]
    assert record["kind"] == "cpu" and record["percent"] == 50 and record["cores"] == 1
    assert record["pids"] == pids and record["pinned"] is True and record["unpinned"] == 0
    assert record["cpus"] == [min(os.sched_getaffinity(0))]   # the lowest usable core
    assert record["started_at"] <= record["stopped_at"]
    json.dumps(record, allow_nan=False)   # JSON types only
    with pytest.raises(OSError) as info:   # reaped: no process, not even a zombie
        os.kill(pids[0], 0)
    assert info.value.errno == 3   # ESRCH
    assert load.stop() is record   # a second stop changes nothing


def test_cpu_full_on_two_cores_keeps_both_busy():
    load = background.start({"kind": "cpu", "percent": 100, "cores": 2})
    time.sleep(1.0)
    record = load.stop()
    # Two processes that never sleep: on 2 shared cores each gets well past a third of its core
    # (the tests of the other engineers run beside them).
    assert len(record["cpu_s_each"]) == 2 and min(record["cpu_s_each"]) > 0.3, record
    assert record["cpu_s"] == pytest.approx(sum(record["cpu_s_each"]), abs=1e-3)
    share = record["cpu_s"] / (record["duration_s"] * 2)
    assert record["achieved_percent"] == pytest.approx(share * 100, abs=0.1)
    assert record["achieved_percent"] > 40 and "of 2 cores (asked 100%)" in record["summary"]
    assert not [p for p in record["pids"] if _stat(p) is not None]
    usable = sorted(os.sched_getaffinity(0))
    assert record["cpus"] == [usable[0], usable[1 % len(usable)]]   # one each, round again


def test_command_runs_in_its_own_group_and_stop_kills_it_grandchild_too(tmp_path):
    load = background.start({"kind": "command", "command": "echo started; sleep 30 & sleep 30"},
                            str(tmp_path), "c1.background")
    pgid = load.pid
    st = _stat(pgid)
    assert st is not None and st[2] == pgid and st[3] == pgid   # its own group and session
    assert pgid != os.getpgrp() and st[2] != os.getpgid(load.keeper_pid)
    members = _eventually(lambda: len(_group(pgid)) == 3 and _group(pgid))   # sh + two sleeps
    assert members and len(members) == 3
    record = load.stop()
    assert [p for p in members if _alive(p)] == []   # stop() returns once they are dead
    assert not _alive(load.keeper_pid)
    assert record["kind"] == "command" and record["command"].startswith("echo started")
    assert record["pids"] == [pgid] and record["pgid"] == pgid
    assert record["running_at_stop"] is True and record["stop_signal"] == "SIGTERM"
    assert record["exit_code"] is None and record["exit_signal"] is None
    assert record["log"] == "c1.background.log" and record["log_tail"] == "started\n"
    assert (tmp_path / "c1.background.log").read_text() == "started\n"
    json.dumps(record, allow_nan=False)


def test_command_that_ignores_sigterm_is_killed_after_the_grace():
    load = background.start({"kind": "command", "command": "trap '' TERM; sleep 30 & wait"})
    members = _eventually(lambda: len(_group(load.pid)) == 2 and _group(load.pid))
    started = time.monotonic()
    record = load.stop()
    assert background.TERM_GRACE_S - 0.1 <= time.monotonic() - started < 8
    assert record["stop_signal"] == "SIGKILL" and record["log"] is None   # a temporary log
    assert [p for p in members if _alive(p)] == []


def test_command_that_fails_at_once_fails_with_its_code_and_log():
    before = _children(os.getpid())
    with pytest.raises(background.BackgroundError) as info:
        background.start({"kind": "command", "command": "echo 'no camera at /dev/video0' >&2; "
                                                         "exit 3"})
    text = str(info.value)
    assert "'echo 'no camera" in text or "no camera" in text
    assert "exited with code 3 within 0.2 s" in text and "its log ends: no camera at /dev/video0" \
        in text
    assert _children(os.getpid()) == before   # the keeper is gone too


def test_command_that_ends_by_itself_later_is_recorded_not_failed():
    load = background.start({"kind": "command", "command": "sleep 0.4; echo bye; exit 5"})
    time.sleep(0.8)
    record = load.stop()
    assert record["running_at_stop"] is False and record["stop_signal"] is None
    assert record["exit_code"] == 5 and 0.3 < record["ended_after_s"] < 0.8
    assert record["log_tail"] == "bye\n"


def test_none_and_bad_specs():
    assert background.start(None) is None and background.start({"kind": "none"}) is None
    assert background.stop(None) is None
    for spec in ({"kind": "cpu", "percent": 0, "cores": 1}, {"kind": "cpu", "percent": 50},
                 {"kind": "gpu"}, {"kind": "command", "command": " "}, "cpu"):
        with pytest.raises(background.BackgroundError):
            background.start(spec)


def test_command_log_is_capped_and_keeps_its_tail(tmp_path):
    log = background._Log(str(tmp_path / "x.log"), cap=1000)
    for i in range(50):
        log.write(("line %03d " % i).encode() * 10)   # 90 bytes a write
    assert log.total == 4500
    assert os.path.getsize(str(tmp_path / "x.log")) <= 1000
    assert os.path.getsize(str(tmp_path / "x.log.1")) == 1000
    tail = background._tail(str(tmp_path / "x.log"), 2048)
    assert len(tail) == os.path.getsize(str(tmp_path / "x.log")) + 1000
    assert tail.endswith("line 049 ")


# --- through the real agent -------------------------------------------------------------

def _load_result(out_dir, case_id):
    doc = fsutil.read_json(os.path.join(out_dir, case_id + ".json"))
    assert schema.check_result(doc) == []
    return doc


# A fixed amount of computation per invoke. Not the synthetic backend's `wait: work`: that one
# calibrates its work in load(), which runs under the background load (started before load and
# warm-up), so a loaded core makes its work smaller and its p50 stays near synthetic_ms.
FIXED_WORK = '''
from agent.backends.base import Backend

BACKEND = {"name": "fixed-work", "class": "FixedWork", "formats": ["synthetic"],
           "options": {"iterations": {"kind": "int", "default": 300000, "minimum": 1}}}


class FixedWork(Backend):
    name = "fixed-work"

    def load(self):
        self.n = int(self.options["iterations"])

    def make_inputs(self, seed, count):
        return list(range(count))

    def invoke(self, x):
        total = 0
        for i in range(self.n):
            total += i
        return total

    def describe(self):
        return {"version": "1"}
'''


def _fixed_work_job(workdir, cases):
    import hashlib
    job = make_job(cases)
    folder = os.path.join(workdir.root, "backends")
    os.makedirs(folder)
    with open(os.path.join(folder, "fixed_work.py"), "w") as f:
        f.write(FIXED_WORK)
    job["backends"] = {"fixed-work": {"path": "backends/fixed_work.py", "file": "fixed_work.py",
                                      "sha256": hashlib.sha256(FIXED_WORK.encode()).hexdigest()}}
    return workdir(job)


def test_cpu_load_on_the_cases_core_slows_it_and_the_result_says_what_ran(workdir):
    # two busy processes per CPU: the case's core is shared three ways under load, so the
    # slowdown stands out even when the tests' other process shares that core in the idle case
    cores = 2 * len(os.sched_getaffinity(0))
    core = min(os.sched_getaffinity(0))
    # ~15 ms an invoke, longer than a scheduler slice: a core shared with a busy process
    # slows each invoke (a short one fits within a slice, and only its tail would grow).
    settings = dict(runs=40, warmup_runs=3, min_duration_s=0.5, warmup_min_s=0.1)
    idle = synthetic_case("c-idle", ms=None, backend="fixed-work", **settings)
    loaded = synthetic_case("c-loaded", ms=None, backend="fixed-work", **settings)
    for case in (idle, loaded):
        case["runtime"]["affinity"] = [core]
    loaded["runtime"]["background"] = {"kind": "cpu", "percent": 100, "cores": cores}
    job_path, out = _fixed_work_job(workdir, [idle, loaded])
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    a, b = _load_result(out, "c-idle"), _load_result(out, "c-loaded")
    assert a["status"] == b["status"] == "ok", (a["reason"], b["reason"])
    p50_idle, p50_loaded = a["timing"]["summary"]["p50"], b["timing"]["summary"]["p50"]
    record = b["environment"]["background"]
    print("p50 idle %.3f ms, loaded %.3f ms (x%.2f); %s"
          % (p50_idle, p50_loaded, p50_loaded / p50_idle, record))
    assert p50_loaded > 1.3 * p50_idle
    assert a["environment"]["background"] is None
    assert record["kind"] == "cpu" and record["cores"] == cores and record["percent"] == 100
    assert record["cpu_s"] > 0.3 * record["duration_s"] * len(os.sched_getaffinity(0))
    assert "of %d cores" % cores in record["summary"] or cores == 1
    assert record["started_at"] < b["timing"]["wall_start_unix"]   # before warm-up ...
    assert record["stopped_at"] >= b["timing"]["wall_end_unix"]    # ... to the end
    assert b["runtime"]["background"] == loaded["runtime"]["background"]
    assert b["environment"]["affinity"]["applied"] == [core]
    usable = sorted(os.sched_getaffinity(0))
    assert record["usable_cpus"] == usable   # the agent's CPUs, not the case's pinning
    assert record["cpus"] == [usable[i % len(usable)] for i in range(cores)]


def test_a_background_command_failing_at_once_fails_the_case(workdir):
    case = synthetic_case("c-bad")
    case["runtime"]["background"] = {"kind": "command", "command": "echo nope; exit 3"}
    job_path, out = workdir(make_job([case]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = _load_result(out, "c-bad")
    assert doc["status"] == "failed" and doc["substatus"] == "error"
    assert "background command 'echo nope; exit 3' exited with code 3" in doc["reason"]
    assert "its log ends: nope" in doc["reason"]


@pytest.mark.parametrize("mode", ["fork", "exec"])
def test_sigkill_of_the_supervisor_leaves_no_background_running(workdir, tmp_path, mode):
    pid_file = str(tmp_path / "sleep.pid")
    case = synthetic_case("c-long", ms=1.0, runs=10 ** 6, min_duration_s=120.0,
                          max_duration_s=300.0, case_timeout_s=600.0)
    case["runtime"]["background"] = {"kind": "command",
                                     "command": "echo $$ > %s; exec sleep 300" % pid_file}
    job_path, out = workdir(make_job([case]))
    env = dict(os.environ, PYTHONPATH=REPO, **{runner.WORKER_MODE_ENV: mode})
    ours = set()
    sup = subprocess.Popen([sys.executable, "-m", "agent", "run", job_path, "--out", out],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        assert _eventually(lambda: any(e["event"] == "case_start" for e in events_so_far(out))
                           and os.path.exists(pid_file) and open(pid_file).read().strip(),
                           timeout=60), "the case never started its background"
        sleep_pid = int(open(pid_file).read())
        assert _alive(sleep_pid)
        workers = _children(sup.pid)
        ours.update(workers + [sleep_pid])
        for pid in workers:
            ours.update(_children(pid))   # the keeper
        assert len(ours) >= 3, ours
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait()
        left = _eventually(lambda: not [p for p in ours if _alive(p)], timeout=5.0)
        assert left, "still running 5 s after the supervisor's SIGKILL: %s" % sorted(
            p for p in ours if _alive(p))
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        for pid in ours:   # a failed run must not leave its processes behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
