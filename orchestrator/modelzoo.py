"""Built-in MoveNet-architecture models with seeded weights, built once and cached by content key.

No pretrained weights are needed: latency does not depend on weight values, only on the graph.
Each built-in has MoveNet's shape: MobileNetV2 backbone, FPN-like neck to stride 4, the four
single-pose heads, and the decoding step to [1, 1, 17, 3] (y, x, score) inside the graph.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from orchestrator.artifacts import Artifact, pack_savedmodel, sha256_file
from orchestrator.errors import ConfigError, ModelBuildError

# name -> (input side, MobileNetV2 alpha, neck channels)
BUILTINS = {
    "movenet-thunder": (256, 1.0, 64),
    "movenet-lightning": (192, 1.0, 64),
    # Same architecture as the other two, shrunk (96x96, alpha 0.35) so tests build and run it in
    # seconds; its latencies say nothing about MoveNet's.
    "movenet-tiny": (96, 0.35, 24),
}
VARIANTS = ("savedmodel", "tflite-fp32", "tflite-int8")
DEFAULT_SEED = 0
KEYPOINTS = 17
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly",
                     "tensorflow-macos", "intel-tensorflow")
_NO_TF = ("building built-in model %s needs TensorFlow on the controller: pip install "
          "'benchfleet[tensorflow]', or point the suite at your own model file with `path:`")


def list_builtins() -> list[str]:
    """Names of the built-in models (each builds in every one of VARIANTS)."""
    return sorted(BUILTINS)


def default_cache_dir() -> Path:
    env = os.environ.get("BENCHFLEET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "benchfleet" / "models"


def _tf_version() -> str | None:
    # Read from package metadata so a cache hit never pays for importing TensorFlow.
    for dist in _TF_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cache_key(name: str, variant: str, seed: int = DEFAULT_SEED) -> str:
    """sha256 of everything a build depends on: this module's code, the model, seed, TF version."""
    source = Path(__file__).read_bytes()
    text = json.dumps([name, variant, seed, _tf_version()])
    return hashlib.sha256(source + b"\0" + text.encode()).hexdigest()


def build_model(name: str, variant: str, cache_dir=None, seed: int = DEFAULT_SEED) -> Artifact:
    """The artifact for a built-in model variant, built on first use, then served from the cache.

    Raises:
        ConfigError: unknown name or variant.
        ModelBuildError: TensorFlow is missing, or the build failed.
    """
    if name not in BUILTINS:
        raise ConfigError("unknown built-in model %r; built-ins: %s" % (name, ", ".join(list_builtins())))
    if variant not in VARIANTS:
        raise ConfigError("unknown variant %r of %s; variants: %s" % (variant, name, ", ".join(VARIANTS)))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / cache_key(name, variant, seed)
    cached = _load_cached(final)
    if cached is not None:
        return cached
    if _tf_version() is None:
        raise ModelBuildError(_NO_TF % name)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _build_in_subprocess(work, name, variant, seed)
        try:
            os.rename(work, final)
        except OSError:
            if _load_cached(final) is None:  # not a concurrent builder that won the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _load_cached(final)


def _load_cached(folder: Path) -> Artifact | None:
    meta = folder / "artifact.json"
    if not meta.is_file():
        return None
    return Artifact.from_json(json.loads(meta.read_text()), base=folder)


