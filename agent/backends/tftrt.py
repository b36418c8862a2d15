"""The TF-TRT backend: a SavedModel converted on the device with TrtGraphConverterV2, then run
like plain TensorFlow. Conversion and engine build are timed as convert_s (never latency) and
cached in WORKDIR/cache/tf-trt/<key>/, keyed by model hash, TF and TensorRT versions, precision,
GPU and converter options.
"""

import os

from agent.backends import devcache
from agent.backends.base import BackendUnavailable, BadModel
from agent.backends.catalog import major_minor, tf_trt_hint
from agent.backends.tensorflow import (TensorFlowBackend, _built_with_tensorrt, import_tensorflow,
                                       list_devices)

HINT = tf_trt_hint(None)  # the hint for a TensorFlow that could have TF-TRT (2.17 and older)
NO_GPU_HINT = ("run on a host with an NVIDIA GPU and its driver; check `nvidia-smi` and that "
               "TensorFlow sees it: python3 -c \"import tensorflow as tf; "
               "print(tf.config.experimental.list_physical_devices('GPU'))\"")
_PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


def needs_positional_inputs(tf_version):
    """True when this TensorFlow's TF-TRT calls func(*map(convert_to_tensor, inp)) on each input
    (before 2.8): inputs must then be tuples in argument order, as a dict passes its keys.
    From 2.8 on, a dict is passed as keyword arguments. Unknown versions get tuples, which every
    version accepts."""
    version = major_minor(tf_version)
    return version is None or version < (2, 8)


def argument_order(fn):
    """The input names of a signature function in the order its positional arguments take them
    (the order of the converted function's inputs): fn._arg_keywords where TF has it, else the
    flattening order of the input dict (sorted names)."""
    names = sorted(fn.structured_input_signature[1])
    keywords = list(getattr(fn, "_arg_keywords", None) or ())
    return keywords if sorted(keywords) == names else names


def cache_key(model_sha256, tf_version, trt_version, precision, gpu_name, converter_options):
    """The cache key of one conversion: a pure function of everything the result depends on."""
    return devcache.key_of({"backend": "tf-trt", "model_sha256": model_sha256,
                            "tensorflow": tf_version, "tensorrt": trt_version,
                            "precision": precision, "gpu": gpu_name,
                            "converter_options": converter_options})


def tensorrt_problem(tf_version, built_with_tensorrt, tensorrt_enabled):
    """Why TF-TRT cannot run (a reason string), or None.

    built_with_tensorrt: from tf.sysconfig build info (None: unknown, older TF).
    tensorrt_enabled: TF-TRT's own check, true only when built with TensorRT AND libnvinfer loads.
    """
    if built_with_tensorrt is False:
        return "tensorflow %s was built without TensorRT" % tf_version
    if not tensorrt_enabled:
        if built_with_tensorrt:
            return "TensorRT libraries (libnvinfer) not found by tensorflow %s" % tf_version
        return "tensorflow %s was built without TensorRT (or libnvinfer is missing)" % tf_version
    return None


