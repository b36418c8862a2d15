"""The history database: every run's results, kept for `compare`, the trends and report.html.

Where it is (history_url): an explicit URL (--history), else $BENCHFLEET_HISTORY, else
RESULTS_DIR/history.sqlite. A value without "://" is a SQLite file's path; "off" turns the
history off. Any SQLAlchemy URL of SQLite or PostgreSQL works the same
(postgresql://user@host:5432/db through psycopg2: pip install 'benchfleet[postgres]'). Messages
name a database by masked(url): its password is never shown.

Layout (SQLAlchemy Core; every table prefixed bf_ so that a shared PostgreSQL database keeps its
own tables apart):

    bf_meta     key, value: "schema_version" (SCHEMA_VERSION once opened), "created_by"
    bf_runs     run_id (primary key), suite (rundir.suite_name), suite_path, started_at,
                finished_at, state (the manifest's; "killed" when it reads running and no
                controller holds it, as `benchfleet runs` says), controller_host,
                controller_user, controller_version, run_dir (absolute; where it was last
                stored from), stored_at. Index: suite; since version 2 also started_at.
    bf_results  id, run_id -> bf_runs, device, case_id (unique together with run_id), seq (the
                result's place in its run as the latest store of it had it: plan order per
                device, devices in table order), label, model, variant, backend,
                runtime_version, status, substatus, validity, p50_ms, mean_ms, first_ms,
                p99_ms (version 2), started_at (the result's), row_json (report.flat_row as
                JSON: the row results() gives back), facts_json (facts.comparable_facts),
                latencies (facts.pack_latencies: zlib'd float64) and n_latencies, digest
                (sha256 of row, facts and latencies: a store that finds other content for a
                stored result updates it). Index: (device, case_id).

Timestamps are the manifest's and the results' text (UTC, ISO 8601, "2026-01-02T03:04:05Z"),
which sort as time; PostgreSQL compares them (and run ids) in the "C" collation so that the
order is the same as SQLite's whatever the database's locale.

What devices sent is untrusted: load_run has checked it, and here every value stored in a
length-limited column is cut to the column's length, NUL characters and lone surrogates are
replaced, numbers that are not finite are stored as NULL, and every statement is built by
SQLAlchemy with bound parameters (never SQL text from values).

Versions and migrations: MIGRATIONS lists the steps from nothing to SCHEMA_VERSION; a new
database is made by running every step (so the migration path runs on every fresh history),
an older one is migrated in one transaction when opened, and one written by a newer benchfleet
is refused (HistoryError, "written by a newer benchfleet ..."). A released step is never
edited: a change to the layout is a new step at the end (layout() takes the version so that each
step's DDL stays what it was).

    1  the initial layout: bf_meta, bf_runs, bf_results and their indexes
    2  bf_results.p99_ms (filled in from each stored row) and an index on bf_runs.started_at

Writes: store_run is one transaction, and only one writer writes at a time: on SQLite the
transaction starts with BEGIN IMMEDIATE (the pysqlite driver's own BEGIN handling is turned off,
SQLAlchemy's recipe for "serializable isolation / savepoints / transactional DDL"), the journal
is WAL (readers never wait for the writer) and a writer waits up to BUSY_TIMEOUT_S for another
(SQLite's busy timeout); on PostgreSQL a transaction-scoped advisory lock. So a store killed at
any point (SIGKILL included) leaves either none or all of its run, and the next open works (the
WAL's uncommitted frames are ignored). Schema creation and migration take the same write lock,
so two controllers opening a new database at once make it once. SQLite runs with
synchronous=NORMAL: a committed run survives a killed process; a power cut may lose the last
stores (the run folders keep everything: `benchfleet history import` stores them again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.errors import ConfigError, HistoryError

HISTORY_ENV = "BENCHFLEET_HISTORY"
DEFAULT_FILE = "history.sqlite"
OFF = "off"
BUSY_TIMEOUT_S = 30.0          # how long a SQLite writer waits for another
PG_CONNECT_TIMEOUT_S = 10      # how long connecting to a PostgreSQL server may take
PG_LOCK_KEY = 0x62666869737431  # the advisory lock of every write ("bfhist1")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@-]{0,63}\Z")
BATCH = 500                    # rows per statement when migrating


# -- where the history is -------------------------------------------------------------------------
def history_url(url=None, results_dir="results") -> str | None:
    """The history's URL: url (--history) > $BENCHFLEET_HISTORY > RESULTS_DIR/history.sqlite.
    A value without "://" is a SQLite file's path; "off" (either) means no history: None."""
    for value in (url, os.environ.get(HISTORY_ENV)):
        if value is None or not str(value).strip():
            continue
        value = str(value).strip()
        if value.lower() == OFF:
            return None
        return _as_url(value)
    return _as_url(str(Path(results_dir) / DEFAULT_FILE))


