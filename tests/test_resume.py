"""Sweeps that survive their controller, on real sshd devices (tests/sshlab.py) with the real CLI:
kill the controller and resume, kill each agent process in turn, a device busy with another run,
and the sweep lock. The agents are the real agent, run by the device's own Python.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import sshlab

ROOT = Path(__file__).resolve().parents[1]


def suite_file(tmp_path, name="sweep", seconds=0.6, cases=3, cooldown=0.2, spin_ms=1.0):
    """`cases` synthetic cases of about `seconds` each on every device."""
    doc = {"name": name,
           "settings": {"warmup_runs": 2, "warmup_min_s": 0.0, "runs": 20,
                        "min_duration_s": seconds, "max_duration_s": seconds + 30,
                        "case_timeout_s": seconds + 120},
           "cooldown": {"mode": "fixed", "seconds": cooldown},
           "models": [{"name": "spin%d" % i, "synthetic_ms": spin_ms + i * 0.1}
                      for i in range(cases)],
           "matrix": [{"runtime": "synthetic"}]}
    path = tmp_path / ("%s.yaml" % name)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two sshd devices of this module's own (their workdirs and locks are not shared)."""
    reason = sshlab.sshd_missing_reason()
    if reason and os.environ.get("BENCHFLEET_REQUIRE_SSHD"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("resumelab")
    os.chmod(root, 0o755)
    lab = sshlab.SshLab(root)
    try:
        lab.add("dev1")
        lab.add("dev2")
        yield lab
    finally:
        lab.stop()


def inventory(lab, tmp_path, devices=None):
    return lab.write_inventory(tmp_path / "inv.yaml", devices, python=sys.executable)


def env(tmp_path):
    return dict(os.environ, BENCHFLEET_CACHE=os.environ.get(
        "BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache"))


def cli(tmp_path, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def start_cli(tmp_path, *args):
    log = open(tmp_path / ("controller-%d.log" % time.monotonic_ns()), "w")
    return subprocess.Popen([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                            cwd=ROOT, env=env(tmp_path), stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out after %g s waiting for %s" % (timeout, what))


def the_run_dir(results):
    runs = [p for p in results.iterdir() if p.is_dir()] if results.exists() else []
    return runs[0] if len(runs) == 1 else None


def raw_count(run_dir):
    return len(list((run_dir / "raw").glob("*/*.json"))) if run_dir else 0


def device_out(dev, run_id):
    return Path(dev.workdir) / "runs" / run_id / "out"


def events(dev, run_id):
    path = device_out(dev, run_id) / "events.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def rows_of(run_dir):
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


def run_pids(run_id):
    """(pid, is_worker) of each process whose command line names this run: the agent's
    supervisor and its case worker (a fork of the supervisor, or an exec'd `agent case`)."""
    named = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                text = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % entry) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        python = os.path.basename(text.split(" ", 1)[0]).startswith("python")
        if python and "runs/%s/" % run_id in text and (" case " in text or " run " in text):
            named[int(entry)] = (parent, " case " in text)
    return [(pid, is_case or parent in named) for pid, (parent, is_case) in named.items()]


def lock_state(dev):
    from orchestrator import deploy
    path, sha = deploy.local_agent()
    res = subprocess.run([sys.executable, str(path), "lock", dev.workdir], capture_output=True,
                         text=True, timeout=30)
    return json.loads(res.stdout)


def test_killed_controller_is_resumed_with_every_case_once_and_the_devices_numbers(lab, tmp_path):
    suite = suite_file(tmp_path, cases=4)
    results = tmp_path / "results"
    inv = inventory(lab, tmp_path)
    proc = start_cli(tmp_path, "run", suite, "-i", inv, "--results-dir", results)
    try:
        run_dir = wait_for(lambda: raw_count(the_run_dir(results)) >= 2 and the_run_dir(results),
                           120, "two results fetched")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    run_id = manifest["run_id"]
    assert manifest["state"] == "running" and not (run_dir / "results.csv").exists()
    listed = cli(tmp_path, "runs", "--results-dir", results)
    assert "%s  killed" % run_id in listed.stdout, listed.stdout
    assert "finish it: benchfleet resume %s" % run_dir in listed.stdout

    resumed = cli(tmp_path, "resume", run_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run %s" % run_id in resumed.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["state"] == "finished" and manifest["resumed"][0]["state_before"] == "running"
    rows = rows_of(run_dir)
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows), rows
    assert len({(r["device"], r["case_id"]) for r in rows}) == 8        # every case once
    for dev in lab.devices:
        out = device_out(dev, run_id)
        starts = [e["case_id"] for e in events(dev, run_id) if e["event"] == "case_start"]
        assert sorted(starts) == sorted(set(starts)) and len(starts) == 4   # measured once
        assert [e["event"] for e in events(dev, run_id)].count("run_start") == 1
        for row in (r for r in rows if r["device"] == dev.name):
            device_doc = json.loads((out / (row["case_id"] + ".json")).read_text())
            kept = json.loads((run_dir / "raw" / dev.name / (row["case_id"] + ".json")).read_text())
            assert kept["timing"]["latencies_ms"] == device_doc["timing"]["latencies_ms"]
            assert float(row["p50_ms"]) == pytest.approx(device_doc["timing"]["summary"]["p50"],
                                                         abs=1e-6)
    again = cli(tmp_path, "runs", "--results-dir", results)
    assert "%s  finished" % run_id in again.stdout and "finish it" not in again.stdout


def test_resume_restarts_a_dead_agent_which_skips_what_it_measured(lab, tmp_path):
    dev = lab.devices[0]
    suite = suite_file(tmp_path, cases=3, seconds=0.8)
    results = tmp_path / "results"
    inv = inventory(lab, tmp_path, [dev])
    proc = start_cli(tmp_path, "run", suite, "-i", inv, "--results-dir", results)
    try:
        run_dir = wait_for(lambda: raw_count(the_run_dir(results)) >= 1 and the_run_dir(results),
                           120, "one result fetched")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_id = run_dir.name
    # The agent dies too (a reboot, an OOM kill): the supervisor, and with it its worker.
    status = json.loads((device_out(dev, run_id) / "status.json").read_text())
    os.kill(status["pid"], signal.SIGKILL)
    wait_for(lambda: (Path(dev.workdir) / "runs" / run_id / "agent.exit").exists(), 20,
             "the agent's exit code")
    measured = {p.name for p in device_out(dev, run_id).glob("c-*.json")}
    resumed = cli(tmp_path, "resume", run_dir)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "starting it again" in resumed.stderr
    rows = rows_of(run_dir)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    starts = [e["case_id"] for e in events(dev, run_id) if e["event"] == "case_start"]
    # what had a result was not measured again; the case the kill interrupted was
    assert not [c for c in starts if starts.count(c) > 1 and c + ".json" in measured]
    assert set(starts) == {r["case_id"] for r in rows}


def test_resume_refuses_a_run_whose_suite_changed(lab, tmp_path):
    suite = suite_file(tmp_path, cases=1, seconds=0.1)
    results = tmp_path / "results"
    inv = inventory(lab, tmp_path, [lab.devices[0]])
    done = cli(tmp_path, "run", suite, "-i", inv, "--results-dir", results)
    assert done.returncode == 0, done.stderr
    run_dir = the_run_dir(results)
    suite_file(tmp_path, cases=2, seconds=0.1)     # the same file now plans another case
    refused = cli(tmp_path, "resume", run_dir)
    assert refused.returncode == 2 and "cannot resume: the suite or inventory changed" in \
        refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    not_a_run = cli(tmp_path, "resume", tmp_path)
    assert not_a_run.returncode == 2 and "no manifest.json: not a run folder" in not_a_run.stderr


def test_sigkill_of_the_worker_or_the_supervisor_leaves_nothing_measuring(lab, tmp_path):
    dev = lab.devices[1]
    inv = inventory(lab, tmp_path, [dev])
    # 1. the worker: its case is `crashed`, the supervisor runs the next one
    results = tmp_path / "r1"
    proc = start_cli(tmp_path, "run", suite_file(tmp_path, cases=2, seconds=3), "-i", inv,
                     "--results-dir", results)
    run_dir = wait_for(lambda: the_run_dir(results), 60, "the run folder")
    worker = wait_for(lambda: [p for p, w in run_pids(run_dir.name) if w], 60, "a worker")[0]
    os.kill(worker, signal.SIGKILL)
    assert proc.wait(timeout=120) == 1
    statuses = sorted((r["status"], r["substatus"]) for r in rows_of(run_dir))
    assert statuses == [("failed", "crashed"), ("ok", "")], statuses
    assert run_pids(run_dir.name) == [] and lock_state(dev)["held"] is False
    # 2. the supervisor: its worker dies with it (no orphan measuring), the lock is free at once
    results = tmp_path / "r2"
    proc = start_cli(tmp_path, "run", suite_file(tmp_path, cases=2, seconds=30), "-i", inv,
                     "--results-dir", results)
    run_dir = wait_for(lambda: the_run_dir(results), 60, "the run folder")
    pids = wait_for(lambda: (lambda ps: ps if any(w for _, w in ps) else None)(
        run_pids(run_dir.name)), 60, "supervisor and worker")
    held = lock_state(dev)
    assert held["held"] and held["holder"]["run_id"] == run_dir.name
    assert held["holder"]["controller"]["pid"] == proc.pid
    supervisor = [p for p, w in pids if not w][0]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: run_pids(run_dir.name) == [], 10, "no process of the run left")
    assert lock_state(dev)["held"] is False
    proc.kill()
    proc.wait()


def test_a_busy_device_is_skipped_naming_its_holder_or_waited_for(lab, tmp_path):
    dev = lab.devices[0]
    inv = inventory(lab, tmp_path, [dev])
    # the holder's case outlasts the status call and two short runs (each stores its history
    # and writes report.html too)
    long_run = start_cli(tmp_path, "run", suite_file(tmp_path, "holder", cases=1, seconds=15),
                         "-i", inv, "--results-dir", tmp_path / "a")
    try:
        first = wait_for(lambda: the_run_dir(tmp_path / "a"), 60, "the first run")
        wait_for(lambda: lock_state(dev)["held"], 60, "the first run's agent")
        status = cli(tmp_path, "devices", "status", "-i", inv)
        assert "%s: busy: run %s" % (dev.name, first.name) in status.stdout, status.stdout
        other = suite_file(tmp_path, "other", cases=1, seconds=0.1)
        busy = cli(tmp_path, "run", other, "-i", inv, "--results-dir", tmp_path / "b")
        assert busy.returncode == 0, busy.stderr     # busy is not a failure
        [row] = rows_of(the_run_dir(tmp_path / "b"))
        assert row["status"] == "skipped" and "device busy: run %s" % first.name in row["reason"]
        waited = cli(tmp_path, "run", other, "-i", inv, "--results-dir", tmp_path / "c",
                     "--wait", "120")
        assert waited.returncode == 0, waited.stderr
        assert "waiting up to" in waited.stderr and "the device is free; starting" in waited.stderr
        [row] = rows_of(the_run_dir(tmp_path / "c"))
        assert row["status"] == "ok"
        # the first run held the device until its end
        assert long_run.wait(timeout=120) == 0
    finally:
        long_run.kill()
    assert "%s: free" % dev.name in cli(tmp_path, "devices", "status", "-i", inv).stdout


def test_the_sweep_lock_refuses_an_overlapping_run_of_the_same_suite(lab, tmp_path):
    inv = inventory(lab, tmp_path, [lab.devices[1]])
    suite = suite_file(tmp_path, "nightly-ish", cases=1, seconds=5)
    first = start_cli(tmp_path, "run", suite, "-i", inv, "--results-dir", tmp_path / "res")
    try:
        wait_for(lambda: the_run_dir(tmp_path / "res"), 60, "the first run")
        second = cli(tmp_path, "run", suite, "-i", inv, "--results-dir", tmp_path / "res")
        assert second.returncode == 75, second.stdout + second.stderr
        assert "suite nightly-ish is already running into" in second.stderr
        assert "pid %d" % first.pid in second.stderr
        assert len([p for p in (tmp_path / "res").iterdir() if p.is_dir()]) == 1
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()


def _sessions(ports):
    """ESTABLISHED TCP connections to any of `ports` on 127.0.0.1, from /proc/net/tcp (the
    controller's side of each SSH session)."""
    count = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and int(remote.split(":")[1], 16) in ports:
                count += 1
    return count


def test_forks_bounds_the_sessions_open_at_once_on_24_devices(tmp_path_factory, tmp_path):
    import threading
    root = tmp_path_factory.mktemp("forkslab")
    os.chmod(root, 0o755)
    big = sshlab.SshLab(root)
    try:
        for i in range(24):
            big.add("f%02d" % i)
        ports = {d.port for d in big.devices}
        inv = big.write_inventory(tmp_path / "inv.yaml", python=sys.executable)
        peak, stop = [0], threading.Event()

        def sample():
            # A count must hold for two samples 10 ms apart: a session lasts a second or more,
            # while one device's teardown can overlap the next one's connect for an instant.
            before = 0
            while not stop.is_set():
                now = _sessions(ports)
                peak[0] = max(peak[0], min(before, now))
                before = now
                time.sleep(0.01)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            done = cli(tmp_path, "run", suite_file(tmp_path, cases=1, seconds=0.3), "-i", inv,
                       "--results-dir", tmp_path / "res", "--forks", "8")
        finally:
            stop.set()
            sampler.join()
        assert done.returncode == 0, done.stdout + done.stderr
        rows = rows_of(the_run_dir(tmp_path / "res"))
        assert sorted(r["device"] for r in rows) == sorted(d.name for d in big.devices)
        assert all(r["status"] == "ok" for r in rows)
        print("peak sessions with --forks 8 on 24 devices: %d" % peak[0])
        assert 2 <= peak[0] <= 8, peak[0]   # in parallel, never past --forks
    finally:
        big.stop()


def test_a_silent_device_costs_its_connect_timeout_and_never_delays_the_others(lab, tmp_path):
    """One device accepts TCP and never says a word: its row fails after its connect timeout,
    while the reachable device's result lands as soon as it is measured."""
    import socket
    mute = socket.socket()
    mute.bind((sshlab.HOST, 0))
    mute.listen(8)
    held = []
    import threading

    def hold():
        while True:
            try:
                held.append(mute.accept()[0])
            except OSError:
                return
    threading.Thread(target=hold, daemon=True).start()
    try:
        path = inventory(lab, tmp_path, [lab.devices[0]])
        doc = yaml.safe_load(path.read_text())
        doc["devices"]["mute"] = {"host": sshlab.HOST, "port": mute.getsockname()[1],
                                  "user": "root", "connect_timeout_s": 6,
                                  "identity_file": lab.devices[0].identity_file,
                                  "known_hosts": lab.devices[0].known_hosts,
                                  "python": sys.executable}
        path.write_text(yaml.safe_dump(doc))
        results = tmp_path / "res"
        start = time.time()
        done = cli(tmp_path, "run", suite_file(tmp_path, cases=1, seconds=0.3), "-i", path,
                   "--results-dir", results)
        took = time.time() - start
    finally:
        mute.close()
        for conn in held:
            conn.close()
    assert done.returncode == 1, done.stdout + done.stderr    # a failed row, not a crash
    rows = {r["device"]: r for r in rows_of(the_run_dir(results))}
    assert rows[lab.devices[0].name]["status"] == "ok"
    assert rows["mute"]["status"] == "failed" and "no SSH banner" in rows["mute"]["reason"]
    assert "within 6 s" in rows["mute"]["reason"]
    # The good result was kept while the silent device was still being waited for...
    [kept] = (the_run_dir(results) / "raw" / lab.devices[0].name).glob("*.json")
    assert kept.stat().st_mtime - start < 6, kept.stat().st_mtime - start
    # ...and the silent device cost one connect timeout, not more (start-up and teardown aside).
    assert 6 <= took < 6 + 15, took
