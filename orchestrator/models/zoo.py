"""Built-in MoveNet-architecture models with seeded weights, cached by content key: every missing
variant of a model is built in one child Python (child.py), which reports progress as it goes.

No pretrained weights are needed: latency does not depend on weight values, only on the graph.
Each built-in has MoveNet's shape (movenet.py): MobileNetV2 backbone, FPN-like neck to stride 4,
the four single-pose heads, and the decoding step to [1, 1, 17, 3] (y, x, score) in the graph.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import shutil
import time
from pathlib import Path

from orchestrator.cache import cache_root
from orchestrator.errors import ConfigError, ModelBuildError
from orchestrator.models import child, movenet, store, variants
from orchestrator.models.artifacts import Artifact, pack_savedmodel, sha256_file

BUILTINS = movenet.ARCHITECTURES  # name -> (input side, MobileNetV2 alpha, neck channels)
VARIANTS = tuple(variants.VARIANT_FORMATS)  # savedmodel first: the order a child builds in
# Built by TensorFlow alone (onnx also needs tf2onnx, int8-edgetpu the edgetpu_compiler).
CORE_VARIANTS = ("savedmodel", "tflite-fp32", "tflite-fp16", "tflite-int8")
DEFAULT_SEED = 0
KEYPOINTS = movenet.KEYPOINTS
_BUILD_CODE = (__file__, variants.__file__, movenet.__file__, child.__file__)
_TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly",
                     "tensorflow-macos", "intel-tensorflow")


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
    """sha256 of the build code (the modules in _BUILD_CODE), the inputs and tool versions."""
    source = b"\0".join(Path(f).read_bytes() for f in _BUILD_CODE)
    tools = [_tf_version()] + ([_version("tf2onnx"), _version("onnx")] if "onnx" in parts else [])
    return hashlib.sha256(source + b"\0" + json.dumps(parts + tools).encode()).hexdigest()


def cache_key(name: str, variant: str, seed: int = DEFAULT_SEED, representative=None) -> str:
    """sha256 of everything a build depends on: code, model, variant, seed, tool versions and,
    for int8, the representative data (a folder's files hashed; None: seeded random data)."""
    digest = variants.representative_digest(representative) if variant == "tflite-int8" else None
    return _key([name, variant, seed] + ([digest] if digest else []))


def build_models(name: str, variants_wanted, cache_dir=None, seed: int = DEFAULT_SEED,
                 representative=None, on_progress=None) -> tuple[dict, dict]:
    """Every requested variant of a built-in model: cache hits at once (no TensorFlow import),
    the missing ones built in one child Python, int8-edgetpu compiled here from tflite-int8.

    representative: a folder of .npy samples (or images, with Pillow) that calibrates int8;
    default: seeded random pixels.
    on_progress(event), for each variant built (not for cache hits), in build order: {"event":
    "start" | "done" | "failed", "model", "variant", "index" (1-based), "total", "seconds"
    (None at start), "error" (the reason, failed only)}. A variant that fails before it starts
    (no TensorFlow, a crashed child) gets "failed" alone. progress_line(event) formats one.

    Returns (artifact by variant, error message by variant); each requested variant is in one.

    Raises:
        ConfigError: unknown name or variant.
    """
    if name not in BUILTINS:
        raise ConfigError("unknown built-in model %r; built-ins: %s" % (name, ", ".join(list_builtins())))
    wanted = _check_variants(variants_wanted, name)
    rep = str(Path(representative).resolve()) if representative else None
    spec = {"name": name, "seed": seed, "representative": rep}
    return _build_all(spec, wanted, _root(cache_dir), lambda v: cache_key(name, v, seed, rep),
                      on_progress)


def build_model(name: str, variant: str, cache_dir=None, seed: int = DEFAULT_SEED,
                representative=None) -> Artifact:
    """One variant of a built-in model: build_models for that variant alone.

    Raises:
        ConfigError: unknown name or variant.
        ModelBuildError: TensorFlow (or tf2onnx, edgetpu_compiler) is missing, or the build failed.
    """
    built, errors = build_models(name, [variant], cache_dir, seed, representative)
    if variant in errors:
        raise ModelBuildError(errors[variant])
    return built[variant]


def progress_line(event: dict) -> str:
    """'building movenet-lightning tflite-int8 (2/3)...' at start, the same with ' 5.1 s' once
    done, or with ' FAILED after 5.1 s: ' and the reason's first line."""
    head = "building %s %s (%s/%s)..." % (event.get("model"), event.get("variant"),
                                          event.get("index"), event.get("total"))
    seconds = event.get("seconds")
    if event.get("event") == "done":
        return head + (" %.1f s" % seconds if seconds is not None else "")
    if event.get("event") == "failed":
        reason = (event.get("error") or "").strip().splitlines() or ["unknown reason"]
        after = " after %.1f s" % seconds if seconds else ""
        return head + " FAILED%s: %s" % (after, reason[0])
    return head


def _check_variants(wanted, what) -> list[str]:
    wanted = list(dict.fromkeys(wanted))
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        raise ConfigError("unknown variant %s of %s; variants: %s"
                          % (", ".join(map(repr, unknown)), what, ", ".join(VARIANTS)))
    return wanted


def _root(cache_dir) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def _build_all(spec: dict, wanted: list, root: Path, key_of, on_progress) -> tuple[dict, dict]:
    """build_models for any source: key_of(variant) is its cache key."""
    with store.build_lock(root, spec["name"]):
        return _build_locked(spec, wanted, root, key_of, on_progress)


def _build_locked(spec: dict, wanted: list, root: Path, key_of, on_progress) -> tuple[dict, dict]:
    # In VARIANTS order (see child._Builder); int8-edgetpu is compiled here from tflite-int8.
    need = [v for v in VARIANTS if v != "int8-edgetpu" and (
        v in wanted or (v == "tflite-int8" and "int8-edgetpu" in wanted))]
    keys, done, errors = {}, {}, {}
    for v in need:
        try:
            keys[v] = key_of(v)
        except ModelBuildError as exc:  # a representative folder that cannot be read
            errors[v] = str(exc)
            continue
        cached = store.load(root / keys[v])
        if cached is not None:
            done[v] = cached
    edgetpu = "int8-edgetpu" in wanted and store.cached_edgetpu(done.get("tflite-int8"), root,
                                                                _edgetpu_key)
    if edgetpu:
        done["int8-edgetpu"] = edgetpu
    steps = [v for v in need + ["int8-edgetpu"] if v not in done and (v in need or v in wanted)]
    report = _Reporter(spec["name"], steps, on_progress)
    for v in errors:
        report("failed", v, None, errors[v])
    jobs = [v for v in keys if v not in done]
    if jobs:
        _build_in_child(root, spec, {v: keys[v] for v in jobs}, done, errors, report)
    if "int8-edgetpu" in steps:
        _edgetpu_step(done, errors, root, report)
    return ({v: done[v] for v in wanted if v in done},
            {v: errors[v] for v in wanted if v in errors})


class _Reporter:
    """Turns build steps into on_progress events with their place among all the steps."""

    def __init__(self, name: str, steps: list, on_progress):
        self.name, self.steps, self.on_progress = name, steps, on_progress

    def __call__(self, event: str, variant: str, seconds=None, error=None) -> None:
        if self.on_progress is None or variant not in self.steps:
            return
        self.on_progress({"event": event, "model": self.name, "variant": variant,
                          "index": self.steps.index(variant) + 1, "total": len(self.steps),
                          "seconds": seconds, "error": error})


def _build_in_child(root: Path, spec: dict, keys: dict, done: dict, errors: dict, report) -> None:
    """Build the variants in `keys` (variant -> cache key) in one child; each is published to
    the cache the moment the child reports it done, so a later crash loses nothing built."""
    if _tf_version() is None:
        for v in keys:
            errors[v] = child.NO_TF % spec["name"]
            report("failed", v, None, errors[v])
        return
    works = {v: store.new_work(root) for v in keys}

    def on_event(event: dict) -> None:
        v, kind, error = event["variant"], event["event"], event.get("error")
        if kind == "done":
            try:
                done[v] = store.publish(works[v], root / keys[v])
            except OSError as exc:
                kind, error = "failed", "%s/%s: cannot store it in the cache %s: %s" % (
                    spec["name"], v, root, exc)
        if kind == "failed":
            errors[v] = error
        report(kind, v, event.get("seconds"), error)

    try:
        child.run_child(spec, [(v, works[v]) for v in keys], on_event)
    finally:
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)


