"""pymysql connections to the OpenMRS database: one factory for every adapter.

Two users, least privilege: the reader (SELECT only) for assembling claims, the writer for the
``iclm_*`` billing tables and the sidecar's own ``cdc_claims_ledger``. Connections are UTC,
non-autocommit, with dict rows.

Connections are **reused**: opening one costs a TCP handshake, authentication and (when the
client tries TLS) a fresh TLS context, about 20 ms of CPU, paid several times per claim if every
read or write opened its own. ``close()`` on a pooled connection rolls back whatever is open and
parks it for the next caller; a broken one is really closed. TLS is used when ``tls_ca`` is set
(certificate verified against it), and not attempted otherwise.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
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
