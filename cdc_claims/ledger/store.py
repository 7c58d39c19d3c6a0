"""The claim ledger: a thin adapter over the ``cdc_claims_ledger`` table.

One row per claimable unit (``unit_kind``, ``unit_uuid``) holding where its claim stands
(a :class:`~cdc_claims.lifecycle.State`), why it is held, and what was last sent. This module
stores and reads rows; it decides nothing. The pipeline computes the next state with
:func:`cdc_claims.lifecycle.advance` and calls :meth:`Ledger.upsert` with the result.

The audit of operator actions (``cdc_claims_action``, append-only) is read and written here too.

Every database error becomes :class:`~cdc_claims.errors.WriteBackError` (retriable).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pymysql

from cdc_claims.db import ConnFactory, placeholders, transaction
from cdc_claims.errors import WriteBackError
from cdc_claims.ledger.model import ActionRecord, ClaimRecord, Lease, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.settings import UnitKind

TABLE = "cdc_claims_ledger"

_COLUMNS = (
    "unit_kind",
    "unit_uuid",
    "claim_code",
    "revision",
    "content_hash",
    "state",
    "reason",
    "detail",
    "attempts",
    "patient_uuid",
    "visit_uuid",
    "encounter_uuids",
    "openimis_claim_uuid",
    "last_error",
    "draft_json",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)}, created_at, updated_at FROM {TABLE}"  # noqa: S608 - constants only
_SELECT_LEASED = f"SELECT {', '.join(_COLUMNS)}, created_at, updated_at, lease_owner FROM {TABLE}"  # noqa: S608


CLAIMS_TABLE = "cdc_claims_claim"
_CLAIM_COLUMNS = (
    "claim_code",
    "unit_kind",
    "unit_uuid",
    "kind",
    "seq",
    "related_code",
    "state",
    "content_hash",
    "draft_json",
    "openimis_claim_uuid",
    "reason",
    "detail",
    "last_error",
    "withdrawal",
    "rejected_lines",
)
_CLAIM_SELECT = f"SELECT {', '.join(_CLAIM_COLUMNS)}, created_at, updated_at FROM {CLAIMS_TABLE}"  # noqa: S608
_CLAIM_UPSERT = (
    f"INSERT INTO {CLAIMS_TABLE} ({', '.join(_CLAIM_COLUMNS)}) VALUES ({placeholders(len(_CLAIM_COLUMNS))})"  # noqa: S608
    f" ON DUPLICATE KEY UPDATE {', '.join(f'{c} = VALUES({c})' for c in _CLAIM_COLUMNS[1:])},"
    " updated_at = CURRENT_TIMESTAMP(6)"
)


ACTIONS_TABLE = "cdc_claims_action"
#: column widths of ``cdc_claims_action`` (longer values are cut, never refused)
ACTION_LIMITS = {"actor": 190, "action": 40, "target": 190, "message": 2000}


def _row_to_action(row: dict[str, Any]) -> ActionRecord:
    at: datetime = row["at"]
    return ActionRecord(
        at=at.replace(tzinfo=UTC) if at.tzinfo is None else at,
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        ok=bool(row["ok"]),
        message=row["message"],
        id=int(row["id"]),
    )


def _row_to_claim(row: dict[str, Any]) -> ClaimRecord:
    return ClaimRecord(
        claim_code=row["claim_code"],
        unit_kind=row["unit_kind"],
        unit_uuid=row["unit_uuid"],
        kind=row["kind"],
        state=State(row["state"]),
        seq=int(row["seq"]),
        related_code=row["related_code"],
        content_hash=row["content_hash"],
        draft_json=row["draft_json"],
        openimis_claim_uuid=row["openimis_claim_uuid"],
        reason=row["reason"],
        detail=row["detail"],
        last_error=row["last_error"],
        withdrawal=row["withdrawal"],
        rejected_lines=tuple(u for u in (row["rejected_lines"] or "").split(",") if u),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _claim_values(record: ClaimRecord) -> tuple[Any, ...]:
    return (
        record.claim_code,
        record.unit_kind,
        record.unit_uuid,
        record.kind,
        record.seq,
        record.related_code,
        record.state.value,
        record.content_hash,
        record.draft_json,
        record.openimis_claim_uuid,
        record.reason,
        record.detail,
        record.last_error,
        record.withdrawal,
        ",".join(record.rejected_lines),
    )


def schema_sql() -> str:
    """The idempotent DDL of the ledger table (``cdc_claims/ledger/schema.sql``)."""
    return resources.files("cdc_claims.ledger").joinpath("schema.sql").read_text(encoding="utf-8")


def _statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def _row_to_entry(row: dict[str, Any]) -> LedgerEntry:
    encounters = row["encounter_uuids"] or ""
    return LedgerEntry(
        unit_kind=row["unit_kind"],
        unit_uuid=row["unit_uuid"],
        state=State(row["state"]),
        claim_code=row["claim_code"],
        revision=int(row["revision"]),
        content_hash=row["content_hash"],
        reason=row["reason"],
        detail=row["detail"],
        attempts=int(row["attempts"]),
        patient_uuid=row["patient_uuid"],
        visit_uuid=row["visit_uuid"],
        encounter_uuids=tuple(u for u in encounters.split(",") if u),
        openimis_claim_uuid=row["openimis_claim_uuid"],
        last_error=row["last_error"],
        draft_json=row["draft_json"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _entry_values(entry: LedgerEntry) -> tuple[Any, ...]:
    return (
        entry.unit_kind,
        entry.unit_uuid,
        entry.claim_code,
        entry.revision,
        entry.content_hash,
        entry.state.value,
        entry.reason,
        entry.detail,
        entry.attempts,
        entry.patient_uuid,
        entry.visit_uuid,
        ",".join(entry.encounter_uuids),
        entry.openimis_claim_uuid,
        entry.last_error,
        entry.draft_json,
    )


class Ledger:
    """Read and write ledger rows. Each call is one short transaction."""

    def __init__(self, conn_factory: ConnFactory) -> None:
        self._connect = conn_factory

    def ensure_schema(self) -> None:
        """Create the table if it does not exist (idempotent)."""
        try:
            with transaction(self._connect) as cur:
                for stmt in _statements(schema_sql()):
                    cur.execute(stmt)
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger schema: {err}") from err

    def get(self, unit_kind: UnitKind, unit_uuid: str) -> LedgerEntry | None:
        return self._one(f"{_SELECT} WHERE unit_kind = %s AND unit_uuid = %s", (unit_kind, unit_uuid))

    def known(self, unit_kind: UnitKind, unit_uuids: Iterable[str], *, unless: Iterable[State] = ()) -> set[str]:
        """Which of ``unit_uuids`` have a ledger row (asked 500 at a time), in any state but ``unless``."""
        wanted = sorted(set(unit_uuids))
        excluded = [State(s).value for s in unless]
        found: set[str] = set()
        try:
            with transaction(self._connect) as cur:
                for start in range(0, len(wanted), 500):
                    page = wanted[start : start + 500]
                    sql = f"SELECT unit_uuid FROM {TABLE} WHERE unit_kind = %s"  # noqa: S608 - constants only
                    sql += f" AND unit_uuid IN ({placeholders(len(page))})"
                    if excluded:
                        sql += f" AND state NOT IN ({placeholders(len(excluded))})"
                    cur.execute(sql, (unit_kind, *page, *excluded))
                    found.update(str(r["unit_uuid"]) for r in cur.fetchall())
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger read: {err}") from err
        return found

    def get_by_code(self, code: str) -> LedgerEntry | None:
        return self._one(f"{_SELECT} WHERE claim_code = %s", (code,))

    def upsert(self, entry: LedgerEntry, *, history: ClaimRecord | None = None) -> LedgerEntry:
        """Insert or replace the row of ``(unit_kind, unit_uuid)``; return it as stored.

        ``created_at`` is kept from the first insert; ``updated_at`` moves on every change.
        A claim code already used by another unit raises :class:`WriteBackError`. ``history``:
        the claim's history row, written in the same transaction (one commit per claim less, and
        the two can never disagree after a crash).
        """
        marks = placeholders(len(_COLUMNS))
        updates = ", ".join(f"{c} = VALUES({c})" for c in _COLUMNS[2:])
        sql = (
            f"INSERT INTO {TABLE} ({', '.join(_COLUMNS)}) VALUES ({marks}) "  # noqa: S608 - constants only
            f"ON DUPLICATE KEY UPDATE {updates}, updated_at = CURRENT_TIMESTAMP(6)"
        )
        try:
            with transaction(self._connect) as cur:
                if history is not None:
                    cur.execute(_CLAIM_UPSERT, _claim_values(history))
                cur.execute(sql, _entry_values(entry))
                cur.execute(f"{_SELECT} WHERE unit_kind = %s AND unit_uuid = %s", (entry.unit_kind, entry.unit_uuid))
                row = cur.fetchone()
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger upsert {entry.unit_kind}/{entry.unit_uuid}: {err}") from err
        if row is None or row["unit_uuid"] != entry.unit_uuid:  # pragma: no cover - defensive
            raise WriteBackError(f"ledger upsert {entry.unit_kind}/{entry.unit_uuid}: row not found after write")
        return _row_to_entry(row)

    def acquire_lease(
        self, unit_kind: UnitKind, unit_uuid: str, owner: str, seconds: float, *, steal_from: str | None = None
    ) -> Lease:
        """Claim the unit for ``seconds`` by compare-and-set; returns who holds it afterwards,
        with the unit's row read in the same transaction.

        One statement, so two sidecars racing for the same unit cannot both win: the row (made
        here in state ``detected`` if the unit is new) changes owner only when it has none, when
        it is already ``owner``'s, when the holder's lease expired, or when the holder is
        ``steal_from`` (a holder the caller knows is dead). MySQL applies the assignments left to
        right: ``lease_until`` moves only if ``lease_owner`` just became (or stayed) ours.
        """
        sql = (
            f"INSERT INTO {TABLE} (unit_kind, unit_uuid, state, lease_owner, lease_until)"  # noqa: S608 - constants
            " VALUES (%s, %s, %s, %s, NOW(6) + INTERVAL %s MICROSECOND)"
            " ON DUPLICATE KEY UPDATE"
            " lease_owner = IF(lease_owner IS NULL OR lease_owner = VALUES(lease_owner) OR lease_until < NOW(6)"
            " OR lease_owner = %s, VALUES(lease_owner), lease_owner),"
            " lease_until = IF(lease_owner = VALUES(lease_owner), VALUES(lease_until), lease_until)"
        )
        micros = int(seconds * 1_000_000)
        try:
            with transaction(self._connect) as cur:
                cur.execute(sql, (unit_kind, unit_uuid, State.DETECTED.value, owner, micros, steal_from or ""))
                cur.execute(
                    f"{_SELECT_LEASED} WHERE unit_kind = %s AND unit_uuid = %s",
                    (unit_kind, unit_uuid),
                )
                row = cur.fetchone()
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger lease {unit_kind}/{unit_uuid}: {err}") from err
        if row is None:  # pragma: no cover - the INSERT above made it
            return Lease(None, None)
        return Lease(row["lease_owner"], _row_to_entry(row))

    def release_lease(self, unit_kind: UnitKind, unit_uuid: str, owner: str) -> None:
        """Give the lease back (only if ``owner`` still holds it)."""
        try:
            with transaction(self._connect) as cur:
                cur.execute(
                    f"UPDATE {TABLE} SET lease_owner = NULL, lease_until = NULL"  # noqa: S608 - constants
                    " WHERE unit_kind = %s AND unit_uuid = %s AND lease_owner = %s",
                    (unit_kind, unit_uuid, owner),
                )
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger lease release {unit_kind}/{unit_uuid}: {err}") from err

    def to_rerun(self, *, reason: str | None = None, unit_uuid: str | None = None) -> list[LedgerEntry]:
        """What ``rerun-held`` picks up: held and failed rows, and ``submitting`` rows whose
        submit lease expired (a sidecar died mid-POST, or an older version parked them there)."""
        args: list[Any] = [State.HELD.value, State.FAILED.value, State.SUBMITTING.value]
        sql = f"{_SELECT} WHERE (state IN (%s, %s) OR (state = %s AND (lease_until IS NULL OR lease_until < NOW(6))))"
        if reason is not None:
            sql += " AND reason = %s"
            args.append(reason)
        if unit_uuid is not None:
            sql += " AND unit_uuid = %s"
            args.append(unit_uuid)
        return self._many(sql + " ORDER BY updated_at, ledger_id", tuple(args))

    # ------------------------------------------------------------------ claim history
    def claims_of(self, unit_kind: UnitKind, unit_uuid: str) -> list[ClaimRecord]:
        """Every claim sent for the unit, the original first."""
        return self._claims(
            f"{_CLAIM_SELECT} WHERE unit_kind = %s AND unit_uuid = %s ORDER BY kind <> 'original', seq, claim_id",
            (unit_kind, unit_uuid),
        )

    def claim(self, claim_code: str) -> ClaimRecord | None:
        found = self._claims(f"{_CLAIM_SELECT} WHERE claim_code = %s", (claim_code,))
        return found[0] if found else None

    def open_claims(self, states: Iterable[State]) -> list[ClaimRecord]:
        wanted = [State(s).value for s in states]
        if not wanted:
            return []
        marks = placeholders(len(wanted))
        return self._claims(f"{_CLAIM_SELECT} WHERE state IN ({marks}) ORDER BY updated_at, claim_id", tuple(wanted))

    def upsert_claim(self, record: ClaimRecord) -> ClaimRecord:
        """Insert or replace the history row of ``record.claim_code``."""
        try:
            with transaction(self._connect) as cur:
                cur.execute(_CLAIM_UPSERT, _claim_values(record))
        except pymysql.MySQLError as err:
            raise WriteBackError(f"claim history upsert {record.claim_code}: {err}") from err
        return record

    def _claims(self, sql: str, args: tuple[Any, ...]) -> list[ClaimRecord]:
        try:
            with transaction(self._connect) as cur:
                cur.execute(sql, args)
                rows = cur.fetchall()
        except pymysql.MySQLError as err:
            raise WriteBackError(f"claim history read: {err}") from err
        return [_row_to_claim(r) for r in rows]

    # ------------------------------------------------------------------ operator actions
    def record_action(self, *, actor: str, action: str, target: str, ok: bool, message: str) -> None:
        """Append one audited operator action (``at`` is the database's UTC time, to the ms)."""
        row = (
            actor[: ACTION_LIMITS["actor"]],
            action[: ACTION_LIMITS["action"]],
            target[: ACTION_LIMITS["target"]],
            1 if ok else 0,
            message[: ACTION_LIMITS["message"]],
        )
        try:
            with transaction(self._connect) as cur:
                cur.execute(
                    f"INSERT INTO {ACTIONS_TABLE} (at, actor, action, target, ok, message)"  # noqa: S608 - constants
                    " VALUES (UTC_TIMESTAMP(3), %s, %s, %s, %s, %s)",
                    row,
                )
        except pymysql.MySQLError as err:
            raise WriteBackError(f"action audit {action} {target}: {err}") from err

    def actions_for(self, target: str, *, limit: int = 100) -> list[ActionRecord]:
        """The actions on one unit or claim, newest first (at most ``limit``)."""
        try:
            with transaction(self._connect) as cur:
                cur.execute(
                    f"SELECT id, at, actor, action, target, ok, message FROM {ACTIONS_TABLE}"  # noqa: S608 - constants
                    " WHERE target = %s ORDER BY at DESC, id DESC LIMIT %s",
                    (target[: ACTION_LIMITS["target"]], max(1, int(limit))),
                )
                rows = cur.fetchall()
        except pymysql.MySQLError as err:
            raise WriteBackError(f"action audit read {target}: {err}") from err
        return [_row_to_action(r) for r in rows]

    def list_by_state(self, states: Iterable[State]) -> list[LedgerEntry]:
        """Rows in any of ``states``, oldest change first."""
        wanted = [State(s).value for s in states]
        if not wanted:
            return []
        marks = placeholders(len(wanted))
        return self._many(f"{_SELECT} WHERE state IN ({marks}) ORDER BY updated_at, ledger_id", tuple(wanted))

    def held(self) -> list[LedgerEntry]:
        """Every held claim: what billing staff must look at."""
        return self.list_by_state([State.HELD])

    def _one(self, sql: str, args: tuple[Any, ...]) -> LedgerEntry | None:
        rows = self._many(sql, args)
        return rows[0] if rows else None

    def _many(self, sql: str, args: tuple[Any, ...]) -> list[LedgerEntry]:
        try:
            with transaction(self._connect) as cur:
                cur.execute(sql, args)
                rows = cur.fetchall()
        except pymysql.MySQLError as err:
            raise WriteBackError(f"ledger read: {err}") from err
        return [_row_to_entry(r) for r in rows]
