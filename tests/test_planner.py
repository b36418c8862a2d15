"""Planner: stable case ids, skips with reasons (never dropped), device selection, the plan listing."""

from pathlib import Path

import pytest

from agent import schema
from orchestrator.errors import ConfigError
from orchestrator.config.inventory import load_inventory
from orchestrator.plan import case_id, plan
from orchestrator.config.suite import load_suite

REPO = Path(__file__).resolve().parents[1]

INVENTORY = """devices:
  cpu-box: {host: a, tags: [x86], accelerators: [cpu]}
  gpu-box: {host: b, tags: [x86, gpu], accelerators: [gpu-nvidia]}
"""
SUITE = """name: t
settings: {runs: 100, warmup_min_s: 0.5, min_duration_s: 2}
cooldown: {mode: fixed, seconds: 3}
models:
  - name: lightning
    builtin: movenet-lightning
  - name: spin
    synthetic_ms: 1.0
matrix:
  - runtime: synthetic
  - runtime: tflite
    variants: [tflite-fp32]
    threads: [1, 2]
    affinity: [null, [3]]
  - runtime: [tensorflow, tf-trt]
"""
PROBE_NO_TF = {"runtimes": {"tensorflow": {"available": False}, "tflite_runtime": {"available": True}},
               "cores": {"listed": 4, "usable": 2, "os_cpu_count": 4}}


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    (tmp_path / "s.yaml").write_text(SUITE)
    return load_suite(tmp_path / "s.yaml"), load_inventory([tmp_path / "inv.yaml"])


def by_label(dplan):
    return {c.label: c for c in dplan.cases}


def test_movenet_plan_over_example_inventory_without_probes():
    the_plan = plan(load_suite(REPO / "suites" / "movenet.yaml"),
                    load_inventory([REPO / "inventory", REPO / "inventory" / "examples"]))
    text = the_plan.to_text()
    gpu = by_label(the_plan.device("gtx1660-host"))
    assert {"thunder/savedmodel tensorflow", "thunder/savedmodel tf-trt",
            "thunder/savedmodel tf-trt aff1", "thunder/savedmodel tf-trt fp16"} <= set(gpu)
    assert not any(c.skipped for c in gpu.values())
    pi = by_label(the_plan.device("rpi4-coral"))
    assert pi["thunder/savedmodel tf-trt"].skip_reason.startswith(
        "tf-trt needs a gpu-nvidia accelerator")
    assert "(not probed: runtimes and accelerators unchecked; `benchfleet devices probe " \
           "rpi4-coral -i %s`" % (REPO / "inventory" / "examples") in text
    assert the_plan.device("localhost").cases == []
    assert "  (no matrix entry applies to this device)" in text


def test_quickstart_plans_on_localhost():
    the_plan = plan(load_suite(REPO / "suites" / "quickstart.yaml"),
                    load_inventory([REPO / "inventory"]), devices=["localhost"])
    [dplan] = the_plan.devices
    assert len(dplan.runnable) == 7
    assert the_plan.estimate_s(dplan) == pytest.approx(7 * 1.3 + 6 * 1)


def test_case_id_same_across_devices_and_sensitive_to_settings(setup):
    suite, inv = setup
    the_plan = plan(suite, inv)
    cpu, gpu = (by_label(d) for d in the_plan.devices)
    assert cpu["lightning/tflite-fp32 tflite t1"].case_id == gpu["lightning/tflite-fp32 tflite t1"].case_id
    ids = {c.case_id for c in cpu.values()}
    assert len(ids) == len(cpu)  # threads and affinity each change the id
    base = cpu["spin synthetic"]
    assert case_id(base.model_name, base.variant, base.runtime, base.settings) == base.case_id
    changed = dict(base.settings, runs=101)
    assert case_id(base.model_name, base.variant, base.runtime, changed) != base.case_id


def test_case_id_is_pinned():
    # History compares runs by case_id: this value must never change between versions.
    runtime = {"backend": "tflite", "threads": 2, "affinity": None, "precision": "fp32", "options": {}}
    assert case_id("lightning", "tflite-fp32", runtime, dict(schema.DEFAULT_SETTINGS)) == "c-698450135c"


def test_missing_accelerator_is_a_skip_with_hint(setup):
    suite, inv = setup
    cpu = by_label(plan(suite, inv).device("cpu-box"))
    trt = cpu["lightning/savedmodel tf-trt"]
    assert (trt.skip_reason, trt.skip_hint) == (
        "tf-trt needs a gpu-nvidia accelerator; the inventory declares cpu",
        "add gpu-nvidia to accelerators in %s if the device has one" % inv["cpu-box"].source)
    gpu = by_label(plan(suite, inv).device("gpu-box"))
    assert not gpu["lightning/savedmodel tf-trt"].skipped   # declared: the probe decides


def test_probe_missing_runtime_and_cores(setup):
    suite, inv = setup
    dplan = plan(suite, inv, devices=["cpu-box"], probes={"cpu-box": PROBE_NO_TF}).devices[0]
    cases = by_label(dplan)
    tf = cases["lightning/savedmodel tensorflow"]
    assert (tf.skip_reason, tf.skip_hint) == ("tensorflow not installed",
                                              "pip install tensorflow (or tensorflow-cpu)")
    assert not cases["lightning/tflite-fp32 tflite t1"].skipped  # tflite_runtime is enough
    pinned = cases["lightning/tflite-fp32 tflite t1 aff3"]
    assert (pinned.skip_reason, pinned.skip_hint) == (
        "affinity core 3 is beyond the device's 2 cores (0-1)", "pin to cores 0-1 in the suite's affinity")
    assert len(dplan.cases) == 7  # skipped cases stay in the plan


