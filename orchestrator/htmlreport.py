"""report.html: one run as a self-contained page of tables and plots.

    render_report(run_id, devices, results, rows, suite=, comparison=, trends=) -> the HTML text
    write_report(run_dir, ...)  -> run_dir/report.html, written atomically

results are the run's records.Result (plan order), rows report.flat_row of each (same order),
devices the table's column order. `comparison` is compare's document (`benchfleet compare`,
`run --compare-to`) and `trends` the history's p50 per case over runs; both optional.

The page holds the header (run, suite, devices, counts), the comparison table of comparison.md
(pandas; report.cell's text, INVALID / skipped / failed cells classed, titled with their reasons
and numbered into the notes), compare's verdicts, one figure per case with an ok result (p50 bars
with p99 whiskers, latency CDF, every sample in order with a rolling median and the first
inference marked, and where the results have them: temperature, power, the sustained windows'
p50, energy per inference, the p50 over past runs), then comparison.md's other sections.

Safe to open from anyone's run: every string a device or a result supplied is HTML-escaped; the
page has no script, no external reference (a Content-Security-Policy says so to the browser
too) and no other file: the plots are images in data: URIs, drawn by matplotlib on Figure
objects of their own (no pyplot state: thread-safe, nothing leaks between reports), their
text drawn as paths (svg.fonttype path) and the SVG's comments (where matplotlib copies the
text) stripped. Plotted data is capped (MAX_CDF_POINTS, MAX_SERIES_POINTS, MAX_CASES_PLOTTED)
so a result with 100000 latencies or a run with hundreds of cases stays a page of a few MB.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from datetime import datetime
from pathlib import Path

from agent.fsutil import atomic_write_text
from orchestrator import escape, report

REPORT_NAME = "report.html"
MAX_CDF_POINTS = 1000       # per curve
MAX_SERIES_POINTS = 2000    # per curve: samples in order, telemetry channels, windows
MAX_CASES_PLOTTED = 200     # cases with a figure; the others are named in a note
MAX_CHANNELS = 3            # temperature / power channels plotted per device (the hottest first)
PLOT_TEXT = 40              # characters of a device's string inside a plot
# "svg" (vector, text as paths) or "png" (Agg): tests/perf/bench_report.py measures both.
IMAGE_FORMAT = "svg"
PNG_DPI = 80

PANEL_W, PANEL_H = 4.6, 2.5     # inches per panel; a case's figure is up to 3 (4) panels wide
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
LINE_STYLES, LINE_STYLES_SAID = ("-", "--", ":"), ("solid", "dashed", "dotted")   # channels
VERDICT_CLASS = {"faster": "v-faster", "slower": "v-slower", "same": "v-same",
                 "not comparable": "v-nc"}

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0 auto;padding:0 20px 40px;max-width:1400px;color:#222;background:#fff}
h1{font-size:22px;margin:18px 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 4px}h4{font-size:14px;margin:12px 0 4px}
.meta{color:#444;margin:2px 0}.meta b{color:#222}
nav a{margin-right:14px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f2f2f2}tbody th{font-weight:normal;background:#fafafa;max-width:420px}
td{font-variant-numeric:tabular-nums;white-space:nowrap}
td.invalid{background:#fff3cd}td.skipped{color:#777;background:#f4f4f4}
td.failed{background:#f8d7da;color:#842029}
.v-slower{background:#f8d7da;color:#842029;font-weight:bold}
.v-faster{background:#d1e7dd;color:#0f5132}.v-nc{background:#eee;color:#555}
span.v-slower,span.v-faster,span.v-nc{padding:0 3px;border-radius:3px}
.banner{padding:6px 10px;margin:8px 0;border-radius:4px}
.bad{background:#f8d7da;color:#842029}.good{background:#d1e7dd;color:#0f5132}
.case{margin:18px 0 26px}.facts{margin:2px 0 6px;color:#333}
.facts .inv{color:#8a6d00;font-weight:bold}
img.plot{display:block;max-width:100%;height:auto;border:1px solid #eee}
ol.notes li,ul.changes li{margin:2px 0}.note{color:#555}
details>summary{cursor:pointer;font-weight:bold;margin:6px 0}
"""
# No script may run and nothing may load from elsewhere, whatever a string got past escaping.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_report(run_dir, run_id, devices, results, rows, *, suite=None, comparison=None,
                 trends=None) -> Path:
    """run_dir/report.html (render_report's page), written atomically; its path."""
    path = Path(run_dir) / REPORT_NAME
    atomic_write_text(str(path), render_report(run_id, devices, results, rows, suite=suite,
                                               comparison=comparison, trends=trends))
    return path


