"""orchestrator.models.zoo and artifacts: real builds of movenet-tiny, reproducible hashes, the cache."""

import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from fixtures_models import (TEST_CACHE, TINY_VARIANTS, onnx_tools_installed,  # noqa: F401
                             tiny_models, tiny_onnx)  # fixtures
from extras import needs
from orchestrator.models import artifacts, child, movenet, zoo
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


def _no_compiler_path():
    """A PATH with this Python but no edgetpu_compiler (it is not installed here anyway)."""
    return os.path.dirname(sys.executable) + os.pathsep + "/usr/bin" + os.pathsep + "/bin"


# Every variant a child builds, in build order, and int8-edgetpu (which needs a compiler).
ALL_STEPS = TINY_VARIANTS + ("int8-edgetpu",)


@pytest.fixture(scope="module")
def fresh_tiny(tmp_path_factory):
    """movenet-tiny's five variants and int8-edgetpu built together into a fresh cache, in one
    child, without edgetpu_compiler: (artifacts, errors, progress events)."""
    events = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", _no_compiler_path())
        built, errors = zoo.build_models("movenet-tiny", ALL_STEPS[::-1],  # asked in any order
                                         cache_dir=tmp_path_factory.mktemp("fresh"),
                                         on_progress=lambda e: events.append(
                                             dict(e, received=time.monotonic())))
    return built, errors, events


@pytest.mark.slow
def test_fresh_builds_are_bit_reproducible(tiny_models, fresh_tiny):
    # Every variant, SavedModel included (its random fingerprint uuid is cleared on build), and
    # onnx (tf2onnx alone orders and names nodes differently in every process).
    built, errors, _ = fresh_tiny
    assert set(tiny_models) <= set(built)
    for variant, art in tiny_models.items():
        assert built[variant].sha256 == art.sha256, variant
        assert artifacts.sha256_file(built[variant].local_path) == art.sha256


@pytest.mark.slow
@needs("tensorflow")
def test_build_progress_reports_each_variant_in_build_order(fresh_tiny):
    built, errors, events = fresh_tiny
    onnx_ok = onnx_tools_installed()
    ends = ["done"] * 4 + ["done" if onnx_ok else "failed", "failed"]
    assert [(e["event"], e["variant"], e["index"], e["total"]) for e in events] == [
        (kind, v, i + 1, 6) for i, (v, end) in enumerate(zip(ALL_STEPS, ends))
        for kind in ("start", end)]
    assert {e["model"] for e in events} == {"movenet-tiny"}
    assert all(e["seconds"] is None and e["error"] is None for e in events[::2])
    assert all(e["seconds"] > 0 for e in events[1::2] if e["event"] == "done")
    # Read live: savedmodel's start reached us about its build time before its end did.
    assert events[1]["received"] - events[0]["received"] > 0.5 * events[1]["seconds"]
    # int8-edgetpu fails without its compiler; the variants built before it are kept.
    assert set(errors) == {"int8-edgetpu"} | (set() if onnx_ok else {"onnx"})
    assert set(built) == set(ALL_STEPS) - set(errors)
    assert events[-1]["error"] == errors["int8-edgetpu"]
    assert zoo.progress_line(events[5]) == "building movenet-tiny tflite-fp16 (3/6)... %.1f s" \
        % events[5]["seconds"]
    assert zoo.progress_line(events[4]) == "building movenet-tiny tflite-fp16 (3/6)..."
    assert zoo.progress_line(events[-1]).startswith(
        "building movenet-tiny int8-edgetpu (6/6)... FAILED")
    assert zoo.progress_line(events[-1]).endswith(
        ": edgetpu_compiler is not installed here (it runs on x86-64 Debian/Ubuntu: sudo apt-get "
        "install edgetpu-compiler). Compile %s there with `edgetpu_compiler -s %s` and point the "
        "suite at the result with `path: .../model_edgetpu.tflite`"
        % ((built["tflite-int8"].local_path,) * 2))


