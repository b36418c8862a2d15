"""The real tflite_runtime 2.14 (the package a Raspberry Pi user installs) on x86-64: a venv of
pyenv's Python 3.11 with only tflite-runtime and numpy (no ai_edge_litert, no TensorFlow), so the
agent's tflite backend picks tflite_runtime and runs movenet-tiny through it for real.

The venv is made once and cached under $BENCHFLEET_CACHE/venvs (pip install from PyPI: about 10 s
cold). Skipped when pyenv has no 3.11 or pip cannot fetch the wheel (a failure under
BENCHFLEET_REQUIRE_PYENV, as CI sets it).
"""

import glob
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from agent_helpers import FAST_SETTINGS, REPO, make_job  # noqa: E402
from fixtures_models import TEST_ROOT, tiny_models  # noqa: E402,F401 - a fixture

from agent import schema  # noqa: E402

PACKAGES = ["tflite-runtime==2.14.0", "numpy==1.26.4"]
VENV = os.path.join(TEST_ROOT, "venvs", "tflite-runtime-2.14.0-py311")


def _pyenv_311():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.11*", "bin", "python")))
    return found[-1] if found else None


def _skip_or_fail(reason):
    if os.environ.get("BENCHFLEET_REQUIRE_PYENV"):
        pytest.fail("BENCHFLEET_REQUIRE_PYENV is set: %s" % reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def tflite_runtime_python():
    """The venv's python, made once (a marker file says the install finished)."""
    python = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, ".benchfleet-installed")
    if os.path.exists(marker):
        return python
    base = _pyenv_311()
    if base is None:
        _skip_or_fail("pyenv has no Python 3.11 (tflite-runtime 2.14 has wheels up to cp311)")
    subprocess.run([base, "-m", "venv", "--clear", VENV], check=True)
    proc = subprocess.run([python, "-m", "pip", "install", "-q",
                           "--disable-pip-version-check"] + PACKAGES,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)
    if proc.returncode != 0:
        _skip_or_fail("pip install %s failed:\n%s" % (" ".join(PACKAGES), proc.stdout[-2000:]))
    open(marker, "w").close()
    return python


def tflite_case(path, variant, threads):
    settings = dict(FAST_SETTINGS, runs=20)
    return {"case_id": "c-%s-t%d" % (variant, threads),
            "label": "movenet-tiny/%s tflite t%d" % (variant, threads),
            "model": {"name": "movenet-tiny", "variant": variant, "format": "tflite",
                      "sha256": None, "path": path, "synthetic_ms": None},
            "runtime": {"backend": "tflite", "threads": threads, "affinity": None,
                        "precision": "int8" if variant == "tflite-int8" else "fp32",
                        "options": {}},
            "settings": settings}


def test_the_venv_has_tflite_runtime_and_no_other_tflite_runtime(tflite_runtime_python):
    code = ("import importlib.util as u, tflite_runtime, sys; "
            "print(tflite_runtime.__version__, sys.version_info[:2], "
            "[m for m in ('ai_edge_litert', 'tensorflow') if u.find_spec(m)])")
    out = subprocess.run([tflite_runtime_python, "-c", code], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert out.strip() == "2.14.0 (3, 11) []"


def test_agent_runs_movenet_tiny_through_tflite_runtime_on_x86(tflite_runtime_python,
                                                               tiny_models, tmp_path):
    cases = [tflite_case(str(tiny_models[v].local_path), v, t)
             for v in ("tflite-fp32", "tflite-int8") for t in (1, 2)]
    run_dir = tmp_path / "wd" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps(make_job(cases)))
    out = run_dir / "out"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([tflite_runtime_python, "-m", "agent", "run", str(run_dir / "job.json"),
                           "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    for case in cases:
        doc = json.loads((out / (case["case_id"] + ".json")).read_text())
        assert schema.check_result(doc) == []
        # int8 too: the decoder avoids SQRT, whose int8 version 2 (TensorFlow 2.15+)
        # tflite_runtime 2.14 cannot load (orchestrator/models/movenet.py)
        assert doc["status"] == "ok", doc["reason"]
        runtime = doc["runtime"]
        assert doc["environment"]["backend"]["runtime_module"] == "tflite_runtime.interpreter"
        assert runtime["version"] == "2.14.0" and runtime["threads"] == case["runtime"]["threads"]
        assert doc["timing"]["runs"] >= 20 and doc["timing"]["first_ms"] > 0
