"""Device-side build cache (WORKDIR/cache/<backend>/): content keys, hashes and atomic publishing.

A converted model or built engine is published whole or not at all: it is built under a temp
name beside its final name and renamed into place, so a build killed halfway is never reused.
Stdlib only (Python 3.6+).
"""

import hashlib
import json
import os
import shutil
import tempfile
import time

from agent import fsutil

# Bump when what a build produces changes for the same inputs (a new conversion recipe):
# every old entry then misses instead of being served.
CACHE_FORMAT = 1
DEFAULT_WORKDIR = "~/.benchfleet"  # docs/PROTOCOL.md: the inventory default
MARKER = "build.json"  # written last inside a folder entry: its presence proves a complete build


def cache_root(workdir, backend):
    """WORKDIR/cache/<backend> (WORKDIR defaults to ~/.benchfleet when the worker set none)."""
    base = os.path.expanduser(workdir or DEFAULT_WORKDIR)
    return os.path.join(base, "cache", backend)


def key_of(parts):
    """sha256 hex of a JSON-able dict of everything a build depends on. Pure and order-free."""
    doc = dict(parts, cache_format=CACHE_FORMAT)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        block = f.read(chunk)
        while block:
            digest.update(block)
            block = f.read(chunk)
    return digest.hexdigest()


def tree_sha256(folder):
    """sha256 over a folder's relative file names and contents (a SavedModel with no known hash)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            digest.update(rel.encode("utf-8") + b"\0" + file_sha256(path).encode("ascii") + b"\n")
    return digest.hexdigest()


def _fsync_tree(folder):
    # The rename publishes the entry; its files must be on disk first, or a power cut could
    # leave a complete-looking entry with empty files.
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def is_complete(folder):
    return os.path.isfile(os.path.join(folder, MARKER))


def read_marker(folder):
    try:
        return fsutil.read_json(os.path.join(folder, MARKER))
    except (OSError, ValueError):
        return {}


def _set_aside(path):
    # A folder at the final name without a marker (an old or foreign leftover) is not a build:
    # move it out of the way before publishing over it.
    aside = tempfile.mkdtemp(prefix=".stale-", dir=os.path.dirname(path))
    os.rename(path, os.path.join(aside, "entry"))
    shutil.rmtree(aside, ignore_errors=True)


def publish_folder(root, key, build, facts=None, clock=time.monotonic):
    """The folder root/<key>, built on a miss. Returns (folder, hit, build_seconds).

    build(tmp_folder) fills an empty temp folder; it is timed, then the marker (facts plus the
    build time) is written, files are synced and the folder is renamed to root/<key>. On a hit
    build_seconds is 0.0. An exception from build() leaves nothing behind and propagates.
    """
    final = os.path.join(root, key)
    if is_complete(final):
        return final, True, 0.0
    if not os.path.isdir(root):
        os.makedirs(root)
    tmp = tempfile.mkdtemp(prefix="." + key[:16] + ".", suffix=".tmp", dir=root)
    try:
        t0 = clock()
        build(tmp)
        seconds = clock() - t0
        marker = dict(facts or {}, key=key, build_s=seconds, built_at=time.time())
        fsutil.atomic_write_json(os.path.join(tmp, MARKER), marker)
        _fsync_tree(tmp)
        if os.path.isdir(final):
            _set_aside(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):  # not a concurrent build that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, False, seconds


def publish_file(path, build, clock=time.monotonic):
    """The file at `path`, built on a miss. Returns (path, hit, build_seconds).

    build() returns the bytes; they are written atomically (temp file, fsync, rename).
    """
    if os.path.isfile(path):
        return path, True, 0.0
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    t0 = clock()
    data = build()
    seconds = clock() - t0
    fsutil.atomic_write_bytes(path, data)
    return path, False, seconds
