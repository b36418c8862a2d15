"""The history database (orchestrator/history.py) on SQLite and on a real PostgreSQL server.

The run folders are made once per module by the real controller and agent (transport local,
the synthetic backend, two devices on this machine) and copied into each test. PostgreSQL is
tests/pglab.py's throwaway server, a fresh database per test (with an ICU en-US collation
where the server has ICU, so that text does not sort bytewise as it does in SQLite). The
killed-store and two-writer tests run real child processes.
"""

import inspect
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
import yaml

from orchestrator import facts, history, report
from orchestrator.errors import HistoryError
from orchestrator.history import History, history_url, masked
from orchestrator.rundir import LoadedRun, load_run
from pglab import free_port, pg_lab, pg_url  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parent.parent
QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 20, "min_duration_s": 0.3,
         "max_duration_s": 5, "case_timeout_s": 120, "interval_ms": 0}


# -- the run folders ------------------------------------------------------------------------------
@dataclass
class Made:
    results: Path                 # the pristine folder of runs (never written by a test)
    dirs: dict                    # a1, a2, b1 -> run folder
    ids: dict                     # a1, a2, b1 -> run id

    def copy(self, dest: Path, *names) -> dict:
        """Copies of the named runs in dest (a folder of runs): name -> run folder."""
        dest.mkdir(parents=True, exist_ok=True)
        out = {}
        for name in names or tuple(self.dirs):
            out[name] = dest / self.dirs[name].name
            shutil.copytree(self.dirs[name], out[name])
        return out


def _suite(path: Path, name: str, models) -> Path:
    path.write_text(yaml.safe_dump({
        "name": name, "settings": QUICK, "cooldown": {"mode": "none"},
        "models": [{"name": m, "synthetic_ms": ms} for m, ms in models],
        "matrix": [{"runtime": "synthetic"}]}, sort_keys=False))
    return path


def _run(suite, inventory, results, devices=None) -> Path:
    from orchestrator import run as runner
    kwargs = {}
    if "after" in inspect.signature(runner.run_suite).parameters:
        # the run's own history store and report are not what these tests look at
        kwargs["after"] = runner.AfterRun(history="off", html=False)
    with open(os.devnull, "w") as quiet:
        summary = runner.run_suite(suite, [inventory], devices=devices, results_dir=results,
                                   progress=runner.Progress(quiet), **kwargs)
    assert summary.counts["failed"] == 0, summary.counts
    return Path(summary.run_dir)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three real runs, each started in its own second: a1 (suite alpha, loc1 and loc2, two
    models: 4 results), a2 (alpha, loc1 only: 2), b1 (beta, loc2 only: 1)."""
    root = tmp_path_factory.mktemp("history-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHFLEET_CACHE", str(root / "cache"))
        mp.setenv(history.HISTORY_ENV, "off")
        inventory = root / "inv.yaml"
        inventory.write_text(yaml.safe_dump({"devices": {
            name: {"transport": "local", "python": sys.executable,
                   "workdir": str(root / ("wd-" + name))} for name in ("loc1", "loc2")}}))
        alpha = _suite(root / "alpha.yaml", "alpha", [("spin", 0.3), ("spin2", 0.6)])
        beta = _suite(root / "beta.yaml", "beta", [("spin", 0.2)])
        dirs, last = {}, ""
        for name, suite, devices in (("a1", alpha, None), ("a2", alpha, ["loc1"]),
                                     ("b1", beta, ["loc2"])):
            while time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) <= last:
                time.sleep(0.05)
            dirs[name] = _run(suite, inventory, root / "results", devices)
            last = json.loads((dirs[name] / "manifest.json").read_text())["started_at"]
    ids = {name: json.loads((d / "manifest.json").read_text())["run_id"]
           for name, d in dirs.items()}
    return Made(root / "results", dirs, ids)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCHFLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(history.HISTORY_ENV, raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A new, empty history database: a SQLite file, or a database of the PostgreSQL lab."""
    if request.param == "sqlite":
        return "sqlite:///%s" % (tmp_path / "db" / "history.sqlite")
    return request.getfixturevalue("pg_url")


