"""The executor against real agents: 2 sshd lab devices in parallel, and the local transport.

The lab's sshd runs on this machine, so a test can reach into a device's workdir directly (to
kill the agent or hold its lock) while the executor only sees it through SSH.
"""

import fcntl
import hashlib
import json
import os
import signal
import sys
import threading
import time

import pytest

import sshlab
from agent import schema
from orchestrator.deploy import build_agent_pyz

from orchestrator.execute import DeviceRun, run_device, run_devices
from orchestrator.jobs import failed_result
from orchestrator.config.inventory import Device
from orchestrator.collect import parse_result
from orchestrator.transport import make_transport
from orchestrator.transport.local import LocalTransport

SETTINGS = {"warmup_runs": 2, "warmup_min_s": 0.0, "runs": 20, "min_duration_s": 0.05,
            "max_duration_s": 5.0, "input_seed": 0, "input_pool": 1, "cv_max": 1.0,
            "case_timeout_s": 60.0}


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory):
    return build_agent_pyz(str(tmp_path_factory.mktemp("agentpkg")))


@pytest.fixture
def blob(tmp_path):
    """A content-addressed blob file: (sha256, path). The synthetic backend ignores its bytes."""
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(4096))
    return hashlib.sha256(path.read_bytes()).hexdigest(), path


def make_job(device, n=2, blob_sha=None, min_duration_s=0.05, run_id="20261122-000000-ab12"):
    cases = []
    for i in range(n):
        settings = dict(SETTINGS, min_duration_s=min_duration_s)
        cases.append({
            "case_id": "c-%010d" % i, "label": "synthetic %d" % i,
            "model": {"name": "synthetic", "variant": "busy", "format": "synthetic",
                      "sha256": blob_sha, "path": "blobs/" + blob_sha if blob_sha else None,
                      "synthetic_ms": 0.2},
            "runtime": {"backend": "synthetic", "threads": 1, "affinity": None,
                        "precision": "fp32", "options": {}},
            "settings": settings})
    return {"schema_version": schema.SCHEMA_VERSION, "kind": "benchfleet.job", "run_id": run_id,
            "nonce": os.urandom(8).hex(), "device": device.name,
            "cooldown": dict(schema.DEFAULT_COOLDOWN, mode="none", seconds=0.0), "cases": cases}


def lab_device(lab_dev, tmp_path, **overrides):
    """The lab device with a workdir of this test's own (so the first run uploads everything)."""
    return lab_dev.as_device(workdir=str(tmp_path / ("wd-" + lab_dev.name)), **overrides)


def local_device(tmp_path):
    return Device(name="local", transport="local", python=sys.executable,
                  workdir=str(tmp_path / "wd-local"))


class Events:
    def __init__(self):
        self.lock, self.seen = threading.Lock(), []

    def __call__(self, name, event):
        with self.lock:
            self.seen.append((name, event))

    def kinds(self, name):
        return [e["event"] for n, e in self.seen if n == name]


def assert_valid(outcome, job):
    assert [r.case_id for r in outcome.results] == [c["case_id"] for c in job["cases"]]
    for result in outcome.results:
        assert schema.check_result(result.to_doc()) == []
        assert result.nonce == job["nonce"]


def test_two_lab_devices_and_local_run_in_parallel_and_rerun_uploads_nothing(
        ssh_lab, tmp_path, agent_pyz, blob):
    devices = [lab_device(d, tmp_path) for d in ssh_lab.devices] + [local_device(tmp_path)]
    events = Events()

    def runs(tag):
        specs = []
        for d in devices:
            job = make_job(d, blob_sha=blob[0], run_id="20261122-000000-%s" % tag)
            specs.append(DeviceRun(d, job, {blob[0]: blob[1]}, agent_pyz, tmp_path / tag / d.name))
        return specs

    first_specs = runs("aaaa")
    first = run_devices(first_specs, max_workers=3, on_event=events, poll_interval=0.2)
    assert [o.device for o in first] == ["lab1", "lab2", "local"]
    for outcome, spec in zip(first, first_specs):
        assert outcome.error is None, outcome.error
        assert_valid(outcome, spec.job)
        assert {r.status for r in outcome.results} == {"ok"}
        assert sorted(outcome.uploads) == sorted(["agent/%s.pyz" % agent_pyz[1], "blobs/" + blob[0]])
        raw = json.loads((spec.raw_dir / (spec.job["cases"][0]["case_id"] + ".json")).read_text())
        assert raw["case_id"] == spec.job["cases"][0]["case_id"]
        for kind in ("run_start", "case_start", "case_end", "run_end"):
            assert kind in events.kinds(outcome.device)
    second = run_devices(runs("bbbb"), max_workers=3, on_event=events, poll_interval=0.2)
    assert [(o.error, o.uploads) for o in second] == [(None, [])] * 3


