"""The backend contract: backends execute, the harness times.

A backend never reads a clock for measurement. The harness calls, in order:
load() -> make_inputs(seed, count) -> invoke(x) many times -> describe() -> close().
With a case's representative inputs (model.inputs, agent/inputs.py) inputs_from(samples) takes
make_inputs' place.
"""


class BackendUnavailable(Exception):
    """The device cannot run this backend here: the case becomes SKIPPED, not FAILED.

    reason: what is missing ("tensorflow not installed").
    hint: the command or step that fixes it ("pip install tensorflow").
    """

    def __init__(self, reason, hint=None):
        Exception.__init__(self, reason)
        self.reason = reason
        self.hint = hint


def require_module(name, reason, hint):
    """Import `name`, or raise BackendUnavailable("<reason> (<import error>)", hint)."""
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendUnavailable("%s (%s)" % (reason, exc), hint=hint)


class BadModel(Exception):
    """The model file cannot be used by this backend (wrong format, corrupt, not compiled)."""


class Backend(object):
    """Base class. Subclasses set `name` and implement load/make_inputs/invoke.

    self.options holds the case's runtime options over the defaults of the backend's catalog
    entry (agent/backends/catalog.py), so a backend never repeats a default.
    """

    name = None
    spec = None   # the catalog entry; built-ins find theirs by name

    def __init__(self, case, model_path):
        """case: the job case dict (model, runtime, settings); model_path: local file/folder or None."""
        from agent.backends import catalog
        self.case = case
        self.model_path = model_path
        self.runtime = case.get("runtime", {})
        spec = type(self).spec or catalog.BY_NAME.get(self.name)
        given = self.runtime.get("options") or {}
        self.options = spec.resolve_options(given) if spec is not None else dict(given)

    def load(self):
        """Load the model / create the session. Timed by the harness as load_s."""
        raise NotImplementedError

    def convert_seconds(self):
        """Seconds spent converting/building inside load() (TF-TRT, TensorRT), else None."""
        return None

    def make_inputs(self, seed, count):
        """Return `count` ready-to-feed inputs, seeded, in the model's dtype and range."""
        raise NotImplementedError

    def inputs_from(self, samples):
        """Ready-to-feed inputs (as make_inputs returns them) from representative samples: a
        list of samples, each a list of numpy arrays in the model's input order. A sample
        whose arrays do not fit the model (count, shape, dtype) raises BadModel naming both;
        check_samples does that against the backend's input details."""
        raise NotImplementedError(
            "backend %s cannot take representative inputs (the suite's inputs:); run it on "
            "seeded random inputs (leave inputs: out) or give the backend inputs_from()"
            % self.name)

    def invoke(self, inputs):
        """One synchronous inference. Must return only when the result is ready."""
        raise NotImplementedError

    # A backend that can stage an input apart from running it sets splits_staging and
    # implements both: the harness then times execute() alone (docs/METHOD.md step 5) and
    # reports staging apart as stage_ms, unless the suite asks for end_to_end.
    splits_staging = False

    def stage(self, inputs):
        """Put `inputs` where the next execute() reads them (set_tensor, a buffer write)."""
        raise NotImplementedError

    def execute(self):
        """Run on the staged inputs; return only when the result is ready."""
        raise NotImplementedError

    def describe(self):
        """Facts for the result: {'version': str, 'delegate': str|None, 'provider': str|None,
        'delegation': {'ops_total': int|None, 'ops_delegated': int|None}, ...}."""
        return {}

    def close(self):
        pass


def _dims(shape):
    """Plain ints (numpy's, too), None for a dynamic dimension (None or negative)."""
    return [None if d is None or int(d) < 0 else int(d) for d in shape]


def check_samples(samples, inputs, backend):
    """Representative samples checked against a model's inputs; returns them as C-contiguous
    arrays (what runtimes copy from fastest).

    inputs: [(name, shape, numpy dtype)] in the model's input order; a dimension that is None
    or negative (dynamic) takes any size.
    Raises:
        BadModel: a sample with another number of arrays, or an array of another shape or dtype
        than its input (both named).
    """
    import numpy as np
    if not samples:
        raise BadModel("%s: the representative inputs hold no sample" % backend)
    out = []
    for s, sample in enumerate(samples):
        where = "representative input sample %d of %d" % (s + 1, len(samples))
        if len(sample) != len(inputs):
            raise BadModel("%s has %d arrays; the model takes %d inputs (%s)" % (
                where, len(sample), len(inputs), ", ".join(str(n) for n, _, _ in inputs)))
        arrays = []
        for array, (name, shape, dtype) in zip(sample, inputs):
            want = _dims(list(shape))
            got = [int(d) for d in array.shape]
            if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
                raise BadModel("%s, input %s: shape %s, but the model takes %s"
                               % (where, name, got, ["?" if w is None else w for w in want]))
            if np.dtype(array.dtype) != np.dtype(dtype):
                raise BadModel("%s, input %s: dtype %s, but the model takes %s"
                               % (where, name, np.dtype(array.dtype).name, np.dtype(dtype).name))
            arrays.append(np.ascontiguousarray(array))
        out.append(arrays)
    return out
