"""Contract: the agent's schema check and the controller's pydantic mirror agree.

Golden files in tests/golden/ are real agent outputs (ok, skipped, failed). Each must pass both
checks; each broken copy must fail both. A fresh run of the real agent is checked the same way, so
a field added on one side only fails here.
"""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import schema
from orchestrator import records

GOLDEN = Path(__file__).parent / "golden"
RESULTS = sorted(GOLDEN.glob("result-*.json"))


def both_checks(doc):
    """(agent problems, controller error or None) for one document."""
    agent_problems = schema.check_result(doc)
    try:
        records.parse_result(json.dumps(doc))
        controller = None
    except ValueError as exc:
        controller = str(exc)
    return agent_problems, controller


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.stem)
def test_golden_result_passes_agent_and_controller_checks(path):
    doc = json.loads(path.read_text())
    assert both_checks(doc) == ([], None)


def test_golden_set_covers_every_status():
    statuses = {json.loads(p.read_text())["status"] for p in RESULTS}
    assert statuses == set(schema.STATUSES)


def test_golden_job_passes_agent_check():
    assert schema.check_job(json.loads((GOLDEN / "job.json").read_text())) == []


def _breakages(doc):
    yield "unknown top-level field", dict(doc, surprise=1)
    missing = dict(doc)
    del missing["nonce"]
    yield "missing nonce", missing
    yield "bad status", dict(doc, status="great")
    yield "failed without substatus", dict(doc, status="failed", substatus=None, reason="x")
    yield "skipped without reason", dict(doc, status="skipped", reason=None)
    yield "wrong schema version", dict(doc, schema_version=99)
    if doc.get("timing"):
        bad = copy.deepcopy(doc)
        bad["timing"]["latencies_ms"][0] = -1.0
        yield "negative latency", bad
        bad = copy.deepcopy(doc)
        bad["timing"]["runs"] += 1
        yield "runs do not match latencies", bad
        bad = copy.deepcopy(doc)
        bad["timing"]["summary"]["p42"] = 1.0
        yield "unknown summary field", bad
        bad = copy.deepcopy(doc)
        bad["validity"]["verdict"] = "fine"
        yield "unknown validity field", bad


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.stem)
def test_broken_golden_copies_fail_both_checks(path):
    doc = json.loads(path.read_text())
    for what, broken in _breakages(doc):
        agent_problems, controller = both_checks(broken)
        assert agent_problems, "agent check accepted: %s" % what
        assert controller, "controller check accepted: %s" % what


def test_controller_rejects_nan_in_raw_result():
    raw = (GOLDEN / "result-ok1.json").read_text().replace('"first_ms": ', '"first_ms": NaN, "x": ', 1)
    with pytest.raises(ValueError, match="NaN"):
        records.parse_result(raw)


def test_fresh_agent_outputs_pass_both_checks(tmp_path):
    job = json.loads((GOLDEN / "job.json").read_text())
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (tmp_path / "garbage.tflite").write_text("not a model")   # -> failed (bad_model)
    (tmp_path / "model.onnx").write_text("not read")          # tensorrt absent here -> skipped
    # A failed result that needs no framework: the garbage .tflite above fails only where a
    # TFLite runtime is installed (elsewhere it is skipped, which is also a valid document).
    crash = json.loads(json.dumps(next(c for c in job["cases"]
                                       if c["runtime"]["backend"] == "synthetic")))
    crash.update(case_id="c-badmodel00", label="synthetic bad model")
    crash["runtime"]["options"] = {"test_raise": "bad_model"}
    job["cases"].append(crash)
    (run_dir / "job.json").write_text(json.dumps(job))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "agent", "run", str(run_dir / "job.json"),
                           "--out", str(run_dir / "out")], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    seen = set()
    for case in job["cases"]:
        doc = json.loads((run_dir / "out" / (case["case_id"] + ".json")).read_text())
        assert both_checks(doc) == ([], None), case["case_id"]
        seen.add(doc["status"])
    assert seen == set(schema.STATUSES)


V1 = sorted((GOLDEN / "v1").glob("result-*.json"))


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_version_1_results_migrate_and_pass_both_checks(path):
    """Results of schema 1 (an interrupted run resumed by a newer controller, an old results
    folder) are migrated when read: the agent's check refuses the old version as it is, the
    migrated document passes both checks, and nothing measured changes."""
    old = json.loads(path.read_text())
    assert old["schema_version"] == 1
    assert any(p.startswith("schema_version") for p in schema.check_result(old))
    new = schema.migrate_result(old)
    assert new["schema_version"] == schema.SCHEMA_VERSION and old["schema_version"] == 1
    assert both_checks(new) == ([], None)
    assert records.parse_result(json.dumps(old)).schema_version == schema.SCHEMA_VERSION
    assert records.from_doc(old).to_doc()["timing"] == old["timing"]
    if old["status"] == "ok":
        assert new["validity"]["status"] == old["validity"]["status"]
        assert new["timing"]["latencies_ms"] == old["timing"]["latencies_ms"]


def test_migration_fills_the_validity_figures_from_the_latencies():
    old = json.loads((GOLDEN / "v1" / "result-ok1.json").read_text())
    for key in ("p50_ci_ms", "p50_ci_rel", "drift"):
        old["validity"].pop(key, None)
    new = schema.migrate_result(old)
    from agent import stats
    values = sorted(old["timing"]["latencies_ms"])
    assert new["validity"]["p50_ci_ms"] == list(stats.median_ci(values))
    assert new["validity"]["drift"] == stats.drift(old["timing"]["latencies_ms"])
    assert any("migrated from result schema 1" in n for n in new["validity"]["notes"])
    assert "p50_ci_ms" not in old["validity"]   # the caller's document is left as it was


def test_unknown_versions_are_not_migrated():
    doc = json.loads((GOLDEN / "result-ok1.json").read_text())
    for version in (0, 99, "1", True):
        bad = dict(doc, schema_version=version)
        assert schema.migrate_result(bad) is bad
        assert schema.check_result(bad)
