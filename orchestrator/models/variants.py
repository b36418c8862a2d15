"""Model variants: TFLite fp32/fp16/int8, ONNX and Edge TPU conversions, and representative data.

The converters run inside zoo.py's build child (TensorFlow imported there, never in the
controller); representative_digest and compile_edgetpu run in the controller itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from orchestrator.errors import ModelBuildError

# variant -> (format, precision of its weights); suite.py plans with this table.
VARIANT_FORMATS = {
    "savedmodel": ("savedmodel", "fp32"),
    "tflite-fp32": ("tflite", "fp32"),
    "tflite-fp16": ("tflite", "fp16"),
    "tflite-int8": ("tflite", "int8"),
    "onnx": ("onnx", "fp32"),
    "int8-edgetpu": ("tflite", "int8"),
}
ONNX_OPSET = 13  # old enough for onnxruntime on JetPack 4 and TensorRT 8, new enough for MoveNet
REPRESENTATIVE_MAX = 200  # TFLite's calibration needs a few hundred samples at most
_NPY = (".npy",)
_IMAGES = (".jpg", ".jpeg", ".png", ".bmp")
EDGETPU_MISSING = (
    "edgetpu_compiler is not installed here (it runs on x86-64 Debian/Ubuntu: sudo apt-get install "
    "edgetpu-compiler). Compile %(file)s there with `edgetpu_compiler -s %(file)s` and point the "
    "suite at the result with `path: .../%(stem)s_edgetpu.tflite`")


# ---------------------------------------------------------------- representative data

def representative_files(folder) -> list[Path]:
    """The .npy (and image) files of a representative folder, sorted by name.

    Raises:
        ModelBuildError: the folder is missing or holds none of them.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ModelBuildError("representative data %s: not a folder" % root)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in _NPY + _IMAGES)
    if not files:
        raise ModelBuildError("representative data %s: no .npy or image files (%s) in it"
                              % (root, ", ".join(_IMAGES)))
    return files[:REPRESENTATIVE_MAX]


def representative_digest(folder) -> str | None:
    """sha256 over the names and bytes of the representative files (None: seeded random data)."""
    if folder is None:
        return None
    digest = hashlib.sha256()
    for path in representative_files(folder):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def load_representative(folder, shape, dtype) -> list:
    """Arrays of `shape` (batch 1) and `dtype` from the folder: each .npy holds one sample
    ([H,W,C] or [1,H,W,C]) or a batch [N,H,W,C]; images are resized RGB pixels 0..255 (PIL).

    Raises:
        ModelBuildError: a file whose shape does not fit the model input, or images without PIL.
    """
    import numpy as np
    want = [None if d is None else int(d) for d in shape]
    samples = []
    for path in representative_files(folder):
        if path.suffix.lower() in _NPY:
            array = np.load(str(path), allow_pickle=False)
        else:
            array = _load_image(path, want)
        if array.ndim == len(want) - 1:
            array = array[None]
        if array.ndim != len(want) or not all(w is None or w == a for w, a in
                                               zip(want[1:], array.shape[1:])):
            raise ModelBuildError("representative data %s has shape %s; the model input is %s"
                                  % (path, list(array.shape), want))
        samples.extend(array[i:i + 1].astype(dtype) for i in range(array.shape[0]))
    return samples[:REPRESENTATIVE_MAX]


def _load_image(path, want):
    import numpy as np
    try:
        from PIL import Image
    except ImportError:
        raise ModelBuildError("representative image %s needs Pillow: pip install pillow (or "
                              "save the samples as .npy files)" % path) from None
    if len(want) != 4 or None in want[1:3]:
        raise ModelBuildError("representative image %s: the model input %s is not [1,H,W,C]"
                              % (path, want))
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((want[2], want[1])), dtype=np.float32)


def random_samples(shape, dtype, seed, count=8) -> list:
    """Seeded stand-in data: integers 0..255 (pixels), floats in [0, 1) unless told pixels."""
    import numpy as np
    rng = np.random.RandomState(seed)
    dims = [1 if d is None else int(d) for d in shape]
    if np.dtype(dtype).kind in "iu":
        return [rng.randint(0, 256, dims).astype(dtype) for _ in range(count)]
    return [rng.random_sample(dims).astype(dtype) for _ in range(count)]


# ---------------------------------------------------------------- TFLite (in the build child)

def configure_tflite(converter, precision: str, samples=None):
    """Set a TFLiteConverter up for fp32, fp16 (float16 weights) or int8 (full integer where
    TFLite can, calibrated on `samples`: a list of per-input lists or dicts)."""
    import tensorflow as tf
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
    return converter


