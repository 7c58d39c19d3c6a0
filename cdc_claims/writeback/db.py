"""The one database seam of the write side: a connection factory and a transaction helper.

Everything that writes to the OpenMRS database (the iclm writer, the ledger, and the Bahmni
save simulator used by tests) takes a :data:`ConnFactory`: a zero-argument callable returning
a fresh pymysql connection. Tests pass a factory for their scratch server; production builds
one from :class:`~cdc_claims.settings.DatabaseSettings` with :func:`writer_connection_factory`.

Connections are opened in UTC (``time_zone='+00:00'``) with autocommit off, so
``CURRENT_TIMESTAMP`` columns and the naive UTC datetimes we write agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import pymysql
from pymysql.cursors import DictCursor

from cdc_claims.settings import DatabaseSettings

if TYPE_CHECKING:
    Connection: TypeAlias = pymysql.connections.Connection[Any]
else:
    Connection = pymysql.connections.Connection
ConnFactory = Callable[[], Connection]


def connection_factory(
    *, host: str, port: int, user: str, password: str, database: str, connect_timeout: float = 5.0
) -> ConnFactory:
    """A factory of UTC, non-autocommit pymysql connections (``DictCursor`` by default)."""

    def connect() -> Connection:
        return pymysql.connect(
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
        )

    return connect


def writer_connection_factory(db: DatabaseSettings) -> ConnFactory:
    """Connections as the writer user (may write ``iclm_*`` and ``cdc_claims_*``)."""
    return connection_factory(
        host=db.host,
        port=db.port,
        user=db.writer_user,
        password=db.writer_password.get_secret_value(),
        database=db.name,
        connect_timeout=db.connect_timeout,
    )


@dataclass
class Committed:
    """Filled in when the transaction commits: ``at`` = ``time.time()`` right after COMMIT."""

    at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
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
