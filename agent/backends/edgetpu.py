"""The Edge TPU backend: an Edge TPU-compiled .tflite on a Coral, through pycoral or libedgetpu.

The TFLite backend's inputs and invoke are reused; only how the interpreter is made differs.
What runs on the TPU is read from the model file: edgetpu_compiler turns each run of ops it can
map into one edgetpu-custom-op node, and every other op stays a normal TFLite op on the CPU.

Which TFLite may drive libedgetpu (docs/SUPPORTED.md): pycoral first (it pins its
tflite_runtime), then tflite_runtime's load_delegate. Never ai_edge_litert or full TensorFlow:
Coral states the full tensorflow package does not work with libedgetpu, and libedgetpu users
report segfaults with TFLite newer than 2.11, so those are refused with the reason before a
delegate is loaded, rather than risking a crash that explains nothing.
"""

import platform

from agent import tflite_model
from agent.backends.base import BackendUnavailable, BadModel
from agent.backends.catalog import major_minor
from agent.backends.tflite import (TFLiteBackend, import_interpreter, open_library,
                                   read_model_info)

# The runtime library's name per OS, as pycoral loads it.
EDGETPU_LIBRARY = {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
    platform.system(), "libedgetpu.so.1")
INSTALL_HINT = ("sudo apt-get install libedgetpu1-std "
                "(Coral apt repository: https://coral.ai/software/#debian-packages)")
_TFLITE_RUNTIME = (("tflite_runtime.interpreter", "tflite_runtime"),)
# The newest TFLite known to work with Coral's libedgetpu; newer ones are refused unless the
# case sets allow_untested_tflite (for a libedgetpu built against that TFLite).
NEWEST_KNOWN_GOOD_TFLITE = (2, 11)
RUNTIME_HINT = ("sudo apt-get install python3-pycoral (Coral apt repository; it brings the "
                "tflite_runtime that libedgetpu was built against), or "
                "pip install 'tflite-runtime<=2.11' on Python <= 3.10")
ATTACH_HINT = ("plug in the Coral USB Accelerator (use a USB 3 port) and check "
               "`lsusb | grep -E '1a6e:089a|18d1:9302'`")


def no_library():
    return BackendUnavailable("%s not found" % EDGETPU_LIBRARY, hint=INSTALL_HINT)


def no_tpu(detail=None):
    reason = "no Edge TPU attached"
    if detail:
        reason += " (%s)" % detail
    return BackendUnavailable(reason, hint=ATTACH_HINT)


def check_tflite(module_name, version, allow_untested):
    """Refuses a TFLite that is known not to work with libedgetpu, before anything is loaded.

    Raises:
        BackendUnavailable: ai_edge_litert or full TensorFlow, or a tflite_runtime newer than
            NEWEST_KNOWN_GOOD_TFLITE unless allow_untested.
    """
    package = module_name.split(".")[0]
    if package != "tflite_runtime":
        raise BackendUnavailable(
            "the Edge TPU needs pycoral or tflite_runtime; %s %s is not used with libedgetpu "
            "(full TensorFlow does not work with it, and TFLite newer than 2.11 is known to "
            "crash it)" % (package, version or "?"), hint=RUNTIME_HINT)
    parsed = major_minor(version)
    if parsed is not None and parsed > NEWEST_KNOWN_GOOD_TFLITE and not allow_untested:
        raise BackendUnavailable(
            "tflite_runtime %s is newer than %d.%d, the newest known to work with libedgetpu "
            "(newer ones are reported to segfault)" % ((version,) + NEWEST_KNOWN_GOOD_TFLITE),
            hint=RUNTIME_HINT + "; or set options.allow_untested_tflite: true for a libedgetpu "
                                "built against tflite_runtime %s" % version)


def tpu_split(model_info):
    """(TPU segments, names of the ops left on the CPU) of subgraph 0 of an Edge TPU model."""
    ops = model_info.ops()
    cpu = [name for name in ops if name != tflite_model.EDGETPU_CUSTOM_OP]
    return len(ops) - len(cpu), cpu