def _build_in_subprocess(work: Path, name: str, variant: str, seed: int) -> None:
    """Run _build_into in a fresh Python. Keras layer names and TF function names come from
    process-wide counters, so a second build in one process gives a different SavedModel; a
    fresh process makes every build bit-identical, and keeps TensorFlow out of the controller."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "orchestrator.modelzoo", str(work), name, variant, str(seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ModelBuildError("building %s/%s failed (exit %d):\n%s"
                              % (name, variant, proc.returncode, tail))


def _build_into(work: Path, name: str, variant: str, seed: int) -> None:
    """Build one variant into `work`; artifact.json is written last and marks it complete."""
    try:
        if variant == "savedmodel":
            _save_savedmodel(name, seed, work / "saved_model")
            tar, digest = pack_savedmodel(work / "saved_model", work)
            tar = tar.rename(work / "saved_model.tar")
            art = Artifact(name, variant, "savedmodel", Path("saved_model.tar"), digest, True,
                           Path("saved_model"))
        else:
            data = _to_tflite(name, seed, int8=(variant == "tflite-int8"))
            (work / "model.tflite").write_bytes(data)
            art = Artifact(name, variant, "tflite", Path("model.tflite"),
                           sha256_file(work / "model.tflite"), False)
    except ImportError as exc:
        raise ModelBuildError(_NO_TF % name + " (%s)" % exc) from exc
    (work / "artifact.json").write_text(json.dumps(art.to_json(), indent=1))


# ---------------------------------------------------------------- the graph (TensorFlow from here)

def _keras_heads(name: str, seed: int):
    """The Keras model: float image [1,H,W,3] in 0..255 -> (heatmaps, centre, regression, offsets)."""
    import keras
    side, alpha, ch = BUILTINS[name]
    keras.utils.set_random_seed(seed)
    L = keras.layers
    image = keras.Input((side, side, 3), batch_size=1, name="image")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0)(image)  # MobileNetV2's [-1, 1] normalisation
    backbone = keras.applications.MobileNetV2(
        input_shape=(side, side, 3), alpha=alpha, include_top=False, weights=None)
    taps = ["block_2_add", "block_5_add", "block_12_add", "out_relu"]  # strides 4, 8, 16, 32
    features = keras.Model(backbone.input, [backbone.get_layer(t).output for t in taps])(x)
    # FPN-like neck: lateral 1x1 convs, top-down bilinear upsampling to stride 4.
    top = L.Conv2D(ch, 1, use_bias=False)(features[-1])
    for feat in reversed(features[:-1]):
        top = L.UpSampling2D(2, interpolation="bilinear")(top)
        top = L.Add()([top, L.Conv2D(ch, 1, use_bias=False)(feat)])
        top = L.SeparableConv2D(ch, 3, padding="same", activation="relu")(top)

    def head(out_ch, activation, label):
        h = L.DepthwiseConv2D(3, padding="same")(top)
        h = L.Conv2D(max(ch, 32), 1, activation="relu")(h)
        return L.Conv2D(out_ch, 1, activation=activation, name=label)(h)

    outputs = [head(KEYPOINTS, "sigmoid", "keypoint_heatmap"), head(1, "sigmoid", "centre"),
               head(2 * KEYPOINTS, None, "regression"), head(2 * KEYPOINTS, None, "offsets")]
    return keras.Model(image, outputs, name=name.replace("-", "_"))


def _decode(heads):
    """MoveNet single-pose decoding: heads at stride 4 -> [1, 1, 17, 3] (y, x, score) in 0..1."""
    import tensorflow as tf
    heat, centre, regress, offsets = heads
    hf, wf = heat.shape[1], heat.shape[2]
    ys, xs = tf.meshgrid(tf.range(hf, dtype=tf.float32), tf.range(wf, dtype=tf.float32), indexing="ij")
    # The person nearest the image centre wins: centre scores weighted by inverse distance to it.
    to_mid = tf.sqrt(tf.square(ys - (hf - 1) / 2.0) + tf.square(xs - (wf - 1) / 2.0))
    centre_idx = tf.argmax(tf.reshape(centre[0, :, :, 0] / (to_mid + 1.0), [-1]), output_type=tf.int32)
    cy = tf.cast(centre_idx // wf, tf.float32)
    cx = tf.cast(centre_idx % wf, tf.float32)
    reg = tf.reshape(tf.gather(tf.reshape(regress, [hf * wf, 2 * KEYPOINTS]), centre_idx),
                     [KEYPOINTS, 2])
    ry, rx = cy + reg[:, 0], cx + reg[:, 1]
    # Each keypoint: its heatmap weighted by inverse distance to the regressed position.
    dist = tf.sqrt(tf.square(ys[:, :, None] - ry) + tf.square(xs[:, :, None] - rx))
    heat_flat = tf.reshape(heat[0], [hf * wf, KEYPOINTS])
    kp_idx = tf.argmax(tf.reshape(heat[0] / (dist + 1.8), [hf * wf, KEYPOINTS]), axis=0,
                       output_type=tf.int32)
    pick = tf.stack([kp_idx, tf.range(KEYPOINTS)], axis=1)
    score = tf.gather_nd(heat_flat, pick)
    off = tf.gather_nd(tf.reshape(offsets[0], [hf * wf, KEYPOINTS, 2]), pick)
    y = (tf.cast(kp_idx // wf, tf.float32) + off[:, 0]) / float(hf)
    x = (tf.cast(kp_idx % wf, tf.float32) + off[:, 1]) / float(wf)
    keypoints = tf.stack([tf.clip_by_value(y, 0.0, 1.0), tf.clip_by_value(x, 0.0, 1.0), score], axis=1)
    return tf.reshape(keypoints, [1, 1, KEYPOINTS, 3])


def _module(name: str, seed: int):
    """A tf.Module holding the Keras model, with int32 and float32 serving functions."""
    import tensorflow as tf
    side = BUILTINS[name][0]
    module = tf.Module()
    module.net = _keras_heads(name, seed)
    # Keras 3 variables are tracked through their backing tf.Variables.
    module.weights = [v.value for v in module.net.weights]

    @tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.int32, name="input")])
    def serve(input):  # noqa: A002 - MoveNet's SavedModel names its input "input"
        return {"output_0": _decode(module.net(tf.cast(input, tf.float32), training=False))}

    @tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.float32, name="input")])
    def serve_float(input):  # noqa: A002
        return {"output_0": _decode(module.net(input, training=False))}

    module.serve, module.serve_float = serve, serve_float
    return module


def _save_savedmodel(name: str, seed: int, dest: Path) -> None:
    import tensorflow as tf
    module = _module(name, seed)
    tf.saved_model.save(module, str(dest), signatures={"serving_default": module.serve})
    _drop_fingerprint_uuid(dest / "fingerprint.pb")


def _drop_fingerprint_uuid(path: Path) -> None:
    """TF >= 2.15 writes a random uuid into fingerprint.pb; everything else in a save is a pure
    function of the graph and weights. Clearing it makes the tar (and its hash) reproducible."""
    if not path.is_file():
        return
    from tensorflow.core.protobuf import fingerprint_pb2
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    if getattr(fingerprint, "uuid", ""):  # older TF has no uuid field: nothing to clear
        fingerprint.ClearField("uuid")
        path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def _to_tflite(name: str, seed: int, int8: bool) -> bytes:
    """fp32: the int32-input graph as is. int8: full-integer weights and activations, uint8 input
    (pixels, scale 1), float output: decoding ops TFLite cannot quantize stay float."""
    import numpy as np
    import tensorflow as tf
    module = _module(name, seed)
    fn = module.serve_float if int8 else module.serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], module)
    if int8:
        side = BUILTINS[name][0]
        rng = np.random.RandomState(seed)
        samples = [rng.randint(0, 256, (1, side, side, 3)).astype(np.float32) for _ in range(8)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.inference_input_type = tf.uint8
    return converter.convert()


def resolve_user_model(path, cache_dir=None) -> Artifact:
    """An Artifact for a user's model: a .tflite/.onnx file or a SavedModel folder (packed to a tar).

    Raises:
        ConfigError: the path is missing or is none of those.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "saved_model.pb").is_file():
            raise ConfigError("%s: a folder model must be a SavedModel (no saved_model.pb in it)" % p)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        tar, digest = pack_savedmodel(p, root / "user-savedmodels")
        return Artifact(p.name, "user", "savedmodel", tar, digest, True, p)
    formats = {".tflite": "tflite", ".onnx": "onnx"}
    if p.is_file() and p.suffix.lower() in formats:
        return Artifact(p.stem, "user", formats[p.suffix.lower()], p, sha256_file(p), False)
    if not p.exists():
        raise ConfigError("%s: model path does not exist" % p)
    raise ConfigError("%s: not a model benchfleet knows: expected a .tflite or .onnx file or a "
                      "SavedModel folder (with saved_model.pb)" % p)


if __name__ == "__main__":  # the build child: python -m orchestrator.modelzoo WORK NAME VARIANT SEED
    _build_into(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
