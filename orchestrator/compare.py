"""`benchfleet compare A B`: did anything get slower? One verdict per device x case.

A and B are runs (a run folder, or a run id the history or the results folder knows); A may be
`baseline`: the last N runs (default 5) of B's suite on each of B's devices, before B. A row's
verdict is one of

    faster / slower   the p50 moved by more than the threshold (default 5%) AND the samples say
                      so (Mann-Whitney U on the raw latencies, two-sided, p < alpha = 0.01, as
                      asv does) AND, against a baseline, B's p50 lies outside the spread of the
                      baseline runs' p50s;
    same              anything less;
    not comparable    the numbers cannot be set side by side, with why: a fact that decides
                      comparability changed (facts.py: runtime version, model, power mode...),
                      one side is INVALID, failed or skipped, the device is emulated, or the
                      case is on one side only.

An INVALID result is never called faster or slower. A baseline uses only its VALID results whose
facts equal B's; when none has them, the row is not comparable and names what changed against
the newest baseline run. docs/METHOD.md ("Comparing runs") has the rules and their reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import escape
from orchestrator.errors import ConfigError
from orchestrator.facts import changed_facts, comparable_facts

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
DEFAULT_BASELINE_RUNS = 5
# Samples per side fed to the U test: a side with more is thinned evenly (the test's cost grows
# as n log n, and past this many samples any p50 difference above the threshold is significant).
MAX_TEST_SAMPLES = 20000
VERDICTS = ("slower", "faster", "same", "not comparable")
EXIT_REGRESSION = 3


@dataclass
class Entry:
    """One result as compare sees it: where it came from, its flat row, facts and latencies."""

    run_id: str
    started_at: str | None
    row: dict
    facts: dict
    latencies: object = None   # numpy float64 array, or None

    @property
    def key(self):
        return (self.row.get("device"), self.row.get("case_id"))

    @property
    def usable(self) -> str | None:
        """None when the numbers can be compared, else why not ('INVALID in B: ...')."""
        row = self.row
        if row.get("status") != "ok":
            return "%s (%s)" % (row.get("status"), _short(row.get("reason")))
        if row.get("validity") == "INVALID":
            return "INVALID (%s)" % _tags(row.get("validity_reasons"))
        if row.get("emulated") in (True, "true", "True"):
            return "an emulated device (its numbers are not a real device's)"
        if not isinstance(row.get("p50_ms"), (int, float)) or self.latencies is None or \
                len(self.latencies) == 0:
            return "no latencies"
        return None


@dataclass
class Side:
    """A or B: a label for the table and {(device, case_id): [Entry, ...]} (one per run)."""

    label: str
    run_ids: list = field(default_factory=list)
    entries: dict = field(default_factory=dict)
    suite: str | None = None
    started_at: str | None = None

    def add(self, entry: Entry) -> None:
        self.entries.setdefault(entry.key, []).append(entry)

    @property
    def devices(self) -> list:
        seen = []
        for device, _ in self.entries:
            if device not in seen:
                seen.append(device)
        return seen


def _tags(reasons) -> str:
    """'p50 uncertain, drift +4.1%': the head of each INVALID reason (before its ':'), as the
    run's summary line gives them; the reasons in full are in the run's results."""
    heads = []
    for reason in str(reasons or "no reason given").split("; "):
        head = reason.split(":", 1)[0].strip()
        if head and head not in heads:
            heads.append(head)
    return _short(", ".join(heads[:3]) + (", ..." if len(heads) > 3 else ""))


def _short(text, limit=100) -> str:
    text = escape.terminal(str(text or "no reason given"), limit=limit)
    return text


# -- where the sides come from -------------------------------------------------------------------
def entries_of_loaded(loaded) -> list:
    """Entries of a rundir.LoadedRun (a run folder)."""
    import numpy as np
    from orchestrator import report
    out = []
    for result in loaded.results:
        row = dict(report.flat_row(result))
        lat = np.asarray(result.timing.latencies_ms, dtype=np.float64) if result.timing else None
        out.append(Entry(loaded.run_id, loaded.manifest.get("started_at"), row,
                         comparable_facts(result), lat))
    return out


def entries_of_history(rows) -> list:
    """Entries of History.results(..., latencies=True) rows."""
    return [Entry(r.get("run_id"), r.get("run_started_at"), r, r.get("facts") or {},
                  r.get("latencies_ms")) for r in rows]


def _is_run_dir(text) -> bool:
    return (Path(text) / "manifest.json").is_file()


def load_side(spec, results_dir="results", history=None) -> Side:
    """A run as a Side: a run folder, or a run id found in the history or under results_dir.

    Raises:
        ConfigError: no such run (naming where it looked).
    """
    from orchestrator.rundir import load_run
    spec = str(spec)
    if _is_run_dir(spec):
        loaded = load_run(spec)
    elif history is not None and history_run(history, spec) is not None:
        info = history_run(history, spec)
        side = Side(spec, [spec], suite=info.get("suite"), started_at=info.get("started_at"))
        for entry in entries_of_history(history.results(run_ids=[spec], latencies=True)):
            side.add(entry)
        return side
    elif _is_run_dir(Path(results_dir) / spec):
        loaded = load_run(Path(results_dir) / spec)
    else:
        where = ["no run folder %s" % spec, "none in %s" % results_dir]
        if history is not None:
            where.append("not in the history %s" % history.url)
        raise ConfigError("%s: not a run (%s): give a run folder or a run id (benchfleet runs, "
                          "benchfleet history list them)" % (spec, "; ".join(where)))
    side = Side(loaded.run_id, [loaded.run_id], suite=loaded.suite_name,
                started_at=loaded.manifest.get("started_at"))
    for entry in entries_of_loaded(loaded):
        side.add(entry)
    return side


def history_run(history, run_id) -> dict | None:
    """The history's row of one run, or None."""
    return history.run(run_id)


