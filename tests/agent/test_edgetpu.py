"""Edge TPU backend and TFLite delegate options: everything this machine can run for real.

There is no Coral and no libedgetpu here. Tests that stand in for that hardware say so in their
names: `no_hardware` (the real missing-library path), `stub_library` (a real shared library built
here that answers like libedgetpu with no TPU, or like a delegate that takes nothing) and
`fake_tpu_interpreter` (the one place where an interpreter is faked: a TPU that ran the model).
"""

import ctypes.util
import os
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import tiny_models  # noqa: E402,F401 - a fixture

from agent_helpers import FAST_SETTINGS, REPO, make_job, run_agent  # noqa: E402
from test_tflite_model import craft_model  # noqa: E402

from agent import fsutil, harness, schema  # noqa: E402
from agent.backends import get_backend_class  # noqa: E402
from agent.backends.base import BackendUnavailable, BadModel  # noqa: E402
from agent.backends.edgetpu import EDGETPU_LIBRARY, EdgeTPUBackend  # noqa: E402
from agent.backends.tflite import TFLiteBackend  # noqa: E402

COMPILED = ["QUANTIZE", "edgetpu-custom-op", "SOFTMAX", "edgetpu-custom-op", "DEQUANTIZE"]

# A plugin with TFLite's external-delegate entry points. Built as libedgetpu.so.1 with
# STUB_NO_DEVICE it fails the way libedgetpu does with no TPU attached; built plain it returns a
# delegate whose Prepare claims no node (TfLiteDelegate: data_, then Prepare; the rest zeroed).
STUB_C = r"""
#include <stdlib.h>
#include <string.h>
static int prepare(void *context, void *delegate) { (void)context; (void)delegate; return 0; }
void *tflite_plugin_create_delegate(char **keys, char **values, size_t n,
                                    void (*report)(const char *)) {
  size_t i;
  for (i = 0; i < n; i++)
    if (strcmp(keys[i], "fail") == 0) { report(values[i]); return NULL; }
#ifdef STUB_NO_DEVICE
  report("Failed to open an Edge TPU device");
  return NULL;
#else
  void **d = calloc(32, sizeof(void *));
  d[1] = (void *)prepare;
  return d;
#endif
}
void tflite_plugin_destroy_delegate(void *d) { free(d); }
"""


def case(backend="edgetpu", options=None, threads=1):
    return {"case_id": "c-test", "runtime": {"backend": backend, "threads": threads,
                                              "affinity": None, "precision": "int8",
                                              "options": options or {}},
            "settings": dict(FAST_SETTINGS)}


def job_case(case_id, path, backend, options=None):
    doc = case(backend, options)
    doc.update(case_id=case_id, label="%s %s" % (case_id, backend),
               model={"name": "m", "variant": "int8-edgetpu", "format": "tflite",
                      "sha256": None, "path": str(path), "synthetic_ms": None})
    return doc


def agent_results(workdir, cases, env=None, path=()):
    """Runs the agent on cases; env: its environment (a stub library's folder on
    LD_LIBRARY_PATH), path: folders put before the repo on PYTHONPATH (a tflite_runtime)."""
    job_path, out = workdir(make_job(cases))
    if env is None and not path:
        proc = run_agent(["run", job_path, "--out", out])
    else:
        pythonpath = os.pathsep.join([str(p) for p in path] + [REPO])
        proc = subprocess.run([sys.executable, "-m", "agent", "run", job_path, "--out", out],
                              cwd=REPO, env=dict(env or os.environ, PYTHONPATH=pythonpath),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=120)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    docs = {}
    for c in cases:
        doc = fsutil.read_json(os.path.join(out, c["case_id"] + ".json"))
        assert schema.check_result(doc) == [], doc
        docs[c["case_id"]] = doc
    return docs


