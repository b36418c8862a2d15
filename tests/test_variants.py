"""Model variants: movenet-tiny as tflite-fp16, onnx and int8-edgetpu, representative data, user
SavedModels, `benchfleet models build`, and the suite's view of the variants."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from fixtures_models import TEST_CACHE, TEST_ROOT, tiny_models, tiny_onnx  # noqa: F401 - fixtures
from orchestrator.models import artifacts
from orchestrator.models import zoo
from orchestrator.config import suite
from orchestrator.models import variants
from orchestrator.errors import ConfigError, ModelBuildError
from extras import needs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _no_compiler_path():
    """A PATH with this Python but no edgetpu_compiler (it is not installed here anyway)."""
    return os.path.dirname(sys.executable) + os.pathsep + "/usr/bin" + os.pathsep + "/bin"


def _tflite_run(path, x):
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter, interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_fp16_variant_stores_float16_weights_and_keeps_the_io(tiny_models):
    import numpy as np
    fp16 = tiny_models["tflite-fp16"]
    assert (fp16.format, fp16.variant) == ("tflite", "tflite-fp16")
    x = np.random.RandomState(1).randint(0, 256, (1, 96, 96, 3)).astype(np.int32)
    interpreter, out = _tflite_run(fp16.local_path, x)
    assert interpreter.get_input_details()[0]["dtype"] == np.int32 and out.shape == (1, 1, 17, 3)
    assert any(t["dtype"] == np.float16 for t in interpreter.get_tensor_details())
    assert os.path.getsize(fp16.local_path) < 0.7 * os.path.getsize(tiny_models["tflite-fp32"].local_path)
    _, ref = _tflite_run(tiny_models["tflite-fp32"].local_path, x)
    assert np.abs(out - ref).max() < 0.05


def test_onnx_variant_runs_in_onnxruntime_like_tflite_fp32(tiny_models, tiny_onnx):
    # Its bit-reproducibility is checked with the other variants' (test_modelzoo.py).
    import numpy as np
    ort = pytest.importorskip("onnxruntime")
    art = tiny_onnx
    assert (art.format, art.local_path.suffix) == ("onnx", ".onnx")
    assert artifacts.sha256_file(art.local_path) == art.sha256
    session = ort.InferenceSession(str(art.local_path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [
        ("input", [1, 96, 96, 3], "tensor(int32)")]
    x = np.random.RandomState(2).randint(0, 256, (1, 96, 96, 3)).astype(np.int32)
    _, ref = _tflite_run(tiny_models["tflite-fp32"].local_path, x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], ref, atol=1e-4)


def test_edgetpu_without_the_compiler_says_how_to_compile_elsewhere(tiny_models, monkeypatch):
    monkeypatch.setenv("PATH", _no_compiler_path())
    with pytest.raises(ModelBuildError) as info:
        zoo.build_model("movenet-tiny", "int8-edgetpu", cache_dir=TEST_CACHE)
    int8 = str(tiny_models["tflite-int8"].local_path)
    assert str(info.value) == (
        "edgetpu_compiler is not installed here (it runs on x86-64 Debian/Ubuntu: sudo apt-get "
        "install edgetpu-compiler). Compile %s there with `edgetpu_compiler -s %s` and point the "
        "suite at the result with `path: .../model_edgetpu.tflite`" % (int8, int8))


def test_edgetpu_variant_runs_the_compiler_stand_in_and_caches(tiny_models, tmp_path, monkeypatch):
    # A stand-in for edgetpu_compiler (x86-64 Debian only, not installed here): it writes what the
    # real one writes, <stem>_edgetpu.tflite in the -o folder, and logs each call.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.log"
    script = bindir / "edgetpu_compiler"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version 16.0.stand-in"; exit 0; fi
        echo "$@" >> %s
        out=$3; in=$4; stem=$(basename "$in" .tflite)
        cp "$in" "$out/${stem}_edgetpu.tflite"; echo "Model compiled successfully."
        """ % calls))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + _no_compiler_path())
    first = zoo.build_model("movenet-tiny", "int8-edgetpu", cache_dir=TEST_CACHE)
    again = zoo.build_model("movenet-tiny", "int8-edgetpu", cache_dir=TEST_CACHE)
    assert first == again and first.local_path.name == "model_edgetpu.tflite"
    assert (first.variant, first.format) == ("int8-edgetpu", "tflite")
    assert first.sha256 == artifacts.sha256_file(first.local_path)
    if calls.exists():  # absent when an earlier run of this test already cached the result
        assert len(calls.read_text().splitlines()) == 1
        assert calls.read_text().split()[:2] == ["-s", "-o"]


