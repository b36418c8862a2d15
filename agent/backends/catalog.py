"""The backend catalog: every fact about every backend, one entry each (stdlib, Python 3.6+).

The agent's registry, the schema's backend names, the suite's format, precision and option
checks, the planner's skip rules and the probe's list of runtimes all derive from MODULES and
BACKENDS below. Adding a backend is one module in agent/backends/ plus one entry here; the
recipe is docs/BACKENDS.md.
"""

import re

NAME_PATTERN = r"^[a-z][a-z0-9_-]*$"
# Model formats a backend may take (schema.MODEL_FORMATS is this tuple).
FORMATS = ("synthetic", "tflite", "savedmodel", "onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "int8")


class Module(object):
    """A Python module some backend imports, found by the probe without importing it.

    dists: the distributions that provide it (the first installed one gives the version).
    hint: the command that installs it. jetson_hint: the same on a Jetson, when it differs.
    """

    def __init__(self, name, dists, hint, jetson_hint=None):
        self.name, self.dists, self.hint, self.jetson_hint = name, tuple(dists), hint, jetson_hint


MODULES = (
    Module("numpy", ("numpy",), "pip install numpy"),
    Module("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly",
                          "tensorflow-aarch64", "tensorflow-intel"),
           "pip install tensorflow (or tensorflow-cpu)",
           jetson_hint="install NVIDIA's TensorFlow wheel for your JetPack "
                       "(developer.nvidia.com/embedded)"),
    Module("ai_edge_litert", ("ai-edge-litert", "ai-edge-litert-nightly"),
           "pip install ai-edge-litert"),
    Module("tflite_runtime", ("tflite-runtime", "tflite_runtime"),
           "pip install tflite-runtime (Python >= 3.9: pip install ai-edge-litert)"),
    Module("pycoral", ("pycoral",), "sudo apt-get install python3-pycoral (Coral apt repository)"),
    Module("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
           "pip install onnxruntime (onnxruntime-gpu for CUDA)"),
    Module("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
           "pip install tensorrt (on a Jetson it comes with JetPack: "
           "sudo apt-get install python3-libnvinfer)"),
    Module("openvino", ("openvino", "openvino-nightly"), "pip install openvino"),
)
MODULE = dict((m.name, m) for m in MODULES)


# ---------------------------------------------------------------- options

KINDS = ("bool", "int", "number", "str", "list", "mapping")
_KIND_TEXT = {"bool": "true or false", "int": "an integer", "number": "a number",
              "str": "a string", "list": "a list of strings", "mapping": "a mapping"}


class Option(object):
    """One runtime option (`options:` in a suite), its type, default and meaning.

    kind: one of KINDS, or a tuple of them (any one is accepted). default None means unset: the
    backend then decides, and the option is left out of what it receives.
    """

    def __init__(self, name, kind, default=None, help="", choices=None, minimum=None):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        for k in kinds:
            if k not in KINDS:
                raise ValueError("option %s: unknown kind %r; kinds: %s" % (name, k, ", ".join(KINDS)))
        self.name, self.kinds, self.default, self.help = name, kinds, default, help
        self.choices, self.minimum = choices, minimum

    def problem(self, value):
        """Why `value` is not acceptable for this option (a message), or None."""
        if not any(_is_kind(value, k) for k in self.kinds):
            text = " or ".join(_KIND_TEXT[k] for k in self.kinds)
            if isinstance(value, str) and "bool" in self.kinds and \
                    value.lower() in ("yes", "no", "on", "off", "true", "false", "y", "n"):
                return "expected %s, got the string %r (write true or false, unquoted)" % (
                    text, value)
            return "expected %s, got %s" % (text, _describe(value))
        if self.choices is not None and value not in self.choices:
            return "must be one of %s, got %r" % (", ".join(self.choices), value)
        if self.minimum is not None and isinstance(value, (int, float)) and \
                not isinstance(value, bool) and value < self.minimum:
            return "must be at least %g, got %r" % (self.minimum, value)
        return None

    def describe(self):
        text = " or ".join(self.kinds)
        if self.choices:
            text = "|".join(self.choices)
        default = "" if self.default is None else ", default %s" % _literal(self.default)
        return "%s (%s%s): %s" % (self.name, text, default, self.help)


def _is_kind(value, kind):
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and \
            value == value and value not in (float("inf"), float("-inf"))
    if kind == "str":
        return isinstance(value, str)
    if kind == "list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, dict)