def plain_engine(url):
    """A SQLAlchemy engine without History's settings (to write a database as another
    version would, or to look inside one)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return sqlalchemy.create_engine(url)


def expected_row(result, run_id=None):
    row = json.loads(json.dumps(dict(report.flat_row(result))))
    if run_id is not None:
        row["run_id"] = run_id
    return row


def raw_doc(run_dir, device, case_id):
    return json.loads((Path(run_dir) / "raw" / device / (case_id + ".json")).read_text())


def keys(rows):
    return [(r["run_id"], r["device"], r["case_id"]) for r in rows]


# -- storing and reading back ---------------------------------------------------------------------
def test_a_stored_run_reads_back_as_its_raw_files(db_url, made, tmp_path):
    run_dir = made.copy(tmp_path / "results", "a1")["a1"]
    loaded = load_run(run_dir)
    assert len(loaded.results) == 4 and not loaded.warnings
    with History(db_url) as h:
        assert h.schema_version == history.SCHEMA_VERSION and h.migrated_from == 0
        assert h.store_run(loaded) == {"run_id": made.ids["a1"], "added": 4, "known": 0,
                                       "updated": 0}
        got = h.results(run_ids=[loaded.run_id], latencies=True)
        plain = h.results(run_ids=[loaded.run_id])
        [info] = h.runs()
        assert h.run(loaded.run_id) == info and h.run("20000101-000000-none") is None
    assert keys(got) == [(loaded.run_id, r.device_name, r.case_id) for r in loaded.results]
    with open(run_dir / "results.csv", newline="") as f:
        import csv
        table = {(r["device"], r["case_id"]): r for r in csv.DictReader(f)}
    for row, result in zip(got, loaded.results):
        assert set(row) == set(report.COLUMNS) | {"suite", "run_started_at", "facts",
                                                  "latencies_ms"}
        assert {k: row[k] for k in report.COLUMNS} == expected_row(result)
        raw = raw_doc(run_dir, result.device_name, result.case_id)
        assert row["latencies_ms"].dtype == np.float64
        assert np.array_equal(row["latencies_ms"], np.array(raw["timing"]["latencies_ms"]))
        assert len(row["latencies_ms"]) == raw["timing"]["runs"] == row["runs"]
        assert row["p50_ms"] == raw["timing"]["summary"]["p50"]
        assert row["facts"] == facts.comparable_facts(result)
        assert row["facts"]["backend"] == "synthetic" and row["facts"]["model_sha256"] in (
            "0.3", "0.6")
        assert row["suite"] == "alpha" and row["run_started_at"] == loaded.manifest["started_at"]
        csv_row = table[(row["device"], row["case_id"])]
        assert float(csv_row["p50_ms"]) == pytest.approx(row["p50_ms"], abs=1e-6)
        assert csv_row["label"] == row["label"] and csv_row["status"] == row["status"] == "ok"
    assert [dict(r, latencies_ms=None) for r in got] == \
        [dict(r, latencies_ms=None) for r in plain] and "latencies_ms" not in plain[0]
    manifest = loaded.manifest
    assert info == {
        "run_id": loaded.run_id, "suite": "alpha", "suite_path": manifest["suite_path"],
        "started_at": manifest["started_at"], "finished_at": manifest["finished_at"],
        "state": "finished", "run_dir": str(run_dir.absolute()),
        "controller_host": socket.gethostname(), "controller_user": manifest["controller"]["user"],
        "controller_version": manifest["controller_version"],
        "stored_at": info["stored_at"], "results": 4}


def test_storing_or_importing_twice_adds_nothing(db_url, made, tmp_path):
    folder = tmp_path / "results"
    run_dir = made.copy(folder, "a1")["a1"]
    loaded = load_run(run_dir)
    with History(db_url) as h:
        assert h.store_run(loaded)["added"] == 4
        assert h.store_run(loaded) == {"run_id": loaded.run_id, "added": 0, "known": 4,
                                       "updated": 0}
        again = h.import_path(run_dir)
        assert (again["added"], again["known"], again["updated"]) == (0, 4, 0)
        assert again["runs"] == [{"run_id": loaded.run_id, "run_dir": str(run_dir),
                                  "added": 0, "known": 4, "updated": 0}]
        assert h.import_path(folder)["added"] == 0
        assert h.import_path(run_dir / "manifest.json")["known"] == 4
    with History(db_url) as h:   # opened again: nothing to make or migrate
        assert h.migrated_from is None
        assert len(h.results()) == 4 and [r["results"] for r in h.runs()] == [4]


def test_a_folder_of_runs_is_imported_and_what_is_not_a_run_is_skipped_with_why(
        db_url, made, tmp_path):
    folder = tmp_path / "results"
    made.copy(folder)
    (folder / "notarun").mkdir()
    (folder / "notarun" / "notes.txt").write_text("hello")
    (folder / "badjson").mkdir()
    (folder / "badjson" / "manifest.json").write_text("{not json")
    (folder / "empty").mkdir()
    (folder / "empty" / "manifest.json").write_text("{}")
    evil = folder / "evil"
    shutil.copytree(made.dirs["a2"], evil)
    doc = json.loads((evil / "manifest.json").read_text())
    (evil / "manifest.json").write_text(json.dumps(dict(doc, run_id="../../x'; DROP TABLE --")))
    (folder / ".hidden").mkdir()
    (folder / "history.sqlite").write_bytes(b"")   # a file beside the runs: not looked at
    with History(db_url) as h:
        done = h.import_path(folder)
        assert [(r["run_id"], r["added"], r["known"]) for r in done["runs"]] == sorted(
            [(made.ids["a1"], 4, 0), (made.ids["a2"], 2, 0), (made.ids["b1"], 1, 0)])
        assert (done["added"], done["known"], done["warnings"]) == (7, 0, [])
        why = {Path(s["path"]).name: s["why"] for s in done["skipped"]}
        assert set(why) == {"notarun", "badjson", "empty", "evil"}
        assert why["notarun"] == "no manifest.json: not a run folder"
        assert "cannot read" in why["badjson"]
        assert "not a benchfleet manifest" in why["empty"]
        assert "is not a run id" in why["evil"]
        alone = h.import_path(folder / "notarun")
        assert alone["runs"] == [] and alone["skipped"] == [{
            "path": str(folder / "notarun"),
            "why": "no manifest.json and no run folders in it: not a run folder"}]
        with pytest.raises(HistoryError, match="no such folder"):
            h.import_path(tmp_path / "nowhere")
        assert len(h.results()) == 7 and len(h.runs()) == 3


def test_a_corrupt_raw_file_costs_only_itself(db_url, made, tmp_path):
    """With the device's job.json the corrupt file is the failed row the run would have made
    of it; without it, load_run's warning names the file and the run's other results are
    stored."""
    folder = tmp_path / "results"
    dirs = made.copy(folder, "a1", "a2")
    first = load_run(dirs["a1"]).results[0]
    bad1 = dirs["a1"] / "raw" / first.device_name / (first.case_id + ".json")
    bad1.write_bytes(b'{"schema_version": 2, "garbage')
    a2 = load_run(dirs["a2"]).results
    bad2 = dirs["a2"] / "raw" / "loc1" / (a2[0].case_id + ".json")
    bad2.write_text(json.dumps(dict(raw_doc(dirs["a2"], "loc1", a2[0].case_id),
                                    status="exploded")))
    (dirs["a2"] / "devices" / "loc1" / "job.json").unlink()
    with History(db_url) as h:
        done = h.import_path(folder)
        assert [(r["run_id"], r["added"]) for r in done["runs"]] == [
            (made.ids["a1"], 4), (made.ids["a2"], 1)]
        [warning] = done["warnings"]
        assert str(bad2) in warning and "left out" in warning
        rows = {(r["run_id"], r["device"], r["case_id"]): r for r in h.results(latencies=True)}
    failed = rows[(made.ids["a1"], first.device_name, first.case_id)]
    assert (failed["status"], failed["substatus"]) == ("failed", "invalid_result")
    assert "failed the controller's checks" in failed["reason"]
    assert len(failed["latencies_ms"]) == 0 and failed["p50_ms"] is None
    assert (made.ids["a2"], "loc1", a2[0].case_id) not in rows
    kept = rows[(made.ids["a2"], "loc1", a2[1].case_id)]
    assert np.array_equal(kept["latencies_ms"], a2[1].timing.latencies_ms)
    assert sum(r["status"] == "ok" for r in rows.values()) == 4


def test_a_resumed_run_stored_again_adds_its_new_results_and_updates_the_run(
        db_url, made, tmp_path):
    run_dir = made.copy(tmp_path / "results", "a1")["a1"]
    whole = load_run(run_dir)
    late = whole.results[2]
    raw = run_dir / "raw" / late.device_name / (late.case_id + ".json")
    kept = raw.read_bytes()
    raw.unlink()
    manifest = dict(whole.manifest, state="running")
    del manifest["finished_at"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    with History(db_url) as h:
        assert h.import_path(run_dir)["added"] == 3
        [info] = h.runs()
        # no controller holds it: killed, as `benchfleet runs` says
        assert (info["state"], info["finished_at"], info["results"]) == ("killed", None, 3)
        raw.write_bytes(kept)   # the resume measured it
        (run_dir / "manifest.json").write_text(json.dumps(whole.manifest))
        done = h.import_path(run_dir)
        assert (done["added"], done["known"], done["updated"]) == (1, 3, 0)
        [info] = h.runs()
        assert (info["state"], info["finished_at"], info["results"]) == (
            "finished", whole.manifest["finished_at"], 4)
        assert keys(h.results()) == [(whole.run_id, r.device_name, r.case_id)
                                     for r in whole.results]   # in the run's order
        # a stored result whose folder now says otherwise (energy attached, say) is updated
        changed = whole.results[0].model_copy(update={"label": "spin, energy attached"})
        done = h.store_run(LoadedRun(run_dir, whole.manifest, whole.devices,
                                     [changed] + whole.results[1:]))
        assert (done["added"], done["known"], done["updated"]) == (0, 4, 1)
        assert h.results()[0]["label"] == "spin, energy attached"


# -- queries --------------------------------------------------------------------------------------
def _tie(made, folder, suffix) -> str:
    """A copy of b1 under another run id that started in the same second."""
    dest = folder / ("b1" + suffix)
    shutil.copytree(made.dirs["b1"], dest)
    doc = json.loads((dest / "manifest.json").read_text())
    doc["run_id"] = made.ids["b1"] + suffix
    (dest / "manifest.json").write_text(json.dumps(doc))
    return doc["run_id"]


def test_runs_newest_first_and_their_filters(db_url, made, tmp_path):
    folder = tmp_path / "results"
    made.copy(folder)
    # two more runs in b1's second: the run id decides, bytewise ("B" before "a") on both
    upper, lower = _tie(made, folder, "-B"), _tie(made, folder, "-a")
    a1, a2, b1 = made.ids["a1"], made.ids["a2"], made.ids["b1"]
    with History(db_url) as h:
        assert h.import_path(folder)["added"] == 9

        def ids(**kw):
            return [r["run_id"] for r in h.runs(**kw)]
        assert ids() == [lower, upper, b1, a2, a1]
        assert [r["results"] for r in h.runs()] == [1, 1, 1, 2, 4]
        assert [r["suite"] for r in h.runs()] == ["beta"] * 3 + ["alpha"] * 2
        assert ids(suite="alpha") == [a2, a1] and ids(suite="beta") == [lower, upper, b1]
        assert ids(device="loc1") == [a2, a1]
        assert ids(device="loc2") == [lower, upper, b1, a1]
        assert ids(suite="alpha", device="loc2") == [a1]
        assert ids(limit=2) == [lower, upper] and ids(limit=0) == []
        assert ids(before=lower) == [upper, b1, a2, a1]
        assert ids(before=b1) == [a2, a1] and ids(before=a2) == [a1] and ids(before=a1) == []
        assert ids(before=lower, suite="beta", limit=1) == [upper]
        assert ids(suite="gamma") == [] and ids(device="nope") == []
        with pytest.raises(HistoryError, match="run 20000101-000000-none is not in the history"):
            h.runs(before="20000101-000000-none")


def test_results_filters_and_order(db_url, made, tmp_path):
    folder = tmp_path / "results"
    made.copy(folder)
    loaded = {name: load_run(folder / d.name) for name, d in made.dirs.items()}
    order = [(lr.run_id, r.device_name, r.case_id)
             for lr in (loaded["a1"], loaded["a2"], loaded["b1"]) for r in lr.results]
    spin_loc1 = [r for r in loaded["a1"].results if r.device_name == "loc1"][0]
    with History(db_url) as h:
        h.import_path(folder)
        assert keys(h.results()) == order
        assert keys(h.results(run_ids=[made.ids["a2"]])) == order[4:6]
        assert keys(h.results(run_ids=made.ids["b1"])) == order[6:]
        assert keys(h.results(run_ids=[made.ids["b1"], made.ids["a1"]])) == \
            order[:4] + order[6:]
        assert h.results(run_ids=[]) == []
        assert keys(h.results(device="loc2")) == [k for k in order if k[1] == "loc2"]
        assert keys(h.results(suite="beta")) == order[6:]
        assert [r["suite"] for r in h.results()] == ["alpha"] * 6 + ["beta"]
        # one device x case over the runs: what compare's baseline and the trends read
        series = h.results(device="loc1", case_id=spin_loc1.case_id, latencies=True)
        assert [r["run_id"] for r in series] == [made.ids["a1"], made.ids["a2"]]
        assert [r["run_started_at"] for r in series] == [
            loaded["a1"].manifest["started_at"], loaded["a2"].manifest["started_at"]]
        assert all(len(r["latencies_ms"]) == r["runs"] for r in series)
        assert h.results(device="loc1", case_id=spin_loc1.case_id, suite="beta") == []
        assert h.results(case_id="c-nothing") == []


# -- untrusted text -------------------------------------------------------------------------------
def test_device_text_is_stored_safely_and_capped_in_its_columns(db_url, made, tmp_path):
    run_dir = made.copy(tmp_path / "results", "b1")["b1"]
    loaded = load_run(run_dir)
    label = "x'); DROP TABLE bf_runs; --\x00" + "\u00e9" * 2000 + "\ud800"
    result = loaded.results[0].model_copy(update={"label": label})
    result.runtime["version"] = "2.15\x00'--\ud800"
    with History(db_url) as h:
        h.store_run(LoadedRun(run_dir, loaded.manifest, loaded.devices, [result]))
        [row] = h.results()
        assert len(h.runs()) == 1
    assert row["label"] == label and row["runtime_version"] == "2.15\x00'--\ud800"
    assert row["facts"]["runtime_version"] == "2.15\x00'--\ud800"
    engine = plain_engine(db_url)
    with engine.connect() as conn:
        label_col, version_col = conn.execute(sqlalchemy.text(
            "SELECT label, runtime_version FROM bf_results")).one()
    engine.dispose()
    assert len(label_col) == 500 and label_col.startswith("x'); DROP TABLE bf_runs; --\ufffd")
    assert version_col == "2.15\ufffd'--?"


# -- versions -------------------------------------------------------------------------------------
def test_a_version_1_database_is_migrated_with_its_data(db_url, made, tmp_path):
    loaded = load_run(made.copy(tmp_path / "results", "a1")["a1"])
    timing = loaded.results[0].timing   # one with an established p99, however many samples ran
    timing = timing.model_copy(update={
        "summary": timing.summary.model_copy(update={"p99": 0.75}),
        "conservative": timing.conservative.model_copy(update={"p99": 0.8})})
    loaded.results[0] = loaded.results[0].model_copy(update={"timing": timing})
    v1 = history.layout(1)
    assert "p99_ms" not in v1.results.c and "p99_ms" in history.layout().results.c
    engine = plain_engine(db_url)
    if db_url.startswith("sqlite"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    with engine.begin() as conn:   # what benchfleet with schema 1 wrote
        history.MIGRATIONS[0].apply(conn)
        conn.execute(sqlalchemy.insert(v1.meta), [{"key": "schema_version", "value": "1"}])
        conn.execute(sqlalchemy.insert(v1.runs), [history.run_values(loaded)])
        conn.execute(sqlalchemy.insert(v1.results), [
            {k: v for k, v in history.result_values(loaded.run_id, i, r).items()
             if k in v1.results.c} for i, r in enumerate(loaded.results)])
    engine.dispose()
    with History(db_url) as h:
        assert (h.migrated_from, h.schema_version) == (1, history.SCHEMA_VERSION)
        got = h.results(latencies=True)
        assert [{k: r[k] for k in report.COLUMNS} for r in got] == \
            [expected_row(r) for r in loaded.results]
        assert all(np.array_equal(g["latencies_ms"], r.timing.latencies_ms)
                   for g, r in zip(got, loaded.results))
        assert h.store_run(loaded) == {"run_id": loaded.run_id, "added": 0, "known": 4,
                                       "updated": 0}
    engine = plain_engine(db_url)
    with engine.connect() as conn:
        found = sqlalchemy.inspect(conn)
        assert "p99_ms" in {c["name"] for c in found.get_columns("bf_results")}
        assert "ix_bf_runs_started" in {i["name"] for i in found.get_indexes("bf_runs")}
        p99 = conn.execute(sqlalchemy.text("SELECT p99_ms FROM bf_results ORDER BY seq")
                           ).scalars().all()
        version = conn.execute(sqlalchemy.text(
            "SELECT value FROM bf_meta WHERE key = 'schema_version'")).scalar()
    engine.dispose()
    assert p99 == [r["p99_ms"] for r in got] and p99[0] == 0.75
    assert version == str(history.SCHEMA_VERSION)
    with History(db_url) as h:
        assert h.migrated_from is None


def test_a_database_of_a_newer_benchfleet_is_refused(db_url):
    History(db_url).close()
    engine = plain_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE bf_meta SET value = :v WHERE key = "
                                     "'schema_version'"), {"v": str(history.SCHEMA_VERSION + 1)})
    engine.dispose()
    with pytest.raises(HistoryError) as caught:
        History(db_url)
    assert str(caught.value) == (
        "history %s: written by a newer benchfleet (schema %d, this one reads %d): upgrade "
        "benchfleet or point --history elsewhere"
        % (masked(db_url), history.SCHEMA_VERSION + 1, history.SCHEMA_VERSION))
    assert caught.value.exit_code == 2


# -- bad places -----------------------------------------------------------------------------------
def _refused(url, *expect):
    with pytest.raises(HistoryError) as caught:
        History(url)
    text = str(caught.value)
    assert text.startswith("history %s: " % masked(history._as_url(url))), text
    for part in expect:
        assert part in text, text
    assert "s3cr3tpw" not in text and "s3cr3tpw" not in repr(caught.value.args)
    return text


def test_bad_places_give_a_history_error_naming_the_masked_url_and_the_fix(
        tmp_path, monkeypatch):
    port = free_port()   # nothing listens there
    text = _refused("postgresql://bench:s3cr3tpw@127.0.0.1:%d/bench" % port,
                    "postgresql://bench:***@127.0.0.1:%d/bench" % port,
                    "cannot reach the database server or log in", "--history off")
    assert "refused" in text.lower() or "connect" in text.lower()
    _refused("postgresql://bench:s3cr3tpw@127.0.0.1:%d/bench?password=s3cr3tpw" % port,
             "cannot reach")
    _refused("nosuchdb://u:s3cr3tpw@host/x", "not supported")
    _refused("mysql://u:s3cr3tpw@host/x", "mysql databases are not supported")
    _refused("postgresql+nodriver://u:s3cr3tpw@host/x", "unknown database driver")
    _refused("postgresql://u:s3cr3tpw@[::1/x", "not a database URL")
    with monkeypatch.context() as mp:   # as where the postgres extra is not installed
        mp.setitem(sys.modules, "psycopg2", None)
        _refused("postgresql+psycopg2://u:s3cr3tpw@127.0.0.1:%d/x" % port,
                 "the PostgreSQL driver psycopg2 is not installed",
                 "pip install 'benchfleet[postgres]'")
        _refused("postgresql://u:s3cr3tpw@127.0.0.1:%d/x" % port, "pip install")
    junk = tmp_path / "notes.sqlite"
    junk.write_bytes(b"these are my notes, not a database\n" * 200)
    _refused("sqlite:///%s" % junk, "%s is not a SQLite database" % junk,
             "point --history at another file")
    _refused(str(junk), "is not a SQLite database")
    assert junk.read_bytes().startswith(b"these are my notes")   # left as it was
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(str(afile / "history.sqlite"), "cannot make the folder")
    _refused("sqlite:///%s" % tmp_path, "cannot open")
    with pytest.raises(HistoryError, match="history is off"):
        History("off")


def test_a_live_server_refusing_the_database_names_it_without_the_password(pg_lab):  # noqa: F811
    url = pg_lab.url("nosuchdb", password="s3cr3tpw")
    text = _refused(url, "postgresql://postgres:***@127.0.0.1:%d/nosuchdb" % pg_lab.port,
                    "cannot reach the database server or log in")
    assert "nosuchdb" in text and "does not exist" in text


def test_history_url_precedence_and_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = "sqlite:///%s" % (tmp_path / "results" / "history.sqlite")
    assert history_url() == default
    assert history_url(results_dir=tmp_path / "r") == "sqlite:///%s" % (
        tmp_path / "r" / "history.sqlite")
    assert history_url("mine.sqlite") == "sqlite:///%s" % (tmp_path / "mine.sqlite")
    assert history_url("sqlite:////x/h.sqlite") == "sqlite:////x/h.sqlite"
    assert history_url("off") is None and history_url("OFF") is None
    monkeypatch.setenv(history.HISTORY_ENV, "postgresql://u@db.example/bench")
    assert history_url() == "postgresql://u@db.example/bench"
    assert history_url("sqlite:////x/h.sqlite") == "sqlite:////x/h.sqlite"   # explicit wins
    assert history_url("off") is None
    monkeypatch.setenv(history.HISTORY_ENV, "off")
    assert history_url() is None and history_url(results_dir="r") is None
    assert history_url("other/h.sqlite") == "sqlite:///%s" % (tmp_path / "other" / "h.sqlite")
    with pytest.raises(HistoryError, match="history is off"):
        History.open()
    monkeypatch.setenv(history.HISTORY_ENV, "envdir/h.sqlite")
    assert history_url() == "sqlite:///%s" % (tmp_path / "envdir" / "h.sqlite")
    monkeypatch.setenv(history.HISTORY_ENV, "")
    assert history_url() == default
    with History.open(results_dir=tmp_path / "fresh") as h:   # makes the folder and the file
        assert h.url == "sqlite:///%s" % (tmp_path / "fresh" / "history.sqlite")
    assert (tmp_path / "fresh" / "history.sqlite").is_file()


def test_masked():
    assert masked("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert masked("postgresql://u@h/db") == "postgresql://u@h/db"
    assert masked("postgresql://u@h/db?password=pw&sslmode=require") == \
        "postgresql://u@h/db?password=***&sslmode=require"
    assert masked("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert "pw" not in masked("postgresql://u:pw@[::1/db")
    assert masked("sqlite:////tmp/h.sqlite") == "sqlite:////tmp/h.sqlite"
    assert masked("/tmp/h.sqlite") == "/tmp/h.sqlite"


# -- processes ------------------------------------------------------------------------------------
CHILD = r"""
import os, sys, time
from orchestrator.history import History
from orchestrator.rundir import LoadedRun, load_run
url, run_dir, copies, run_id, go = sys.argv[1:6]
loaded = load_run(run_dir)
results = [r.model_copy(update={"device": dict(r.device, name="%s-%05d" % (r.device_name, i))})
           for i in range(int(copies)) for r in loaded.results]
