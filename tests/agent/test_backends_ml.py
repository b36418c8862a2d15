"""Real inference through the TFLite and TensorFlow backends on the built-in movenet-tiny."""

import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import tiny_models  # noqa: E402,F401 - a fixture

from agent import harness  # noqa: E402
from agent.backends import get_backend_class, tflite  # noqa: E402
from agent.backends.base import BackendUnavailable, BadModel  # noqa: E402
from agent.backends.tensorflow import TensorFlowBackend  # noqa: E402
from agent.backends.tflite import TFLiteBackend  # noqa: E402
from extras import needs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = {"warmup_runs": 3, "warmup_min_s": 0.0, "runs": 30, "min_duration_s": 0.0,
         "max_duration_s": 10.0, "input_seed": 0, "input_pool": 2, "cv_max": 1.0,
         "case_timeout_s": 60.0}


def case(backend, threads=1, options=None):
    return {"case_id": "c-test", "runtime": {"backend": backend, "threads": threads, "affinity": None,
                                              "precision": "fp32", "options": options or {}},
            "settings": dict(QUICK)}


def run_once(backend):
    import numpy as np
    backend.load()
    inputs = backend.make_inputs(0, 2)
    for x in inputs:
        backend.invoke(x)
    out = backend.interpreter.get_tensor(backend.interpreter.get_output_details()[0]["index"])
    assert out.shape == (1, 1, 17, 3) and np.all(np.isfinite(out))
    return inputs


@pytest.mark.parametrize("variant,dtype", [("tflite-fp32", "int32"), ("tflite-int8", "uint8")])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xnnpack", [True, False])
def test_tflite_runs_movenet_tiny(tiny_models, variant, dtype, threads, xnnpack):
    backend = TFLiteBackend(case("tflite", threads, {"xnnpack": xnnpack}),
                            str(tiny_models[variant].local_path))
    inputs = run_once(backend)
    assert inputs[0][0].dtype.name == dtype and inputs[0][0].shape == (1, 96, 96, 3)
    facts = backend.describe()
    assert facts["delegate"] == ("xnnpack" if xnnpack else None)
    assert facts["threads"] == threads
    backend.close()


def test_tflite_inputs_are_seeded_and_in_range(tiny_models):
    backend = TFLiteBackend(case("tflite"), str(tiny_models["tflite-int8"].local_path))
    backend.load()
    a, b = backend.make_inputs(7, 3), backend.make_inputs(7, 3)
    assert all((x[0] == y[0]).all() for x, y in zip(a, b))
    assert not (a[0][0] == a[1][0]).all()  # the pool rotates different arrays
    assert a[0][0].min() >= 0 and a[0][0].max() <= 255 and a[0][0].max() > 200


def test_tflite_describe_names_runtime_ops_and_tensors(tiny_models):
    backend = TFLiteBackend(case("tflite", 2), str(tiny_models["tflite-fp32"].local_path))
    backend.load()
    facts = backend.describe()
    assert facts["runtime_module"] == "ai_edge_litert.interpreter"
    assert facts["version"]
    assert facts["delegation"]["ops_total"] > 50
    assert 0 < facts["delegation"]["ops_delegated"] < facts["delegation"]["ops_total"]  # XNNPACK
    (inp,) = facts["inputs"]
    assert (inp["shape"], inp["dtype"], inp["quantization"]) == ([1, 96, 96, 3], "int32", [0.0, 0])
    assert facts["outputs"][0]["shape"] == [1, 1, 17, 3] and facts["outputs"][0]["dtype"] == "float32"
    json.dumps(facts)  # goes into the result document as is


def test_tflite_refuses_a_file_that_is_not_a_flatbuffer(tmp_path, tiny_models):
    garbage = tmp_path / "model.tflite"
    garbage.write_bytes(b"this is not a model at all")
    with pytest.raises(BadModel, match="not a TFLite flatbuffer"):
        TFLiteBackend(case("tflite"), str(garbage)).load()
    with pytest.raises(BadModel, match="not a TFLite flatbuffer"):
        TFLiteBackend(case("tflite"), str(tiny_models["savedmodel"].local_path)).load()
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(open(str(tiny_models["tflite-fp32"].local_path), "rb").read()[:4096])
    with pytest.raises(BadModel):
        TFLiteBackend(case("tflite"), str(truncated)).load()
    with pytest.raises(BadModel, match="cannot read"):
        TFLiteBackend(case("tflite"), str(tmp_path / "missing.tflite")).load()


