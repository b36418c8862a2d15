"""The tf-trt backend: every path this GPU-less, TensorRT-less machine can run, for real.

Tests whose name ends in _no_gpu stand in for the GPU: a fake converter (copying the SavedModel
instead of TrtGraphConverterV2) and a fake TensorRT check; everything around them is real.
"""

import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from fixtures_models import TEST_CACHE  # noqa: E402

from agent import fsutil, schema  # noqa: E402
from agent.backends import devcache, get_backend_class, tftrt  # noqa: E402
from agent.backends.base import BackendUnavailable  # noqa: E402
from agent_helpers import FAST_SETTINGS, make_job, run_agent  # noqa: E402


@pytest.fixture(scope="module")
def tiny_savedmodel():
    """movenet-tiny's SavedModel alone (the shared tiny_models fixture also needs every other
    variant's tools); same content-keyed cache as fixtures_models."""
    from orchestrator.models import zoo
    from orchestrator.errors import ModelBuildError
    try:
        return zoo.build_model("movenet-tiny", "savedmodel", cache_dir=TEST_CACHE)
    except ModelBuildError as exc:
        pytest.skip(str(exc))


def _tf_trt_usable_here():
    try:
        import tensorflow as tf
        tftrt.require_tensorrt(tf)
        tftrt.require_gpu(tf)
    except BackendUnavailable:
        return False
    return True


def tftrt_case(model, precision="fp32", **settings):
    merged = dict(FAST_SETTINGS, **settings)
    return {"case_id": "c-tftrt-%s" % precision, "label": "movenet-tiny tf-trt %s" % precision,
            "model": {"name": "movenet-tiny", "variant": "savedmodel", "format": "savedmodel",
                      "sha256": model.sha256, "path": str(model.folder), "synthetic_ms": None},
            "runtime": {"backend": "tf-trt", "threads": None, "affinity": None,
                        "precision": precision, "options": {}},
            "settings": merged}


def test_tftrt_without_tensorrt_is_skipped_with_reason_and_hint_through_the_agent(
        tiny_savedmodel, workdir):
    if _tf_trt_usable_here():
        pytest.skip("TensorFlow here has TensorRT and a GPU: the case would run, not skip")
    job_path, out = workdir(make_job([tftrt_case(tiny_savedmodel, "fp16")]))
    proc = run_agent(["run", job_path, "--out", out], timeout=300)
    assert proc.returncode == schema.EXIT_OK, proc.stderr
    doc = fsutil.read_json(os.path.join(out, "c-tftrt-fp16.json"))
    assert schema.check_result(doc) == []
    assert doc["status"] == "skipped" and doc["timing"] is None
    assert ("built without TensorRT" in doc["reason"] or "libnvinfer" in doc["reason"]
            or "no NVIDIA GPU" in doc["reason"]), doc["reason"]
    assert "TensorRT" in doc["hint"] or "nvidia-smi" in doc["hint"]
    assert not os.path.exists(os.path.join(workdir.root, "cache", "tf-trt"))  # nothing converted


def test_tensorflow_without_tensorrt_names_its_version():
    tf = pytest.importorskip("tensorflow")
    from agent.backends.tensorflow import _built_with_tensorrt
    if _built_with_tensorrt(tf):
        pytest.skip("this TensorFlow was built with TensorRT")
    with pytest.raises(BackendUnavailable) as info:
        tftrt.require_tensorrt(tf)
    assert info.value.reason == "tensorflow %s was built without TensorRT" % tf.__version__
    assert info.value.hint == tftrt.tf_trt_hint(tf.__version__)


@pytest.mark.parametrize("version", ["2.18.0", "2.21.0", "3.0.0"])
def test_tensorflow_2_18_and_newer_hint_names_the_last_tf_trt_version_and_the_onnx_path(version):
    hint = tftrt.tf_trt_hint(version)
    assert "2.17 and older" in hint and "TensorFlow %s" % version in hint
    assert "tensorrt backend" in hint and "onnx" in hint


@pytest.mark.parametrize("version", ["2.7.0+nv22.1", "2.15.1", "2.17.0", None, "unknown"])
def test_tensorflow_that_can_have_tf_trt_gets_the_install_hint(version):
    hint = tftrt.tf_trt_hint(version)
    assert hint == "install a TensorFlow build with TensorRT (NVIDIA container or JetPack wheel)"


def test_the_probe_gate_gives_the_version_aware_hint():
    from agent.backends import catalog
    probe = {"runtimes": {"tensorflow": {"version": "2.19.0", "tensorrt": {
        "usable": False, "reason": "tensorflow 2.19.0 was built without TensorRT"}}}}
    reason, hint = catalog.needs_tf_with_tensorrt(probe)
    assert reason == "tensorflow cannot use TensorRT: tensorflow 2.19.0 was built without TensorRT"
    assert "2.17 and older" in hint and "onnx" in hint


