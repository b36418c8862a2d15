"""External power meters: a bench meter's log attached to a finished run (`benchfleet energy
attach`).

Every result of layout 2 records its measured window on the device's wall clock
(timing.wall_start_unix / wall_end_unix), and the controller measured the device's clock against
its own when it started the run (RUN_DIR/devices/<device>/clock.json, orchestrator/execute.py).
A meter log on the controller's clock is read whole and checked first; then each ok result of the
device whose window the log covers gets telemetry.energy from the meter: the trapezoid integral
of power over the window, interpolated at its ends. Nothing is written until every new result has
passed both checks (agent.schema.check_result, records.model_problems); then the raw results are
rewritten (atomically; the device's original is kept once under RUN_DIR/energy/original/) and
results.csv and comparison.md rendered again the way the run renders them.

Formats (--format; guessed from the header when not given):
  csv      a header row with a time column (timestamp, time, t, unix, epoch; unix seconds, or
           seconds from the first row with --start; a unit in the name: (ms), _ms, [us] ...) and
           power (W, mW, uW) or current (A, mA, uA, nA) and voltage (V, mV), or current alone
           with --voltage.
  ppk2     Nordic Power Profiler Kit II export: Timestamp(ms),Current(uA)[,D0-D7]; times from the
           log's start (--start: the unix time of its first row) and current only (--voltage).
  monsoon  Monsoon power monitor: Time(s),Main(mA),Main Voltage(V); times from the log's start
           (--start).
"""

from __future__ import annotations

import bisect
import calendar
import csv
import math
import re
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from agent import schema
from orchestrator.errors import ConfigError

FORMATS = ("csv", "ppk2", "monsoon")
CLOCK_FILE = "clock.json"
# An idle gap (the cool-down before a case) shorter than this gives no idle power.
MIN_IDLE_S = 1.0
# A unix time before this (1973) in a csv log without --start is a time from the log's start.
MIN_UNIX_S = 1e8
MAX_HEADER_SCAN = 50   # lines looked at for the header (comments and blank lines skipped)

TIME_NAMES = ("timestamp", "time", "t", "unix", "unix_time", "unixtime", "epoch", "time_s",
              "timestamp_s", "unix_s", "epoch_s", "ts")
POWER_NAMES = ("power", "p", "watts", "pwr", "power_w")
CURRENT_NAMES = ("current", "i", "amps", "main", "current_a", "curr")
VOLTAGE_NAMES = ("voltage", "v", "volts", "main voltage", "main_voltage", "vout", "voltage_v")
# Unit factors to seconds, watts, amperes and volts.
TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9}
POWER_UNITS = {"w": 1.0, "mw": 1e-3, "uw": 1e-6, "\u00b5w": 1e-6}
CURRENT_UNITS = {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "\u00b5a": 1e-6, "na": 1e-9}
VOLTAGE_UNITS = {"v": 1.0, "mv": 1e-3}
_UNIT_IN_BRACKETS = re.compile(r"^(.*?)\s*[(\[]\s*([^)\]]*?)\s*[)\]]\s*$")


