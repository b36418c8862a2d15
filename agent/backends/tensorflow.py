"""The plain TensorFlow backend: a SavedModel's serving_default signature, called eagerly.

This is how the seed measured plain TF (first call 2.03 s, mean 23.4 ms on a GTX 1660). Runs on
Python 3.6+; tensorflow and numpy are imported inside methods.
"""

from agent.backends.base import Backend, BadModel, check_samples, require_module

_HINT = "pip install tensorflow (or tensorflow-cpu)"


def import_tensorflow():
    """The tensorflow module, or BackendUnavailable with the install hint."""
    return require_module("tensorflow", "tensorflow not installed", _HINT)


class TensorFlowBackend(Backend):
    """tf.saved_model.load(path).signatures['serving_default'], inputs as pre-made tf constants."""

    name = "tensorflow"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.threads = self.runtime.get("threads")
        self.threads_applied = None
        self._tf = None
        self._fn = None
        self._model = None

    def _set_threads(self, tf):
        # Thread pools are fixed when the TF runtime starts: this must run before the first op.
        # One case per worker process makes that true in real runs; in a process that already
        # ran TF (tests) the setting cannot change, and describe() says so.
        if not self.threads:
            return
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(self.threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
            self.threads_applied = True
        except RuntimeError:
            self.threads_applied = False

    def load(self):
        tf = import_tensorflow()
        self._tf = tf
        self._set_threads(tf)
        if not self.model_path:
            raise BadModel("the tensorflow backend needs a SavedModel folder, got none")
        try:
            self._model = tf.saved_model.load(str(self.model_path))
        except (IOError, OSError, ValueError) as exc:
            raise BadModel("%s: not a loadable SavedModel: %s" % (self.model_path, exc))
        signatures = getattr(self._model, "signatures", {})
        if "serving_default" not in signatures:
            raise BadModel("%s: SavedModel has no 'serving_default' signature (has: %s)"
                           % (self.model_path, ", ".join(sorted(signatures)) or "none"))
        self._fn = signatures["serving_default"]
        self._first_output = sorted(self._fn.structured_outputs)[0]

    def make_inputs(self, seed, count):
        """`count` dicts name -> tf constant, from numpy RandomState(seed).

        Integer inputs (MoveNet's int32 image) get 0..255, floats [0, 1); unknown dims become 1.
        Made before timing, so the measured call does no host-side conversion.
        """
        import numpy as np
        tf = self._tf
        rng = np.random.RandomState(seed)
        specs = self._fn.structured_input_signature[1]
        pool = []
        for _ in range(count):
            inputs = {}
            for name in sorted(specs):
                spec = specs[name]
                shape = tuple(1 if d is None else int(d) for d in spec.shape.as_list())
                dtype = np.dtype(spec.dtype.as_numpy_dtype)
                if dtype.kind in "iu":
                    array = rng.randint(0, 256, shape).astype(dtype)
                else:
                    array = rng.random_sample(shape).astype(dtype)
                inputs[name] = tf.constant(array)
            pool.append(inputs)
        return pool

    def inputs_from(self, samples):
        """Representative samples as dicts name -> tf constant; the model's input order is the
        serving signature's input names sorted (as make_inputs feeds them)."""
        import numpy as np
        tf = self._tf
        specs = self._fn.structured_input_signature[1]
        names = sorted(specs)
        checked = check_samples(samples, [(n, [None if d is None else int(d)
                                               for d in specs[n].shape.as_list()],
                                           np.dtype(specs[n].dtype.as_numpy_dtype))
                                          for n in names], self.name)
        return [dict((n, tf.constant(a)) for n, a in zip(names, arrays)) for arrays in checked]

    def invoke(self, inputs):
        # Eager TF returns once kernels are enqueued; on a GPU the stream may still be running.
        # .numpy() on one output waits for the result (and copies a few bytes for MoveNet's
        # [1,1,17,3]), so the harness times the whole inference on CPU and GPU alike.
        outputs = self._fn(**inputs)
        outputs[self._first_output].numpy()

    def describe(self):
        tf = self._tf
        facts = {"version": None, "delegate": None, "provider": None, "threads": self.threads,
                 "threads_applied": self.threads_applied,
                 "delegation": {"ops_total": None, "ops_delegated": None}}
        if tf is None:
            return facts
        facts["version"] = tf.__version__
        facts["built_with_tensorrt"] = _built_with_tensorrt(tf)
        gpus = list_devices(tf, "GPU", logical=True)
        facts["device"] = gpus[0].name if gpus else "/device:CPU:0"
        facts["provider"] = "GPU" if gpus else "CPU"
        if self._fn is not None:
            facts["inputs"] = [
                {"name": name, "shape": spec.shape.as_list(), "dtype": spec.dtype.name}
                for name, spec in sorted(self._fn.structured_input_signature[1].items())]
        return facts

    def op_profile(self, max_s=60.0, runs=20):
        """op_profile: true. A tf.profiler trace of `runs` inferences (at most max_s) on a pass
        after the measurement, kept beside the result as tf_trace.tar (untar, then
        `tensorboard --logdir DIR`, Profile tab: per-op times). The record carries no op table
        (the trace is TensorBoard's format, not parsed here). None before load()."""
        import os
        import shutil
        import tarfile
        import tempfile
        import time
        tf = self._tf
        if tf is None or self._fn is None:
            return None
        profiler = getattr(getattr(tf, "profiler", None), "experimental", None)
        if profiler is None:
            return {"status": "unavailable", "reason": "this TensorFlow has no "
                    "tf.profiler.experimental", "hint": "TensorFlow 2.2 or newer traces"}
        logdir = tempfile.mkdtemp(prefix="benchfleet-tf-trace-")
        self._trace_dirs = getattr(self, "_trace_dirs", []) + [logdir]
        inputs = self.make_inputs(0, 1)[0]
        profiler.start(os.path.join(logdir, "trace"))
        done, start = 0, time.monotonic()
        try:
            while done < runs and time.monotonic() - start < max_s:
                self.invoke(inputs)
                done += 1
        finally:
            profiler.stop()
        path = os.path.join(logdir, "tf_trace.tar")
        with tarfile.open(path, "w") as tar:
            tar.add(os.path.join(logdir, "trace"), arcname="trace")
        shutil.rmtree(os.path.join(logdir, "trace"), ignore_errors=True)
        if not hasattr(self, "artifacts"):
            self.artifacts = {}
        self.artifacts["tf_trace.tar"] = path
        return {"status": "ok", "method": "tf.profiler trace", "runs": done,
                "seconds": round(time.monotonic() - start, 3), "ops": [], "by_type": [],
                "top": [], "note": "per-op times are in the kept trace <case_id>.tf_trace.tar: "
                "untar it and open it with `tensorboard --logdir trace` (Profile tab)"}

    def close(self):
        import shutil
        for folder in getattr(self, "_trace_dirs", []):
            shutil.rmtree(folder, ignore_errors=True)
        self._fn = None
        self._model = None


def list_devices(tf, device_type, logical=False):
    """tf.config.list_{physical,logical}_devices(device_type), on every TensorFlow 2.x: 2.0 has
    them only under tf.config.experimental (the stable names are 2.1+)."""
    name = "list_%s_devices" % ("logical" if logical else "physical")
    fn = getattr(tf.config, name, None) or getattr(tf.config.experimental, name)
    return fn(device_type)


def _built_with_tensorrt(tf):
    get_info = getattr(getattr(tf, "sysconfig", None), "get_build_info", None)
    if get_info is None:
        return None
    try:
        info = get_info()
    except Exception:  # older TF: the build info module may be missing
        return None
    return bool(info.get("is_tensorrt_build", False))
