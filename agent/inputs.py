"""Representative inputs on the device: the case's model.inputs blob read into samples.

A suite's `inputs:` folder is converted on the controller (orchestrator/inputs.py) into one blob,
uploaded like a model (blobs/<sha256>). The blob is an uncompressed zip: `inputs.json` (what it
holds) and one .npy member per sample and input, `<sample:05d>_<input>.npy`, samples in the
folder's file-name order and inputs in the model's input order. Without model.inputs the harness
feeds seeded random inputs as always (describe() says which).

Stdlib + numpy (imported only when a case has inputs); runs on Python 3.6.
"""

import hashlib
import json
import os
import zipfile

from agent import fsutil, schema
from agent.backends.base import BadModel

BLOB_FORMAT = "benchfleet.inputs"
BLOB_VERSION = 1
MANIFEST = "inputs.json"


def member_name(sample, index):
    """The blob member of one sample's input (both 0-based)."""
    return "%05d_%d.npy" % (sample, index)


def blob_path(job_path, case):
    """Local path of the case's inputs blob (relative paths from the workdir), or None."""
    entry = (case.get("model") or {}).get("inputs")
    if not entry:
        return None
    rel = entry["path"]
    return rel if os.path.isabs(rel) else os.path.join(fsutil.workdir_for_job(job_path), rel)


def load(job_path, case):
    """The case's representative inputs: None without model.inputs (seeded random inputs, as
    before), else a list of samples, each a list of numpy arrays in the model's input order.

    Checks the blob against the job (its sha256, its sample count); the backend checks shapes
    and dtypes against its model (Backend.inputs_from).
    Raises:
        BadModel: the blob is missing, does not match its sha256, or is not an inputs blob.
        BackendUnavailable: numpy is not installed (the case is skipped with the install hint).
    """
    path = blob_path(job_path, case)
    if path is None:
        return None
    entry = case["model"]["inputs"]
    what = "inputs %s (%s)" % (entry.get("source"), path)
    if not os.path.isfile(path):
        raise BadModel("%s: blob not found" % what)
    size = os.path.getsize(path)
    if size > schema.MAX_INPUT_BYTES + (1 << 20):
        raise BadModel("%s: %d bytes, past the %d an inputs blob may hold"
                       % (what, size, schema.MAX_INPUT_BYTES))
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise BadModel("%s: content sha256 %s, the job names %s (a damaged upload: delete the "
                       "file on the device and run again)" % (what, digest, entry["sha256"]))
    samples = read_blob(path, what)
    if len(samples) != entry["count"]:
        raise BadModel("%s holds %d samples, the job says %d" % (what, len(samples),
                                                                 entry["count"]))
    return samples


def read_blob(path, what=None):
    """The samples of an inputs blob (list of lists of numpy arrays).

    Raises:
        BadModel: not an inputs blob, or a member that is not a plain .npy array.
    """
    from agent.backends.base import require_module
    from agent.backends import catalog
    np = require_module("numpy", "numpy not installed (the case's representative inputs are "
                        "numpy arrays)", catalog.MODULE["numpy"].hint)
    what = what or path
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                manifest = json.loads(zf.read(MANIFEST).decode("utf-8"))
            except KeyError:
                raise BadModel("%s: not an inputs blob (no %s)" % (what, MANIFEST))
            count, width = _layout(manifest, what)
            if sum(i.file_size for i in zf.infolist()) > schema.MAX_INPUT_BYTES + (1 << 20):
                raise BadModel("%s: its arrays unpack past %d bytes" % (what,
                                                                        schema.MAX_INPUT_BYTES))
            samples = []
            for s in range(count):
                sample = []
                for i in range(width):
                    name = member_name(s, i)
                    try:
                        with zf.open(name) as f:
                            sample.append(np.lib.format.read_array(f, allow_pickle=False))
                    except KeyError:
                        raise BadModel("%s: member %s is missing" % (what, name))
                    except ValueError as exc:
                        raise BadModel("%s: member %s is not a plain .npy array: %s"
                                       % (what, name, exc))
                samples.append(sample)
            return samples
    except (zipfile.BadZipfile, OSError, IOError, ValueError) as exc:
        raise BadModel("%s: cannot read the inputs blob: %s" % (what, exc))


def _layout(manifest, what):
    ok = isinstance(manifest, dict) and manifest.get("format") == BLOB_FORMAT
    count, width = (manifest.get("count"), manifest.get("inputs")) if ok else (None, None)
    if not ok or manifest.get("version") != BLOB_VERSION or not _positive(count) or \
            not _positive(width) or count > schema.MAX_INPUT_SAMPLES:
        raise BadModel("%s: not a version-%d %s blob of 1 to %d samples (its %s: %r)"
                       % (what, BLOB_VERSION, BLOB_FORMAT, schema.MAX_INPUT_SAMPLES, MANIFEST,
                          manifest if isinstance(manifest, dict) else type(manifest).__name__))
    return count, width


def _positive(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe(case):
    """What the timed runs were fed, for the result's environment.inputs:
    {"source": "random", "seed": input_seed, "count": input_pool} or
    {"source": "folder", "name": the suite folder's name, "sha256": the blob's, "count": N}."""
    entry = (case.get("model") or {}).get("inputs")
    if entry:
        return {"source": "folder", "name": entry.get("source"), "sha256": entry.get("sha256"),
                "count": entry.get("count")}
    settings = case.get("settings") or {}
    seed = settings.get("input_seed", schema.DEFAULT_SETTINGS["input_seed"])
    pool = settings.get("input_pool", schema.DEFAULT_SETTINGS["input_pool"])
    return {"source": "random", "seed": int(seed), "count": max(1, int(pool))}