# -- reading a meter log -------------------------------------------------------------------------
@dataclass
class MeterLog:
    """A meter log as (controller unix seconds, watts) samples, in time order."""

    path: Path
    fmt: str
    t: array
    p: array

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def source(self) -> str:
        return "meter:" + self.name

    @property
    def span(self) -> tuple[float, float]:
        return self.t[0], self.t[-1]

    @property
    def rate_hz(self) -> float:
        first, last = self.span
        return (len(self.t) - 1) / (last - first)

    @property
    def method(self) -> str:
        rate = self.rate_hz
        text = "%d Hz" % round(rate) if rate >= 100 else "%.3g Hz" % rate
        return "external meter (%s, %s)" % (self.fmt, text)

    def covers(self, a: float, b: float) -> bool:
        return self.t[0] <= a <= b <= self.t[-1]

    def _at(self, x: float) -> tuple[int, float]:
        """(index of the first sample after x, power interpolated at x); x within the span."""
        t, p = self.t, self.p
        i = bisect.bisect_right(t, x)
        if i >= len(t):
            return len(t), p[-1]
        if i == 0:
            return 0, p[0]
        t0, t1 = t[i - 1], t[i]
        if t1 == t0:
            return i, p[i]
        return i, p[i - 1] + (p[i] - p[i - 1]) * (x - t0) / (t1 - t0)

    def integral(self, a: float, b: float) -> float:
        """Joules from a to b (both within the span): trapezoids, interpolated at the ends."""
        if b <= a:
            return 0.0
        i, pa = self._at(a)
        j, pb = self._at(b)
        t, p = self.t, self.p
        parts = []
        prev_t, prev_p = a, pa
        for k in range(i, j):
            parts.append((t[k] - prev_t) * (p[k] + prev_p) / 2.0)
            prev_t, prev_p = t[k], p[k]
        parts.append((b - prev_t) * (pb + prev_p) / 2.0)
        return math.fsum(parts)

    def mean(self, a: float, b: float) -> float:
        return self.integral(a, b) / (b - a)


def _split_unit(cell: str) -> tuple[str, str | None]:
    """'Current(uA)' -> ('current', 'ua'); 'power_mw' -> ('power', 'mw'); 'time' -> ('time',
    None)."""
    text = cell.strip().strip('"').strip().lower()
    match = _UNIT_IN_BRACKETS.match(text)
    if match:
        return match.group(1).strip(), match.group(2).strip().replace("\u03bc", "\u00b5")
    for sep in ("_", " "):
        if sep in text:
            base, unit = text.rsplit(sep, 1)
            if unit in TIME_UNITS or unit in POWER_UNITS or unit in CURRENT_UNITS or \
                    unit in VOLTAGE_UNITS:
                return base.strip(), unit
    return text, None


@dataclass
class _Column:
    index: int
    header: str
    factor: float


def _find(cells, names, units, path, line, what, default_unit):
    """The first column whose name is one of `names`, with its unit's factor (None if none)."""
    for index, cell in enumerate(cells):
        base, unit = _split_unit(cell)
        if base not in names:
            continue
        unit = unit or default_unit
        if unit not in units:
            raise ConfigError("%s line %d, column %r: %r is not a %s unit; name the column with "
                              "one of %s, e.g. %s(%s)" % (path, line, cell.strip(), unit, what,
                                                          ", ".join(sorted(units)), base,
                                                          default_unit))
        return _Column(index, cell.strip(), units[unit])
    return None


def _header(path: Path, lines):
    """(line number, cells, delimiter) of the header: the first line that is not blank or a
    comment."""
    for number, line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            if number > MAX_HEADER_SCAN:
                break
            continue
        delimiter = max((",", ";", "\t"), key=lambda d: (text.count(d), d == ","))
        if text.count(delimiter) == 0:
            delimiter = ","
        return number, next(csv.reader([text], delimiter=delimiter)), delimiter
    raise ConfigError("%s: no header line: a meter log starts with its column names (e.g. "
                      "timestamp,power_w)" % path)


def guess_format(cells) -> str:
    names = [_split_unit(c) for c in cells]
    bases = [b for b, _ in names]
    if bases[:2] == ["timestamp", "current"] and names[0][1] in ("ms", "us") and \
            "voltage" not in bases and "power" not in bases:
        return "ppk2"
    if bases[:1] == ["time"] and "main" in bases:
        return "monsoon"
    return "csv"


