"""Real OpenVINO inference on movenet-tiny (ONNX, and an IR converted here), through the backend,
the agent and a full `benchfleet run` over the local transport."""

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from agent_helpers import (FAST_SETTINGS, REPO, make_job,  # noqa: E402
                           reasons_besides_noise, run_agent)
from fixtures_models import tiny_onnx  # noqa: E402,F401 - a fixture
from test_e2e import local_inventory, only_run_dir, run_cli  # noqa: E402

from agent import schema  # noqa: E402
from agent.backends import get_backend_class  # noqa: E402
from agent.backends.base import BadModel  # noqa: E402

ov = pytest.importorskip("openvino")
from agent.backends.openvino_backend import OpenVINOBackend  # noqa: E402


@pytest.fixture(scope="module")
def onnx_file(tiny_onnx):
    """The path of movenet-tiny's onnx variant (the session build of fixtures_models)."""
    return str(tiny_onnx.local_path)


@pytest.fixture(scope="module")
def tiny_ir(onnx_file, tmp_path_factory):
    """movenet-tiny as an OpenVINO IR (m.xml + m.bin), converted by OpenVINO itself."""
    xml = tmp_path_factory.mktemp("ir") / "m.xml"
    ov.save_model(ov.Core().read_model(onnx_file), str(xml))
    return xml


def ov_case(model_path, threads=1, case_id="c-ov", precision="fp32", fmt="onnx", **options):
    return {"case_id": case_id, "label": "movenet-tiny/onnx openvino t%s" % threads,
            "model": {"name": "movenet-tiny", "variant": "onnx", "format": fmt,
                      "sha256": None, "path": str(model_path), "synthetic_ms": None},
            "runtime": {"backend": "openvino", "threads": threads, "affinity": None,
                        "precision": precision, "options": options},
            "settings": dict(FAST_SETTINGS)}


def run_one(workdir, case):
    job_path, out = workdir(make_job([case]))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = json.load(open(os.path.join(out, case["case_id"] + ".json")))
    assert schema.check_result(doc) == []
    return doc


def test_registry_maps_openvino_to_the_backend():
    assert get_backend_class("openvino") is OpenVINOBackend


@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_runs_movenet_tiny_on_the_cpu_and_reports_what_it_compiled(onnx_file, threads):
    import numpy as np
    backend = OpenVINOBackend(ov_case(onnx_file, threads), onnx_file)
    backend.load()
    pool = backend.make_inputs(0, 2)
    first = pool[0][0].data
    assert first.dtype == np.int32 and first.shape == (1, 96, 96, 3) and first.max() > 200
    assert not (first == pool[1][0].data).all()
    for inputs in pool:
        backend.invoke(inputs)
    out = backend._request.get_output_tensor(0).data
    assert out.shape == (1, 1, 17, 3) and np.all(np.isfinite(out))
    facts = backend.describe()
    assert facts["version"] == ov.__version__ and facts["provider"] == "CPU"
    assert facts["devices_used"] == ["CPU"] and "CPU" in facts["devices_available"]
    assert (facts["threads"], facts["threads_reported"]) == (threads, threads)
    assert facts["performance_hint_reported"] == "LATENCY"
    assert (facts["precision"], facts["precision_reported"]) == ("fp32", "fp32")
    assert "validity_reasons" not in facts and facts["model_format"] == "onnx"
    assert facts["inputs"] == [{"name": "input", "shape": "[1,96,96,3]", "dtype": "i32"}]
    json.dumps(facts)
    backend.close()