def _edgetpu_step(done: dict, errors: dict, root: Path, report) -> None:
    report("start", "int8-edgetpu")
    t0 = time.monotonic()
    try:
        if "tflite-int8" not in done:
            raise ModelBuildError("int8-edgetpu is compiled from tflite-int8, which failed: %s"
                                  % errors.get("tflite-int8"))
        done["int8-edgetpu"] = store.build_edgetpu(done["tflite-int8"], root, _edgetpu_key)
    except ModelBuildError as exc:
        errors["int8-edgetpu"] = str(exc)
        report("failed", "int8-edgetpu", round(time.monotonic() - t0, 3), str(exc))
        return
    report("done", "int8-edgetpu", round(time.monotonic() - t0, 3))


def build_user_variants(folder, variants_wanted, cache_dir=None, seed: int = DEFAULT_SEED,
                        representative=None, on_progress=None) -> tuple[dict, dict]:
    """Variants of a user's SavedModel folder (TFLite fp32/fp16/int8, ONNX, Edge TPU; savedmodel
    is the folder itself), cached by the folder's content hash and built as build_models does.

    Raises:
        ConfigError: not a SavedModel folder, or an unknown variant.
    """
    wanted = _check_variants(variants_wanted, folder)
    root = _root(cache_dir)
    source = resolve_user_model(folder, root)
    if source.format != "savedmodel":
        raise ConfigError("%s: variants are built from a SavedModel folder, not a %s file"
                          % (folder, source.format))
    rep = str(Path(representative).resolve()) if representative else None
    spec = {"name": source.name, "seed": seed, "representative": rep,
            "savedmodel": str(Path(folder).expanduser().resolve())}

    def key_of(v):
        digest = variants.representative_digest(rep) if v == "tflite-int8" else None
        return _key(["user", source.sha256, v, seed, digest])

    built, errors = _build_all(spec, [v for v in wanted if v != "savedmodel"], root, key_of,
                               on_progress)
    built["savedmodel"] = dataclasses.replace(source, variant="savedmodel")
    return {v: built[v] for v in wanted if v in built}, errors