class EdgeTPUBackend(TFLiteBackend):
    """Options (runtime.options):
      device: "usb", "usb:0", "pci:0", ":0" (default: any Edge TPU), as libedgetpu names them.
      require_full_delegation: true: any op left on the CPU makes the result INVALID.
      xnnpack: as for tflite; applies to the CPU-side ops on the load_delegate path.
      allow_untested_tflite: true: run with a tflite_runtime newer than 2.11.
    """

    name = "edgetpu"

    def __init__(self, case, model_path):
        TFLiteBackend.__init__(self, case, model_path)
        self.device = self.options.get("device")
        self._via = None
        self._edgetpu_runtime = None

    def load(self):
        self.model_info = read_model_info(self.model_path)
        if not self.model_info.is_edgetpu:
            raise BadModel("%s is not compiled for the Edge TPU (no %s); compile it with "
                           "edgetpu_compiler or use variant int8-edgetpu"
                           % (self.model_path, tflite_model.EDGETPU_CUSTOM_OP))
        interpreter = self._with_pycoral()
        if interpreter is None:
            interpreter = self._with_load_delegate()
        self._bind(interpreter)

    def _with_pycoral(self):
        """pycoral's make_interpreter, or None when pycoral is not installed (or cannot load)."""
        try:
            import pycoral
            from pycoral.utils import edgetpu as coral
        except (ImportError, OSError):  # its extension links libedgetpu: a missing one lands here
            return None
        self._via = "pycoral %s" % getattr(pycoral, "__version__", "?")
        self._runtime = ("tflite_runtime.interpreter", _tflite_runtime_version())
        check_tflite(self._runtime[0], self._runtime[1], self.options["allow_untested_tflite"])
        try:
            self._edgetpu_runtime = str(coral.get_runtime_version())
        except Exception:
            pass
        # Asked first: with no TPU, the delegate would fail with a less helpful message.
        if not coral.list_edge_tpus():
            raise no_tpu("pycoral list_edge_tpus() is empty")
        try:
            interpreter = coral.make_interpreter(str(self.model_path), device=self.device)
        except OSError:
            raise no_library()
        except ValueError as exc:
            raise no_tpu(_first_line(exc, self.device))
        return self._allocated(interpreter)

    def _with_load_delegate(self):
        try:
            module, module_name, version = import_interpreter(_TFLITE_RUNTIME)
        except BackendUnavailable:
            # Named in the refusal if one is there; the plain "none installed" otherwise.
            try:
                module, module_name, version = import_interpreter()
            except BackendUnavailable:
                raise BackendUnavailable("neither pycoral nor tflite_runtime is installed",
                                         hint=RUNTIME_HINT)
        check_tflite(module_name, version, self.options["allow_untested_tflite"])
        self._runtime = (module_name, version)
        self._via = "%s.load_delegate" % module_name
        options = {"device": self.device} if self.device else {}
        try:
            open_library(EDGETPU_LIBRARY)
            delegate = module.load_delegate(EDGETPU_LIBRARY, options)
        except OSError:  # the dynamic loader found no such library
            raise no_library()
        except ValueError as exc:  # the library loaded, but opened no TPU
            raise no_tpu(_first_line(exc, self.device))
        self._delegate_names = ["edgetpu"]
        return self._create_interpreter(module, [delegate])

    def _allocated(self, interpreter):
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadModel("%s: the Edge TPU runtime cannot load this model: %s"
                           % (self.model_path, exc))
        return interpreter

    def describe(self):
        facts = TFLiteBackend.describe(self)
        facts["delegate"] = "edgetpu"
        facts["device"] = self.device
        return facts

    def _delegation(self):
        # The ops inside a TPU segment are not visible (the compiler fused them), so the counts
        # are in nodes: each segment counts as one delegated op, each CPU op as one more op.
        segments, cpu = tpu_split(self.model_info)
        return {"ops_total": segments + len(cpu), "ops_delegated": segments,
                "tpu_segments": segments, "cpu_ops": len(cpu), "fallback_ops": cpu,
                "library": EDGETPU_LIBRARY, "via": self._via,
                "edgetpu_runtime": self._edgetpu_runtime,
                "tflite_runtime": self._runtime[1] if self._runtime else None}


def _tflite_runtime_version():
    try:
        import tflite_runtime
        return getattr(tflite_runtime, "__version__", None)
    except ImportError:
        return None


def _first_line(exc, device):
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = lines[-1].strip() if lines else type(exc).__name__
    return "device %s: %s" % (device, text) if device else text