def render_report(run_id: str, devices: list[str], results: list, rows: list[dict], *,
                  suite: str | None = None, comparison: dict | None = None,
                  trends: list[dict] | None = None) -> str:
    """The page of one run (see the module's doc)."""
    rows = list(rows)
    results = list(results)
    if len(results) != len(rows):   # rows without their results: the rows' own, where kept
        results = [getattr(r, "result", None) for r in rows]
    devices = [str(d) for d in devices]
    for row in rows:   # a device with a row but missing from `devices` still gets its column
        if str(row.get("device")) not in devices:
            devices.append(str(row.get("device")))
    cases = _cases(rows, results)
    page = _Page()
    page.add('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
    page.add('<meta http-equiv="Content-Security-Policy" content="%s">' % CSP)
    page.add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    page.add("<title>benchfleet run %s</title><style>%s</style></head><body>"
             % (_h(run_id), CSS))
    _header(page, run_id, suite, devices, rows, comparison, trends)
    notes = _table_section(page, cases, devices, rows)
    if comparison:
        _compare_section(page, comparison)
    _cases_section(page, cases, devices, comparison, trends, notes)
    _details_section(page, rows)
    page.add("</body></html>\n")
    return page.text()


# -- the page ------------------------------------------------------------------------------------

class _Page:
    def __init__(self):
        self.parts = []

    def add(self, text):
        self.parts.append(text)

    def text(self):
        return "\n".join(self.parts)


def _h(value) -> str:
    """Text (anything a device sent) as HTML text: control characters dropped, escaped."""
    return html.escape(escape.terminal("" if value is None else value, limit=None), quote=True)


def _t(value) -> str:
    """Text (anything a device sent) as one plain line, before pandas escapes it."""
    return escape.terminal("" if value is None else value, limit=None)


def _a(value) -> str:
    """As _h, for an attribute value."""
    return _h(value)


class _Case:
    """One case of the run: its rows and results per device, in the table's order."""

    def __init__(self, number, case_id, label):
        self.number, self.case_id, self.label = number, case_id, label
        self.by_device = {}    # device -> (row, result)

    def ok(self, devices):
        """[(device index, device, row, result)] of the devices with an ok, timed result."""
        out = []
        for i, device in enumerate(devices):
            row, result = self.by_device.get(device, (None, None))
            if row is not None and row.get("status") == "ok" and result is not None and \
                    result.timing is not None:
                out.append((i, device, row, result))
        return out

    @property
    def anchor(self):
        return "case-%d" % self.number


def _cases(rows, results) -> list:
    cases, order = {}, []
    for row, result in zip(rows, results):
        cid = str(row.get("case_id"))
        if cid not in cases:
            cases[cid] = _Case(len(order) + 1, cid, row.get("label") or cid)
            order.append(cid)
        cases[cid].by_device.setdefault(str(row.get("device")), (row, result))
    return [cases[c] for c in order]


def _header(page, run_id, suite, devices, rows, comparison, trends):
    status = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "skipped", "failed")}
    valid = sum(r.get("status") == "ok" and r.get("validity") == "VALID" for r in rows)
    invalid = sum(r.get("status") == "ok" and r.get("validity") == "INVALID" for r in rows)
    page.add("<header><h1>benchfleet run %s</h1>" % _h(run_id))
    if suite:
        page.add('<p class="meta">suite <b>%s</b></p>' % _h(suite))
    page.add('<p class="meta">devices: %s</p>' % (", ".join(
        "<b>%s</b>" % _h(d) for d in devices) or "none"))
    page.add('<p class="meta" id="counts">%d results: <b>%d ok</b> (%d VALID, %d INVALID), '
             '%d skipped, %d failed</p>' % (len(rows), status["ok"], valid, invalid,
                                            status["skipped"], status["failed"]))
    links = ['<a href="#table">table</a>']
    if comparison:
        links.append('<a href="#compare">compare</a>')
    links += ['<a href="#cases">plots</a>', '<a href="#details">details</a>']
    page.add("<nav>%s</nav></header>" % "".join(links))


# -- the comparison table ------------------------------------------------------------------------

def _styled(frame, classes=None, titles=None, uid="t", index=True):
    """A DataFrame as an HTML table through pandas' Styler: every cell and header escaped by
    pandas; `classes` (a frame of CSS class names) and `titles` (a frame of tooltips, escaped
    here: pandas writes a title attribute as given) per cell."""
    styler = frame.style
    styler.set_uuid(uid)
    styler = styler.format(escape="html", na_rep="-").format_index(escape="html", axis=0) \
        .format_index(escape="html", axis=1)
    if classes is not None:
        styler = styler.set_td_classes(classes)
    if titles is not None:
        styler = styler.set_tooltips(titles.map(lambda t: _a(t) if t else ""),
                                     as_title_attribute=True)
    if not index:
        styler = styler.hide(axis="index")
    return styler.to_html()


def _unique(labels):
    seen, out = {}, []
    for text in labels:
        seen[text] = seen.get(text, 0) + 1
        out.append(text if seen[text] == 1 else "%s (%d)" % (text, seen[text]))
    return out