def build_user_variant(folder, variant: str, cache_dir=None, seed: int = DEFAULT_SEED,
                       representative=None) -> Artifact:
    """One variant of a user's SavedModel folder: build_user_variants for it alone.

    Raises:
        ConfigError: not a SavedModel folder, or an unknown variant.
        ModelBuildError: as build_model; also a SavedModel the converters cannot read.
    """
    built, errors = build_user_variants(folder, [variant], cache_dir, seed, representative)
    if variant in errors:
        raise ModelBuildError(errors[variant])
    return built[variant]


def _edgetpu_key(int8_sha256: str, compiler_version: str) -> str:
    return _key(["edgetpu", int8_sha256, compiler_version])


def resolve_user_model(path, cache_dir=None) -> Artifact:
    """An Artifact for a user's model: a .tflite/.onnx file, or a SavedModel folder or an OpenVINO
    IR .xml (+ .bin) packed to a tar.

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
    if p.is_file() and p.suffix.lower() == ".xml":  # an OpenVINO IR: .xml + .bin in one tar
        from orchestrator.models.artifacts import pack_openvino_ir
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            tar, digest = pack_openvino_ir(p, root / "user-openvino")
        except ValueError as exc:
            raise ConfigError(str(exc))
        return Artifact(p.stem, "user", "openvino", tar, digest, True)
    formats = {".tflite": "tflite", ".onnx": "onnx"}
    if p.is_file() and p.suffix.lower() in formats:
        return Artifact(p.stem, "user", formats[p.suffix.lower()], p, sha256_file(p), False)
    if not p.exists():
        raise ConfigError("%s: model path does not exist" % p)
    raise ConfigError("%s: not a model benchfleet knows: expected a .tflite or .onnx file or a "
                      "SavedModel folder (with saved_model.pb)" % p)
