"""The agent zipapp on every pyenv interpreter 3.6+: probe and a synthetic run, checked here."""

import glob
import json
import os
import re
import subprocess

import pytest

from agent import fsutil, schema
from agent_helpers import make_job, synthetic_case
from orchestrator import deploy


def _interpreters():
    try:
        root = subprocess.check_output(["pyenv", "root"], universal_newlines=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    found = []
    for folder in sorted(glob.glob(os.path.join(root, "versions", "*"))):
        m = re.match(r"^(\d+)\.(\d+)\.\d+$", os.path.basename(folder))
        exe = os.path.join(folder, "bin", "python")
        if m and (int(m.group(1)), int(m.group(2))) >= (3, 6) and os.path.exists(exe):
            found.append(pytest.param(exe, id=os.path.basename(folder)))
    return found


INTERPRETERS = _interpreters()
if not INTERPRETERS and os.environ.get("BENCHFLEET_REQUIRE_PYENV"):
    raise RuntimeError("BENCHFLEET_REQUIRE_PYENV is set but no pyenv interpreter >= 3.6 was found")
needs_pyenv = pytest.mark.skipif(not INTERPRETERS, reason="pyenv not found: no interpreters to test")


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    return deploy.build_agent_pyz(str(tmp_path_factory.mktemp("pyz")))[0]


def test_zipapp_is_deterministic(tmp_path):
    path1, sha1 = deploy.build_agent_pyz(str(tmp_path / "a"))
    path2, sha2 = deploy.build_agent_pyz(str(tmp_path / "b"))
    assert sha1 == sha2 and open(path1, "rb").read() == open(path2, "rb").read()
    assert os.path.basename(path1) == "agent-%s.pyz" % sha1
    assert open(path1, "rb").read().startswith(b"#!/usr/bin/env python3\n")
    assert deploy.build_agent_pyz(str(tmp_path / "a")) == (path1, sha1)  # cached


def test_zipapp_changes_with_source(tmp_path):
    src = tmp_path / "agent"
    src.mkdir()
    (src / "__init__.py").write_text("X = 1\n")
    sha1 = deploy.build_agent_pyz(str(tmp_path / "o"), str(src))[1]
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert deploy.build_agent_pyz(str(tmp_path / "o"), str(src))[1] == sha1  # caches ignored
    (src / "__init__.py").write_text("X = 2\n")
    assert deploy.build_agent_pyz(str(tmp_path / "o"), str(src))[1] != sha1


@needs_pyenv
@pytest.mark.parametrize("python", INTERPRETERS)
def test_zipapp_probe_and_run_on_interpreter(python, pyz, tmp_path):
    probe = subprocess.run([python, pyz, "probe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    doc = json.loads(probe.stdout)
    assert doc["python"]["version"].startswith(os.path.basename(os.path.dirname(os.path.dirname(python))))

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    job = make_job([synthetic_case("c-%d" % i, ms=0.02, runs=50, min_duration_s=0.2)
                    for i in range(2)])
    (run_dir / "job.json").write_text(json.dumps(job))
    out = str(run_dir / "out")
    run = subprocess.run([python, pyz, "run", str(run_dir / "job.json"), "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert os.path.exists(os.path.join(out, "done"))
    for i in range(2):
        result = fsutil.read_json(os.path.join(out, "c-%d.json" % i))
        assert schema.check_result(result) == []
        assert result["status"] == "ok", result["reason"]
        assert result["timing"]["runs"] >= 50 and result["timing"]["measure_s"] >= 0.2
