"""The TFLite backend: one Interpreter, its threads, XNNPACK, and any external delegate by path.

Runs on Python 3.6+; numpy and the TFLite runtime are imported inside methods so that the agent
starts (and probes) on devices that lack them.
"""

import os

from agent import tflite_model
from agent.backends.base import Backend, BackendUnavailable, BadModel, check_samples

# Tried in this order: the current standalone runtime, the legacy one (Pi, Python <= 3.11), and
# the copy inside full TensorFlow. The first that imports is the one a device has chosen.
_RUNTIMES = (
    ("ai_edge_litert.interpreter", "ai_edge_litert"),
    ("tflite_runtime.interpreter", "tflite_runtime"),
    ("tensorflow.lite.python.interpreter", "tensorflow"),
)


def import_interpreter(runtimes=None):
    """(interpreter module, module name, version) of the first of runtimes (default _RUNTIMES,
    looked up at call time) that imports.

    Raises:
        BackendUnavailable: none of them is installed.
    """
    import importlib
    if runtimes is None:
        runtimes = _RUNTIMES
    for module_name, package in runtimes:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        top = importlib.import_module(package)
        version = getattr(top, "__version__", None) or getattr(module, "__version__", None)
        return module, module_name, str(version) if version else None
    raise BackendUnavailable(
        "no TFLite runtime: %s not installed" % _listed([p for _, p in runtimes]),
        hint="pip install ai-edge-litert  (or tflite-runtime on Python <= 3.11)")


def _listed(names):
    if len(names) == 1:
        return names[0] + " is"
    return ", ".join(names[:-1]) + " and " + names[-1] + " are"


def read_model_info(path):
    """tflite_model.ModelInfo of the model file, read without the runtime.

    Raises:
        BadModel: no path, an unreadable file, or not a (valid) TFLite flatbuffer.
    """
    if not path:
        raise BadModel("this backend needs a .tflite model file, got none")
    try:
        return tflite_model.read_model(str(path))
    except (IOError, OSError) as exc:
        raise BadModel("cannot read model file %s: %s" % (path, exc))
    except ValueError as exc:
        raise BadModel(str(exc))


def fallback_reason(left):
    """The validity reason for ops left on the CPU under require_full_delegation.

    left: op names in node order -> "3 ops fell back to the CPU: DEQUANTIZE x2, RESHAPE".
    """
    counts, order = {}, []
    for name in left:
        if name not in counts:
            order.append(name)
        counts[name] = counts.get(name, 0) + 1
    names = ", ".join(n if counts[n] == 1 else "%s x%d" % (n, counts[n]) for n in order)
    return "%d ops fell back to the CPU: %s" % (len(left), names)


