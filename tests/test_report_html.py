"""report.html (orchestrator/htmlreport.py) of a real run: the controller runs a suite on two
embedded local devices (transport local, synthetic models) whose agent reads a live fake sysfs
tree (BENCHFLEET_SYS_ROOT: a temperature that rises, a power monitor), so the results have
telemetry series and energy; the suite has back-to-back, sustained, paced, INVALID, failed and
skipped cases. The run is made once for the module.

The page: every section for what the run holds, the table's cells as report.cell gives them,
device strings inert, nothing external, compare's and the history's inputs with their marks,
the caps, and (headless Chromium) every image decoding.
"""

import base64
import html
import os
import re
import shutil
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from livetree import Live, write_file
from orchestrator import htmlreport, records, report, rundir

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"
# What else a device may send: quotes, an entity, mathtext, a bidi override, a glyph no font has
NASTY = HOSTILE + "\"' &amp; $\\frac{1}{0}$ ${x \u202e\x1b[31m\U0001F600\u4e2d"
# The verdict limits are wide so that only the planted case is INVALID, also on a loaded CI
# machine (the page's counts and notes are checked exactly).
QUICK = {"warmup_runs": 2, "warmup_min_s": 0.01, "runs": 50, "min_duration_s": 0.3,
         "max_duration_s": 5, "case_timeout_s": 120, "interval_ms": 20, "p50_ci_max": 1.0,
         "drift_max": 1.0}
DATA_URI = re.compile(r"data:image/(svg\+xml|png);base64,([A-Za-z0-9+/=]+)")
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3",
                "h4", "p", "b", "br", "nav", "a", "section", "table", "thead", "tbody", "tr",
                "th", "td", "ol", "ul", "li", "div", "img", "span", "details", "summary"}


