"""MariaDB 10.11 of the local stack: own datadir, binlog set up for Debezium, the Bahmni demo DB loaded.

Layout (``<state>`` = ``Stack.state_dir``, default ``/work/main/.stack``)::

    <state>/mariadb/data/         datadir (mariadb-install-db), binlogs mysql-bin.*
    <state>/mariadb/mariadbd.sock socket (root connects through it, unix_socket auth)
    <state>/mariadb/*.done        load markers (see below)
    <state>/logs/mariadb.log      server log
    <state>/run/mariadb.pid       pid of the mariadbd we started

The server listens on ``127.0.0.1:<Ports.mariadb>`` (33306) with the options of ``kafka/mariadb/cdc.cnf``
(ROW binlog, FULL row image and row metadata, server_id 184054). On the first ``up`` the database
``openmrs`` is created and loaded from ``tests/data/openmrs/bahmni-0.94-openmrs-demo.sql.gz``, then
``insuranceclaims_iclm_schema.sql`` (both without binlogging, so CDC starts from a clean log). Every
``up`` then applies ``cdc_claims/ledger/schema.sql`` again if it exists and changed since last time
(it must be idempotent: ``CREATE TABLE IF NOT EXISTS``), and (re)creates the users:

=============  ==============================================================================
user           privileges (password defaults to the user name; reader/writer from settings)
=============  ==============================================================================
``debezium``   ``kafka/mariadb/grants.sql``: RELOAD, SHOW DATABASES, REPLICATION SLAVE,
               BINLOG MONITOR on ``*.*``; SELECT on ``openmrs.*``
``cdc_reader`` SELECT on ``openmrs.*``
``cdc_writer`` SELECT on ``openmrs.*``; SELECT/INSERT/UPDATE (never DELETE) on each ``iclm_*`` and
               ``cdc_claims_*`` table (enumerated from ``information_schema`` at every ``up``),
               but only SELECT/INSERT on the append-only audit ``cdc_claims_action``
``cdc_admin``  ALL on ``openmrs.*`` (tests use it to simulate Bahmni writes)
=============  ==============================================================================
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
from pydantic import SecretStr
from pymysql.connections import Connection
from pymysql.cursors import Cursor

from cdc_claims.settings import DatabaseSettings
from cdc_dev import credentials
from cdc_dev.base import (
    REPO_ROOT,
    Stack,
    StackError,
    port_open,
    process_status,
    read_pid,
    start_process,
    step,
    stop_process,
    tail,
    wait_until,
)

CNF_FILE = REPO_ROOT / "kafka" / "mariadb" / "cdc.cnf"
GRANTS_FILE = REPO_ROOT / "kafka" / "mariadb" / "grants.sql"
DATA_DIR = REPO_ROOT / "tests" / "data" / "openmrs"
DEMO_DUMP = DATA_DIR / "bahmni-0.94-openmrs-demo.sql.gz"
ICLM_SCHEMA = DATA_DIR / "insuranceclaims_iclm_schema.sql"
LEDGER_SCHEMA = REPO_ROOT / "cdc_claims" / "ledger" / "schema.sql"

DATABASE = "openmrs"
#: Table-name prefixes the sidecar may write (and ``reset`` truncates).
WRITABLE_PREFIXES = ("iclm_", "cdc_claims_")
#: Writable tables the writer may only add rows to (the audit of operator actions): no UPDATE.
APPEND_ONLY_TABLES = frozenset({"cdc_claims_action"})
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class MariaDB:
    """The stack's MariaDB (a :class:`~cdc_dev.base.Component`)."""

    name = "mariadb"

    def __init__(self, stack: Stack | None = None, db: DatabaseSettings | None = None) -> None:
        self.stack = stack or Stack.from_env()
        self.db = db or credentials.database(self.stack.ports)
        self.port = self.stack.ports.mariadb
        self.home = self.stack.dir("mariadb")
        self.datadir = self.home / "data"
        self.socket = self.home / "mariadbd.sock"
        self.pidfile = self.stack.pidfile(self.name)
        self.logfile = self.stack.log(self.name)

    # -- credentials -------------------------------------------------------------------------------

    def passwords(self) -> dict[str, str]:
        """Password of every dev user (the reader/writer ones come from the settings)."""
        return {
            "debezium": "debezium",
            self.db.user: _secret(self.db.password),
            self.db.writer_user: _secret(self.db.writer_password),
            "cdc_admin": "cdc_admin",
        }

    def connect(
        self, user: str = "cdc_admin", database: str | None = DATABASE, *, autocommit: bool = False
    ) -> Connection[Cursor]:
        """A pymysql connection over TCP (127.0.0.1:<Ports.mariadb>) as one of the dev users.

        Users: ``cdc_admin`` (simulates Bahmni writes), ``cdc_reader``, ``cdc_writer``, ``debezium``.
        """
        password = self.passwords().get(user)
        if password is None:
            raise StackError(f"unknown dev user {user!r}; known: {sorted(self.passwords())}")
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=password,
            database=database,
            charset="utf8mb4",
            connect_timeout=5,
            autocommit=autocommit,
        )

    @contextlib.contextmanager
    def root(self) -> Iterator[Connection[Cursor]]:
        """Administrative connection: root over the socket (unix_socket authentication)."""
        conn = pymysql.connect(unix_socket=str(self.socket), user=self._root_user(), autocommit=True, charset="utf8mb4")
        try:
            yield conn
        finally:
            conn.close()

    # -- Component ---------------------------------------------------------------------------------

    def status(self) -> str:
        return process_status(
            self.pidfile,
            healthy=self._ready,
            port=self.port,
            running=f"127.0.0.1:{self.port}, datadir {self.datadir}",
            log=self.logfile,
        )

    def up(self) -> None:
        if read_pid(self.pidfile) is not None and self._ready():
            self._provision()
            return
        if port_open(self.port):
            raise StackError(f"port {self.port} is in use by a process we did not start; set CDC_STACK_MARIADB_PORT")
        mariadbd = self._ensure_installed()
        if not (self.datadir / "mysql").is_dir():
            self._install_db()
        done = step(f"starting MariaDB on 127.0.0.1:{self.port}")
        self.socket.unlink(missing_ok=True)
        start_process(
            [
                mariadbd,
                f"--defaults-file={CNF_FILE}",
                f"--user={self._os_user()}",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.home / 'mariadbd.pid'}",
                f"--log-bin={self.datadir / 'mysql-bin'}",
                f"--tmpdir={self.stack.dir('tmp')}",
            ],
            pidfile=self.pidfile,
            log=self.logfile,
        )
        wait_until(self._ready_or_dead, 60, "MariaDB to accept connections", self.logfile)
        if read_pid(self.pidfile) is None:
            raise StackError(f"mariadbd exited during start-up:\n{tail(self.logfile)}")
        done()
        self._provision()

    def down(self) -> None:
        if stop_process(self.pidfile, timeout=60):
            print(f"==> MariaDB stopped (datadir kept: {self.datadir})", flush=True)

    def reset(self) -> None:
        """Fast test isolation: TRUNCATE every ``iclm_*`` and ``cdc_claims_*`` table (FK checks off).

        Does NOT undo writes tests made to OpenMRS tables (obs, encounter, ...): tests create their own
        rows. Truncation is DDL, so it appears in the binlog only as statements the connector ignores
        (those tables are not captured). For a pristine OpenMRS, ``down()`` and delete ``<state>/mariadb``
        and the Kafka/Connect state.
        """
        with self.root() as conn, conn.cursor() as cur:
            tables = self._writable_tables(cur)
            cur.execute("SET SESSION foreign_key_checks = 0")
            try:
                for table in tables:
                    cur.execute(f"TRUNCATE TABLE `{DATABASE}`.`{table}`")
            finally:
                cur.execute("SET SESSION foreign_key_checks = 1")

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _os_user() -> str:
        return "root" if os.geteuid() == 0 else os.environ.get("USER", "mysql")

    def _root_user(self) -> str:
        return "root"

    def _ensure_installed(self) -> str:
        found = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None)
        if found:
            return found
        if os.geteuid() != 0:
            raise StackError("mariadbd not found; install it: sudo apt-get install -y mariadb-server mariadb-client")
        done = step("installing mariadb-server with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "mariadb-server", "mariadb-client"],
        ):
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise StackError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        done()
        found = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not Path(found).exists():
            raise StackError("mariadb-server installed but mariadbd not found")
        return found

    def _install_db(self) -> None:
        done = step(f"initialising MariaDB datadir {self.datadir}")
        install = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
        if self.datadir.exists():
            shutil.rmtree(self.datadir)  # a half-initialised datadir from an interrupted run
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--user={self._os_user()}",
                "--auth-root-authentication-method=socket",
                f"--auth-root-socket-user={self._os_user()}",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"mariadb-install-db failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        for marker in self.home.glob("*.done"):
            marker.unlink()
        done()

    def _ready(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self.root() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except pymysql.Error:
            return False

    def _ready_or_dead(self) -> bool:
        return read_pid(self.pidfile) is None or self._ready()

    def _marker(self, name: str) -> Path:
        return self.home / f"{name}.done"

    def _cli(self, *args: str, stdin: bytes | None = None, what: str) -> None:
        client = shutil.which("mariadb") or "/usr/bin/mariadb"
        result = subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket}", f"--user={self._root_user()}", *args],
            input=stdin,
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"{what} failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def _load_sql(self, path: Path, what: str) -> None:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        # Loading is not replicated to the binlog: CDC starts from a clean log, the snapshot sees the data.
        self._cli("--init-command=SET SESSION sql_log_bin=0", DATABASE, stdin=data, what=what)

    def _provision(self) -> None:
        if not self._marker("openmrs").exists():
            done = step(f"loading {DEMO_DUMP.name} and {ICLM_SCHEMA.name} into `{DATABASE}`")
            with self.root() as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
                cur.execute(f"CREATE DATABASE `{DATABASE}` CHARACTER SET utf8 COLLATE utf8_general_ci")
            self._load_sql(DEMO_DUMP, f"loading {DEMO_DUMP.name}")
            self._load_sql(ICLM_SCHEMA, f"loading {ICLM_SCHEMA.name}")
            self._marker("openmrs").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
            done()
        if LEDGER_SCHEMA.exists():
            digest = hashlib.sha256(LEDGER_SCHEMA.read_bytes()).hexdigest()
            marker = self._marker("ledger-schema")
            if not marker.exists() or marker.read_text().strip() != digest:
                done = step(f"applying {LEDGER_SCHEMA.relative_to(REPO_ROOT)}")
                self._load_sql(LEDGER_SCHEMA, f"applying {LEDGER_SCHEMA.name}")
                marker.write_text(digest + "\n")
                done()
        self._grant()

    def _grant(self) -> None:
        self._cli(stdin=GRANTS_FILE.read_bytes(), what=f"applying {GRANTS_FILE.name}")
        passwords = self.passwords()
        with self.root() as conn, conn.cursor() as cur:
            for user in (self.db.user, self.db.writer_user, "cdc_admin"):
                cur.execute("CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (user, passwords[user]))
                cur.execute("ALTER USER %s@'%%' IDENTIFIED BY %s", (user, passwords[user]))
            cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO %s@'%%'", (self.db.user,))
            cur.execute(f"GRANT SELECT ON `{DATABASE}`.* TO %s@'%%'", (self.db.writer_user,))
            for table in self._writable_tables(cur):
                # exactly the runbook's rights: no user of the sidecar may DELETE, nor UPDATE an
                # append-only table (a stack made before these rules loses the rights it had)
                append_only = table in APPEND_ONLY_TABLES
                for revoked in ("DELETE", "UPDATE") if append_only else ("DELETE",):
                    with contextlib.suppress(pymysql.MySQLError):
                        cur.execute(f"REVOKE {revoked} ON `{DATABASE}`.`{table}` FROM %s@'%%'", (self.db.writer_user,))
                rights = "SELECT, INSERT" if append_only else "SELECT, INSERT, UPDATE"
                cur.execute(f"GRANT {rights} ON `{DATABASE}`.`{table}` TO %s@'%%'", (self.db.writer_user,))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO %s@'%%'", ("cdc_admin",))

    @staticmethod
    def _writable_tables(cur: Cursor) -> list[str]:
        cur.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = %s AND table_type = 'BASE TABLE'"
            " AND (table_name LIKE 'iclm\\_%%' OR table_name LIKE 'cdc\\_claims\\_%%') ORDER BY table_name",
            (DATABASE,),
        )
        names = [str(row[0]) for row in cur.fetchall()]
        bad = [n for n in names if not _TABLE_NAME.match(n) or not n.startswith(WRITABLE_PREFIXES)]
        if bad:
            raise StackError(f"unexpected table names: {bad}")
        return names


def _secret(value: SecretStr | None) -> str:
    if value is None:
        raise StackError("the stack's database settings need the reader and writer passwords")
    return value.get_secret_value()
