"""Built-in MoveNet-architecture models with seeded weights, built once and cached by content key.

No pretrained weights are needed: latency does not depend on weight values, only on the graph.
Each built-in has MoveNet's shape: MobileNetV2 backbone, FPN-like neck to stride 4, the four
single-pose heads, and the decoding step to [1, 1, 17, 3] (y, x, score) inside the graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from orchestrator.models import variants
from orchestrator.cache import cache_root
from orchestrator.models.artifacts import Artifact, pack_savedmodel, sha256_file
from orchestrator.errors import ConfigError, ModelBuildError

# name -> (input side, MobileNetV2 alpha, neck channels)
BUILTINS = {
    "movenet-thunder": (256, 1.0, 64),
    "movenet-lightning": (192, 1.0, 64),
    # Same architecture as the other two, shrunk (96x96, alpha 0.35) so tests build and run it in
    # seconds; its latencies say nothing about MoveNet's.
    "movenet-tiny": (96, 0.35, 24),
}
VARIANTS = tuple(variants.VARIANT_FORMATS)
# Built by TensorFlow alone (onnx also needs tf2onnx, int8-edgetpu the edgetpu_compiler).
CORE_VARIANTS = ("savedmodel", "tflite-fp32", "tflite-fp16", "tflite-int8")
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
    return cache_root() / "models"


def _version(*dists) -> str | None:
    # Read from package metadata so a cache hit never pays for importing TensorFlow.
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _tf_version() -> str | None:
    return _version(*_TF_DISTRIBUTIONS)


def _key(parts: list) -> str:
    """sha256 of the build code (this module and variants.py), the inputs and tool versions."""
    source = Path(__file__).read_bytes() + b"\0" + Path(variants.__file__).read_bytes()
    tools = [_tf_version()] + ([_version("tf2onnx"), _version("onnx")] if "onnx" in parts else [])
    return hashlib.sha256(source + b"\0" + json.dumps(parts + tools).encode()).hexdigest()


def cache_key(name: str, variant: str, seed: int = DEFAULT_SEED, representative=None) -> str:
    """sha256 of everything a build depends on: code, model, variant, seed, tool versions and,
    for int8, the representative data (a folder's files hashed; None: seeded random data)."""
    digest = variants.representative_digest(representative) if variant == "tflite-int8" else None
    return _key([name, variant, seed] + ([digest] if digest else []))


def build_model(name: str, variant: str, cache_dir=None, seed: int = DEFAULT_SEED,
                representative=None) -> Artifact:
    """The artifact for a built-in model variant, built on first use, then served from the cache.

    representative: a folder of .npy samples (or images, with Pillow) that calibrates int8;
    default: seeded random pixels.

    Raises:
        ConfigError: unknown name or variant.
        ModelBuildError: TensorFlow (or tf2onnx, edgetpu_compiler) is missing, or the build failed.
    """
    if name not in BUILTINS:
        raise ConfigError("unknown built-in model %r; built-ins: %s" % (name, ", ".join(list_builtins())))
    if variant not in VARIANTS:
        raise ConfigError("unknown variant %r of %s; variants: %s" % (variant, name, ", ".join(VARIANTS)))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if variant == "int8-edgetpu":
        return _build_edgetpu(build_model(name, "tflite-int8", root, seed, representative), root)
    rep = str(Path(representative).resolve()) if representative and variant == "tflite-int8" else None
    spec = {"name": name, "variant": variant, "seed": seed, "representative": rep}
    return _cached_build(root, cache_key(name, variant, seed, rep), spec)


def build_user_variant(folder, variant: str, cache_dir=None, seed: int = DEFAULT_SEED,
                       representative=None) -> Artifact:
    """A variant of a user's SavedModel folder (TFLite fp32/fp16/int8, ONNX, Edge TPU), cached
    by the folder's content hash like the built-ins.

    Raises:
        ConfigError: not a SavedModel folder, or an unknown variant.
        ModelBuildError: as build_model; also a SavedModel the converters cannot read.
    """
    if variant not in VARIANTS:
        raise ConfigError("unknown variant %r; variants: %s" % (variant, ", ".join(VARIANTS)))
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    source = resolve_user_model(folder, root)
    if source.format != "savedmodel":
        raise ConfigError("%s: variants are built from a SavedModel folder, not a %s file"
                          % (folder, source.format))
    if variant == "savedmodel":
        return dataclasses.replace(source, variant="savedmodel")
    if variant == "int8-edgetpu":
        return _build_edgetpu(build_user_variant(folder, "tflite-int8", root, seed, representative),
                              root)
    rep = str(Path(representative).resolve()) if representative and variant == "tflite-int8" else None
    digest = variants.representative_digest(rep)
    spec = {"name": source.name, "variant": variant, "seed": seed, "representative": rep,
            "savedmodel": str(Path(folder).expanduser().resolve())}
    return _cached_build(root, _key(["user", source.sha256, variant, seed, digest]), spec)


def _cached_build(root: Path, key: str, spec: dict) -> Artifact:
    final = root / key
    cached = _load_cached(final)
    if cached is not None:
        return cached
    if _tf_version() is None:
        raise ModelBuildError(_NO_TF % spec["name"])
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _build_in_subprocess(work, spec)
        _publish(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _load_cached(final)


def _publish(work: Path, final: Path) -> None:
    try:
        os.rename(work, final)
    except OSError:
        if _load_cached(final) is None:  # not a concurrent builder that won the race
            raise


def _build_edgetpu(int8: Artifact, root: Path) -> Artifact:
    """int8-edgetpu: edgetpu_compiler run here on the int8 file, or the way to run it elsewhere."""
    compiler = variants.which_edgetpu_compiler()
    if compiler is None:
        raise ModelBuildError(variants.EDGETPU_MISSING % {
            "file": int8.local_path, "stem": Path(int8.local_path).stem})
    final = root / _key(["edgetpu", int8.sha256, variants.edgetpu_compiler_version(compiler)])
    cached = _load_cached(final)
    if cached is not None:
        return cached
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        out = variants.compile_edgetpu(compiler, Path(int8.local_path), work)
        art = Artifact(int8.name, "int8-edgetpu", "tflite", Path(out.name), sha256_file(out), False)
        (work / "artifact.json").write_text(json.dumps(art.to_json(), indent=1))
        _publish(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _load_cached(final)


def _load_cached(folder: Path) -> Artifact | None:
    meta = folder / "artifact.json"
    if not meta.is_file():
        return None
    return Artifact.from_json(json.loads(meta.read_text()), base=folder)


def _build_in_subprocess(work: Path, spec: dict) -> None:
    """Run _build_into in a fresh Python. Keras layer names and TF function names come from
    process-wide counters, so a second build in one process gives a different SavedModel; a
    fresh process makes every build bit-identical, and keeps TensorFlow out of the controller."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "orchestrator.models.zoo", str(work), json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = work / "error.txt"  # a ModelBuildError in the child: its message, no traceback
        if reason.is_file():
            raise ModelBuildError(reason.read_text())
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ModelBuildError("building %s/%s failed (exit %d):\n%s"
                              % (spec["name"], spec["variant"], proc.returncode, tail))


def _build_into(work: Path, spec: dict) -> None:
    """Build one variant into `work`; artifact.json is written last and marks it complete."""
    name, variant, seed, user = spec["name"], spec["variant"], spec["seed"], spec.get("savedmodel")
    precision = variants.VARIANT_FORMATS[variant][1]
    try:
        if variant == "onnx":
            if user:
                data = variants.savedmodel_to_onnx(user)
            else:
                # The module must outlive the conversion: the concrete function holds its
                # variables only weakly, and TensorFlow refuses to freeze deleted ones.
                module = _module(name, seed)
                data = variants.concrete_to_onnx(module.serve.get_concrete_function())
            (work / "model.onnx").write_bytes(data)
            art = Artifact(name, variant, "onnx", Path("model.onnx"),
                           sha256_file(work / "model.onnx"), False)
        elif user:
            data = variants.savedmodel_to_tflite(user, precision, spec["representative"], seed)
            (work / "model.tflite").write_bytes(data)
            art = Artifact(name, variant, "tflite", Path("model.tflite"),
                           sha256_file(work / "model.tflite"), False)
        elif variant == "savedmodel":
            _save_savedmodel(name, seed, work / "saved_model")
            tar, digest = pack_savedmodel(work / "saved_model", work)
            tar = tar.rename(work / "saved_model.tar")
            art = Artifact(name, variant, "savedmodel", Path("saved_model.tar"), digest, True,
                           Path("saved_model"))
        else:
            data = _to_tflite(name, seed, precision, spec["representative"])
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


def _to_tflite(name: str, seed: int, precision: str, representative=None) -> bytes:
    """fp32: the int32-input graph as is. fp16: the same with float16 weights. int8:
    full-integer weights and activations, uint8 input (pixels, scale 1), float output: decoding
    ops TFLite cannot quantize stay float; calibrated on `representative` or seeded pixels."""
    import numpy as np
    import tensorflow as tf
    module = _module(name, seed)
    int8 = precision == "int8"
    fn = module.serve_float if int8 else module.serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], module)
    samples = None
    if int8:
        side = BUILTINS[name][0]
        if representative:
            arrays = variants.load_representative(representative, [1, side, side, 3], np.float32)
        else:
            rng = np.random.RandomState(seed)
            arrays = [rng.randint(0, 256, (1, side, side, 3)).astype(np.float32) for _ in range(8)]
        samples = [[a] for a in arrays]
        converter.inference_input_type = tf.uint8
    return variants.configure_tflite(converter, precision, samples).convert()


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


if __name__ == "__main__":  # the build child: python -m orchestrator.models.zoo WORK SPEC_JSON
    try:
        _build_into(Path(sys.argv[1]), json.loads(sys.argv[2]))
    except ModelBuildError as exc:
        (Path(sys.argv[1]) / "error.txt").write_text(str(exc))
        sys.exit(3)