def read_log(path, fmt: str | None = None, start: float | None = None,
             voltage: float | None = None) -> MeterLog:
    """Read and check a whole meter log; ConfigError naming the file, line and column and the fix
    for anything it cannot use."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError("--format %s: expected one of %s" % (fmt, ", ".join(FORMATS)))
    if voltage is not None and not (math.isfinite(voltage) and voltage > 0):
        raise ConfigError("--voltage %s: give the supply voltage in volts (above 0)" % voltage)
    if start is not None and not (math.isfinite(start) and start >= MIN_UNIX_S):
        raise ConfigError("--start %s: give the unix time (seconds since 1970, e.g. %.0f) of the "
                          "log's first row" % (start, time.time()))
    try:
        f = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ConfigError("--meter %s: cannot read: %s" % (path, exc.strerror or exc)) from None
    with f:
        lines = enumerate(f, 1)
        try:
            number, cells, delimiter = _header(path, lines)
            fmt = fmt or guess_format(cells)
            columns = _columns(path, number, cells, fmt, start, voltage)
            t, p = _rows(path, lines, delimiter, columns, voltage)
        except UnicodeDecodeError as exc:
            raise ConfigError("%s: not a text file (UTF-8): %s; export the meter's log as CSV"
                              % (path, exc)) from None
    if len(t) < 2:
        raise ConfigError("%s: %d data row(s): a log needs at least two samples" % (path, len(t)))
    if t[-1] <= t[0]:
        raise ConfigError("%s: every row has the same time (%r): check the time column %r"
                          % (path, t[0], columns["time"].header))
    relative = fmt in ("ppk2", "monsoon") or start is not None
    if relative:
        first = t[0]
        for i in range(len(t)):
            t[i] = start + (t[i] - first)
    elif t[0] < MIN_UNIX_S:
        raise ConfigError("%s: column %r starts at %r, not a unix time: the times look relative "
                          "to the log's start; give --start UNIX_SECONDS (the unix time of the "
                          "first row on this machine's clock)"
                          % (path, columns["time"].header, t[0]))
    return MeterLog(path, fmt, t, p)


def _columns(path, number, cells, fmt, start, voltage) -> dict:
    found = ", ".join(c.strip() for c in cells)
    expect = {"ppk2": "Timestamp(ms),Current(uA)[,D0-D7]",
              "monsoon": "Time(s),Main(mA),Main Voltage(V)"}.get(fmt)

    def find(names, units, what, default_unit):
        return _find(cells, names, units, path, number, what, default_unit)
    time_col = find(TIME_NAMES, TIME_UNITS, "time", "s")
    if time_col is None:
        raise ConfigError("%s line %d: no time column (found: %s); %s" % (
            path, number, found, "a %s export starts %s" % (fmt, expect) if expect else
            "name one timestamp, time, t or unix (unix seconds; a unit such as (ms) in the name "
            "if not seconds)"))
    if fmt in ("ppk2", "monsoon") and start is None:
        raise ConfigError("%s: a %s log gives times from its start: give --start UNIX_SECONDS, the "
                          "unix time of its first row on this machine's clock" % (path, fmt))
    columns = {"time": time_col, "power": None, "current": None, "voltage": None}
    if fmt == "ppk2":
        columns["current"] = find(("current",), CURRENT_UNITS, "current", "ua")
        if voltage is None:
            raise ConfigError("%s: a ppk2 log has current only: give --voltage V, the supply "
                              "voltage (the PPK2's source voltage, or the device's supply)" % path)
    elif fmt == "monsoon":
        columns["current"] = find(("main",), CURRENT_UNITS, "current", "ma")
        columns["voltage"] = find(("main voltage", "main_voltage"), VOLTAGE_UNITS, "voltage", "v")
    else:
        columns["power"] = find(POWER_NAMES, POWER_UNITS, "power", "w")
        if columns["power"] is None:
            columns["current"] = find(CURRENT_NAMES, CURRENT_UNITS, "current", "a")
            columns["voltage"] = find(VOLTAGE_NAMES, VOLTAGE_UNITS, "voltage", "v")
    if columns["power"] is None and columns["current"] is None:
        raise ConfigError("%s line %d: no power or current column (found: %s); %s" % (
            path, number, found, "a %s export starts %s" % (fmt, expect) if expect else
            "give power (W; power_mw or power(mW) for mW) or current (A; current_ma or "
            "current(mA) for mA) and voltage (V, mV) columns"))
    if columns["power"] is None and columns["voltage"] is None and voltage is None:
        raise ConfigError("%s line %d: current (%s) but no voltage column: give --voltage V, the "
                          "supply voltage" % (path, number, columns["current"].header))
    return columns


def _bad_number(path, number, col, raw):
    return ConfigError("%s line %d, column %r: %r is not a number; fix or remove the line"
                       % (path, number, col.header, raw.strip()[:40]))


def _rows(path, lines, delimiter, columns, voltage):
    """The samples as (seconds, watts) arrays; every row checked (ConfigError at the first bad
    one, naming its line and column)."""
    t, p = array("d"), array("d")
    used = [c for c in columns.values() if c is not None]
    need = max(c.index for c in used) + 1
    tcol, pcol, icol, vcol = (columns[k] for k in ("time", "power", "current", "voltage"))
    # (column, factor) of the factors whose product is watts, and a constant voltage
    product = [pcol] if pcol is not None else [icol] + ([vcol] if vcol is not None else [])
    constant = 1.0 if pcol is not None or vcol is not None else voltage
    isfinite = math.isfinite
    last = -math.inf
    for number, line in lines:
        text = line.strip()
        if not text or text[0] == "#":
            continue
        cells = text.split(delimiter) if '"' not in text else \
            next(csv.reader([text], delimiter=delimiter))
        if len(cells) < need:
            raise ConfigError("%s line %d: %d value(s), the columns used need %d (%s); remove or "
                              "complete the line" % (path, number, len(cells), need,
                                                     ", ".join(c.header for c in used)))
        raw = cells[tcol.index]
        try:
            when = float(raw) * tcol.factor
        except ValueError:
            raise _bad_number(path, number, tcol, raw) from None
        if not isfinite(when):
            raise _bad_number(path, number, tcol, raw)
        if when < last:
            raise ConfigError("%s line %d, column %r: time %s is before the previous row's: "
                              "rows must be in time order" % (path, number, tcol.header,
                                                             raw.strip()[:40]))
        last = when
        watts = constant
        for col in product:
            raw = cells[col.index]
            try:
                value = float(raw)
            except ValueError:
                raise _bad_number(path, number, col, raw) from None
            if not isfinite(value):
                raise _bad_number(path, number, col, raw)
            watts *= value * col.factor
        t.append(when)
        p.append(watts)
    return t, p


# -- the clock offset ----------------------------------------------------------------------------
@dataclass
class Clock:
    """The device's clock against the controller's (device - controller, seconds)."""

    measurements: list = field(default_factory=list)   # dicts of clock.json, in time order
    warning: str | None = None

    def offset(self, device_time: float) -> float:
        """The offset measured last before device_time (the first one if none was before)."""
        if not self.measurements:
            return 0.0
        before = [m for m in self.measurements if m["device_unix"] <= device_time]
        return (before[-1] if before else self.measurements[0])["offset_s"]


def clock_path(run_dir, device: str) -> Path:
    return Path(run_dir) / "devices" / device / CLOCK_FILE


def read_clock(run_dir, device: str) -> Clock:
    """The offsets measured for `device` in the run; none -> offset 0 with a warning."""
    from orchestrator.collect import loads_untrusted
    path = clock_path(run_dir, device)
    try:
        doc = loads_untrusted(path.read_bytes())
    except FileNotFoundError:
        return Clock(warning="%s: no clock offset was measured for %s (a run from before "
                             "benchfleet measured it, or the device's clock could not be read); "
                             "assuming its clock equals this machine's (offset 0)" % (path, device))
    except (OSError, ValueError) as exc:
        raise ConfigError("%s: cannot read: %s; remove the file to assume offset 0" % (path, exc))
    items = doc.get("measurements") if isinstance(doc, dict) else None
    good = []
    for m in items if isinstance(items, list) else []:
        if isinstance(m, dict) and all(_finite(m.get(k)) for k in ("offset_s", "device_unix")):
            good.append(m)
    if not good:
        raise ConfigError("%s: no usable measurement (offset_s, device_unix); remove the file to "
                          "assume offset 0" % path)
    return Clock(sorted(good, key=lambda m: m["device_unix"]))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- attaching -----------------------------------------------------------------------------------
@dataclass
class Attached:
    """What `energy attach` did: a line per result, warnings, and the files written."""

    device: str
    meter: MeterLog
    lines: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    changed: list = field(default_factory=list)     # case ids given meter energy
    uncovered: list = field(default_factory=list)   # case ids whose window the log lacks
    tables: bool = False

    def to_json(self) -> dict:
        first, last = self.meter.span
        return {"device": self.device, "meter": str(self.meter.path), "format": self.meter.fmt,
                "method": self.meter.method, "span_unix": [first, last], "changed": self.changed,
                "uncovered": self.uncovered, "warnings": self.warnings, "lines": self.lines,
                "tables_rewritten": self.tables}


def _iso_unix(text) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def _when(unix: float) -> str:
    return "%.3f (%s)" % (unix, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix)))


def _load_doc(path: Path, nonce: str):
    from orchestrator.rundir import load_doc
    return load_doc(path, nonce)


def _pick_device(manifest: dict, device: str | None, run_dir) -> str:
    with_cases = sorted(n for n, d in (manifest.get("devices") or {}).items()
                        if isinstance(d, dict) and d.get("cases"))
    if device is not None:
        if device not in (manifest.get("devices") or {}):
            raise ConfigError("--device %s: not a device of the run %s (its devices: %s)"
                              % (device, run_dir, ", ".join(with_cases) or "none"))
        return device
    if len(with_cases) != 1:
        raise ConfigError("%s: the run has %d devices with cases (%s): say which the meter "
                          "measured with --device NAME" % (run_dir, len(with_cases),
                                                           ", ".join(with_cases) or "none"))
    return with_cases[0]


def _label(doc) -> str:
    from orchestrator.escape import terminal
    return terminal("%s (%s)" % (doc.get("label") or doc["case_id"], doc["case_id"]), limit=120)


def attach(run_dir, meter, fmt=None, device=None, start=None, voltage=None,
           subtract_idle=False) -> Attached:
    """Fill telemetry.energy from an external meter's log into every ok result of `device` whose
    measured window the log covers; then rewrite results.csv and comparison.md.

    Raises:
        ConfigError: not a run folder, a bad log (file, line, column and the fix), or a log that
            covers no case's window. Nothing is written then.
        SweepBusy: a controller is running the run right now.
    """
    from orchestrator.errors import SweepBusy
    from orchestrator.run import read_manifest
    from orchestrator.runlock import FileLock, controller_identity, describe, run_lock_path
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    name = _pick_device(manifest, device, run_dir)
    log = read_log(meter, fmt, start, voltage)
    lock = FileLock(run_lock_path(run_dir))
    holder = lock.acquire(dict(controller_identity(), run_id=manifest["run_id"], verb="energy"))
    if holder is not None:
        raise SweepBusy("run %s is being run by %s; attach the meter once it has finished"
                        % (manifest["run_id"], describe(holder)))
    try:
        return _attach(run_dir, manifest, name, log, subtract_idle)
    finally:
        lock.release()


def _attach(run_dir, manifest, name, log, subtract_idle) -> Attached:
    from orchestrator import records
    from agent.fsutil import atomic_write_json
    done = Attached(name, log)
    clock = read_clock(run_dir, name)
    if clock.warning:
        done.warnings.append(clock.warning)
    raw = run_dir / "raw" / name
    docs = []   # (path, doc) of the device's checked results, in the run's case order
    for case_id in (manifest["devices"].get(name) or {}).get("cases") or []:
        path = raw / (str(case_id) + ".json")
        if not path.is_file():
            continue
        doc, problems = _load_doc(path, manifest["nonce"])
        if problems:
            done.warnings.append("%s: not a checked result (%s): left as it is"
                                 % (path, "; ".join(problems[:3])))
            continue
        docs.append((path, doc))
    ran = [(p, d) for p, d in docs if (d.get("device") or {}).get("source") != "controller"]
    windows = []
    for path, doc in ran:
        if doc["status"] != "ok":
            continue
        timing = doc["timing"]
        ws, we = timing.get("wall_start_unix"), timing.get("wall_end_unix")
        if not (_finite(ws) and _finite(we) and we > ws):
            done.lines.append("%s: no wall-clock window (a result from before result layout 2): "
                              "left as it is" % _label(doc))
            continue
        offset = clock.offset(ws)
        windows.append((path, doc, ws - offset, we - offset, offset))
    covered = {id(w[1]) for w in windows if log.covers(w[2], w[3])}
    if not covered:
        first, last = log.span
        spans = "; ".join("%s %s to %s" % (_label(d), _when(a), _when(b))
                          for _, d, a, b, _ in windows) or "none (no ok result with a window)"
        raise ConfigError(
            "%s: the log covers no case's window of device %s: the log spans %s to %s (this "
            "machine's clock, %d rows); the windows (device clock minus its offset) are: %s. "
            "Check --start (the unix time of the log's first row), --device, and the clock "
            "offset (%s)" % (log.path, name, _when(first), _when(last), len(log.t), spans,
                             clock_path(run_dir, name)))
    updates = []
    for path, doc, a, b, offset in windows:
        if id(doc) not in covered:
            first, last = log.span
            done.uncovered.append(doc["case_id"])
            done.lines.append("%s: window %s to %s is not inside the log (%s to %s): left as it "
                              "is" % (_label(doc), _when(a), _when(b), _when(first), _when(last)))
            continue
        idle = _idle_power(log, doc, ran, offset)
        subtract = subtract_idle and idle is not None
        if subtract_idle and idle is None:
            done.lines.append("%s: no idle gap before it in the log (no cool-down before it, or "
                              "the log starts later): energy not idle-subtracted" % _label(doc))
        new = _with_energy(doc, log, a, b, offset, idle, subtract)
        problems = schema.check_result(new) or records.model_problems(new)
        if problems:   # a bug here, not bad input: nothing has been written yet
            raise AssertionError("energy attach made an invalid result for %s: %s"
                                 % (doc["case_id"], "; ".join(problems)))
        updates.append((path, doc, new))
        energy = new["telemetry"]["energy"]
        done.lines.append("%s: %.4g J over %.3f s, %.4g W, %s mJ per inference%s%s" % (
            _label(doc), energy["energy_j"], energy["window_s"], energy["power_mean_w"],
            "%.4g" % energy["per_inference_mj"] if energy["per_inference_mj"] is not None
            else "n/a", ", idle %.4g W" % idle if idle is not None else "",
            " (subtracted)" if subtract else ""))
    originals = run_dir / "energy" / "original" / name
    target = originals
    try:
        for path, doc, new in updates:
            target = originals / path.name
            if not target.exists():   # the device's own result, before any meter was attached
                originals.mkdir(parents=True, exist_ok=True)
                atomic_write_json(str(target), doc)
        for path, doc, new in updates:
            target = path
            atomic_write_json(str(path), new)
            done.changed.append(doc["case_id"])
    except OSError as exc:
        from orchestrator.errors import LocalWriteError
        raise LocalWriteError(target, exc) from exc
    done.tables = rewrite_tables(run_dir, manifest, done.warnings)
    return done


def _idle_power(log: MeterLog, doc: dict, ran: list, offset: float) -> float | None:
    """The meter's mean power over the cool-down before the case: from the end of the device's
    previous case (its finished_at, rounded up to the next second) to this case's start (its
    started_at, less a thermal cool-down's rewarm_s of busy CPU), or None."""
    cooldown = doc.get("cooldown") or {}
    if cooldown.get("mode") == "none" or not _finite(cooldown.get("waited_s")) or \
            not cooldown["waited_s"] > 0:
        return None
    begins = _iso_unix(doc.get("started_at"))
    if begins is None:
        return None
    ends = [_iso_unix(d.get("finished_at")) for _, d in ran if d is not doc]
    ends = [e + 1.0 for e in ends if e is not None and e + 1.0 <= begins]
    if not ends:
        return None
    rewarm = cooldown.get("rewarm_s") if _finite(cooldown.get("rewarm_s")) else 0.0
    a, b = max(ends) - offset, begins - max(0.0, rewarm) - offset
    if b - a < MIN_IDLE_S or not log.covers(a, b):
        return None
    return log.mean(a, b)


