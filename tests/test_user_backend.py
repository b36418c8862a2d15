"""A backend of the user's own (`backend_file:` in a suite), without forking: checked when the
suite loads (without running the file), shipped with the job, registered on the device under its
name, and run for real over the local transport and over a real sshd device."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config.suite import load_suite
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 30, "min_duration_s": 0.05,
         "max_duration_s": 5, "case_timeout_s": 60}

BACKEND = '''"""A synthetic backend that busy-waits synthetic_ms times `scale`."""
import time

from agent.backends.base import Backend

BACKEND = {
    "name": "scaled-spin",
    "class": "ScaledSpin",
    "formats": ["synthetic"],
    "summary": "busy-waits synthetic_ms x scale",
    "options": {"scale": {"kind": "number", "default": 1.0, "minimum": 0, "help": "factor"}},
}


class ScaledSpin(Backend):
    name = "scaled-spin"

    def load(self):
        ms = self.case["model"]["synthetic_ms"] * self.options["scale"]
        self.wait_s = ms / 1000.0

    def make_inputs(self, seed, count):
        return list(range(count))

    def invoke(self, x):
        end = time.perf_counter() + self.wait_s
        while time.perf_counter() < end:
            pass

    def describe(self):
        return {"version": "1.0", "scale": self.options["scale"]}
'''


def write_suite(tmp_path, options=None, backend_file="my_backend.py", text=BACKEND):
    (tmp_path / "my_backend.py").write_text(text)
    suite = {"name": "mine", "settings": QUICK, "cooldown": {"mode": "none", "seconds": 0},
             "backend_file": backend_file, "models": [{"name": "spin", "synthetic_ms": 0.2}],
             "matrix": [{"runtime": "scaled-spin", "options": options or {"scale": 3.0}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def problems(path):
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    return info.value.problems


def cli(tmp_path, *args):
    env = dict(os.environ, BENCHFLEET_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "orchestrator"] + [str(a) for a in args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def rows_of(results):
    [run_dir] = [p for p in results.iterdir() if p.is_dir()]
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f)), run_dir


def test_suite_loads_the_entry_without_running_the_file(tmp_path):
    text = BACKEND.replace("import time\n", "import time\nraise SystemExit('never run here')\n")
    suite = load_suite(write_suite(tmp_path, text=text))
    spec = suite.backend("scaled-spin")
    assert spec.formats == ("synthetic",) and spec.path == str(tmp_path / "my_backend.py")
    assert [c.backend for c in suite.expand()] == ["scaled-spin"]


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_user_backend_runs_on_the_device_under_its_name(tmp_path, ssh_lab, transport):
    suite = write_suite(tmp_path)
    if transport == "local":
        inv = tmp_path / "inv.yaml"
        inv.write_text(yaml.safe_dump({"devices": {"localhost": {
            "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    else:
        inv = ssh_lab.write_inventory(tmp_path / "inv.yaml", [ssh_lab.devices[0]],
                                      python=sys.executable)
    proc = cli(tmp_path, "run", suite, "-i", inv, "--results-dir", tmp_path / "results")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [row], run_dir = rows_of(tmp_path / "results")
    assert (row["backend"], row["status"], row["runtime_version"]) == ("scaled-spin", "ok", "1.0")
    assert float(row["p50_ms"]) >= 0.6   # 0.2 ms x scale 3: the option reached the backend
    raw = json.loads((run_dir / "raw" / row["device"] / (row["case_id"] + ".json")).read_text())
    assert raw["runtime"]["options"] == {"scale": 3.0}
    assert raw["environment"]["backend"]["scale"] == 3.0


def test_options_of_a_user_backend_are_checked_at_load_with_the_field(tmp_path):
    path = write_suite(tmp_path, options={"scale": "big", "sclae": 2})
    assert problems(path) == [
        "%s: matrix[0].options.scale: expected a number, got the string 'big'" % path,
        "%s: matrix[0].options.sclae: unknown option for scaled-spin (did you mean scale?); its "
        "options: scale" % path]


@pytest.mark.parametrize("text,message", [
    ("def broken(:\n", "my_backend.py: line 1: not valid Python"),
    ("x = 1\n", "my_backend.py: no BACKEND = {...} entry; add one"),
    (BACKEND.replace('"name": "scaled-spin"', '"name": "tflite"'),
     "BACKEND.name: 'tflite' is a built-in backend; pick another name"),
    (BACKEND.replace('"class": "ScaledSpin"', '"class": "Nope"'),
     "BACKEND.class: 'Nope' is not a class defined in the file (classes: ScaledSpin)"),
    (BACKEND.replace('["synthetic"]', '["tflit"]'),
     "BACKEND.formats: unknown 'tflit'; allowed: synthetic, tflite, savedmodel, onnx, openvino"),
    (BACKEND.replace('"kind": "number"', '"kind": "float"'),
     "BACKEND.options.scale.kind: option scale: unknown kind 'float'"),
])
def test_a_bad_backend_file_is_a_clear_error_naming_it(tmp_path, text, message):
    found = problems(write_suite(tmp_path, text=text))
    assert any(message in p for p in found), found
    assert all(p.startswith(str(tmp_path / "suite.yaml") + ": backend_file[0]: ") for p in found)


def test_a_missing_backend_file_and_an_unknown_runtime_say_so(tmp_path):
    path = write_suite(tmp_path, backend_file="nothere.py")
    found = problems(path)
    assert found[0] == "%s: backend_file[0]: not found: %s" % (path, tmp_path / "nothere.py")


def test_a_backend_file_that_fails_on_the_device_fails_its_case_not_the_run(tmp_path):
    text = BACKEND.replace("import time\n", "import time\nimport no_such_framework_here\n")
    suite = write_suite(tmp_path, text=text)
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"localhost": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    proc = cli(tmp_path, "run", suite, "-i", inv, "--results-dir", tmp_path / "results")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [row], _ = rows_of(tmp_path / "results")
    assert (row["status"], row["substatus"]) == ("failed", "error")
    assert "no_such_framework_here" in row["reason"]
