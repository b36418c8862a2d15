"""orchestrator.models.zoo and artifacts: real builds of movenet-tiny, reproducible hashes, the cache."""

import os
import subprocess
import sys
import tarfile
import time

import pytest

from fixtures_models import TEST_CACHE, tiny_models  # noqa: F401 - a fixture
from orchestrator.models import artifacts
from orchestrator.models import zoo
from orchestrator.errors import ConfigError, ModelBuildError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tflite_io(path):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


def test_tiny_tflite_variants_take_an_image_and_give_movenet_keypoints(tiny_models):
    import numpy as np
    fp32_in, fp32_out = _tflite_io(tiny_models["tflite-fp32"].local_path)
    int8_in, int8_out = _tflite_io(tiny_models["tflite-int8"].local_path)
    assert list(fp32_in["shape"]) == list(int8_in["shape"]) == [1, 96, 96, 3]
    assert fp32_in["dtype"] == np.int32 and int8_in["dtype"] == np.uint8
    assert list(fp32_out["shape"]) == list(int8_out["shape"]) == [1, 1, 17, 3]
    assert fp32_out["dtype"] == int8_out["dtype"] == np.float32


def test_tiny_savedmodel_has_movenet_serving_signature(tiny_models):
    import tensorflow as tf
    art = tiny_models["savedmodel"]
    assert art.format == "savedmodel" and art.is_dir_tar
    assert artifacts.sha256_file(art.local_path) == art.sha256
    fn = tf.saved_model.load(str(art.folder)).signatures["serving_default"]
    spec = fn.structured_input_signature[1]["input"]
    assert spec.shape.as_list() == [1, 96, 96, 3] and spec.dtype == tf.int32
    out = fn(input=tf.zeros([1, 96, 96, 3], tf.int32))["output_0"]
    assert out.shape == (1, 1, 17, 3)


def test_savedmodel_tar_unpacks_to_the_folder(tiny_models, tmp_path):
    art = tiny_models["savedmodel"]
    with tarfile.open(art.local_path) as tar:
        names = sorted(m.name for m in tar.getmembers())
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
        tar.extractall(tmp_path)
    assert "saved_model.pb" in names and "variables/variables.index" in names
    assert (tmp_path / "saved_model.pb").read_bytes() == (art.folder / "saved_model.pb").read_bytes()


@pytest.mark.slow
def test_fresh_builds_are_bit_reproducible(tiny_models, tmp_path):
    # Every variant, SavedModel included (its random fingerprint uuid is cleared on build).
    for variant in zoo.CORE_VARIANTS:
        fresh = zoo.build_model("movenet-tiny", variant, cache_dir=tmp_path / variant)
        assert fresh.sha256 == tiny_models[variant].sha256, variant
        assert artifacts.sha256_file(fresh.local_path) == fresh.sha256


def test_cache_hit_returns_without_importing_tensorflow(tiny_models):
    code = ("import sys, time; from orchestrator.models import zoo; t = time.time(); "
            "a = zoo.build_model('movenet-tiny', 'tflite-int8', cache_dir=%r); "
            "print(a.sha256, 'tensorflow' in sys.modules, time.time() - t)" % TEST_CACHE)
    out = subprocess.check_output([sys.executable, "-c", code], cwd=REPO, text=True).split()
    assert out[0] == tiny_models["tflite-int8"].sha256
    assert out[1] == "False"
    assert float(out[2]) < 1.0


def test_cache_key_depends_on_name_variant_and_seed():
    keys = {zoo.cache_key("movenet-tiny", "tflite-fp32"),
            zoo.cache_key("movenet-tiny", "tflite-int8"),
            zoo.cache_key("movenet-lightning", "tflite-fp32"),
            zoo.cache_key("movenet-tiny", "tflite-fp32", seed=1)}
    assert len(keys) == 4
    assert zoo.cache_key("movenet-tiny", "savedmodel") == zoo.cache_key("movenet-tiny", "savedmodel")


def test_unknown_model_or_variant_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match="movenet-lightning, movenet-thunder, movenet-tiny"):
        zoo.build_model("posenet", "tflite-fp32", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="savedmodel, tflite-fp32, tflite-fp16, tflite-int8, onnx, "
                       "int8-edgetpu"):
        zoo.build_model("movenet-tiny", "tflite-fp8", cache_dir=tmp_path)


def test_missing_tensorflow_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "_tf_version", lambda: None)
    with pytest.raises(ModelBuildError, match=r"pip install 'benchfleet\[tensorflow\]'.*`path:`"):
        zoo.build_model("movenet-tiny", "tflite-fp32", cache_dir=tmp_path)


@pytest.mark.parametrize("name,side", [("movenet-thunder", 256), ("movenet-lightning", 192)])
def test_full_size_models_have_movenet_input_and_stride_4_heads(name, side):
    net = zoo._keras_heads(name, zoo.DEFAULT_SEED)  # the graph only: no conversion
    assert tuple(net.input.shape) == (1, side, side, 3)
    assert [tuple(o.shape) for o in net.outputs] == [
        (1, side // 4, side // 4, c) for c in (17, 1, 34, 34)]


@pytest.mark.slow
@pytest.mark.parametrize("name,side", [("movenet-thunder", 256), ("movenet-lightning", 192)])
def test_full_size_tflite_fp32_builds(name, side):
    art = zoo.build_model(name, "tflite-fp32", cache_dir=TEST_CACHE)
    inp, out = _tflite_io(art.local_path)
    assert list(inp["shape"]) == [1, side, side, 3] and list(out["shape"]) == [1, 1, 17, 3]


def test_pack_savedmodel_ignores_mtimes_and_rejects_other_folders(tmp_path):
    folder = tmp_path / "sm"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index")
    first = artifacts.pack_savedmodel(folder, tmp_path / "out")
    os.utime(folder / "saved_model.pb", (1, 1))
    assert artifacts.pack_savedmodel(folder, tmp_path / "out") == first
    assert first[0].name == first[1] + ".tar"
    with pytest.raises(ValueError, match="no saved_model.pb"):
        artifacts.pack_savedmodel(tmp_path / "out", tmp_path / "out2")


def test_resolve_user_model_accepts_tflite_and_savedmodel(tiny_models, tmp_path):
    tfl = zoo.resolve_user_model(tiny_models["tflite-fp32"].local_path)
    assert (tfl.format, tfl.sha256, tfl.is_dir_tar) == ("tflite", tiny_models["tflite-fp32"].sha256, False)
    sm = zoo.resolve_user_model(tiny_models["savedmodel"].folder, cache_dir=tmp_path)
    assert (sm.format, sm.sha256, sm.is_dir_tar) == ("savedmodel", tiny_models["savedmodel"].sha256, True)


def test_resolve_user_model_names_the_bad_path(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    for bad, why in [(tmp_path / "notes.txt", "not a model"), (tmp_path / "nope.tflite", "does not exist"),
                     (tmp_path, "no saved_model.pb")]:
        with pytest.raises(ConfigError, match=why) as info:
            zoo.resolve_user_model(bad)
        assert str(bad) in str(info.value)


def test_artifact_refuses_unknown_format():
    with pytest.raises(ValueError, match="format must be one of"):
        artifacts.Artifact("m", "v", "pickle", "/x", "0" * 64, False)
