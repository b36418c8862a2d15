"""`benchfleet history`: each device x case's p50 over the runs the history holds, changes marked.

A point is marked when it differs from the last usable point before it by compare's rules
(compare.verdict_row: past the threshold and the U test): "slower x1.12", "faster x0.91", or
"not comparable: runtime_version 2.14.0 -> 2.15.0" when a fact changed. report.html plots the
same series.
"""

from __future__ import annotations

from orchestrator import compare, escape

DEFAULT_RUNS = 30


def case_matches(row, case) -> bool:
    """`--case C` (or load_history's case=): a case id, or part of a label; None matches all."""
    return case is None or case == row.get("case_id") or case in str(row.get("label") or "")


def trends(history, suite=None, device=None, case=None, runs=DEFAULT_RUNS,
           threshold=compare.DEFAULT_THRESHOLD, alpha=compare.DEFAULT_ALPHA, keys=None) -> list:
    """[{device, case_id, label, suite, points: [{run_id, started_at, p50_ms, p99_ms, validity,
    status, change}]}] over the newest `runs` runs (oldest point first). keys: only these
    (device, case_id) pairs."""
    ids = [r["run_id"] for r in history.runs(suite=suite, device=device, limit=runs)]
    if not ids:
        return []
    entries = compare.entries_of_history(history.results(run_ids=ids, device=device,
                                                         latencies=True))
    series = {}
    for entry in entries:
        if not case_matches(entry.row, case) or (keys is not None and entry.key not in keys):
            continue
        series.setdefault((entry.row.get("suite"), entry.key), []).append(entry)
    out = []
    for (suite_name, key), got in series.items():
        got.sort(key=lambda e: (str(e.started_at or ""), e.run_id))
        points, last = [], None
        for entry in got:
            change = None
            if last is not None:
                verdict = compare.verdict_row(key, [last], entry, threshold, alpha)
                if verdict["verdict"] in ("slower", "faster"):
                    change = "%s x%.3f" % (verdict["verdict"], verdict["ratio"])
                elif verdict["verdict"] == "not comparable" and \
                        str(verdict["why"]).startswith("changed: "):
                    change = "not comparable: " + verdict["why"][len("changed: "):]
            if entry.usable is None:
                last = entry
            row = entry.row
            points.append({"run_id": entry.run_id, "started_at": entry.started_at,
                           "p50_ms": row.get("p50_ms"), "p99_ms": row.get("p99_ms"),
                           "validity": row.get("validity"), "status": row.get("status"),
                           "change": change})
        out.append({"device": key[0], "case_id": key[1], "suite": suite_name,
                    "label": got[-1].row.get("label") or key[1], "points": points})
    out.sort(key=lambda s: (str(s["suite"]), str(s["device"]), str(s["label"])))
    return out


def render(series: list) -> str:
    """Console text: a block per device x case, one line per run."""
    if not series:
        return "(no results in the history for that: benchfleet history import results/ " \
               "ingests run folders)"
    blocks = []
    for s in series:
        lines = ["%s  %s (%s)  [%s]" % (escape.terminal(str(s["device"]), limit=40),
                                       escape.terminal(str(s["label"]), limit=120),
                                       s["case_id"], escape.terminal(str(s["suite"]), limit=60))]
        for p in s["points"]:
            p50 = p["p50_ms"]
            state = p["validity"] if p["status"] == "ok" else p["status"]
            lines.append("  %-20s  %-22s  p50 %9s ms  %-8s  %s" % (
                p["started_at"] or "-", p["run_id"],
                compare._ms(p50), state or "-",
                escape.terminal(p["change"] or "", limit=200)))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