def savedmodel_to_tflite(folder, precision: str, representative=None, seed: int = 0) -> bytes:
    """A user SavedModel folder -> .tflite bytes, variables frozen by the converter."""
    import tensorflow as tf
    fn = _serving_signature(folder)
    specs = fn.structured_input_signature[1]
    samples = None
    if precision == "int8":
        if representative is not None and len(specs) != 1:
            raise ModelBuildError("%s: representative data feeds one input; the serving signature "
                                  "has %d (%s)" % (folder, len(specs), ", ".join(sorted(specs))))
        per_input = {k: (load_representative(representative, s.shape.as_list(), s.dtype.as_numpy_dtype)
                         if representative is not None else
                         random_samples(s.shape.as_list(), s.dtype.as_numpy_dtype, seed))
                     for k, s in specs.items()}
        count = min(len(v) for v in per_input.values())
        samples = [{k: v[i] for k, v in per_input.items()} for i in range(count)]
    converter = configure_tflite(tf.lite.TFLiteConverter.from_saved_model(str(folder)), precision,
                                 samples)
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise ModelBuildError(_tflite_failure(folder, exc)) from exc


def _tflite_failure(folder, exc) -> str:
    text = str(exc).strip().splitlines()
    hint = ""
    if any(w in str(exc).lower() for w in ("variable", "resource")):
        hint = (" (the SavedModel keeps variables the converter could not freeze: from Keras 3 "
                "export it with model.export(path), which freezes the serving function)")
    return "%s: TFLite conversion failed%s: %s" % (folder, hint, " ".join(text[-3:])[:600])


def _serving_signature(folder):
    import tensorflow as tf
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as exc:
        raise ModelBuildError("%s: not a loadable SavedModel: %s" % (folder, exc)) from exc
    signatures = getattr(loaded, "signatures", {}) or {}
    if "serving_default" not in signatures:
        raise ModelBuildError("%s: no serving_default signature (signatures: %s); Keras 3 models: "
                              "model.export(path)" % (folder, ", ".join(signatures) or "none"))
    fn = signatures["serving_default"]
    fn._benchfleet_keepalive = loaded  # the function needs its object graph alive
    return fn


# ---------------------------------------------------------------- ONNX (in the build child)

