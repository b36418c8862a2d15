"""Real LiteRT CompiledModel inference on movenet-tiny, through the backend and the agent.

This machine has no GPU LiteRT can open (no Vulkan, no OpenCL) and no NPU (the wheel's Intel
dispatch library is there, its OpenVINO libraries are not): the accelerator tests run what
LiteRT really does here, and skip where a machine has the hardware.
"""

import ctypes
import glob
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import tiny_models  # noqa: E402,F401 - a fixture

from agent_helpers import (FAST_SETTINGS, REPO, make_job,  # noqa: E402
                           reasons_besides_noise, run_agent)
from test_tflite_model import craft_model  # noqa: E402

from agent import schema, tflite_model  # noqa: E402
from agent.backends import catalog, get_backend_class  # noqa: E402
from agent.backends.base import BackendUnavailable, BadModel  # noqa: E402

litert = pytest.importorskip("ai_edge_litert")
from agent.backends.litert import (LiteRTBackend, RuntimeLog, accelerator_evidence,  # noqa: E402
                                   runtime_message)


def litert_case(model_path, variant="tflite-fp32", threads=1, case_id="c-lrt", **options):
    return {"case_id": case_id, "label": "movenet-tiny/%s litert t%s" % (variant, threads),
            "model": {"name": "movenet-tiny", "variant": variant, "format": "tflite",
                      "sha256": None, "path": model_path, "synthetic_ms": None},
            "runtime": {"backend": "litert", "threads": threads, "affinity": None,
                        "precision": variant.split("-")[-1], "options": options},
            "settings": dict(FAST_SETTINGS)}


def run_job(workdir, cases):
    job_path, out = workdir(make_job(cases))
    proc = run_agent(["run", job_path, "--out", out])
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    docs = {}
    for c in cases:
        with open(os.path.join(out, c["case_id"] + ".json")) as f:
            docs[c["case_id"]] = json.load(f)
        assert schema.check_result(docs[c["case_id"]]) == []
    return docs


def model(tiny_models, variant="tflite-fp32"):
    return str(tiny_models[variant].local_path)


def loaded(path, threads=1, **options):
    backend = LiteRTBackend(litert_case(path, threads=threads, **options), path)
    backend.load()
    return backend


