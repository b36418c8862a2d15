"""The TFLite backend: one Interpreter, its threads and the XNNPACK default delegate.

Runs on Python 3.6+; numpy and the TFLite runtime are imported inside methods so that the agent
starts (and probes) on devices that lack them.
"""

from agent.backends.base import Backend, BackendUnavailable, BadModel

# Tried in this order: the current standalone runtime, the legacy one (Pi, Python <= 3.11), and
# the copy inside full TensorFlow. The first that imports is the one a device has chosen.
_RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite.python.interpreter", "tensorflow"),
)
_TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite file


def import_interpreter():
    """(interpreter module, module name, version) of the first TFLite runtime that imports.

    Raises:
        BackendUnavailable: none of them is installed.
    """
    import importlib
    for module_name, package in _RUNTIMES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        top = importlib.import_module(package)
        version = getattr(top, "__version__", None) or getattr(module, "__version__", None)
        return module, module_name, str(version) if version else None
    raise BackendUnavailable(
        "no TFLite runtime: ai_edge_litert, tflite_runtime and tensorflow are not installed",
        hint="pip install ai-edge-litert  (or tflite-runtime on Python <= 3.11)")


def _check_flatbuffer(path):
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except (IOError, OSError) as exc:
        raise BadModel("cannot read model file %s: %s" % (path, exc))
    if len(head) < 8 or head[4:8] != _TFLITE_MAGIC:
        raise BadModel("%s is not a TFLite flatbuffer (no 'TFL3' identifier at byte 4)" % path)


class TFLiteBackend(Backend):
    """Options: {"xnnpack": true|false} (default true). Threads: runtime.threads -> num_threads."""

    name = "tflite"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.threads = self.runtime.get("threads")
        self.xnnpack = bool(self.options.get("xnnpack", True))
        self.interpreter = None
        self._runtime = None

    def load(self):
        module, module_name, version = import_interpreter()
        self._runtime = (module_name, version)
        if not self.model_path:
            raise BadModel("the tflite backend needs a model file, got none")
        _check_flatbuffer(self.model_path)
        kwargs = {"model_path": str(self.model_path), "num_threads": self.threads}
        if not self.xnnpack:
            resolver = getattr(module, "OpResolverType", None)
            if resolver is None:
                raise BackendUnavailable(
                    "xnnpack: false is not supported by %s %s (no OpResolverType)"
                    % (module_name, version), hint="pip install -U ai-edge-litert")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            # Also what an Edge TPU model gives here: an unresolved custom op.
            raise BadModel("%s: TFLite cannot load this model: %s" % (self.model_path, exc))
        self.interpreter = interpreter
        self._inputs = interpreter.get_input_details()
        # Looked up once: invoke() is timed, and its overhead is measured against a bare loop.
        self._input_indices = tuple(d["index"] for d in self._inputs)
        self._set_tensor = interpreter.set_tensor
        self._invoke = interpreter.invoke

    def make_inputs(self, seed, count):
        """`count` lists of arrays, one per model input, from numpy RandomState(seed).

        Ranges: uint8 0..255, int8 -128..127, other integers 0..255 (pixels: MoveNet-style int32
        images), floats uniform in [0, 1). Values do not change the work a dense graph does;
        they only have to be valid for the dtype.
        """
        import numpy as np
        rng = np.random.RandomState(seed)
        pool = []
        for _ in range(count):
            arrays = []
            for detail in self._inputs:
                shape, dtype = tuple(int(s) for s in detail["shape"]), np.dtype(detail["dtype"])
                arrays.append(_random_array(rng, shape, dtype))
            pool.append(arrays)
        return pool

    def invoke(self, inputs):
        # Interpreter.invoke() is synchronous on CPU and XNNPACK: outputs are ready on return.
        set_tensor = self._set_tensor
        for index, array in zip(self._input_indices, inputs):
            set_tensor(index, array)
        self._invoke()

    def describe(self):
        module_name, version = self._runtime or (None, None)
        facts = {
            "version": version,
            "runtime_module": module_name,
            "delegate": "xnnpack" if self.xnnpack else None,
            "provider": None,
            "threads": self.threads,
            "delegation": {"ops_total": None, "ops_delegated": None},
        }
        if self.interpreter is None:
            return facts
        facts["delegation"]["ops_total"] = _count_ops(self.interpreter)
        facts["inputs"] = [_tensor_facts(d) for d in self._inputs]
        facts["outputs"] = [_tensor_facts(d) for d in self.interpreter.get_output_details()]
        return facts

    def close(self):
        self.interpreter = None
        self._set_tensor = self._invoke = None


def _random_array(rng, shape, dtype):
    import numpy as np
    if dtype == np.uint8:
        return rng.randint(0, 256, shape).astype(dtype)
    if dtype == np.int8:
        return rng.randint(-128, 128, shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.randint(0, 256, shape).astype(dtype)
    if dtype.kind == "f":
        return rng.random_sample(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.randint(0, 2, shape).astype(dtype)
    raise BadModel("input dtype %s is not supported by make_inputs" % dtype)


def _count_ops(interpreter):
    """Ops of the model, without the DELEGATE nodes a delegate adds (None if the runtime hides them)."""
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        return None
    try:
        return sum(1 for op in get_ops() if op.get("op_name") != "DELEGATE")
    except Exception:  # a private API: its absence or change must not fail a measured case
        return None


def _tensor_facts(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "name": detail.get("name"),
        "shape": [int(s) for s in detail["shape"]],
        "dtype": getattr(detail["dtype"], "__name__", str(detail["dtype"])),
        "quantization": [float(scale), int(zero_point)],
    }