@pytest.mark.parametrize("where", ["ssh", "local"])
def test_killed_agent_keeps_finished_cases_and_marks_the_rest_agent_lost(
        where, ssh_lab, tmp_path, agent_pyz):
    device = lab_device(ssh_lab.devices[0], tmp_path) if where == "ssh" else local_device(tmp_path)
    job = make_job(device, n=4, min_duration_s=1.0)
    out = os.path.join(device.workdir, "runs", job["run_id"], "out")

    def on_event(name, event):
        if event.get("event") == "case_end" and event.get("index") == 0:
            with open(os.path.join(out, "status.json")) as f:
                pid = json.load(f)["pid"]
            if where == "ssh":
                os.kill(pid, signal.SIGKILL)  # the agent alone: its wrapper records exit 137
            else:
                os.killpg(os.getpgid(pid), signal.SIGKILL)  # everything: only the heartbeat tells

    with make_transport(device) as t:
        outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", on_event,
                             poll_interval=0.2, stall_timeout_s=3.0)
    assert_valid(outcome, job)
    assert outcome.results[0].status == "ok"
    assert (tmp_path / "raw" / (job["cases"][0]["case_id"] + ".json")).exists()
    last = outcome.results[-1]
    assert (last.status, last.substatus) == ("failed", "agent_lost")
    assert "agent.log tail" in last.reason
    expected = "code 137" if where == "ssh" else "no heartbeat change"
    assert expected in last.reason and expected in outcome.error


def test_wrong_port_on_one_device_does_not_stop_the_other(ssh_lab, tmp_path, agent_pyz):
    good = lab_device(ssh_lab.devices[0], tmp_path)
    bad = lab_device(ssh_lab.devices[1], tmp_path, port=sshlab.free_port())
    specs = [DeviceRun(d, make_job(d), {}, agent_pyz, tmp_path / d.name) for d in (bad, good)]
    outcomes = run_devices(specs, max_workers=2, poll_interval=0.2)
    assert [o.device for o in outcomes] == ["lab2", "lab1"]
    assert "lab2" in outcomes[0].error and "connection refused" in outcomes[0].error
    assert [(r.status, r.substatus) for r in outcomes[0].results] == [("failed", "error")] * 2
    assert_valid(outcomes[0], specs[0].job)
    assert outcomes[1].error is None
    assert [r.status for r in outcomes[1].results] == ["ok", "ok"]


