"""Write claim outcomes into the ``iclm_*`` billing tables of openmrs-module-insuranceclaims.

Input: one :class:`~cdc_claims.reply.model.ReplyMessage` (the claim as sent + the normalized
ClaimResponse). Output, in ONE transaction (``DATA_MODEL.md`` §7.5):

* first sight of a claim code: ``iclm_bill`` (INSURANCE_CLAIM / REQUESTED), one
  ``iclm_provided_item`` per claim line, ``iclm_claim`` (ENTERED), one ``iclm_claim_item`` per line,
  one ``iclm_claim_diagnosis`` per diagnosis;
* then the response: claim status / approved total / rejection reason / openIMIS uuid, item
  PASSED/REJECTED with approved quantity and price; provided items PROCESSED and the bill
  COMPLETED once the claim reached a final money state (PROCESSED, VALUATED, REJECTED).

**Idempotent.** Every row uuid is a uuid5 of the claim code (and the line's ``source_uuid``), so a
re-applied message finds its rows instead of inserting new ones, and a status never moves
backwards. The order is :mod:`cdc_claims.lifecycle`'s own table (the ledger and the poller obey
the same one): ``ENTERED < CHECKED < PROCESSED < VALUATED``, ``REJECTED`` accepted from any
non-final state, nothing leaves ``REJECTED`` or ``VALUATED``; the same status is a no-op.

**Withdrawals.** A :class:`~cdc_claims.reply.model.WithdrawalNotice` (an encounter voided after
its claim reached openIMIS) flags the claim's rows where billing staff and the insuranceclaims
module already look, without new columns in the module's tables: ``iclm_claim.explanation`` (or
``iclm_claim_item.explanation`` for single lines) starts with :data:`WITHDRAWAL_FLAG`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import pymysql
from pymysql.cursors import DictCursor

from cdc_claims.assemble.model import ClaimDraft, ClaimLine
from cdc_claims.db import Connection, ConnFactory, placeholders, transaction
from cdc_claims.errors import CdcClaimsError, WriteBackError, WriteBackRefused
from cdc_claims.lifecycle import MONEY_FINAL_STATES, OPENIMIS_STATUS, iclm_status_moves
from cdc_claims.log import get_logger
from cdc_claims.reply.model import LineOutcome, NormalizedResponse, ReplyMessage, WithdrawalNotice

log = get_logger(__name__)

#: Namespace of every uuid this writer derives (stable forever: changing it breaks idempotency).
ICLM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/cdc-claims/cdc-claims/iclm")
DAEMON_USER_UUID = "A4F30A1B-5EB9-11DF-A648-37A07F9C90FB"

IclmStatus = Literal["REJECTED", "ENTERED", "CHECKED", "PROCESSED", "VALUATED"]
BillingState = Literal["reimbursed", "denied", "pending"]

#: Claim statuses after which the bill is settled (money decided, either way).
_MONEY_FINAL = frozenset(iclm for _event, state, iclm in OPENIMIS_STATUS.values() if state in MONEY_FINAL_STATES)
#: How a withdrawal flag starts in ``explanation`` (billing staff search for it).
WITHDRAWAL_FLAG = "WITHDRAWAL NEEDED"


def row_uuid(kind: str, claim_code: str, key: str = "") -> str:
    """The deterministic uuid of one iclm row: ``kind`` in bill/claim/item/claim_item/dx."""
    return str(uuid.uuid5(ICLM_NAMESPACE, f"{kind}:{claim_code}:{key}"))


def status_moves(current: str | None, new: str) -> bool:
    """True when a response with status ``new`` may overwrite a row in status ``current``
    (the lifecycle's transition table decides; an unknown stored status never moves)."""
    try:
        return iclm_status_moves(current, new)
    except CdcClaimsError:
        return False


def _int_qty(value: Decimal | None) -> int | None:
    if value is None:
        return None
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _day_start(d: date) -> datetime:
    return datetime.combine(d, time.min)


def _day_end(d: date) -> datetime:
    return datetime.combine(d, time(23, 59, 59))


def _naive_utc(ts: datetime) -> datetime:
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC).replace(tzinfo=None)
    return ts.replace(microsecond=0)


