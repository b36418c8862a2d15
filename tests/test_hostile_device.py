"""A device's output is untrusted: one bad file costs that file's row, never the others.

Each test runs the real executor (upload, detached start, polling, collection) on the local
transport against a hostile agent (tests/hostile_agent.py) that writes chosen bytes.
"""

import json
import os
import sys
import time

import pytest

import hostile_agent as hostile
from agent import schema
from orchestrator import collect
from orchestrator.config.inventory import Device
from orchestrator.execute import run_device
from orchestrator.transport import make_transport
from test_executor import Events, make_job


def device(tmp_path):
    return Device(name="hostile", transport="local", python=sys.executable,
                  workdir=str(tmp_path / "wd"))


def run_hostile(tmp_path, files_for, n=2, exit_code=0, **kwargs):
    """(outcome, job, events, seconds): files_for(job) -> [(name, bytes)] the agent writes."""
    dev = device(tmp_path)
    job = make_job(dev, n=n)
    agent = hostile.write_agent(tmp_path, files_for(job), exit_code)
    events = Events()
    kwargs.setdefault("stall_timeout_s", 20.0)
    start = time.monotonic()
    with make_transport(dev) as t:
        outcome = run_device(t, dev, job, {}, agent, tmp_path / "raw", events,
                             poll_interval=0.1, **kwargs)
    return outcome, job, events, time.monotonic() - start


def good(job, i):
    case = job["cases"][i]
    return (case["case_id"] + ".json", hostile.result_bytes(hostile.ok_result(job, case)))


def rows(outcome):
    return [(r.status, r.substatus) for r in outcome.results]


def test_deeply_nested_result_is_one_invalid_row_and_the_good_result_is_kept(tmp_path):
    def files(job):
        return [(job["cases"][0]["case_id"] + ".json", hostile.nested(100000)), good(job, 1),
                ("done", b"")]
    outcome, job, _, _ = run_hostile(tmp_path, files)
    assert outcome.error is None, outcome.error
    assert rows(outcome) == [("failed", "invalid_result"), ("ok", None)]
    assert "nested too deeply" in outcome.results[0].reason


