"""Model artifacts on the controller: content hashes and the SavedModel tar that travels to devices.

An artifact is named by the sha256 of the bytes uploaded, so the device can tell from a file name
alone that it already holds the content. A SavedModel folder travels as one uncompressed tar built
deterministically (same folder -> same bytes -> same hash), and the agent unpacks it with tarfile;
an OpenVINO IR (.xml + .bin) travels the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent import schema

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """One model variant ready to upload.

    local_path: the file uploaded (a .tflite file, or the tar of a SavedModel folder or an IR).
    sha256: hash of exactly that file; the device stores it as blobs/<sha256>.
    is_dir_tar: True when local_path is a tar (SavedModel, OpenVINO IR) the agent must unpack.
    folder: the unpacked SavedModel folder on the controller, when there is one (tests, local runs).
    """

    name: str
    variant: str
    format: str
    local_path: Path
    sha256: str
    is_dir_tar: bool
    folder: Path | None = None

    def __post_init__(self):
        if self.format not in schema.MODEL_FORMATS:
            raise ValueError("artifact format must be one of %s, got %r"
                             % (", ".join(schema.MODEL_FORMATS), self.format))

    def to_json(self) -> dict:
        return {"name": self.name, "variant": self.variant, "format": self.format,
                "local_path": str(self.local_path), "sha256": self.sha256,
                "is_dir_tar": self.is_dir_tar,
                "folder": str(self.folder) if self.folder is not None else None}

    @classmethod
    def from_json(cls, doc: dict, base: Path | None = None) -> "Artifact":
        """Rebuild from to_json(); relative paths are taken relative to `base`."""
        def where(p):
            if p is None:
                return None
            path = Path(p)
            return base / path if base is not None and not path.is_absolute() else path
        return cls(doc["name"], doc["variant"], doc["format"], where(doc["local_path"]),
                   doc["sha256"], bool(doc["is_dir_tar"]), where(doc.get("folder")))


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tree_entries(folder: Path):
    """(arcname, path, is_dir) for everything under folder, sorted by arcname.

    Sorting by the '/'-joined name makes the order independent of the file system; symlinks are
    followed so the tar holds plain files only (the agent never has to trust a link).
    """
    entries = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        for name in dirs:
            path = Path(root) / name
            arc = (rel_root / name).as_posix()
            if path.is_symlink():
                raise ValueError("%s: symlinked folders are not allowed in a SavedModel" % path)
            entries.append((arc, path, True))
        for name in files:
            entries.append(((rel_root / name).as_posix(), Path(root) / name, False))
    entries.sort(key=lambda e: e[0])
    return entries


def _tarinfo(arcname: str, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    # Everything that varies between machines or builds is pinned: times, owners, modes.
    info = tarfile.TarInfo(arcname + "/" if is_dir else arcname)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if is_dir else 0o644
    info.size = 0 if is_dir else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_deterministic_tar(folder, fileobj, entries=None) -> None:
    """Write the contents of `folder` (not the folder itself), or the given sorted (arcname, path,
    is_dir) entries, as an uncompressed tar to fileobj."""
    if entries is None:
        entries = _tree_entries(Path(folder))
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, path, is_dir in entries:
            if is_dir:
                tar.addfile(_tarinfo(arcname, True))
                continue
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                tar.addfile(_tarinfo(arcname, False, size), f)


def pack_savedmodel(folder, dest_dir) -> tuple[Path, str]:
    """Pack a SavedModel folder into dest_dir/<sha256>.tar, deterministically.

    Returns (tar_path, sha256). The same folder content always gives the same hash; the tar is
    written to a temp file and renamed, so a present <sha256>.tar is always complete.

    Raises:
        ValueError: folder is not a SavedModel folder (no saved_model.pb).
    """
    folder = Path(folder)
    if not (folder / "saved_model.pb").is_file():
        raise ValueError("%s: not a SavedModel folder (no saved_model.pb)" % folder)
    return _pack(_tree_entries(folder), dest_dir)


def pack_openvino_ir(xml_path, dest_dir) -> tuple[Path, str]:
    """Pack an OpenVINO IR (model .xml and the same-stem .bin beside it) into
    dest_dir/<sha256>.tar as model.xml and model.bin, deterministically: (tar_path, sha256).

    Raises:
        ValueError: xml_path is not an .xml file or its .bin is missing.
    """
    xml = Path(xml_path)
    weights = xml.with_suffix(".bin")
    if xml.suffix != ".xml" or not xml.is_file():
        raise ValueError("%s: not an OpenVINO IR .xml file" % xml)
    if not weights.is_file():
        raise ValueError("%s: an OpenVINO IR needs its weights beside it: %s not found"
                         % (xml, weights))
    # Fixed names inside: the same IR under another file name is the same blob on the device.
    return _pack([("model.bin", weights, False), ("model.xml", xml, False)], dest_dir)


def _pack(entries, dest_dir) -> tuple[Path, str]:
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pack-", suffix=".tar", dir=dest_dir)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = _HashingWriter(raw)
            write_deterministic_tar(None, writer, entries)
            raw.flush()
            os.fsync(raw.fileno())
        digest = writer.digest.hexdigest()
        tar_path = dest_dir / (digest + ".tar")
        os.replace(tmp, tar_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return tar_path, digest


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through (saves a second read of a large tar)."""

    def __init__(self, raw):
        io.RawIOBase.__init__(self)
        self.raw = raw
        self.digest = hashlib.sha256()
        self.position = 0

    def writable(self):
        return True

    def tell(self):
        # tarfile asks for the start offset; the stream only ever grows from 0.
        return self.position

    def write(self, data):
        self.digest.update(data)
        self.raw.write(data)
        self.position += len(data)
        return len(data)
