"""Backend registry: a backend name -> its class, imported only when a case asks for it.

Lazy by module path so `probe` and the synthetic backend never pay for importing a framework,
and a framework missing on a device fails only the cases that need it (as SKIPPED).
"""

import importlib

from agent.backends.base import BackendUnavailable

# name -> (module, class). Names absent here but in schema.BACKENDS are planned, not built.
_REGISTRY = {
    "synthetic": ("agent.backends.synthetic", "SyntheticBackend"),
    "tflite": ("agent.backends.tflite", "TFLiteBackend"),
    "tensorflow": ("agent.backends.tensorflow", "TensorFlowBackend"),
    "tf-trt": ("agent.backends.tftrt", "TFTRTBackend"),
    "tensorrt": ("agent.backends.tensorrt_backend", "TensorRTBackend"),
    "edgetpu": ("agent.backends.edgetpu", "EdgeTPUBackend"),
    "onnxruntime": ("agent.backends.onnxrt", "OnnxRuntimeBackend"),
}
_PLANNED = ()


def planned_backends():
    """Backend names the schema knows but this agent version does not implement (plan skips them)."""
    return _PLANNED


def allowed_names():
    return tuple(sorted(_REGISTRY)) + _PLANNED


def get_backend_class(name):
    """The Backend subclass for `name`.

    Raises:
      BackendUnavailable: a known backend this agent version does not implement yet.
      ValueError: an unknown name (the message lists the allowed ones).
    """
    if name in _PLANNED:
        raise BackendUnavailable("%s backend is not in this agent version" % name,
                                 hint="planned; see issue 3")
    if name not in _REGISTRY:
        raise ValueError("unknown backend %r; allowed: %s" % (name, ", ".join(allowed_names())))
    module_name, class_name = _REGISTRY[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)
