"""What decides whether two results' numbers can be compared, and the raw latencies packed.

Two results of the same device and case are comparable only when every fact below is equal: a
p50 that moved because the runtime was upgraded, the model rebuilt or the Jetson left MAXN is a
different measurement, not a regression. `compare` names the facts that changed
("runtime_version 2.14.0 -> 2.15.0") instead of calling such a pair faster or slower; the history
stores the facts beside each result so that a baseline of earlier runs is judged the same way.

Every fact is a short string (or None when the result does not say): they come from the device
and are capped, and equal strings mean equal facts.
"""

from __future__ import annotations

import json
import math
import zlib

# The facts, in the order `compare` names them. Each is (name, where in the result).
FACT_NAMES = (
    "model_sha256", "backend", "runtime_version", "delegate", "provider", "threads", "affinity",
    "precision", "mode", "timed", "end_to_end", "target_fps", "background", "inputs",
    "agent_version", "machine", "cpu_count", "governor", "power_mode", "jetson_clocks",
    "pi_model", "emulated",
)
MAX_FACT = 120   # characters kept of one fact


def _text(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return repr(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)[:MAX_FACT]


def _get(block, *path):
    for key in path:
        if not isinstance(block, dict):
            return None
        block = block.get(key)
    return block


def comparable_facts(result) -> dict:
    """{fact: str or None} of a records.Result (see FACT_NAMES)."""
    runtime, env, settings = result.runtime or {}, result.environment or {}, result.settings or {}
    readiness = env.get("readiness") if isinstance(env.get("readiness"), dict) else {}
    mode = settings.get("mode") or "back_to_back"
    fed = env.get("inputs") if isinstance(env.get("inputs"), dict) else {}
    inputs = fed.get("sha256") if fed.get("source") == "folder" else (
        "random:%s" % fed.get("seed") if fed else None)
    background = runtime.get("background")
    if isinstance(background, dict):
        background = {k: background.get(k) for k in ("kind", "percent", "cores", "command",
                                                      "inventory")
                      if background.get(k) is not None}
    applied = _get(env, "affinity", "applied")
    facts = {
        "model_sha256": (result.model or {}).get("sha256") or (result.model or {}).get(
            "synthetic_ms"),
        "backend": runtime.get("backend"),
        "runtime_version": runtime.get("version"),
        "delegate": runtime.get("delegate"),
        "provider": runtime.get("provider"),
        "threads": runtime.get("threads"),
        "affinity": applied if applied is not None else runtime.get("affinity"),
        "precision": runtime.get("precision"),
        "mode": mode,
        "timed": result.timing.timed if result.timing is not None else None,
        "end_to_end": settings.get("end_to_end"),
        "target_fps": settings.get("target_fps") if mode == "paced" else None,
        "background": background or None,
        "inputs": inputs,
        "agent_version": result.agent_version,
        "machine": (result.device or {}).get("machine"),
        "cpu_count": (result.device or {}).get("cpu_count"),
        "governor": readiness.get("governor"),
        "power_mode": _get(readiness, "jetson", "nvpmodel", "name") or
        _get(readiness, "jetson", "nvpmodel", "mode_id"),
        "jetson_clocks": _get(readiness, "jetson", "jetson_clocks"),
        "pi_model": _get(readiness, "raspberry_pi", "model"),
        "emulated": True if (result.device or {}).get("emulated") is True else None,
    }
    return {name: _text(facts[name]) for name in FACT_NAMES}


def changed_facts(a: dict, b: dict) -> list[str]:
    """'runtime_version 2.14.0 -> 2.15.0' for every fact that differs between two fact dicts
    (missing keys count as None: a fact added later is not a change until both say it)."""
    out = []
    for name in FACT_NAMES:
        va, vb = a.get(name), b.get(name)
        if va != vb:
            out.append("%s %s -> %s" % (name, "-" if va is None else va,
                                        "-" if vb is None else vb))
    return out


# A packed blob is one format byte, then zlib data:
#   b"N": whole nanoseconds as little-endian int64, byte-shuffled (the eight byte planes one after
#         the other: the high planes of latencies are zeros, which zlib all but removes); used
#         when every latency is a whole number of nanoseconds, as the agent's clock gives them;
#   b"D": little-endian float64 (any other values, exactly).
MAX_PACKED_SAMPLES = 10_000_000   # what unpack accepts (80 MB unpacked), a corrupt blob aside


def pack_latencies(values) -> bytes:
    """Latencies (ms) as compact bytes for the history; unpack_latencies gives them back exactly."""
    import numpy as np
    ms = np.asarray(list(values), dtype=np.float64)
    ns = np.round(ms * 1e6)
    if len(ms) and np.all(np.isfinite(ms)) and np.all(np.abs(ns) < 2.0 ** 53) and \
            np.array_equal(ns / 1e6, ms):
        planes = ns.astype("<i8").view(np.uint8).reshape(-1, 8).T
        return b"N" + zlib.compress(planes.tobytes(), 6)
    return b"D" + zlib.compress(ms.astype("<f8").tobytes(), 6)


def unpack_latencies(blob: bytes):
    """pack_latencies' bytes back as a numpy float64 array. Raises ValueError on a bad blob."""
    import numpy as np
    kind, data = bytes(blob[:1]), blob[1:]
    if kind not in (b"N", b"D"):
        raise ValueError("latency blob: unknown format %r" % kind)
    try:
        z = zlib.decompressobj()
        raw = z.decompress(data, MAX_PACKED_SAMPLES * 8 + 1)
    except zlib.error as exc:
        raise ValueError("latency blob: %s" % exc) from None
    if len(raw) % 8 or len(raw) > MAX_PACKED_SAMPLES * 8:
        raise ValueError("latency blob: %d bytes is not a whole number of 8-byte samples"
                         % len(raw))
    if kind == b"D":
        return np.frombuffer(raw, dtype="<f8").astype(np.float64)
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(8, -1).T
    ns = np.ascontiguousarray(planes).view("<i8").reshape(-1)
    return ns.astype(np.float64) / 1e6