def test_representative_data_enters_the_int8_cache_key(tmp_path):
    import numpy as np
    rep = tmp_path / "rep"
    rep.mkdir()
    np.save(str(rep / "a.npy"), np.zeros((96, 96, 3), np.uint8))
    base = zoo.cache_key("movenet-tiny", "tflite-int8")
    with_rep = zoo.cache_key("movenet-tiny", "tflite-int8", representative=rep)
    np.save(str(rep / "a.npy"), np.ones((96, 96, 3), np.uint8))
    changed = zoo.cache_key("movenet-tiny", "tflite-int8", representative=rep)
    assert len({base, with_rep, changed}) == 3
    # Only int8 is calibrated: the other variants ignore the folder.
    assert zoo.cache_key("movenet-tiny", "tflite-fp32", representative=rep) == \
        zoo.cache_key("movenet-tiny", "tflite-fp32")


def test_representative_folder_problems_are_named(tmp_path):
    import numpy as np
    with pytest.raises(ModelBuildError, match="no .npy or image files"):
        variants.representative_files(tmp_path)
    np.save(str(tmp_path / "s.npy"), np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ModelBuildError, match=r"s.npy has shape \[1, 64, 64, 3\]; the model input "
                       r"is \[1, 96, 96, 3\]"):
        variants.load_representative(tmp_path, [1, 96, 96, 3], np.float32)
    np.save(str(tmp_path / "s.npy"), np.zeros((3, 96, 96, 3), np.uint8))  # a batch: 3 samples
    samples = variants.load_representative(tmp_path, [1, 96, 96, 3], np.float32)
    assert len(samples) == 3 and samples[0].shape == (1, 96, 96, 3)
    assert samples[0].dtype == np.float32


@pytest.mark.slow
def test_int8_calibrated_on_a_representative_folder_builds_another_model(tiny_models, tmp_path):
    import numpy as np
    rep = tmp_path / "rep"
    rep.mkdir()
    rng = np.random.RandomState(5)
    for i in range(4):  # darker images than the default 0..255 noise: other quantization ranges
        np.save(str(rep / ("%d.npy" % i)), rng.randint(0, 64, (96, 96, 3)).astype(np.uint8))
    art = zoo.build_model("movenet-tiny", "tflite-int8", cache_dir=TEST_CACHE,
                               representative=rep)
    assert art.sha256 != tiny_models["tflite-int8"].sha256
    x = rng.randint(0, 64, (1, 96, 96, 3)).astype(np.uint8)
    assert _tflite_run(art.local_path, x)[1].shape == (1, 1, 17, 3)


def test_user_savedmodel_becomes_onnx_and_tflite(tiny_models, tiny_onnx, tmp_path):
    # tiny_onnx: skipped with the reason where tf2onnx is missing.
    import numpy as np
    ort = pytest.importorskip("onnxruntime")
    folder = tiny_models["savedmodel"].folder
    built, errors = zoo.build_user_variants(folder, ["onnx", "tflite-fp32"], cache_dir=TEST_CACHE)
    assert errors == {}
    onnx_art, tfl = built["onnx"], built["tflite-fp32"]
    assert (onnx_art.format, onnx_art.variant, tfl.format) == ("onnx", "onnx", "tflite")
    assert zoo.build_user_variant(folder, "tflite-fp32", cache_dir=TEST_CACHE) == tfl  # cached
    x = np.random.RandomState(4).randint(0, 256, (1, 96, 96, 3)).astype(np.int32)
    session = ort.InferenceSession(str(onnx_art.local_path), providers=["CPUExecutionProvider"])
    _, ref = _tflite_run(tiny_models["tflite-fp32"].local_path, x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], ref, atol=1e-4)
    np.testing.assert_allclose(_tflite_run(tfl.local_path, x)[1], ref, atol=1e-4)
    same = zoo.build_user_variant(folder, "savedmodel", cache_dir=TEST_CACHE)
    assert (same.variant, same.sha256) == ("savedmodel", tiny_models["savedmodel"].sha256)


