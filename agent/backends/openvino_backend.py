"""The OpenVINO backend: ONNX or an IR (.xml + .bin) compiled for a device, one InferRequest.

OpenVINO never fails when AUTO/MULTI/HETERO skip a device or when a device ignores the precision
hint; the devices and precision actually used are read back and a mismatch makes the result
INVALID. Runs on Python 3.6+; numpy and openvino are imported inside methods.
"""

import os

from agent.backends.base import (Backend, BackendUnavailable, BadModel, check_samples,
                                 require_module)

INSTALL_HINT = "pip install openvino"
# Devices that choose among or split over the devices listed after the colon ("AUTO:GPU,CPU").
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
_PRECISION_HINTS = {"fp32": "f32", "fp16": "f16"}
_REPORTED_PRECISIONS = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
# OpenVINO element type names -> numpy dtype names (ov.Type.to_dtype is missing before 2023.1)
_DTYPES = {"f32": "float32", "f16": "float16", "f64": "float64", "i8": "int8", "u8": "uint8",
           "i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32", "i64": "int64",
           "u64": "uint64", "boolean": "bool"}
TIMED = ("set_input_tensor for each input, then InferRequest.infer(): synchronous, one request "
         "in flight; outputs are copied to numpy, as onnxruntime's session.run does")


def import_openvino():
    """The module holding Core (openvino, or openvino.runtime before 2023.1).
    Raises BackendUnavailable when openvino is not installed or too old."""
    ov = require_module("openvino", "openvino not installed", INSTALL_HINT)
    if not hasattr(ov, "Core"):
        ov = require_module("openvino.runtime", "openvino %s has no Core API (2022.1+ needed)"
                            % getattr(ov, "__version__", "?"), "pip install -U openvino")
    return ov


def parse_device(device):
    """(virtual device or None, hardware devices named): "CPU" -> (None, ["CPU"]),
    "AUTO:GPU,CPU" -> ("AUTO", ["GPU", "CPU"]); exclusions ("AUTO:-CPU") and MULTI's request
    counts ("GPU(4)") are not device names."""
    head, _, rest = device.partition(":")
    if head not in VIRTUAL_DEVICES:
        return None, [device]
    names = [n.split("(")[0].strip() for n in rest.split(",")]
    return head, [n for n in names if n and not n.startswith("-")]


def matches(asked, actual):
    # "GPU" is any GPU ("GPU.0", "GPU.1"); "GPU.1" is that one alone.
    return actual == asked or ("." not in asked and actual.split(".")[0] == asked)


def expected_devices(virtual, named):
    """The named devices that must run the model: AUTO picks the first one that works (the
    others are its fallbacks), MULTI and HETERO use all of them."""
    return named[:1] if virtual == "AUTO" else list(named)


