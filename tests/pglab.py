"""A real PostgreSQL server on 127.0.0.1 for the history tests (and tests/perf/bench_history.py).

The Debian/Ubuntu server binaries (apt-get install postgresql: /usr/lib/postgresql/N/bin) run a
throwaway cluster: initdb with trust authentication in a private temporary folder, the server
on a free loopback port with its unix socket in that folder, fsync off (the data is thrown
away), stopped with `pg_ctl stop -m immediate` at the end. PostgreSQL refuses to run as root, so
as root the server runs as the `postgres` system user the package creates (runuser, or setpriv).

Fixtures (import them into a test module: `from pglab import pg_lab, pg_url`):
    pg_lab   session-scoped PgLab (one server per pytest-xdist worker); skipped with the apt
             command when the binaries are missing, a failure when BENCHFLEET_REQUIRE_POSTGRES=1
    pg_url   a fresh, empty database of that server for one test (dropped after it):
             postgresql://postgres@127.0.0.1:PORT/NAME
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

REQUIRE_ENV = "BENCHFLEET_REQUIRE_POSTGRES"
INSTALL = "apt-get install postgresql (and pip install psycopg2-binary)"
SERVER_USER = "postgres"


def bindir() -> str | None:
    """The newest PostgreSQL server bin folder with initdb, pg_ctl and postgres, or None."""
    found = []
    for folder in glob.glob("/usr/lib/postgresql/*/bin"):
        if all(os.access(os.path.join(folder, t), os.X_OK) for t in ("initdb", "pg_ctl",
                                                                      "postgres")):
            version = os.path.basename(os.path.dirname(folder))
            found.append((tuple(int(p) for p in version.split(".") if p.isdigit()), folder))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl") and shutil.which("postgres"):
        return os.path.dirname(initdb)
    return None


def _server_user():
    """(uid, gid) the server runs as: this user, or postgres when this is root."""
    if os.geteuid() != 0:
        return None
    import pwd
    entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid


def missing_reason() -> str | None:
    """Why no PostgreSQL server can run here (with the fix), or None."""
    if bindir() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): " + INSTALL
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed: pip install psycopg2-binary"
    if os.geteuid() == 0:
        try:
            _server_user()
        except KeyError:
            return ("running as root and there is no %s user for the server (PostgreSQL refuses "
                    "root): %s creates it" % (SERVER_USER, INSTALL))
        if not (shutil.which("runuser") or shutil.which("setpriv")):
            return "running as root and neither runuser nor setpriv is here (util-linux)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgLab:
    """One throwaway PostgreSQL cluster: start(), create_database(), stop()."""

    def __init__(self):
        self.bin = bindir()
        self.root = tempfile.mkdtemp(prefix="benchfleet-pglab-")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = None
        self.started = False
        owner = _server_user()
        if owner is not None:   # the server's user must own its folders (and reach them)
            os.chown(self.root, *owner)
        os.chmod(self.root, 0o700)

    def _as_server(self, argv):
        owner = _server_user()
        if owner is None:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", SERVER_USER, "--"] + argv
        return ["setpriv", "--reuid=%d" % owner[0], "--regid=%d" % owner[1], "--init-groups",
                "--"] + argv

    def _run(self, argv, timeout=120, check=True):
        done = subprocess.run(self._as_server(argv), cwd=self.root, capture_output=True,
                              text=True, timeout=timeout, env=dict(os.environ, LC_ALL="C.UTF-8",
                                                                   LANG="C.UTF-8"))
        if check and done.returncode != 0:
            raise RuntimeError("%s failed (%d): %s%s" % (" ".join(argv[:2]), done.returncode,
                                                         done.stdout[-2000:], done.stderr[-2000:]))
        return done

    def start(self) -> "PgLab":
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-A", "trust",
                   "-U", SERVER_USER, "-E", "UTF8", "--no-sync"])
        last = None
        for _ in range(5):   # a free port can be taken between finding and binding it
            self.port = free_port()
            options = ("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=50" % (self.port, self.root))
            done = self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log,
                              "-w", "-t", "60", "-o", options, "start"], check=False)
            if done.returncode == 0:
                self.started = True
                return self
            last = done.stdout + done.stderr + self._log_tail()
            time.sleep(0.2)
        raise RuntimeError("the PostgreSQL server did not start: %s" % last[-3000:])

    def _log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def url(self, database="postgres", user=SERVER_USER, password=None) -> str:
        auth = user if password is None else "%s:%s" % (user, password)
        return "postgresql://%s@127.0.0.1:%d/%s" % (auth, self.port, database)

    def admin(self):
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SERVER_USER,
                                dbname="postgres", connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_database(self, icu_locale="en-US") -> tuple[str, str]:
        """(name, url) of a new empty database. Its collation is ICU's `icu_locale` where the
        server has ICU (as most production databases, text does not sort bytewise there:
        en-US puts "a" before "B"), else the cluster's (C.UTF-8)."""
        import psycopg2
        from psycopg2 import sql
        name = "t_" + uuid.uuid4().hex[:16]
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                if icu_locale:
                    try:
                        cur.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 "
                                            "LOCALE_PROVIDER icu ICU_LOCALE {}")
                                    .format(sql.Identifier(name), sql.Literal(icu_locale)))
                        return name, self.url(name)
                    except psycopg2.Error:   # no ICU in this server (or before PostgreSQL 15)
                        pass
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        from psycopg2 import sql
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                            .format(sql.Identifier(name)))
        finally:
            conn.close()

    def stop(self) -> None:
        try:
            if self.started:
                self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m",
                           "immediate", "-w", "stop"], check=False, timeout=60)
                self.started = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_lab():
    """A running PgLab for the session (per xdist worker)."""
    reason = missing_reason()
    if reason and os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail("%s=1: %s" % (REQUIRE_ENV, reason))
    if reason:
        pytest.skip(reason)
    lab = PgLab()
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def pg_url(pg_lab):
    """A fresh database of the lab's server for one test."""
    name, url = pg_lab.create_database()
    try:
        yield url
    finally:
        pg_lab.drop_database(name)