def _table_section(page, cases, devices, rows) -> dict:
    """The comparison table and its notes; {(case_id, device): note number}."""
    import pandas as pd
    emulated = {str(r.get("device")) for r in rows if r.get("emulated")}
    columns = [d + " (emulated)" if d in emulated else d for d in devices]
    notes, numbered = [], {}
    body, classes, titles = [], [], []
    for case in cases:
        cells, kinds, tips = [], [], []
        for device in devices:
            row, _ = case.by_device.get(device, (None, None))
            if row is None:
                cells.append("-"), kinds.append(""), tips.append("")
                continue
            text, kind, why = report.cell(row), "", None
            status = row.get("status")
            if status != "ok":
                kind = "skipped" if status == "skipped" else "failed"
                why = row.get("reason") or row.get("substatus") or status
                what = status
            elif row.get("validity") == "INVALID":
                kind, what = "invalid", "INVALID"
                why = "; ".join(x for x in (row.get("validity_reasons"), row.get("reason")) if x)
            elif row.get("reason"):
                what, why = "ok", row.get("reason")
            if why is not None:
                notes.append((device, case, what, why))
                numbered[(case.case_id, device)] = len(notes)
                text += " [%d]" % len(notes)
            cells.append(text), kinds.append(kind), tips.append(why or "")
        body.append(cells), classes.append(kinds), titles.append(tips)
    # pandas escapes the markup; control characters and bidi overrides go here (escape.terminal)
    body = [[_t(c) for c in r] for r in body]
    index = pd.Index(_unique([_t("%d. %s" % (c.number, c.label)) for c in cases]))
    columns = _unique([_t(c) for c in columns])
    page.add('<section id="table"><h2>Comparison</h2>')
    page.add('<p class="note">Cells: p50 / p99 / first inference, in ms. p99 is the '
             '99%-confidence upper bound; n/e = not established (too few samples). '
             '* = INVALID; [n] = the note below (hover a cell for it).</p>')
    if cases and devices:
        frame = pd.DataFrame(body, index=index, columns=pd.Index(columns, name="case"))
        page.add(_styled(frame, pd.DataFrame(classes, index=index, columns=frame.columns),
                         pd.DataFrame(titles, index=index, columns=frame.columns), uid="cmp"))
    else:
        page.add("<p>No results in this run.</p>")
    if emulated:
        page.add('<p class="note">Emulated device(s): %s. Their numbers come from an emulator: '
                 'they prove the software stack works, never how fast the board is, and are not '
                 'comparable with a real device\'s.</p>' % ", ".join(_h(d) for d in
                                                                   sorted(emulated)))
    if notes:
        page.add('<h3>Notes</h3><ol class="notes">')
        for i, (device, case, what, why) in enumerate(notes, 1):
            page.add('<li id="note-%d"><b>%s</b>, %s: %s: %s</li>'
                     % (i, _h(device), _h(case.label), _h(what), _h(why)))
        page.add("</ol>")
    page.add("</section>")
    return numbered


def _num(value, fmt="%.3g"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return fmt % value


def _compare_section(page, comparison):
    import pandas as pd
    a = (comparison.get("a") or {}).get("label") if isinstance(comparison.get("a"), dict) else None
    b = (comparison.get("b") or {}).get("label") if isinstance(comparison.get("b"), dict) else None
    page.add('<section id="compare"><h2>Compared</h2>')
    page.add('<p class="meta">A: <b>%s</b><br>B: <b>%s</b></p>' % (_h(a or "-"), _h(b or "-")))
    counts = comparison.get("counts") or {}
    threshold = comparison.get("threshold")
    page.add('<p class="meta" id="compare-counts">%s%s</p>' % (", ".join(
        '<span class="%s">%s %s</span>' % (VERDICT_CLASS.get(k, ""), _h(_num(counts.get(k), "%d")),
                                           _h(k))
        for k in ("faster", "slower", "same", "not comparable")),
        "; a change under %s counts as the same" % _h(_num(threshold * 100.0, "%g%%"))
        if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) else ""))
    if comparison.get("regression"):
        page.add('<p class="banner bad" id="regression">Regression: B is slower than A '
                 'beyond the threshold.</p>')
    else:
        page.add('<p class="banner good" id="regression">No regression.</p>')
    items = [r for r in comparison.get("rows") or [] if isinstance(r, dict)]
    if items:
        columns = ["case", "device", "verdict", "p50 A ms", "p50 B ms", "B / A", "p", "why"]
        body = [[r.get("label") or r.get("case_id") or "-", r.get("device") or "-",
                 r.get("verdict") or "-", _num(r.get("p50_a_ms"), "%.4g"),
                 _num(r.get("p50_b_ms"), "%.4g"), _num(r.get("ratio"), "x%.3f"),
                 _num(r.get("p_value"), "%.2g"), r.get("why") or ""] for r in items]
        body = [[_t(c) for c in r] for r in body]
        frame = pd.DataFrame(body, columns=columns)
        classes = pd.DataFrame([["", "", VERDICT_CLASS.get(r.get("verdict"), "")] + [""] * 5
                                for r in items], columns=columns)
        page.add(_styled(frame, classes, uid="cmpab", index=False))
    page.add("</section>")


# -- per case ------------------------------------------------------------------------------------

