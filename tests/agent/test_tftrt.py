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
    assert info.value.hint == tftrt.HINT


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

    def __init__(self, source, precision, options):
        self.source, self.precision, self.options = source, precision, options
        self.calls = []
        FakeConverter.made.append(self)

    def convert(self, calibration_input_fn=None):
        self.calls.append("convert")
        self.calibration = list(calibration_input_fn()) if calibration_input_fn else None

    def build(self, input_fn):
        self.calls.append("build")
        self.built_with = list(input_fn())

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
                        lambda trt, src, precision, options: FakeConverter(src, precision, options))


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
