"""Session fixture: movenet-tiny in every variant, built once into a cache shared across runs.

Test modules import `tiny_models` from here (tests/conftest.py is left to the suite as a whole).
The cache is content-keyed, so a stale entry is impossible: a changed zoo.py or TensorFlow
gives new keys and a rebuild (about 15 s per variant), an unchanged one costs milliseconds.
"""

import os

import pytest

# The cache root as the CLI sees it (BENCHFLEET_CACHE); models live in its models/ folder.
TEST_ROOT = os.environ.get("BENCHFLEET_CACHE", "/tmp/benchfleet-test-cache")
TEST_CACHE = os.path.join(TEST_ROOT, "models")


@pytest.fixture(scope="session")
def tiny_models():
    """{variant: Artifact} for movenet-tiny's CORE_VARIANTS (TensorFlow alone builds them);
    skips when TensorFlow cannot build them here."""
    from orchestrator.models import zoo
    from orchestrator.errors import ModelBuildError
    try:
        return {v: zoo.build_model("movenet-tiny", v, cache_dir=TEST_CACHE)
                for v in zoo.CORE_VARIANTS}
    except ModelBuildError as exc:
        pytest.skip(str(exc))
