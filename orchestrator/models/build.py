"""`benchfleet models build NAME|PATH --variants a,b`: build model variants and say what came out.

A model's missing variants are built in one go (one child Python), with a line as each starts and
ends; a variant that cannot be built prints its reason, the others still build, and the exit code
is then 1.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from orchestrator.models import zoo
from orchestrator.errors import ConfigError

DEFAULT_VARIANTS = ("tflite-fp32", "tflite-fp16", "tflite-int8", "onnx")


def parse_variants(text: str | None) -> list[str]:
    """'a,b' -> ['a', 'b'] (default DEFAULT_VARIANTS). Raises ConfigError naming unknown ones."""
    names = [v.strip() for v in text.split(",") if v.strip()] if text else list(DEFAULT_VARIANTS)
    unknown = [v for v in names if v not in zoo.VARIANTS]
    if unknown:
        raise ConfigError("--variants: unknown %s; variants: %s"
                          % (", ".join(unknown), ", ".join(zoo.VARIANTS)))
    return names


def _build_all(source: str, names: list, representative, stream):
    """(label, {variant: (artifact, seconds, cached)}, {variant: error}) for a built-in name or
    a SavedModel folder: one build for all variants, its progress printed as it goes."""
    seconds = {}

    def progress(event):
        print(zoo.progress_line(event), file=stream, flush=True)
        seconds[event["variant"]] = event["seconds"] or 0.0

    if source in zoo.BUILTINS:
        label = source
        built, errors = zoo.build_models(source, names, representative=representative,
                                         on_progress=progress)
    else:
        label = Path(source).expanduser().name
        built, errors = zoo.build_user_variants(Path(source).expanduser(), names,
                                                representative=representative,
                                                on_progress=progress)
    return label, {v: (a, seconds.get(v, 0.0), v not in seconds) for v, a in built.items()}, errors


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
    if source not in zoo.BUILTINS and not Path(source).expanduser().is_dir():
        raise ConfigError("%s: neither a built-in model (%s) nor a SavedModel folder"
                          % (source, ", ".join(zoo.list_builtins())))
    if representative is not None and not Path(representative).is_dir():
        raise ConfigError("--representative %s: not a folder" % representative)
    label, built, errors = _build_all(source, names, representative, stream)
    for variant in names:
        if variant in errors:
            print("%s: FAILED: %s" % (variant, errors[variant]), file=stream)
            continue
        art, seconds, cached = built[variant]
        path = _export(art, label, Path(out)) if out else Path(art.local_path)
        size = Path(art.local_path).stat().st_size
        print("%s: ok in %.1f s%s" % (variant, seconds, " (cached)" if cached else ""),
              file=stream)
        print("  path    %s\n  sha256  %s\n  size    %d bytes (%.2f MiB)"
              % (path, art.sha256, size, size / 1048576.0), file=stream)
    print("%s: %d of %d variants built" % (label, len(names) - len(errors), len(names)),
          file=stream)
    return 1 if errors else 0
