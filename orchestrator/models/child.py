"""The build child: one fresh Python per model builds every requested variant into its work folder
and reports each as a JSON line on its stdout; run_child is the controller's side of that talk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from orchestrator.errors import ModelBuildError
from orchestrator.models import variants
from orchestrator.models.artifacts import Artifact, pack_savedmodel, sha256_file

NO_TF = ("building built-in model %s needs TensorFlow on the controller: pip install "
         "'benchfleet[tensorflow]', or point the suite at your own model file with `path:`")
_TAIL_LINES = 15


# ---------------------------------------------------------------- the controller's side

def run_child(spec: dict, jobs: list, on_event) -> None:
    """Build jobs [(variant, work folder)] in one child, in that order. on_event(event) is called
    live for each {"event": "start" | "done" | "failed", "variant", "error"}; done means the
    folder holds the variant with its artifact.json. A variant the child never finished (it
    crashed or was killed) is reported failed with the tail of the child's stderr."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    doc = dict(spec, jobs=[[v, str(w)] for v, w in jobs])
    cmd = [sys.executable, "-m", "orchestrator.models.child", json.dumps(doc)]
    finished = set()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            for line in proc.stdout:
                event = _parse(line)
                if event is not None:
                    if event["event"] != "start":
                        finished.add(event["variant"])
                    on_event(event)
            proc.wait()
        finally:
            if proc.poll() is None:  # on_event raised (an interrupt): the child goes too
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        tail = "\n".join(err.read().strip().splitlines()[-_TAIL_LINES:])
    for variant, _ in jobs:
        if variant not in finished:
            on_event({"event": "failed", "variant": variant,
                      "error": "building %s/%s failed (exit %d):\n%s"
                               % (spec["name"], variant, proc.returncode, tail)})


def _parse(line: str):
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if isinstance(event, dict) and event.get("event") in ("start", "done", "failed"):
        return event
    return None


# ---------------------------------------------------------------- the child (TensorFlow from here)

