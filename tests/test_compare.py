"""`benchfleet compare`, `run --compare-to`, `history` trends: planted changes through the real
controller and agent on this machine (transport local, the synthetic backend), stored in a real
SQLite history.

The synthetic backend's device-side hooks plant a change without touching the suite (so case ids
and facts stay): BENCHFLEET_SYNTHETIC_SCALE=1.10 makes every invoke 10% longer, and
BENCHFLEET_SYNTHETIC_VERSION reports another runtime version.
"""

import json
import os
import sys

import numpy as np
import pytest
import yaml

from orchestrator import cli, compare
from orchestrator.compare import Entry, verdict_row
from orchestrator.run import AfterRun, Progress, run_suite
from pglab import free_port, pg_lab, pg_url  # noqa: F401 (fixtures: a real PostgreSQL server)

QUICK = {"warmup_runs": 5, "warmup_min_s": 0.05, "runs": 200, "min_duration_s": 0.4,
         "max_duration_s": 5, "case_timeout_s": 120, "interval_ms": 0,
         # the planted-change tests are about compare's verdicts: a loaded CI machine may make a
         # case INVALID (drift, p50 uncertain) now and then, which compare must then call
         # not comparable; give the verdict room so that stays rare
         "drift_max": 1.0, "p50_ci_max": 1.0}
MODELS = [{"name": "spin1", "synthetic_ms": 1.0}, {"name": "spin2", "synthetic_ms": 2.0}]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BENCHFLEET_HISTORY", raising=False)
    monkeypatch.delenv("BENCHFLEET_SYNTHETIC_SCALE", raising=False)
    monkeypatch.delenv("BENCHFLEET_SYNTHETIC_VERSION", raising=False)


@pytest.fixture
def lab(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"bench": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "wd")}}}))
    suite = tmp_path / "nightly.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "nightly", "settings": QUICK, "cooldown": {"mode": "fixed", "seconds": 0},
        "models": MODELS, "matrix": [{"runtime": "synthetic"}]}, sort_keys=False))
    return {"inv": inv, "suite": suite, "results": tmp_path / "results"}


def run(lab, monkeypatch, scale=None, version=None, html=False, **after):
    """One real run into lab's results folder (and its history.sqlite)."""
    for name, value in (("BENCHFLEET_SYNTHETIC_SCALE", scale),
                        ("BENCHFLEET_SYNTHETIC_VERSION", version)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))
    with open(os.devnull, "w") as quiet:
        summary = run_suite(lab["suite"], [lab["inv"]], results_dir=lab["results"],
                            progress=Progress(quiet), after=AfterRun(html=html, **after))
    assert summary.counts["ok"] == 2, summary.rows
    assert summary.history is not None and summary.history.endswith("history.sqlite")
    return summary


def verdicts(doc):
    return {r["label"]: r["verdict"] for r in doc["rows"]}


def test_a_10_percent_slowdown_is_called_slower_and_exits_3(lab, monkeypatch, capsys):
    before = run(lab, monkeypatch)
    after = run(lab, monkeypatch, scale=1.10)
    doc = compare.compare(str(before.run_dir), str(after.run_dir))
    assert set(verdicts(doc).values()) == {"slower"}, doc["rows"]
    for row in doc["rows"]:
        assert 1.07 < row["ratio"] < 1.13 and row["p_value"] < 0.01
    assert doc["regression"] and doc["counts"]["slower"] == 2
    # the CLI: by run id (found under --results-dir), B defaulting to the newest run
    code = cli.main(["compare", before.run_id, "--results-dir", str(lab["results"])])
    out = capsys.readouterr().out
    assert code == 3, out
    assert "SLOWER" in out and "REGRESSION: 2 case(s) slower (exit 3)" in out
    # the other way round it is faster, and faster is no regression; two folders need no
    # history, and none is made in the current folder
    elsewhere = lab["results"].parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["compare", str(after.run_dir), str(before.run_dir), "--json"]) == 0
    assert list(elsewhere.iterdir()) == []
    back = json.loads(capsys.readouterr().out)
    assert set(verdicts(back).values()) == {"faster"} and not back["regression"]