def tflite_runtime_of_version(tmp_path, version):
    """A folder holding a package `tflite_runtime` of the given version. The real tflite-runtime
    (2.14 at the newest, built for numpy 1) cannot run beside this machine's numpy 2, so this
    one is ai_edge_litert's interpreter module under tflite_runtime's name: the same
    load_delegate and Interpreter API, as pycoral's pinned tflite_runtime has."""
    folder = tmp_path / ("tflite-runtime-" + version)
    package = folder / "tflite_runtime"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("__version__ = %r\n" % version)
    (package / "interpreter.py").write_text(
        "from ai_edge_litert.interpreter import *  # noqa\n"
        "from ai_edge_litert.interpreter import Interpreter, load_delegate  # noqa\n")
    return folder


@pytest.fixture
def with_tflite_runtime(tmp_path, monkeypatch):
    """Makes `import tflite_runtime` give a package of the version asked, in this process."""
    pytest.importorskip("ai_edge_litert.interpreter")

    def install(version):
        monkeypatch.syspath_prepend(str(tflite_runtime_of_version(tmp_path, version)))
        for name in TFLITE_RUNTIME_MODULES:
            monkeypatch.delitem(sys.modules, name, raising=False)
    yield install
    for name in TFLITE_RUNTIME_MODULES:  # imported from the folder: gone with it
        sys.modules.pop(name, None)


TFLITE_RUNTIME_MODULES = ("tflite_runtime", "tflite_runtime.interpreter")


@pytest.fixture
def compiled(tmp_path):
    path = tmp_path / "m_edgetpu.tflite"
    craft_model(COMPILED, path)
    return path


def has_libedgetpu():
    return bool(ctypes.util.find_library("edgetpu"))


def stub_library(tmp_path, name, *defines):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stub delegate library")
    folder = tmp_path / ("lib-" + name)
    folder.mkdir()
    src = folder / "stub.c"
    src.write_text(STUB_C)
    lib = folder / name
    subprocess.check_call([cc, "-shared", "-fPIC", "-o", str(lib), str(src)]
                          + ["-D" + d for d in defines])
    return lib


def test_registry_gives_the_edgetpu_backend_class():
    assert get_backend_class("edgetpu") is EdgeTPUBackend


def test_uncompiled_model_is_refused_with_the_compile_command(tiny_models):
    path = str(tiny_models["tflite-int8"].local_path)
    with pytest.raises(BadModel) as info:
        EdgeTPUBackend(case(), path).load()
    assert str(info.value) == (
        "%s is not compiled for the Edge TPU (no edgetpu-custom-op); compile it with "
        "edgetpu_compiler or use variant int8-edgetpu" % path)


def test_edgetpu_refuses_a_file_that_is_not_tflite(tmp_path):
    junk = tmp_path / "m.tflite"
    junk.write_bytes(b"nothing like a flatbuffer")
    with pytest.raises(BadModel, match="not a TFLite flatbuffer"):
        EdgeTPUBackend(case(), str(junk)).load()
    with pytest.raises(BadModel, match="needs a .tflite model file"):
        EdgeTPUBackend(case(), None).load()


def test_edgetpu_without_library_is_skipped_with_install_hint_no_hardware(compiled,
                                                                          with_tflite_runtime):
    if has_libedgetpu():
        pytest.skip("libedgetpu is installed here")
    with_tflite_runtime("2.5.0.post1")  # pycoral's pin
    with pytest.raises(BackendUnavailable) as info:
        EdgeTPUBackend(case(), str(compiled)).load()
    assert info.value.reason == "%s not found" % EDGETPU_LIBRARY
    assert info.value.hint.startswith("sudo apt-get install libedgetpu1-std")
    assert "https://coral.ai/software/#debian-packages" in info.value.hint


