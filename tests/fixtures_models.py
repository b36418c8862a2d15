"""Session fixtures: movenet-tiny in every variant, built in one build_models call (one child
Python) into a cache shared across runs.

Test modules import `tiny_models` (and `tiny_onnx`) from here (tests/conftest.py is left to the
suite as a whole). The cache is content-keyed, so a stale entry is impossible: a changed build
code or TensorFlow gives new keys and a rebuild (about 40 s for all five variants), an unchanged
one costs milliseconds.
"""

import functools
import importlib.util
import os

import pytest

# The cache root as the CLI sees it (BENCHFLEET_CACHE); models live in its models/ folder.
TEST_ROOT = os.environ.get("BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache")
TEST_CACHE = os.path.join(TEST_ROOT, "models")
# CORE_VARIANTS (TensorFlow alone) and onnx (tf2onnx too), in one child.
TINY_VARIANTS = ("savedmodel", "tflite-fp32", "tflite-fp16", "tflite-int8", "onnx")


def onnx_tools_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tf2onnx", "onnx"))


@functools.lru_cache(maxsize=None)
def tiny_build():
    """(artifacts, errors) of build_models('movenet-tiny', TINY_VARIANTS) into TEST_CACHE, once
    per session. A plain function, not a fixture: modules that import one fixture from here
    would not see another it depends on."""
    from orchestrator.models import zoo
    # Test processes side by side (pytest -n 2) build it once: zoo holds a lock per model.
    return zoo.build_models("movenet-tiny", TINY_VARIANTS, cache_dir=TEST_CACHE)


@pytest.fixture(scope="session")
def tiny_models():
    """{variant: Artifact} for movenet-tiny's CORE_VARIANTS, and onnx when it built; skips when
    TensorFlow cannot build them here."""
    from orchestrator.models import zoo
    built, errors = tiny_build()
    for variant in zoo.CORE_VARIANTS:
        if variant in errors:
            pytest.skip(errors[variant])
    return built


@pytest.fixture(scope="session")
def tiny_onnx():
    """movenet-tiny's onnx Artifact; skipped with the reason when tf2onnx or onnx is missing,
    failed when they are installed and the build still failed."""
    built, errors = tiny_build()
    if "onnx" in errors:
        if not onnx_tools_installed():
            pytest.skip(errors["onnx"])
        pytest.fail("tf2onnx is installed, yet the onnx variant failed: %s" % errors["onnx"])
    return built["onnx"]


# ---------------------------------------------------------------- a data-dependent model

# A .tflite whose latency follows its input: a WHILE loop runs floor(mean pixel) times (0..255)
# over a 256x256 matmul + tanh. Seeded random uint8 pixels (mean ~127.5) run ~127 trips; a black
# image runs none. Built in a child Python once into the test cache, keyed by this source.
LOOPED_SIDE = 16
_LOOPED_SOURCE = r'''
import sys
import numpy as np
import tensorflow as tf
side, width = %d, 256
w = tf.constant(np.random.RandomState(0).standard_normal((width, width)).astype(np.float32) / 16.0)

@tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.uint8, name="image")])
def looped(image):
    trips = tf.cast(tf.reduce_mean(tf.cast(image, tf.float32)), tf.int32)
    state = tf.reshape(tf.cast(image[0, 0, :, :], tf.float32), [1, side * 3]) / 255.0
    state = tf.pad(state, [[0, 0], [0, width - side * 3]])
    _, out = tf.while_loop(lambda i, s: i < trips,
                           lambda i, s: (i + 1, tf.tanh(tf.matmul(s, w))),
                           [tf.constant(0), state])
    return {"output": out}

converter = tf.lite.TFLiteConverter.from_concrete_functions([looped.get_concrete_function()],
                                                            looped)
with open(sys.argv[1], "wb") as f:
    f.write(converter.convert())
''' % LOOPED_SIDE


def looped_tflite():
    """Path of the data-dependent .tflite (input 'image' uint8 [1, 16, 16, 3]; trips = floor of
    its mean pixel), built once into TEST_ROOT/fixtures; skips without TensorFlow."""
    return _child_built("looped", _LOOPED_SOURCE)


# Two inputs, named so that their sorted (signature) order differs from the subgraph's:
# "zeta" float32 [1, 4] and "alpha" int32 [1, 2]; output = sum(zeta) + sum(alpha).
_TWO_INPUT_SOURCE = r'''
import sys
import tensorflow as tf

@tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="zeta"),
                              tf.TensorSpec([1, 2], tf.int32, name="alpha")])
def two(zeta, alpha):
    return {"out": tf.reduce_sum(zeta) + tf.cast(tf.reduce_sum(alpha), tf.float32)}

converter = tf.lite.TFLiteConverter.from_concrete_functions([two.get_concrete_function()], two)
with open(sys.argv[1], "wb") as f:
    f.write(converter.convert())
'''


def _child_built(name, source):
    import hashlib
    import subprocess
    import sys
    from extras import require
    key = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    path = os.path.join(TEST_ROOT, "fixtures", "%s-%s.tflite" % (name, key))
    if not os.path.isfile(path):
        require("tensorflow")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        proc = subprocess.run([sys.executable, "-c", source, tmp], capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError("building %s failed:\n%s" % (name, proc.stderr[-3000:]))
        os.replace(tmp, path)
    return path


def two_input_tflite():
    """Path of a .tflite with inputs zeta float32 [1, 4] and alpha int32 [1, 2] (built once)."""
    return _child_built("two-input", _TWO_INPUT_SOURCE)
