"""`benchfleet runs`: every run folder under a results folder, with its state and what to do next.

A manifest that still reads `running` while no controller holds the run's lock
(.controller.lock, runlock.py) is a run whose controller was killed: shown as `killed`, with the
command that finishes it.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.runlock import describe, holder_of, run_lock_path


def list_runs(results_dir) -> list[dict]:
    """One dict per run folder (newest first): run_id, dir, suite, started_at, state, counts,
    holder (who is running it now, or None) and next (a command, or None)."""
    from orchestrator.run import read_manifest
    from orchestrator.errors import ConfigError
    root = Path(results_dir)
    rows = []
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) \
            if root.is_dir() else []:
        if not (folder / "manifest.json").exists():
            continue
        try:
            manifest = read_manifest(folder)
        except ConfigError as exc:
            rows.append({"run_id": folder.name, "dir": str(folder), "state": "unreadable",
                         "error": exc.problems[0], "next": None, "holder": None})
            continue
        holder = holder_of(run_lock_path(folder))
        state = manifest.get("state", "?")
        if state == "running" and holder is None:
            state = "killed"
        resumable = state in ("killed", "interrupted", "stopped")
        rows.append({
            "run_id": manifest["run_id"], "dir": str(folder), "suite": manifest.get("suite"),
            "started_at": manifest.get("started_at"), "state": state,
            "counts": manifest.get("counts"), "holder": holder,
            "next": "benchfleet resume %s" % folder if resumable else None})
    return rows


def run_lines(rows) -> list[str]:
    if not rows:
        return ["no runs"]
    lines = []
    for row in rows:
        counts = row.get("counts") or {}
        done = ("%d ok, %d skipped, %d failed" % (counts.get("ok", 0), counts.get("skipped", 0),
                                                   counts.get("failed", 0))) if counts else ""
        head = "%s  %-11s %s  %s" % (row["run_id"], row["state"], row.get("started_at") or "",
                                     row.get("suite") or row.get("error", ""))
        lines.append(head + ("  (%s)" % done if done else ""))
        if row.get("holder"):
            lines.append("    being run by %s" % describe(row["holder"]))
        if row.get("next"):
            lines.append("    finish it: %s" % row["next"])
    return lines
