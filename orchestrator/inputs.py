"""Representative inputs on the controller: a suite's `inputs:` folder checked, converted to the
model's inputs and packed into one blob that travels like a model (docs/METHOD.md step 5).

A folder holds either arrays or images, never both (hidden files and sub-folders are not read;
any other file is an error), at most schema.MAX_INPUT_SAMPLES samples and MAX_INPUT_BYTES bytes:

- `.npy`: one sample of a single-input model, of the input's shape (or that shape without its
  leading batch 1) and exactly its dtype;
- `.npz`: one sample with one array per input, named by input name (the tensor's or its
  signature's name; known on the controller for .tflite and built-in models) or by position
  `0`, `1`, ... in the model's input order (the only way for other formats);
- `.jpg`/`.jpeg`/`.png`: converted here (Pillow) to a single [1, H, W, C] input: resized to H x W
  (Pillow's bilinear), RGB (grayscale for C = 1), then uint8 0..255, int8 pixel - 128, other
  integers 0..255 (MoveNet's int32 pixels), floats pixel / 255 in [0, 1]: the ranges of the
  seeded random inputs (agent/backends/tflite.py _random_array). Images need the input's shape,
  which the controller knows for .tflite files and built-in models only.

Samples are taken in file-name order. The blob (agent/inputs.py reads it) is an uncompressed zip
written deterministically, named by its sha256; a case's id includes the folder's digest
(names and bytes), so a case with inputs never shares an id with one without.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from agent import schema, tflite_model
from agent.inputs import BLOB_FORMAT, BLOB_VERSION, MANIFEST, member_name
from orchestrator.errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARRAY_SUFFIXES = (".npy", ".npz")
MAX_SAMPLES = schema.MAX_INPUT_SAMPLES
MAX_BYTES = schema.MAX_INPUT_BYTES
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Built-in variants whose input is uint8 pixels (orchestrator/models/child.py: int8 converts with
# inference_input_type uint8); the others take MoveNet's int32 pixels.
_UINT8_BUILTIN_VARIANTS = ("tflite-int8", "int8-edgetpu")


class InputsError(ConfigError):
    """A folder of inputs that cannot be used: one message naming the file and the fix."""


@dataclass(frozen=True)
class InputSpec:
    """One model input as the controller knows it: shape (None: a dynamic dimension), numpy
    dtype name, tensor name and the name a signature gives it (either names an .npz array)."""

    name: Optional[str]
    shape: tuple
    dtype: str
    alias: Optional[str] = None

    def text(self):
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return "%s [%s] %s" % (self.alias or self.name or "?", dims, self.dtype)


@dataclass(frozen=True)
class InputsBlob:
    """A folder's samples converted for one model variant, packed: the file uploaded as
    blobs/<sha256>."""

    local_path: Path
    sha256: str
    count: int
    source: str          # the folder's name (what results and labels show)
    nbytes: int

    def job_entry(self) -> dict:
        """The job case's model.inputs (agent/schema.py MODEL_INPUTS_FIELDS)."""
        return {"path": "blobs/" + self.sha256, "sha256": self.sha256, "count": self.count,
                "source": self.source}


# ---------------------------------------------------------------- the model's inputs

def tflite_inputs(path) -> list:
    """The InputSpecs of a .tflite file, read from its flatbuffer (no framework)."""
    try:
        info = tflite_model.read_model(str(path))
    except (OSError, ValueError) as exc:
        raise InputsError("cannot read the model's inputs from %s: %s" % (path, exc))
    if info.inputs_error:
        raise InputsError("%s: %s" % (path, info.inputs_error))
    specs = []
    for t in info.inputs:
        dims = t["shape_signature"] if t["shape_signature"] is not None else t["shape"]
        specs.append(InputSpec(t["name"], tuple(None if d < 0 else d for d in dims), t["dtype"],
                               t["signature_name"]))
    return specs


def builtin_inputs(builtin, variant) -> list:
    """A built-in model's input: [1, side, side, 3] pixels, uint8 for its int8 variants, else
    int32 (orchestrator/models/movenet.py ServingGraph, child.py)."""
    from orchestrator.models.movenet import ARCHITECTURES
    side = ARCHITECTURES[builtin][0]
    dtype = "uint8" if variant in _UINT8_BUILTIN_VARIANTS else "int32"
    return [InputSpec("input", (1, side, side, 3), dtype)]


def model_inputs(model, variant, artifact=None):
    """InputSpecs of a suite model's variant, or None where the controller cannot know them
    (an ONNX, OpenVINO or SavedModel file of the user's, a synthetic model).

    artifact: the built or resolved model (orchestrator.models.artifacts.Artifact): a .tflite
    is read from its file, which is what the device will run."""
    if artifact is not None and artifact.format == "tflite":
        return tflite_inputs(artifact.local_path)
    if model.kind == "builtin":
        return builtin_inputs(model.builtin, variant)
    if model.kind == "path" and model.variant_format(variant) == "tflite":
        return tflite_inputs(model.resolved_path())
    return None