class IclmWriter:
    """Apply reply messages to the ``iclm_*`` tables (writer user).

    ``creator``: the OpenMRS ``users.user_id`` recorded as creator/changed_by. ``None`` (default)
    means the ``daemon`` user (uuid ``A4F30A1B-…``) when present, else user 1.
    """

    def __init__(self, conn_factory: ConnFactory, *, creator: int | None = None) -> None:
        self._connect = conn_factory
        self._creator = creator
        self._claim_columns: frozenset[str] | None = None

    # ------------------------------------------------------------------ public
    def apply(self, message: ReplyMessage) -> None:
        """Write ``message`` in one transaction. Raises :class:`WriteBackError` (retriable)."""
        claim, resp = message.claim, message.response
        if resp.claim_code != claim.code:  # can never apply: dead-letter it, do not crash-loop
            raise WriteBackRefused(f"response for {resp.claim_code!r} paired with claim {claim.code!r}")
        known = {line.source_uuid for line in claim.lines}
        strays = sorted({o.source_uuid for o in resp.lines} - known)
        if strays:
            raise WriteBackRefused(f"claim {claim.code}: outcomes for lines it does not hold: {strays[:5]}")
        try:
            with transaction(self._connect) as cur:
                user = self._user(cur)
                now = _naive_utc(datetime.now(UTC))
                claim_id, current = self._ensure_claim(cur, claim, user, now)
                if current is not None and not status_moves(current, resp.iclm_status):
                    log.info("iclm_response_ignored", claim_code=claim.code, current=current, received=resp.iclm_status)
                    return
                self._apply_response(cur, claim, resp, claim_id=claim_id, user=user, now=now)
        except (pymysql.IntegrityError, pymysql.DataError, pymysql.ProgrammingError) as err:
            raise WriteBackRefused(f"iclm write-back of claim {claim.code}: {err}") from err
        except pymysql.MySQLError as err:
            raise WriteBackError(f"iclm write-back of claim {claim.code}: {err}") from err
        log.info("iclm_written", claim_code=claim.code, status=resp.iclm_status)

    def apply_withdrawal(self, notice: WithdrawalNotice) -> bool:
        """Flag what must be withdrawn in openIMIS; False if the claim has no rows yet.

        The notice is the complete picture for its claim: the whole claim (``whole_claim``), or
        exactly ``source_uuids`` among its lines; lines no longer listed lose their flag, and a
        notice listing nothing clears every flag of the claim (openIMIS rejected those lines, or
        the clinician put them back). Idempotent: re-applying it changes nothing."""
        flag = f"{WITHDRAWAL_FLAG}: {notice.detail}"[:4000]
        like = f"{WITHDRAWAL_FLAG}%"
        code = notice.claim_code
        try:
            with transaction(self._connect) as cur:
                user = self._user(cur)
                now = _naive_utc(datetime.now(UTC))
                cur.execute(
                    "SELECT iclm_claim_id FROM iclm_claim WHERE uuid = %s FOR UPDATE", (row_uuid("claim", code),)
                )
                row = cur.fetchone()
                if row is None:
                    return False
                claim_id = int(row["iclm_claim_id"])
                flagged = [row_uuid("claim_item", code, u) for u in notice.source_uuids]
                if flagged:
                    marks = placeholders(len(flagged))
                    cur.execute(
                        "UPDATE iclm_claim_item SET explanation = %s, changed_by = %s, date_changed = %s"  # noqa: S608
                        f" WHERE claim = %s AND uuid IN ({marks}) AND (explanation IS NULL OR explanation <> %s)",
                        (flag, user, now, claim_id, *flagged, flag),
                    )
                    cur.execute(
                        "UPDATE iclm_claim_item SET explanation = NULL, changed_by = %s, date_changed = %s"  # noqa: S608
                        f" WHERE claim = %s AND explanation LIKE %s AND uuid NOT IN ({marks})",
                        (user, now, claim_id, like, *flagged),
                    )
                elif not notice.whole_claim:
                    cur.execute(
                        "UPDATE iclm_claim_item SET explanation = NULL, changed_by = %s, date_changed = %s"
                        " WHERE claim = %s AND explanation LIKE %s",
                        (user, now, claim_id, like),
                    )
                if notice.whole_claim or flagged:
                    cur.execute(
                        "UPDATE iclm_claim SET explanation = %s, changed_by = %s, date_changed = %s"
                        " WHERE iclm_claim_id = %s AND (explanation IS NULL OR explanation <> %s)",
                        (flag, user, now, claim_id, flag),
                    )
                else:
                    cur.execute(
                        "UPDATE iclm_claim SET explanation = NULL, changed_by = %s, date_changed = %s"
                        " WHERE iclm_claim_id = %s AND explanation LIKE %s",
                        (user, now, claim_id, like),
                    )
        except (pymysql.IntegrityError, pymysql.DataError, pymysql.ProgrammingError) as err:
            raise WriteBackRefused(f"iclm withdrawal flag of claim {code}: {err}") from err
        except pymysql.MySQLError as err:
            raise WriteBackError(f"iclm withdrawal flag of claim {code}: {err}") from err
        log.info("iclm_withdrawal_flagged", claim_code=code, lines=len(notice.source_uuids), whole=notice.whole_claim)
        return True

    # ------------------------------------------------------------------ first sight
    def _ensure_claim(self, cur: DictCursor, claim: ClaimDraft, user: int, now: datetime) -> tuple[int, str | None]:
        """Return ``(iclm_claim_id, status before this message)``; status ``None`` = just created."""
        cur.execute(
            "SELECT iclm_claim_id, status, bill FROM iclm_claim WHERE uuid = %s FOR UPDATE",
            (row_uuid("claim", claim.code),),
        )
        row = cur.fetchone()
        if row is not None:
            self._ensure_lines(
                cur, claim, claim_id=int(row["iclm_claim_id"]), bill_id=int(row["bill"]), user=user, now=now
            )
            return int(row["iclm_claim_id"]), str(row["status"])

        primary = next((d.concept_id for d in claim.diagnoses if d.primary), None)
        cur.execute(
            "INSERT INTO iclm_bill (start_date, end_date, total_amount, payment_status, payment_type, diagnosis,"
            " patient, uuid, creator, date_created) VALUES (%s, %s, %s, 'REQUESTED', 'INSURANCE_CLAIM', %s, %s, %s,"
            " %s, %s)",
            (
                _day_start(claim.period_start),
                _day_end(claim.period_end),
                claim.total,
                primary,
                claim.patient_id,
                row_uuid("bill", claim.code),
                user,
                now,
            ),
        )
        bill_id = int(cur.lastrowid)
        columns = {
            "provider": claim.provider_id,
            "patient": claim.patient_id,
            "location": claim.location_id,
            "claim_code": claim.code,
            "date_from": _day_start(claim.period_start),
            "date_to": _day_end(claim.period_end),
            "claimed_total": claim.total,
            "visit_type": claim.visit_type_id,
            "status": "ENTERED",
            "bill": bill_id,
            "uuid": row_uuid("claim", claim.code),
            "creator": user,
            "date_created": now,
        }
        fork = {"visit": claim.visit_id, "encounter": claim.encounter_id, "usetype": "claim"}
        present = self._iclm_claim_columns(cur)
        columns.update({k: v for k, v in fork.items() if k in present})
        names = ", ".join(columns)
        marks = placeholders(len(columns))
        cur.execute(f"INSERT INTO iclm_claim ({names}) VALUES ({marks})", tuple(columns.values()))  # noqa: S608
        claim_id = int(cur.lastrowid)
        self._ensure_lines(cur, claim, claim_id=claim_id, bill_id=bill_id, user=user, now=now)
        for dx in {d.concept_id: d for d in claim.diagnoses}.values():
            cur.execute(
                "INSERT INTO iclm_claim_diagnosis (concept, claim, uuid, creator, date_created)"
                " VALUES (%s, %s, %s, %s, %s)",
                (dx.concept_id, claim_id, row_uuid("dx", claim.code, str(dx.concept_id)), user, now),
            )
        log.info("iclm_claim_created", claim_code=claim.code, lines=len(claim.lines), diagnoses=len(claim.diagnoses))
        return claim_id, None

    def _ensure_lines(
        self, cur: DictCursor, claim: ClaimDraft, *, claim_id: int, bill_id: int, user: int, now: datetime
    ) -> None:
        """Insert the provided item + claim item of every line not stored yet (matched by uuid)."""
        wanted = {row_uuid("item", claim.code, line.source_uuid): line for line in claim.lines}
        if not wanted:
            return
        existing = self._uuids(cur, "iclm_provided_item", wanted)
        served = self._served_dates(cur, [line.source_uuid for u, line in wanted.items() if u not in existing])
        for item_uuid, line in wanted.items():
            if item_uuid in existing:
                continue
            self._insert_line(
                cur,
                claim,
                line,
                item_uuid=item_uuid,
                claim_id=claim_id,
                bill_id=bill_id,
                served=served,
                user=user,
                now=now,
            )

    def _insert_line(
        self,
        cur: DictCursor,
        claim: ClaimDraft,
        line: ClaimLine,
        *,
        item_uuid: str,
        claim_id: int,
        bill_id: int,
        served: dict[str, datetime],
        user: int,
        now: datetime,
    ) -> None:
        cur.execute(
            "INSERT INTO iclm_provided_item (price, date_of_served, item, patient, status, bill, uuid, creator,"
            " date_created, number_of_consumptions) VALUES (%s, %s, %s, %s, 'ENTERED', %s, %s, %s, %s, %s)",
            (
                line.unit_price,
                served.get(line.source_uuid, _day_start(claim.period_start)),
                line.concept_id,
                claim.patient_id,
                bill_id,
                item_uuid,
                user,
                now,
                _int_qty(line.quantity),
            ),
        )
        provided_id = int(cur.lastrowid)
        cur.execute(
            "INSERT INTO iclm_claim_item (quantity_provided, item, claim, uuid, creator, date_created)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                _int_qty(line.quantity),
                provided_id,
                claim_id,
                row_uuid("claim_item", claim.code, line.source_uuid),
                user,
                now,
            ),
        )

    # ------------------------------------------------------------------ response
    def _apply_response(
        self, cur: DictCursor, claim: ClaimDraft, resp: NormalizedResponse, *, claim_id: int, user: int, now: datetime
    ) -> None:
        status = resp.iclm_status
        final_money = status in _MONEY_FINAL
        sets: dict[str, Any] = {
            "status": status,
            "approved_total": resp.approved_total,
            "rejection_reason": resp.rejection_reason,
            "date_processed": _naive_utc(resp.received_at) if final_money else None,
            "changed_by": user,
            "date_changed": now,
        }
        if resp.claim_uuid:
            sets["external_id"] = resp.claim_uuid
            if "response_UUID" in self._iclm_claim_columns(cur):
                sets["response_UUID"] = resp.claim_uuid
        assignments = ", ".join(f"{k} = %s" for k in sets)
        cur.execute(
            f"UPDATE iclm_claim SET {assignments} WHERE iclm_claim_id = %s",  # noqa: S608 - constant column names
            (*sets.values(), claim_id),
        )

        outcomes = {o.source_uuid: o for o in resp.lines}
        known = {line.source_uuid for line in claim.lines}
        for unknown in sorted(set(outcomes) - known):
            log.warning("iclm_outcome_without_line", claim_code=claim.code, source_uuid=unknown)
        for line in claim.lines:
            outcome = outcomes.get(line.source_uuid)
            if outcome is None and status == "REJECTED":
                outcome = LineOutcome(
                    source_uuid=line.source_uuid,
                    code=line.code,
                    category=line.category,
                    status="REJECTED",
                    reason_code=-1,
                    reason_text=resp.rejection_reason or "claim rejected",
                    quantity_approved=None,
                    price_approved=None,
                )
            if outcome is not None:
                self._apply_line(cur, claim.code, outcome, user, now)

        if final_money:
            cur.execute(
                "UPDATE iclm_provided_item p JOIN iclm_claim_item ci ON ci.item = p.iclm_provided_item_id"
                " SET p.status = 'PROCESSED', p.changed_by = %s, p.date_changed = %s"
                " WHERE ci.claim = %s AND p.status <> 'PROCESSED'",
                (user, now, claim_id),
            )
            cur.execute(
                "UPDATE iclm_bill b JOIN iclm_claim c ON c.bill = b.iclm_bill_id"
                " SET b.payment_status = 'COMPLETED', b.changed_by = %s, b.date_changed = %s"
                " WHERE c.iclm_claim_id = %s AND b.payment_status <> 'COMPLETED'",
                (user, now, claim_id),
            )

    def _apply_line(self, cur: DictCursor, code: str, outcome: LineOutcome, user: int, now: datetime) -> None:
        reason = None if outcome.status == "PASSED" else f"{outcome.reason_code} {outcome.reason_text}".strip()
        cur.execute(
            "UPDATE iclm_claim_item SET status = %s, quantity_approved = %s, price_approved = %s,"
            " rejection_reason = %s, changed_by = %s, date_changed = %s WHERE uuid = %s",
            (
                outcome.status,
                _int_qty(outcome.quantity_approved),
                outcome.price_approved,
                reason,
                user,
                now,
                row_uuid("claim_item", code, outcome.source_uuid),
            ),
        )

    # ------------------------------------------------------------------ lookups
    def _user(self, cur: DictCursor) -> int:
        if self._creator is None:
            cur.execute("SELECT user_id FROM users WHERE uuid = %s", (DAEMON_USER_UUID,))
            row = cur.fetchone()
            self._creator = int(row["user_id"]) if row else 1
        return self._creator

    def _iclm_claim_columns(self, cur: DictCursor) -> frozenset[str]:
        if self._claim_columns is None:
            cur.execute("SHOW COLUMNS FROM iclm_claim")
            self._claim_columns = frozenset(str(r["Field"]) for r in cur.fetchall())
        return self._claim_columns

    @staticmethod
    def _uuids(cur: DictCursor, table: str, uuids: Iterable[str]) -> set[str]:
        wanted = list(uuids)
        marks = placeholders(len(wanted))
        cur.execute(f"SELECT uuid FROM {table} WHERE uuid IN ({marks})", tuple(wanted))  # noqa: S608 - internal table
        return {str(r["uuid"]) for r in cur.fetchall()}

    @staticmethod
    def _served_dates(cur: DictCursor, source_uuids: list[str]) -> dict[str, datetime]:
        """When each line was served: the order's ``date_activated`` or the obs' ``obs_datetime``."""
        if not source_uuids:
            return {}
        marks = placeholders(len(source_uuids))
        cur.execute(
            f"SELECT uuid, date_activated AS ts FROM orders WHERE uuid IN ({marks})"  # noqa: S608 - placeholders only
            f" UNION ALL SELECT uuid, obs_datetime AS ts FROM obs WHERE uuid IN ({marks})",
            (*source_uuids, *source_uuids),
        )
        return {str(r["uuid"]): r["ts"] for r in cur.fetchall() if r["ts"] is not None}