def test_agent_run_of_edgetpu_case_without_library_is_skipped_with_reason_and_hint_no_hardware(
        workdir, compiled, tiny_models, tmp_path):
    if has_libedgetpu():
        pytest.skip("libedgetpu is installed here")
    pytest.importorskip("ai_edge_litert.interpreter")
    docs = agent_results(workdir, [
        job_case("c-tpu", compiled, "edgetpu"),
        job_case("c-plain", tiny_models["tflite-int8"].local_path, "edgetpu")],
        path=[tflite_runtime_of_version(tmp_path, "2.11.0")])
    tpu, plain = docs["c-tpu"], docs["c-plain"]
    assert (tpu["status"], tpu["reason"]) == ("skipped", "libedgetpu.so.1 not found")
    assert tpu["hint"].startswith("sudo apt-get install libedgetpu1-std")
    assert (plain["status"], plain["substatus"]) == ("failed", "bad_model")
    assert "not compiled for the Edge TPU" in plain["reason"]


def test_edgetpu_library_without_a_tpu_is_skipped_with_plug_in_hint_stub_library(
        workdir, compiled, tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    lib = stub_library(tmp_path, EDGETPU_LIBRARY, "STUB_NO_DEVICE")
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib.parent))
    doc = agent_results(workdir, [job_case("c-tpu", compiled, "edgetpu", {"device": "usb:0"})],
                        env=env, path=[tflite_runtime_of_version(tmp_path, "2.11.0")])["c-tpu"]
    assert doc["status"] == "skipped"
    assert doc["reason"] == "no Edge TPU attached (device usb:0: Failed to open an Edge TPU device)"
    assert doc["hint"] == ("plug in the Coral USB Accelerator (use a USB 3 port) and check "
                           "`lsusb | grep -E '1a6e:089a|18d1:9302'`")


def test_edgetpu_refuses_ai_edge_litert_before_loading_libedgetpu_stub_library(
        compiled, tmp_path, monkeypatch):
    """The old code loaded the delegate through ai_edge_litert (TFLite 2.16+), which libedgetpu
    users report segfaulting; now the case is skipped with the reason before any library loads."""
    pytest.importorskip("ai_edge_litert.interpreter")
    for name in TFLITE_RUNTIME_MODULES + ("pycoral",):  # not installed
        monkeypatch.setitem(sys.modules, name, None)
    loaded = []
    monkeypatch.setattr("agent.backends.edgetpu.open_library", loaded.append)
    with pytest.raises(BackendUnavailable) as info:
        EdgeTPUBackend(case(), str(compiled)).load()
    assert info.value.reason.startswith(
        "the Edge TPU needs pycoral or tflite_runtime; ai_edge_litert ")
    assert "full TensorFlow does not work with it" in info.value.reason
    assert info.value.hint.startswith("sudo apt-get install python3-pycoral")
    assert loaded == []