def test_no_probe_means_no_runtime_guess(setup):
    suite, inv = setup
    cases = by_label(plan(suite, inv, devices=["cpu-box"]).devices[0])
    assert not cases["lightning/savedmodel tensorflow"].skipped
    assert not cases["lightning/tflite-fp32 tflite t1 aff3"].skipped


def test_devices_override_and_unknown_names(setup, tmp_path):
    suite, inv = setup
    assert [d.device.name for d in plan(suite, inv, devices=["tag:gpu"]).devices] == ["gpu-box"]
    with pytest.raises(ConfigError) as info:
        plan(suite, inv, devices=["nope"])
    assert info.value.problems == ["--devices[0]: unknown device 'nope'; known: cpu-box, gpu-box"]
    (tmp_path / "b.yaml").write_text(SUITE.replace("name: t", "name: t\ndevices: [gpu]") +
                                     "    devices: [tag:gpu, gpu]\n")
    with pytest.raises(ConfigError) as info:
        plan(load_suite(tmp_path / "b.yaml"), inv)
    path = tmp_path / "b.yaml"
    assert info.value.problems == [
        "%s: devices[0]: unknown device 'gpu'; known: cpu-box, gpu-box" % path,
        "%s: matrix[2].devices[1]: unknown device 'gpu'; known: cpu-box, gpu-box" % path]


def test_entry_device_filter_and_notes(setup, tmp_path):
    _, inv = setup
    text = SUITE + "    devices: [tag:gpu]\n  - runtime: synthetic\n  - runtime: edgetpu\n" \
                   "    devices: [tag:coral]\n"
    (tmp_path / "c.yaml").write_text(text)
    the_plan = plan(load_suite(tmp_path / "c.yaml"), inv)
    assert "lightning/savedmodel tensorflow" not in by_label(the_plan.device("cpu-box"))
    assert "lightning/savedmodel tensorflow" in by_label(the_plan.device("gpu-box"))
    assert the_plan.notes == [
        "cpu-box: spin synthetic from matrix[3] is the same case as matrix[0]; planned once",
        "gpu-box: spin synthetic from matrix[3] is the same case as matrix[0]; planned once",
        "matrix[4]: no selected device matches tag:coral; nothing planned for it"]


def test_planned_cases_make_valid_job_cases(setup):
    suite, inv = setup
    for dplan in plan(suite, inv).devices:
        for c in dplan.cases:
            job_case = {"case_id": c.case_id, "label": c.label, "runtime": c.runtime,
                        "settings": c.settings,
                        "model": {"name": c.model_name, "variant": c.variant, "format": c.format,
                                  "sha256": None, "path": None, "synthetic_ms": c.synthetic_ms}}
            assert schema.check_case(job_case) == []


def test_plan_text_lists_run_and_skip_lines(setup):
    suite, inv = setup
    text = plan(suite, inv, devices=["cpu-box"]).to_text()
    lines = text.splitlines()
    assert lines[:2] == ["suite t (%s): 1 device(s)" % suite.source,
                         "cool-down between cases: fixed 3 s"]
    assert any(l.startswith("  RUN   c-") and l.endswith("spin synthetic") for l in lines)
    assert any(l.startswith("  SKIP  c-") and "tf-trt needs a gpu-nvidia accelerator" in l
               for l in lines)
    # 6 runnable cases x (0.5 + 2) s + 5 cool-downs x 3 s
    assert "cpu-box (ssh, %s): 7 cases, 6 run, 1 skipped, at least 30 s" % inv["cpu-box"].source \
        in lines


def test_mode_overrides_name_the_case_and_change_its_id(tmp_path):
    """A paced or sustained entry is a case of its own (its id differs from back to back) with
    the mode in its label; a setting added later changes the id only away from its default."""
    (tmp_path / "inv.yaml").write_text(INVENTORY)
    (tmp_path / "s.yaml").write_text("""name: t
models:
  - name: spin
    synthetic_ms: 1.0
matrix:
  - runtime: synthetic
  - runtime: synthetic
    settings: {mode: paced, target_fps: 100, on_late: queue}
  - runtime: synthetic
    settings: {mode: sustained, duration_s: 60}
  - runtime: synthetic
    settings: {interval_ms: 0, subtract_idle: true}
""")
    suite, inv = load_suite(tmp_path / "s.yaml"), load_inventory([tmp_path / "inv.yaml"])
    cases = plan(suite, inv).device("cpu-box").cases
    labels = [c.label for c in cases]
    assert labels == ["spin synthetic", "spin synthetic paced on_late=queue target_fps=100",
                      "spin synthetic duration_s=60 sustained",
                      "spin synthetic interval_ms=0 subtract_idle=true"]
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == 4
    default = dict(cases[0].settings, interval_ms=100.0, mode="back_to_back", subtract_idle=False)
    assert case_id(cases[0].model_name, cases[0].variant, cases[0].runtime, default) == ids[0]
    assert cases[1].settings["mode"] == "paced" and cases[1].settings["target_fps"] == 100.0
