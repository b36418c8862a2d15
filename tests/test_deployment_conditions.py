"""Deployment conditions on the controller side: the suite's `background` axis and the
inventory's benchmark_model reach the job, bad values are refused naming the file and field,
and the tables show a loaded case beside its idle twin and a profile's top operators."""

import json
from pathlib import Path

import pytest
import yaml

from agent import schema
from orchestrator import jobs, records, report
from orchestrator.config.inventory import load_inventory
from orchestrator.config.suite import load_suite
from orchestrator.errors import ConfigError
from orchestrator.plan import plan

GOLDEN = Path(__file__).resolve().parent / "golden"
INVENTORY = """devices:
  box: {host: a, benchmark_model: /opt/tflite/benchmark_model}
  plain: {host: b}
"""


def _suite(tmp_path, background, **entry):
    doc = {"name": "t", "models": [{"name": "spin", "synthetic_ms": 1.0}],
           "matrix": [dict({"runtime": "synthetic", "background": background}, **entry)]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _plan(tmp_path, background):
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    suite = load_suite(_suite(tmp_path, background))
    return suite, plan(suite, load_inventory([tmp_path / "inv.yaml"]))


def test_background_axis_expands_into_cases_with_their_load(tmp_path):
    suite, the_plan = _plan(tmp_path, ["none", {"cpu": "50%", "cores": 2},
                                       {"command": "/usr/bin/camera-sim --fps 30"}])
    cases = the_plan.device("box").cases
    assert [c.label for c in cases] == ["spin synthetic", "spin synthetic +cpu 50%x2",
                                        "spin synthetic +cmd camera-sim"]
    assert "background" not in cases[0].runtime   # an idle case keeps the id it always had
    assert cases[1].runtime["background"] == {"kind": "cpu", "percent": 50.0, "cores": 2}
    assert cases[2].runtime["background"] == {"kind": "command",
                                              "command": "/usr/bin/camera-sim --fps 30"}
    assert len({c.case_id for c in cases}) == 3
    job = jobs.device_job("r1", "n", suite, the_plan.device("box"), {}, {}).job
    assert schema.check_job(job) == []
    assert job["tools"] == {"benchmark_model": "/opt/tflite/benchmark_model"}
    assert [c["runtime"].get("background") for c in job["cases"]] == [
        None, cases[1].runtime["background"], cases[2].runtime["background"]]
    other = jobs.device_job("r1", "n", suite, the_plan.device("plain"), {}, {}).job
    assert "tools" not in other


@pytest.mark.parametrize("item,words", [
    ({"cpu": "500%"}, "1 to 100"),
    ({"cpu": "lots"}, "share of each core"),
    ({"cpu": 50, "cores": 0}, "1 to 1024"),
    ({"cpu": 50, "cores": 1.5}, "whole number"),
    ({"gpu": 1}, "expected none"),
    ({"cpu": 50, "command": "x"}, "expected none"),
    ({"command": ""}, "must not be empty"),
    ({"command": 3}, "shell command line"),
    ("busy", "expected none"),
])
def test_bad_background_items_are_refused_naming_the_item(tmp_path, item, words):
    path = _suite(tmp_path, ["none", item])
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    lines = info.value.problems
    assert any(l.startswith("%s: matrix[0].background[1]: " % path) and words in l
               for l in lines), lines


def test_agent_refuses_a_bad_background_in_a_job():
    case = {"runtime": {"background": {"kind": "cpu", "percent": 0, "cores": 1}}}
    assert any(p.startswith("cases[0].runtime.background.percent: must be 1 to 100")
               for p in schema.check_case(case))
    case = {"runtime": {"background": {"kind": "command", "command": "x", "shell": "bash"}}}
    assert any(p.startswith("cases[0].runtime.background.shell: unknown field")
               for p in schema.check_case(case))


def test_benchmark_model_must_be_an_absolute_path(tmp_path):
    (tmp_path / "inv.yaml").write_text("devices:\n  box: {host: a, benchmark_model: bm}\n")
    with pytest.raises(ConfigError) as info:
        load_inventory([tmp_path / "inv.yaml"])
    assert any("benchmark_model" in l and "absolute path" in l for l in info.value.problems)


def _result(case_id, label, p50, background=None, op_profile=None, threads=None):
    doc = json.loads((GOLDEN / "result-ok1.json").read_text())
    doc.update(case_id=case_id, label=label)
    if threads is not None:
        doc["runtime"]["threads"] = threads
    if background:
        doc["runtime"]["background"] = background
    if op_profile:
        doc["environment"]["op_profile"] = op_profile
    scale = p50 / doc["timing"]["summary"]["p50"]
    for key in ("mean", "min", "max", "p50", "p90", "p95", "p99", "p99_9"):
        if doc["timing"]["summary"].get(key) is not None:
            doc["timing"]["summary"][key] *= scale
    assert schema.check_result(doc) == [] and records.model_problems(doc) == []
    return report.flat_row(records.from_doc(doc))


def test_a_loaded_case_sits_beside_its_idle_twin_with_an_op_profile_top():
    load = {"kind": "cpu", "percent": 50, "cores": 2}
    top = [{"type": "CONV_2D", "name": "conv1", "avg_ms": 2.0, "percent": 61.25},
           {"type": "DEPTHWISE_CONV_2D", "name": "dw", "avg_ms": 0.9, "percent": 27.5},
           {"type": "ADD | x", "name": "add", "avg_ms": 0.1, "percent": 3.0}]
    rows = [_result("c-0000000idle", "spin synthetic", 1.0,
                    op_profile={"status": "ok", "top": top}),
            _result("c-000000load", "spin synthetic +cpu 50%x2", 1.5, background=load),
            _result("c-0000nobase", "spin synthetic t4 +cpu 50%x2", 2.0, background=load,
                    threads=4),   # no idle run with 4 threads
            _result("c-0000noprof", "third", 1.0,
                    op_profile={"status": "unavailable", "reason": "benchmark_model not found",
                                "hint": "put it on the device's PATH"})]
    assert rows[1]["background"] == "cpu 50%x2" and rows[0]["background"] is None
    assert rows[0]["op_profile_top"] == "CONV_2D 61.2%; DEPTHWISE_CONV_2D 27.5%; ADD | x 3.0%"
    header, body = report.comparison(rows, ["golden-device"])
    text = report.render_markdown(header, body, rows, "r1")
    section = text[text.index("## Background load"):]
    line = next(l for l in section.splitlines() if l.startswith("| spin synthetic +cpu"))
    assert "cpu 50%x2" in line and "1.50x" in line and "| 1.00 / " in line
    assert "no idle run of this case" in section
    ops = text[text.index("## Operators"):]
    assert "CONV\\_2D 61.2%" in ops             # Markdown-escaped device text
    assert "ADD \\| x" in ops                    # cannot split a cell
    assert "benchmark\\_model not found" in ops


def test_the_load_a_row_names_comes_from_the_job_not_the_device():
    doc = json.loads((GOLDEN / "result-ok1.json").read_text())
    result = records.from_doc(doc)
    case = {"case_id": doc["case_id"], "label": doc["label"], "model": doc["model"],
            "runtime": {k: v for k, v in doc["runtime"].items() if k in jobs.IDENTITY_RUNTIME}}
    job = {"device": doc["device"]["name"]}
    same, changed = jobs.with_job_identity(result, job, case)
    assert changed == [] and same is result   # an idle case: no background on either side
    forged = dict(doc, runtime=dict(doc["runtime"], background={"kind": "cpu", "percent": 1,
                                                                "cores": 1}))
    fixed, changed = jobs.with_job_identity(records.from_doc(forged), job, case)
    assert changed == ["runtime"] and fixed.runtime.get("background") is None
    loaded = dict(case, runtime=dict(case["runtime"], background={"kind": "command",
                                                                 "command": "cam"}))
    fixed, changed = jobs.with_job_identity(result, job, loaded)
    assert changed == ["runtime"] and fixed.runtime["background"]["command"] == "cam"


def test_an_inventory_command_runs_per_device_with_one_case_id(tmp_path):
    """`background: [{inventory: camera}]` runs each device's own background_commands.camera;
    the case id names the command, not its text, so the case compares across devices, and a
    device without one skips the case saying what to add where."""
    (tmp_path / "inv.yaml").write_text("""devices:
  pi: {host: a, background_commands: {camera: "libcamera-vid -t 0 -o /dev/null"}}
  jetson: {host: b, background_commands: {camera: "gst-launch-1.0 nvarguscamerasrc ! fakesink"}}
  bare: {host: c}
""")
    suite = load_suite(_suite(tmp_path, ["none", {"inventory": "camera"}]))
    the_plan = plan(suite, load_inventory([tmp_path / "inv.yaml"]))
    pi, jetson, bare = (the_plan.device(n).cases[1] for n in ("pi", "jetson", "bare"))
    assert pi.case_id == jetson.case_id == bare.case_id and pi.label == "spin synthetic +camera"
    assert pi.runtime["background"] == {"kind": "command", "name": "camera",
                                        "command": "libcamera-vid -t 0 -o /dev/null"}
    assert jetson.runtime["background"]["command"].startswith("gst-launch-1.0")
    assert pi.skip_reason is None and bare.skip_reason.startswith(
        "background {inventory: camera}: bare has no background_commands.camera")
    assert "background_commands: {camera:" in bare.skip_hint and "inv.yaml" in bare.skip_hint
    job = jobs.device_job("r1", "n", suite, the_plan.device("pi"), {}, {}).job
    assert schema.check_job(job) == []


@pytest.mark.parametrize("inventory,words", [
    ("devices:\n  box: {host: a, background_commands: {camera: ''}}\n", "empty"),
    ("devices:\n  box: {host: a, background_commands: {Camera!: x}}\n", "background_commands"),
])
def test_bad_inventory_background_commands_are_refused(tmp_path, inventory, words):
    (tmp_path / "inv.yaml").write_text(inventory)
    with pytest.raises(ConfigError) as info:
        load_inventory([tmp_path / "inv.yaml"])
    assert any("background_commands" in l and words in l for l in info.value.problems), \
        info.value.problems


def test_bad_inventory_reference_in_a_suite_is_refused(tmp_path):
    path = _suite(tmp_path, [{"inventory": "Not A Name"}])
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert any("matrix[0].background[0]" in l and "background_commands" in l
               for l in info.value.problems)