def _cases_section(page, cases, devices, comparison, trends, notes):
    trend_of = {}
    for t in trends or []:
        if isinstance(t, dict) and isinstance(t.get("points"), list):
            trend_of.setdefault(str(t.get("case_id")), []).append(t)
    verdicts = {}
    for r in (comparison or {}).get("rows") or []:
        if isinstance(r, dict):
            verdicts[(str(r.get("case_id")), str(r.get("device")))] = r
    plotted = [c for c in cases if c.ok(devices)]
    left = plotted[MAX_CASES_PLOTTED:]
    plotted = plotted[:MAX_CASES_PLOTTED]
    page.add('<section id="cases"><h2>Per case</h2>')
    page.add('<p class="note">Per case: p50 bars with the p99 as whisker (hatched: INVALID); '
             'the latency CDF; every sample in order with its rolling median, the first '
             'inference (before warm-up) as a star; and what the results hold besides: '
             'temperature and power over the measured window, the sustained windows\' p50, '
             'energy per inference, the p50 over past runs. Colors are devices.</p>')
    if not plotted:
        page.add("<p>No case has an ok result: nothing to plot.</p>")
    unplotted = [c for c in cases if not c.ok(devices)]
    if unplotted:
        page.add('<p class="note">Not plotted, no ok result: %s.</p>'
                 % ", ".join('%d. %s' % (c.number, _h(c.label)) for c in unplotted))
    if left:
        page.add('<p class="note" id="cases-left-out">%d more case(s) not plotted (at most %d '
                 'are): %s.</p>' % (len(left), MAX_CASES_PLOTTED, ", ".join(
                     "%d. %s" % (c.number, _h(c.label)) for c in left)))
    legend = _legend_html(devices)
    plotter = _Plotter(devices)
    for case in plotted:
        ok = case.ok(devices)
        page.add('<div class="case" id="%s"><h3>%d. %s</h3>' % (case.anchor, case.number,
                                                              _h(case.label)))
        facts = []
        for _, device, row, _ in ok:
            fact = "<b>%s</b>: p50 %s ms, p99 %s ms" % (_h(device), _h(report._ms(
                row.get("p50_ms"))), _h(report._ms(row.get("p99_cons_ms"))))
            if row.get("validity") == "INVALID":
                fact += ' <span class="inv">INVALID</span>'
            if (case.case_id, device) in notes:
                n = notes[(case.case_id, device)]
                fact += ' <a href="#note-%d">[%d]</a>' % (n, n)
            v = verdicts.get((case.case_id, device))
            if v is not None:
                fact += ' <span class="%s">%s</span>' % (VERDICT_CLASS.get(v.get("verdict"), ""),
                                                       _h("vs A: %s %s" % (
                                                           v.get("verdict"),
                                                           _num(v.get("ratio"), "x%.3f"))))
            facts.append(fact)
        page.add('<p class="facts">%s</p>' % "; ".join(facts))
        page.add(legend)
        image = _guarded(plotter.case_figure, case, ok, trend_of.get(case.case_id, []))
        if image.startswith("data:"):
            page.add('<img class="plot" alt="plots of case %d" src="%s">' % (case.number, image))
        else:
            page.add('<p class="note plot-failed">%s</p>' % _h(image))
        channels = _channel_note(ok)
        if channels:
            page.add('<p class="note">%s</p>' % channels)
        _changes(page, trend_of.get(case.case_id, []))
        page.add("</div>")
    # Trends of cases without a figure of their own in this run (not run, or no ok result).
    shown = {c.case_id for c in plotted}
    others = [cid for cid in trend_of if cid not in shown]
    room = max(0, MAX_CASES_PLOTTED - len(plotted))   # the cap counts these figures too
    if others:
        page.add('<h3 id="other-trends">p50 over runs: cases without a plot above</h3>')
    if len(others) > room:
        page.add('<p class="note" id="trends-left-out">%d more trend(s) not plotted (at most %d '
                 'figures): %s.</p>' % (len(others) - room, MAX_CASES_PLOTTED, ", ".join(
                     _h(trend_of[cid][0].get("label") or cid) for cid in others[room:])))
    for n, cid in enumerate(others[:room]):
        group = trend_of[cid]
        page.add('<div class="case"><h4>%s</h4>' % _h(group[0].get("label") or cid))
        image = _guarded(plotter.trend_figure, group)
        if image.startswith("data:"):
            page.add('<img class="plot" alt="p50 over runs %d" src="%s">' % (n + 1, image))
        else:
            page.add('<p class="note plot-failed">%s</p>' % _h(image))
        _changes(page, group)
        page.add("</div>")
    page.add("</section>")


def _guarded(draw, *args) -> str:
    """draw(*args): a data: URI, or what went wrong (a plot never costs the page)."""
    try:
        return draw(*args)
    except Exception as exc:   # noqa: BLE001 - the page is written either way
        return "plot failed: %s: %s" % (type(exc).__name__, exc)


def _legend_html(devices):
    return '<p class="facts">%s</p>' % " ".join(
        '<span style="color:%s">&#9632;</span> %s' % (COLORS[i % len(COLORS)], _h(d))
        for i, d in enumerate(devices))


def _channel_note(ok) -> str:
    """Which line is which sensor, where a device has a temperature or power series:
    'temperature: alpha solid cpu-thermal, dashed gpu-thermal; ...' (HTML)."""
    parts = []
    for prefix, what in (("temp_c:", "temperature"), ("power_w:", "power")):
        lines = []
        for _, device, _, result in ok:
            names = _channels(_series(result), prefix)
            if names:
                lines.append("%s %s" % (_h(device), ", ".join(
                    "%s %s" % (style, _h(name[len(prefix):]))
                    for style, name in zip(LINE_STYLES_SAID, names))))
        if lines:
            parts.append("%s: %s" % (what, "; ".join(lines)))
    return " &middot; ".join(parts)