def sqlite_missing(url) -> bool:
    """True for a SQLite URL whose file does not exist yet: a reader (compare of two folders,
    report --html) then has no history to read, and must not make an empty one."""
    text = str(url or "")
    if not text.startswith("sqlite:///"):
        return False
    path = text[len("sqlite:///"):].split("?", 1)[0]
    return bool(path) and path != ":memory:" and not os.path.exists(path)


def _as_url(value: str) -> str:
    if "://" in value:
        return value
    return "sqlite:///" + os.path.abspath(os.path.expanduser(value))


def masked(url) -> str:
    """The URL with any password (in the netloc or a ?password= parameter) shown as ***."""
    text = str(url)
    if "://" not in text:
        return text
    try:
        from sqlalchemy.engine import make_url
        parsed = make_url(text)
        if "password" in parsed.query:
            parsed = parsed.update_query_dict({"password": "***"})
        if parsed.password is None and "password" not in parsed.query:
            return text
        return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")
    except Exception:   # not parseable: mask whatever looks like user:password@
        text = re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", text)
        return re.sub(r"(?i)(password=)[^&;\s]*", r"\1***", text)


# -- the layout of each version -------------------------------------------------------------------
@dataclass
class Layout:
    metadata: object
    meta: object
    runs: object
    results: object


def layout(version: int | None = None) -> Layout:
    """The tables as of schema `version` (default: SCHEMA_VERSION). Step N's DDL is
    layout(N)'s; never change what an earlier version had."""
    from sqlalchemy import (Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
                            String, Table, Text, UniqueConstraint)
    version = SCHEMA_VERSION if version is None else version
    md = MetaData()
    meta = Table("bf_meta", md,
                 Column("key", String(64), primary_key=True),
                 Column("value", String(200), nullable=False))
    runs = Table("bf_runs", md,
                 Column("run_id", String(64), primary_key=True),
                 Column("suite", String(200), nullable=False),
                 Column("suite_path", String(2000)),
                 Column("started_at", String(40)),
                 Column("finished_at", String(40)),
                 Column("state", String(32)),
                 Column("controller_host", String(255)),
                 Column("controller_user", String(255)),
                 Column("controller_version", String(64)),
                 Column("run_dir", String(4096)),
                 Column("stored_at", String(40)),
                 Index("ix_bf_runs_suite", "suite"))
    columns = [
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(64), ForeignKey("bf_runs.run_id"), nullable=False),
        Column("device", String(200), nullable=False),
        Column("case_id", String(100), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("label", String(500)),
        Column("model", String(200)),
        Column("variant", String(100)),
        Column("backend", String(64)),
        Column("runtime_version", String(120)),
        Column("status", String(16)),
        Column("substatus", String(64)),
        Column("validity", String(16)),
        Column("p50_ms", Float),
        Column("mean_ms", Float),
        Column("first_ms", Float),
        Column("started_at", String(40)),
        Column("n_latencies", Integer, nullable=False),
        Column("latencies", LargeBinary),
        Column("row_json", Text, nullable=False),
        Column("facts_json", Text, nullable=False),
        Column("digest", String(64), nullable=False),
    ]
    if version >= 2:
        columns.append(Column("p99_ms", Float))
    results = Table("bf_results", md, *columns,
                    UniqueConstraint("run_id", "device", "case_id", name="uq_bf_results_key"),
                    Index("ix_bf_results_device_case", "device", "case_id"))
    if version >= 2:
        Index("ix_bf_runs_started", runs.c.started_at)
    return Layout(md, meta, runs, results)


@dataclass
class Step:
    version: int          # the schema version this step makes
    what: str
    apply: Callable       # apply(connection): inside the migration's transaction


def _step1(conn) -> None:
    layout(1).metadata.create_all(conn)