class _Devices(object):
    def __init__(self, gpus):
        self.gpus = gpus

    def list_physical_devices(self, kind):
        return list(self.gpus) if kind == "GPU" else []

    def get_device_details(self, device):
        return {"device_name": "NVIDIA Tegra X1"}


class _Tf20(object):
    """tf as TensorFlow 2.0 has it: list_physical_devices only under tf.config.experimental."""
    __version__ = "2.0.0"

    def __init__(self, gpus):
        self.config = type("config", (), {})()
        self.config.experimental = _Devices(gpus)


def test_tensorflow_2_0_without_tf_config_list_physical_devices_still_finds_the_gpu():
    gpu = type("PhysicalDevice", (), {"name": "/physical_device:GPU:0"})()
    assert tftrt.require_gpu(_Tf20([gpu])) == "NVIDIA Tegra X1"
    with pytest.raises(BackendUnavailable) as info:
        tftrt.require_gpu(_Tf20([]))
    assert info.value.reason == "no NVIDIA GPU visible to TensorFlow"
    assert "experimental.list_physical_devices" in info.value.hint  # a command TF 2.0 can run


class _Utils(object):
    def __init__(self, linked, loaded):
        self.linked, self.loaded = linked, loaded

    def is_tensorrt_enabled(self):
        return True

    def get_linked_tensorrt_version(self):
        return self.linked

    def get_loaded_tensorrt_version(self):
        return self.loaded


class _RefusingTrtConvert(object):
    """trt_convert whose TrtGraphConverterV2 refuses the loaded TensorRT as TensorFlow's own
    version check does (a RuntimeError from the constructor)."""
    DEFAULT_TRT_CONVERSION_PARAMS = None

    def __init__(self, message):
        self.message = message

    def TrtGraphConverterV2(self, **kwargs):  # noqa: N802 (TensorFlow's name)
        raise RuntimeError(self.message)


@pytest.mark.parametrize("message", ["Incompatible TensorRT major version",
                                     "Incompatible TensorRT versions"])
def test_incompatible_tensorrt_is_unavailable_naming_the_linked_version(monkeypatch, message):
    monkeypatch.setattr(tftrt, "_py_utils", lambda: _Utils((8, 2, 1), (10, 3, 0)))
    with pytest.raises(BackendUnavailable) as info:
        tftrt.make_converter(_RefusingTrtConvert(message), "/nonexistent", "fp16", {},
                             tf_version="2.7.0+nv22.1")
    reason, hint = info.value.reason, info.value.hint
    assert reason.startswith("tensorflow 2.7.0+nv22.1 refused the loaded TensorRT (%s)" % message)
    assert "loaded 10.3.0, built against 8.2.1" in reason
    assert hint.startswith("install TensorRT 8.2.1, the version tensorflow 2.7.0+nv22.1 was built "
                           "against") and "8.x" in hint


def test_incompatible_tensorrt_with_unknown_versions_still_says_what_to_install(monkeypatch):
    monkeypatch.setattr(tftrt, "_py_utils", lambda: None)
    with pytest.raises(BackendUnavailable) as info:
        tftrt.make_converter(_RefusingTrtConvert("Incompatible TensorRT major version"), "/x",
                             "fp32", {}, tf_version="2.9.1")
    assert "loaded unknown, built against unknown" in info.value.reason
    assert "the TensorRT version tensorflow 2.9.1 was built against" in info.value.hint


def test_other_converter_errors_are_not_dressed_up_as_version_problems(monkeypatch):
    monkeypatch.setattr(tftrt, "_py_utils", lambda: _Utils((8, 6, 1), (8, 6, 1)))
    with pytest.raises(RuntimeError, match="out of memory"):
        tftrt.make_converter(_RefusingTrtConvert("CUDA out of memory"), "/x", "fp32", {},
                             tf_version="2.15.0")


def test_no_gpu_visible_is_unavailable_with_a_hint():
    tf = pytest.importorskip("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible here")
    with pytest.raises(BackendUnavailable) as info:
        tftrt.require_gpu(tf)
    assert info.value.reason == "no NVIDIA GPU visible to TensorFlow"
    assert "nvidia-smi" in info.value.hint


@pytest.mark.parametrize("built,enabled,expected", [
    (False, False, "tensorflow 2.9.0 was built without TensorRT"),
    (True, False, "TensorRT libraries (libnvinfer) not found by tensorflow 2.9.0"),
    (None, False, "tensorflow 2.9.0 was built without TensorRT (or libnvinfer is missing)"),
    (True, True, None),
    (None, True, None),
])
def test_tensorrt_problem_says_what_is_missing(built, enabled, expected):
    assert tftrt.tensorrt_problem("2.9.0", built, enabled) == expected


