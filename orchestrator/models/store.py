"""The model cache on disk: one folder per content key, complete once its artifact.json is there
and published by an atomic rename; int8-edgetpu is compiled into it here, on the controller.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.errors import ModelBuildError
from orchestrator.models import variants
from orchestrator.models.artifacts import Artifact, sha256_file


def load(folder: Path) -> Artifact | None:
    """The artifact cached in `folder`, or None when it is not (completely) there."""
    meta = folder / "artifact.json"
    if not meta.is_file():
        return None
    return Artifact.from_json(json.loads(meta.read_text()), base=folder)


@contextlib.contextmanager
def build_lock(root: Path, name: str):
    """Held while one process looks up and builds a model's variants: two runs (or test
    processes) needing the same model at once build it once; the second finds it cached."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / (".lock-" + name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def new_work(root: Path) -> Path:
    """A fresh build folder beside the cache entries, so publishing it is a rename."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".build-", dir=root))


def publish(work: Path, final: Path) -> Artifact:
    """Move a finished build folder to its cache place; the artifact now served from there.

    Raises:
        OSError: the build left no artifact.json, or the folder could not be moved.
    """
    if not (work / "artifact.json").is_file():
        raise OSError("the build left no artifact.json in %s" % work)
    try:
        os.rename(work, final)
    except OSError:
        if load(final) is None:  # not a concurrent builder that won the race
            raise
    return load(final)


def cached_edgetpu(int8: Artifact | None, root: Path, key_of) -> Artifact | None:
    """int8-edgetpu compiled from `int8` earlier, if it is cached (and a compiler is here)."""
    compiler = variants.which_edgetpu_compiler()
    if int8 is None or compiler is None:
        return None
    return load(root / key_of(int8.sha256, variants.edgetpu_compiler_version(compiler)))


def build_edgetpu(int8: Artifact, root: Path, key_of) -> Artifact:
    """int8-edgetpu: edgetpu_compiler run here on the int8 file, cached under key_of(int8
    sha256, compiler version); without the compiler, the error says how to run it elsewhere.

    Raises:
        ModelBuildError: no edgetpu_compiler, or it failed.
    """
    compiler = variants.which_edgetpu_compiler()
    if compiler is None:
        raise ModelBuildError(variants.EDGETPU_MISSING % {
            "file": int8.local_path, "stem": Path(int8.local_path).stem})
    final = root / key_of(int8.sha256, variants.edgetpu_compiler_version(compiler))
    cached = load(final)
    if cached is not None:
        return cached
    work = new_work(root)
    try:
        out = variants.compile_edgetpu(compiler, Path(int8.local_path), work)
        art = Artifact(int8.name, "int8-edgetpu", "tflite", Path(out.name), sha256_file(out), False)
        (work / "artifact.json").write_text(json.dumps(art.to_json(), indent=1))
        return publish(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