def _py_utils():
    # The module name changed across TF versions (wrap_py_utils up to 2.3, _pywrap_py_utils after).
    import importlib
    for name in ("tensorflow.compiler.tf2tensorrt._pywrap_py_utils",
                 "tensorflow.compiler.tf2tensorrt.wrap_py_utils"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _version_text(fn):
    try:
        return ".".join(str(v) for v in fn())
    except Exception:  # a TF build without TensorRT may not implement it
        return None


def require_tensorrt(tf):
    """(trt_convert module, {'linked': str, 'loaded': str}) or BackendUnavailable with the hint."""
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert
    except ImportError as exc:
        raise BackendUnavailable("tensorflow %s has no TF-TRT converter (%s)"
                                 % (tf.__version__, exc), hint=tf_trt_hint(tf.__version__))
    utils = _py_utils()
    enabled = bool(utils is not None and utils.is_tensorrt_enabled())
    problem = tensorrt_problem(tf.__version__, _built_with_tensorrt(tf), enabled)
    if problem:
        raise BackendUnavailable(problem, hint=tf_trt_hint(tf.__version__))
    return trt_convert, tensorrt_versions(utils)


def tensorrt_versions(utils=None):
    """{'linked': str|None, 'loaded': str|None}: the TensorRT TensorFlow was built against and
    the one it loaded (None where unknown: no TF-TRT utilities, or a build without TensorRT)."""
    utils = utils if utils is not None else _py_utils()
    versions = {}
    for which in ("linked", "loaded"):
        fn = getattr(utils, "get_%s_tensorrt_version" % which, None)
        text = _version_text(fn) if fn is not None else None
        versions[which] = None if text in (None, "", "0.0.0") else text
    return versions


def version_mismatch(exc, tf_version, versions):
    """BackendUnavailable for TrtGraphConverterV2's 'Incompatible ... TensorRT ...' RuntimeError
    (loaded TensorRT of another major version than, or older than, the linked one; or older
    than 7), or None for any other error."""
    message = str(exc)
    if "Incompatible" not in message or "TensorRT" not in message:
        return None
    linked, loaded = versions.get("linked"), versions.get("loaded")
    reason = "tensorflow %s refused the loaded TensorRT (%s): loaded %s, built against %s" % (
        tf_version, message, loaded or "unknown", linked or "unknown")
    if linked:
        hint = ("install TensorRT %s, the version tensorflow %s was built against (the same major "
                "version, %s.x, at %s or newer, also works), and make its libnvinfer the one on "
                "the library path" % (linked, tf_version, linked.split(".")[0], linked))
    else:
        hint = ("install the TensorRT version tensorflow %s was built against (its release notes "
                "or the NVIDIA container/JetPack it came with say which), and make its libnvinfer "
                "the one on the library path" % tf_version)
    return BackendUnavailable(reason, hint=hint)


def require_gpu(tf):
    """Name of the first GPU TensorFlow sees, or BackendUnavailable."""
    gpus = list_devices(tf, "GPU")  # TF 2.0 has only tf.config.experimental's
    if not gpus:
        raise BackendUnavailable("no NVIDIA GPU visible to TensorFlow", hint=NO_GPU_HINT)
    try:
        details = tf.config.experimental.get_device_details(gpus[0])
    except (AttributeError, ValueError):  # before TF 2.3
        details = {}
    return details.get("device_name") or gpus[0].name


def make_converter(trt_convert, source_dir, precision, options, tf_version=None):
    """A TrtGraphConverterV2 for `precision` ('fp32'|'fp16'|'int8') with converter `options`.

    Raises:
        BackendUnavailable: the constructor refused the loaded TensorRT (not the linked version).
    """
    params = dict(options, precision_mode=_PRECISION_MODES[precision])
    try:
        try:
            return trt_convert.TrtGraphConverterV2(input_saved_model_dir=source_dir, **params)
        except TypeError:  # older TF takes these only inside conversion_params
            conversion = trt_convert.DEFAULT_TRT_CONVERSION_PARAMS._replace(**params)
            return trt_convert.TrtGraphConverterV2(input_saved_model_dir=source_dir,
                                                   conversion_params=conversion)
    except RuntimeError as exc:  # the constructor checks the loaded TensorRT against the linked
        unavailable = version_mismatch(exc, tf_version or "?", tensorrt_versions())
        if unavailable is None:
            raise
        raise unavailable


class TFTRTBackend(TensorFlowBackend):
    """Converts (or finds cached) then loads the TF-TRT SavedModel; invoke is plain TF's."""

    name = "tf-trt"
    workdir = None  # set by the worker: the device WORKDIR whose cache/ holds conversions

    def __init__(self, case, model_path):
        TensorFlowBackend.__init__(self, case, model_path)
        self.source_path = model_path
        self.precision = str(self.runtime.get("precision") or "fp32").lower()
        # Every tf-trt option (catalog.py) is a TrtGraphConverterV2 parameter, and in the cache key.
        self.converter_options = dict(self.options)
        settings = case["settings"]
        self.input_seed, self.input_pool = int(settings["input_seed"]), int(settings["input_pool"])
        self.trt_versions = None
        self.gpu_name = None
        self.key = None
        self.cache_hit = None
        self.cache_dir = None
        self._convert_s = None

    def load(self):
        tf = import_tensorflow()
        self._tf = tf
        self._set_threads(tf)  # before any op: later calls cannot change the pools
        trt_convert, self.trt_versions = require_tensorrt(tf)
        self.gpu_name = require_gpu(tf)
        if self.precision not in _PRECISION_MODES:
            raise BadModel("tf-trt: unknown precision %r (fp32, fp16, int8)" % self.precision)
        if not self.source_path or not os.path.isdir(self.source_path):
            raise BadModel("the tf-trt backend needs a SavedModel folder, got %r"
                           % self.source_path)
        model_sha = ((self.case.get("model") or {}).get("sha256")
                     or devcache.tree_sha256(self.source_path))
        options = dict(self.converter_options)
        if self.precision == "int8":  # the calibration data is part of what an INT8 build is
            options["calibration"] = {"input_seed": self.input_seed, "input_pool": self.input_pool}
        self.key = cache_key(model_sha, tf.__version__, self.trt_versions, self.precision,
                             self.gpu_name, options)
        facts = {"tensorflow": tf.__version__, "tensorrt": self.trt_versions, "gpu": self.gpu_name,
                 "precision": self.precision, "model_sha256": model_sha, "options": options}
        folder, self.cache_hit, seconds = devcache.publish_folder(
            devcache.cache_root(self.workdir, self.name), self.key,
            lambda tmp: self._convert(trt_convert, os.path.join(tmp, "saved_model")), facts)
        self.cache_dir = folder
        self._convert_s = 0.0 if self.cache_hit else seconds
        applied = self.threads_applied
        self.model_path = os.path.join(folder, "saved_model")
        TensorFlowBackend.load(self)
        self.threads_applied = applied

    def _convert(self, trt_convert, out_dir):
        """Convert the source SavedModel into out_dir, engines built now (not at first call)."""
        # The case's own seeded inputs, from the source model's signature, feed the INT8
        # calibration and the engine build: engines match the shapes that will be timed.
        self.model_path = self.source_path
        TensorFlowBackend.load(self)
        inputs = self.make_inputs(self.input_seed, max(1, self.input_pool))
        if needs_positional_inputs(self._tf.__version__):
            order = argument_order(self._fn)
            inputs = [tuple(x[name] for name in order) for x in inputs]
        self.close()

        def input_fn():  # dicts (keyword arguments) on TF 2.8+, positional tuples before
            for x in inputs:
                yield x
        converter = make_converter(trt_convert, self.source_path, self.precision,
                                   self.converter_options, tf_version=self._tf.__version__)
        if self.precision == "int8":
            converter.convert(calibration_input_fn=input_fn)
        else:
            converter.convert()
        converter.build(input_fn=input_fn)
        converter.save(out_dir)

    def convert_seconds(self):
        """Conversion + engine build seconds on a cache miss, 0.0 on a hit (None before load)."""
        return self._convert_s

    def describe(self):
        facts = TensorFlowBackend.describe(self)
        facts.update({
            "delegate": "tensorrt" if self.key else None,
            "tensorrt": self.trt_versions, "precision": self.precision, "gpu": self.gpu_name,
            "cache": None if self.cache_hit is None else ("hit" if self.cache_hit else "miss"),
            "cache_key": self.key, "converter_options": self.converter_options,
            "convert_s": self._convert_s,
        })
        if self.cache_hit:
            facts["cached_build_s"] = devcache.read_marker(self.cache_dir).get("build_s")
        return facts