def fake_sys(root):
    """A device tree the agent reads telemetry from, live: the thermal zone warms 2 C/s from
    45 C and the INA219 reads 3 to 4 W, rising each second."""
    write_file(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    write_file(root, "sys/class/hwmon/hwmon0/name", "ina219")

    def tick(t):
        write_file(root, "sys/class/thermal/thermal_zone0/temp", int((45.0 + 2.0 * t) * 1000))
        write_file(root, "sys/class/hwmon/hwmon0/power1_input", int((3.0 + t % 1.0) * 1e6))
    return Live(tick, 0.01)


class Run(object):
    def __init__(self, loaded):
        self.loaded = loaded
        self.run_id, self.devices = loaded.run_id, list(loaded.devices)
        self.results = list(loaded.results)
        self.rows = [report.flat_row(r) for r in self.results]

    def render(self, **kwargs):
        return htmlreport.render_report(self.run_id, self.devices, self.results, self.rows,
                                        suite=self.loaded.suite_name, **kwargs)

    def by_label(self, text):
        return [r for r in self.results if r.label == text]


SUITE = {
    "name": "htmlreport", "settings": QUICK, "cooldown": {"mode": "none"},
    "models": [{"name": "spin", "synthetic_ms": 0.3}, {"name": "spin2", "synthetic_ms": 0.6}],
    "matrix": [
        {"runtime": "synthetic"},
        {"runtime": "synthetic", "models": ["spin"],
         "settings": {"mode": "sustained", "duration_s": 1.0, "window_s": 0.25}},
        {"runtime": "synthetic", "models": ["spin"],
         "settings": {"mode": "paced", "target_fps": 200, "runs": 100}},
        {"runtime": "synthetic", "models": ["spin2"], "options": {"drift": 3.0},
         "settings": {"drift_max": 0.01}},                                      # INVALID
        {"runtime": "synthetic", "models": ["spin2"], "options": {"test_raise": "error"}},
        {"runtime": "synthetic", "models": ["spin"],                            # skipped
         "background": [{"inventory": "gpuload"}]}]}


def make_run(tmp):
    """The real controller runs SUITE on two local devices over a live fake_sys tree: 7 cases, 14
    results (10 ok: 8 VALID, 2 INVALID; 2 failed; 2 skipped). Its run folder."""
    from orchestrator.run import Progress, run_suite
    tmp = Path(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHFLEET_CACHE", str(tmp / "cache"))
        mp.setenv("BENCHFLEET_SYS_ROOT", str(tmp / "sys"))
        inv = tmp / "inv.yaml"
        inv.write_text(yaml.safe_dump({"devices": {
            name: {"transport": "local", "python": sys.executable, "workdir": str(tmp / name)}
            for name in ("alpha", "beta")}}))
        suite = tmp / "s.yaml"
        suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
        with fake_sys(tmp / "sys"), open(os.devnull, "w") as quiet:
            summary = run_suite(suite, [inv], results_dir=tmp / "results",
                                progress=Progress(quiet))
    assert summary.counts == {"ok": 10, "skipped": 2, "failed": 2}, summary.counts
    return summary.run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return Run(rundir.load_run(make_run(tmp_path_factory.mktemp("htmlrun"))))


@pytest.fixture(scope="module")
def page(run):
    return run.render()


# -- reading the page back -----------------------------------------------------------------------

class Parsed(HTMLParser):
    """Tags, attributes, the text, and the table cells of the page (by table id)."""

    def __init__(self, text):
        HTMLParser.__init__(self, convert_charrefs=True)
        self.tags, self.attrs, self.text, self.tables = [], [], [], {}
        self._table, self._row, self._cell = None, None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or "table%d" % len(self.tables),
                                                 [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = [attrs.get("class") or "", attrs.get("title"), ""]
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[2] += data


def plain(parsed):
    """The page's text, whitespace runs as one space."""
    return re.sub(r"\s+", " ", "".join(parsed.text))


def images(text):
    """[(mime, bytes)] of the page's embedded images."""
    return [(m.group(1), base64.b64decode(m.group(2))) for m in DATA_URI.finditer(text)]


def img_count(text):
    assert "plot-failed" not in text, re.findall(r'plot-failed">([^<]*)', text)
    return len(re.findall(r"<img\b", text))


def comparison_cells(text):
    """{(case label, device): (class, title, text)} of the comparison table."""
    rows = Parsed(text).tables["T_cmp"]
    header = [c[2] for c in rows[0]]
    out = {}
    for row in rows[1:]:
        label = re.sub(r"^\d+\. ", "", row[0][2])
        for name, cell in zip(header[1:], row[1:]):
            out[(label, name)] = (cell[0], cell[1], cell[2])
    return out


def plotted_cases(text):
    return re.findall(r'<div class="case" id="case-(\d+)"><h3>\d+\. ([^<]*)</h3>', text)


# -- the page of the run -------------------------------------------------------------------------

def test_the_page_has_every_section_for_what_the_run_holds(run, page):
    parsed = Parsed(page)
    text = plain(parsed)
    assert "benchfleet run %s" % run.run_id in text
    assert "suite htmlreport" in text and "devices: alpha, beta" in text
    assert "14 results: 10 ok (8 VALID, 2 INVALID), 2 skipped, 2 failed" in text
    for section in ("table", "cases", "details"):
        assert 'id="%s"' % section in page
    assert 'id="compare"' not in page           # no comparison given
    labels = {r.label for r in run.results}
    ok_labels = [lab for lab in dict.fromkeys(r.label for r in run.results)
                 if all(x.status == "ok" for x in run.by_label(lab))]
    assert [html.unescape(lab) for _, lab in plotted_cases(page)] == ok_labels
    assert len(ok_labels) == 5 and img_count(page) == 5
    assert len(images(page)) == 5 and all(mime == "svg+xml" for mime, _ in images(page))
    # the cases with no ok result: a row in the table, named as not plotted, no figure
    for label in labels - set(ok_labels):
        assert any(k[0] == label for k in comparison_cells(page))
        assert html.escape(label) in page.split("Not plotted, no ok result:")[1].split("</p>")[0]
    # what each case's figure holds follows its results
    plotter = htmlreport._Plotter(run.devices)
    panels = {}
    for case in htmlreport._cases(run.rows, run.results):
        if case.ok(run.devices):
            panels[case.label] = plotter.panels(case.ok(run.devices))
    base = ["bars", "cdf", "timeline", "temperature", "power", "energy"]
    sustained = [lab for lab in panels if "sustained" in lab]
    assert len(sustained) == 1 and panels[sustained[0]] == base[:5] + ["windows", "energy"]
    assert all(p == base for lab, p in panels.items() if lab not in sustained)
    # comparison.md's other sections
    for heading in ("Notes", "Figures", "Energy", "Paced", "Sustained"):
        assert "<h3>%s</h3>" % heading in page
    assert page.count("<details><summary>") == 2           # a sustained table per device
    assert "INVALID" in text and "RuntimeError: synthetic test_raise: error requested" in text


def test_the_tables_numbers_are_the_rows(run, page):
    cells = comparison_cells(page)
    notes = re.findall(r'<li id="note-(\d+)"><b>([^<]*)</b>, ([^:<]*): ([^:<]*): ', page)
    noted = {(html.unescape(lab), html.unescape(dev)): (int(n), what)
             for n, dev, lab, what in notes}
    assert len(cells) == len(run.rows) == 14
    for row in run.rows:
        klass, title, text = cells[(row["label"], row["device"])]
        want = report.cell(row)
        if (row["label"], row["device"]) in noted:
            n, what = noted[(row["label"], row["device"])]
            want += " [%d]" % n
            assert title, row
        assert text == want, (row["label"], row["device"])
        if row["status"] == "ok":
            p50, p99, first = text.split(" [")[0].rstrip(" *").split(" / ")
            assert p50 == report._ms(row["p50_ms"]) and first == report._ms(row["first_ms"])
            assert p99 == report._ms(row["p99_cons_ms"])
        if row.get("validity") == "INVALID":
            assert "invalid" in klass.split() and text.endswith("* [%d]" % noted[
                (row["label"], row["device"])][0])
            assert title == "; ".join(x for x in (row["validity_reasons"], row["reason"]) if x)
        elif row["status"] in ("skipped", "failed"):
            assert row["status"] in klass.split() and title == row["reason"]
    assert sorted(n for n, _ in noted.values()) == list(range(1, 7))   # 2 INVALID, 2+2 not ok


def test_device_strings_stay_inert_text(run):
    results = []
    for r in run.results:
        update = {"label": NASTY + (r.label or ""),
                  "device": dict(r.device, name=NASTY + r.device_name)}
        if r.reason:
            update["reason"] = NASTY
        if r.validity is not None:
            update["validity"] = r.validity.model_copy(update={"reasons": [NASTY] * 2})
        series = r.telemetry.get("series") if isinstance(r.telemetry, dict) else None
        if series:
            renamed = {(k + NASTY if k != "t_s" else k): v for k, v in series.items()}
            update["telemetry"] = dict(r.telemetry, series=renamed)
        results.append(r.model_copy(update=update))
    rows = [report.flat_row(r) for r in results]
    devices = [NASTY + d for d in run.devices]
    comparison = {"a": {"label": NASTY}, "b": {"label": NASTY}, "threshold": 0.05,
                  "rows": [{"device": rows[0]["device"], "case_id": rows[0]["case_id"],
                            "label": NASTY, "verdict": "slower", "p50_a_ms": 1.0,
                            "p50_b_ms": 1.2, "ratio": 1.2, "p_value": 0.001, "why": NASTY}],
                  "counts": {"faster": 0, "slower": 1, "same": 0, "not comparable": 0},
                  "regression": True}
    trends = [{"device": rows[0]["device"], "case_id": rows[0]["case_id"], "label": NASTY,
               "points": [{"run_id": NASTY, "started_at": "2026-12-0%dT03:00:17Z" % d,
                           "p50_ms": 1.0 + d, "p99_ms": 2.0, "validity": "VALID",
                           "change": "slower x1.1 " + NASTY if d == 3 else None}
                          for d in (1, 2, 3)]}]
    page = htmlreport.render_report(NASTY, devices, results, rows, suite=NASTY,
                                    comparison=comparison, trends=trends)
    parsed = Parsed(page)
    assert set(parsed.tags) <= ALLOWED_TAGS, set(parsed.tags) - ALLOWED_TAGS
    assert "script" not in parsed.tags
    for tag, attrs in parsed.attrs:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/svg+xml;base64,")
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "\u202e" not in page and "\x1b" not in page
    # the string is on the page as text: escaped, its bidi override dropped
    shown = html.escape(NASTY.replace("\u202e", "").replace("\x1b", ""), quote=True)
    assert page.count(shown) > 20
    assert any(NASTY.replace("\u202e", "").replace("\x1b", "") in t for t in parsed.text)
    titles = [c[1] for c in sum(parsed.tables["T_cmp"], []) if c[1]]
    assert titles and all(NASTY.replace("\u202e", "").replace("\x1b", "") in t for t in titles)
    # inside the plots text is drawn as paths: no <text>, no script, none of the string
    assert img_count(page) == 5
    for _, svg in images(page):
        assert b"<text" not in svg and b"<script" not in svg.lower()
        assert b"alert" not in svg and b"<!--" not in svg and b"onerror" not in svg


def _strip_data(text):
    return DATA_URI.sub("data:", text)


def test_nothing_external_no_script(run, page):
    body = _strip_data(page).lower()
    for bad in ("http:", "https:", "//", "file:", "<script", "javascript:", "<iframe",
                "<object", "<embed", "<link", "@import", "url("):
        assert bad not in body, bad
    assert "content-security-policy" in body and "default-src 'none'; img-src data:;" in body
    assert all(a.get("href", "#").startswith("#") for _, a in Parsed(page).attrs)
    for _, svg in images(page):
        text = svg.decode("utf-8")
        text = re.sub(r'xmlns(:\w+)?="[^"]*"', "", text)
        assert "http" not in text and "file:" not in text and "//" not in text
        assert "<!DOCTYPE" not in text and "<!ENTITY" not in text
        assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))


def test_write_report_writes_the_page_beside_the_run(run, tmp_path):
    path = htmlreport.write_report(tmp_path, run.run_id, run.devices, run.results, run.rows,
                                   suite="htmlreport")
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert img_count(text) == 5 and [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_comparison_renders_with_its_verdicts(run):
    first = [r for r in run.rows if r["status"] == "ok"]
    verdicts = ["slower", "faster", "same", "not comparable"]
    comparison = {
        "a": {"label": "baseline: 5 runs (20261201-010000-aaaa, ...)"},
        "b": {"label": run.run_id}, "threshold": 0.05,
        "rows": [{"device": r["device"], "case_id": r["case_id"], "label": r["label"],
                  "verdict": v, "p50_a_ms": 0.25, "p50_b_ms": 0.3125,
                  "ratio": 1.25 if v == "slower" else 0.8 if v == "faster" else 1.0,
                  "p_value": 0.0004, "why": "runtime_version 1 -> 2" if v == "not comparable"
                  else None} for r, v in zip(first, verdicts)],
        "counts": {"faster": 1, "slower": 1, "same": 1, "not comparable": 1},
        "regression": True}
    page = run.render(comparison=comparison)
    assert 'id="compare"' in page and 'href="#compare"' in page
    parsed = Parsed(page)
    rows = parsed.tables["T_cmpab"]
    assert [c[2] for c in rows[0]] == ["case", "device", "verdict", "p50 A ms", "p50 B ms",
                                       "B / A", "p", "why"]
    body = {c[2]: (c[0], [x[2] for x in row]) for row in rows[1:] for c in row[2:3]}
    assert set(body) == set(verdicts)
    assert "v-slower" in body["slower"][0].split() and "v-faster" in body["faster"][0].split()
    assert "v-nc" in body["not comparable"][0].split()
    assert body["slower"][1][3:6] == ["0.25", "0.3125", "x1.250"]
    assert body["not comparable"][1][7] == "runtime_version 1 -> 2"
    text = plain(parsed)
    assert "1 faster, 1 slower, 1 same, 1 not comparable" in text
    assert "a change under 5% counts as the same" in text
    assert 'id="regression"' in page and "Regression: B is slower" in text
    assert "baseline: 5 runs (20261201-010000-aaaa, ...)" in text
    # and beside each case it concerns
    assert "vs A: slower x1.250" in text and "vs A: faster x0.800" in text
    quiet = run.render(comparison=dict(comparison, regression=False))
    assert "No regression." in quiet


def test_trends_render_with_their_changes(run):
    ok = [r for r in run.rows if r["status"] == "ok"]
    target = ok[0]
    points = [{"run_id": "2026120%d-030017-abcd" % d, "started_at": "2026-12-0%dT03:00:17Z" % d,
               "p50_ms": p50, "p99_ms": p50 * 1.5, "validity": "VALID", "change": change}
              for d, p50, change in [(1, 0.30, None), (2, 0.31, None),
                                     (3, 0.36, "slower x1.12"),
                                     (4, 0.36, "not comparable: runtime_version 2.14.0 -> 2.15.0"),
                                     (5, 0.30, "faster x0.85")]]
    trends = [{"device": d, "case_id": target["case_id"], "label": target["label"],
               "points": points} for d in run.devices]
    trends.append({"device": "alpha", "case_id": "c-gone000000", "label": "a case since dropped",
                   "points": points[:3]})
    page = run.render(trends=trends)
    text = plain(Parsed(page))
    assert "alpha, run 20261203-030017-abcd (2026-12-03T03:00:17Z): slower x1.12" in text
    assert "beta, run 20261204-030017-abcd (2026-12-04T03:00:17Z): not comparable: " \
        "runtime_version 2.14.0 -> 2.15.0" in text
    assert text.count("faster x0.85") == 2
    assert 'id="other-trends"' in page and "a case since dropped" in text
    assert img_count(page) == 5 + 1          # the dropped case's trend has a figure of its own
    case = next(c for c in htmlreport._cases(run.rows, run.results)
                if c.case_id == target["case_id"])
    plotter = htmlreport._Plotter(run.devices)
    assert plotter.panels(case.ok(run.devices), trends[:2])[-1] == "trend"


def test_a_case_with_no_ok_result_and_a_run_with_none(run):
    bad = [(res, row) for res, row in zip(run.results, run.rows) if row["status"] != "ok"]
    results, rows = [b[0] for b in bad], [b[1] for b in bad]
    page = htmlreport.render_report(run.run_id, run.devices, results, rows)
    assert img_count(page) == 0 and "No case has an ok result: nothing to plot." in page
    assert "4 results: 0 ok (0 VALID, 0 INVALID), 2 skipped, 2 failed" in plain(Parsed(page))
    assert len(comparison_cells(page)) == 4
    empty = htmlreport.render_report(run.run_id, [], [], [])
    assert "No results in this run." in empty and img_count(empty) == 0
    assert empty.rstrip().endswith("</html>")


def _doc(result, **changes):
    doc = result.to_doc()
    doc.update(changes)
    return doc


def test_caps_hold_for_100000_latencies_and_long_series(run):
    import random
    rng = random.Random(1)
    base = next(r for r in run.results if r.status == "ok" and r.settings.get("mode")
                in (None, "back_to_back") and r.telemetry.get("series"))
    doc = base.to_doc()
    lat = [0.3 + rng.expovariate(20.0) + (5.0 if i % 9973 == 0 else 0.0) for i in range(100000)]
    doc["timing"] = dict(doc["timing"], latencies_ms=lat, runs=len(lat))
    t = [i * 0.02 for i in range(5000)]   # past the schema's 2000: capped again here
    doc["telemetry"] = dict(doc["telemetry"], series={
        "t_s": t, "temp_c:zone": [45.0 + x for x in t], "power_w:ina": [3.0] * len(t)})
    big = records.from_doc(doc)
    x, y = htmlreport.cdf_points(lat)
    assert len(x) <= htmlreport.MAX_CDF_POINTS and x[0] == min(lat) and x[-1] == max(lat)
    assert y[-1] == 1.0 and list(x) == sorted(x)
    ix, iy = htmlreport.series_points(lat)
    assert len(ix) <= htmlreport.MAX_SERIES_POINTS and max(iy) == max(lat)
    assert sum(v > 5.0 for v in iy) == sum(v > 5.0 for v in lat)   # every spike kept
    mx, _ = htmlreport.rolling_median(lat)
    assert len(mx) <= htmlreport.MAX_SERIES_POINTS
    started = time.perf_counter()
    page = htmlreport.render_report(run.run_id, [base.device_name], [big],
                                    [report.flat_row(big)])
    took = time.perf_counter() - started
    [(_, svg)] = images(page)
    points = len(re.findall(rb"[ML] ?-?[\d.]+ -?[\d.]+", svg))
    assert points < 4 * (htmlreport.MAX_CDF_POINTS + htmlreport.MAX_SERIES_POINTS), points
    assert len(page) < 600_000, len(page)
    assert took < 10, took


def test_at_most_max_cases_plotted_the_rest_named(run, monkeypatch):
    monkeypatch.setattr(htmlreport, "MAX_CASES_PLOTTED", 2)
    page = run.render()
    assert img_count(page) == 2 and len(plotted_cases(page)) == 2
    left = re.search(r'<p class="note" id="cases-left-out">([^<]*(?:<[^p][^<]*)*)</p>', page)
    assert left and left.group(1).startswith("3 more case(s) not plotted (at most 2 are): 3. ")
    trends = [{"device": "alpha", "case_id": "c-gone%06d" % n, "label": "gone %d" % n,
               "points": [{"run_id": "r", "started_at": "2026-12-01T03:00:17Z", "p50_ms": 1.0,
                           "p99_ms": 2.0, "validity": "VALID", "change": None}]}
              for n in range(2)]
    page = run.render(trends=trends)   # the cap counts trend figures too
    assert img_count(page) == 2 and "2 more trend(s) not plotted (at most 2 figures): " \
        "gone 0, gone 1." in page


def test_a_plot_that_fails_costs_only_its_figure(run, monkeypatch):
    def boom(self, ax, ok):
        raise RuntimeError("boom <b>")
    monkeypatch.setattr(htmlreport._Plotter, "_energy", boom)
    page = run.render()
    failed = re.findall(r'<p class="note plot-failed">([^<]*)</p>', page)
    assert failed == ["plot failed: RuntimeError: boom &lt;b&gt;"] * 5
    assert "<img" not in page and len(comparison_cells(page)) == 14
    assert "<h3>Energy</h3>" in page


def test_png_images_and_threads(run, monkeypatch):
    pair = [(res, row) for res, row in zip(run.results, run.rows)
            if row["case_id"] == run.rows[0]["case_id"]]
    results, rows = [p[0] for p in pair], [p[1] for p in pair]
    monkeypatch.setattr(htmlreport, "IMAGE_FORMAT", "png")
    page = htmlreport.render_report(run.run_id, run.devices, results, rows)
    assert [m for m, _ in images(page)] == ["png"]
    assert images(page)[0][1].startswith(b"\x89PNG")
    monkeypatch.setattr(htmlreport, "IMAGE_FORMAT", "svg")
    out, errors = [], []

    def render():
        try:
            out.append(htmlreport.render_report(run.run_id, run.devices, results, rows))
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=render) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 3 and all(img_count(p) == 1 for p in out)


def test_a_seven_case_run_renders_quickly(run):
    run.render()   # imports and font caches warm
    started = time.perf_counter()
    run.render()
    took = time.perf_counter() - started
    # about 0.7 s on a 2-core machine; the bound leaves room for a loaded CI runner
    assert took < 8, took


# -- in a browser --------------------------------------------------------------------------------

def test_chromium_renders_the_page_with_every_image(run, page, tmp_path):
    import chromium
    reason = chromium.missing_reason()
    if reason and os.environ.get("BENCHFLEET_REQUIRE_CHROMIUM") == "1":
        pytest.fail("BENCHFLEET_REQUIRE_CHROMIUM=1: %s" % reason)
    if reason:
        pytest.skip(reason)
    comparison = {"a": {"label": "a"}, "b": {"label": "b"}, "threshold": 0.05, "rows": [],
                  "counts": {}, "regression": False}
    trends = [{"device": "alpha", "case_id": "c-gone000000", "label": "gone",
               "points": [{"run_id": "r%d" % d, "started_at": "2026-12-0%dT03:00:17Z" % d,
                           "p50_ms": 0.3, "p99_ms": 0.4, "validity": "VALID", "change": None}
                          for d in (1, 2)]}]
    text = run.render(comparison=comparison, trends=trends)
    path = tmp_path / "report.html"
    path.write_text(text, encoding="utf-8")
    loaded, total, title = chromium.images(path, tmp_path)
    assert title == "benchfleet run %s" % run.run_id
    assert total == img_count(text) == 6 and loaded == total
    shot = chromium.screenshot(path, tmp_path / "report.png", 1400, 3000)
    data = Path(shot).read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 50_000
    keep = os.environ.get("BENCHFLEET_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