def test_openvino_gives_the_keypoints_onnxruntime_gives(onnx_file):
    # The same ONNX through two runtimes: same output, so OpenVINO ran the real graph.
    import numpy as np
    ort = pytest.importorskip("onnxruntime")
    backend = OpenVINOBackend(ov_case(onnx_file), onnx_file)
    backend.load()
    [tensors] = backend.make_inputs(5, 1)
    backend.invoke(tensors)
    got = backend._request.get_output_tensor(0).data.copy()
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": tensors[0].data})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("threads,hint", [(1, "LATENCY"), (2, "THROUGHPUT")])
def test_agent_runs_openvino_and_records_threads_and_performance_hint(onnx_file, workdir,
                                                                      threads, hint):
    doc = run_one(workdir, ov_case(onnx_file, threads, performance_hint=hint))
    assert doc["status"] == "ok", doc["reason"]
    assert reasons_besides_noise(doc) == []
    assert doc["runtime"]["provider"] == "CPU" and doc["runtime"]["version"] == ov.__version__
    assert doc["runtime"]["options"] == {"device": "CPU", "performance_hint": hint}
    facts = doc["environment"]["backend"]
    assert facts["threads_reported"] == threads and facts["performance_hint_reported"] == hint
    assert "InferRequest.infer()" in facts["timed"]
    assert doc["timing"]["runs"] >= FAST_SETTINGS["runs"]


def test_auto_device_that_falls_back_to_the_cpu_makes_the_result_invalid(onnx_file, workdir):
    if any(d.startswith("GPU") for d in ov.Core().available_devices):
        pytest.skip("this machine has an OpenVINO GPU: AUTO:GPU,CPU would run on it")
    doc = run_one(workdir, ov_case(onnx_file, device="AUTO:GPU,CPU"))
    assert doc["status"] == "ok", doc["reason"]
    assert doc["runtime"]["provider"] == "CPU"
    assert doc["validity"]["status"] == "INVALID"
    assert ("asked for OpenVINO device GPU (device AUTO:GPU,CPU) but it ran on CPU"
            in doc["validity"]["reasons"])
    facts = doc["environment"]["backend"]
    assert facts["device_asked"] == "AUTO:GPU,CPU" and facts["device_compiled"] == "AUTO:CPU"


def test_absent_npu_is_skipped_with_the_available_devices_in_the_hint(onnx_file, workdir):
    available = ov.Core().available_devices
    if any(d.startswith("NPU") for d in available):
        pytest.skip("this machine has an NPU")
    doc = run_one(workdir, ov_case(onnx_file, device="NPU"))
    assert doc["status"] == "skipped" and doc["timing"] is None
    assert doc["reason"] == ("OpenVINO device NPU not found here (available: %s)"
                             % ", ".join(available))
    assert doc["hint"].startswith("set options.device to one of the available OpenVINO devices: "
                                  + ", ".join(available))


def test_fp16_is_recorded_as_asked_and_as_compiled_and_invalid_when_not_honoured(onnx_file,
                                                                                 workdir):
    doc = run_one(workdir, ov_case(onnx_file, precision="fp16"))
    assert doc["status"] == "ok", doc["reason"]
    facts = doc["environment"]["backend"]
    assert facts["precision"] == "fp16"
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" in capabilities:
        assert facts["precision_reported"] == "fp16"
        assert reasons_besides_noise(doc) == []
        return
    # No fp16 arithmetic on this CPU: OpenVINO compiles without a word to the lower precision it
    # has (bf16 where the CPU has AVX512-BF16 or AMX, else f32); the result must say which.
    expected = "bf16" if "BF16" in capabilities else "fp32"
    assert facts["precision_reported"] == expected
    assert doc["validity"]["status"] == "INVALID"
    assert ("asked for precision fp16 but OpenVINO runs at %s on CPU "
            "(INFERENCE_PRECISION_HINT)" % expected in doc["validity"]["reasons"])


def test_a_corrupt_model_fails_as_bad_model_naming_the_file(workdir, tmp_path):
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"not a protobuf at all")
    doc = run_one(workdir, ov_case(junk))
    assert (doc["status"], doc["substatus"]) == ("failed", "bad_model")
    assert doc["reason"].startswith("%s: OpenVINO cannot read this model: " % junk)


