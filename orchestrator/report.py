"""The normalized results table (results.csv) and the comparison table (console, comparison.md).

One flat row per (run, device, case), made from a typed records.Result; the comparison pivots
the rows: rows = case (model x runtime x settings), columns = devices, cells = p50 / p99 / first
inference in ms.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from pathlib import Path
from typing import Iterable

from agent import schema
from agent.fsutil import atomic_write_text
from orchestrator import escape

PERCENTILE_COLUMNS = [schema.percentile_key(p) + "_ms" for p in schema.PERCENTILES]
CONSERVATIVE_COLUMNS = [key + "_cons_ms" for key in schema.CONSERVATIVE_FIELDS]
COLUMNS = [
    "run_id", "device", "case_id", "label", "model", "variant", "model_sha256", "backend",
    "runtime_version", "delegate", "provider", "threads", "affinity", "precision", "status",
    "substatus", "reason", "validity", "validity_reasons", "p50_ci_low_ms", "p50_ci_high_ms",
    "p50_ci_rel", "drift", "load_s", "convert_s", "first_ms", "warmup_runs", "runs", "measure_s",
    "truncated", "timed", "stage_ms", "mean_ms", "std_ms", "cv", "min_ms",
] + PERCENTILE_COLUMNS + ["max_ms"] + CONSERVATIVE_COLUMNS + [
    "throughput_ips", "ops_total", "ops_delegated", "rss_after_load_kb", "rss_after_run_kb",
    "cooldown_waited_s", "agent_version", "started_at", "finished_at",
] + [
    # Result layout 2 (agent/schema.py): the mode, then telemetry.summary, telemetry.energy,
    # timing.paced and timing.sustained; empty where a result has no such block.
    "mode", "temp_start_c", "temp_end_c", "temp_min_c", "temp_max_c", "freq_min_mhz",
    "power_mean_w", "energy_j", "energy_per_inference_mj", "inferences_per_j", "idle_power_w",
    "energy_method", "paced_target_fps", "paced_miss_rate", "paced_dropped", "paced_achieved_fps",
    "paced_p50_from_schedule_ms", "paced_p99_from_schedule_ms", "sustained_drift",
    "sustained_throttle_onset_s",
] + [
    # Deployment conditions: the load beside the case ("cpu 50%x2", "command: ..."), and the
    # top operators of an op_profile ("CONV_2D 41.2%; ...").
    "background", "op_profile_top", "inputs",
] + [
    # true for a device the inventory marks `emulated: true` (its numbers are not a real device's)
    "emulated",
]
TELEMETRY_COLUMNS = ("temp_start_c", "temp_end_c", "temp_min_c", "temp_max_c", "freq_min_mhz",
                     "power_mean_w")
# At most this many windows of a sustained case in comparison.md (evenly picked, first and last
# always among them); the raw result has every window.
MAX_WINDOWS_SHOWN = 60
# Digits kept in results.csv: latencies come from a nanosecond clock, so milliseconds keep 6
# decimals and seconds 9; ratios and rates keep 6 significant digits. More is float noise.
MS_DECIMALS, S_DECIMALS, SIGNIFICANT = 6, 9, 6
LABEL_WIDTH = 48   # the console table folds longer labels onto more lines


def flat_row(result) -> dict:
    """One records.Result -> one flat row with every COLUMNS key (None where absent)."""
    timing = result.timing
    summary = timing.summary.model_dump() if timing else {}
    cons = timing.conservative.model_dump() if timing else {}
    runtime, model, extra = result.runtime, result.model, result.delegation
    validity = result.validity
    row = {
        "run_id": result.run_id, "device": result.device_name, "case_id": result.case_id,
        "label": result.label, "model": model.get("name"), "variant": model.get("variant"),
        "model_sha256": model.get("sha256"), "backend": runtime.get("backend"),
        "runtime_version": runtime.get("version"), "delegate": runtime.get("delegate"),
        "provider": runtime.get("provider"), "threads": runtime.get("threads"),
        "affinity": _cores(runtime.get("affinity")), "precision": runtime.get("precision"),
        "status": result.status, "substatus": result.substatus, "reason": result.reason,
        "validity": validity.status if validity else None,
        "validity_reasons": "; ".join(validity.reasons) or None if validity else None,
        "p50_ci_low_ms": validity.p50_ci_ms[0] if validity and validity.p50_ci_ms else None,
        "p50_ci_high_ms": validity.p50_ci_ms[1] if validity and validity.p50_ci_ms else None,
        "p50_ci_rel": validity.p50_ci_rel if validity else None,
        "drift": validity.drift if validity else None,
        "load_s": timing.load_s if timing else None,
        "convert_s": timing.convert_s if timing else None,
        "first_ms": timing.first_ms if timing else None,
        "warmup_runs": timing.warmup_runs if timing else None,
        "runs": timing.runs if timing else None,
        "measure_s": timing.measure_s if timing else None,
        "truncated": timing.truncated if timing else None,
        "timed": timing.timed if timing else None,
        "stage_ms": timing.stage_ms if timing else None,
        "mean_ms": summary.get("mean"), "std_ms": summary.get("std"), "cv": summary.get("cv"),
        "min_ms": summary.get("min"), "max_ms": summary.get("max"),
        "throughput_ips": summary.get("throughput_ips"),
        "ops_total": extra.get("ops_total"), "ops_delegated": extra.get("ops_delegated"),
        "rss_after_load_kb": result.memory.get("rss_after_load_kb"),
        "rss_after_run_kb": result.memory.get("rss_after_run_kb"),
        "cooldown_waited_s": result.cooldown.get("waited_s"),
        "agent_version": result.agent_version, "started_at": result.started_at,
        "finished_at": result.finished_at,
    }
    for p in schema.PERCENTILES:
        key = schema.percentile_key(p)
        # A tail percentile too few samples establish is empty, never a number that looks
        # trustworthy (docs/METHOD.md step 6); the p50 stands on any sample.
        established = key not in cons or cons.get(key) is not None
        row[key + "_ms"] = summary.get(key) if established else None
    for key in schema.CONSERVATIVE_FIELDS:
        row[key + "_cons_ms"] = cons.get(key)
    row.update(_layout2_columns(result))
    row["background"] = background_text(runtime.get("background"))
    row["op_profile_top"] = op_profile_top(result.environment.get("op_profile"))
    fed = result.environment.get("inputs")
    row["inputs"] = str(fed.get("name"))[:200] if isinstance(fed, dict) and \
        fed.get("source") == "folder" else None
    row["emulated"] = True if (result.device or {}).get("emulated") is True else None
    return Row(row, result)


def background_text(background) -> str | None:
    """runtime.background as a cell: 'cpu 50%x2', 'command: gst-launch ...'; None when idle."""
    if not isinstance(background, dict):
        return None
    if background.get("kind") == "cpu":
        return "cpu %s%%x%s" % (_plain(background.get("percent")), _plain(background.get("cores")))
    if background.get("kind") == "command":
        return "command: %s" % str(background.get("command"))[:200]
    return None


def _plain(value) -> str:
    return schema.number_text(value) if isinstance(value, (int, float)) and \
        not isinstance(value, bool) and math.isfinite(value) else "?"


def op_profile_top(record, count=3) -> str | None:
    """The top operators of environment.op_profile as one cell: 'CONV_2D 41.2%; ADD 9.8%'."""
    if not isinstance(record, dict) or not isinstance(record.get("top"), list):
        return None
    parts = []
    for op in record["top"][:count]:
        if not isinstance(op, dict):
            continue
        name = str(op.get("type") or op.get("name") or "?")[:64]
        share = op.get("percent")
        avg = op.get("avg_ms")
        if isinstance(share, (int, float)) and not isinstance(share, bool) and math.isfinite(share):
            parts.append("%s %.1f%%" % (name, share))
        elif isinstance(avg, (int, float)) and not isinstance(avg, bool) and math.isfinite(avg):
            parts.append("%s %.3g ms" % (name, avg))
        else:
            parts.append(name)
    return "; ".join(parts) or None


class Row(dict):
    """A flat row (a plain dict to results.csv and --json) that remembers the records.Result it
    was made from: comparison.md's per-window tables read it (row.result; None for a copy)."""

    result = None

    def __init__(self, values=(), result=None):
        dict.__init__(self, values)
        self.result = result


