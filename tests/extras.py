"""The optional extras tests need (TensorFlow, a TFLite runtime, ONNX tools, OpenVINO), and the
skip that says what is missing and how to install it. `pip install -e '.[all,test]'` has them all."""

import importlib.util

import pytest

INSTALL = "pip install -e '.[all,test]'"


def have(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_reason(*modules):
    missing = [m for m in modules if not have(m)]
    return "needs %s (%s)" % (", ".join(missing), INSTALL) if missing else None


def needs(*modules):
    """A skipif mark for tests that need these modules on the controller."""
    reason = missing_reason(*modules)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def require(*modules):
    """Skip the running test (or fixture) unless these modules are installed."""
    reason = missing_reason(*modules)
    if reason:
        pytest.skip(reason)