def _changes(page, group):
    items = []
    for t in group:
        for p in t.get("points") or []:
            if isinstance(p, dict) and p.get("change"):
                items.append("<li><b>%s</b>, run %s (%s): %s</li>" % (
                    _h(t.get("device")), _h(p.get("run_id")), _h(p.get("started_at")),
                    _h(p.get("change"))))
    if items:
        page.add('<ul class="changes">%s</ul>' % "".join(items))


def _details_section(page, rows):
    """comparison.md's sections after its table, as HTML: figures, energy, paced, sustained,
    background load, operators (report.py makes them; Markdown tables become pandas tables)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    page.add('<section id="details"><h2>Details</h2>')
    if ok:
        page.add("<h3>Figures</h3><p class=\"note\">What each verdict rests on: the p50's 95% "
                 "interval (+-, of the p50), the drift between the halves of the window, and "
                 "the CV.</p><ul>")
        for r in ok:
            page.add("<li><b>%s</b>, %s: %s</li>" % (_h(r.get("device")),
                                                    _h(r.get("label") or r.get("case_id")),
                                                    _h(report.figure_text(r))))
        page.add("</ul>")
    lines = (report.energy_section(ok) + report.paced_section(ok) + report.sustained_section(ok)
             + report.background_section(ok) + report.op_profile_section(ok))
    _markdown_html(page, lines)
    page.add("</section>")


_MD_ESCAPED = re.compile(r"\\([\\|`*_\[\]<>])")
_MD_CELL_SPLIT = re.compile(r"(?<=\s)\|(?=\s)")


def _md_text(line):
    """An escape.markdown line back to its plain text (then HTML-escaped by the caller)."""
    return _MD_ESCAPED.sub(r"\1", line)


def _markdown_html(page, lines):
    """report.py's section lines (## / ### headings, paragraphs, tables of escaped cells)."""
    import pandas as pd
    i, in_sub = 0, False
    while i < len(lines):
        line = lines[i]
        if line.startswith("## ") or line.startswith("### "):
            if in_sub:
                page.add("</details>")
                in_sub = False
            if line.startswith("### "):
                page.add("<details><summary>%s</summary>" % _h(_md_text(line[4:])))
                in_sub = True
            else:
                page.add("<h3>%s</h3>" % _h(_md_text(line[3:])))
            i += 1
        elif line.startswith("| "):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[_md_text(c.strip()) for c in _MD_CELL_SPLIT.split(b.strip()[1:-1])]
                     for b in block if not b.startswith("|---")]
            header, body = cells[0], [c + [""] * (len(cells[0]) - len(c)) for c in cells[1:]]
            frame = pd.DataFrame([c[:len(header)] for c in body], columns=_unique(header))
            page.add(frame.to_html(escape=True, index=False, border=0, na_rep="-"))
        elif line.strip():
            page.add("<p>%s</p>" % _h(_md_text(line)))
            i += 1
        else:
            i += 1
    if in_sub:
        page.add("</details>")


# -- plots ---------------------------------------------------------------------------------------

def _plot_text(value, limit=PLOT_TEXT) -> str:
    """A device's string as matplotlib text: one line, cut, no mathtext ($ escaped), glyphs the
    font lacks replaced (so drawing never warns)."""
    text = escape.terminal("" if value is None else value, limit=None)
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    glyphs = _glyphs()
    text = "".join(ch if ord(ch) in glyphs else "?" for ch in text)
    return text.replace("\\", "/").replace("$", r"\$")


_GLYPHS = None


def _glyphs():
    global _GLYPHS
    if _GLYPHS is None:
        try:
            from matplotlib import font_manager
            from matplotlib.ft2font import FT2Font
            font = FT2Font(font_manager.findfont(font_manager.FontProperties()))
            _GLYPHS = frozenset(font.get_charmap())
        except Exception:   # noqa: BLE001 - a font we cannot read: plain ASCII only
            _GLYPHS = frozenset(range(32, 127))
    return _GLYPHS


def _floats(values):
    """A list of numbers (None and non-numbers as NaN) as a float array."""
    import numpy as np
    out = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
                    for v in (values if isinstance(values, list) else [])], dtype=float)
    out[~np.isfinite(out)] = math.nan
    return out


def _stride(n, cap):
    """Indices of at most `cap` of n points, evenly spread, first and last among them."""
    import numpy as np
    if n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(int))


def cdf_points(latencies, cap=MAX_CDF_POINTS):
    """(x, y) of a latency CDF with at most `cap` points: evenly spread ranks, denser in the top
    1% so the tail keeps its shape; the minimum and the maximum always among them."""
    import numpy as np
    values = np.sort(np.asarray(latencies, dtype=float))
    n = len(values)
    if n <= cap:
        idx = np.arange(n)
    else:
        tail = cap // 5
        idx = np.unique(np.concatenate([
            np.linspace(0, n - 1, cap - tail).round(),
            np.linspace(math.floor(0.99 * (n - 1)), n - 1, tail).round()]).astype(int))
    return values[idx], (idx + 1) / float(n)