def test_tflite_without_any_runtime_is_unavailable_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(tflite, "_RUNTIMES", (("no_such_litert.interpreter", "no_such_litert"),))
    with pytest.raises(BackendUnavailable) as info:
        TFLiteBackend(case("tflite"), str(tmp_path / "m.tflite")).load()
    assert "no TFLite runtime" in info.value.reason
    assert info.value.hint.startswith("pip install ai-edge-litert")


def test_tflite_through_the_harness_gives_a_summary(tiny_models):
    backend = TFLiteBackend(case("tflite", 1), str(tiny_models["tflite-int8"].local_path))
    timing = harness.run_measurement(backend, dict(QUICK))["timing"]
    assert timing["runs"] >= 30 and timing["summary"]["p50"] > 0
    assert len(timing["latencies_ms"]) == timing["runs"]


def test_registry_maps_names_to_these_backends():
    assert get_backend_class("tflite") is TFLiteBackend
    assert get_backend_class("tensorflow") is TensorFlowBackend


def test_tensorflow_runs_the_savedmodel(tiny_models):
    backend = TensorFlowBackend(case("tensorflow", 2), str(tiny_models["savedmodel"].folder))
    backend.load()
    inputs = backend.make_inputs(0, 2)
    assert sorted(inputs[0]) == ["input"]
    assert inputs[0]["input"].dtype.name == "int32" and inputs[0]["input"].shape == (1, 96, 96, 3)
    for x in inputs:
        backend.invoke(x)
    facts = backend.describe()
    assert facts["version"] and isinstance(facts["built_with_tensorrt"], bool)
    assert facts["provider"] in ("CPU", "GPU") and "device" in facts
    assert facts["inputs"] == [{"name": "input", "shape": [1, 96, 96, 3], "dtype": "int32"}]
    json.dumps(facts)
    backend.close()


def test_tensorflow_op_profile_keeps_a_real_tf_profiler_trace(tiny_models):
    """op_profile: true on the tensorflow backend: a tf.profiler trace of a few inferences after
    the measurement, kept as a tar holding TensorBoard's .xplane.pb; the folder goes on close."""
    import os
    import tarfile
    backend = TensorFlowBackend(case("tensorflow", 2), str(tiny_models["savedmodel"].folder))
    backend.load()
    backend.invoke(backend.make_inputs(0, 1)[0])
    record = backend.op_profile(max_s=30.0, runs=5)
    assert record["status"] == "ok" and record["runs"] == 5 and record["top"] == []
    path = backend.artifacts["tf_trace.tar"]
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert any(n.endswith(".xplane.pb") for n in names), names
    backend.close()
    assert not os.path.exists(path)


def test_tensorflow_sets_threads_in_a_fresh_process(tiny_models):
    # Thread pools can only be set before TF starts: a worker process is fresh, this one is not.
    code = ("import json; from agent.backends.tensorflow import TensorFlowBackend as B; "
            "b = B({'runtime': {'threads': 1, 'options': {}}}, %r); b.load(); "
            "b.invoke(b.make_inputs(0, 1)[0]); print(json.dumps(b.describe()))"
            % str(tiny_models["savedmodel"].folder))
    out = subprocess.check_output([sys.executable, "-c", code], cwd=REPO,
                                  stderr=subprocess.DEVNULL, universal_newlines=True)
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["threads_applied"] is True and facts["threads"] == 1


@needs("tensorflow")
def test_tensorflow_refuses_a_folder_that_is_not_a_savedmodel(tmp_path):
    with pytest.raises(BadModel, match="not a loadable SavedModel"):
        TensorFlowBackend(case("tensorflow"), str(tmp_path)).load()


def test_tflite_times_invoke_alone_and_reports_set_tensor_as_stage_ms(tiny_models):
    settings = dict(case("tflite", 1, {})["settings"], runs=30, warmup_runs=3,
                    min_duration_s=0.0)
    for end_to_end, timed in ((False, "execute"), (True, "end_to_end")):
        backend = TFLiteBackend(case("tflite", 1, {}), str(tiny_models["tflite-fp32"].local_path))
        try:
            t = harness.run_measurement(backend, dict(settings, end_to_end=end_to_end))["timing"]
        finally:
            backend.close()
        assert t["timed"] == timed and t["runs"] == 30
        if end_to_end:
            assert t["stage_ms"] is None
        else:
            assert t["stage_ms"] > 0   # set_tensor of a 96x96x3 input, outside every latency