def _with_energy(doc, log, a, b, offset, idle, subtract) -> dict:
    """A copy of `doc` with the meter's energy as telemetry.energy (the energy there before, the
    device's own, kept in by_source) and the meter's power in sustained windows without one."""
    import copy
    new = copy.deepcopy(doc)
    telemetry = new.get("telemetry") if isinstance(new.get("telemetry"), dict) else {}
    before = telemetry.get("energy") if isinstance(telemetry.get("energy"), dict) else {}
    gross = log.integral(a, b)
    window = b - a
    runs = new["timing"]["runs"]
    energy_j = gross - idle * window if subtract else gross
    by_source = {k: v for k, v in (before.get("by_source") or {}).items()
                 if isinstance(k, str) and (v is None or _finite(v))}
    primary = before.get("source")
    if isinstance(primary, str) and primary not in by_source and _finite(before.get("energy_j")):
        by_source[primary] = before["energy_j"]
    by_source[log.source] = gross
    while len(by_source) > schema.MAX_TELEMETRY_SOURCES:   # older meters' entries go first
        drop = next((k for k in by_source if k.startswith("meter:") and k != log.source),
                    next(k for k in by_source if k != log.source))
        del by_source[drop]
    telemetry["energy"] = {
        "method": log.method, "source": log.source, "energy_j": energy_j,
        "per_inference_mj": energy_j / runs * 1000.0 if runs else None,
        "power_mean_w": gross / window, "inferences_per_j": runs / energy_j if energy_j > 0
        else None, "idle_power_w": idle, "idle_subtracted": bool(subtract), "window_s": window,
        "by_source": by_source, "clock_offset_s": offset}
    new["telemetry"] = telemetry
    for row in new["timing"].get("windows") or []:
        if isinstance(row, dict) and row.get("power_w") is None and _finite(row.get("start_s")) \
                and _finite(row.get("end_s")) and row["end_s"] > row["start_s"]:
            w0, w1 = a + row["start_s"], a + row["end_s"]
            if log.covers(w0, w1):
                row["power_w"] = log.mean(w0, w1)
    return new


# -- the tables, again ---------------------------------------------------------------------------
def rewrite_tables(run_dir: Path, manifest: dict, warnings: list) -> bool:
    """results.csv, comparison.md and report.html from raw/ as the run writes them
    (run.write_tables, run.rewrite_report), through rundir.load_run, and the history's copy
    of the run where it has one. Only for a run that has its tables (a finished one); False
    otherwise."""
    from orchestrator.rundir import load_run
    from orchestrator.run import write_tables
    if not (run_dir / "results.csv").exists() and manifest.get("state") != "finished":
        warnings.append("%s: the run is %s: results.csv and comparison.md are written when it "
                        "finishes (benchfleet resume %s)" % (run_dir, manifest.get("state"),
                                                              run_dir))
        return False
    loaded = load_run(run_dir)
    warnings.extend(w.replace(": left out", ": not in the tables") for w in loaded.warnings)
    summary = loaded.summary()
    summary.suite = loaded.suite_name
    write_tables(summary)
    # report.html and the history (where it holds the run) get the meter's energy too
    from orchestrator.run import rewrite_report
    rewrite_report(summary, store=True, warn=warnings.append)
    return True
