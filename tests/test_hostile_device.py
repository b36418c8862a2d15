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