def newest_run(results_dir="results", history=None) -> str:
    """The newest run: the history's, else the newest run folder under results_dir."""
    if history is not None:
        runs = history.runs(limit=1)
        if runs:
            return runs[0]["run_id"]
    from orchestrator.runs import list_runs
    runs = [r for r in list_runs(results_dir) if r.get("run_id")]
    if not runs:
        raise ConfigError("compare: no run in the history or in %s to compare (run a suite first, "
                          "or give the runs: benchfleet compare A B)" % results_dir)
    return max(runs, key=lambda r: (str(r.get("started_at") or ""), r["run_id"]))["run_id"]


def baseline_side(b: Side, history, runs=DEFAULT_BASELINE_RUNS) -> Side:
    """The last `runs` runs of B's suite on each of B's devices, before B (from the history)."""
    if history is None:
        raise ConfigError("compare baseline: the baseline comes from the history database, and "
                          "history is off (drop --history off / BENCHFLEET_HISTORY=off)")
    side = Side("baseline", suite=b.suite)
    b_id = b.run_ids[0] if b.run_ids else None
    for device in b.devices:
        # runs that started before B (B itself may or may not be in the history yet)
        found = [r for r in history.runs(suite=b.suite, device=device)
                 if r["run_id"] != b_id and (b.started_at is None or
                                             str(r.get("started_at") or "") < b.started_at)]
        ids = [r["run_id"] for r in found[:runs]]
        for entry in entries_of_history(history.results(run_ids=ids, device=device,
                                                        latencies=True)):
            side.add(entry)
        side.run_ids += [i for i in ids if i not in side.run_ids]
    shown = ", ".join(side.run_ids[:3]) + (", ..." if len(side.run_ids) > 3 else "")
    side.label = "baseline: %d run(s)%s" % (len(side.run_ids), " (%s)" % shown if shown else "")
    return side


# -- the verdicts --------------------------------------------------------------------------------
def _thin(values, cap=MAX_TEST_SAMPLES):
    import numpy as np
    values = np.asarray(values, dtype=np.float64)
    if len(values) <= cap:
        return values
    return values[np.linspace(0, len(values) - 1, cap).astype(np.int64)]


def u_test(a, b) -> float:
    """Two-sided Mann-Whitney U p-value of two latency samples (scipy.stats)."""
    from scipy.stats import mannwhitneyu
    a, b = _thin(a), _thin(b)
    if len(a) == 0 or len(b) == 0:
        return 1.0
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return p if math.isfinite(p) else 1.0