def test_five_unchanged_runs_give_no_verdict_but_same(lab, monkeypatch):
    """No false alarms: six runs of unchanged cases; each of runs 2-6 against the baseline of the
    runs before it, and every pair of consecutive runs, is `same`."""
    runs = [run(lab, monkeypatch) for _ in range(6)]
    from orchestrator.history import History
    seen = []
    with History.open(None, lab["results"]) as history:
        for later in runs[1:]:
            doc = compare.compare("baseline", str(later.run_dir), lab["results"], history)
            seen += [r["verdict"] for r in doc["rows"]]
            assert not doc["regression"]
        for a, b in zip(runs, runs[1:]):
            doc = compare.compare(str(a.run_dir), str(b.run_dir))
            seen += [r["verdict"] for r in doc["rows"]]
    assert seen == ["same"] * 20, seen


def test_a_runtime_version_change_is_not_comparable_not_a_regression(lab, monkeypatch, capsys):
    before = run(lab, monkeypatch)
    after = run(lab, monkeypatch, scale=1.5, version="9.9.9")
    assert cli.main(["compare", str(before.run_dir), str(after.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 slower, 0 faster, 0 same, 2 not comparable" in out
    doc = compare.compare(str(before.run_dir), str(after.run_dir))
    for row in doc["rows"]:
        assert row["verdict"] == "not comparable"
        assert "runtime_version 0.2.0 -> 9.9.9" in row["why"] or \
            "runtime_version" in row["why"], row


def test_run_compare_to_baseline_stores_compares_and_signals(lab, monkeypatch, tmp_path, capsys):
    """The nightly command: run, store, compare with the baseline, exit 3, run the hook with the
    comparison as JSON on stdin; an unchanged night exits 0 and runs no hook."""
    for _ in range(2):
        run(lab, monkeypatch)
    hook_out = tmp_path / "hook.json"
    argv = ["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
            str(lab["results"]), "--compare-to", "baseline", "--on-regression",
            "cat > %s" % hook_out]
    monkeypatch.setenv("BENCHFLEET_SYNTHETIC_SCALE", "1.0")
    assert cli.main(argv) == 0
    assert not hook_out.exists()
    assert "0 slower" in capsys.readouterr().out
    monkeypatch.setenv("BENCHFLEET_SYNTHETIC_SCALE", "1.2")
    assert cli.main(argv) == 3
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "baseline: 3 run(s)" in out
    hook = json.loads(hook_out.read_text())
    assert hook["kind"] == "benchfleet.comparison" and hook["regression"]
    assert {r["verdict"] for r in hook["rows"]} == {"slower"}
    # the comparison is kept beside the run and shown in its report.html, also when the
    # report is written again
    newest = max(p for p in lab["results"].iterdir() if p.is_dir())
    assert json.loads((newest / "compare.json").read_text())["counts"]["slower"] == 2
    assert "plots: %s" % (newest / "report.html") in out
    for _ in range(2):
        html = (newest / "report.html").read_text()
        assert "Regression" in html and "baseline: 3 run(s)" in html
        assert cli.main(["report", str(newest), "--html"]) == 0
        capsys.readouterr()
    # history trends mark the slowdown on the last point
    assert cli.main(["history", "--results-dir", str(lab["results"]), "--json"]) == 0
    series = json.loads(capsys.readouterr().out)
    assert len(series) == 2
    for s in series:
        assert len(s["points"]) == 4
        assert [p["change"] is None for p in s["points"]] == [True, True, True, False]
        assert s["points"][-1]["change"].startswith("slower x1.")
    assert cli.main(["history", "--results-dir", str(lab["results"]), "--case", "spin2"]) == 0
    text = capsys.readouterr().out
    assert "spin2" in text and "spin1" not in text and "slower x1." in text


def test_a_lab_shares_one_postgresql_history(lab, monkeypatch, pg_url, capsys):
    """Runs stored in PostgreSQL through BENCHFLEET_HISTORY (no results/history.sqlite), the
    baseline read back from it, the slowdown called; the trends from the same database."""
    monkeypatch.setenv("BENCHFLEET_HISTORY", pg_url)
    for _ in range(2):
        with open(os.devnull, "w") as quiet:
            summary = run_suite(lab["suite"], [lab["inv"]], results_dir=lab["results"],
                                progress=Progress(quiet), after=AfterRun(html=False))
        assert summary.history.startswith("postgresql") and summary.counts["ok"] == 2
    assert not (lab["results"] / "history.sqlite").exists()
    monkeypatch.setenv("BENCHFLEET_SYNTHETIC_SCALE", "1.15")
    code = cli.main(["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
                     str(lab["results"]), "--compare-to", "baseline", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 3 and doc["comparison"]["counts"]["slower"] == 2
    assert doc["comparison"]["a"]["label"].startswith("baseline: 2 run(s)")
    assert cli.main(["history", "--json"]) == 0
    assert [len(s["points"]) for s in json.loads(capsys.readouterr().out)] == [3, 3]


def test_a_history_out_of_reach_costs_no_result(lab, capsys):
    """The database is down when the run ends: a warning naming `history import`, the exit code
    of the run itself, every result in the folder; the import stores it later."""
    down = "postgresql://bench:pw@127.0.0.1:%d/bench" % free_port()
    code = cli.main(["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
                     str(lab["results"]), "--history", down])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "warning: history: not stored" in err and "benchfleet history import" in err
    assert ":pw@" not in err
    [run_dir] = [p for p in lab["results"].iterdir() if p.is_dir()]
    assert len(csv_rows(run_dir)) == 2 and (run_dir / "report.html").is_file()
    assert cli.main(["history", "import", str(run_dir), "--results-dir", str(lab["results"])]) \
        == 0
    assert "2 result(s) added" in capsys.readouterr().out


def csv_rows(run_dir):
    import csv
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_compare_to_a_missing_run_is_refused_before_anything_runs(lab, monkeypatch, capsys):
    code = cli.main(["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
                     str(lab["results"]), "--compare-to", "20990101-000000-dead"])
    err = capsys.readouterr().err
    assert code == 2 and "--compare-to 20990101-000000-dead: no such run" in err
    assert not any(p.name != "history.sqlite" for p in lab["results"].glob("*")) \
        if lab["results"].exists() else True
    code = cli.main(["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
                     str(lab["results"]), "--compare-to", "baseline", "--history", "off"])
    assert code == 2 and "history is off" in capsys.readouterr().err
    # a history URL that cannot work is refused before the run, its password masked; a server
    # that is down now is not (the run warns at the end and keeps every result: test_history)
    for url, said in (("mysql://u:s3cret@db/bench", "databases are not supported"),
                      ("postgresql+nodriver://u:s3cret@db/bench", "unknown database driver")):
        code = cli.main(["run", str(lab["suite"]), "-i", str(lab["inv"]), "--results-dir",
                         str(lab["results"]), "--history", url])
        err = capsys.readouterr().err
        assert code == 2 and said in err and "s3cret" not in err and "***" in err, err
    assert not [p for p in lab["results"].glob("*") if p.is_dir()] \
        if lab["results"].exists() else True


def test_invalid_results_are_never_called_slower(lab, monkeypatch):
    """30% slower, but INVALID (as the agent writes it for a drifting window): not comparable."""
    before = run(lab, monkeypatch)
    after = run(lab, monkeypatch, scale=1.3)
    assert set(verdicts(compare.compare(str(before.run_dir), str(after.run_dir))).values()) \
        == {"slower"}
    for path in (after.run_dir / "raw" / "bench").glob("*.json"):
        doc = json.loads(path.read_text())
        doc["validity"].update(status="INVALID", reasons=["drift +9.0%: the p50 of the second "
                                                           "half of the window is 9.0% higher"])
        path.write_text(json.dumps(doc))
    doc = compare.compare(str(before.run_dir), str(after.run_dir))
    assert {r["verdict"] for r in doc["rows"]} == {"not comparable"} and not doc["regression"]
    assert all(r["why"].startswith("B: INVALID (drift +9.0%") for r in doc["rows"]), doc["rows"]
    # and as the baseline's side: A INVALID
    doc = compare.compare(str(after.run_dir), str(before.run_dir))
    assert all(r["why"].startswith("A: INVALID (drift +9.0%") for r in doc["rows"])


# -- verdict_row on planted samples (no run) ------------------------------------------------------
def entry(run_id, latencies, started="2026-12-01T00:00:00Z", **row):
    lat = np.asarray(latencies, dtype=np.float64)
    base = {"device": "d", "case_id": "c-1", "label": "case", "status": "ok",
            "validity": "VALID", "p50_ms": float(np.median(lat))}
    base.update(row)
    return Entry(run_id, started, base, {"runtime_version": "1"}, lat)


def test_a_change_past_the_threshold_the_samples_do_not_support_is_same():
    rng = np.random.default_rng(1)
    a = entry("a", rng.normal(10, 3, 8))
    b = entry("b", rng.normal(11, 3, 8))   # ~10% but 8 noisy samples each
    row = verdict_row(("d", "c-1"), [a], b)
    assert row["verdict"] == "same" and "U test p=" in row["why"], row
    big = verdict_row(("d", "c-1"), [entry("a", rng.normal(10, 0.1, 500))],
                      entry("b", rng.normal(10.2, 0.1, 500)))
    assert big["verdict"] == "same" and "within 5%" in big["why"]   # significant, but 2%


def test_against_a_baseline_a_p50_inside_the_runs_spread_is_same():
    rng = np.random.default_rng(2)
    base = [entry("r%d" % i, rng.normal(mu, 0.05, 400), started="2026-12-0%dT00:00:00Z" % (i + 1))
            for i, mu in enumerate([10.0, 11.2, 10.1, 10.0, 11.3])]
    b = entry("b", rng.normal(11.0, 0.05, 400), started="2026-12-09T00:00:00Z")
    row = verdict_row(("d", "c-1"), base, b)
    assert row["verdict"] == "same" and "inside the baseline's p50 spread" in row["why"], row
    slow = verdict_row(("d", "c-1"), base, entry("b", rng.normal(12.5, 0.05, 400)))
    assert slow["verdict"] == "slower" and slow["runs_a"] == 5


def test_not_comparable_names_why():
    a = entry("a", [1.0] * 50)
    changed = entry("b", [2.0] * 50)
    changed.facts = {"runtime_version": "2"}
    assert verdict_row(("d", "c-1"), [a], changed)["why"] == "changed: runtime_version 1 -> 2"
    failed = entry("b", [1.0], status="failed", reason="device lost")
    assert verdict_row(("d", "c-1"), [a], failed)["why"] == "B: failed (device lost)"
    emu = entry("b", [2.0] * 50, emulated=True)
    assert "emulated" in verdict_row(("d", "c-1"), [a], emu)["why"]
    assert verdict_row(("d", "c-1"), [], emu)["why"] == "not in A (a new case)"
    assert verdict_row(("d", "c-1"), [a], None)["why"] == "not in B"
    invalid_a = entry("a", [1.0] * 50, validity="INVALID", validity_reasons="drift +9%")
    assert verdict_row(("d", "c-1"), [invalid_a], entry("b", [2.0] * 50))["why"] == \
        "A: INVALID (drift +9%)"


def test_the_regression_hook_gets_the_json_and_its_failures_are_named(tmp_path):
    doc = {"kind": "benchfleet.comparison", "regression": True, "rows": []}
    out = tmp_path / "got.json"
    assert compare.on_regression("cat > %s" % out, doc) is None
    assert json.loads(out.read_text()) == doc
    said = compare.on_regression("echo broken >&2; exit 4", doc)
    assert said == "--on-regression 'echo broken >&2; exit 4' exited 4 broken"
    # past its time the hook is killed with its children (a sleep it started does not linger)
    import time
    t0 = time.monotonic()
    said = compare.on_regression("sleep 30 & sleep 30", doc, timeout_s=0.5)
    assert "ran past 0.5 s and was killed" in said and time.monotonic() - t0 < 10
