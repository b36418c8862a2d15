"""agent run, for real: a supervisor process and one worker process per case (synthetic backend)."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent import fsutil, runner, schema
from agent_helpers import REPO, make_job, read_events, run_agent, synthetic_case


def load_result(out_dir, case_id):
    doc = fsutil.read_json(os.path.join(out_dir, case_id + ".json"))
    assert schema.check_result(doc) == []
    return doc


@pytest.fixture(params=["fork", "exec"])
def worker_mode(request, monkeypatch):
    """Both ways the supervisor starts a case worker: a fork (the default) and a fresh
    interpreter (BENCHFLEET_WORKER=exec, and wherever os.fork is missing)."""
    monkeypatch.setenv(runner.WORKER_MODE_ENV, request.param)
    return request.param


def test_run_writes_valid_results_events_heartbeat_and_done(workdir, worker_mode):
    job = make_job([synthetic_case("c-a"), synthetic_case("c-b", ms=0.0),
                    synthetic_case("c-skip", options={"test_raise": "unavailable"})])
    job_path, out = workdir(job)
    started = time.time()
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    assert proc.stdout == ""
    a, b, skip = (load_result(out, c) for c in ("c-a", "c-b", "c-skip"))
    assert a["status"] == "ok" and a["timing"]["runs"] >= 50 and a["nonce"] == "n0nce"
    assert a["timing"]["summary"]["p50"] >= 0.05  # the busy-wait is inside every latency
    assert skip["status"] == "skipped" and "unavailable requested" in skip["reason"]
    assert skip["hint"] == "drop test_raise from the case options"
    events = read_events(out)
    names = [e["event"] for e in events]
    assert names == ["run_start"] + ["case_start", "case_end"] * 3 + ["run_end"]
    ends = [e for e in events if e["event"] == "case_end"]
    assert [(e["case_id"], e["index"], e["total"], e["status"]) for e in ends] == [
        ("c-a", 0, 3, "ok"), ("c-b", 1, 3, "ok"), ("c-skip", 2, 3, "skipped")]
    assert ends[0]["p50_ms"] == a["timing"]["summary"]["p50"] and ends[2]["p50_ms"] is None
    assert os.path.exists(os.path.join(out, "done"))
    status = fsutil.read_json(os.path.join(out, "status.json"))
    assert status["state"] == "done" and status["exit_code"] == 0 and status["signal"] is None
    beat = float(open(os.path.join(out, "heartbeat")).read())
    assert started - 1 <= beat <= time.time()


def test_framework_stdout_cannot_reach_results_or_stdout(workdir):
    job = make_job([synthetic_case("c-noisy", options={"test_stdout": "{\"garbage\": 1}"})])
    job_path, out = workdir(job)
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == 0 and proc.stdout == ""
    assert proc.stderr.count('{"garbage": 1}') == 2  # Python print and raw fd 1 write, both on stderr
    assert load_result(out, "c-noisy")["status"] == "ok"


def test_busy_lock_exits_3_and_names_the_holder(workdir):
    job_path, out = workdir(make_job([synthetic_case("c-a")]))
    with open(os.path.join(workdir.root, "agent.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("%d\n" % os.getpid())
        lock.flush()
        proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_BUSY
    assert "held by pid %d" % os.getpid() in proc.stderr
    assert not os.path.exists(os.path.join(out, "c-a.json"))


def test_case_timeout_kills_worker_and_next_case_runs(workdir, worker_mode):
    slow = synthetic_case("c-slow", ms=20.0, runs=100000, min_duration_s=60.0, case_timeout_s=1.5)
    job_path, out = workdir(make_job([slow, synthetic_case("c-next")]))
    started = time.time()
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == 0, proc.stderr
    assert time.time() - started < 15
    doc = load_result(out, "c-slow")
    assert (doc["status"], doc["substatus"]) == ("failed", "timeout")
    assert "case_timeout_s=1.5" in doc["reason"]
    assert load_result(out, "c-next")["status"] == "ok"


def test_crashing_worker_gives_failed_crashed_with_signal_name(workdir, worker_mode):
    job = make_job([synthetic_case("c-crash", options={"test_crash": True}), synthetic_case("c-ok")])
    job_path, out = workdir(job)
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == 0
    doc = load_result(out, "c-crash")
    assert (doc["status"], doc["substatus"]) == ("failed", "crashed")
    assert "SIGABRT" in doc["reason"]
    assert load_result(out, "c-ok")["status"] == "ok"


def test_backend_errors_become_failed_rows_with_reasons(workdir):
    job = make_job([synthetic_case("c-bad", options={"test_raise": "bad_model"}),
                    synthetic_case("c-err", options={"test_raise": "error"})])
    job_path, out = workdir(job)
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == 0
    bad, err = load_result(out, "c-bad"), load_result(out, "c-err")
    assert (bad["substatus"], err["substatus"]) == ("bad_model", "error")
    assert "bad model requested" in bad["reason"] and err["reason"].startswith("RuntimeError:")
    assert "Traceback" in proc.stderr  # a real error keeps its traceback in agent.log


def test_bad_job_exits_2_naming_the_field(workdir):
    case = synthetic_case("c-a")
    del case["settings"]["runs"]
    job_path, out = workdir(make_job([case]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_USAGE
    assert "cases[0].settings.runs: field required" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_error_is_one_line(tmp_path):
    proc = run_agent(["run", "job.json"])
    assert proc.returncode == schema.EXIT_USAGE
    assert len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr


def test_resume_keeps_results_of_same_nonce_and_reruns_stale(workdir):
    job_path, out = workdir(make_job([synthetic_case("c-a"), synthetic_case("c-b")]))
    assert run_agent(["run", job_path, "--out", out]).returncode == 0
    first_a = open(os.path.join(out, "c-a.json")).read()
    stale = json.loads(open(os.path.join(out, "c-b.json")).read())
    stale["nonce"] = "last-night"
    fsutil.atomic_write_json(os.path.join(out, "c-b.json"), stale)
    assert run_agent(["run", job_path, "--out", out]).returncode == 0
    assert open(os.path.join(out, "c-a.json")).read() == first_a
    assert load_result(out, "c-b")["nonce"] == "n0nce"
    resumed = [e for e in read_events(out) if e.get("resumed")]
    assert [e["case_id"] for e in resumed] == ["c-a"]


def test_fixed_cooldown_between_cases_is_recorded_in_next_result(workdir):
    job = make_job([synthetic_case("c-a"), synthetic_case("c-b")],
                   cooldown={"mode": "fixed", "seconds": 0.3})
    job_path, out = workdir(job)
    assert run_agent(["run", job_path, "--out", out]).returncode == 0
    assert load_result(out, "c-a")["cooldown"]["waited_s"] == 0.0  # none before the first
    waited = load_result(out, "c-b")["cooldown"]["waited_s"]
    assert 0.3 <= waited < 1.0
    assert [e["waited_s"] for e in read_events(out) if e["event"] == "cooldown"] == [waited]


def test_sigterm_kills_worker_and_exits_130(workdir, worker_mode):
    slow = synthetic_case("c-slow", ms=1.0, runs=10 ** 6, min_duration_s=60.0)
    job_path, out = workdir(make_job([slow]))
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", job_path, "--out", out], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 20
    while time.time() < deadline:
        if os.path.exists(os.path.join(out, "events.jsonl")) and any(
                e["event"] == "case_start" for e in read_events(out)):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == schema.EXIT_INTERRUPTED
    status = fsutil.read_json(os.path.join(out, "status.json"))
    assert status["signal"] == "SIGTERM" and status["exit_code"] == 130
    assert not os.path.exists(os.path.join(out, "done"))
    # the lock is free again: a new run can start at once
    fd, holder = runner.acquire_lock(workdir.root)
    assert fd is not None
    os.close(fd)


def _proc_stat(pid):
    """(parent pid, session id) of a live process, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def test_forked_worker_is_a_child_in_its_own_session_with_default_signals(workdir, worker_mode):
    slow = synthetic_case("c-slow", ms=1.0, runs=10 ** 6, min_duration_s=60.0)
    job_path, out = workdir(make_job([slow]))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", job_path, "--out", out],
                            env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline, children = time.time() + 20, []
        while time.time() < deadline and not children:
            children = [int(p) for p in os.listdir("/proc") if p.isdigit()
                        and _safe_parent(int(p)) == proc.pid]
            time.sleep(0.05)
        assert len(children) == 1, children
        child = children[0]
        parent, session = _proc_stat(child)
        assert parent == proc.pid and session == child   # its own session: killpg reaches all
        with open("/proc/%d/cmdline" % child, "rb") as f:
            cmdline = f.read().split(b"\0")
        assert (b"case" in cmdline) == (worker_mode == "exec")   # a fork keeps `run`'s argv
        assert os.readlink("/proc/%d/fd/0" % child) == os.devnull
        with open("/proc/%d/status" % child) as f:
            caught = int([l for l in f if l.startswith("SigCgt:")][0].split()[1], 16)
        assert not caught & (1 << (signal.SIGTERM - 1))   # the supervisor's handler is not kept
        os.kill(child, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = load_result(out, "c-slow")
    assert (doc["status"], doc["substatus"]) == ("failed", "crashed")
    assert "SIGTERM" in doc["reason"]


def _safe_parent(pid):
    try:
        return _proc_stat(pid)[0]
    except (OSError, ValueError, IndexError):
        return None


def _zone(root, name, milli):
    folder = os.path.join(root, "sys/class/thermal", name)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    with open(os.path.join(folder, "temp"), "w") as f:
        f.write("%d\n" % milli)


def test_thermal_cooldown_waits_until_zones_settle(tmp_path):
    root = str(tmp_path)
    _zone(root, "thermal_zone0", 60000)
    _zone(root, "thermal_zone1", 41000)
    now, temps = [0.0], iter([55000, 49000, 42500])

    def sleep(s):  # each poll, zone0 cools a bit
        now[0] += s
        _zone(root, "thermal_zone0", next(temps))
    cfg = {"mode": "thermal", "seconds": 5.0, "delta_c": 3.0, "max_wait_s": 300}
    rec = runner.thermal_wait(cfg, {"thermal_zone0": 40.0, "thermal_zone1": 40.0}, root,
                              sleep, lambda: now[0])
    assert rec["settled"] is True and rec["temps_c"]["thermal_zone0"] == 42.5
    assert rec["waited_s"] == 3 * runner.THERMAL_POLL_S


def test_thermal_cooldown_gives_up_at_max_wait(tmp_path):
    root = str(tmp_path)
    _zone(root, "thermal_zone0", 80000)
    now = [0.0]

    def sleep(s):
        now[0] += s
    cfg = {"mode": "thermal", "seconds": 5.0, "delta_c": 3.0, "max_wait_s": 7}
    rec = runner.thermal_wait(cfg, {"thermal_zone0": 40.0}, root, sleep, lambda: now[0])
    assert rec["settled"] is False and rec["waited_s"] == 7.0


def test_thermal_cooldown_without_zones_falls_back_to_fixed(tmp_path):
    slept = []
    cfg = {"mode": "thermal", "seconds": 4.0, "delta_c": 3.0, "max_wait_s": 300}
    rec = runner.thermal_wait(cfg, {}, str(tmp_path), slept.append, lambda: 0.0)
    assert slept == [4.0] and "no thermal zones" in rec["fallback"]


def test_synthetic_wait_sleep_idles_where_spin_computes(workdir):
    """`wait: sleep` (fan-out benchmarks with many simulated devices on few cores) keeps the
    latency and gives the CPU away; the default busy-waits."""
    import resource
    cpu = {}
    for wait in ("spin", "sleep"):
        options = {"wait": wait} if wait == "sleep" else {}
        case = synthetic_case("c-" + wait, ms=5.0, options=options, runs=1, min_duration_s=1.0,
                              max_duration_s=5.0)
        job_path, out = workdir(make_job([case]))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = run_agent(["run", job_path, "--out", out])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert proc.returncode == 0, proc.stderr
        doc = load_result(out, "c-" + wait)
        assert doc["status"] == "ok" and doc["timing"]["summary"]["p50"] >= 5.0
        cpu[wait] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert cpu["spin"] >= 0.8 and cpu["sleep"] < cpu["spin"] - 0.5, cpu