class OpenVINOBackend(Backend):
    """Options: device (default "CPU"; "GPU", "NPU", "AUTO:GPU,CPU", ...), performance_hint
    (LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT). runtime.threads -> INFERENCE_NUM_THREADS,
    runtime.precision fp32/fp16 -> INFERENCE_PRECISION_HINT f32/f16."""

    name = "openvino"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.device = self.options["device"]
        self.hint = self.options["performance_hint"]
        self.threads = self.runtime.get("threads")
        self.precision = str(self.runtime.get("precision") or "fp32").lower()
        self.compiled_device = None
        self.compiled = None
        self.available = []
        self._ov = self._core = self._request = None
        self._used_after_load = None

    def _config(self):
        if self.precision not in _PRECISION_HINTS:
            raise BadModel("openvino: precision %r is not one it compiles to (%s); an int8 "
                           "model is quantized beforehand (NNCF)"
                           % (self.precision, ", ".join(sorted(_PRECISION_HINTS))))
        config = {"PERFORMANCE_HINT": self.hint,
                  "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[self.precision]}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        return config

    def _device_to_compile(self, available):
        """The device string to compile for, with absent devices left out of a virtual one.

        Where a device's plugin loads, AUTO and MULTI skip it when no such device exists; where
        it does not load (the GPU plugin without OpenCL) compile_model fails instead. Dropping
        absent devices here gives the fallback on both, and describe() reports it as INVALID.
        """
        virtual, named = parse_device(self.device)
        present = [n for n in named if any(matches(n, d) for d in available)]
        if named and not present:
            raise BackendUnavailable(
                "OpenVINO device %s not found here (available: %s)"
                % ("/".join(named), ", ".join(available) or "none"),
                "set options.device to one of the available OpenVINO devices: %s (a GPU needs "
                "Intel's GPU compute runtime, an NPU the Intel NPU driver)"
                % (", ".join(available) or "none"))
        if virtual is None or present == named:
            return self.device
        return "%s:%s" % (virtual, ",".join(present))

    def _read_model(self):
        path = str(self.model_path)
        if path.endswith(".xml") and not os.path.isfile(os.path.splitext(path)[0] + ".bin"):
            raise BadModel("%s: an OpenVINO IR needs its weights %s beside it"
                           % (path, os.path.basename(os.path.splitext(path)[0] + ".bin")))
        try:
            return self._core.read_model(path)
        except Exception as exc:  # RuntimeError in every release so far; the text says why
            raise BadModel("%s: OpenVINO cannot read this model: %s" % (path, _message(exc)))

    def load(self):
        self._ov = import_openvino()
        if not self.model_path or not os.path.isfile(str(self.model_path)):
            raise BadModel("cannot read model file %s" % self.model_path)
        config = self._config()
        self._core = self._ov.Core()
        self.available = list(self._core.available_devices)
        self.compiled_device = self._device_to_compile(self.available)
        model = self._read_model()
        try:
            self.compiled = self._core.compile_model(model, self.compiled_device, config)
        except Exception as exc:
            raise RuntimeError("%s: OpenVINO cannot compile this model for %s: %s"
                               % (self.model_path, self.compiled_device, _message(exc)))
        self._used_after_load = self._property("EXECUTION_DEVICES")
        self._request = self.compiled.create_infer_request()
        self._set_input = self._request.set_input_tensor  # looked up once: invoke() is timed
        self._infer = self._request.infer

    def make_inputs(self, seed, count):
        """`count` lists of ov.Tensor (one per input, sharing a seeded numpy array), ranges as
        the TFLite backend's; a dynamic dimension becomes 1."""
        import numpy as np
        from agent.backends.tflite import _random_array
        rng = np.random.RandomState(seed)
        pool = []
        for _ in range(count):
            tensors = []
            for port in self.compiled.inputs:
                array = _random_array(rng, _static_shape(port), _numpy_dtype(port))
                tensors.append(self._ov.Tensor(array, shared_memory=True))
            pool.append(tensors)
        return pool

    def inputs_from(self, samples):
        """Representative samples as ov.Tensors, in compiled.inputs order (a dynamic dimension
        takes any size)."""
        ports = list(self.compiled.inputs)
        checked = check_samples(samples, [(port.get_any_name(), _dims(port), _numpy_dtype(port))
                                          for port in ports], self.name)
        return [[self._ov.Tensor(a, shared_memory=True) for a in arrays] for arrays in checked]

    splits_staging = True

    def invoke(self, inputs):
        self.stage(inputs)
        self.execute()

    def stage(self, inputs):
        for index, tensor in enumerate(inputs):
            self._set_input(index, tensor)

    def execute(self):
        self._infer()

    def _property(self, name):
        """A compiled-model property, or None where the device does not report it (AUTO and
        MULTI report neither threads nor precision)."""
        try:
            return self.compiled.get_property(name)
        except Exception:
            return None

    def describe(self):
        facts = {"version": _version(self._ov), "delegate": None, "provider": None,
                 "delegation": {"ops_total": None, "ops_delegated": None}, "timed": TIMED,
                 "device_asked": self.device, "performance_hint": self.hint,
                 "threads": self.threads, "precision": self.precision}
        if self.compiled is None:
            return facts
        used = [str(d).strip("()") for d in self._property("EXECUTION_DEVICES") or []]
        reported_precision = self._property("INFERENCE_PRECISION_HINT")
        facts.update({
            "provider": ",".join(used) or None,
            "device_compiled": self.compiled_device,
            "devices_used": used,
            "devices_used_after_load": [str(d) for d in self._used_after_load or []],
            "devices_available": list(self.available),
            "performance_hint_reported": _name(self._property("PERFORMANCE_HINT")),
            "threads_reported": self._property("INFERENCE_NUM_THREADS"),
            "precision_reported": _REPORTED_PRECISIONS.get(_type_name(reported_precision),
                                                           _type_name(reported_precision)),
            "num_streams": _name(self._property("NUM_STREAMS")),
            "model_format": "ir" if str(self.model_path).endswith(".xml") else "onnx",
            "model_file": os.path.basename(str(self.model_path)),
            "inputs": [_port_facts(p) for p in self.compiled.inputs],
            "outputs": [_port_facts(p) for p in self.compiled.outputs],
        })
        reasons = self._validity_reasons(facts)
        if reasons:
            facts["validity_reasons"] = reasons
        return facts

    def _validity_reasons(self, facts):
        used = facts["devices_used"]
        virtual, named = parse_device(self.device)
        missing = [n for n in expected_devices(virtual, named)
                   if not any(matches(n, d) for d in used)]
        reasons = []
        if missing:
            reasons.append("asked for OpenVINO device %s (device %s) but it ran on %s"
                           % (", ".join(missing), self.device, ", ".join(used) or "nothing"))
        got = facts["precision_reported"]
        if got is not None and got != self.precision:
            reasons.append("asked for precision %s but OpenVINO runs at %s on %s "
                           "(INFERENCE_PRECISION_HINT)" % (self.precision, got, ", ".join(used)))
        threads = facts["threads_reported"]
        if self.threads and threads is not None and int(threads) != int(self.threads):
            reasons.append("asked for %s threads but OpenVINO uses %s (INFERENCE_NUM_THREADS)"
                           % (self.threads, threads))
        return reasons

    def close(self):
        self._request = self._set_input = self._infer = None
        self.compiled = None


def _version(ov):
    if ov is None:
        return None
    version = getattr(ov, "__version__", None)
    return version or (ov.get_version() if hasattr(ov, "get_version") else None)


def _message(exc):
    # OpenVINO prefixes each layer's text with "Exception from src/...:"; keep what it says.
    lines = [l.strip() for l in str(exc).splitlines()]
    kept = [l for l in lines if l and not l.startswith("Exception from ")]
    return " ".join(kept) or str(exc).strip() or type(exc).__name__


def _name(value):
    # PERFORMANCE_HINT comes back as a str from CPU and as a PerformanceMode enum from AUTO.
    if value is None or isinstance(value, (int, str)):
        return value
    return getattr(value, "name", None) or str(value)


def _type_name(element_type):
    return element_type.get_type_name() if hasattr(element_type, "get_type_name") else None


def _static_shape(port):
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise BadModel("input %s has a dynamic rank: make_inputs cannot give it a shape"
                       % port.get_any_name())
    return tuple(d.get_length() if d.is_static else 1 for d in shape)


def _dims(port):
    """The port's dimensions, None where dynamic (any size)."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise BadModel("input %s has a dynamic rank: representative inputs need a fixed rank"
                       % port.get_any_name())
    return [d.get_length() if d.is_static else None for d in shape]


def _numpy_dtype(port):
    import numpy as np
    name = port.get_element_type().get_type_name()
    if name not in _DTYPES:
        raise BadModel("input %s has element type %s, which make_inputs does not support"
                       % (port.get_any_name(), name))
    return np.dtype(_DTYPES[name])


def _port_facts(port):
    return {"name": port.get_any_name(), "shape": str(port.get_partial_shape()),
            "dtype": port.get_element_type().get_type_name()}