def _number(block, key):
    """block[key] when it is a finite number (device text, checked again here), else None."""
    value = block.get(key) if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        return None
    return value


def _text(block, key):
    value = block.get(key) if isinstance(block, dict) else None
    return value if isinstance(value, str) else None


def _block(doc, key) -> dict:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def _layout2_columns(result) -> dict:
    """The mode, telemetry, energy, paced and sustained columns (None where absent)."""
    telemetry = result.telemetry if isinstance(result.telemetry, dict) else {}
    summary, energy = _block(telemetry, "summary"), _block(telemetry, "energy")
    timing = result.timing
    paced = timing.paced if timing and isinstance(timing.paced, dict) else {}
    sustained = timing.sustained if timing and isinstance(timing.sustained, dict) else {}
    mode = result.settings.get("mode")
    row = {"mode": mode if isinstance(mode, str) else schema.DEFAULT_SETTINGS["mode"]}
    row.update((key, _number(summary, key)) for key in TELEMETRY_COLUMNS)
    row.update(energy_j=_number(energy, "energy_j"),
               energy_per_inference_mj=_number(energy, "per_inference_mj"),
               inferences_per_j=_number(energy, "inferences_per_j"),
               idle_power_w=_number(energy, "idle_power_w"),
               energy_method=_text(energy, "method"))
    row.update(paced_target_fps=_number(paced, "target_fps"),
               paced_miss_rate=_number(paced, "miss_rate"),
               paced_dropped=_number(paced, "dropped"),
               paced_achieved_fps=_number(paced, "achieved_fps"),
               paced_p50_from_schedule_ms=_number(_block(paced, "from_schedule"), "p50"),
               paced_p99_from_schedule_ms=_number(_block(paced, "from_schedule"), "p99"))
    row.update(sustained_drift=_number(sustained, "drift"),
               sustained_throttle_onset_s=_number(sustained, "throttle_onset_s"))
    return row


