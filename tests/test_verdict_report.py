"""What the verdicts look like to a user: results.csv's columns and the run's summary line."""

import copy
import csv
import json
from pathlib import Path

from agent import schema
from orchestrator import records, report
from orchestrator.run import verdict_counts

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_ok():
    return json.loads((GOLDEN / "result-ok1.json").read_text())


def test_an_unestablished_tail_percentile_is_empty_in_results_csv_and_the_figures_are_there(
        tmp_path):
    doc = golden_ok()   # 248 samples: p90 and p95 established, p99 and p99.9 not
    doc["validity"].update(p50_ci_ms=[0.19, 0.2], p50_ci_rel=0.025, drift=-0.01)
    assert schema.check_result(doc) == []
    row = report.flat_row(records.from_doc(doc))
    report.write_csv([row], tmp_path / "results.csv")
    with open(tmp_path / "results.csv") as f:
        [written] = list(csv.DictReader(f))
    summary = doc["timing"]["summary"]
    assert summary["p99"] is not None                          # the plain value exists...
    assert written["p99_ms"] == "" and written["p99_9_ms"] == ""   # ...and is not shown
    assert float(written["p90_ms"]) == round(summary["p90"], 6)
    assert float(written["p50_ms"]) == round(summary["p50"], 6)
    assert (written["p50_ci_low_ms"], written["p50_ci_high_ms"]) == ("0.19", "0.2")
    assert (written["p50_ci_rel"], written["drift"]) == ("0.025", "-0.01")


def test_a_result_from_before_the_figures_still_loads_with_them_empty():
    doc = golden_ok()
    assert "p50_ci_rel" not in doc["validity"] and "p50_ci_max" not in doc["settings"]
    row = report.flat_row(records.from_doc(doc))
    assert row["p50_ci_rel"] is None and row["drift"] is None and row["validity"] == "VALID"


def test_the_summary_counts_verdicts_and_says_why_in_a_few_words():
    valid = golden_ok()
    drifting = copy.deepcopy(valid)
    drifting["case_id"] = "c-0000000002"
    drifting["validity"] = {"status": "INVALID", "notes": [], "drift": 0.041,
                            "reasons": ["drift +4.1%: the p50 of the second half of the window is "
                                        "4.1% higher than the first half's (drift_max 3.0%)"]}
    skipped = json.loads((GOLDEN / "result-skip1.json").read_text())
    results = [records.from_doc(d) for d in (valid, drifting, skipped)]
    assert verdict_counts(results) == "2 measured: 1 VALID, 1 INVALID (drift +4.1%)"
    assert verdict_counts(results[:1]) == "1 measured: 1 VALID, 0 INVALID"


def test_comparison_md_lists_each_rows_figures_cv_among_them():
    doc = golden_ok()
    doc["validity"].update(p50_ci_ms=[0.19, 0.2], p50_ci_rel=0.0041, drift=0.003)
    row = report.flat_row(records.from_doc(doc))
    header, body = report.comparison([row], [row["device"]])
    text = report.render_markdown(header, body, [row], row["run_id"])
    assert "## Figures" in text
    assert "p50 +-0.41%%, drift +0.3%%, CV %.1f%%" % (row["cv"] * 100) in text
