"""The ONNX Runtime backend: one InferenceSession, the providers asked for against those used.

onnxruntime falls back to the CPU without an error when an asked provider (CUDA, TensorRT) is
missing or fails to load; that fallback is reported and makes the result INVALID. Runs on
Python 3.6+; numpy and onnxruntime are imported inside methods.
"""

import os
import shutil
import tempfile

from agent.backends.base import Backend, BadModel, check_samples, require_module

_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
PROFILE_RUNS = 10  # inferences in the profiled session: enough for a trace, small on disk
# ONNX element types ("tensor(float)") -> numpy dtype names
_ONNX_DTYPES = {"float": "float32", "float16": "float16", "double": "float64", "int8": "int8",
                "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
                "uint32": "uint32", "int64": "int64", "uint64": "uint64", "bool": "bool"}


def import_onnxruntime():
    """The onnxruntime module. Raises BackendUnavailable when it is not installed."""
    return require_module("onnxruntime", "onnxruntime not installed",
                          "pip install onnxruntime (onnxruntime-gpu for CUDA)")


class OnnxRuntimeBackend(Backend):
    """Options: providers (list, default ["CPUExecutionProvider"]), provider_options (a list
    aligned with providers, or {provider: {...}}), graph_optimization_level (disable, basic,
    extended, all; default all), profile (true: a chrome-trace JSON of PROFILE_RUNS inferences
    in a second session after the measurement, kept as out/<case_id>.profile.json).
    Threads: runtime.threads -> intra_op_num_threads and inter_op_num_threads."""

    name = "onnxruntime"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.threads = self.runtime.get("threads")
        self.providers = list(self.options["providers"])
        self.opt_level = self.options["graph_optimization_level"]
        self.profile = self.options["profile"]
        self.session = None
        self.artifacts = {}
        self._ort = None
        self._pool = None
        self._profile_path = None
        self._tmp = None

    def _provider_options(self):
        given = self.options.get("provider_options")
        if given is None:
            return None
        if isinstance(given, dict):
            return [dict(given.get(p) or {}) for p in self.providers]
        if isinstance(given, list) and len(given) == len(self.providers):
            return [dict(o or {}) for o in given]
        raise BadModel("provider_options must be {provider: {...}} or a list of %d objects, one "
                       "per provider" % len(self.providers))

    def _session_options(self, profile_prefix=None):
        ort = self._ort
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = int(self.threads)
        if self.opt_level not in _OPT_LEVELS:
            raise BadModel("graph_optimization_level must be one of %s, got %r"
                           % (", ".join(_OPT_LEVELS), self.opt_level))
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[self.opt_level])
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return so

    def _new_session(self, profile_prefix=None):
        try:
            return self._ort.InferenceSession(
                str(self.model_path), sess_options=self._session_options(profile_prefix),
                providers=self.providers, provider_options=self._provider_options())
        except BadModel:
            raise
        except Exception as exc:  # onnxruntime's own exception types vary across versions
            raise BadModel("%s: onnxruntime cannot load this model: %s" % (self.model_path, exc))

    def load(self):
        self._ort = import_onnxruntime()
        if not self.model_path:
            raise BadModel("the onnxruntime backend needs a model file, got none")
        if not os.path.isfile(str(self.model_path)):
            raise BadModel("cannot read model file %s" % self.model_path)
        self.session = self._new_session()
        self._inputs = self.session.get_inputs()
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run  # looked up once: invoke() is timed

    def make_inputs(self, seed, count):
        """`count` {input name: array} feeds, numpy RandomState(seed), ranges as the TFLite
        backend's (integers 0..255 as pixels, floats in [0, 1)); dynamic dimensions become 1."""
        import numpy as np
        from agent.backends.tflite import _random_array
        rng = np.random.RandomState(seed)
        pool = []
        for _ in range(count):
            feed = {}
            for node in self._inputs:
                shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in node.shape)
                feed[node.name] = _random_array(rng, shape, _numpy_dtype(node.type))
            pool.append(feed)
        self._pool = pool
        return pool

    def inputs_from(self, samples):
        """Representative samples as {input name: array} feeds, in session.get_inputs() order (a
        dynamic dimension takes any size)."""
        nodes = self._inputs
        checked = check_samples(samples, [(n.name, [d if isinstance(d, int) and d > 0 else None
                                                     for d in n.shape], _numpy_dtype(n.type))
                                          for n in nodes], self.name)
        self._pool = [dict((n.name, a) for n, a in zip(nodes, arrays)) for arrays in checked]
        return self._pool

    def invoke(self, inputs):
        # session.run returns host arrays: synchronous for every provider, CUDA included.
        self._run(self._output_names, inputs)

    def describe(self):
        used = list(self.session.get_providers()) if self.session is not None else []
        missing = [p for p in self.providers if self.session is not None and p not in used]
        facts = {
            "version": getattr(self._ort, "__version__", None),
            "delegate": None,
            "provider": ",".join(used) or None,
            "providers_asked": list(self.providers),
            "providers_used": used,
            "providers_missing": missing,
            "providers_available": list(self._ort.get_available_providers()) if self._ort else [],
            "threads": self.threads,
            "graph_optimization_level": self.opt_level,
            "delegation": {"ops_total": None, "ops_delegated": None},
        }
        if missing:
            facts["validity_reasons"] = ["asked for %s but onnxruntime used %s"
                                         % (", ".join(missing), ", ".join(used) or "nothing")]
        if self.session is None:
            return facts
        facts["inputs"] = [_node_facts(n) for n in self._inputs]
        facts["outputs"] = [_node_facts(n) for n in self.session.get_outputs()]
        if self.profile:
            facts["profile"] = self._profile_once()
            facts["profile_runs"] = PROFILE_RUNS
        return facts

    def _profile_once(self):
        """Profile in a second session so that the profiler's overhead never reaches the
        measured latencies; returns the chrome-trace JSON path (also in self.artifacts)."""
        if self._profile_path is None and self._pool:
            self._tmp = tempfile.mkdtemp(prefix="benchfleet-ort-")
            session = self._new_session(os.path.join(self._tmp, "onnxruntime_profile"))
            for i in range(PROFILE_RUNS):
                session.run(self._output_names, self._pool[i % len(self._pool)])
            self._profile_path = session.end_profiling()
            self.artifacts["profile.json"] = self._profile_path
        return self._profile_path

    def close(self):
        self.session = None
        self._run = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def _numpy_dtype(onnx_type):
    import numpy as np
    inner = onnx_type[len("tensor("):-1] if onnx_type.startswith("tensor(") else onnx_type
    if inner not in _ONNX_DTYPES:
        raise BadModel("input type %s is not supported by make_inputs" % onnx_type)
    return np.dtype(_ONNX_DTYPES[inner])


def _node_facts(node):
    return {"name": node.name, "shape": [d if isinstance(d, int) else str(d) for d in node.shape],
            "dtype": node.type}
