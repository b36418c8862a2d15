"""`benchfleet models build NAME|PATH --variants a,b`: build model variants and say what came out.

Each variant is built (or served from the cache) on its own: one that cannot be built prints
its reason and the others still build; the exit code is then 1.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from orchestrator.models import zoo
from orchestrator.errors import ConfigError, ModelBuildError

DEFAULT_VARIANTS = ("tflite-fp32", "tflite-fp16", "tflite-int8", "onnx")


def parse_variants(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'] (default DEFAULT_VARIANTS). Raises ConfigError naming unknown ones."""
    names = [v.strip() for v in text.split(",") if v.strip()] if text else list(DEFAULT_VARIANTS)
    unknown = [v for v in names if v not in zoo.VARIANTS]
    if unknown:
        raise ConfigError("--variants: unknown %s; variants: %s"
                          % (", ".join(unknown), ", ".join(zoo.VARIANTS)))
    return names


def _builder(source: str):
    """(label, build(variant, representative)) for a built-in name or a SavedModel folder."""
    if source in zoo.BUILTINS:
        return source, lambda v, rep: zoo.build_model(source, v, representative=rep)
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder.name, lambda v, rep: zoo.build_user_variant(folder, v,
                                                                       representative=rep)
    raise ConfigError("%s: neither a built-in model (%s) nor a SavedModel folder"
                      % (source, ", ".join(zoo.list_builtins())))


def _export(art, label: str, out: Path) -> Path:
    """Copy an artifact to OUT as <label>-<variant>.<ext> (a SavedModel as a folder)."""
    out.mkdir(parents=True, exist_ok=True)
    if art.format == "savedmodel" and art.folder is not None and Path(art.folder).is_dir():
        dest = out / ("%s-%s" % (label, art.variant))
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(art.folder, dest)
        return dest
    dest = out / ("%s-%s%s" % (label, art.variant, Path(art.local_path).suffix))
    shutil.copyfile(art.local_path, dest)
    return dest


def build_variants(source: str, variants_text: str | None, representative=None, out=None,
                   stream=None) -> int:
    """Build every variant, print path, sha256, size and build time of each; 0 or 1 (a failure).

    Raises:
        ConfigError: unknown variant, unknown source, or a representative folder that is missing.
    """
    stream = stream or sys.stdout
    names = parse_variants(variants_text)
    label, build = _builder(source)
    if representative is not None and not Path(representative).is_dir():
        raise ConfigError("--representative %s: not a folder" % representative)
    failed = 0
    for variant in names:
        t0 = time.monotonic()
        try:
            art = build(variant, representative)
        except ModelBuildError as exc:
            failed += 1
            print("%s: FAILED: %s" % (variant, exc), file=stream)
            continue
        seconds = time.monotonic() - t0
        path = _export(art, label, Path(out)) if out else Path(art.local_path)
        size = Path(art.local_path).stat().st_size
        print("%s: ok in %.1f s%s" % (variant, seconds, " (cached)" if seconds < 1.0 else ""),
              file=stream)
        print("  path    %s\n  sha256  %s\n  size    %d bytes (%.2f MiB)"
              % (path, art.sha256, size, size / 1048576.0), file=stream)
    print("%s: %d of %d variants built" % (label, len(names) - failed, len(names)), file=stream)
    return 1 if failed else 0