def _step2(conn) -> None:
    from sqlalchemy import Index, bindparam, select, text, update
    conn.execute(text("ALTER TABLE bf_results ADD COLUMN p99_ms FLOAT"))
    runs = layout(2).runs
    [index] = [i for i in runs.indexes if i.name == "ix_bf_runs_started"]
    Index(index.name, *index.expressions).create(conn)
    results, last = layout(2).results, 0
    while True:   # p99_ms of every stored row, in batches (a history can hold millions)
        got = conn.execute(select(results.c.id, results.c.row_json)
                           .where(results.c.id > last).order_by(results.c.id)
                           .limit(BATCH)).all()
        if not got:
            return
        last = got[-1][0]
        values = []
        for rid, row_json in got:
            try:
                row = json.loads(row_json)
            except ValueError:
                row = {}
            values.append({"b_id": rid, "b_p99": _number(row.get("p99_ms")
                                                          if isinstance(row, dict) else None)})
        conn.execute(update(results).where(results.c.id == bindparam("b_id"))
                     .values(p99_ms=bindparam("b_p99")), values)


MIGRATIONS = [
    Step(1, "the initial layout: bf_meta, bf_runs, bf_results and their indexes", _step1),
    Step(2, "bf_results.p99_ms (filled in from the stored rows), bf_runs by started_at", _step2),
]
SCHEMA_VERSION = MIGRATIONS[-1].version


