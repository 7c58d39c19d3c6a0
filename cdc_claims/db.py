"""pymysql connections to the OpenMRS database: one factory for every adapter.

Two users, least privilege: the reader (SELECT only) for assembling claims, the writer for the
``iclm_*`` billing tables and the sidecar's own ``cdc_claims_ledger``. Connections are UTC,
non-autocommit, with dict rows.
"""

from __future__ import annotations

from collections.abc import Callable
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


def reader_connection_factory(db: DatabaseSettings) -> ConnFactory:
    """Connections as the SELECT-only reader user."""
    return connection_factory(
        host=db.host,
        port=db.port,
        user=db.user,
        password=db.password.get_secret_value(),
        database=db.name,
        connect_timeout=db.connect_timeout,
    )


def writer_connection_factory(db: DatabaseSettings) -> ConnFactory:
    """Connections as the writer user (may write ``iclm_*`` and ``cdc_claims_ledger``)."""
    return connection_factory(
        host=db.host,
        port=db.port,
        user=db.writer_user,
        password=db.writer_password.get_secret_value(),
        database=db.name,
        connect_timeout=db.connect_timeout,
    )