def test_ir_without_its_bin_is_a_bad_model_naming_the_bin(tiny_ir, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(tiny_ir.read_bytes())
    with pytest.raises(BadModel, match="lone.xml: an OpenVINO IR needs its weights lone.bin"):
        OpenVINOBackend(ov_case(lone, fmt="openvino"), str(lone)).load()


def test_dynamic_input_dimension_gets_size_one(onnx_file, tmp_path):
    core = ov.Core()
    model = core.read_model(onnx_file)
    model.reshape({"input": ov.PartialShape([-1, 96, 96, 3])})
    xml = tmp_path / "dyn.xml"
    ov.save_model(model, str(xml))
    backend = OpenVINOBackend(ov_case(xml, fmt="openvino"), str(xml))
    backend.load()
    assert backend.describe()["inputs"][0]["shape"] == "[?,96,96,3]"
    [tensors] = backend.make_inputs(0, 1)
    assert tensors[0].data.shape == (1, 96, 96, 3)
    backend.invoke(tensors)
    assert backend._request.get_output_tensor(0).data.shape == (1, 1, 17, 3)


def test_without_openvino_the_case_is_skipped_with_the_install_hint(workdir, tmp_path):
    # A package named openvino that fails to import, first on the path: as when it is absent.
    fake = tmp_path / "hide" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'openvino'\")\n")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"never read: the import fails first")
    job_path, out = workdir(make_job([ov_case(model)]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "hide"), REPO]))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", job_path, "--out", out], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = json.load(open(os.path.join(out, "c-ov.json")))
    assert doc["status"] == "skipped"
    assert doc["reason"] == "openvino not installed (No module named 'openvino')"
    assert doc["hint"] == "pip install openvino"


def test_ir_pair_packs_to_the_same_tar_whatever_its_file_name(tiny_ir, tmp_path):
    from orchestrator.models import artifacts
    other = tmp_path / "renamed.xml"
    other.write_bytes(tiny_ir.read_bytes())
    other.with_suffix(".bin").write_bytes(tiny_ir.with_suffix(".bin").read_bytes())
    os.utime(other, (1, 1))
    first = artifacts.pack_openvino_ir(tiny_ir, tmp_path / "a")
    second = artifacts.pack_openvino_ir(other, tmp_path / "b")
    assert first[1] == second[1] == artifacts.sha256_file(first[0])
    with tarfile.open(str(first[0])) as tar:
        assert tar.getnames() == ["model.bin", "model.xml"]
        assert tar.extractfile("model.bin").read() == tiny_ir.with_suffix(".bin").read_bytes()


def ir_suite(tmp_path, xml):
    suite = {"name": "ir", "settings": {"warmup_runs": 3, "warmup_min_s": 0.05, "runs": 30,
                                        "min_duration_s": 0.3, "max_duration_s": 10,
                                        "case_timeout_s": 240},
             "cooldown": {"mode": "none", "seconds": 0},
             "models": [{"name": "tiny-ir", "path": str(xml)}],
             "matrix": [{"runtime": "openvino", "threads": [1]}]}
    path = tmp_path / "ir.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.slow
def test_benchfleet_run_of_a_user_ir_model_runs_the_ir_on_openvino(tiny_ir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli("run", ir_suite(tmp_path, tiny_ir), "-i", local_inventory(tmp_path),
                   "--results-dir", results)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    raw_dir = only_run_dir(results) / "raw" / "localhost"
    [result] = list(raw_dir.glob("c-*.json"))
    doc = json.loads(result.read_text())
    assert schema.check_result(doc) == []
    assert doc["status"] == "ok", doc["reason"]
    assert doc["model"]["format"] == "openvino" and doc["runtime"]["provider"] == "CPU"
    facts = doc["environment"]["backend"]
    assert (facts["model_format"], facts["model_file"]) == ("ir", "model.xml")
    # the blob on the device is the tar, unpacked beside it
    blob = tmp_path / "wd" / doc["model"]["path"]
    assert tarfile.is_tarfile(str(blob))
    assert (blob.parent / (blob.name + ".d") / "model.bin").is_file()


def test_suite_naming_an_ir_xml_without_its_bin_fails_to_load_naming_the_file(tiny_ir, tmp_path):
    lone = tmp_path / "lone.xml"
    lone.write_bytes(tiny_ir.read_bytes())
    suite = ir_suite(tmp_path, lone)
    proc = run_cli("validate", suite, "-i", local_inventory(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert ("%s: models[0].path: an OpenVINO IR needs its weights beside it: %s not found"
            % (suite, tmp_path / "lone.bin")) in proc.stderr
    assert "Traceback" not in proc.stderr