class _Builder:
    """Builds the variants of one model; a built-in's graph is made once and shared by all.

    Keras layer names and TF function names come from process-wide counters. TFLite and
    (canonical) ONNX bytes do not depend on them, a SavedModel's do: it must be the first
    thing built in the process (zoo orders jobs so), then it is the same alone or with others.
    """

    def __init__(self, spec: dict):
        self.name, self.seed = spec["name"], spec["seed"]
        self.representative = spec.get("representative")
        self.user = spec.get("savedmodel")  # a user's SavedModel folder, else a built-in
        self._graph = None

    def graph(self):
        if self._graph is None:
            from orchestrator.models import movenet
            self._graph = movenet.ServingGraph(self.name, self.seed)
        return self._graph

    def build(self, variant: str, work: Path) -> None:
        """Build into `work`; artifact.json is written last and marks it complete."""
        try:
            art = self._build(variant, work)
        except ImportError as exc:
            raise ModelBuildError(NO_TF % self.name + " (%s)" % exc) from exc
        (work / "artifact.json").write_text(json.dumps(art.to_json(), indent=1))

    def _build(self, variant: str, work: Path) -> Artifact:
        if variant == "savedmodel":
            self._save_savedmodel(work / "saved_model")
            tar, digest = pack_savedmodel(work / "saved_model", work)
            tar.rename(work / "saved_model.tar")
            return Artifact(self.name, variant, "savedmodel", Path("saved_model.tar"), digest, True,
                            Path("saved_model"))
        if variant == "onnx":
            if self.user:
                data = variants.savedmodel_to_onnx(self.user)
            else:
                data = variants.concrete_to_onnx(self.graph().serve.get_concrete_function())
            return self._write(work, variant, "onnx", data)
        precision = variants.VARIANT_FORMATS[variant][1]
        if self.user:
            data = variants.savedmodel_to_tflite(self.user, precision, self.representative,
                                                 self.seed)
        else:
            data = self._to_tflite(precision)
        return self._write(work, variant, "tflite", data)

    def _write(self, work: Path, variant: str, fmt: str, data: bytes) -> Artifact:
        path = work / ("model." + fmt)
        path.write_bytes(data)
        return Artifact(self.name, variant, fmt, Path(path.name), sha256_file(path), False)

    def _save_savedmodel(self, dest: Path) -> None:
        import tensorflow as tf
        graph = self.graph()
        # The concrete function, traced here and reused by the conversions after this one.
        serve = graph.serve.get_concrete_function()
        tf.saved_model.save(graph.module, str(dest), signatures={"serving_default": serve})
        _drop_fingerprint_uuid(dest / "fingerprint.pb")

    def _to_tflite(self, precision: str) -> bytes:
        """fp32: the int32-input graph as is. fp16: the same with float16 weights. int8:
        full-integer weights and activations, uint8 input (pixels, scale 1), float output:
        decoding ops TFLite cannot quantize stay float; calibrated on the representative
        folder or seeded pixels."""
        import numpy as np
        import tensorflow as tf
        from orchestrator.models.movenet import ARCHITECTURES
        graph = self.graph()
        int8 = precision == "int8"
        fn = graph.serve_float if int8 else graph.serve
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function()], graph.module)
        # By default the converter first saves the whole module to a temporary SavedModel and
        # converts that: 5-9x slower, and the function alone converts to the same graph.
        converter.experimental_lower_to_saved_model = False
        samples = None
        if int8:
            side = ARCHITECTURES[self.name][0]
            if self.representative:
                arrays = variants.load_representative(self.representative, [1, side, side, 3],
                                                      np.float32)
            else:
                rng = np.random.RandomState(self.seed)
                arrays = [rng.randint(0, 256, (1, side, side, 3)).astype(np.float32)
                          for _ in range(8)]
            samples = [[a] for a in arrays]
            converter.inference_input_type = tf.uint8
        return variants.configure_tflite(converter, precision, samples).convert()


def _drop_fingerprint_uuid(path: Path) -> None:
    """TF >= 2.15 writes a random uuid into fingerprint.pb; everything else in a save is a pure
    function of the graph and weights. Clearing it makes the tar (and its hash) reproducible."""
    if not path.is_file():
        return
    from tensorflow.core.protobuf import fingerprint_pb2
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    if getattr(fingerprint, "uuid", ""):  # older TF has no uuid field: nothing to clear
        fingerprint.ClearField("uuid")
        path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def _unexpected(name: str, variant: str) -> str:
    """A bug or a converter crash: the traceback goes to stderr, its tail into the event."""
    text = traceback.format_exc()
    sys.stderr.write(text)
    tail = "\n".join(text.strip().splitlines()[-_TAIL_LINES:])
    return "building %s/%s failed:\n%s" % (name, variant, tail)


def main(argv) -> int:
    """python -m orchestrator.models.child SPEC_JSON: each job's start, then done or failed."""
    spec = json.loads(argv[1])
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    # Whatever TensorFlow, Keras or tf2onnx print goes to stderr: stdout carries events only.
    os.dup2(2, 1)
    builder = _Builder(spec)
    for variant, work in spec["jobs"]:
        protocol.write(json.dumps({"event": "start", "variant": variant}) + "\n")
        t0 = time.monotonic()
        event = {"event": "done", "variant": variant}
        try:
            builder.build(variant, Path(work))
        except ModelBuildError as exc:
            event = {"event": "failed", "variant": variant, "error": str(exc)}
        except Exception:  # noqa: BLE001 - one variant's failure must not lose the others
            event = {"event": "failed", "variant": variant,
                     "error": _unexpected(spec["name"], variant)}
        event["seconds"] = round(time.monotonic() - t0, 3)
        protocol.write(json.dumps(event) + "\n")
    protocol.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
