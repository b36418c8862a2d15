"""Real onnxruntime inference on movenet-tiny's onnx variant, through the backend and the agent."""

import glob
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from agent_helpers import (FAST_SETTINGS, REPO, make_job,  # noqa: E402
                           reasons_besides_noise, run_agent)
from fixtures_models import TEST_CACHE, tiny_onnx  # noqa: E402,F401 - a fixture

from agent import schema  # noqa: E402
from agent.backends import get_backend_class  # noqa: E402

ort = pytest.importorskip("onnxruntime")
from agent.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402


@pytest.fixture(scope="module")
def onnx_file(tiny_onnx):
    """The path of movenet-tiny's onnx variant (the session build of fixtures_models)."""
    return str(tiny_onnx.local_path)


def ort_case(model_path, threads=1, case_id="c-ort", **options):
    return {"case_id": case_id, "label": "movenet-tiny/onnx onnxruntime t%s" % threads,
            "model": {"name": "movenet-tiny", "variant": "onnx", "format": "onnx",
                      "sha256": None, "path": model_path, "synthetic_ms": None},
            "runtime": {"backend": "onnxruntime", "threads": threads, "affinity": None,
                        "precision": "fp32", "options": options},
            "settings": dict(FAST_SETTINGS)}


def run_job(workdir, cases):
    job_path, out = workdir(make_job(cases))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    return out, {c["case_id"]: json.load(open(os.path.join(out, c["case_id"] + ".json")))
                 for c in cases}


def test_registry_maps_onnxruntime_to_the_backend():
    assert get_backend_class("onnxruntime") is OnnxRuntimeBackend


@pytest.mark.parametrize("threads", [1, 2])
def test_onnxruntime_runs_movenet_tiny_on_the_cpu(onnx_file, threads):
    import numpy as np
    backend = OnnxRuntimeBackend(ort_case(onnx_file, threads), onnx_file)
    backend.load()
    pool = backend.make_inputs(0, 2)
    assert pool[0]["input"].dtype == np.int32 and pool[0]["input"].shape == (1, 96, 96, 3)
    assert pool[0]["input"].max() > 200 and not (pool[0]["input"] == pool[1]["input"]).all()
    for feed in pool:
        backend.invoke(feed)
    (out,) = backend.session.run(None, pool[0])
    assert out.shape == (1, 1, 17, 3) and np.all(np.isfinite(out))
    facts = backend.describe()
    assert facts["provider"] == "CPUExecutionProvider" and facts["providers_missing"] == []
    assert "validity_reasons" not in facts and facts["threads"] == threads
    assert facts["version"] == ort.__version__
    assert facts["inputs"] == [{"name": "input", "shape": [1, 96, 96, 3], "dtype": "tensor(int32)"}]
    json.dumps(facts)
    backend.close()


def test_onnxruntime_matches_tflite_fp32_outputs(onnx_file):
    # The same graph through two converters and two runtimes: same keypoints.
    import numpy as np
    from orchestrator.models import zoo
    from ai_edge_litert.interpreter import Interpreter
    tfl = zoo.build_model("movenet-tiny", "tflite-fp32", cache_dir=TEST_CACHE)
    x = np.random.RandomState(3).randint(0, 256, (1, 96, 96, 3)).astype(np.int32)
    interpreter = Interpreter(model_path=str(tfl.local_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4)


def test_missing_cuda_provider_makes_the_result_invalid_and_shows_in_runtime(onnx_file, workdir):
    # Real, not a mock: this machine's onnxruntime has no CUDA provider, and onnxruntime falls
    # back to the CPU without an error; the result must say so.
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    case = ort_case(onnx_file, 2, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    _, docs = run_job(workdir, [case])
    doc = docs["c-ort"]
    assert doc["status"] == "ok", doc["reason"]
    assert doc["runtime"]["provider"] == "CPUExecutionProvider"
    assert doc["runtime"]["providers_missing"] == ["CUDAExecutionProvider"]
    assert doc["runtime"]["version"] == ort.__version__
    assert doc["validity"]["status"] == "INVALID"
    assert ("asked for CUDAExecutionProvider but onnxruntime used CPUExecutionProvider"
            in doc["validity"]["reasons"])


def test_profile_true_keeps_a_chrome_trace_next_to_the_result(onnx_file, workdir):
    out, docs = run_job(workdir, [ort_case(onnx_file, 1, case_id="c-prof", profile=True),
                                  ort_case(onnx_file, 1, case_id="c-plain")])
    assert reasons_besides_noise(docs["c-prof"]) == []
    assert docs["c-prof"]["environment"]["artifacts"] == {"profile.json": "c-prof.profile.json"}
    with open(os.path.join(out, "c-prof.profile.json")) as f:
        trace = json.load(f)
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    assert len(runs) == 10 and all("dur" in e and "ts" in e for e in runs)
    assert any(e.get("cat") == "Node" for e in trace)
    assert docs["c-plain"]["environment"]["artifacts"] == {}
    assert sorted(glob.glob(os.path.join(out, "*.profile.json"))) == [
        os.path.join(out, "c-prof.profile.json")]


def test_unknown_graph_optimization_level_is_a_bad_model(onnx_file):
    from agent.backends.base import BadModel
    with pytest.raises(BadModel, match="graph_optimization_level must be one of"):
        OnnxRuntimeBackend(ort_case(onnx_file, graph_optimization_level="max"), onnx_file).load()


def test_a_file_that_is_not_onnx_is_a_bad_model(tmp_path):
    from agent.backends.base import BadModel
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(BadModel, match="onnxruntime cannot load this model"):
        OnnxRuntimeBackend(ort_case(str(junk)), str(junk)).load()


def _python_without_onnxruntime():
    try:
        root = subprocess.check_output(["pyenv", "root"], universal_newlines=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    for exe in sorted(glob.glob(os.path.join(root, "versions", "3.8*", "bin", "python"))):
        if subprocess.call([exe, "-c", "import onnxruntime"], stderr=subprocess.DEVNULL) != 0:
            return exe
    return None


def test_without_onnxruntime_the_case_is_skipped_with_the_install_hint(workdir, tmp_path):
    # A real interpreter that lacks onnxruntime (pyenv's 3.8), not a patched import.
    python = _python_without_onnxruntime()
    if python is None:
        pytest.skip("no pyenv 3.8 interpreter without onnxruntime")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never read: the import fails first")
    job_path, out = workdir(make_job([ort_case(str(model))]))
    proc = subprocess.run([python, "-m", "agent", "run", job_path, "--out", out], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = json.load(open(os.path.join(out, "c-ort.json")))
    assert doc["status"] == "skipped"
    assert doc["reason"].startswith("onnxruntime not installed (No module named 'onnxruntime')")
    assert doc["hint"] == "pip install onnxruntime (onnxruntime-gpu for CUDA)"
    assert doc["device"]["python"].startswith("3.8")