def _describe(value):
    if isinstance(value, bool):
        return "a boolean (%s)" % _literal(value)
    if isinstance(value, str):
        return "the string %r" % value
    return "%s %r" % (type(value).__name__, value)


def _literal(value):
    return {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else value


# ---------------------------------------------------------------- probe rules
# Each takes a probe document (agent/probe.py) and returns (reason, hint) when it shows that the
# device cannot run the backend, else None. Missing facts are not a reason: the case then runs
# and the backend itself says what is missing.

def needs_nvidia_gpu(probe):
    gpu = probe.get("gpu") or {}
    if not gpu.get("gpus") and not probe.get("jetson"):
        return ("no NVIDIA GPU found: %s" % (gpu.get("reason") or "none listed"),
                "check the driver: nvidia-smi")
    return None


TF_TRT_LAST = (2, 17)  # TensorFlow 2.18+ CUDA builds ship without TensorRT (2.18 release notes)


def major_minor(version):
    """(major, minor) of a version string ('2.7.0+nv22.1' -> (2, 7)), or None if it has none."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def tf_trt_hint(tf_version):
    """What to install for TF-TRT, given the TensorFlow version found (None: unknown)."""
    parsed = major_minor(tf_version)
    if parsed and parsed > TF_TRT_LAST:
        return ("TF-TRT exists in TensorFlow 2.17 and older only (TensorFlow %s: CUDA builds "
                "from 2.18 on ship without TensorRT); install a TensorFlow 2.17-or-older build "
                "with TensorRT (NVIDIA container or JetPack wheel), or take the modern path: the "
                "tensorrt backend on the model's onnx variant" % tf_version)
    return "install a TensorFlow build with TensorRT (NVIDIA container or JetPack wheel)"


def needs_tf_with_tensorrt(probe):
    tf = (probe.get("runtimes") or {}).get("tensorflow") or {}
    trt = tf.get("tensorrt") if isinstance(tf, dict) else None
    if trt and not trt.get("usable"):
        return ("tensorflow cannot use TensorRT: %s" % (trt.get("reason") or "unknown"),
                tf_trt_hint(tf.get("version")))
    return None


def needs_edgetpu(probe):
    coral = probe.get("coral") or {}
    if coral and not coral.get("libedgetpu"):
        return "libedgetpu.so.1 not found", "sudo apt-get install libedgetpu1-std"
    if coral and not coral.get("present"):
        return ("no Edge TPU found (no Coral USB id, no /dev/apex_*)",
                "plug in the Coral USB Accelerator (USB 3 port); check lsusb")
    return None


# ---------------------------------------------------------------- backends

class BackendSpec(object):
    """Every fact about one backend.

    module, cls: where the Backend subclass lives (imported only when a case needs it).
    formats: model formats it takes. precisions: precisions it builds at on the device from any
      model (TF-TRT, TensorRT); empty: it runs the model at the precision of its variant.
    accelerator: what the inventory must declare (`accelerators:`) for the plan to run it.
    modules: any one of these MODULES must be installed; reason/hint: what the plan says if not.
    rules: probe rules (functions of a probe document) that say when a device cannot run it.
    options: the Option list; nothing else is accepted in a case's runtime.options.
    """

    def __init__(self, name, module, cls, formats, summary, precisions=(), accelerator=None,
                 modules=(), reason=None, hint=None, rules=(), options=(), path=None):
        self.name, self.module, self.cls, self.formats = name, module, cls, tuple(formats)
        self.summary, self.precisions, self.accelerator = summary, tuple(precisions), accelerator
        self.modules, self.rules, self.options = tuple(modules), tuple(rules), tuple(options)
        self.reason = reason or ("%s not installed" % " or ".join(self.modules) if modules else None)
        self.hint = hint or (MODULE[self.modules[0]].hint if modules and self.modules[0] in MODULE
                             else None)
        self.path = path  # a user backend file (the controller's path), else None

    @property
    def converts_precision(self):
        return bool(self.precisions)

    def option(self, name):
        return next((o for o in self.options if o.name == name), None)

    def check_options(self, options, where="options"):
        """'where.key: message' for every unknown option or bad value (empty list: fine)."""
        if not isinstance(options, dict):
            return ["%s: expected a mapping of option: value" % where]
        problems = []
        names = ", ".join(o.name for o in self.options) or "none"
        for key in sorted(options, key=str):
            opt = self.option(key)
            if opt is None:
                close = _close_names(str(key), [o.name for o in self.options])
                problems.append("%s.%s: unknown option for %s%s; its options: %s" % (
                    where, key, self.name, " (did you mean %s?)" % close if close else "", names))
                continue
            message = opt.problem(options[key])
            if message:
                problems.append("%s.%s: %s" % (where, key, message))
        return problems

    def resolve_options(self, options):
        """The options a backend instance gets: the given ones over every set default."""
        resolved = dict((o.name, o.default) for o in self.options if o.default is not None)
        resolved.update(options or {})
        return resolved


def _close_names(name, names):
    """Names that differ from `name` by one edit or a swap (typos such as xnnpak)."""
    def close(a, b):
        if abs(len(a) - len(b)) > 1 or a == b:
            return False
        if len(a) == len(b):
            diff = [i for i in range(len(a)) if a[i] != b[i]]
            return len(diff) == 1 or (len(diff) == 2 and a[diff[0]] == b[diff[1]]
                                      and a[diff[1]] == b[diff[0]])
        short, long_ = (a, b) if len(a) < len(b) else (b, a)
        return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
    return " or ".join(n for n in names if close(name, n))


_REQUIRE_FULL = Option("require_full_delegation", "bool", False,
                       "any op left outside the accelerator makes the result INVALID")
_TFLITE_MODULES = ("ai_edge_litert", "tflite_runtime", "tensorflow")

BACKENDS = (
    BackendSpec(
        "synthetic", "agent.backends.synthetic", "SyntheticBackend", ("synthetic",),
        "busy-waits a set time per invoke: harness overhead and tests",
        options=(
            Option("wait", "str", None, "spin (busy-wait until the time has passed, the "
                   "default: no wake-up jitter), sleep (idle: many simulated devices sharing a "
                   "few cores, fan-out benchmarks) or work (a fixed amount of computation "
                   "calibrated at load to take synthetic_ms, so background load slows it as it "
                   "slows real inference)", choices=("spin", "sleep", "work")),
            Option("jitter", "number", None, "planted noise: each invoke waits synthetic_ms x "
                   "(1 + jitter x E), E exponential (seeded by input_seed): a heavy tail of rare "
                   "long invokes around a steady p50", minimum=0),
            Option("drift", "number", None, "planted drift: the wait grows by this share of "
                   "synthetic_ms per second since the first invoke (warming, throttling)",
                   minimum=0),
            Option("phases", "str", None, "planted fast and slow phases: 'MS:WEIGHT,MS:WEIGHT' "
                   "(e.g. '5:0.7,6.6:0.3'), each invoke's wait drawn by weight (seeded); "
                   "replaces synthetic_ms"),
            Option("test_crash", "bool", help="test hook: os.abort() in load"),
            Option("test_stdout", "str", help="test hook: text printed to fd 1 in load"),
            Option("test_raise", "str", choices=("bad_model", "error", "unavailable"),
                   help="test hook: raise this failure class in load"),
        )),
    BackendSpec(
        "tflite", "agent.backends.tflite", "TFLiteBackend", ("tflite",),
        "TFLite Interpreter (ai_edge_litert, tflite_runtime or tf.lite); threads, XNNPACK, "
        "external delegates, ops delegated",
        modules=_TFLITE_MODULES,
        reason="no TFLite runtime installed (ai_edge_litert, tflite_runtime or tensorflow)",
        hint="pip install ai-edge-litert (tflite-runtime on Python < 3.9)",
        options=(
            Option("xnnpack", "bool", True, "TFLite's default CPU delegate"),
            Option("delegate", "str", help="path of an external delegate library (GPU, NPU...)"),
            Option("delegate_options", "mapping", help="options passed to load_delegate"),
            _REQUIRE_FULL,
        )),
    BackendSpec(
        "litert", "agent.backends.litert", "LiteRTBackend", ("tflite",),
        "LiteRT CompiledModel (ai-edge-litert 2.x): CPU, GPU or NPU accelerator, asked vs used",
        modules=("ai_edge_litert",), hint="pip install 'ai-edge-litert>=2.3'",
        options=(
            Option("accelerator", "str", "cpu", "the accelerator to compile for",
                   choices=("cpu", "gpu", "npu")),
            Option("cpu_fallback", "bool", True,
                   "ops the accelerator cannot take run on the CPU, and an accelerator LiteRT "
                   "cannot open leaves the whole model there (the result is then INVALID); "
                   "off: either fails the load and the case is skipped"),
            Option("dispatch_library", "str",
                   help="folder (or file) of the NPU vendor dispatch library (default: LiteRT's "
                        "own search under ai_edge_litert/vendors)"),
            Option("compiler_plugin", "str",
                   help="folder (or file) of the NPU compiler plugin (default: as "
                        "dispatch_library)"),
            _REQUIRE_FULL,
        )),
    BackendSpec(
        "edgetpu", "agent.backends.edgetpu", "EdgeTPUBackend", ("tflite",),
        "Edge TPU-compiled .tflite on a Coral via pycoral or libedgetpu; TPU segments vs CPU ops",
        # Only these drive libedgetpu: ai_edge_litert and full TensorFlow are refused (edgetpu.py).
        accelerator="edgetpu", modules=("pycoral", "tflite_runtime"),
        reason="neither pycoral nor tflite_runtime is installed",
        hint="sudo apt-get install python3-pycoral (Coral apt repository)",
        rules=(needs_edgetpu,),
        options=(
            Option("device", "str", help='which Edge TPU: "usb", "usb:0", "pci:0" (default any)'),
            Option("xnnpack", "bool", True, "XNNPACK for the ops left on the CPU"),
            Option("allow_untested_tflite", "bool", False,
                   "run with a tflite_runtime newer than 2.11 (a libedgetpu built against it)"),
            _REQUIRE_FULL,
        )),
    BackendSpec(
        "tensorflow", "agent.backends.tensorflow", "TensorFlowBackend", ("savedmodel",),
        "a SavedModel's serving_default signature in TensorFlow",
        modules=("tensorflow",)),
    BackendSpec(
        "tf-trt", "agent.backends.tftrt", "TFTRTBackend", ("savedmodel",),
        "TF-TRT: TrtGraphConverterV2 on the device, cached; convert_s apart from latency",
        precisions=PRECISIONS, accelerator="gpu-nvidia", modules=("tensorflow",),
        hint="pip install tensorflow (a build with TensorRT)",
        rules=(needs_tf_with_tensorrt, needs_nvidia_gpu),
        options=(
            Option("max_workspace_size_bytes", "int", minimum=1, help="TensorRT workspace"),
            Option("minimum_segment_size", "int", minimum=1,
                   help="smallest subgraph TF-TRT converts"),
            Option("maximum_cached_engines", "int", minimum=1, help="engines kept per segment"),
        )),
    BackendSpec(
        "tensorrt", "agent.backends.tensorrt_backend", "TensorRTBackend", ("onnx",),
        "TensorRT engine built on the device from ONNX, cached; times H2D + execute + D2H",
        precisions=PRECISIONS, accelerator="gpu-nvidia", modules=("tensorrt",),
        rules=(needs_nvidia_gpu,),
        options=(
            Option("max_workspace_size_bytes", "int", 1 << 30, "TensorRT builder workspace",
                   minimum=1),
        )),
    BackendSpec(
        "onnxruntime", "agent.backends.onnxrt", "OnnxRuntimeBackend", ("onnx",),
        "ONNX Runtime InferenceSession: providers asked vs used, threads, optional profile",
        modules=("onnxruntime",),
        options=(
            Option("providers", "list", ["CPUExecutionProvider"], "execution providers, in order"),
            Option("provider_options", ("mapping", "list"),
                   help="{provider: {...}}, or a list aligned with providers"),
            Option("graph_optimization_level", "str", "all", "graph optimizations",
                   choices=("disable", "basic", "extended", "all")),
            Option("profile", "bool", False,
                   "keep a chrome trace of a few inferences in a second session"),
        )),
    BackendSpec(
        "openvino", "agent.backends.openvino_backend", "OpenVINOBackend", ("onnx", "openvino"),
        "OpenVINO runtime (ONNX or IR): device asked vs used, threads, performance hint",
        precisions=("fp32", "fp16"), modules=("openvino",),
        options=(
            Option("device", "str", "CPU", 'OpenVINO device: "CPU", "GPU", "NPU", "AUTO:GPU,CPU"'),
            Option("performance_hint", "str", "LATENCY", "what OpenVINO optimizes for",
                   choices=("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")),
        )),
)
BY_NAME = dict((b.name, b) for b in BACKENDS)


def names():
    return tuple(b.name for b in BACKENDS)


def get(name):
    """The BackendSpec of a built-in backend. Raises KeyError naming the allowed ones."""
    if name not in BY_NAME:
        raise KeyError("unknown backend %r; backends: %s" % (name, ", ".join(names())))
    return BY_NAME[name]


def valid_name(name):
    return isinstance(name, str) and re.match(NAME_PATTERN, name) is not None