def unsigned_savedmodel():
    """A SavedModel with a variable and no serving signature, made once into the test cache
    (saving it costs a TensorFlow start; the content never changes)."""
    folder = os.path.join(TEST_ROOT, "fixtures", "unsigned-savedmodel")
    if not os.path.isfile(os.path.join(folder, "saved_model.pb")):
        tmp = folder + ".%d.tmp" % os.getpid()
        code = ("import tensorflow as tf; m = tf.Module(); m.v = tf.Variable(1.0); "
                "tf.saved_model.save(m, %r)" % tmp)
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        try:
            os.rename(tmp, folder)
        except OSError:   # made meanwhile by another run
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@needs("tensorflow")
def test_user_folder_without_a_serving_signature_is_refused_clearly(tmp_path):
    with pytest.raises(ModelBuildError, match="no serving_default signature .* model.export"):
        zoo.build_user_variant(unsigned_savedmodel(), "tflite-fp32", cache_dir=tmp_path / "cache")
    (tmp_path / "x.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="built from a SavedModel folder, not a tflite file"):
        zoo.build_user_variant(tmp_path / "x.tflite", "onnx", cache_dir=tmp_path)


def test_models_build_cli_prints_each_variant_and_fails_for_the_missing_compiler(tiny_models):
    env = dict(os.environ, BENCHFLEET_CACHE=TEST_ROOT, PATH=_no_compiler_path(), PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "models", "build", "movenet-tiny",
                           "--variants", "tflite-fp16,int8-edgetpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    fp16 = tiny_models["tflite-fp16"]
    assert "tflite-fp16: ok in " in proc.stdout
    assert "  path    %s\n  sha256  %s\n  size    %d bytes" % (
        fp16.local_path, fp16.sha256, os.path.getsize(fp16.local_path)) in proc.stdout
    assert "int8-edgetpu: FAILED: edgetpu_compiler is not installed here" in proc.stdout
    # Only int8-edgetpu is built (fp16 and the int8 it compiles from are cached): live progress.
    assert "building movenet-tiny int8-edgetpu (1/1)... FAILED" in proc.stdout
    assert "`edgetpu_compiler -s " in proc.stdout
    assert proc.stdout.rstrip().endswith("movenet-tiny: 1 of 2 variants built")


def test_models_build_cli_refuses_unknown_variants_before_building():
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "models", "build", "movenet-tiny",
                           "--variants", "tflite-fp8"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "--variants: unknown tflite-fp8; variants: savedmodel, tflite-fp32" in proc.stderr


def test_suite_variants_mirror_the_model_zoo():
    assert tuple(suite.BUILTIN_VARIANTS) == zoo.VARIANTS
    assert dict(suite.BUILTIN_VARIANTS) == variants.VARIANT_FORMATS


def test_suite_opt_in_variants_come_from_the_matrix(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: t\nmodels:\n  - name: tiny\n    builtin: movenet-tiny\nmatrix:\n"
        "  - runtime: tflite\n  - runtime: tflite\n    variants: [tflite-fp16, int8-edgetpu]\n"
        "  - runtime: [onnxruntime, edgetpu]\n    variants: [onnx, int8-edgetpu]\n")
    cases = suite.load_suite(path).expand()
    assert [(c.entry, c.backend, c.variant, c.format, c.precision) for c in cases] == [
        (0, "tflite", "tflite-fp32", "tflite", "fp32"), (0, "tflite", "tflite-int8", "tflite", "int8"),
        (1, "tflite", "tflite-fp16", "tflite", "fp16"), (1, "tflite", "int8-edgetpu", "tflite", "int8"),
        (2, "onnxruntime", "onnx", "onnx", "fp32"), (2, "edgetpu", "int8-edgetpu", "tflite", "int8")]


def test_suite_accepts_a_user_onnx_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    path = tmp_path / "s.yaml"
    path.write_text("name: t\nmodels:\n  - name: m\n    path: m.onnx\nmatrix:\n"
                    "  - runtime: onnxruntime\n")
    (case,) = suite.load_suite(path).expand()
    assert (case.variant, case.format, case.backend) == ("file", "onnx", "onnxruntime")