def series_points(values, cap=MAX_SERIES_POINTS):
    """(x, y) of samples in order with at most `cap` points: each of cap/2 buckets keeps its
    lowest and its highest sample (a spike is never dropped)."""
    import numpy as np
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n <= cap:
        return np.arange(n), values
    buckets = max(1, cap // 2)
    size = int(math.ceil(n / float(buckets)))
    pad = buckets * size - n
    grid = np.concatenate([values, np.full(pad, np.nan)]).reshape(buckets, size)
    base = np.arange(buckets) * size
    lo = base + np.argmin(np.where(np.isnan(grid), np.inf, grid), axis=1)
    hi = base + np.argmax(np.where(np.isnan(grid), -np.inf, grid), axis=1)
    idx = np.unique(np.concatenate([lo, hi]))
    idx = idx[idx < n]
    return idx, values[idx]


def rolling_median(values, cap=MAX_SERIES_POINTS // 4):
    """(x, y): the centered rolling median of `values` (a window of about 4% of them, 5 to 1001
    samples), at most `cap` points of it."""
    import numpy as np
    import pandas as pd
    values = np.asarray(values, dtype=float)
    n = len(values)
    window = int(min(1001, max(5, n // 25)))
    med = pd.Series(values).rolling(window, center=True, min_periods=1).median().to_numpy()
    idx = _stride(n, cap)
    return idx, med[idx]


class _Plotter:
    """Figures for one report: matplotlib Figure objects (no pyplot), one per case."""

    def __init__(self, devices):
        self.devices = devices

    def color(self, index):
        return COLORS[index % len(COLORS)]

    def _figure(self, count):
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
        ncols = 4 if count in (4, 7, 8) else min(3, count)
        nrows = int(math.ceil(count / float(ncols)))
        width = PANEL_W * (3 if ncols >= 3 else 1.5 * ncols)
        height = PANEL_H * nrows + 0.25
        fig = Figure(figsize=(width, height), dpi=PNG_DPI)
        fig.subplots_adjust(left={1: 0.08, 2: 0.06, 3: 0.05}.get(ncols, 0.04), right=0.985,
                            bottom=0.3 / height * nrows, top=1.0 - 0.3 / height,
                            wspace=0.28 if ncols == 3 else 0.32, hspace=0.55)
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(count)]
        for ax in axes:   # few ticks: drawing them is most of a figure's time
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.yaxis.set_major_locator(MaxNLocator(4))
            ax.tick_params(labelsize=7.5, length=2.5, pad=2)
            ax.grid(True, color="#e6e6e6", linewidth=0.6)
            ax.set_axisbelow(True)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        return fig, axes

    def panels(self, ok, trend=()) -> list:
        """The names of a case's panels, in order: what its results hold."""
        names = ["bars", "cdf", "timeline"]
        series = [_series(r) for _, _, _, r in ok]
        if any(_channels(x, "temp_c:") for x in series if x):
            names.append("temperature")
        if any(_channels(x, "power_w:") for x in series if x):
            names.append("power")
        if any(_windows(r) for _, _, _, r in ok):
            names.append("windows")
        if any(row.get("energy_per_inference_mj") is not None for _, _, row, _ in ok):
            names.append("energy")
        if trend:
            names.append("trend")
        return names

    def case_figure(self, case, ok, trend):
        """One figure of a case's panels (see panels) as a data: URI."""
        names = self.panels(ok, trend)
        fig, axes = self._figure(len(names))
        for name, ax in zip(names, axes):
            if name == "trend":
                self._trend(ax, trend)
            else:
                getattr(self, "_" + name)(ax, ok)
        return _encode(fig)

    def trend_figure(self, group):
        fig, axes = self._figure(1)
        self._trend(axes[0], group)
        return _encode(fig)

    @staticmethod
    def _title(ax, text):
        # An explicit y: no automatic title placement (it measures every tick label again).
        ax.set_title(text, fontsize=9, loc="left", pad=3, y=1.0)

    def _bars(self, ax, ok):
        import numpy as np
        self._title(ax, "p50, whisker to p99 (ms)")
        xs = np.arange(len(ok))
        for x, (i, _, row, _) in zip(xs, ok):
            p50, p99 = row.get("p50_ms"), row.get("p99_cons_ms")
            invalid = row.get("validity") == "INVALID"
            ax.bar(x, p50 or 0.0, width=0.6, color=self.color(i), alpha=0.85,
                   hatch="///" if invalid else None, edgecolor="#444" if invalid else "none",
                   linewidth=0.5)
            if p50 is not None and p99 is not None and p99 >= p50:
                ax.errorbar([x], [p50], yerr=[[0.0], [p99 - p50]], color="#222", capsize=3,
                            linewidth=0.9)
            elif p50 is not None:
                ax.text(x, p50, "p99 n/e", fontsize=7, ha="center", va="bottom")
        ax.set_xticks(xs)
        ax.set_xticklabels([_plot_text(d, 18) for _, d, _, _ in ok], fontsize=7.5,
                           rotation=20 if len(ok) > 3 else 0, ha="right" if len(ok) > 3
                           else "center")
        ax.set_xlim(-0.6, len(ok) - 0.4)
        tops = [v for _, _, row, _ in ok for v in (row.get("p50_ms"), row.get("p99_cons_ms"))
                if isinstance(v, (int, float)) and math.isfinite(v)]
        ax.set_ylim(bottom=0, top=max(tops) * 1.15 if tops and max(tops) > 0 else None)

    def _cdf(self, ax, ok):
        self._title(ax, "latency CDF (ms)")
        lows, highs = [], []
        for i, _, _, result in ok:
            lat = result.timing.latencies_ms
            if not lat:
                continue
            x, y = cdf_points(lat)
            ax.plot(x, y, color=self.color(i), linewidth=1.2, drawstyle="steps-post")
            lows.append(x[0])
            highs.append(x[-1])
            paced = result.timing.paced if isinstance(result.timing.paced, dict) else {}
            sched = paced.get("latencies_from_schedule_ms")
            if isinstance(sched, list) and sched:
                vals = _floats(sched)
                vals = vals[~_isnan(vals)]
                if len(vals):
                    x, y = cdf_points(vals)
                    ax.plot(x, y, color=self.color(i), linewidth=1.0, linestyle="--",
                            drawstyle="steps-post", label="from schedule")
                    highs.append(x[-1])
        if lows and min(lows) > 0 and max(highs) / min(lows) > 4:
            _log_axis(ax, "x")
        ax.set_ylim(0, 1.02)
        ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
        ax.axhline(0.5, color="#999", linewidth=0.6, linestyle=":")
        ax.axhline(0.99, color="#999", linewidth=0.6, linestyle=":")
        if any(isinstance(r.timing.paced, dict) and r.timing.paced.get(
                "latencies_from_schedule_ms") for _, _, _, r in ok):
            ax.text(0.98, 0.06, "dashed: from schedule", transform=ax.transAxes, fontsize=7,
                    ha="right", color="#444")

    def _timeline(self, ax, ok):
        import numpy as np
        self._title(ax, "every sample in order, rolling median (ms)")
        top, bottom, firsts = [], [], []
        for i, _, row, result in ok:
            lat = result.timing.latencies_ms
            if not lat:
                continue
            values = np.asarray(lat, dtype=float)
            x, y = series_points(values)
            ax.plot(x + 1, y, color=self.color(i), linewidth=0.5, alpha=0.45)
            mx, my = rolling_median(values)
            ax.plot(mx + 1, my, color=self.color(i), linewidth=1.6)
            top.append(float(np.percentile(values, 99.9)))
            bottom.append(float(values.min()))
            first = row.get("first_ms")
            if isinstance(first, (int, float)) and math.isfinite(first):
                ax.plot([0], [first], marker="*", markersize=9, color=self.color(i),
                        markeredgecolor="#222", markeredgewidth=0.6, linestyle="none")
                firsts.append(first)
        if not top:
            return
        high = max(top + firsts)
        low = min(bottom + firsts)
        if low > 0 and high / low > 30:
            _log_axis(ax, "y")
        else:
            ax.set_ylim(bottom=0, top=max(top + firsts) * 1.08)
        ax.set_xlabel("sample (first inference at 0)", fontsize=7.5, labelpad=1)

    def _telemetry(self, ax, ok, prefix, title):
        self._title(ax, title)
        styles = LINE_STYLES
        for i, _, _, result in ok:
            series = _series(result)
            if not series:
                continue
            t = _floats(series.get("t_s"))
            idx = _stride(len(t), MAX_SERIES_POINTS)
            for k, name in enumerate(_channels(series, prefix)):
                y = _floats(series.get(name))
                if len(y) != len(t):
                    continue
                ax.plot(t[idx], y[idx], color=self.color(i), linewidth=1.1,
                        linestyle=styles[k % len(styles)])
        ax.set_xlabel("s from the measured window's start", fontsize=7.5, labelpad=1)

    def _temperature(self, ax, ok):
        self._telemetry(ax, ok, "temp_c:", "temperature (C)")

    def _power(self, ax, ok):
        self._telemetry(ax, ok, "power_w:", "power (W)")

    def _windows(self, ax, ok):
        import numpy as np
        self._title(ax, "sustained: p50 per window (ms)")
        top = []
        for i, _, _, result in ok:
            windows = _windows(result)
            if not windows:
                continue
            idx = _stride(len(windows), MAX_SERIES_POINTS)
            picked = [windows[j] for j in idx]
            t = _floats([w.get("start_s") for w in picked])
            p50 = _floats([w.get("p50") for w in picked])
            ax.plot(t, p50, color=self.color(i), linewidth=1.2, marker="o", markersize=2.5)
            if not _isnan(p50).all():
                top.append(float(np.nanmax(p50)))
            hot = [j for j, w in enumerate(picked) if w.get("throttled") is True]
            if hot:
                ax.plot(t[hot], p50[hot], linestyle="none", marker="x", color="#d62728",
                        markersize=6)
        ax.set_xlabel("window start, s (x: throttled)", fontsize=7.5, labelpad=1)
        ax.set_ylim(bottom=0, top=max(top) * 1.15 if top else None)

    def _energy(self, ax, ok):
        self._title(ax, "energy per inference (mJ)")
        shown = [(i, d, row) for i, d, row, _ in ok
                 if row.get("energy_per_inference_mj") is not None]
        for x, (i, _, row) in enumerate(shown):
            ax.bar(x, row["energy_per_inference_mj"], width=0.6, color=self.color(i), alpha=0.85)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([_plot_text(d, 18) for _, d, _ in shown], fontsize=7.5)
        ax.set_xlim(-0.6, len(shown) - 0.4)

    def _trend(self, ax, group):
        import numpy as np
        from matplotlib.ticker import MaxNLocator
        self._title(ax, "p50 over runs (ms; marked: a change)")
        ax.xaxis.set_major_locator(MaxNLocator(4))
        marks = {"slower": ("v", "#d62728"), "faster": ("^", "#2ca02c"),
                 "not comparable": ("X", "#555555")}
        index = {d: i for i, d in enumerate(self.devices)}
        spans, top = [], 0.0
        for n, t in enumerate(group):
            i = index.get(str(t.get("device")), len(self.devices) + n)
            points = [p for p in t.get("points") or [] if isinstance(p, dict)]
            points = [points[j] for j in _stride(len(points), MAX_SERIES_POINTS)]
            when = np.array([_when(p.get("started_at")) for p in points], dtype=float)
            p50 = _floats([p.get("p50_ms") for p in points])
            keep = ~(_isnan(when) | _isnan(p50))
            if not keep.any():
                continue
            ax.plot(when[keep], p50[keep], color=self.color(i), linewidth=1.2, marker="o",
                    markersize=2.5)
            spans += [when[keep].min(), when[keep].max()]
            top = max(top, float(np.nanmax(p50[keep])))
            for j, p in enumerate(points):
                change = p.get("change")
                if not change or not keep[j]:
                    continue
                kind = next((k for k in marks if str(change).startswith(k)), None)
                marker, color = marks.get(kind, ("D", "#9467bd"))
                ax.plot([when[j]], [p50[j]], linestyle="none", marker=marker, markersize=8,
                        color=color, markeredgecolor="#222", markeredgewidth=0.5)
        if spans:
            from matplotlib.dates import num2date
            from matplotlib.ticker import FuncFormatter
            low, high = min(spans), max(spans)
            pad = max((high - low) * 0.05, 2.0 / 1440)   # 5% of the span, at least 2 minutes
            ax.set_xlim(low - pad, high + pad)
            if high - low >= 2:   # whole days (a date number counts days)
                ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
            fmt = "%m-%d %H:%M" if high - low < 2 else "%m-%d" if high - low < 300 \
                else "%Y-%m-%d"
            ax.xaxis.set_major_formatter(FuncFormatter(
                lambda v, _: num2date(v).strftime(fmt) if math.isfinite(v) else ""))
        ax.set_ylim(bottom=0, top=top * 1.15 if top > 0 else None)


def _log_axis(ax, which):
    """A log scale with plain tick labels (0.5, 1, 2, 5, ...) and no minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0), numticks=6))
    axis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
    axis.set_minor_locator(NullLocator())


def _isnan(values):
    import numpy as np
    return np.isnan(values)


def _when(text):
    """An ISO time ('2026-12-04T03:00:17Z') as a matplotlib date number (NaN when not one)."""
    from matplotlib.dates import date2num
    try:
        return date2num(datetime.fromisoformat(str(text).replace("Z", "+00:00")))
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _series(result) -> dict:
    telemetry = result.telemetry if isinstance(result.telemetry, dict) else {}
    series = telemetry.get("series")
    return series if isinstance(series, dict) and isinstance(series.get("t_s"), list) else {}


def _channels(series, prefix) -> list:
    """The series' channels named prefix*, at most MAX_CHANNELS (those reaching highest)."""
    import numpy as np
    found = []
    for name in sorted(series):
        if isinstance(name, str) and name.startswith(prefix) and isinstance(series[name], list):
            values = _floats(series[name])
            if len(values) and not np.isnan(values).all():
                found.append((-float(np.nanmax(values)), name))
    return [name for _, name in sorted(found)[:MAX_CHANNELS]]


def _windows(result) -> list:
    windows = result.timing.windows if result.timing is not None else None
    return [w for w in windows or [] if isinstance(w, dict)]


# Comments (matplotlib copies each text into one) and the DOCTYPE (a DTD's URL) go.
_SVG_STRIP = re.compile(rb"<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*", re.S)


# matplotlib writes coordinates with 6 decimals of a point (1/72 in); 1 is plenty and saves a
# third of the size. Numbers under 1 (a glyph's scale, an opacity) are left as they are.
_DECIMALS = re.compile(rb"(?<![\d.])(-?[1-9]\d*\.\d)\d+")


def _encode(fig) -> str:
    """The figure as a data: URI (SVG without comments or DOCTYPE, or PNG)."""
    buf = io.BytesIO()
    if IMAGE_FORMAT == "png":
        fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
        mime, data = "image/png", buf.getvalue()
    else:
        import matplotlib
        if matplotlib.rcParams["svg.fonttype"] != "path":   # the default; text never as text
            matplotlib.rcParams["svg.fonttype"] = "path"
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                 "Format": None, "Type": None})
        data = _DECIMALS.sub(rb"\1", _SVG_STRIP.sub(b"", buf.getvalue()))
        mime = "image/svg+xml"
    return "data:%s;base64,%s" % (mime, base64.b64encode(data).decode("ascii"))