def encounter_billing_state(conn: Connection, encounter_uuid: str) -> BillingState | None:
    """The billing flag of an encounter over all its non-voided ``iclm_claim`` rows (the original
    and any supplement or replacement, §7.5 point 3).

    ``pending``: any claim not decided yet (ENTERED, CHECKED, PROCESSED with nothing approved);
    ``denied``: every claim REJECTED; ``reimbursed``: decided, and at least one paid;
    ``None``: no claim for this encounter. Reads in the caller's transaction on ``conn``
    (under REPEATABLE READ, commit first to see newer writes).
    """
    with conn.cursor(DictCursor) as cur:
        cur.execute(
            "SELECT c.status, c.approved_total FROM iclm_claim c JOIN encounter e ON e.encounter_id = c.encounter"
            " WHERE e.uuid = %s AND c.voided = 0 ORDER BY c.date_created, c.iclm_claim_id",
            (encounter_uuid,),
        )
        found = cur.fetchall()
    if not found:
        return None
    states = [_billing_state(str(r["status"]), r["approved_total"]) for r in found]
    if "pending" in states:
        return "pending"
    return "reimbursed" if "reimbursed" in states else "denied"


def _billing_state(status: str, approved: object) -> BillingState:
    """One claim: VALUATED, or PROCESSED with an approved total > 0, is paid; PROCESSED with
    nothing approved yet waits for valuation (relative pricing); REJECTED is denied."""
    if status == "VALUATED" or (status == "PROCESSED" and approved is not None and Decimal(str(approved)) > 0):
        return "reimbursed"
    return "denied" if status == "REJECTED" else "pending"