class TFLiteBackend(Backend):
    """Options (runtime.options):
      xnnpack: true|false (default true): TFLite's default CPU delegate.
      delegate: PATH, delegate_options: {key: value}: an external delegate (GPU, Hexagon, ...)
        loaded with load_delegate(PATH, delegate_options).
      require_full_delegation: true: any op left outside the delegates makes the result INVALID.
    Threads: runtime.threads -> num_threads.
    """

    name = "tflite"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.threads = self.runtime.get("threads")
        self.xnnpack = self.options["xnnpack"]
        self.require_full = self.options["require_full_delegation"]
        self.interpreter = None
        self.model_info = None
        self._runtime = None
        self._delegate_names = []

    def load(self):
        module, module_name, version = import_interpreter()
        self._runtime = (module_name, version)
        self.model_info = read_model_info(self.model_path)
        delegates = []
        path = self.options.get("delegate")
        if path:
            delegates.append(load_external_delegate(module, path,
                                                    self.options.get("delegate_options")))
            self._delegate_names.append(os.path.basename(str(path)))
        self._bind(self._create_interpreter(module, delegates))

    def _create_interpreter(self, module, delegates):
        """An allocated Interpreter with `delegates` applied and XNNPACK as the options say."""
        kwargs = {"model_path": str(self.model_path), "num_threads": self.threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if not self.xnnpack:
            resolver = getattr(module, "OpResolverType", None)
            if resolver is None:
                module_name, version = self._runtime or (module.__name__, None)
                raise BackendUnavailable(
                    "xnnpack: false is not supported by %s %s (no OpResolverType)"
                    % (module_name, version), hint="pip install -U ai-edge-litert")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            # Also what an Edge TPU model gives here: an unresolved custom op.
            with_delegates = " with %s" % ", ".join(self._delegate_names) if delegates else ""
            raise BadModel("%s: TFLite cannot load this model%s: %s"
                           % (self.model_path, with_delegates, exc))
        return interpreter

    def _bind(self, interpreter):
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

    def inputs_from(self, samples):
        """Representative samples as the interpreter's inputs (get_input_details order, which is
        the model file's subgraph input order the controller writes them in)."""
        return check_samples(samples, [(d["name"], d["shape"], d["dtype"]) for d in self._inputs],
                             self.name)

    splits_staging = True

    def invoke(self, inputs):
        self.stage(inputs)
        self.execute()

    def stage(self, inputs):
        set_tensor = self._set_tensor
        for index, array in zip(self._input_indices, inputs):
            set_tensor(index, array)

    def execute(self):
        # Interpreter.invoke() is synchronous on CPU and XNNPACK: outputs are ready on return.
        self._invoke()

    def describe(self):
        module_name, version = self._runtime or (None, None)
        names = self._delegates_asked()
        facts = {
            "version": version,
            "runtime_module": module_name,
            "delegate": "+".join(names) or None,
            "provider": None,
            "threads": self.threads,
            "delegation": {"ops_total": None, "ops_delegated": None},
        }
        if self.interpreter is None:
            return facts
        facts["delegation"] = self._delegation()
        facts["inputs"] = [_tensor_facts(d) for d in self._inputs]
        facts["outputs"] = [_tensor_facts(d) for d in self.interpreter.get_output_details()]
        reasons = self._validity_reasons(facts["delegation"])
        if reasons:
            facts["validity_reasons"] = reasons
        return facts

    def _delegation(self):
        """ops_total from the model file (subgraph 0, the one the interpreter runs); ops_delegated
        = ops_total minus the ops still executed outside a DELEGATE node (see cpu_ops())."""
        total = len(self.model_info.ops()) if self.model_info is not None else None
        left = cpu_ops(self.interpreter)
        delegated = total - len(left) if total is not None and left is not None else None
        return {"ops_total": total, "ops_delegated": delegated, "fallback_ops": left,
                "delegates": self._delegates_asked()}

    def _delegates_asked(self):
        return list(self._delegate_names) + (["xnnpack"] if self.xnnpack else [])

    def _validity_reasons(self, delegation):
        if not self.require_full:
            return []
        left = delegation.get("fallback_ops")
        if left is None:
            return ["require_full_delegation: this runtime does not show which ops were delegated"]
        return [fallback_reason(left)] if left else []

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


def load_external_delegate(module, path, options=None):
    """load_delegate(path, options) of the TFLite runtime `module`, failures as BackendUnavailable.

    A bare library name (no folder) is left to the dynamic loader's search path.
    """
    path = str(path)
    if options is not None and not isinstance(options, dict):
        raise ValueError("runtime.options.delegate_options must be a mapping, got %r" % (options,))
    hint = "install the delegate library on the device, or fix runtime.options.delegate"
    if os.path.dirname(path) and not os.path.exists(path):
        raise BackendUnavailable("delegate %s (runtime.options.delegate) not found" % path,
                                 hint=hint)
    try:
        open_library(path)
        return module.load_delegate(path, dict(options or {}))
    except OSError as exc:  # the dynamic loader could not open the library
        raise BackendUnavailable("delegate %s (runtime.options.delegate) cannot be loaded: %s"
                                 % (path, exc), hint=hint)
    except ValueError as exc:  # the library refused to create the delegate
        raise BackendUnavailable("delegate %s (runtime.options.delegate) failed to start: %s"
                                 % (path, "; ".join(t for t in str(exc).splitlines() if t.strip())),
                                 hint=hint)


def open_library(path):
    """dlopen `path` (OSError when it cannot). Done before load_delegate so that a missing library
    fails here cleanly: load_delegate's Delegate object would also raise again from __del__."""
    import ctypes
    ctypes.CDLL(path)


def cpu_ops(interpreter):
    """Names of the model's ops that still run outside any delegate, in node order; None where
    the runtime hides its nodes.

    Why not count nodes: _get_ops_details() lists every node the interpreter has, which is the
    model's ops (still listed after a delegate took them) followed by one DELEGATE node per
    partition taken; Python sees no execution plan. But TFLite gives a DELEGATE node exactly the
    input and output tensors of its partition, so walking back from its outputs through the ops
    that produce them, stopping at its inputs and at tensors nothing produces (constants, model
    inputs), visits exactly the ops it replaced. The ops no walk reaches stayed on the CPU.
    """
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        return None
    try:  # a private API: its absence or change must not fail a measured case
        nodes = get_ops()
        ops = [n for n in nodes if n.get("op_name") != "DELEGATE"]
        producer = {}
        for op in ops:
            for t in op["outputs"]:
                producer[int(t)] = op
        taken = set()
        for node in nodes:
            if node.get("op_name") == "DELEGATE":
                _walk_partition(node, producer, taken)
        return [op["op_name"] for op in ops if op["index"] not in taken]
    except Exception:
        return None


def _walk_partition(node, producer, taken):
    stop = set(int(t) for t in node["inputs"])
    todo = [int(t) for t in node["outputs"]]
    while todo:
        t = todo.pop()
        op = producer.get(t)
        if t in stop or op is None or op["index"] in taken:
            continue
        taken.add(op["index"])
        todo.extend(int(x) for x in op["inputs"] if int(x) >= 0)


def _tensor_facts(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "name": detail.get("name"),
        "shape": [int(s) for s in detail["shape"]],
        "dtype": getattr(detail["dtype"], "__name__", str(detail["dtype"])),
        "quantization": [float(scale), int(zero_point)],
    }