def concrete_to_onnx(concrete_fn) -> bytes:
    """A TF ConcreteFunction -> canonical ONNX bytes (tf2onnx, opset ONNX_OPSET).

    Raises:
        ModelBuildError: tf2onnx missing, or an op it left unconverted.
    """
    try:
        import onnx
        import tensorflow as tf
        from tf2onnx import convert, tf_loader
    except ImportError as exc:
        raise ModelBuildError("the onnx variant needs tf2onnx and onnx on the controller: pip "
                              "install 'benchfleet[onnx]' (%s)" % exc) from exc
    inputs = [t.name for t in concrete_fn.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete_fn.outputs]
    rename = convert.tensor_names_from_structed(concrete_fn, inputs, outputs)
    with tf.device("/cpu:0"):
        frozen = tf_loader.from_function(concrete_fn, inputs, outputs)
        model, _ = convert.from_graph_def(frozen, name="main", input_names=inputs,
                                          output_names=outputs, opset=ONNX_OPSET,
                                          tensors_to_rename=rename)
    # tf2onnx continues past ops it cannot convert and leaves them as TF ops: refuse those.
    foreign = sorted({"%s:%s" % (n.domain, n.op_type) for n in model.graph.node
                      if n.domain not in ("", "ai.onnx", "ai.onnx.ml")})
    if foreign:
        raise ModelBuildError("tf2onnx could not convert these ops: %s" % ", ".join(foreign))
    model = canonical_onnx(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelBuildError("tf2onnx produced an invalid ONNX model: %s" % exc) from exc
    return model.SerializeToString(deterministic=True)


def savedmodel_to_onnx(folder) -> bytes:
    return concrete_to_onnx(_serving_signature(folder))


_COUNTER = re.compile(r"__\d+")  # tf2onnx's process-wide name counters


def canonical_onnx(model):
    """Make tf2onnx output byte-reproducible: its node order and the counters in its names vary
    from process to process (set iteration over objects), and so does which TF name a merged node
    or constant keeps, while the graph itself does not. Nodes are re-sorted topologically, ties
    broken by a content hash of the node and everything it reads, and renamed op_type_position;
    constants are named after their first reader. Graph input and output names are kept."""
    graph = model.graph
    nodes = list(graph.node)  # protobuf hands out fresh wrappers per access: index this list
    sig = {"": ""}
    for i in graph.input:
        sig[i.name] = _hash("input", i.name)
    for init in graph.initializer:
        body = type(init)()
        body.CopyFrom(init)
        body.name = ""
        sig[init.name] = _hash("init", body.SerializeToString(deterministic=True).hex())
    node_sig = []
    for node in nodes:  # an ONNX graph is stored in topological order
        for field in ("domain", "doc_string"):  # proto2: an empty value set differs from unset
            if not getattr(node, field):
                node.ClearField(field)
        for attr in node.attribute:
            if attr.HasField("t"):
                attr.t.name = ""
        attrs = [a.SerializeToString(deterministic=True).hex()
                 for a in sorted(node.attribute, key=lambda a: a.name)]
        s = _hash(node.domain, node.op_type, *([sig.get(x, x) for x in node.input] + attrs))
        node_sig.append(s)
        for k, out in enumerate(node.output):
            sig[out] = _hash(s, str(k))
    order = [nodes[i] for i in _topological(nodes, node_sig)]
    keep = {i.name for i in graph.input} | {o.name for o in graph.output}
    names = {}
    for pos, node in enumerate(order):
        node.name = "%s_%d" % (node.op_type, pos)
        for k, out in enumerate(node.output):
            if out and out not in keep:
                names[out] = "%s:%d" % (node.name, k)
    # tf2onnx merges equal constants and keeps any one of their names: name them by first reader.
    inits = list(graph.initializer)
    init_names = {t.name for t in inits} - keep
    for node in order:
        for k, x in enumerate(node.input):
            if x in init_names:
                names.setdefault(x, "%s/in%d" % (node.name, k))
    for pos, init in enumerate(sorted(inits, key=lambda t: sig[t.name])):
        names.setdefault(init.name, "unused_c%d" % pos)
    for node in order:
        node.input[:] = [names.get(x, x) for x in node.input]
        node.output[:] = [names.get(x, x) for x in node.output]
    for init in inits:
        init.name = names[init.name]
    infos = [v for v in graph.value_info if v.name in names or v.name in keep]
    for info in infos:
        info.name = names.get(info.name, info.name)
    _replace(graph.node, order)
    _replace(graph.initializer, sorted(inits, key=lambda t: t.name))
    _replace(graph.value_info, sorted(infos, key=lambda v: v.name))
    return model


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _topological(nodes, node_sig) -> list[int]:
    """Kahn's algorithm over node indices; among ready nodes the smallest (content hash,
    counter-free name) goes first."""
    import heapq
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting, readers = [], {}
    for i, node in enumerate(nodes):
        deps = {producer[x] for x in node.input if x in producer}
        waiting.append(len(deps))
        for d in deps:
            readers.setdefault(d, []).append(i)
    key = [(node_sig[i], _COUNTER.sub("", n.name), i) for i, n in enumerate(nodes)]
    ready = [key[i] for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)[-1]
        order.append(i)
        for r in readers.get(i, []):
            waiting[r] -= 1
            if waiting[r] == 0:
                heapq.heappush(ready, key[r])
    return order


def _replace(field, items):
    copies = [type(x)() for x in items]
    for c, x in zip(copies, items):
        c.CopyFrom(x)
    del field[:]
    field.extend(copies)


# ---------------------------------------------------------------- Edge TPU (in the controller)

def edgetpu_compiler_version(compiler: str) -> str:
    proc = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    return (proc.stdout or proc.stderr).strip()


def compile_edgetpu(compiler: str, tflite: Path, work: Path) -> Path:
    """Run `edgetpu_compiler -s -o WORK TFLITE`; returns WORK/<stem>_edgetpu.tflite.

    Raises:
        ModelBuildError: the compiler failed or wrote no model (its log tail is in the message).
    """
    proc = subprocess.run([compiler, "-s", "-o", str(work), str(tflite)],
                          capture_output=True, text=True)
    (work / "edgetpu_compiler.log").write_text(proc.stdout + proc.stderr)
    out = work / (tflite.stem + "_edgetpu.tflite")
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise ModelBuildError("edgetpu_compiler failed on %s (exit %d):\n%s"
                              % (tflite, proc.returncode, tail))
    return out


def which_edgetpu_compiler() -> str | None:
    return shutil.which("edgetpu_compiler")
