"""Results as pandas DataFrames, for notebooks and scripts.

    from orchestrator.results import load_run, load_history, load_latencies
    df = load_run("results/20261204-030017-1bb5")           # one row per device x case
    hist = load_history(device="localhost")                  # every stored result, oldest first
    lat = load_latencies("results/20261204-030017-1bb5")     # one row per measured inference

`load_run` has the columns of results.csv (orchestrator.report.COLUMNS, listed in docs/DESIGN.md), with
numbers as floats, true/false as booleans and `started_at` / `finished_at` as UTC timestamps,
plus `suite`. `load_history` has the same columns plus `suite`, `run_started_at` and one
`fact_<name>` column per fact that decides comparability (orchestrator/facts.py). `load_latencies`
has run_id, device, case_id, label, sample (0, 1, ...) and latency_ms.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator import report
from orchestrator.facts import FACT_NAMES

TIME_COLUMNS = ("started_at", "finished_at", "run_started_at")
BOOL_COLUMNS = ("truncated", "emulated")
TEXT_COLUMNS = {"run_id", "device", "case_id", "label", "model", "variant", "model_sha256",
                "backend", "runtime_version", "delegate", "provider", "affinity", "precision",
                "status", "substatus", "reason", "validity", "validity_reasons", "timed",
                "agent_version", "mode", "energy_method", "background", "op_profile_top",
                "inputs", "suite"}


def _run_dir(run, results_dir="results") -> Path:
    path = Path(run)
    if (path / "manifest.json").is_file():
        return path
    if (Path(results_dir) / str(run) / "manifest.json").is_file():
        return Path(results_dir) / str(run)
    from orchestrator.errors import ConfigError
    raise ConfigError("%s: not a run folder, and no run %s under %s" % (run, run, results_dir))


def _frame(rows, extra=()):
    import pandas as pd
    columns = list(report.COLUMNS) + [c for c in extra if c not in report.COLUMNS]
    df = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for col in df.columns:
        if col in TIME_COLUMNS:
            df[col] = pd.to_datetime(df[col], utc=True, errors="coerce")
        elif col in BOOL_COLUMNS:
            df[col] = df[col].map(lambda v: None if v is None else v in (True, "true", "True"))
        elif col not in TEXT_COLUMNS and not col.startswith("fact_"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def load_run(run, results_dir="results"):
    """One run (a folder, or a run id under results_dir) as a DataFrame: a row per device x
    case, in the run's order. A raw file that fails the checks is left out (as in the tables)."""
    from orchestrator.rundir import load_run as read
    loaded = read(_run_dir(run, results_dir))
    rows = []
    for result in loaded.results:
        row = dict(report.flat_row(result))
        row["suite"] = loaded.suite_name
        rows.append(row)
    return _frame(rows, extra=("suite",))


def load_latencies(run, results_dir="results"):
    """Every measured latency of a run, long form: run_id, device, case_id, label, sample,
    latency_ms (ok results only)."""
    import numpy as np
    import pandas as pd
    from orchestrator.rundir import load_run as read
    loaded = read(_run_dir(run, results_dir))
    parts = []
    for r in loaded.results:
        if r.timing is None or not r.timing.latencies_ms:
            continue
        lat = np.asarray(r.timing.latencies_ms, dtype=np.float64)
        parts.append(pd.DataFrame({"run_id": r.run_id, "device": r.device_name,
                                   "case_id": r.case_id, "label": r.label or r.case_id,
                                   "sample": np.arange(len(lat)), "latency_ms": lat}))
    if not parts:
        return pd.DataFrame(columns=["run_id", "device", "case_id", "label", "sample",
                                     "latency_ms"])
    return pd.concat(parts, ignore_index=True)


def load_history(url=None, results_dir="results", device=None, case=None, suite=None):
    """Every result in the history database (--history URL, $BENCHFLEET_HISTORY, else
    RESULTS_DIR/history.sqlite) as a DataFrame, oldest run first. device / suite: only those;
    case: a case id or part of a label."""
    from orchestrator.history import History
    from orchestrator.trends import case_matches
    with History.open(url, results_dir) as history:
        rows = history.results(device=device, suite=suite)
    out = []
    for r in rows:
        if not case_matches(r, case):
            continue
        row = dict(r)
        for name in FACT_NAMES:
            row["fact_" + name] = (r.get("facts") or {}).get(name)
        out.append(row)
    return _frame(out, extra=["suite", "run_started_at"] + ["fact_" + n for n in FACT_NAMES])