@pytest.mark.slow
def test_a_variant_is_the_same_built_first_or_after_a_failure_and_a_failure_stops_nothing(
        tiny_models, tiny_onnx, tmp_path):
    # fp16 is built first in this child (in tiny_models, after savedmodel and fp32); int8
    # calibration data of the wrong shape fails inside the child; onnx, after it, still builds.
    # Each one's bytes are those of the build of all five together.
    import numpy as np
    rep = tmp_path / "rep"
    rep.mkdir()
    np.save(str(rep / "s.npy"), np.zeros((64, 64, 3), np.uint8))
    events = []
    built, errors = zoo.build_models("movenet-tiny", ["onnx", "tflite-int8", "tflite-fp16"],
                                     cache_dir=tmp_path / "cache", representative=rep,
                                     on_progress=events.append)
    assert list(errors) == ["tflite-int8"]
    assert "the model input is [1, 96, 96, 3]" in errors["tflite-int8"]
    assert built["tflite-fp16"].sha256 == tiny_models["tflite-fp16"].sha256
    assert built["onnx"].sha256 == tiny_onnx.sha256
    assert [(e["event"], e["variant"]) for e in events] == [
        ("start", "tflite-fp16"), ("done", "tflite-fp16"), ("start", "tflite-int8"),
        ("failed", "tflite-int8"), ("start", "onnx"), ("done", "onnx")]


def test_a_build_child_that_dies_fails_every_variant_with_its_stderr(tmp_path):
    # No seed in the spec: the child dies before its first event (a stand-in for a crash).
    events = []
    child.run_child({"name": "movenet-tiny"}, [("savedmodel", tmp_path / "a"),
                                               ("tflite-fp32", tmp_path / "b")], events.append)
    assert [(e["event"], e["variant"]) for e in events] == [
        ("failed", "savedmodel"), ("failed", "tflite-fp32")]
    assert events[0]["error"].startswith("building movenet-tiny/savedmodel failed (exit 1):\n")
    assert events[0]["error"].rstrip().endswith("KeyError: 'seed'")


def test_cache_hit_returns_without_importing_tensorflow(tiny_models):
    code = ("import sys, time; from orchestrator.models import zoo; t = time.time(); "
            "a = zoo.build_model('movenet-tiny', 'tflite-int8', cache_dir=%r); "
            "events = []; b, e = zoo.build_models('movenet-tiny', %r, cache_dir=%r, "
            "on_progress=events.append); "
            "print(a.sha256, 'tensorflow' in sys.modules, time.time() - t, len(events), "
            "len(b), len(e))" % (TEST_CACHE, zoo.CORE_VARIANTS, TEST_CACHE))
    out = subprocess.check_output([sys.executable, "-c", code], cwd=REPO, text=True).split()
    assert out[0] == tiny_models["tflite-int8"].sha256
    assert out[1] == "False"
    assert float(out[2]) < 1.0
    assert out[3:] == ["0", str(len(zoo.CORE_VARIANTS)), "0"]  # nothing built, nothing reported


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
    events = []
    built, errors = zoo.build_models("movenet-tiny", ["tflite-fp16", "savedmodel"],
                                     cache_dir=tmp_path, on_progress=events.append)
    assert built == {} and list(errors) == ["tflite-fp16", "savedmodel"]  # in the order asked
    assert [(e["event"], e["variant"], e["index"]) for e in events] == [
        ("failed", "savedmodel", 1), ("failed", "tflite-fp16", 2)]
    assert "pip install 'benchfleet[tensorflow]'" in zoo.progress_line(events[0])


@needs("tensorflow")
@pytest.mark.parametrize("name,side", [("movenet-thunder", 256), ("movenet-lightning", 192)])
def test_full_size_models_have_movenet_input_and_stride_4_heads(name, side):
    net = movenet.keras_heads(name, zoo.DEFAULT_SEED)  # the graph only: no conversion
    assert tuple(net.input.shape) == (1, side, side, 3)
    assert [tuple(o.shape) for o in net.outputs] == [
        (1, side // 4, side // 4, c) for c in (17, 1, 34, 34)]


@pytest.mark.slow
@needs("tensorflow", "ai_edge_litert")
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


@pytest.mark.slow
def test_two_processes_needing_a_model_at_once_build_it_once(tiny_models, tmp_path):
    code = ("import json, sys; from orchestrator.models import zoo; ev = []; "
            "built, err = zoo.build_models('movenet-tiny', ['tflite-fp16'], cache_dir=%r, "
            "on_progress=ev.append); print(json.dumps([built['tflite-fp16'].sha256, "
            "[e['event'] for e in ev]]))" % str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert {sha for sha, _ in outs} == {tiny_models["tflite-fp16"].sha256}
    # One built it; the other waited for the lock and found it in the cache (no events).
    assert sorted(events for _, events in outs) == [[], ["start", "done"]]