def _cores(affinity) -> str | None:
    if not affinity:
        return None
    return ",".join(str(c) for c in affinity)


def csv_value(column: str, value):
    """A value as written to results.csv: rounded to what the clock resolves, '' for None; text
    (any column may hold a device's string) made inert for spreadsheets (escape.csv_cell)."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if not isinstance(value, float):
        return escape.csv_cell(value if isinstance(value, str) else str(value))
    if column.endswith("_ms"):
        return round(value, MS_DECIMALS)
    if column.endswith("_s"):
        return round(value, S_DECIMALS)
    return float("%.*g" % (SIGNIFICANT, value))


def write_csv(rows: Iterable[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(k, row.get(k)) for k in COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _ms(value) -> str:
    if value is None:
        return "n/e"
    if value >= 100:
        return "%.0f" % value
    if value >= 10:
        return "%.1f" % value
    return "%.2f" % value


def cell(row: dict) -> str:
    """The comparison cell: 'p50 / p99 / first' in ms, or the outcome when not measured.

    p99 is the conservative (99%-confidence upper bound) value; 'n/e' when too few samples
    establish it (docs/METHOD.md: never a number that only looks trustworthy).
    """
    status = row.get("status")
    if status == "skipped":
        return "skipped"
    if status == "failed":
        return "FAILED (%s)" % (row.get("substatus") or "error")
    text = "%s / %s / %s" % (_ms(row.get("p50_ms")), _ms(row.get("p99_cons_ms")),
                             _ms(row.get("first_ms")))
    if row.get("validity") == "INVALID":
        text += " *"
    return text


def comparison(rows: list[dict], devices: list[str]) -> tuple[list[str], list[list[str]]]:
    """Pivot flat rows into (header, body): one body row per case, one column per device."""
    order: list[str] = []
    labels: dict[str, str] = {}
    cells: dict[tuple[str, str], str] = {}
    for row in rows:
        cid = row["case_id"]
        if cid not in labels:
            order.append(cid)
            labels[cid] = row.get("label") or cid
        cells[(cid, row["device"])] = cell(row)
    # An emulated device's column says so in its header: never read beside a real device's.
    emulated = {row["device"] for row in rows if row.get("emulated")}
    header = ["case"] + [d + " (emulated)" if d in emulated else d for d in devices]
    body = [[labels[cid]] + [cells.get((cid, d), "-") for d in devices] for cid in order]
    return header, body


def fold(text: str, width: int = LABEL_WIDTH) -> list[str]:
    """A label as lines of at most `width` (broken at spaces where it can)."""
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def render_text(header: list[str], body: list[list[str]], label_width: int = LABEL_WIDTH) -> str:
    """The console table; long case labels fold onto continuation lines instead of widening
    every line of the table. Every cell is plain text (escape.terminal)."""
    header = [escape.terminal(c, limit=None) for c in header]
    body = [[escape.terminal(c, limit=None) for c in r] for r in body]
    folded = [(fold(r[0], label_width), r[1:]) for r in body]
    widths = [max([len(header[0])] + [len(x) for lines, _ in folded for x in lines])]
    widths += [max(len(r[i]) for r in [header] + body) for i in range(1, len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    for lines, cells in folded:
        out.append(line([lines[0]] + cells))
        out.extend(line(["  " + extra]) for extra in lines[1:])
    return "\n".join(out)


def render_markdown(header: list[str], body: list[list[str]], rows: list[dict], run_id: str) -> str:
    out = ["# benchfleet run %s" % run_id, "",
           "Cells: p50 / p99 / first inference, in ms. p99 is the 99%-confidence upper bound;",
           "n/e = not established (too few samples). * = INVALID (reasons below).", ""]
    md = escape.markdown
    out.append("| " + " | ".join(md(c) for c in header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(md(c) for c in r) + " |" for r in body)
    emulated = sorted({r["device"] for r in rows if r.get("emulated")})
    if emulated:
        out += ["", "Emulated device(s): %s. Their numbers come from an emulator (qemu user mode "
                "runs some 2000x slower than the board): they prove the software stack works, "
                "never how fast the board is, and are not comparable with a real device's."
                % ", ".join(md(d) for d in emulated)]
    # Not ok, INVALID, or ok with a note of the controller's (a kept file it refused).
    notes = [r for r in rows if r.get("validity") == "INVALID" or r.get("status") != "ok"
             or r.get("reason")]
    if notes:
        out += ["", "## Notes", ""]
        for r in notes:
            if r.get("status") != "ok":
                what, why = r.get("status"), r.get("reason")
            elif r.get("validity") == "INVALID":
                what = "INVALID"
                why = "; ".join(x for x in (r.get("validity_reasons"), r.get("reason")) if x)
            else:
                what, why = "ok", r.get("reason")
            out.append("- %s, %s: %s: %s" % (md(r["device"]), md(r.get("label") or r["case_id"]),
                                             md(what), md(why)))
    figures = [r for r in rows if r.get("status") == "ok"]
    if figures:
        out += ["", "## Figures", "",
                "What each verdict rests on: the p50's 95% interval (+-, of the p50), the drift "
                "between the halves of the window, and the CV (a figure, not a verdict unless the "
                "suite sets cv_max).", ""]
        for r in figures:
            out.append("- %s, %s: %s" % (md(r["device"]), md(r.get("label") or r["case_id"]),
                                         md(figure_text(r))))
    out += energy_section(figures) + paced_section(figures) + sustained_section(figures)
    out += background_section(figures) + op_profile_section(figures)
    return "\n".join(out) + "\n"


def background_section(rows: list[dict]) -> list[str]:
    """'## Background load': each loaded case beside the same case on an idle device (same
    device, model, inputs, runtime and settings, without the load), p50 and p99 with and
    without, and the ratio of the p50s. The p99 is what decides real-time feasibility under
    load."""
    loaded = [r for r in rows if r.get("status") == "ok" and r.get("background")]
    if not loaded:
        return []
    idle = {}
    for r in rows:
        if r.get("status") == "ok" and not r.get("background"):
            idle.setdefault(_twin_key(r), r)
    body = []
    for r in loaded:
        base = idle.get(_twin_key(r))
        p50, p50_idle = r.get("p50_ms"), base.get("p50_ms") if base else None
        ratio = "%.2fx" % (p50 / p50_idle) if p50 and p50_idle else "-"
        body.append([r.get("label") or r["case_id"], r["device"], r["background"],
                     "%s / %s" % (_ms(p50_idle), _ms(base.get("p99_ms"))) if base
                     else "no idle run of this case",
                     "%s / %s" % (_ms(p50), _ms(r.get("p99_ms"))), ratio])
    header = ["case", "device", "load", "idle p50 / p99, ms", "loaded p50 / p99, ms",
              "p50 loaded / idle"]
    return ["", "## Background load", "",
            "The same case with and without load beside it; the p99 under load is what decides "
            "whether a real-time deadline holds (n/e: too few samples for a p99).", ""] + \
        _table(header, body)


def _twin_key(row) -> str:
    """What makes two rows the same case but for the load beside it (the job's identity: the
    model and its inputs, the runtime as asked, the settings)."""
    result = getattr(row, "result", None)
    if result is None:
        return json.dumps([row.get("device"), row.get("case_id")])
    model = {k: result.model.get(k) for k in ("name", "variant", "sha256", "inputs")}
    runtime = {k: result.runtime.get(k) for k in ("backend", "threads", "affinity", "precision",
                                                  "options")}
    return json.dumps([row.get("device"), model, runtime, result.settings], sort_keys=True,
                      default=str)


def op_profile_section(rows: list[dict]) -> list[str]:
    """'## Operators': the top three operators of each case profiled (op_profile: true), or why
    it was not (benchmark_model not on the device, with how to get it)."""
    body = []
    for r in rows:
        result = getattr(r, "result", None)
        record = result.environment.get("op_profile") if result is not None else None
        if not isinstance(record, dict):
            continue
        top = r.get("op_profile_top")
        status = str(record.get("status") or ("ok" if top else "-"))[:40]
        why = record.get("reason") or record.get("hint") or ""
        body.append([r.get("label") or r["case_id"], r["device"], status,
                     top or str(why)[:200] or "-"])
    if not body:
        return []
    return ["", "## Operators", "",
            "Per-operator profile after the measured run (TFLite benchmark_model "
            "--enable_op_profiling, or the backend's own layer timings): the top three by time.",
            ""] + _table(["case", "device", "profile", "top operators"], body)


def _fig(value, fmt="%.3g", none="-") -> str:
    return none if value is None else fmt % value


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    """Markdown table lines; every cell escaped (escape.markdown)."""
    md = escape.markdown
    return (["| " + " | ".join(md(c) for c in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"] +
            ["| " + " | ".join(md(c) for c in r) + " |" for r in body])


def _energy_block(row: dict) -> dict:
    result = getattr(row, "result", None)
    telemetry = result.telemetry if result is not None and isinstance(result.telemetry, dict) \
        else {}
    return _block(telemetry, "energy")


def energy_section(rows: list[dict]) -> list[str]:
    """'## Energy' over the ok rows with energy: power, mJ per inference, inferences per J, idle
    power and how it was measured (an external meter's or the device's own sensor)."""
    rows = [r for r in rows if r.get("status") == "ok" and r.get("energy_j") is not None]
    if not rows:
        return []
    body, others = [], False
    for r in rows:
        energy = _energy_block(r)
        power = _number(energy, "power_mean_w")
        idle = _fig(r.get("idle_power_w"))
        if energy.get("idle_subtracted") is True:
            idle += " (subtracted)"
        method = r.get("energy_method") or "-"
        source = _text(energy, "source")
        if source:
            method += " (%s)" % source
        by_source = _block(energy, "by_source")
        also = ["%s %s J" % (name, _fig(_number(by_source, name))) for name in sorted(by_source)
                if name != source]
        others = others or bool(also)
        body.append([r.get("label") or r["case_id"], r["device"],
                     _fig(power if power is not None else r.get("power_mean_w")),
                     _fig(r.get("energy_per_inference_mj")),
                     _fig(r.get("inferences_per_j"), "%.4g"),
                     idle, method, "; ".join(also) or "-"])
    header = ["case", "device", "power mean W", "mJ per inference", "inferences per J", "idle W",
              "method"] + (["other sources"] if others else [])
    return ["", "## Energy", "",
            "Over each measured window; mJ per inference and inferences per J are above idle "
            "where idle is marked subtracted.", ""] + \
        _table(header, [b[:len(header)] for b in body])


def paced_section(rows: list[dict]) -> list[str]:
    """'## Paced': the schedule kept or missed, and latency from each frame's scheduled arrival
    (queueing included) against latency from its issue."""
    rows = [r for r in rows if r.get("status") == "ok" and r.get("paced_target_fps") is not None]
    if not rows:
        return []
    body = []
    for r in rows:
        result = getattr(r, "result", None)
        paced = result.timing.paced if result is not None and result.timing is not None and \
            isinstance(result.timing.paced, dict) else {}
        issue = _block(paced, "from_issue")
        miss = r.get("paced_miss_rate")
        body.append([r.get("label") or r["case_id"], r["device"],
                     _fig(r.get("paced_target_fps"), "%.4g"),
                     _fig(miss * 100.0 if miss is not None else None, "%.1f%%"),
                     _fig(r.get("paced_dropped"), "%d"), _fig(r.get("paced_achieved_fps"), "%.4g"),
                     "%s / %s" % (_ms(r.get("paced_p50_from_schedule_ms")),
                                  _ms(r.get("paced_p99_from_schedule_ms"))),
                     "%s / %s" % (_ms(_number(issue, "p50")), _ms(_number(issue, "p99")))])
    header = ["case", "device", "target fps", "miss rate", "dropped", "achieved fps",
              "p50 / p99 from schedule, ms", "p50 / p99 from issue, ms"]
    return ["", "## Paced", "",
            "Frames on a schedule: the miss rate counts late and dropped frames; latency from "
            "schedule includes the wait behind earlier frames, latency from issue does not.",
            ""] + _table(header, body)


def pick_windows(windows: list, cap: int = MAX_WINDOWS_SHOWN) -> list:
    """At most `cap` of `windows`, evenly spread, the first and the last among them."""
    if len(windows) <= cap:
        return list(windows)
    if cap < 2:
        return list(windows[:cap])
    step = (len(windows) - 1) / (cap - 1)
    return [windows[int(round(i * step))] for i in range(cap)]


def sustained_section(rows: list[dict]) -> list[str]:
    """'## Sustained': per sustained row, drift and throttle onset, and its per-window table."""
    rows = [r for r in rows if r.get("status") == "ok" and r.get("mode") == "sustained"]
    if not rows:
        return []
    md = escape.markdown
    out = ["", "## Sustained", "",
           "Back to back for the whole duration, one line per window: how the device behaves once "
           "warm. Drift: the last window's p50 against the first's.", ""]
    for r in rows:
        result = getattr(r, "result", None)
        timing = result.timing if result is not None else None
        sustained = timing.sustained if timing is not None and \
            isinstance(timing.sustained, dict) else {}
        windows = [w for w in (timing.windows or []) if isinstance(w, dict)] \
            if timing is not None else []
        drift, onset = r.get("sustained_drift"), r.get("sustained_throttle_onset_s")
        facts = ["drift %s" % _fig(drift * 100.0 if drift is not None else None, "%+.1f%%",
                                   "n/a"),
                 "throttle onset %s" % ("at %s s" % _fig(onset, "%.0f") if onset is not None
                                        else "none seen")]
        why = _text(sustained, "onset_reason")
        if onset is not None and why:
            facts[-1] += " (%s)" % why
        out += ["### %s, %s" % (md(r["device"]), md(r.get("label") or r["case_id"])), "",
                md(", ".join(facts))]
        if not windows:
            out += ["", "No per-window table in this result."]
            continue
        shown = pick_windows(windows)
        if len(shown) < len(windows):
            out += ["", "%d of %d windows shown, evenly picked (the raw result has every one)."
                    % (len(shown), len(windows))]
        body = []
        for w in shown:
            throttled = w.get("throttled")
            body.append([_fig(_number(w, "start_s"), "%.0f"), _fig(_number(w, "n"), "%d"),
                         _ms(_number(w, "p50")), _ms(_number(w, "p99")),
                         _fig(_number(w, "temp_max_c"), "%.1f"),
                         _fig(_number(w, "freq_min_mhz"), "%.0f"),
                         _fig(_number(w, "power_w")),
                         "yes" if throttled is True else "no" if throttled is False else "-"])
        out += [""] + _table(["start s", "n", "p50 ms", "p99 ms", "temp max C", "freq min MHz",
                              "power W", "throttled"], body) + [""]
    while out and out[-1] == "":
        out.pop()
    return out


def figure_text(row: dict) -> str:
    """'p50 +-0.41%, drift +0.3%, CV 1.8%' (a figure the result lacks is left out)."""
    parts = []
    if isinstance(row.get("p50_ci_rel"), (int, float)):
        parts.append("p50 +-%.2f%%" % (row["p50_ci_rel"] * 100.0))
    if isinstance(row.get("drift"), (int, float)):
        parts.append("drift %+.1f%%" % (row["drift"] * 100.0))
    if isinstance(row.get("cv"), (int, float)):
        parts.append("CV %.1f%%" % (row["cv"] * 100.0))
    if isinstance(row.get("stage_ms"), (int, float)):
        parts.append("staging %.3g ms apart" % row["stage_ms"])
    return ", ".join(parts) or "no figures"
