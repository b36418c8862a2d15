"""The LiteRT backend: a CompiledModel of ai-edge-litert 2.x for the CPU, GPU or NPU, and whether
the accelerator asked for is the one that ran (LiteRT can fall back to the CPU without an error).

Runs on Python 3.6+; numpy and ai_edge_litert are imported inside methods.
"""

import os
import re
import sys
import tempfile

from agent.backends import catalog
from agent.backends.base import (Backend, BackendUnavailable, BadModel, check_samples,
                                 require_module)
from agent.backends.tflite import _random_array, read_model_info

DISPATCH_OP = "DISPATCH_OP"  # the custom op of partitions compiled ahead of time for an NPU
# LiteRT's own log lines (litert/runtime/) that show whether an accelerator took part. Nothing
# in its Python API does; a version that words them differently leaves "used" unknown, never true.
_GPU_MISSING = "GPU accelerator could not be loaded"
_GPU_REGISTERED = re.compile(r"GPU accelerator(\(\S+\))? registered")
_NPU_PARTITIONED = "JIT compilation changed model"
_NPU_NOT_PARTITIONED = ("Failed to apply compiler plugins", "Failed to load compiler plugins")
# Words of the log's warnings that explain a failed compile for each accelerator.
_CAUSE_WORDS = {"gpu": ("GPU", "Vulkan", "OpenCL"), "npu": ("NPU", "plugin", "ispatch")}
_LOCATION = re.compile(r"^[\s\u2514]*(?:(?:ERROR|WARNING|Warning|INFO):\s*)?(?:\[[^\]]*\]\s*)?"
                       r"(?:[EWIF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]\s*)?")
_UNAVAILABLE_HINTS = {
    "gpu": "LiteRT found no GPU it can open: install the GPU driver with Vulkan or OpenCL, or "
           "set cpu_fallback: true (the result then says the GPU was not used)",
    "npu": "give the NPU vendor's dispatch_library and compiler_plugin folders (or a model "
           "compiled for this NPU), or set cpu_fallback: true to run what the NPU cannot take "
           "on the CPU",
}
TIMED = ("TensorBuffer.write of every input, then CompiledModel.run_by_index; run returns once the "
         "outputs are ready (not run async, LiteRT waits on their events); outputs not read back")


class _Lib(object):
    """The pieces of ai_edge_litert this backend uses. Raises BackendUnavailable without them."""

    def __init__(self):
        spec = catalog.BY_NAME["litert"]
        top = require_module("ai_edge_litert", spec.reason, spec.hint)
        require_module("numpy", "numpy not installed", catalog.MODULE["numpy"].hint)
        self.version = str(getattr(top, "__version__", "") or "") or None
        try:
            from ai_edge_litert.compiled_model import CompiledModel
            from ai_edge_litert.environment import Environment
            from ai_edge_litert.hardware_accelerator import HardwareAccelerator
            from ai_edge_litert.options import CpuOptions, Options
        except ImportError as exc:
            raise BackendUnavailable("ai-edge-litert %s has no CompiledModel options API (%s)"
                                     % (self.version, exc),
                                     hint="pip install -U 'ai-edge-litert>=2.3'")
        self.CompiledModel, self.Environment = CompiledModel, Environment
        self.HA, self.CpuOptions, self.Options = HardwareAccelerator, CpuOptions, Options


class RuntimeLog(object):
    """Inside `with`: what the process writes to fd 2 goes to a file; on exit it is in .text and
    passed on to fd 2 (agent.log keeps it). LiteRT's Python errors name a source line, not the
    cause: the cause ("No adapters found") and which accelerators registered are only in its C++
    log. A crash inside the block leaves that log in $TMPDIR/benchfleet-litert-*.log."""

    def __init__(self):
        self.text = ""

    def __enter__(self):
        sys.stderr.flush()
        fd, self._path = tempfile.mkstemp(prefix="benchfleet-litert-", suffix=".log")
        self._saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        return self

    def __exit__(self, *exc_info):
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        with open(self._path, "rb") as f:
            data = f.read()
        os.unlink(self._path)
        view = memoryview(data)
        while view:
            view = view[os.write(2, view):]
        self.text = data.decode("utf-8", "replace")
        return False