def test_edgetpu_refuses_tflite_runtime_newer_than_2_11_unless_allowed_stub_library(
        compiled, tmp_path, with_tflite_runtime, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycoral", None)
    with_tflite_runtime("2.14.0")
    with pytest.raises(BackendUnavailable) as info:
        EdgeTPUBackend(case(), str(compiled)).load()
    assert info.value.reason == ("tflite_runtime 2.14.0 is newer than 2.11, the newest known to "
                                 "work with libedgetpu (newer ones are reported to segfault)")
    assert info.value.hint.endswith("or set options.allow_untested_tflite: true for a libedgetpu "
                                    "built against tflite_runtime 2.14.0")
    # Allowed: it goes on to load the library (a stub that finds no TPU).
    lib = stub_library(tmp_path, EDGETPU_LIBRARY, "STUB_NO_DEVICE")
    monkeypatch.setattr("agent.backends.edgetpu.EDGETPU_LIBRARY", str(lib))
    backend = EdgeTPUBackend(case(options={"allow_untested_tflite": True}), str(compiled))
    with pytest.raises(BackendUnavailable) as info:
        backend.load()
    assert info.value.reason == "no Edge TPU attached (Failed to open an Edge TPU device)"
    assert backend._runtime == ("tflite_runtime.interpreter", "2.14.0")


def test_edgetpu_without_pycoral_or_tflite_runtime_names_both(compiled, monkeypatch):
    for name in TFLITE_RUNTIME_MODULES + ("pycoral", "ai_edge_litert",
                                          "ai_edge_litert.interpreter", "tensorflow",
                                          "tensorflow.lite.python.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailable) as info:
        EdgeTPUBackend(case(), str(compiled)).load()
    assert info.value.reason == "neither pycoral nor tflite_runtime is installed"
    assert info.value.hint.startswith("sudo apt-get install python3-pycoral")


def test_tflite_version_used_with_the_edge_tpu_is_recorded_fake_tpu_interpreter(compiled):
    backend = loaded_with_fake_tpu(compiled, {})
    backend._runtime = ("tflite_runtime.interpreter", "2.5.0.post1")
    assert backend.describe()["delegation"]["tflite_runtime"] == "2.5.0.post1"


class FakeTPUInterpreter(object):
    """Stands in for a TFLite interpreter with the Edge TPU delegate: one uint8 input."""

    def __init__(self):
        self.invocations = 0

    def get_input_details(self):
        import numpy as np
        return [{"name": "x", "index": 0, "shape": [1, 4], "dtype": np.uint8,
                 "quantization": (0.5, 3)}]

    def get_output_details(self):
        import numpy as np
        return [{"name": "y", "index": 1, "shape": [1, 2], "dtype": np.float32,
                 "quantization": (0.0, 0)}]

    def set_tensor(self, index, array):
        assert index == 0 and array.dtype.name == "uint8"

    def invoke(self):
        self.invocations += 1


class FakeTPUBackend(EdgeTPUBackend):
    """The real backend (model checks, counts, validity) with only the TPU interpreter faked."""

    def _with_pycoral(self):
        self._via = "fake"
        return FakeTPUInterpreter()


def loaded_with_fake_tpu(path, options):
    backend = FakeTPUBackend(case(options=options), str(path))
    backend.load()
    return backend


def test_require_full_delegation_makes_cpu_fallback_invalid_fake_tpu_interpreter(compiled):
    backend = FakeTPUBackend(case(options={"require_full_delegation": True}), str(compiled))
    measured = harness.run_measurement(backend, dict(FAST_SETTINGS, min_duration_s=0.0))
    facts = backend.describe()
    assert backend.interpreter.invocations >= FAST_SETTINGS["runs"]
    assert facts["delegate"] == "edgetpu"
    delegation = facts["delegation"]
    assert (delegation["ops_total"], delegation["ops_delegated"]) == (5, 2)
    assert (delegation["tpu_segments"], delegation["cpu_ops"]) == (2, 3)
    assert delegation["fallback_ops"] == ["QUANTIZE", "SOFTMAX", "DEQUANTIZE"]
    assert facts["validity_reasons"] == [
        "3 ops fell back to the CPU: QUANTIZE, SOFTMAX, DEQUANTIZE"]
    verdict = harness.validity(measured["timing"], FAST_SETTINGS, facts["validity_reasons"])
    assert verdict["status"] == "INVALID" and verdict["reasons"][0] == facts["validity_reasons"][0]


def test_full_delegation_or_no_requirement_stays_valid_fake_tpu_interpreter(tmp_path, compiled):
    full = tmp_path / "full_edgetpu.tflite"
    craft_model(["edgetpu-custom-op"], full)
    facts = loaded_with_fake_tpu(full, {"require_full_delegation": True}).describe()
    assert (facts["delegation"]["ops_total"], facts["delegation"]["ops_delegated"]) == (1, 1)
    assert facts["delegation"]["fallback_ops"] == [] and "validity_reasons" not in facts
    facts = loaded_with_fake_tpu(compiled, {}).describe()
    assert facts["delegation"]["cpu_ops"] == 3 and "validity_reasons" not in facts


@pytest.mark.parametrize("variant", ["tflite-fp32", "tflite-int8"])
def test_xnnpack_on_delegates_ops_and_off_delegates_none(tiny_models, variant):
    path = str(tiny_models[variant].local_path)
    counts = {}
    for xnnpack in (True, False):
        backend = TFLiteBackend(case("tflite", {"xnnpack": xnnpack}), path)
        backend.load()
        counts[xnnpack] = backend.describe()["delegation"]
        backend.close()
    on, off = counts[True], counts[False]
    assert on["ops_total"] == off["ops_total"] == len(off["fallback_ops"]) > 100
    assert off["ops_delegated"] == 0 and off["delegates"] == []
    assert 0 < on["ops_delegated"] < on["ops_total"] and on["delegates"] == ["xnnpack"]
    assert on["ops_delegated"] + len(on["fallback_ops"]) == on["ops_total"]
    # XNNPACK takes every convolution of these models; what stays is glue it has no kernel for.
    assert "CONV_2D" not in on["fallback_ops"] and "DEPTHWISE_CONV_2D" not in on["fallback_ops"]


def test_require_full_delegation_turns_xnnpack_fallback_into_invalid_result(workdir, tiny_models):
    path = tiny_models["tflite-fp32"].local_path
    docs = agent_results(workdir, [
        job_case("c-strict", path, "tflite", {"require_full_delegation": True}),
        job_case("c-lax", path, "tflite")])
    strict, lax = docs["c-strict"], docs["c-lax"]
    assert strict["status"] == "ok" and strict["validity"]["status"] == "INVALID"
    left = strict["delegation"]["fallback_ops"]
    assert [r for r in strict["validity"]["reasons"]
            if r.startswith("%d ops fell back to the CPU: " % len(left))]
    assert strict["runtime"]["delegate"] == "xnnpack"
    assert strict["delegation"]["ops_delegated"] == strict["delegation"]["ops_total"] - len(left)
    assert not any("fell back" in r for r in lax["validity"]["reasons"])


def test_missing_external_delegate_is_skipped_naming_the_path(workdir, tiny_models, tmp_path):
    missing = str(tmp_path / "nowhere" / "libtensorflowlite_gpu_delegate.so")
    with pytest.raises(BackendUnavailable) as info:
        TFLiteBackend(case("tflite", {"delegate": missing}),
                      str(tiny_models["tflite-fp32"].local_path)).load()
    assert info.value.reason == "delegate %s (runtime.options.delegate) not found" % missing
    doc = agent_results(workdir, [job_case("c-gpu", tiny_models["tflite-fp32"].local_path,
                                           "tflite", {"delegate": missing})])["c-gpu"]
    assert doc["status"] == "skipped" and missing in doc["reason"] and doc["hint"]


def test_external_delegate_loads_with_its_options_stub_library(tiny_models, tmp_path):
    lib = stub_library(tmp_path, "libstub_delegate.so")
    path = str(tiny_models["tflite-fp32"].local_path)
    backend = TFLiteBackend(case("tflite", {"xnnpack": False, "delegate": str(lib),
                                            "delegate_options": {"precision": "fp16"}}), path)
    backend.load()
    backend.invoke(backend.make_inputs(0, 1)[0])
    facts = backend.describe()
    assert facts["delegate"] == "libstub_delegate.so"
    assert facts["delegation"]["delegates"] == ["libstub_delegate.so"]
    assert facts["delegation"]["ops_delegated"] == 0  # the stub's Prepare claims no node
    backend.close()
    with pytest.raises(BackendUnavailable) as info:
        TFLiteBackend(case("tflite", {"delegate": str(lib),
                                      "delegate_options": {"fail": "no GPU in this box"}}),
                      path).load()
    assert str(lib) in info.value.reason and info.value.reason.endswith("; no GPU in this box")