def gpu_runtime_here():
    for name in ("libvulkan.so.1", "libOpenCL.so.1"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def npu_dispatch_here():
    """A vendor dispatch library in the wheel that the loader can open (none here: the Intel one
    needs OpenVINO's own libraries), else None."""
    vendors = os.path.join(os.path.dirname(litert.__file__), "vendors")
    for path in sorted(glob.glob(os.path.join(vendors, "*", "dispatch", "*.so"))):
        try:
            ctypes.CDLL(path)
            return path
        except OSError:
            continue
    return None


def test_registry_maps_litert_to_the_backend():
    assert get_backend_class("litert") is LiteRTBackend


@pytest.mark.parametrize("variant,dtype", [("tflite-fp32", "int32"), ("tflite-int8", "uint8")])
def test_litert_runs_movenet_tiny_on_the_cpu(tiny_models, variant, dtype):
    import numpy as np
    backend = loaded(model(tiny_models, variant))
    pool = backend.make_inputs(0, 2)
    assert pool[0][0].dtype.name == dtype and pool[0][0].shape == (1, 96, 96, 3)
    assert pool[0][0].max() > 200 and not (pool[0][0] == pool[1][0]).all()
    assert all((a[0] == b[0]).all() for a, b in zip(pool, backend.make_inputs(0, 2)))
    for x in pool:
        backend.invoke(x)
    (out,) = backend.read_outputs()
    assert out.shape == (1, 1, 17, 3) and np.all(np.isfinite(out))
    facts = backend.describe()
    assert facts["version"] == litert.__version__ and facts["delegate"] == "litert-cpu"
    assert facts["accelerator"] == "cpu" and facts["accelerators_compiled_for"] == ["cpu"]
    assert facts["accelerator_used"] is True and "validity_reasons" not in facts
    (inp,) = facts["inputs"]
    assert (inp["name"], inp["shape"], inp["dtype"]) == ("input", [1, 96, 96, 3], dtype)
    assert facts["outputs"][0]["shape"] == [1, 1, 17, 3]
    ops = len(tflite_model.read_model(model(tiny_models, variant)).ops())
    assert facts["delegation"]["ops_total"] == ops
    # LiteRT says how many ops its delegates took only as "all of them".
    assert facts["delegation"]["ops_delegated"] == (ops if facts["fully_accelerated"] else None)
    json.dumps(facts)
    backend.close()


def test_litert_gives_the_interpreters_keypoints(tiny_models):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    path = model(tiny_models)
    backend = loaded(path)
    x = backend.make_inputs(5, 1)[0]
    backend.invoke(x)
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[0])
    interpreter.invoke()
    expected = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(backend.read_outputs()[0], expected, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_threads_become_litert_cpu_threads(tiny_models, threads):
    # XNNPACK's pool has threads - 1 workers besides the caller: count the process's threads in
    # a fresh interpreter, after the imports (numpy's BLAS starts its own).
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("no /proc/self/task here")
    code = ("import os, json, numpy, ai_edge_litert.compiled_model\n"
            "from agent.backends.litert import LiteRTBackend as B\n"
            "b = B({'runtime': {'threads': %d, 'options': {}}}, %r)\n"
            "before = len(os.listdir('/proc/self/task'))\n"
            "b.load(); b.invoke(b.make_inputs(0, 1)[0])\n"
            "print(json.dumps([len(os.listdir('/proc/self/task')) - before, b.describe()]))"
            % (threads, model(tiny_models)))
    out = subprocess.check_output([sys.executable, "-c", code], cwd=REPO,
                                  stderr=subprocess.DEVNULL, universal_newlines=True)
    started, facts = json.loads(out.strip().splitlines()[-1])
    assert started == threads - 1
    assert facts["threads"] == threads and facts["cpu_num_threads"] == threads


def test_agent_runs_fp32_and_int8_with_litert_and_records_threads(tiny_models, workdir):
    docs = run_job(workdir, [litert_case(model(tiny_models), "tflite-fp32", 2, "c-fp32"),
                             litert_case(model(tiny_models, "tflite-int8"), "tflite-int8", 1,
                                         "c-int8")])
    for case_id, threads in (("c-fp32", 2), ("c-int8", 1)):
        doc = docs[case_id]
        assert doc["status"] == "ok", doc["reason"]
        assert reasons_besides_noise(doc) == []
        assert doc["runtime"]["version"] == litert.__version__
        assert doc["runtime"]["delegate"] == "litert-cpu"
        assert doc["runtime"]["options"] == {"accelerator": "cpu", "cpu_fallback": True,
                                             "require_full_delegation": False}
        env = doc["environment"]["backend"]
        assert env["cpu_num_threads"] == threads and env["accelerator_used"] is True
        assert env["timed"].startswith("TensorBuffer.write of every input")
        assert doc["timing"]["runs"] >= FAST_SETTINGS["runs"]
        assert doc["timing"]["summary"]["p50"] > 0


def test_gpu_asked_without_a_gpu_runs_on_the_cpu_and_is_invalid(tiny_models, workdir):
    found = gpu_runtime_here()
    if found:
        pytest.skip("%s loads here: LiteRT may find a GPU" % found)
    doc = run_job(workdir, [litert_case(model(tiny_models), accelerator="gpu")])["c-lrt"]
    assert doc["status"] == "ok", doc["reason"]
    assert doc["validity"]["status"] == "INVALID"
    (reason,) = reasons_besides_noise(doc)  # a busy machine may add a CV reason too
    assert reason.startswith("accelerator gpu was asked for but not used: LiteRT could not "
                             "compile for it: ")
    assert "No adapters found" in reason and reason.endswith("the model ran on the CPU")
    assert doc["runtime"]["delegate"] == "litert-cpu"
    env = doc["environment"]["backend"]
    assert env["accelerator"] == "gpu" and env["accelerators_compiled_for"] == ["cpu"]
    assert env["accelerator_used"] is False


def test_gpu_asked_without_cpu_fallback_is_unavailable_with_the_cause(tiny_models):
    if gpu_runtime_here():
        pytest.skip("a GPU runtime library loads here")
    with pytest.raises(BackendUnavailable) as info:
        loaded(model(tiny_models), accelerator="gpu", cpu_fallback=False)
    assert info.value.reason.startswith("LiteRT cannot compile model.tflite for gpu alone "
                                        "(cpu_fallback: false): ")
    assert "No adapters found" in info.value.reason and "cpu_fallback: true" in info.value.hint


def test_npu_asked_without_cpu_fallback_is_skipped_with_a_hint(tiny_models, workdir):
    found = npu_dispatch_here()
    if found:
        pytest.skip("%s loads here: LiteRT may reach an NPU" % found)
    doc = run_job(workdir, [litert_case(model(tiny_models), accelerator="npu",
                                        cpu_fallback=False)])["c-lrt"]
    assert doc["status"] == "skipped"
    assert doc["reason"].startswith("LiteRT cannot compile model.tflite for npu alone "
                                    "(cpu_fallback: false): Some ops are not accelerated")
    assert "No compiler plugin found" in doc["reason"]
    assert "dispatch_library" in doc["hint"] and "compiler_plugin" in doc["hint"]


def test_npu_that_takes_nothing_is_caught_although_litert_compiles_silently(tiny_models):
    # LiteRT compiles NPU|CPU without an error when no compiler plugin can partition the model.
    found = npu_dispatch_here()
    if found:
        pytest.skip("%s loads here: LiteRT may reach an NPU" % found)
    backend = loaded(model(tiny_models), accelerator="npu")
    backend.invoke(backend.make_inputs(0, 1)[0])
    facts = backend.describe()
    assert facts["accelerators_compiled_for"] == ["npu", "cpu"]
    assert facts["accelerator_used"] is False and facts["delegate"] == "litert-cpu"
    assert facts["validity_reasons"] == [
        "accelerator npu was asked for but not used: no compiler plugin partitioned it (Failed "
        "to apply compiler plugins: No compiler plugin found); the model ran on the CPU"]


def test_npu_use_needs_evidence_from_the_model_or_the_log():
    def info(*ops):
        codes = [{"builtin_code": 32, "custom_code": o, "version": 1, "name": o} for o in ops]
        return tflite_model.ModelInfo(codes, [list(ops)])
    assert accelerator_evidence("npu", "", info("DISPATCH_OP"))[0] is True
    log = "INFO: [compiled_model.cc:1] JIT compilation changed model, reserializing...\n"
    assert accelerator_evidence("npu", log, info())[0] is True
    assert accelerator_evidence("npu", "", info())[0] is None
    log = ("WARNING: [compiled_model.cc:1393] Failed to apply compiler plugins: No compiler "
           "plugin found")
    assert accelerator_evidence("npu", log, info()) == (
        False, "no compiler plugin partitioned it (Failed to apply compiler plugins: No compiler "
               "plugin found)")
    log = "WARNING: [gpu_registry.cc:160] GPU accelerator could not be loaded and registered."
    assert accelerator_evidence("gpu", log, info())[0] is False
    log = "INFO: [gpu_registry.cc:138] Dynamically loaded GPU accelerator(libX.so) registered."
    assert accelerator_evidence("gpu", log, info())[0] is True
    assert accelerator_evidence("gpu", "", info())[0] is None


def test_require_full_delegation_invalidates_a_model_litert_does_not_fully_accelerate(tiny_models):
    plain = loaded(model(tiny_models)).describe()
    strict = loaded(model(tiny_models), require_full_delegation=True).describe()
    assert plain["fully_accelerated"] is False  # movenet's int32 input casts stay on TFLite kernels
    assert "validity_reasons" not in plain
    assert strict["validity_reasons"] == [
        "require_full_delegation: LiteRT reports the model as not fully accelerated (some ops "
        "run on plain TFLite CPU kernels)"]


def test_a_corrupt_model_fails_as_bad_model_naming_the_file(tiny_models, tmp_path, workdir):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(open(model(tiny_models), "rb").read()[:4096])
    doc = run_job(workdir, [litert_case(str(cut))])["c-lrt"]
    assert doc["status"] == "failed" and doc["substatus"] == "bad_model"
    assert doc["reason"].startswith(str(cut) + ": ")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(BadModel, match="junk.tflite: not a TFLite flatbuffer"):
        loaded(str(junk))


def test_a_flatbuffer_litert_cannot_use_is_a_bad_model(tmp_path):
    path = tmp_path / "bare.tflite"
    craft_model(["ADD"], path)  # valid to the reader; no tensors and no signature for LiteRT
    with pytest.raises(BadModel, match="bare.tflite: LiteRT compiled this model but cannot bind"):
        loaded(str(path))


def test_a_missing_dispatch_library_folder_is_unavailable(tiny_models, tmp_path):
    missing = str(tmp_path / "no-such-vendor")
    with pytest.raises(BackendUnavailable) as info:
        loaded(model(tiny_models), accelerator="npu", dispatch_library=missing)
    assert info.value.reason == ("dispatch_library %s (runtime.options.dispatch_library) not "
                                 "found" % missing)
    assert "runtime.options.dispatch_library" in info.value.hint


def test_without_ai_edge_litert_the_case_is_skipped_with_the_install_hint(workdir, tmp_path):
    # A package that fails to import, first on the path: the agent sees ai_edge_litert missing.
    fake = tmp_path / "hide" / "ai_edge_litert"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    model_file = tmp_path / "m.tflite"
    model_file.write_bytes(b"never read: the import fails first")
    job_path, out = workdir(make_job([litert_case(str(model_file))]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), REPO]))
    proc = subprocess.run([sys.executable, "-m", "agent", "run", job_path, "--out", out], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    with open(os.path.join(out, "c-lrt.json")) as f:
        doc = json.load(f)
    assert doc["status"] == "skipped"
    assert doc["reason"] == "ai_edge_litert not installed (hidden by the test)"
    assert doc["hint"] == catalog.BY_NAME["litert"].hint


@pytest.mark.parametrize("options,problem", [
    ({"acelerator": "gpu"}, "cases[0].runtime.options.acelerator: unknown option for litert "
                            "(did you mean accelerator?)"),
    ({"accelerator": "tpu"}, "cases[0].runtime.options.accelerator: must be one of cpu, gpu, npu, "
                             "got 'tpu'"),
    ({"cpu_fallback": "no"}, "cases[0].runtime.options.cpu_fallback: expected true or false, got "
                             "the string 'no'"),
])
def test_the_catalog_rejects_bad_litert_options_naming_the_field(options, problem):
    problems = schema.check_case(litert_case("m.tflite", **options))
    assert len(problems) == 1 and problems[0].startswith(problem)
    assert schema.check_case(litert_case("m.tflite", accelerator="npu", cpu_fallback=False,
                                         dispatch_library="/opt/qnn")) == []


def test_runtime_log_captures_fd2_and_passes_it_on(capfd):
    # LiteRT objects of earlier tests in this process print from their C destructors when the
    # garbage collector gets to them: let it do so now, not inside the captured window.
    import gc
    gc.collect()
    capfd.readouterr()
    with RuntimeLog() as log:
        os.write(2, b"INFO: [environment.cc:36] from C\n")
    assert log.text == "INFO: [environment.cc:36] from C\n"
    assert capfd.readouterr().err == log.text


def test_runtime_message_keeps_the_cause_and_drops_source_locations():
    exc = RuntimeError("ERROR: [./litert/cc/litert_compiled_model.h:1961]\n"
                       "\u2514 ERROR: [litert/runtime/compiled_model.cc:1036]")
    log = ("WARNING: [npu_registry.cc:34] NPU accelerator could not be loaded\n"
           "ERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: "
           "No adapters found\n"
           "E0000 00:00:1796219406.722342   18829 delegate_webgpu.cc:736] Failed to get or "
           "create delegate\n")
    assert runtime_message(exc, log, "gpu") == (
        "Failed to initialize WebGPU environment: INTERNAL: No adapters found; Failed to get or "
        "create delegate")