def runtime_message(exc, log_text, accelerator):
    """Why a compile failed: the exception's lines and the log's errors (and its warnings about
    `accelerator`), without the source locations LiteRT puts in front of them."""
    words = _CAUSE_WORDS.get(accelerator, ())
    lines = list(str(exc).splitlines())
    kept = False
    for line in log_text.splitlines():
        if line.lstrip().startswith(u"\u2514"):  # a continuation: often the actual cause
            if kept:
                lines.append(line)
            continue
        error = line.startswith("ERROR") or re.match(r"^E\d{4} ", line)
        kept = bool(error or line.lower().startswith("warning") and any(w in line for w in words))
        if kept:
            lines.append(line)
    causes = []
    for line in lines:
        text = _LOCATION.sub("", line).strip()[:300]
        if text and text not in causes:
            causes.append(text)
    return "; ".join(causes[:6]) or type(exc).__name__


def accelerator_evidence(accelerator, log_text, model_info):
    """(used, why) for a compile that included `accelerator`: used is True, False, or None where
    neither LiteRT's log nor the model shows it."""
    if accelerator == "cpu":
        return True, "the CPU was asked for"
    lines = log_text.splitlines()
    if accelerator == "gpu":
        missing = [l for l in lines if _GPU_MISSING in l]
        if missing:
            return False, _LOCATION.sub("", missing[0]).strip()
        if any(_GPU_REGISTERED.search(l) for l in lines):
            # LiteRT fails the compile when a registered GPU accelerator cannot create its delegate.
            return True, "LiteRT's GPU accelerator registered and its delegate was applied"
        return None, "LiteRT's log does not say whether a GPU accelerator registered"
    if DISPATCH_OP in model_info.custom_codes:
        return True, "the model holds NPU-compiled %s partitions, and it compiled" % DISPATCH_OP
    if any(_NPU_PARTITIONED in l for l in lines):
        return True, "a compiler plugin partitioned the model for the NPU"
    failed = [_LOCATION.sub("", l).strip() for l in lines
              if any(m in l for m in _NPU_NOT_PARTITIONED)]
    if failed:
        return False, "no compiler plugin partitioned it (%s)" % failed[0]
    return None, "LiteRT's log does not show a compiler plugin partitioning the model"