# ---------------------------------------------------------------- the folder

def folder_files(folder) -> list:
    """The sample files of an inputs folder, sorted by name.

    Raises:
        InputsError: missing or not a folder, no sample, files that are not samples, images
        mixed with arrays, more than MAX_SAMPLES samples or MAX_BYTES bytes.
    """
    root = Path(folder)
    kinds = "a folder of .npy/.npz arrays or .jpg/.jpeg/.png images"
    if not root.exists():
        raise InputsError("%s: no such folder (expected %s, relative to the suite file)"
                          % (root, kinds))
    if not root.is_dir():
        raise InputsError("%s: not a folder (expected %s)" % (root, kinds))
    files = sorted((p for p in root.iterdir() if not p.name.startswith(".") and p.is_file()),
                   key=lambda p: p.name)
    others = [p.name for p in files if p.suffix.lower() not in ARRAY_SUFFIXES + IMAGE_SUFFIXES]
    if others:
        raise InputsError("%s: %s %s not a sample (%s holds only .npy/.npz arrays or .jpg/.jpeg/"
                          ".png images): move %s out" % (
                              root, _names(others), "is" if len(others) == 1 else "are",
                              "an inputs folder", "it" if len(others) == 1 else "them"))
    if not files:
        raise InputsError("%s: no sample in it (put .npy/.npz arrays or .jpg/.jpeg/.png images "
                          "there, one file per sample)" % root)
    images = [p.name for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    arrays = [p.name for p in files if p.suffix.lower() in ARRAY_SUFFIXES]
    if images and arrays:
        raise InputsError("%s: mixes images (%s) and arrays (%s): keep one kind (images are "
                          "converted to the model's input, arrays are fed as they are)"
                          % (root, _names(images), _names(arrays)))
    if len(files) > MAX_SAMPLES:
        raise InputsError("%s: %d samples, past the %d a case takes: keep at most %d of them"
                          % (root, len(files), MAX_SAMPLES, MAX_SAMPLES))
    total = sum(p.stat().st_size for p in files)
    if total > MAX_BYTES:
        raise InputsError("%s: %.1f MiB of samples, past the %d MiB a case ships: use fewer or "
                          "smaller samples" % (root, total / 2.0 ** 20, MAX_BYTES >> 20))
    return files


def _names(names, most=3):
    shown = ", ".join(names[:most])
    return shown + (" and %d more" % (len(names) - most) if len(names) > most else "")


def _stat_key(folder) -> tuple:
    root = Path(folder)
    try:
        return tuple((p.name, st.st_size, st.st_mtime_ns) for p in sorted(root.iterdir())
                     for st in [p.stat()])
    except OSError:
        return ()


def digest(folder) -> str:
    """sha256 over the sample files' names and bytes (a case's id includes it)."""
    return _digest(str(folder), _stat_key(folder))


@functools.lru_cache(maxsize=64)
def _digest(folder, _key) -> str:
    h = hashlib.sha256()
    for path in folder_files(folder):
        h.update(path.name.encode("utf-8") + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- conversion

def load_samples(folder, specs) -> tuple:
    """(samples, names): the folder's samples as lists of arrays in the model's input order,
    converted (images) or checked (arrays) against `specs` (None: unknown, arrays fed as they
    are); names: the input names the arrays were given for (None where positional).

    Raises:
        InputsError: naming the file and what to change.
    """
    import numpy as np
    files = folder_files(folder)
    if files[0].suffix.lower() in IMAGE_SUFFIXES:
        spec = _image_input(specs, files[0])
        per = int(np.prod([d for d in spec.shape])) * np.dtype(spec.dtype).itemsize
        _check_total(folder, per * len(files), spec)
        return [[convert_image(p, spec)] for p in files], [spec.alias or spec.name]
    samples, total = [], 0
    for path in files:
        arrays = _read_npz(path, specs) if path.suffix.lower() == ".npz" else \
            [_fit(_read_npy(path), specs[0] if specs else None, path, specs)]
        if samples and len(arrays) != len(samples[0]):
            raise InputsError("%s: %d arrays, but %s has %d: every sample gives every input"
                              % (path, len(arrays), files[0].name, len(samples[0])))
        total += sum(a.nbytes for a in arrays)
        _check_total(folder, total)
        samples.append(arrays)
    names = [s.alias or s.name for s in specs] if specs else [None] * len(samples[0])
    return samples, names


def _check_total(folder, nbytes, spec=None):
    if nbytes > MAX_BYTES:
        raise InputsError("%s: the samples come to %.1f MiB%s, past the %d MiB a case ships: use "
                          "fewer samples" % (folder, nbytes / 2.0 ** 20,
                                             " as %s" % spec.text() if spec else "",
                                             MAX_BYTES >> 20))


def _image_input(specs, first):
    if specs is None:
        raise InputsError("%s: images are converted to the model's input shape, which the "
                          "controller knows only for .tflite files and built-in models: give "
                          "this model .npy samples of its input's shape and dtype" % first)
    if len(specs) != 1:
        raise InputsError("%s: images feed a model with one input; this one has %d (%s): give "
                          "one .npz per sample with an array per input name"
                          % (first, len(specs), ", ".join(s.text() for s in specs)))
    spec = specs[0]
    shape = spec.shape
    kind = _dtype_kind(spec.dtype)
    if len(shape) != 4 or shape[0] not in (1, None) or None in shape[1:3] or \
            shape[3] not in (1, 3) or kind not in "iuf":
        raise InputsError("%s: images convert to a [1, H, W, 3 or 1] integer or float input; the "
                          "model's is %s: give .npy samples of its shape and dtype"
                          % (first, spec.text()))
    return InputSpec(spec.name, (1,) + tuple(shape[1:]), spec.dtype, spec.alias)


def _dtype_kind(name):
    import numpy as np
    try:
        return np.dtype(name).kind
    except TypeError:
        return "?"


def convert_image(path, spec):
    """One image as the model's [1, H, W, C] input: RGB (L for C = 1), bilinear resize to
    H x W, then the dtype's range (module docstring)."""
    import numpy as np
    try:
        from PIL import Image
    except ImportError:
        raise InputsError("%s: images are converted on the controller with Pillow, which is not "
                          "installed here: pip install pillow (or save the samples as .npy "
                          "arrays of %s)" % (path, spec.text())) from None
    _, height, width, channels = spec.shape
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    bomb = getattr(Image, "DecompressionBombError", ValueError)   # a huge image, refused
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L").resize((width, height), bilinear)
            pixels = np.asarray(img, dtype=np.uint8).reshape(1, height, width, channels)
    except (OSError, ValueError, SyntaxError, bomb) as exc:   # PIL's errors for a bad file
        raise InputsError("%s: cannot read this image: %s (replace or remove it)"
                          % (path, exc)) from None
    dtype = np.dtype(spec.dtype)
    if dtype == np.uint8:
        return pixels
    if dtype == np.int8:
        return (pixels.astype(np.int16) - 128).astype(np.int8)
    if dtype.kind in "iu":
        return pixels.astype(dtype)
    return (pixels.astype(np.float64) / 255.0).astype(dtype)


def _read_npy(path):
    import numpy as np
    try:
        array = np.load(str(path), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputsError("%s: not a readable .npy array: %s (save it with numpy.save)"
                          % (path, exc)) from None
    if not isinstance(array, np.ndarray):
        raise InputsError("%s: not a .npy array" % path)
    return array


def _read_npz(path, specs):
    import numpy as np
    try:
        with np.load(str(path), allow_pickle=False) as npz:
            found = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputsError("%s: not a readable .npz file: %s (save it with numpy.savez, one "
                          "array per input)" % (path, exc)) from None
    if not found:
        raise InputsError("%s: holds no array" % path)
    keys = sorted(found)
    positional = [str(i) for i in range(len(keys))]
    if sorted(keys, key=lambda k: (len(k), k)) == positional:
        ordered = [found[k] for k in positional]
        if specs is not None and len(ordered) != len(specs):
            raise InputsError("%s: %d arrays (%s); the model takes %d inputs: %s" % (
                path, len(ordered), ", ".join(positional), len(specs),
                ", ".join(s.text() for s in specs)))
        return [_fit(a, specs[i] if specs else None, path, specs, key=positional[i])
                for i, a in enumerate(ordered)]
    if specs is None:
        raise InputsError("%s: arrays named %s; the controller knows input names only for "
                          ".tflite files and built-in models: name them 0, 1, ... in the order "
                          "the backend lists the model's inputs" % (path, ", ".join(keys)))
    out, used = [], set()
    for spec in specs:
        match = [k for k in keys if k in (spec.name, spec.alias)]
        if not match:
            raise InputsError("%s: no array for input %s (it has %s): name each array after its "
                              "input (%s) or by position 0, 1, ..." % (
                                  path, spec.text(), ", ".join(keys),
                                  ", ".join(s.alias or s.name or "?" for s in specs)))
        used.add(match[0])
        out.append(_fit(found[match[0]], spec, path, specs, key=match[0]))
    extra = [k for k in keys if k not in used]
    if extra:
        raise InputsError("%s: arrays %s name no model input (inputs: %s)"
                          % (path, ", ".join(extra), ", ".join(s.text() for s in specs)))
    return out


def _fit(array, spec, path, specs, key=None):
    """`array` as the input `spec` takes it (a missing leading batch 1 added), else InputsError."""
    import numpy as np
    where = "%s%s" % (path, "[%s]" % key if key is not None else "")
    if array.dtype.kind not in "biuf":
        raise InputsError("%s: dtype %s is not a numeric array" % (where, array.dtype))
    if specs is not None and len(specs) != 1 and key is None:
        raise InputsError("%s: one array, but the model takes %d inputs (%s): give one .npz per "
                          "sample with an array per input name" % (
                              path, len(specs), ", ".join(s.text() for s in specs)))
    if spec is None:
        return array
    want, given = spec.shape, list(array.shape)
    if array.ndim == len(want) - 1 and len(want) and want[0] in (1, None):
        array = array[None]
    if array.ndim != len(want) or any(w is not None and w != a for w, a in
                                      zip(want, array.shape)):
        raise InputsError("%s: shape %s does not fit the model's input %s (one sample per file: "
                          "that shape, or it without the leading batch 1)"
                          % (where, given, spec.text()))
    if np.dtype(array.dtype) != np.dtype(spec.dtype):
        raise InputsError("%s: dtype %s, but the model's input %s takes %s: save it as "
                          "array.astype(numpy.%s)" % (where, array.dtype.name, spec.text(),
                                                      spec.dtype, spec.dtype))
    return array


def check(folder, specs) -> None:
    """load_samples without keeping them (the suite loader's check), once per folder content
    and model input."""
    _checked(str(folder), _stat_key(folder), tuple(specs) if specs is not None else None)


@functools.lru_cache(maxsize=256)
def _checked(folder, _key, specs):
    load_samples(folder, list(specs) if specs is not None else None)
    return True


# ---------------------------------------------------------------- the blob

def pack(samples, names) -> bytes:
    """The blob's bytes: an uncompressed zip, fixed times and modes, members in a fixed order
    (the same samples always give the same sha256)."""
    import numpy as np
    manifest = {"format": BLOB_FORMAT, "version": BLOB_VERSION, "count": len(samples),
                "inputs": len(samples[0]), "names": list(names),
                "shapes": [list(a.shape) for a in samples[0]],
                "dtypes": [a.dtype.name for a in samples[0]]}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        _add(zf, MANIFEST, json.dumps(manifest, sort_keys=True).encode("utf-8"))
        for s, sample in enumerate(samples):
            for i, array in enumerate(sample):
                data = io.BytesIO()
                np.lib.format.write_array(data, np.ascontiguousarray(array), allow_pickle=False)
                _add(zf, member_name(s, i), data.getvalue())
    return buf.getvalue()


def _add(zf, name, data):
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    info.create_system = 3
    zf.writestr(info, data)


def write_blob(data: bytes, dest_dir) -> tuple:
    """(path, sha256) of dest_dir/<sha256>.npz holding `data` (written once, atomically)."""
    sha = hashlib.sha256(data).hexdigest()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / (sha + ".npz")
    if not path.is_file():
        tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
        tmp.write_bytes(data)
        os.replace(str(tmp), str(path))
    return path, sha


def prepare(folder, specs, cache_dir=None) -> InputsBlob:
    """The folder's samples for a model whose inputs are `specs`, packed into the blob cache
    (default $BENCHFLEET_CACHE/inputs).

    Raises:
        InputsError: as load_samples.
    """
    from orchestrator.cache import cache_root
    samples, names = load_samples(folder, specs)
    data = pack(samples, names)
    if len(data) > MAX_BYTES:
        _check_total(folder, len(data))
    path, sha = write_blob(data, cache_dir if cache_dir is not None else cache_root() / "inputs")
    return InputsBlob(path, sha, len(samples), Path(folder).name, len(data))


def prepare_plan(plan, suite, artifacts, say=None) -> dict:
    """The inputs blob of every runnable case that has inputs, once per (model, variant,
    folder): {(model name, variant, folder): InputsBlob, or the reason it cannot be made}.
    say(text): one progress line per blob made."""
    out = {}
    for dplan in plan.devices:
        for case in dplan.runnable:
            key = (case.model_name, case.variant, case.inputs)
            if case.inputs is None or key in out:
                continue
            artifact = artifacts.get((case.model_name, case.variant))
            try:
                specs = model_inputs(suite.model(case.model_name), case.variant, artifact)
                blob = prepare(case.inputs, specs)
            except InputsError as exc:
                out[key] = "inputs %s: %s" % (Path(case.inputs).name, exc)
                continue
            out[key] = blob
            if say is not None:
                shape = ", ".join(s.text() for s in specs) if specs else "as given"
                say("inputs %s for %s/%s: %d samples (%s), %.1f KiB, blob %s" % (
                    blob.source, case.model_name, case.variant, blob.count, shape,
                    blob.nbytes / 1024.0, blob.sha256[:12]))
    return out
