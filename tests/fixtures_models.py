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
