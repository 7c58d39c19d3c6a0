"""Reading the OpenMRS database in integration tests."""

from __future__ import annotations

from typing import Any

from cdc_claims.db import Connection


def q(conn: Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` in a fresh snapshot (the connection is REPEATABLE READ)."""
    conn.commit()
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())
