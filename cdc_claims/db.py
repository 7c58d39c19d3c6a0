"""The one database module: connections to the OpenMRS database, transactions, placeholders.

Every adapter that talks to MySQL/MariaDB, on the read side (:mod:`cdc_claims.assemble`) and on
the write side (:mod:`cdc_claims.ledger`, :mod:`cdc_claims.writeback`, the Bahmni simulator of
the dev tools), takes a :data:`ConnFactory` from here: a zero-argument callable returning a
connection. It lives at the top of the package, beside the settings it reads, so that no stage
imports another stage's adapter to reach the database: the ledger used to borrow the iclm
writer's module, an arrow against the direction claims flow. Tests pass a factory for their
scratch server; production builds one from :class:`~cdc_claims.settings.DatabaseSettings`.

Two users, least privilege: the reader (SELECT only) for assembling claims, the writer for the
``iclm_*`` billing tables and the sidecar's own ``cdc_claims_ledger``. Connections are UTC
(``time_zone='+00:00'``, so ``CURRENT_TIMESTAMP`` columns and the naive UTC datetimes we write
agree), non-autocommit, with dict rows.

Connections are **reused**: opening one costs a TCP handshake, authentication and (when the
client tries TLS) a fresh TLS context, about 20 ms of CPU, paid several times per claim if every
read or write opened its own. ``close()`` on a pooled connection rolls back whatever is open and
parks it for the next caller; a broken one is really closed. TLS is used when ``tls_ca`` is set
(certificate verified against it), and not attempted otherwise.

SQL stays parameterized: the only text ever formatted into a statement is a run of ``%s``
(:func:`placeholders`, for ``IN (...)`` and ``VALUES (...)`` lists) and constant names. The
helper is here, not beside the reader's queries, because the reader and the write side both
build such lists and neither should import the other for it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pymysql
from pydantic import SecretStr
from pymysql.cursors import DictCursor

from cdc_claims.errors import ConfigError
from cdc_claims.settings import DatabaseSettings

if TYPE_CHECKING:
    Connection: TypeAlias = pymysql.connections.Connection[Any]
    _Base = pymysql.connections.Connection[Any]
else:
    Connection = pymysql.connections.Connection
    _Base = pymysql.connections.Connection
ConnFactory = Callable[[], Connection]

__all__ = [
    "Committed",
    "ConnFactory",
    "Connection",
    "PooledConnection",
    "connection_factory",
    "placeholders",
    "reader_connection_factory",
    "transaction",
    "writer_connection_factory",
]


def placeholders(n: int) -> str:
    """``%s, %s, ...``: ``n`` pymysql parameters for an ``IN (...)`` or ``VALUES (...)`` list.

    ``n`` must be at least 1: ``IN ()`` is a syntax error, so an empty list is the caller's
    case to handle (usually: nothing to ask, an empty answer).
    """
    if n < 1:
        raise ValueError("a placeholder list needs at least one value")
    return ", ".join(["%s"] * n)


class _Pool:
    """Idle connections of one factory (a few: one per worker thread is the steady state)."""

    def __init__(self, size: int) -> None:
        self._idle: list[PooledConnection] = []
        self._lock = threading.Lock()
        self._size = size

    def take(self) -> PooledConnection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            try:
                conn.ping(reconnect=False)  # one round trip: drop connections the server closed
                return conn
            except pymysql.MySQLError:
                conn.discard()

    def give_back(self, conn: PooledConnection) -> bool:
        with self._lock:
            if len(self._idle) >= self._size:
                return False
            self._idle.append(conn)
            return True


class PooledConnection(_Base):
    """A pymysql connection whose ``close()`` returns it to its pool (after a rollback)."""

    pool: _Pool | None = None

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None and self.open:
            try:
                self.rollback()
                self.pool = pool
                if pool.give_back(self):
                    return
            except pymysql.MySQLError:
                pass
        self.discard()

    def discard(self) -> None:
        self.pool = None
        if self.open:
            with contextlib.suppress(pymysql.MySQLError, OSError):  # the socket is gone already
                super().close()


def connection_factory(
    *,
    host: str,
    port: int,
    user: str,
    password: str,
    database: str,
    connect_timeout: float = 5.0,
    tls_ca: Path | None = None,
    pool_size: int = 8,
) -> ConnFactory:
    """A factory of reused, UTC, non-autocommit connections (``DictCursor`` rows)."""
    pool = _Pool(pool_size)
    tls: dict[str, Any] = {"ssl_ca": str(tls_ca), "ssl_verify_cert": True} if tls_ca else {"ssl_disabled": True}

    def connect() -> Connection:
        conn = pool.take()
        if conn is None:
            conn = PooledConnection(
                host=host,
                port=port,
                user=user,
                password=password,
                database=database,
                charset="utf8mb4",
                autocommit=False,
                connect_timeout=int(max(1, connect_timeout)),
                cursorclass=DictCursor,
                init_command="SET time_zone = '+00:00'",
                **tls,
            )
        conn.pool = pool
        return conn

    return connect


def _for_user(db: DatabaseSettings, user: str, password: str) -> ConnFactory:
    return connection_factory(
        host=db.host,
        port=db.port,
        user=user,
        password=password,
        database=db.name,
        connect_timeout=db.connect_timeout,
        tls_ca=db.tls_ca,
    )


def _required(secret: SecretStr | None, variable: str) -> str:
    if secret is None or not secret.get_secret_value():
        raise ConfigError(f"{variable} is not set (no password has a default)")
    return secret.get_secret_value()


def reader_connection_factory(db: DatabaseSettings) -> ConnFactory:
    """Connections as the SELECT-only reader user."""
    return _for_user(db, db.user, _required(db.password, "CDC_CLAIMS_DB__PASSWORD"))


def writer_connection_factory(db: DatabaseSettings) -> ConnFactory:
    """Connections as the writer user (may write ``iclm_*`` and ``cdc_claims_ledger``)."""
    return _for_user(db, db.writer_user, _required(db.writer_password, "CDC_CLAIMS_DB__WRITER_PASSWORD"))


# ------------------------------------------------------------------------------------------
# Transactions (the write side: iclm writer, ledger, Bahmni simulator)
# ------------------------------------------------------------------------------------------


@dataclass
class Committed:
    """Filled in when the transaction commits: ``at`` = ``time.time()`` right after COMMIT."""

    at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def transaction(factory: ConnFactory, committed: Committed | None = None) -> Iterator[DictCursor]:
    """Open a connection, run the body in ONE transaction, commit (or roll back), close.

    Errors are not translated here: callers map them to their own error type.
    """
    conn = factory()
    try:
        conn.begin()
        cur = conn.cursor(DictCursor)
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        if committed is not None:
            committed.at = time.time()
    finally:
        conn.close()