BASE = dict(model_sha256="a" * 64, tf_version="2.15.0",
            trt_version={"linked": "8.6.1", "loaded": "8.6.1"}, precision="fp16",
            gpu_name="NVIDIA GeForce GTX 1660", converter_options={"minimum_segment_size": 3})
CHANGES = [("model_sha256", "b" * 64), ("tf_version", "2.16.1"),
           ("trt_version", {"linked": "8.6.1", "loaded": "10.0.1"}), ("precision", "fp32"),
           ("precision", "int8"), ("gpu_name", "Orin"),
           ("converter_options", {"minimum_segment_size": 5})]


def test_cache_key_is_stable_for_equal_inputs():
    key = tftrt.cache_key(**BASE)
    assert len(key) == 64 and int(key, 16) >= 0
    assert tftrt.cache_key(**dict(BASE)) == key
    reordered = dict(BASE, converter_options={"minimum_segment_size": 3})
    assert tftrt.cache_key(**reordered) == key


@pytest.mark.parametrize("field,value", CHANGES)
def test_cache_key_changes_with_each_input(field, value):
    assert tftrt.cache_key(**dict(BASE, **{field: value})) != tftrt.cache_key(**BASE)


def _tree(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def test_publish_never_uses_a_half_written_folder_fake_converter_no_gpu(tmp_path):
    root = str(tmp_path / "cache" / "tf-trt")
    calls = []

    def crashing_converter(out):
        calls.append("crash")
        os.makedirs(os.path.join(out, "saved_model"))
        with open(os.path.join(out, "saved_model", "saved_model.pb"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("converter died halfway")

    with pytest.raises(RuntimeError, match="halfway"):
        devcache.publish_folder(root, "k1", crashing_converter)
    assert os.listdir(root) == []  # no final entry, no temp folder left behind

    # A folder at the final name without the marker (an older crash, a manual copy): rebuilt.
    os.makedirs(os.path.join(root, "k1", "saved_model"))
    ticks = iter([10.0, 12.5])

    def converter(out):
        calls.append("convert")
        os.makedirs(os.path.join(out, "saved_model"))
        with open(os.path.join(out, "saved_model", "saved_model.pb"), "wb") as f:
            f.write(b"whole")

    folder, hit, seconds = devcache.publish_folder(root, "k1", converter, {"precision": "fp16"},
                                                   clock=lambda: next(ticks))
    assert (folder, hit, seconds) == (os.path.join(root, "k1"), False, 2.5)
    assert _tree(folder) == ["build.json", os.path.join("saved_model", "saved_model.pb")]
    marker = devcache.read_marker(folder)
    assert marker["precision"] == "fp16" and marker["build_s"] == 2.5 and marker["key"] == "k1"
    assert sorted(os.listdir(root)) == ["k1"]

    folder2, hit2, seconds2 = devcache.publish_folder(root, "k1", crashing_converter)
    assert (folder2, hit2, seconds2) == (folder, True, 0.0)
    assert calls == ["crash", "convert"]


class FakeConverter(object):
    """Stands in for TrtGraphConverterV2 where no GPU is: save() copies the SavedModel as is."""

    made = []

    def __init__(self, source, precision, options, tf_version=None):
        self.source, self.precision, self.options = source, precision, options
        self.tf_version = tf_version
        self.calls = []
        FakeConverter.made.append(self)

    def convert(self, calibration_input_fn=None):
        self.calls.append("convert")
        self.calibration = list(calibration_input_fn()) if calibration_input_fn else None
        if self.calibration is not None:
            self._feed(self.calibration)

    def build(self, input_fn):
        self.calls.append("build")
        self.built_with = list(input_fn())
        self._feed(self.built_with)

    def _feed(self, inputs):
        """Calls the source model on each input the way this TensorFlow's TF-TRT does: before 2.8
        func(*map(convert_to_tensor, inp)), from 2.8 a dict as keyword arguments. The function
        called is the real SavedModel signature, its positional order the sorted input names
        (the flattening order of the converted function's inputs)."""
        import tensorflow as tf
        fn = tf.saved_model.load(self.source).signatures["serving_default"]
        names = sorted(fn.structured_input_signature[1])
        old = tftrt.major_minor(self.tf_version) < (2, 8)
        for inp in inputs:
            if not old and isinstance(inp, dict):
                fn(**{k: tf.convert_to_tensor(v) for k, v in inp.items()})
            else:
                fn(**dict(zip(names, map(tf.convert_to_tensor, inp))))

    def save(self, out):
        self.calls.append("save")
        shutil.copytree(self.source, out)


@pytest.fixture
def fake_tensorrt(monkeypatch):
    FakeConverter.made = []
    monkeypatch.setattr(tftrt, "require_tensorrt",
                        lambda tf: ("fake trt_convert", {"linked": "8.6.1", "loaded": "8.6.1"}))
    monkeypatch.setattr(tftrt, "require_gpu", lambda tf: "Fake GPU (no GPU here)")
    monkeypatch.setattr(tftrt, "make_converter",
                        lambda trt, src, precision, options, tf_version=None:
                        FakeConverter(src, precision, options, tf_version))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tftrt_converts_once_then_serves_the_cache_fake_converter_no_gpu(
        tiny_savedmodel, tmp_path, fake_tensorrt, precision):
    model = tiny_savedmodel
    case = tftrt_case(model, precision, input_pool=3)
    cls = get_backend_class("tf-trt")
    assert cls is tftrt.TFTRTBackend

    first = cls(case, str(model.folder))
    first.workdir = str(tmp_path / "wd")
    first.load()
    (converter,) = FakeConverter.made
    assert converter.calls == ["convert", "build", "save"] and converter.precision == precision
    assert len(converter.built_with) == 3 and sorted(converter.built_with[0]) == ["input"]
    assert (converter.calibration is not None) == (precision == "int8")
    assert first.convert_seconds() > 0
    facts = first.describe()
    assert facts["cache"] == "miss" and facts["gpu"] == "Fake GPU (no GPU here)"
    assert facts["precision"] == precision and facts["tensorrt"]["loaded"] == "8.6.1"
    assert first.model_path == os.path.join(str(tmp_path / "wd"), "cache", "tf-trt",
                                            facts["cache_key"], "saved_model")
    first.invoke(first.make_inputs(0, 1)[0])  # the cached copy is what runs
    first.close()
    json.dumps(facts)

    second = cls(case, str(model.folder))
    second.workdir = str(tmp_path / "wd")
    second.load()
    assert len(FakeConverter.made) == 1  # no second conversion
    assert second.convert_seconds() == 0.0
    facts2 = second.describe()
    assert facts2["cache"] == "hit" and facts2["cache_key"] == facts["cache_key"]
    assert facts2["cached_build_s"] == pytest.approx(first.convert_seconds())
    second.invoke(second.make_inputs(0, 1)[0])
    second.close()

    if precision != "fp16":
        return
    other = cls(dict(case, runtime=dict(case["runtime"], precision="fp32")), str(model.folder))
    other.workdir = str(tmp_path / "wd")
    other.load()
    assert len(FakeConverter.made) == 2 and other.describe()["cache"] == "miss"
    other.close()


@pytest.mark.parametrize("tf_version,kind", [("2.7.0+nv22.1", tuple), ("2.5.0", tuple),
                                             ("2.8.0", dict), ("2.15.1", dict)])
def test_build_and_calibration_inputs_match_what_this_tensorflow_passes_fake_converter_no_gpu(
        tiny_savedmodel, tmp_path, fake_tensorrt, monkeypatch, tf_version, kind):
    # JetPack 4.6's TensorFlow is 2.7: its TF-TRT calls func(*inp), so a dict would pass its keys
    # (strings) to the model. The fake converter feeds the real model as that version would.
    import tensorflow as tf
    monkeypatch.setattr(tf, "__version__", tf_version)
    model = tiny_savedmodel
    backend = tftrt.TFTRTBackend(tftrt_case(model, "int8", input_pool=2), str(model.folder))
    backend.workdir = str(tmp_path / "wd")
    backend.load()
    (converter,) = FakeConverter.made
    assert converter.tf_version == tf_version
    assert [type(x) for x in converter.built_with] == [kind, kind]
    assert [type(x) for x in converter.calibration] == [kind, kind]
    if kind is tuple:
        assert [len(x) for x in converter.built_with] == [1, 1]
        assert converter.built_with[0][0].shape == (1, 96, 96, 3)
    backend.close()


def test_positional_order_is_the_signatures_argument_order():
    class Fn(object):
        structured_input_signature = ((), {"b": 1, "a": 2, "c": 3})
        _arg_keywords = ["b", "a", "c"]
    assert tftrt.argument_order(Fn()) == ["b", "a", "c"]
    Fn._arg_keywords = None  # no keywords recorded: the flattening order (sorted names)
    assert tftrt.argument_order(Fn()) == ["a", "b", "c"]
    assert [tftrt.needs_positional_inputs(v) for v in ("2.0.0", "2.7.4", "2.8.0", "2.17.1",
                                                       None)] == [True, True, False, False, True]