# -- values made safe for the columns -------------------------------------------------------------
def _text(value, length=None):
    """A str fit for a column: NUL and lone surrogates replaced, cut to `length` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    if length is not None and len(value) > length:
        value = value[:length]
    value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fit(table, values: dict) -> dict:
    """values with every string cut and cleaned for its column of `table`."""
    from sqlalchemy import String
    out = dict(values)
    for col in table.c:
        if col.name in out and isinstance(col.type, String):
            out[col.name] = _text(out[col.name], col.type.length)
    return out


def _str_or_none(value):
    return value if isinstance(value, str) and value else None


def run_values(loaded) -> dict:
    """The bf_runs row of a rundir.LoadedRun. Raises ValueError on a manifest whose run id
    cannot key a run."""
    from agent import schema
    manifest = loaded.manifest
    run_id = manifest.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ValueError("manifest.json: run_id %s is not a run id (letters, digits and ._+:@-, "
                         "at most 64)" % _text(repr(run_id), 80))
    controller = manifest.get("controller") if isinstance(manifest.get("controller"),
                                                          dict) else {}
    state = _str_or_none(manifest.get("state"))
    if state == "running":   # as `benchfleet runs` shows it: no controller holds it: killed
        from orchestrator.runlock import holder_of, run_lock_path
        if holder_of(run_lock_path(loaded.run_dir)) is None:
            state = "killed"
    return {
        "run_id": run_id, "suite": loaded.suite_name,
        "suite_path": _str_or_none(manifest.get("suite_path")) or
        _str_or_none(manifest.get("suite")),
        "started_at": _str_or_none(manifest.get("started_at")),
        "finished_at": _str_or_none(manifest.get("finished_at")),
        "state": state,
        "controller_host": _str_or_none(controller.get("host")),
        "controller_user": _str_or_none(controller.get("user")),
        "controller_version": _str_or_none(manifest.get("controller_version")),
        "run_dir": str(Path(loaded.run_dir).absolute()),
        "stored_at": schema.utc_now(),
    }


def result_values(run_id: str, seq: int, result) -> dict:
    """The bf_results row of one records.Result (every column of the current layout)."""
    from orchestrator import facts, report
    row = dict(report.flat_row(result))
    row["run_id"] = run_id   # the run's (what load_run accepted carries the same)
    row_json = json.dumps(row, separators=(",", ":"), default=str)
    fact = facts.comparable_facts(result)
    facts_json = json.dumps(fact, sort_keys=True, separators=(",", ":"))
    latencies = list(result.timing.latencies_ms) if result.timing is not None else []
    blob = facts.pack_latencies(latencies) if latencies else None
    digest = hashlib.sha256()
    for part in (row_json.encode(), facts_json.encode(), blob or b""):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return {
        "run_id": run_id, "device": str(row.get("device") or "unknown"),
        "case_id": str(row.get("case_id") or "unknown"), "seq": seq,
        "label": row.get("label"), "model": row.get("model"), "variant": row.get("variant"),
        "backend": row.get("backend"), "runtime_version": row.get("runtime_version"),
        "status": row.get("status"), "substatus": row.get("substatus"),
        "validity": row.get("validity"), "p50_ms": _number(row.get("p50_ms")),
        "mean_ms": _number(row.get("mean_ms")), "first_ms": _number(row.get("first_ms")),
        "p99_ms": _number(row.get("p99_ms")), "started_at": row.get("started_at"),
        "n_latencies": len(latencies), "latencies": blob, "row_json": row_json,
        "facts_json": facts_json, "digest": digest.hexdigest(),
    }


# -- the database ---------------------------------------------------------------------------------
class History:
    """One history database (see the module's doc). Use as a context manager, or close()."""

    def __init__(self, url: str, connect: bool = True):
        """connect=False: only check the URL (its kind and driver) without reaching the
        database (check_url)."""
        if url is None or str(url).strip().lower() == OFF:
            raise HistoryError("history is off (--history off or %s=off): give --history URL"
                               % HISTORY_ENV)
        self._raw_url = _as_url(str(url).strip())
        self.url = masked(self._raw_url)
        self.engine = None
        self.dialect = None
        self.migrated_from = None     # the version this open migrated from (0: made it)
        self.schema_version = None
        self._password = None
        self.engine = self._make_engine(make_folder=connect)
        if not connect:
            return
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    @classmethod
    def check_url(cls, url) -> None:
        """HistoryError when url cannot name a history (not a URL, not SQLite or PostgreSQL, its
        driver missing); nothing is connected to, so a server that is down now passes."""
        cls(url, connect=False).close()

    @classmethod
    def open(cls, url=None, results_dir="results") -> "History":
        """History(history_url(url, results_dir)); HistoryError when the history is off."""
        found = history_url(url, results_dir)
        if found is None:
            raise HistoryError("history is off (--history off or %s=off): give --history URL"
                               % HISTORY_ENV)
        return cls(found)

    # -- connecting
    def _fix(self) -> str:
        return ("give a SQLAlchemy URL (sqlite:////path/history.sqlite, "
                "postgresql://user@host:5432/db), a file path, or --history off")

    def _say(self, text) -> str:
        """A message about this history: its masked URL first, never its password."""
        text = "history %s: %s" % (self.url, text)
        if self._raw_url and self._raw_url != self.url:
            text = text.replace(self._raw_url, self.url)
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _make_engine(self, make_folder=True):
        from sqlalchemy import create_engine, event
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        try:
            parsed = make_url(self._raw_url)
        except (ArgumentError, ValueError) as exc:
            raise HistoryError(self._say("not a database URL (%s): %s"
                                         % (_first_line(exc), self._fix()))) from None
        self._password = parsed.password or parsed.query.get("password") or None
        if isinstance(self._password, tuple):
            self._password = self._password[0]
        backend = parsed.get_backend_name()
        kwargs = {}
        if backend == "sqlite":
            database = parsed.database or ""
            if make_folder and database and database != ":memory:" and \
                    not database.startswith("file:"):
                try:
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise HistoryError(self._say(
                        "cannot make the folder of %s: %s; point --history at a writable place"
                        % (database, exc.strerror or exc))) from None
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
        elif backend == "postgresql":
            if parsed.drivername == "postgresql":   # no driver named: psycopg2 (the extra's)
                parsed = parsed.set(drivername="postgresql+" + _pg_driver())
            if parsed.get_driver_name() == "psycopg2":
                kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S,
                                          "application_name": "benchfleet"}
            kwargs["pool_pre_ping"] = True
        else:
            raise HistoryError(self._say("%s databases are not supported: the history is "
                                         "SQLite or PostgreSQL; %s" % (backend, self._fix())))
        try:
            engine = create_engine(parsed, **kwargs)
        except NoSuchModuleError as exc:
            raise HistoryError(self._say("unknown database driver (%s): %s"
                                         % (_first_line(exc), self._fix()))) from None
        except ImportError as exc:
            raise HistoryError(self._say(self._missing_driver(parsed, exc))) from None
        except ArgumentError as exc:
            raise HistoryError(self._say("bad URL (%s): %s" % (_first_line(exc), self._fix()))
                               ) from None
        self.dialect = engine.dialect.name
        if self.dialect == "sqlite":
            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_connection, record):
                dbapi_connection.isolation_level = None   # BEGIN is ours (below)
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("PRAGMA busy_timeout = %d" % int(BUSY_TIMEOUT_S * 1000))
                    cursor.execute("PRAGMA journal_mode = WAL")
                    cursor.execute("PRAGMA synchronous = NORMAL")
                    cursor.execute("PRAGMA foreign_keys = ON")
                finally:
                    cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):
                write = conn.get_execution_options().get("benchfleet_write")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
        return engine

    def _missing_driver(self, parsed, exc) -> str:
        name = getattr(exc, "name", None) or parsed.get_driver_name()
        if parsed.get_backend_name() == "postgresql" and \
                parsed.get_driver_name() in ("psycopg2", "psycopg2cffi"):
            return ("the PostgreSQL driver psycopg2 is not installed (%s): pip install "
                    "'benchfleet[postgres]'" % _first_line(exc))
        return ("the database driver %s is not installed (%s): pip install %s, or use "
                "postgresql:// (pip install 'benchfleet[postgres]') or a SQLite file"
                % (name, _first_line(exc), name))

    def _db_error(self, exc, doing) -> HistoryError:
        """A SQLAlchemy/DBAPI error as a HistoryError that says what to do."""
        detail = _first_line(getattr(exc, "orig", None) or exc)
        low = detail.lower()
        if self.dialect == "sqlite":
            if "file is not a database" in low or "not a database" in low:
                text = ("%s is not a SQLite database (%s): point --history at another file, or "
                        "move that file away" % (self._sqlite_path(), detail))
            elif "unable to open database" in low or "readonly" in low or \
                    "read-only" in low:
                text = ("cannot open %s for writing (%s): check that its folder exists and is "
                        "writable, or point --history elsewhere" % (self._sqlite_path(), detail))
            elif "locked" in low or "busy" in low:
                text = ("busy for more than %d s (%s): another benchfleet is writing it; try "
                        "again when it has finished" % (BUSY_TIMEOUT_S, detail))
            elif "malformed" in low or "corrupt" in low:
                text = ("the database file is damaged (%s): move it away (a new one is made; "
                        "`benchfleet history import` refills it from the run folders)" % detail)
            else:
                text = "%s failed: %s" % (doing, detail)
        else:
            from sqlalchemy.exc import OperationalError, InterfaceError
            if isinstance(exc, (OperationalError, InterfaceError)) and doing == "opening":
                text = ("cannot reach the database server or log in (%s): start the server, "
                        "check the host, port, user, password and database in the URL, or "
                        "give --history off" % detail)
            elif "permission denied" in low:
                text = ("%s failed: %s: the user needs to create tables in the database's "
                        "schema (PostgreSQL 15 no longer lets every user create in public): "
                        "GRANT CREATE ON SCHEMA public TO the user, or use a database it owns"
                        % (doing, detail))
            else:
                text = "%s failed: %s" % (doing, detail)
        return HistoryError(self._say(text))

    def _sqlite_path(self) -> str:
        from sqlalchemy.engine import make_url
        return make_url(self._raw_url).database or "the database"

    @contextmanager
    def _errors(self, doing):
        from sqlalchemy.exc import SQLAlchemyError
        try:
            yield
        except SQLAlchemyError as exc:
            raise self._db_error(exc, doing) from None
        except Exception as exc:
            dbapi = getattr(self.engine.dialect, "dbapi", None) if self.engine else None
            if dbapi is not None and isinstance(exc, getattr(dbapi, "Error", ())):
                raise self._db_error(exc, doing) from None
            raise

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def _write(self):
        """One write transaction, one writer at a time (BEGIN IMMEDIATE / advisory lock)."""
        from sqlalchemy import text
        with self.engine.connect() as conn:
            conn.execution_options(benchfleet_write=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": PG_LOCK_KEY})
                yield conn

    # -- the schema
    def _version(self, conn) -> int:
        from sqlalchemy import inspect, select
        found = inspect(conn)
        if not found.has_table("bf_meta"):
            if found.has_table("bf_runs") or found.has_table("bf_results"):
                raise HistoryError(self._say("has benchfleet tables but no bf_meta: not a history "
                                             "this benchfleet can read; point --history "
                                             "elsewhere"))
            return 0
        meta = layout(1).meta
        value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        try:
            version = int(value)
        except (TypeError, ValueError):
            raise HistoryError(self._say("bf_meta has no schema version (%r): not a history "
                                         "this benchfleet can read; point --history elsewhere"
                                         % _text(repr(value), 40))) from None
        if version > SCHEMA_VERSION:
            raise HistoryError(self._say(
                "written by a newer benchfleet (schema %d, this one reads %d): upgrade "
                "benchfleet or point --history elsewhere" % (version, SCHEMA_VERSION)))
        return version

    def _setup(self) -> None:
        from sqlalchemy import delete, insert
        from orchestrator import __version__
        with self._errors("opening"):
            with self._read() as conn:
                version = self._version(conn)
            if version < SCHEMA_VERSION:
                with self._write() as conn:
                    version = self._version(conn)   # again: another may have migrated it
                    start = version
                    for step in MIGRATIONS:
                        if step.version > version:
                            step.apply(conn)
                    meta = layout().meta
                    conn.execute(delete(meta).where(meta.c.key == "schema_version"))
                    rows = [{"key": "schema_version", "value": str(SCHEMA_VERSION)}]
                    if start == 0:
                        rows.append({"key": "created_by", "value": "benchfleet %s"
                                     % _text(__version__, 100)})
                    conn.execute(insert(meta), rows)
                    if start != SCHEMA_VERSION:
                        self.migrated_from = start
        self.schema_version = SCHEMA_VERSION

    # -- writing
    def store_run(self, loaded) -> dict:
        """Store a rundir.LoadedRun in one transaction: {"run_id", "added", "known",
        "updated"}. A result already stored (same run_id, device, case_id) is not added again
        (known; updated counts those among them whose stored content the folder replaced, e.g.
        a controller's failed row a resume measured again, or energy attached); the run's row
        (state, finished_at, run_dir, ...) is updated."""
        from sqlalchemy import bindparam, insert, select, update
        try:
            run = run_values(loaded)
        except ValueError as exc:
            raise HistoryError(self._say("%s: %s" % (loaded.run_dir, exc))) from None
        lay = layout()
        run_id = run["run_id"]
        records, seen, dupes = [], set(), 0
        for seq, result in enumerate(loaded.results):   # made before the write lock is taken
            rec = _fit(lay.results, result_values(run_id, seq, result))
            key = (rec["device"], rec["case_id"])
            if key in seen:   # one (device, case) twice in a folder: the first counts
                dupes += 1
                continue
            seen.add(key)
            records.append(rec)
        run = _fit(lay.runs, run)
        added = updated = known = 0
        with self._errors("storing run %s" % run_id):
            with self._write() as conn:
                exists = conn.execute(select(lay.runs.c.run_id)
                                      .where(lay.runs.c.run_id == run_id)).first()
                if exists:
                    conn.execute(update(lay.runs).where(lay.runs.c.run_id == run_id)
                                 .values({k: v for k, v in run.items() if k != "run_id"}))
                else:
                    conn.execute(insert(lay.runs), [run])
                stored = {(d, c): (rid, digest, seq) for rid, d, c, digest, seq in conn.execute(
                    select(lay.results.c.id, lay.results.c.device, lay.results.c.case_id,
                           lay.results.c.digest, lay.results.c.seq)
                    .where(lay.results.c.run_id == run_id))}
                new, changed, moved = [], [], []
                for rec in records:
                    have = stored.get((rec["device"], rec["case_id"]))
                    if have is None:
                        new.append(rec)
                    elif have[1] != rec["digest"]:
                        changed.append(dict({k: v for k, v in rec.items()
                                             if k not in ("run_id", "device", "case_id")},
                                            b_id=have[0]))
                    elif have[2] != rec["seq"]:   # the run's order as this (fuller) store has it
                        moved.append({"b_id": have[0], "b_seq": rec["seq"]})
                by_id = lay.results.c.id == bindparam("b_id")
                if new:
                    conn.execute(insert(lay.results), new)
                if changed:
                    conn.execute(update(lay.results).where(by_id), changed)
                if moved:
                    conn.execute(update(lay.results).where(by_id)
                                 .values(seq=bindparam("b_seq")), moved)
                added, updated = len(new), len(changed)
                known = len(records) - added + dupes
        return {"run_id": run_id, "added": added, "known": known, "updated": updated}

    def import_path(self, path) -> dict:
        """Store one run folder, or every run folder in a folder (results/): {"runs": [{run_id,
        run_dir, added, known, updated}], "added", "known", "updated", "skipped": [{path, why}],
        "warnings": [...]} (load_run's: a raw file left out, the run's other results stored).
        A folder that is not a run, or a run whose manifest is bad, is skipped with why.

        Raises:
            HistoryError: path is not a folder; the database failed.
        """
        from orchestrator.rundir import load_run
        out = {"runs": [], "added": 0, "known": 0, "updated": 0, "skipped": [], "warnings": []}
        path = Path(path)
        if path.name == "manifest.json" and path.is_file():
            path = path.parent
        if not path.is_dir():
            raise HistoryError(self._say("%s: no such folder: give a run folder or a folder of "
                                         "run folders (results/)" % path))
        if (path / "manifest.json").exists():
            candidates = [path]
        else:
            try:
                subs = sorted(p for p in path.iterdir()
                              if p.is_dir() and not p.name.startswith("."))
            except OSError as exc:
                raise HistoryError(self._say("cannot list %s: %s" % (path, exc.strerror or exc))
                                   ) from None
            candidates = [p for p in subs if (p / "manifest.json").exists()]
            out["skipped"] += [{"path": str(p), "why": "no manifest.json: not a run folder"}
                               for p in subs if p not in candidates]
            if not subs:
                out["skipped"].append({"path": str(path), "why": "no manifest.json and no "
                                       "run folders in it: not a run folder"})
        for run_dir in candidates:
            try:
                loaded = load_run(run_dir)
                run_values(loaded)
            except (ConfigError, ValueError) as exc:
                out["skipped"].append({"path": str(run_dir), "why": str(exc)})
                continue
            except OSError as exc:
                out["skipped"].append({"path": str(run_dir),
                                       "why": "cannot read: %s" % (exc.strerror or exc)})
                continue
            done = self.store_run(loaded)
            out["warnings"] += list(loaded.warnings)
            out["runs"].append({"run_id": done["run_id"], "run_dir": str(run_dir),
                                "added": done["added"], "known": done["known"],
                                "updated": done["updated"]})
            for key in ("added", "known", "updated"):
                out[key] += done[key]
        return out

    # -- reading
    def _ordered(self, expr):
        """expr in the order SQLite gives text (bytewise), on PostgreSQL too."""
        from sqlalchemy import collate
        return collate(expr, "C") if self.dialect == "postgresql" else expr

    def _start_key(self, runs):
        from sqlalchemy import func, literal
        return self._ordered(func.coalesce(runs.c.started_at, literal("")))

    def runs(self, suite=None, device=None, limit=None, before=None) -> list[dict]:
        """Runs newest first (started_at, then run_id, descending): [{run_id, suite,
        suite_path, started_at, finished_at, state, run_dir, controller_host, controller_user,
        controller_version, stored_at, results (count)}]. suite: of that suite; device: with a
        result of that device; before: a run id: only runs that started before it (HistoryError
        when the history does not hold it); limit: at most that many."""
        from sqlalchemy import and_, exists, func, or_, select
        lay = layout()
        runs, results = lay.runs, lay.results
        counts = (select(results.c.run_id, func.count().label("n"))
                  .group_by(results.c.run_id).subquery())
        start, rid = self._start_key(runs), self._ordered(runs.c.run_id)
        query = (select(runs, func.coalesce(counts.c.n, 0).label("results"))
                 .select_from(runs.outerjoin(counts, counts.c.run_id == runs.c.run_id)))
        if suite is not None:
            query = query.where(runs.c.suite == str(suite))
        if device is not None:
            query = query.where(exists().where(results.c.run_id == runs.c.run_id,
                                               results.c.device == str(device)))
        with self._errors("reading the runs"):
            with self._read() as conn:
                if before is not None:
                    found = conn.execute(select(runs.c.started_at).where(
                        runs.c.run_id == str(before))).first()
                    if found is None:
                        raise HistoryError(self._say(
                            "run %s is not in the history: store it first (benchfleet history "
                            "import RUN_DIR)" % _text(str(before), 80)))
                    at = found[0] or ""
                    query = query.where(or_(start < at, and_(start == at, rid < str(before))))
                query = query.order_by(start.desc(), rid.desc())
                if limit is not None:
                    query = query.limit(max(0, int(limit)))
                got = conn.execute(query).mappings().all()
        keys = ("run_id", "suite", "suite_path", "started_at", "finished_at", "state", "run_dir",
                "controller_host", "controller_user", "controller_version", "stored_at")
        return [dict({k: r[k] for k in keys}, results=int(r["results"])) for r in got]

    def run(self, run_id) -> dict | None:
        """The runs() entry of one run, or None when the history does not hold it."""
        return self._run_info(str(run_id))

    def _run_info(self, run_id):
        from sqlalchemy import func, select
        lay = layout()
        with self._errors("reading the runs"):
            with self._read() as conn:
                row = conn.execute(select(lay.runs).where(lay.runs.c.run_id == run_id)
                                   ).mappings().first()
                if row is None:
                    return None
                n = conn.execute(select(func.count()).select_from(lay.results).where(
                    lay.results.c.run_id == run_id)).scalar()
        info = {k: row[k] for k in ("run_id", "suite", "suite_path", "started_at",
                                    "finished_at", "state", "run_dir", "controller_host",
                                    "controller_user", "controller_version", "stored_at")}
        info["results"] = int(n or 0)
        return info

    def results(self, run_ids=None, device=None, case_id=None, suite=None,
                latencies=False) -> list[dict]:
        """Stored results: each the flat row (every report.COLUMNS key, as report.flat_row made
        it, through JSON) plus "suite", "run_started_at", "facts" (facts.comparable_facts) and
        with latencies=True "latencies_ms" (numpy float64; empty for a result without
        timing). Ordered by run_started_at, run_id, then the run's own order. Filters: run_ids
        (a list, or one id), device, case_id, suite."""
        from sqlalchemy import select
        lay = layout()
        runs, results = lay.runs, lay.results
        if isinstance(run_ids, str):
            run_ids = [run_ids]
        if run_ids is not None:
            run_ids = [str(r) for r in run_ids]
            if not run_ids:
                return []
        cols = [results.c.run_id, results.c.device, results.c.case_id, results.c.row_json,
                results.c.facts_json, runs.c.suite, runs.c.started_at.label("run_started_at")]
        if latencies:
            cols += [results.c.latencies, results.c.n_latencies]
        query = select(*cols).select_from(results.join(runs, results.c.run_id == runs.c.run_id))
        if device is not None:
            query = query.where(results.c.device == str(device))
        if case_id is not None:
            query = query.where(results.c.case_id == str(case_id))
        if suite is not None:
            query = query.where(runs.c.suite == str(suite))
        query = query.order_by(self._start_key(runs), self._ordered(results.c.run_id),
                               results.c.seq, results.c.id)
        out = []
        with self._errors("reading the results"):
            with self._read() as conn:
                for chunk in _chunks(run_ids, 500) if run_ids is not None else [None]:
                    q = query if chunk is None else query.where(results.c.run_id.in_(chunk))
                    out += conn.execute(q).mappings().all()
        if run_ids is not None and len(run_ids) > 500:   # chunks: order them as one query
            out.sort(key=lambda r: (r["run_started_at"] or "", r["run_id"]))
        rows = []
        for r in out:
            row = json.loads(r["row_json"])
            row["suite"] = r["suite"]
            row["run_started_at"] = r["run_started_at"]
            row["facts"] = json.loads(r["facts_json"])
            if latencies:
                row["latencies_ms"] = self._latencies(r)
            rows.append(row)
        return rows

    def _latencies(self, r):
        import numpy as np
        from orchestrator.facts import unpack_latencies
        if r["latencies"] is None:
            return np.empty(0, dtype=np.float64)
        try:
            values = unpack_latencies(bytes(r["latencies"]))
        except ValueError as exc:
            raise HistoryError(self._say("run %s, %s %s: stored latencies are damaged (%s)"
                                         % (r["run_id"], r["device"], r["case_id"], exc))
                               ) from None
        if len(values) != r["n_latencies"]:
            raise HistoryError(self._say("run %s, %s %s: %d stored latencies, %d expected"
                                         % (r["run_id"], r["device"], r["case_id"], len(values),
                                            r["n_latencies"])))
        return values

    # -- closing
    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pg_driver() -> str:
    """The driver of a postgresql:// URL that names none: psycopg2 (what
    'benchfleet[postgres]' installs; SQLAlchemy 2.1 would pick psycopg 3), psycopg 3 where only
    that is installed."""
    from importlib.util import find_spec

    def found(name):
        try:
            return find_spec(name) is not None
        except (ImportError, ValueError):   # a module set to None, a broken install
            return False
    return "psycopg" if not found("psycopg2") and found("psycopg") else "psycopg2"


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _first_line(exc) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
