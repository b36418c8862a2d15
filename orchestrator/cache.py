"""The controller's cache folder: built models, the agent zipapp and device probes live under it."""

import os
from pathlib import Path


def cache_root() -> Path:
    """$BENCHFLEET_CACHE, else ~/.cache/benchfleet (models/, agent/, probes/ beneath it)."""
    env = os.environ.get("BENCHFLEET_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "benchfleet"
