"""Verdicts against planted faults, through the real agent (supervisor, worker, synthetic backend).

The synthetic backend's knobs plant what the verdicts must catch or let through: `phases` (fast
and slow), `jitter` (a heavy tail of rare long invokes), `drift` (latency rising over the case),
and `wait: work` (a fixed amount of computation, which a CPU hog on the same core slows down).
"""

import os
import subprocess
import sys
import time

import pytest

from agent import fsutil, schema
from agent_helpers import REPO, make_job, read_events, run_agent, synthetic_case

# Long enough for a steady p50 on a loaded 2-core machine, short enough for a unit test.
STEADY = dict(runs=300, min_duration_s=1.0, max_duration_s=20.0, warmup_runs=20)


def verdict(workdir, case):
    job_path, out = workdir(make_job([case]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == 0, proc.stderr
    doc = fsutil.read_json(os.path.join(out, case["case_id"] + ".json"))
    assert schema.check_result(doc) == [] and doc["status"] == "ok", doc.get("reason")
    return doc


def test_fast_and_slow_phases_with_a_steady_p50_are_valid(workdir):
    # `wait: sleep`: a sleeping invoke is the one CFS favours on a loaded machine (the test
    # processes share two cores), so the planted phases, not the neighbours, shape the result
    doc = verdict(workdir, synthetic_case("c-phases", ms=1.0, options={
        "phases": "2:0.75,2.8:0.25", "wait": "sleep"}, **STEADY))
    v = doc["validity"]
    assert doc["timing"]["summary"]["cv"] > 0.1   # the old CV rule called this INVALID
    assert v["status"] == "VALID", v["reasons"]
    assert v["p50_ci_rel"] < 0.01 and abs(v["drift"]) < 0.03


def test_a_quiet_case_with_rare_long_invokes_is_valid(workdir):
    doc = verdict(workdir, synthetic_case("c-tail", ms=2.0, options={
        "jitter": 0.05, "wait": "sleep"}, **STEADY))
    assert doc["validity"]["status"] == "VALID", doc["validity"]["reasons"]
    summary = doc["timing"]["summary"]
    assert summary["max"] > 1.2 * summary["p50"]   # the tail is there


def test_a_drifting_case_is_invalid_with_its_drift_figure(workdir):
    doc = verdict(workdir, synthetic_case("c-drift", ms=1.0, options={"drift": 0.2}, **STEADY))
    v = doc["validity"]
    assert v["status"] == "INVALID" and v["drift"] > 0.05, v
    assert any(r.startswith("drift +%.1f%%" % (v["drift"] * 100)) for r in v["reasons"])


def test_a_cpu_hog_started_halfway_is_invalid(workdir):
    """A busy process pinned to the case's core from the middle of the window on: the computing
    invokes take longer in the second half, and the verdict says drift. Each invoke is 10 ms of
    work, longer than a scheduler slice, so the hog lands inside nearly every invoke (with 2 ms
    invokes most run between two slices and the p50, rightly, hardly moves)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs sched_setaffinity (Linux)")
    core = sorted(os.sched_getaffinity(0))[0]
    case = synthetic_case("c-hog", ms=10.0, options={"wait": "work"}, runs=100,
                          min_duration_s=4.0, max_duration_s=30.0, warmup_runs=5)
    case["runtime"]["affinity"] = [core]
    job_path, out = workdir(make_job([case]))
    # Two hogs, both pinned (the scheduler moves unpinned neighbours off the core, not these),
    # started first and held on their stdin once ready, so that on a loaded machine an
    # interpreter's start-up does not decide when they begin.
    hog_code = ("import os, sys\nos.sched_setaffinity(0, {%d})\nprint('ready', flush=True)\n"
                "sys.stdin.read(1)\nwhile True: pass" % core)
    hogs = [subprocess.Popen([sys.executable, "-c", hog_code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE) for _ in range(2)]
    agent = None
    try:
        for hog in hogs:
            assert hog.stdout.readline() == b"ready\n"
        env = dict(os.environ, PYTHONPATH=REPO)
        agent = subprocess.Popen([sys.executable, "-m", "agent", "run", job_path, "--out", out],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 30
        while time.time() < deadline and not (
                os.path.exists(os.path.join(out, "events.jsonl")) and
                any(e["event"] == "case_start" for e in read_events(out))):
            time.sleep(0.02)
        time.sleep(2.2)   # load, warm-up and the first half of the 4 s window
        for hog in hogs:
            hog.stdin.write(b"x")
            hog.stdin.flush()
        assert agent.wait(timeout=60) == 0
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if agent is not None and agent.poll() is None:
            agent.kill()
    doc = fsutil.read_json(os.path.join(out, "c-hog.json"))
    v = doc["validity"]
    # quiet, the second half is some 3x slower; under a loaded CI machine's neighbours the first
    # half is slowed too and the drift is smaller, but still past drift_max
    assert v["status"] == "INVALID" and v["drift"] > 0.03, v
    assert any(r.startswith("drift +") for r in v["reasons"]), v["reasons"]


def test_phases_that_are_not_ms_weight_pairs_fail_the_case_with_the_fix(workdir):
    job_path, out = workdir(make_job([synthetic_case("c-bad", options={"phases": "5,6"})]))
    assert run_agent(["run", job_path, "--out", out]).returncode == 0
    doc = fsutil.read_json(os.path.join(out, "c-bad.json"))
    assert (doc["status"], doc["substatus"]) == ("failed", "bad_model")
    assert "'5' is not MS:WEIGHT (write e.g. '5:0.7,6.6:0.3')" in doc["reason"]