big = LoadedRun(loaded.run_dir, dict(loaded.manifest, run_id=run_id), loaded.devices, results)
print("ready", flush=True)
while go and not os.path.exists(go):
    time.sleep(0.005)
with History(url) as h:
    print("storing", flush=True)
    print("stored", h.store_run(big), flush=True)
"""


def child(url, run_dir, copies, run_id, go=""):
    return subprocess.Popen([sys.executable, "-c", CHILD, url, str(run_dir), str(copies), run_id,
                             str(go)], cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def widened(run_dir, copies, run_id):
    loaded = load_run(run_dir)
    results = [r.model_copy(update={"device": dict(r.device, name="%s-%05d"
                                                   % (r.device_name, i))})
               for i in range(copies) for r in loaded.results]
    return LoadedRun(loaded.run_dir, dict(loaded.manifest, run_id=run_id), loaded.devices,
                     results)


def test_a_sqlite_store_killed_midway_leaves_nothing_and_a_later_store_completes_it(
        made, tmp_path):
    run_dir = made.copy(tmp_path / "results", "a1")["a1"]
    path = tmp_path / "history.sqlite"
    url = "sqlite:///%s" % path
    with History(url) as h:
        h.import_path(made.dirs["b1"])   # something stored before, to be kept
    copies, run_id = 3000, made.ids["a1"]
    total = copies * 4
    proc = child(url, run_dir, copies, run_id)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert proc.stdout.readline().strip() == "storing"
        probe = sqlite3.connect(str(path), timeout=0, isolation_level=None)
        wal = path.with_name(path.name + "-wal")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # until the child is inside its write transaction and has written part of the run
            # (its page cache spilled into the WAL, not committed)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                assert "locked" in str(exc)
                if wal.stat().st_size > 4 << 20:
                    break
            if proc.poll() is not None:   # a machine so slow that the store ended unseen
                break
            time.sleep(0.001)
        else:
            pytest.fail("the child never wrote in its transaction")
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert wal.stat().st_size > 4 << 20   # what it wrote (closing the probe checkpoints)
        probe.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (-signal.SIGKILL, 0), err
    with History(url) as h:   # opens as if nothing happened
        stored = len(h.results(run_ids=[run_id]))
        assert stored in (0, total)
        if "stored" not in out:
            assert stored == 0 and h.run(run_id) is None
        assert len(h.results(run_ids=[made.ids["b1"]])) == 1
        done = h.store_run(widened(run_dir, copies, run_id))
        assert (done["added"], done["known"]) == (total - stored, stored)
        assert h.run(run_id)["results"] == total
    check = sqlite3.connect(str(path))
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def test_two_processes_storing_different_runs_at_once_both_succeed(db_url, made, tmp_path):
    """Both open a database that does not exist yet (so both would make the schema) and
    store 2000 results each at the same moment."""
    run_dir = made.copy(tmp_path / "results", "a1")["a1"]
    go = tmp_path / "go"
    ids = [made.ids["a1"] + "-p0", made.ids["a1"] + "-p1"]
    procs = [child(db_url, run_dir, 500, run_id, go) for run_id in ids]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        go.write_text("go")
        outs = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "'added': 2000" in out, out
    with History(db_url) as h:
        assert sorted((r["run_id"], r["results"]) for r in h.runs()) == [(i, 2000) for i in ids]
        assert len(h.results(device="loc1-00042")) == 4