def test_busy_device_skips_its_cases_naming_the_holder(ssh_lab, tmp_path, agent_pyz):
    device = lab_device(ssh_lab.devices[1], tmp_path)
    os.makedirs(device.workdir)
    job = make_job(device)
    with open(os.path.join(device.workdir, "agent.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run still holding the workdir
        lock.write('{"pid": 4242, "run_id": "other-run", "since": "2026-12-03T01:00:00Z", '
                   '"controller": {"user": "ana", "host": "lab-ctl", "pid": 77}}\n')
        lock.flush()
        with make_transport(device) as t:
            outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", poll_interval=0.2)
    assert outcome.exception is None   # busy is not a failure
    assert "device busy: run other-run of ana@lab-ctl (controller pid 77), agent pid 4242" \
        in outcome.error
    assert [(r.status, r.substatus) for r in outcome.results] == [("skipped", "busy")] * 2
    assert "--wait" in outcome.results[0].hint
    assert_valid(outcome, job)


def test_untrusted_result_bytes_are_checked():
    job = make_job(Device(name="x", transport="local"), n=1)
    case = job["cases"][0]
    good = failed_result(job, case, "error", "boom")
    assert parse_result(json.dumps(good).encode(), job, case["case_id"]) == (good, [])
    stale = dict(good, nonce="yesterday")
    assert any("nonce" in p for p in parse_result(json.dumps(stale).encode(), job,
                                                  case["case_id"])[1])
    nan = json.dumps(good)[:-1] + ', "x": NaN}'
    assert "NaN" in parse_result(nan.encode(), job, case["case_id"])[1][0]
    assert parse_result(b"\xff", job, case["case_id"])[0] is None


def test_dropped_ssh_connection_reconnects_and_the_run_completes(ssh_lab, tmp_path, agent_pyz):
    lab_dev = ssh_lab.devices[1]
    device = lab_device(lab_dev, tmp_path)
    job = make_job(device, n=3, min_duration_s=0.7)
    events, dropped = Events(), []

    def on_event(name, event):
        events(name, event)
        if event.get("event") == "case_start" and event.get("index") == 1 and not dropped:
            dropped.extend(lab_dev.drop_connections())

    with make_transport(device) as t:
        outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", on_event,
                             poll_interval=0.2, stall_timeout_s=10.0)
    assert dropped, "no sshd session process was found to kill"
    assert outcome.error is None, outcome.error
    assert [r.status for r in outcome.results] == ["ok", "ok", "ok"]
    notes = [e["text"] for n, e in events.seen if e["event"] == "note"]
    lost = [t for t in notes if t.startswith("connection lost (")]
    assert lost and lost[0].endswith("reconnecting, attempt 1 of 6"), notes
    assert any(t.startswith("reconnected after ") for t in notes), notes


def test_case_backstop_times_out_a_case_the_agent_did_not_end(tmp_path, agent_pyz):
    device = local_device(tmp_path)
    job = make_job(device, n=2, min_duration_s=3.0)
    job["cases"][0]["settings"]["case_timeout_s"] = 1.0
    out = os.path.join(device.workdir, "runs", job["run_id"], "out")
    frozen = []

    def on_event(name, event):
        if event.get("event") == "case_start" and not frozen:
            with open(os.path.join(out, "status.json")) as f:
                frozen.append(os.getpgid(json.load(f)["pid"]))
            os.killpg(frozen[0], signal.SIGSTOP)  # a wedged agent: its own timeout never fires

    try:
        with make_transport(device) as t:
            outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", on_event,
                                 poll_interval=0.2, stall_timeout_s=60.0, case_margin_s=1.0)
    finally:
        if frozen:
            os.killpg(frozen[0], signal.SIGCONT)  # lets the queued SIGTERM stop it
    assert_valid(outcome, job)
    assert [(r.status, r.substatus) for r in outcome.results] == [
        ("failed", "timeout"), ("failed", "agent_lost")]
    assert "case_timeout_s 1" in outcome.results[0].reason


def test_kept_files_are_fetched_only_under_their_case_name(tmp_path):
    """A result names files kept beside it; the names are untrusted, so only <case_id>.<name>."""
    from orchestrator.collect import RunPoller
    from orchestrator.transport.local import LocalTransport
    run_dir, raw = tmp_path / "run", tmp_path / "raw"
    (run_dir / "out").mkdir(parents=True)
    raw.mkdir()
    (run_dir / "out" / "c-1.profile.json").write_text("[1]")
    (tmp_path / "secret").write_text("do not copy")
    job = {"nonce": "n", "run_id": "r", "cases": [{"case_id": "c-1"}]}
    poller = RunPoller(LocalTransport("dev"), job, str(run_dir), str(raw), None, None, 60, 60)
    poller._fetch_kept_files("c-1", {"environment": {"artifacts": {
        "profile.json": "c-1.profile.json", "escape": "../../secret", "other": "c-2.x"}}})
    assert sorted(p.name for p in raw.iterdir()) == ["c-1.profile.json"]
    assert (raw / "c-1.profile.json").read_text() == "[1]"


