"""The notebook API (orchestrator.results), `history import` and `report` on real run folders of
the real controller and agent (transport local, the synthetic backend)."""

import csv
import json
import os
import shutil
import sys

import pandas as pd
import pytest
import yaml

from orchestrator import cli, report
from orchestrator.results import load_history, load_latencies, load_run
from orchestrator.run import AfterRun, Progress, run_suite

QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 40, "min_duration_s": 0.1,
         "max_duration_s": 5, "case_timeout_s": 120, "interval_ms": 0}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of a two-case suite, the history off (the tests import them)."""
    tmp = tmp_path_factory.mktemp("api")
    old = os.environ.get("BENCHFLEET_CACHE")
    os.environ["BENCHFLEET_CACHE"] = str(tmp / "cache")
    try:
        inv = tmp / "inv.yaml"
        inv.write_text(yaml.safe_dump({"devices": {"bench": {
            "transport": "local", "python": sys.executable, "workdir": str(tmp / "wd")}}}))
        suite = tmp / "s.yaml"
        suite.write_text(yaml.safe_dump({
            "name": "api", "settings": QUICK, "cooldown": {"mode": "fixed", "seconds": 0},
            "models": [{"name": "spin", "synthetic_ms": 0.2}, {"name": "spin2",
                                                              "synthetic_ms": 0.4}],
            "matrix": [{"runtime": "synthetic"}]}))
        out = []
        with open(os.devnull, "w") as quiet:
            for _ in range(2):
                out.append(run_suite(suite, [inv], results_dir=tmp / "seed",
                                     progress=Progress(quiet),
                                     after=AfterRun(history="off", html=False)))
        return out
    finally:
        if old is None:
            os.environ.pop("BENCHFLEET_CACHE", None)
        else:
            os.environ["BENCHFLEET_CACHE"] = old


@pytest.fixture
def results(runs, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for summary in runs:
        shutil.copytree(summary.run_dir, folder / summary.run_id)
    return folder


def csv_rows(run_dir):
    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_load_run_has_results_csvs_rows_with_typed_columns(runs, results):
    first = runs[0]
    df = load_run(results / first.run_id)
    assert list(df.columns) == list(report.COLUMNS) + ["suite"]
    assert len(df) == 2 and list(df["case_id"]) == [r.case_id for r in first.results]
    rows = csv_rows(results / first.run_id)
    for (_, got), want in zip(df.iterrows(), rows):
        assert got["p50_ms"] == pytest.approx(float(want["p50_ms"]), abs=1e-6)   # csv: 6 decimals
        assert got["runs"] == int(want["runs"]) and got["label"] == want["label"]
    assert df["p50_ms"].dtype == "float64" and df["suite"].unique().tolist() == ["api"]
    assert str(df["started_at"].dtype).startswith("datetime64") and df["started_at"].dt.tz
    # by run id under results_dir, the same frame
    pd.testing.assert_frame_equal(load_run(first.run_id, results_dir=results), df)


def test_load_latencies_has_every_measured_inference(runs, results):
    lat = load_latencies(results / runs[1].run_id)
    assert list(lat.columns) == ["run_id", "device", "case_id", "label", "sample", "latency_ms"]
    for r in runs[1].results:
        got = lat[lat["case_id"] == r.case_id]
        assert got["latency_ms"].tolist() == r.timing.latencies_ms
        assert got["sample"].tolist() == list(range(r.timing.runs))


def test_history_import_twice_adds_nothing_and_load_history_reads_it(runs, results, capsys):
    url = "sqlite:///%s" % (results / "h.sqlite")
    assert cli.main(["history", "import", str(results), "--history", url]) == 0
    assert "2 run(s): 4 result(s) added, 0 already in" in capsys.readouterr().out
    assert cli.main(["history", "import", "--results-dir", str(results), "--history", url,
                     "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["added"] == 0 and again["known"] == 4
    hist = load_history(url)
    assert len(hist) == 4
    # oldest run first (two runs that started in the same second: by run id), each run's cases
    # in its own order
    ids = hist["run_id"].tolist()
    assert sorted(set(ids)) == sorted(r.run_id for r in runs) and ids[0] == ids[1] != ids[2] \
        == ids[3]
    assert hist["label"].tolist() == [r.label for r in runs[0].results] * 2
    assert set(hist["fact_backend"]) == {"synthetic"} and "fact_runtime_version" in hist
    assert hist["run_started_at"].is_monotonic_increasing
    spin2 = load_history(url, case="spin2")
    assert len(spin2) == 2 and set(spin2["model"]) == {"spin2"}
    # the environment variable instead of --history
    os.environ["BENCHFLEET_HISTORY"] = url
    try:
        assert len(load_history(device="bench")) == 4 and len(load_history(device="nope")) == 0
    finally:
        del os.environ["BENCHFLEET_HISTORY"]


def test_report_writes_the_tables_again_from_raw(runs, results, capsys):
    run_dir = results / runs[0].run_id
    before = (run_dir / "results.csv").read_text(), (run_dir / "comparison.md").read_text()
    (run_dir / "results.csv").unlink()
    (run_dir / "comparison.md").write_text("stale")
    assert cli.main(["report", str(run_dir)]) == 0
    assert "2 result(s) of %s" % runs[0].run_id in capsys.readouterr().out
    assert ((run_dir / "results.csv").read_text(), (run_dir / "comparison.md").read_text()) \
        == before
    assert not (run_dir / "report.html").exists()
    assert cli.main(["report", str(run_dir), "--html", "--history", "off"]) == 0
    html = (run_dir / "report.html").read_text()
    assert runs[0].run_id in html and "spin2" in html


def test_a_bad_raw_file_is_a_warning_and_the_rest_is_reported(runs, results, capsys):
    run_dir = results / runs[0].run_id
    victim = run_dir / "raw" / "bench" / (runs[0].results[0].case_id + ".json")
    victim.write_text('{"schema_version": 2, "timing": {"latencies_ms": [1e999]}}')
    df = load_run(run_dir)   # the job names the case: a failed row in its place
    assert df["status"].tolist() == ["failed", "ok"]
    assert "invalid_result" == df["substatus"].iloc[0]
    assert cli.main(["report", str(run_dir)]) == 0
    rows = csv_rows(run_dir)
    assert [r["status"] for r in rows] == ["failed", "ok"]


def test_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no manifest.json: not a run folder" in capsys.readouterr().err
    from orchestrator.errors import ConfigError
    with pytest.raises(ConfigError, match="not a run folder, and no run nope under"):
        load_run("nope", results_dir=tmp_path)


def test_every_column_is_documented():
    """docs/HISTORY.md's column table names every results.csv column and every fact (the
    notebook API's documented columns stay the real ones)."""
    from pathlib import Path
    from orchestrator.facts import FACT_NAMES
    doc = (Path(__file__).resolve().parents[1] / "docs" / "HISTORY.md").read_text()
    table = doc[doc.index("### The columns"):]
    named = set()
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| columns"):
            named |= {c.strip() for c in line.split("|")[1].split(",")}
    missing = [c for c in list(report.COLUMNS) + ["suite", "run_started_at"] if c not in named]
    assert not missing, missing
    for name in FACT_NAMES:
        assert name in doc[:doc.index("### The columns")], name