def test_result_over_the_size_cap_is_one_invalid_row_without_reconnects(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MAX_RESULT_BYTES", 256 * 1024)  # the 64 MiB cap, made small

    def files(job):
        big = b" " * (schema.MAX_RESULT_BYTES + 1)
        return [good(job, 0), (job["cases"][1]["case_id"] + ".json", big), ("done", b"")]
    outcome, job, events, seconds = run_hostile(tmp_path, files)
    assert outcome.error is None, outcome.error
    assert rows(outcome) == [("ok", None), ("failed", "invalid_result")]
    assert "over the %d-byte cap" % schema.MAX_RESULT_BYTES in outcome.results[1].reason
    assert not [e for _, e in events.seen if "reconnecting" in e.get("text", "")]
    assert seconds < 15


def test_events_file_over_its_cap_costs_progress_lines_not_results(tmp_path, monkeypatch):
    monkeypatch.setattr(collect, "MAX_EVENTS_READ", 64 * 1024)
    line = json.dumps({"t": 1.0, "event": "note", "text": "x" * 1000}).encode() + b"\n"

    def files(job):
        return [("events.jsonl", line * 200), good(job, 0), good(job, 1), ("done", b"")]
    outcome, job, events, seconds = run_hostile(tmp_path, files)
    assert outcome.error is None, outcome.error
    assert rows(outcome) == [("ok", None), ("ok", None)]
    notes = [e["text"] for _, e in events.seen if e["event"] == "note"]
    assert any("events.jsonl" in text and "no longer shown" in text for text in notes), notes
    assert not [t for t in notes if "reconnecting" in t]
    assert seconds < 15


def test_oversized_heartbeat_and_status_files_are_not_connection_drops(tmp_path):
    def files(job):
        return [("heartbeat", b"9" * 100000), ("status.json", b"{" * (2 << 20)), good(job, 0),
                good(job, 1), ("done", b"")]
    outcome, job, events, seconds = run_hostile(tmp_path, files)
    assert outcome.error is None, outcome.error
    assert rows(outcome) == [("ok", None), ("ok", None)]
    assert not [e for _, e in events.seen if "reconnecting" in e.get("text", "")]


@pytest.mark.parametrize("raw,says", [
    (hostile.nested(100000), "nested too deeply"),
    (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
    (b"\xff\xfe", "not valid JSON"),
    (b'{"x": Infinity}', "Infinity"),
    (b"[]", "result"),
    (b'"just a string"', "result"),
])
def test_parse_result_turns_every_hostile_body_into_problems_not_exceptions(raw, says):
    job = {"nonce": "n", "run_id": "r"}
    doc, problems = collect.parse_result(raw, job, "c-1")
    assert problems and any(says in p for p in problems), problems


# --- the device's disk fills ----------------------------------------------------------------

from test_executor import agent_pyz  # noqa: E402,F401 (the real agent, built once per module)


@pytest.fixture
def small_disk(tmp_path):
    """A real 48 MiB tmpfs mounted for this test (root only): the device's workdir filesystem."""
    import subprocess
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): %s" % proc.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave_bytes):
    """Write a filler file until only about leave_bytes are free in folder's filesystem."""
    from agent import fsutil
    path = os.path.join(str(folder), "filler-%d" % len(os.listdir(str(folder))))
    chunk = b"\1" * (1 << 20)
    with open(path, "ab") as f:
        try:
            while fsutil.free_bytes(str(folder)) - len(chunk) > leave_bytes:
                f.write(chunk)
                f.flush()
            f.write(b"\1" * max(0, fsutil.free_bytes(str(folder)) - leave_bytes))
            f.flush()
        except OSError:
            pass  # full: that is the point


def disk_device(mount):
    return Device(name="smalldisk", transport="local", python=sys.executable,
                  workdir=str(mount / "wd"))


def test_disk_below_the_floor_is_refused_before_a_case_with_the_reason_at_once(
        small_disk, tmp_path, agent_pyz):  # noqa: F811
    dev = disk_device(small_disk)
    job = make_job(dev, n=2)
    with make_transport(dev) as t:
        t.mkdirs(dev.workdir)
        fill(small_disk, 10 << 20)
        start = time.monotonic()
        outcome = run_device(t, dev, job, {}, agent_pyz, tmp_path / "raw", Events(),
                             poll_interval=0.1, stall_timeout_s=60.0)
    seconds = time.monotonic() - start
    assert rows(outcome) == [("failed", "agent_lost"), ("failed", "agent_lost")]
    assert "device disk full (%s" % dev.workdir in outcome.error, outcome.error
    assert "MB free" in outcome.results[0].reason and "free space on the device" in \
        outcome.results[0].reason
    assert seconds < 30  # at once, not after the 60 s stall watch


def test_disk_filling_mid_run_stops_the_agent_with_its_own_exit_class(
        small_disk, tmp_path, agent_pyz):  # noqa: F811
    dev = disk_device(small_disk)
    job = make_job(dev, n=2, min_duration_s=6.0)  # fill lands in case 1 under load
    filled = []

    def on_event(name, event):
        if event.get("event") == "case_start" and not filled:
            fill(small_disk, 0)
            filled.append(True)

    start = time.monotonic()
    with make_transport(dev) as t:
        outcome = run_device(t, dev, job, {}, agent_pyz, tmp_path / "raw", on_event,
                             poll_interval=0.1, stall_timeout_s=60.0)
    seconds = time.monotonic() - start
    assert filled
    assert rows(outcome) == [("failed", "agent_lost"), ("failed", "agent_lost")]
    assert "device disk full" in outcome.error, outcome.error
    run_dir = os.path.join(dev.workdir, "runs", job["run_id"])
    # The verdict comes from status.json, which the agent writes just before it exits: the
    # wrapper's agent.exit may land a moment after the controller has moved on.
    exit_file = os.path.join(run_dir, "agent.exit")
    deadline = time.monotonic() + 20
    while not os.path.exists(exit_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(exit_file) as f:
        assert f.read().strip() == str(schema.EXIT_DISK_FULL)
    with open(os.path.join(run_dir, "agent.log")) as f:
        assert "device disk full" in f.read()
    assert seconds < 30


# --- the controller's results folder fills ---------------------------------------------------

SYNTH_SUITE = {
    "name": "disk", "settings": {"warmup_runs": 1, "warmup_min_s": 0.0, "runs": 20,
                                 "min_duration_s": 1.0, "max_duration_s": 5, "case_timeout_s": 60},
    "cooldown": {"mode": "none", "seconds": 0},
    "models": [{"name": "spin", "synthetic_ms": 0.2}],
    "matrix": [{"runtime": "synthetic", "threads": [1, 2]}],
}


def synth_files(tmp_path):
    import yaml
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SYNTH_SUITE, sort_keys=False))
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"box": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    return suite, inv