class _CountingLocal(LocalTransport):
    """The local transport, counting full polls (listdir) and cheap looks (file_size)."""

    def __init__(self, name, looks=True):
        LocalTransport.__init__(self, name)
        self.polls = self.sizes = 0
        self.has_looks = looks

    def listdir(self, remote_path):
        self.polls += 1
        return LocalTransport.listdir(self, remote_path)

    def file_size(self, remote_path):
        if not self.has_looks:
            raise NotImplementedError
        self.sizes += 1
        return LocalTransport.file_size(self, remote_path)


def test_a_cheap_look_wakes_the_poll_when_a_case_ends_not_the_poll_interval(tmp_path, agent_pyz):
    device = local_device(tmp_path)
    job = make_job(device, n=3, min_duration_s=0.3)
    t = _CountingLocal(device.name)
    started = time.monotonic()
    outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", poll_interval=60.0)
    took = time.monotonic() - started
    assert_valid(outcome, job)
    assert [r.status for r in outcome.results] == ["ok"] * 3
    # With one full poll a minute and nothing else, the run could not end before 60 s: each
    # case_start, case_end, run_end and `done` woke a poll at once.
    assert took < 30, took
    assert 3 <= t.polls <= 20 and t.sizes > t.polls, (t.polls, t.sizes)


def test_a_transport_without_looks_falls_back_to_plain_polling(tmp_path, agent_pyz):
    device = local_device(tmp_path)
    job = make_job(device, n=2)
    t = _CountingLocal(device.name, looks=False)
    outcome = run_device(t, device, job, {}, agent_pyz, tmp_path / "raw", poll_interval=0.2)
    assert_valid(outcome, job)
    assert [r.status for r in outcome.results] == ["ok"] * 2 and t.sizes == 0 and t.polls >= 2


class _StepsLocal(_CountingLocal):
    """Counts the launch commands and the SFTP-style steps a deploy takes."""

    def __init__(self, name):
        _CountingLocal.__init__(self, name)
        self.launches = self.puts = self.mkdir_calls = 0

    def run_input(self, argv, data, timeout, env=None):
        self.launches += 1
        return LocalTransport.run_input(self, argv, data, timeout, env)

    def put(self, local_path, remote_path):
        self.puts += 1
        return LocalTransport.put(self, local_path, remote_path)

    def mkdirs(self, remote_path):
        self.mkdir_calls += 1
        return LocalTransport.mkdirs(self, remote_path)


def test_a_device_that_has_everything_is_deployed_and_started_by_one_command(
        tmp_path, agent_pyz, blob, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # a ~ workdir: the device says its home
    device = Device(name="local", transport="local", python=sys.executable, workdir="~/bf")
    sha, path = blob
    counts = []
    for run_id in ("20261122-000000-ab12", "20261122-000001-ab12"):
        job = make_job(device, n=1, blob_sha=sha, run_id=run_id)
        t = _StepsLocal(device.name)
        outcome = run_device(t, device, job, {sha: path}, agent_pyz, tmp_path / run_id)
        assert_valid(outcome, job)
        assert [r.status for r in outcome.results] == ["ok"]
        counts.append((t.launches, t.puts, t.mkdir_calls, sorted(outcome.uploads)))
        assert os.path.exists(tmp_path / "home" / "bf" / "runs" / run_id / "out" / "done")
    agent_rel = "agent/%s.pyz" % agent_pyz[1]
    # first: the command names the missing agent and blob, they are uploaded, it runs again
    assert counts[0] == (2, 2, 2, sorted([agent_rel, "blobs/" + sha]))
    # then: one command, nothing uploaded, no folder made step by step
    assert counts[1] == (1, 0, 0, [])


class _NoStdinLocal(LocalTransport):
    def run_input(self, argv, data, timeout, env=None):
        raise NotImplementedError


def test_a_transport_without_stdin_commands_deploys_in_separate_steps(tmp_path, agent_pyz, blob):
    device = local_device(tmp_path)
    sha, path = blob
    job = make_job(device, n=1, blob_sha=sha)
    outcome = run_device(_NoStdinLocal(device.name), device, job, {sha: path}, agent_pyz,
                         tmp_path / "raw")
    assert_valid(outcome, job)
    assert [r.status for r in outcome.results] == ["ok"]
    assert sorted(outcome.uploads) == sorted(["agent/%s.pyz" % agent_pyz[1], "blobs/" + sha])
