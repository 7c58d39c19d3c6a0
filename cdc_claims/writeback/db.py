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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymysql.cursors import DictCursor

from cdc_claims.db import Connection, ConnFactory, connection_factory, writer_connection_factory

__all__ = ["Committed", "ConnFactory", "Connection", "connection_factory", "transaction", "writer_connection_factory"]


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
