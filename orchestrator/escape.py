"""Text from a device, made safe for each output it reaches: one function per output, used there.

A device's result and events are untrusted (docs/DESIGN.md, collect): their strings may hold
terminal escape sequences, spreadsheet formulas or Markdown that would break a table. What is
kept (raw/, the typed records, --json) stays as the device sent it; only what is shown is escaped:

    terminal(text)   progress lines, the console table: control characters (C0 but nothing,
                     DEL, C1, Unicode line separators and bidi overrides) dropped, line breaks
                     and tabs become a space, so one device line is one line; long text cut.
    csv_cell(text)   results.csv: control characters but tab and newline dropped (the csv
                     module quotes newlines), and a cell that a spreadsheet would read as a
                     formula (= + - @ tab CR first, or after leading spaces) gets a leading '.
    markdown(text)   comparison.md: as terminal() without the cut, then the characters that
                     make Markdown structure (| ` * _ [ ] < > and the backslash) backslash-escaped.
"""

from __future__ import annotations

import re

# Everything a terminal may act on, or that reorders or breaks a line when displayed.
_LINE_BREAKS = re.compile("[\t\n\x0b\x0c\r\x1c-\x1e\x85\u2028\u2029]+")
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e"
                       "\u2066-\u2069]")
_CSV_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# A spreadsheet reads a cell starting with one of these as a formula (OWASP CSV injection); the
# fullwidth forms too, which some locales convert.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_MARKDOWN = re.compile(r"([\\|`*_\[\]<>])")

TERMINAL_LIMIT = 500  # characters of one device-supplied field on a progress line


def _text(value) -> str:
    return value if isinstance(value, str) else str(value)


def terminal(value, limit: int | None = TERMINAL_LIMIT) -> str:
    """One line of plain text: nothing a terminal would interpret, at most `limit` characters."""
    text = _CONTROLS.sub("", _LINE_BREAKS.sub(" ", _text(value)))
    if limit is not None and len(text) > limit:
        text = text[:limit] + "... (%d characters cut)" % (len(text) - limit)
    return text


def csv_cell(value):
    """A results.csv cell: str values made inert for spreadsheets; other values as they are."""
    if not isinstance(value, str):
        return value
    text = _CSV_CONTROLS.sub("", value.replace("\r\n", "\n"))
    if text.startswith(FORMULA_PREFIXES) or text.lstrip().startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def markdown(value) -> str:
    """Inline Markdown text (a table cell, a list item): one line, no structure of its own."""
    return _MARKDOWN.sub(r"\\\1", terminal(value, limit=None))
