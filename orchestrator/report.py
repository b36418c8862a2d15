"""The normalized results table (results.csv) and the comparison table (console, comparison.md).

One flat row per (run, device, case); the comparison pivots it: rows = case (model x runtime x
settings), columns = devices, cells = p50 / p99 / first inference in ms.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from agent import schema

COLUMNS = [
    "run_id", "device", "case_id", "label", "model", "variant", "model_sha256", "backend",
    "runtime_version", "delegate", "provider", "threads", "affinity", "precision", "status",
    "substatus", "reason", "validity", "validity_reasons", "load_s", "convert_s", "first_ms",
    "warmup_runs", "runs", "measure_s", "truncated", "mean_ms", "std_ms", "cv", "min_ms",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99_9_ms", "max_ms", "p90_cons_ms", "p95_cons_ms",
    "p99_cons_ms", "p99_9_cons_ms", "throughput_ips", "ops_total", "ops_delegated",
    "rss_after_load_kb", "rss_after_run_kb", "cooldown_waited_s", "agent_version", "started_at",
    "finished_at",
]


def flat_row(doc: dict, device: str) -> dict:
    """One result document -> one flat row with every COLUMNS key (None where absent)."""
    timing = doc.get("timing") or {}
    summary = timing.get("summary") or {}
    cons = timing.get("conservative") or {}
    runtime = doc.get("runtime") or {}
    model = doc.get("model") or {}
    validity = doc.get("validity") or {}
    row = {
        "run_id": doc.get("run_id"), "device": device, "case_id": doc.get("case_id"),
        "label": doc.get("label"), "model": model.get("name"), "variant": model.get("variant"),
        "model_sha256": model.get("sha256"), "backend": runtime.get("backend"),
        "runtime_version": runtime.get("version"), "delegate": runtime.get("delegate"),
        "provider": runtime.get("provider"), "threads": runtime.get("threads"),
        "affinity": _cores(runtime.get("affinity")), "precision": runtime.get("precision"),
        "status": doc.get("status"), "substatus": doc.get("substatus"),
        "reason": doc.get("reason"), "validity": validity.get("status"),
        "validity_reasons": "; ".join(validity.get("reasons") or []) or None,
        "load_s": timing.get("load_s"), "convert_s": timing.get("convert_s"),
        "first_ms": timing.get("first_ms"), "warmup_runs": timing.get("warmup_runs"),
        "runs": timing.get("runs"), "measure_s": timing.get("measure_s"),
        "truncated": timing.get("truncated"), "mean_ms": summary.get("mean"),
        "std_ms": summary.get("std"), "cv": summary.get("cv"), "min_ms": summary.get("min"),
        "max_ms": summary.get("max"), "throughput_ips": summary.get("throughput_ips"),
        "ops_total": (doc.get("delegation") or {}).get("ops_total"),
        "ops_delegated": (doc.get("delegation") or {}).get("ops_delegated"),
        "rss_after_load_kb": (doc.get("memory") or {}).get("rss_after_load_kb"),
        "rss_after_run_kb": (doc.get("memory") or {}).get("rss_after_run_kb"),
        "cooldown_waited_s": (doc.get("cooldown") or {}).get("waited_s"),
        "agent_version": doc.get("agent_version"), "started_at": doc.get("started_at"),
        "finished_at": doc.get("finished_at"),
    }
    for p in schema.PERCENTILES:
        key = schema.percentile_key(p)
        row[key + "_ms"] = summary.get(key)
        if key != "p50":
            row[key + "_cons_ms"] = cons.get(key)
    return row


def _cores(affinity) -> str | None:
    if not affinity:
        return None
    return ",".join(str(c) for c in affinity)


def write_csv(rows: Iterable[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    from agent.fsutil import atomic_write_text
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
    establish it (METHOD.md: never a number that only looks trustworthy).
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
    header = ["case"] + devices
    body = [[labels[cid]] + [cells.get((cid, d), "-") for d in devices] for cid in order]
    return header, body


def render_text(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(r) for r in body)
    return "\n".join(out)


def render_markdown(header: list[str], body: list[list[str]], rows: list[dict], run_id: str) -> str:
    out = ["# benchfleet run %s" % run_id, "",
           "Cells: p50 / p99 / first inference, in ms. p99 is the 99%-confidence upper bound;",
           "n/e = not established (too few samples). * = INVALID (reasons below).", ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join("---" for _ in header) + "|")
    out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in body)
    notes = [r for r in rows if r.get("validity") == "INVALID" or r.get("status") != "ok"]
    if notes:
        out += ["", "## Notes", ""]
        for r in notes:
            why = r.get("reason") if r.get("status") != "ok" else r.get("validity_reasons")
            out.append("- %s, %s: %s: %s" % (r["device"], r.get("label") or r["case_id"],
                                             r.get("status") if r.get("status") != "ok" else "INVALID",
                                             why))
    return "\n".join(out) + "\n"