def test_results_dir_below_the_floor_is_refused_before_dispatch(small_disk, tmp_path):
    from test_e2e import run_cli
    suite, inv = synth_files(tmp_path)
    fill(small_disk, 4 << 20)
    proc = run_cli("run", suite, "-i", inv, "--results-dir", small_disk / "results", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--results-dir %s: only" % (small_disk / "results") in proc.stderr
    assert "MB free" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "wd").exists()  # nothing was dispatched


def test_results_dir_filling_mid_run_stops_cleanly_and_leaves_the_results_on_the_device(
        small_disk, tmp_path):
    from orchestrator.errors import LocalWriteError
    from orchestrator.run import Progress, run_suite
    suite, inv = synth_files(tmp_path)

    class Filling(Progress):
        def event(self, device, ev):
            if ev.get("event") == "case_start" and ev.get("index") == 0:
                fill(small_disk, 0)
            Progress.event(self, device, ev)

    with pytest.raises(LocalWriteError) as info:
        run_suite(suite, [inv], results_dir=small_disk / "results", progress=Filling())
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "No space left on device" in message and "The run stopped" in message
    assert "stays on them under WORKDIR/runs/" in message
    (run_dir,) = [p for p in (small_disk / "results").iterdir() if p.is_dir()]
    with open(run_dir / "manifest.json") as f:
        manifest = json.load(f)
    assert manifest["state"] == "stopped" and manifest["reason"] == message
    # The agent was left running: it finishes and its results are on the device.
    out = tmp_path / "wd" / "runs" / run_dir.name / "out"
    deadline = time.monotonic() + 60
    while not (out / "done").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    results = sorted(p.name for p in out.glob("c-*.json"))
    assert len(results) == 2
    for name in results:
        assert json.loads((out / name).read_text())["status"] == "ok"
    # Room again: the stopped run is finished in its own folder with the device's numbers.
    assert "benchfleet resume %s" % run_dir in message
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    from orchestrator.run import resume_run
    summary = resume_run(run_dir)
    assert sorted(r.case_id + ".json" for r in summary.results) == results
    assert all(r.status == "ok" for r in summary.results)
    for r in summary.results:
        device = json.loads((out / (r.case_id + ".json")).read_text())
        assert r.timing.latencies_ms == device["timing"]["latencies_ms"]
    with open(run_dir / "manifest.json") as f:
        assert json.load(f)["state"] == "finished"


# --- every wait has a deadline ---------------------------------------------------------------

def test_an_agent_that_never_moves_past_a_cool_down_is_timed_out(tmp_path):
    # A live agent (heartbeat rewritten) that never starts its next case: the cool-down of
    # 1e9 s a device could be sent, or any agent stuck between cases.
    beat = [("heartbeat", b"%d\n" % i) for i in range(40)]
    sleeps = [x for pair in zip(beat, [("@sleep", b"0.25")] * 40) for x in pair]

    def files(job):
        start = json.dumps({"t": 1, "event": "case_start", "case_id": job["cases"][0]["case_id"],
                            "index": 0, "total": 2}).encode() + b"\n"
        return [("+events.jsonl", start), good(job, 0)] + sleeps
    outcome, job, events, seconds = run_hostile(tmp_path, files, case_margin_s=2.0,
                                                stall_timeout_s=30.0)
    assert rows(outcome)[0] == ("ok", None)
    assert rows(outcome)[1] == ("failed", "timeout")
    assert "no case started" in outcome.results[1].reason
    assert "the longest cool-down is 0 s, margin 2 s" in outcome.results[1].reason
    assert seconds < 10  # the 2 s gap limit, not the 30 s stall watch nor forever


def test_gap_limit_follows_the_cool_down_mode():
    job = {"cases": [{"case_id": "c", "settings": {"case_timeout_s": 100.0}}],
           "cooldown": {"mode": "thermal", "seconds": 5.0, "delta_c": 3.0, "max_wait_s": 300.0}}
    poller = collect.RunPoller(None, job, "/r", "/raw", None, None, 60, 10)
    assert poller.gap_limit_s() == 310.0
    job["cooldown"]["mode"] = "fixed"
    assert poller.gap_limit_s() == 15.0
    job["cooldown"]["mode"] = "none"
    assert poller.gap_limit_s() == 10.0
    poller.events_off = True  # no case_start seen any more: a case may be running
    assert poller.gap_limit_s() == 110.0