class LiteRTBackend(Backend):
    """Options: accelerator cpu|gpu|npu (default cpu). cpu_fallback (default true): the CPU joins
    the accelerator set, so ops the accelerator cannot take run there, and an accelerator LiteRT
    cannot open leaves the whole model on the CPU (the result is then INVALID); false: either
    fails the load and the case is SKIPPED. dispatch_library, compiler_plugin: NPU vendor folders
    (default: what LiteRT finds under ai_edge_litert/vendors). require_full_delegation: true: a
    model LiteRT does not report as fully accelerated makes the result INVALID.
    Threads: runtime.threads -> CpuOptions(num_threads) (0, LiteRT's default, when unset).
    """

    name = "litert"

    def __init__(self, case, model_path):
        Backend.__init__(self, case, model_path)
        self.threads = self.runtime.get("threads")
        self.accelerator = self.options["accelerator"]
        self.cpu_fallback = self.options["cpu_fallback"]
        self.require_full = self.options["require_full_delegation"]
        self.model = self.model_info = self._env = self._version = None
        self.compiled_for = []
        self.used, self.evidence = None, None

    def _environment_paths(self):
        kwargs = {}
        for option in ("dispatch_library", "compiler_plugin"):
            path = os.path.expanduser(str(self.options.get(option) or ""))
            if path and not os.path.exists(path):
                raise BackendUnavailable(
                    "%s %s (runtime.options.%s) not found" % (option, path, option),
                    hint="install the NPU vendor's LiteRT libraries on the device, or fix "
                         "runtime.options.%s" % option)
            if path:  # LiteRT takes folders; a library file stands for its folder, as in its tool
                kwargs[option + "_path"] = path if os.path.isdir(path) else os.path.dirname(path)
        return kwargs

    def _environment(self, lib):
        with RuntimeLog() as log:
            try:
                return lib.Environment.create(**self._environment_paths())
            except (RuntimeError, ValueError) as exc:
                error = exc
        raise BackendUnavailable("LiteRT cannot create its environment: %s"
                                 % runtime_message(error, log.text, self.accelerator),
                                 hint="check dispatch_library and compiler_plugin, or reinstall "
                                      "ai-edge-litert")

    def _compile(self, lib, mask, accelerator):
        """(CompiledModel or None, why it failed or None, LiteRT's log) of one compile."""
        options = lib.Options(hardware_accelerators=mask,
                              cpu_options=lib.CpuOptions(num_threads=int(self.threads or 0)))
        model = error = None
        with RuntimeLog() as log:
            try:
                model = lib.CompiledModel.from_file(str(self.model_path), environment=self._env,
                                                    options=options)
            except (RuntimeError, ValueError) as exc:
                error = exc
        message = runtime_message(error, log.text, accelerator) if error is not None else None
        return model, message, log.text

    def load(self):
        lib = _Lib()
        self._version = lib.version
        self.model_info = read_model_info(self.model_path)
        self._env = self._environment(lib)
        asked = getattr(lib.HA, self.accelerator.upper())
        mask = asked | lib.HA.CPU if self.cpu_fallback else asked
        model, error, text = self._compile(lib, mask, self.accelerator)
        if error is None:
            self.compiled_for = [a for a in ("npu", "gpu", "cpu")
                                 if mask & getattr(lib.HA, a.upper())]
            self.used, self.evidence = accelerator_evidence(self.accelerator, text, self.model_info)
        elif self.accelerator == "cpu":
            raise BadModel("%s: LiteRT cannot compile this model: %s" % (self.model_path, error))
        else:
            # The CPU alone tells a model LiteRT cannot compile from an accelerator it cannot open.
            model, cpu_error, _ = self._compile(lib, lib.HA.CPU, "cpu")
            if cpu_error is not None:
                raise BadModel("%s: LiteRT cannot compile this model for %s (%s) nor for the CPU "
                               "(%s)" % (self.model_path, self.accelerator, error, cpu_error))
            if not self.cpu_fallback:
                raise BackendUnavailable(
                    "LiteRT cannot compile %s for %s alone (cpu_fallback: false): %s"
                    % (os.path.basename(str(self.model_path)), self.accelerator, error),
                    hint=_UNAVAILABLE_HINTS[self.accelerator])
            self.compiled_for = ["cpu"]
            self.used, self.evidence = False, "LiteRT could not compile for it: %s" % error
        self.model = model
        try:
            self._bind(model)
        except (RuntimeError, ValueError, IndexError, KeyError) as exc:
            raise BadModel("%s: LiteRT compiled this model but cannot bind its signature: %s"
                           % (self.model_path, runtime_message(exc, "", "cpu")))

    def _bind(self, model):
        key = list(model.get_signature_list())[0]
        names = model.get_signature_by_index(0)
        details = model.get_input_tensor_details(key)
        self._signature = key
        self._inputs = [dict(details[n], signature_name=n) for n in names["inputs"]]
        details = model.get_output_tensor_details(key)
        self._outputs = [dict(details[n], signature_name=n) for n in names["outputs"]]
        # Created once and bound here: invoke() is timed, and only writes and runs.
        self._in = model.create_input_buffers(0)
        self._out = model.create_output_buffers(0)
        self._writes = [b.write for b in self._in]
        self._run = model.run_by_index

    def make_inputs(self, seed, count):
        """`count` lists of arrays, one per signature input, from numpy RandomState(seed), in the
        tflite backend's ranges (integers 0..255 as pixels, int8 -128..127, floats in [0, 1))."""
        import numpy as np
        rng = np.random.RandomState(seed)
        return [[_random_array(rng, tuple(d["shape"]), np.dtype(d["dtype"])) for d in self._inputs]
                for _ in range(count)]

    def inputs_from(self, samples):
        """Representative samples (in the model file's subgraph input order) as this
        signature's inputs: reordered by tensor name where the signature lists them otherwise."""
        order = _signature_order(self._inputs, self.model_info)
        samples = [[sample[i] for i in order] if len(sample) == len(order) else sample
                   for sample in samples]
        return check_samples(samples, [(d["signature_name"], d["shape"], d["dtype"])
                                       for d in self._inputs], self.name)

    splits_staging = True

    def invoke(self, inputs):
        self.stage(inputs)
        self.execute()

    def stage(self, inputs):
        for write, array in zip(self._writes, inputs):
            write(array)

    def execute(self):
        # Synchronous on every accelerator: run_by_index is LiteRT's non-async Run, which waits
        # on the output buffers' events before it returns (litert/runtime/compiled_model.cc).
        self._run(0, self._in, self._out)

    def read_outputs(self):
        """The last outputs as numpy arrays (after invoke; never timed)."""
        import numpy as np
        return [b.read(int(np.prod(d["shape"])), np.dtype(d["dtype"])).reshape(d["shape"])
                for b, d in zip(self._out, self._outputs)]

    def describe(self):
        fully = self.model.is_fully_accelerated() if self.model is not None else None
        total = len(self.model_info.ops()) if self.model_info is not None else None
        env = self._env.options if self._env is not None else None
        facts = {
            "version": self._version, "provider": None, "delegate": self._delegate(),
            "accelerator": self.accelerator, "cpu_fallback": self.cpu_fallback,
            "accelerators_compiled_for": list(self.compiled_for),
            "accelerator_used": self.used, "accelerator_evidence": self.evidence,
            "fully_accelerated": fully,
            "threads": self.threads, "cpu_num_threads": int(self.threads or 0),
            "dispatch_library_path": getattr(env, "dispatch_library_path", None) or None,
            "compiler_plugin_path": getattr(env, "compiler_plugin_path", None) or None,
            "timed": TIMED,
            # Fully accelerated: every op is inside some delegate (XNNPACK counts); otherwise
            # LiteRT does not say how many are, so the count stays unknown.
            "delegation": {"ops_total": total, "ops_delegated": total if fully else None},
        }
        if self.model is not None:
            facts["signature"] = self._signature
            facts["inputs"] = [_tensor_facts(d) for d in self._inputs]
            facts["outputs"] = [_tensor_facts(d) for d in self._outputs]
        reasons = self._validity_reasons(fully)
        if reasons:
            facts["validity_reasons"] = reasons
        return facts

    def _delegate(self):
        if not self.compiled_for:
            return None
        ran = self.accelerator if self.used is not False else "cpu"
        return "litert-%s%s" % (ran, "?" if self.used is None else "")

    def _validity_reasons(self, fully):
        reasons = []
        if self.used is False:
            reasons.append("accelerator %s was asked for but not used: %s; the model ran on the "
                           "CPU" % (self.accelerator, self.evidence))
        elif self.used is None and self.compiled_for:
            reasons.append("accelerator %s was asked for but LiteRT does not show that it was "
                           "used: %s" % (self.accelerator, self.evidence))
        if self.require_full and fully is False:
            reasons.append("require_full_delegation: LiteRT reports the model as not fully "
                           "accelerated (some ops run on plain TFLite CPU kernels)")
        return reasons

    def close(self):
        self._in = self._out = self._writes = self._run = None
        if self.model is not None:
            self.model.close()
            self.model = self._env = None


def _signature_order(details, model_info):
    """For each signature input, its position among the model file's subgraph inputs (matched by
    tensor name, then by signature name); the identity when they cannot all be matched."""
    identity = list(range(len(details)))
    names = [(i.get("name"), i.get("signature_name")) for i in getattr(model_info, "inputs", [])]
    if len(names) != len(details):
        return identity
    order = []
    for d in details:
        found = [k for k, (tensor, sig) in enumerate(names)
                 if d.get("name") is not None and d.get("name") == tensor]
        found = found or [k for k, (tensor, sig) in enumerate(names)
                          if sig is not None and sig == d.get("signature_name")]
        if len(found) != 1 or found[0] in order:
            return identity
        order.append(found[0])
    return order


def _tensor_facts(detail):
    return {"name": detail["signature_name"], "tensor": detail.get("name"),
            "shape": [int(s) for s in detail["shape"]], "dtype": str(detail["dtype"])}