def verdict_row(key, a_entries, b_entry, threshold=DEFAULT_THRESHOLD, alpha=DEFAULT_ALPHA) -> dict:
    """One row of the comparison: the verdict of B's result against A's (one, or a baseline)."""
    import numpy as np
    device, case_id = key
    label = (b_entry.row if b_entry else a_entries[-1].row).get("label") or case_id
    row = {"device": device, "case_id": case_id, "label": label, "verdict": "not comparable",
           "p50_a_ms": None, "p50_b_ms": None, "ratio": None, "p_value": None, "why": None,
           "runs_a": 0}

    def no(why):
        row["why"] = why
        return row

    if b_entry is None:
        return no("not in B")
    if isinstance(b_entry.row.get("p50_ms"), (int, float)):
        row["p50_b_ms"] = b_entry.row["p50_ms"]
    if not a_entries:
        return no("not in A (a new case)")
    bad = b_entry.usable
    if bad:
        return no("B: " + bad)
    usable = [e for e in a_entries if e.usable is None]
    if not usable:
        return no("A: " + (a_entries[-1].usable or "no usable result"))
    same = [e for e in usable if not changed_facts(e.facts, b_entry.facts)]
    if not same:
        newest = max(usable, key=lambda e: (str(e.started_at or ""), e.run_id))
        return no("changed: " + "; ".join(changed_facts(newest.facts, b_entry.facts)[:4]))
    p50s = [float(e.row["p50_ms"]) for e in same]
    p50_a = float(np.median(p50s))
    p50_b = float(b_entry.row["p50_ms"])
    row.update(p50_a_ms=p50_a, runs_a=len(same))
    if p50_a <= 0:
        return no("A's p50 is 0")
    ratio = p50_b / p50_a
    pooled = np.concatenate([_thin(e.latencies, MAX_TEST_SAMPLES // len(same) or 1)
                             for e in same])
    p = u_test(pooled, b_entry.latencies)
    row.update(ratio=ratio, p_value=p)
    moved = abs(ratio - 1.0) > threshold
    significant = p < alpha
    outside = len(same) < 2 or p50_b > max(p50s) or p50_b < min(p50s)
    if moved and significant and outside:
        row["verdict"] = "slower" if ratio > 1 else "faster"
        row["why"] = "p50 x%.3f, U test p=%.2g" % (ratio, p)
    else:
        row["verdict"] = "same"
        reasons = []
        if not moved:
            reasons.append("within %g%%" % (threshold * 100))
        if not significant:
            reasons.append("U test p=%.2g" % p)
        if moved and significant and not outside:
            reasons.append("inside the baseline's p50 spread %.4g-%.4g ms" % (min(p50s),
                                                                              max(p50s)))
        row["why"] = ", ".join(reasons)
    return row


def compare_sides(a: Side, b: Side, threshold=DEFAULT_THRESHOLD, alpha=DEFAULT_ALPHA) -> dict:
    """The comparison document (printed, --json, --on-regression's stdin, report.html)."""
    keys = []
    for key in list(b.entries) + list(a.entries):
        if key not in keys:
            keys.append(key)
    rows = []
    for key in keys:
        b_list = b.entries.get(key) or []
        rows.append(verdict_row(key, a.entries.get(key) or [], b_list[-1] if b_list else None,
                                threshold, alpha))
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return {"kind": "benchfleet.comparison", "a": {"label": a.label, "run_ids": a.run_ids},
            "b": {"label": b.label, "run_ids": b.run_ids}, "suite": b.suite,
            "threshold": threshold, "alpha": alpha, "rows": rows, "counts": counts,
            "regression": counts["slower"] > 0}


def compare(a_spec, b_spec=None, results_dir="results", history=None,
            threshold=DEFAULT_THRESHOLD, alpha=DEFAULT_ALPHA,
            baseline_runs=DEFAULT_BASELINE_RUNS) -> dict:
    """compare_sides of two specs (see the module's doc); b_spec None = the newest run."""
    if not 0 < threshold < 10:
        raise ConfigError("--threshold %r: give a fraction such as 0.05 (5%%)" % threshold)
    b = load_side(b_spec or newest_run(results_dir, history), results_dir, history)
    if str(a_spec) == "baseline":
        a = baseline_side(b, history, baseline_runs)
    else:
        a = load_side(a_spec, results_dir, history)
    return compare_sides(a, b, threshold, alpha)


# -- the console ---------------------------------------------------------------------------------
def _ms(value) -> str:
    """A latency for the console: 3 decimals below 100 ms, else 4 significant digits."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return "%.3f" % value if abs(value) < 100 else "%.4g" % value


def render(doc: dict) -> str:
    """The comparison as console text: one line per device x case, then the counts."""
    from orchestrator.report import render_text
    header = ["device", "case", "A p50 ms", "B p50 ms", "B/A", "verdict", "why"]
    body = []
    for r in doc["rows"]:
        body.append([escape.terminal(str(r["device"]), limit=40),
                     escape.terminal(str(r["label"]), limit=200), _ms(r["p50_a_ms"]),
                     _ms(r["p50_b_ms"]),
                     "-" if r["ratio"] is None else "%.3f" % r["ratio"],
                     r["verdict"].upper() if r["verdict"] in ("slower", "faster") else
                     r["verdict"], escape.terminal(str(r["why"] or ""), limit=200)])
    counts = doc["counts"]
    lines = ["A: %s" % escape.terminal(doc["a"]["label"], limit=200),
             "B: %s" % escape.terminal(doc["b"]["label"], limit=200), "",
             render_text(header, body) if body else "(no results on either side)", "",
             "%d slower, %d faster, %d same, %d not comparable (threshold %g%%, U test alpha %g)"
             % (counts["slower"], counts["faster"], counts["same"], counts["not comparable"],
                doc["threshold"] * 100, doc["alpha"])]
    if doc["regression"]:
        lines.append("REGRESSION: %d case(s) slower (exit %d)" % (counts["slower"],
                                                                  EXIT_REGRESSION))
    return "\n".join(lines)


def on_regression(command: str, doc: dict, timeout_s: float = 120.0) -> str | None:
    """Run `command` (a shell command) with the comparison as JSON on its stdin; None when it
    exited 0, else a line saying how it failed (the caller prints it; the exit code stays 3).
    It runs in a session of its own, killed whole (its children too) past timeout_s."""
    import json
    import os
    import signal
    import subprocess
    try:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        return "--on-regression %r could not start: %s" % (command, exc)
    try:
        _, err = proc.communicate(json.dumps(doc).encode("utf-8"), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        return "--on-regression %r ran past %g s and was killed" % (command, timeout_s)
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return "--on-regression %r exited %d %s" % (command, proc.returncode,
                                                    escape.terminal(tail[0], limit=200))
    return None
