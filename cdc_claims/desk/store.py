"""The desk's reads, as the SELECT-only reader user: ledger, claim history, billing rows, OpenMRS.

=====================================  ===========================================================
``cdc_claims_ledger``                  one row per encounter/visit: state, reason, detail, claim
                                       code, patient/visit/encounter uuids, attempts, times
``cdc_claims_action``                  what staff did (who, which action, its answer): the timeline
``cdc_claims_claim``                   every claim sent (original, supplement, replacement): its
                                       state, the draft as sent (lines, diagnoses), withdrawal
                                       flags, rejected lines
``iclm_claim``                         claimed/approved totals, billing status, rejection reason,
                                       explanation (``WITHDRAWAL NEEDED: ...``), reply times
``iclm_claim_item`` +                  per line: approved quantity and price, PASSED/REJECTED,
``iclm_provided_item``                 the rejection reason
``person``, ``person_name``,           the patient's preferred name and identifiers (staff may see
``patient_identifier(_type)``          them; nothing here is logged)
``visit``, ``visit_type``,             visit type, facility, encounter type and time
``encounter(_type)``, ``location``
``concept_name``, ``drug``,            names of the lines, diagnoses and of what a held detail
``orders``, ``drug_order``             names by uuid
=====================================  ===========================================================

The billing rows are found by the uuid the iclm writer derives from the claim code
(:func:`cdc_claims.writeback.iclm.row_uuid`, a unique key), not by ``iclm_claim.claim_code``,
which the module leaves unindexed. Every database error becomes
:class:`~cdc_claims.errors.SourceUnavailable` (the page says "try again", ``/readyz`` 503).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import pymysql
from pymysql.cursors import DictCursor

from cdc_claims.assemble.model import ClaimDraft
from cdc_claims.db import ConnFactory, placeholders, transaction
from cdc_claims.desk import queries
from cdc_claims.desk.filters import Filters
from cdc_claims.desk.model import (
    ClaimFact,
    ClaimView,
    DiagnosisView,
    DocumentView,
    EncounterView,
    LineView,
    Option,
    Page,
    PatientView,
    Summary,
    UnitDetail,
    UnitRow,
    WithdrawalLine,
)
from cdc_claims.desk.summary import clamp_range, summarize
from cdc_claims.desk.timeline import timeline
from cdc_claims.desk.words import Mentions, mentioned, rejection_code
from cdc_claims.errors import CdcClaimsError, SourceUnavailable
from cdc_claims.ledger.model import ActionRecord, ClaimRecord, LedgerEntry, missing_original
from cdc_claims.ledger.store import Ledger
from cdc_claims.lifecycle import NEEDS_ACTION_STATES, State
from cdc_claims.reply.model import decode_draft
from cdc_claims.reply.normalize import REJECTION_REASONS
from cdc_claims.settings import UnitKind
from cdc_claims.writeback.iclm import row_uuid

T = TypeVar("T")
_CHUNK = 500
_TOP_REJECTIONS = 10


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _person_name(row: dict[str, Any]) -> str | None:
    parts = [row.get("given_name"), row.get("middle_name"), row.get("family_name")]
    name = " ".join(str(p) for p in parts if p)
    return name or None


def _decimal(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _withdrawals(raw: str | None) -> tuple[WithdrawalLine, ...]:
    """The pending withdrawals of a claim history row (``{source uuid: {code, quantity, why}}``)."""
    try:
        pending = json.loads(raw) if raw else {}
    except ValueError:
        return ()
    if not isinstance(pending, dict):
        return ()
    lines = []
    for source, raw_info in sorted(pending.items()):
        info = raw_info if isinstance(raw_info, dict) else {}
        code, quantity, why = (str(info.get(k, "")) for k in ("code", "quantity", "why"))
        lines.append(WithdrawalLine(str(source), code, quantity, why))
    return tuple(lines)


class DeskStore:
    """Read-only adapter behind :class:`~cdc_claims.desk.model.DeskReads` (reader connections)."""

    def __init__(self, conn_factory: ConnFactory) -> None:
        self._connect = conn_factory
        self._ledger = Ledger(conn_factory)  # only its SELECTs are used

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _reading(self) -> Iterator[DictCursor]:
        """One read-only transaction (one consistent snapshot under REPEATABLE READ)."""
        try:
            with transaction(self._connect) as cur:
                yield cur
        except pymysql.MySQLError as err:
            raise SourceUnavailable(f"desk read: {err}") from err

    @staticmethod
    def _rows(cur: DictCursor, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        cur.execute(sql, tuple(args))
        return list(cur.fetchall())

    def _many(self, cur: DictCursor, sql: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        """``sql`` holds one ``{marks}`` for an ``IN`` list; run it over ``values`` in chunks."""
        wanted = sorted(set(values), key=str)
        found: list[dict[str, Any]] = []
        for chunk in _chunks(wanted):
            found += self._rows(cur, sql.format(marks=placeholders(len(chunk))), chunk)
        return found

    def ping(self) -> None:
        with self._reading() as cur:
            cur.execute("SELECT 1")

    # ------------------------------------------------------------------ the list
    def units(self, filters: Filters, *, page_size: int) -> Page:
        with self._reading() as cur:
            count_sql, count_args = queries.units_count(filters)
            total = int(self._rows(cur, count_sql, count_args)[0]["n"])
            page_sql, page_args = queries.units_page(filters, page_size=page_size)
            rows = self._rows(cur, page_sql, page_args)
            patients = self._patients(cur, [r["patient_uuid"] for r in rows if r["patient_uuid"]])
            visits = self._visits(cur, [r["visit_uuid"] for r in rows if r["visit_uuid"]])
            places = self._encounter_places(cur, [r["unit_uuid"] for r in rows if r["unit_kind"] == "encounter"])
            money = self._unit_amounts(cur, rows)
        out = []
        for r in rows:
            name, identifier = patients.get(r["patient_uuid"] or "", (None, None))
            visit_type, visit_place = visits.get(r["visit_uuid"] or "", (None, None))
            claimed, approved, withdrawal = money.get((r["unit_kind"], r["unit_uuid"]), (None, None, False))
            out.append(
                UnitRow(
                    unit_kind=r["unit_kind"],
                    unit_uuid=r["unit_uuid"],
                    state=State(r["state"]),
                    reason=r["reason"],
                    detail=r["detail"],
                    claim_code=r["claim_code"],
                    patient_uuid=r["patient_uuid"],
                    patient_name=name,
                    patient_identifier=identifier,
                    visit_type=visit_type,
                    facility=places.get(r["unit_uuid"]) or visit_place,
                    claimed=claimed,
                    approved=approved,
                    withdrawal=withdrawal,
                    attempts=int(r["attempts"]),
                    created_at=r["created_at"],
                    updated_at=r["updated_at"],
                )
            )
        return Page(rows=tuple(out), total=total, page=filters.page, page_size=page_size)

    def _patients(self, cur: DictCursor, uuids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """patient uuid -> (preferred name, preferred identifier)."""
        found: dict[str, tuple[str | None, str | None]] = {}
        sql = (
            "SELECT p.uuid, pn.given_name, pn.middle_name, pn.family_name, pi.identifier FROM person p"
            " LEFT JOIN person_name pn ON pn.person_id = p.person_id AND pn.voided = 0 AND pn.preferred = 1"
            " LEFT JOIN patient_identifier pi ON pi.patient_id = p.person_id AND pi.voided = 0 AND pi.preferred = 1"
            " WHERE p.uuid IN ({marks}) ORDER BY pn.person_name_id, pi.patient_identifier_id"
        )
        for row in self._many(cur, sql, uuids):
            found.setdefault(row["uuid"], (_person_name(row), row["identifier"]))
        return found

    def _visits(self, cur: DictCursor, uuids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """visit uuid -> (visit type name, visit location name)."""
        sql = (
            "SELECT v.uuid, vt.name AS visit_type, lo.name AS location FROM visit v"
            " LEFT JOIN visit_type vt ON vt.visit_type_id = v.visit_type_id"
            " LEFT JOIN location lo ON lo.location_id = v.location_id WHERE v.uuid IN ({marks})"
        )
        return {r["uuid"]: (r["visit_type"], r["location"]) for r in self._many(cur, sql, uuids)}

    def _encounter_places(self, cur: DictCursor, uuids: Iterable[str]) -> dict[str, str | None]:
        sql = (
            "SELECT e.uuid, lo.name FROM encounter e LEFT JOIN location lo ON lo.location_id = e.location_id"
            " WHERE e.uuid IN ({marks})"
        )
        return {r["uuid"]: r["name"] for r in self._many(cur, sql, uuids)}

    def _unit_amounts(
        self, cur: DictCursor, rows: Sequence[dict[str, Any]]
    ) -> dict[tuple[str, str], tuple[Decimal | None, Decimal | None, bool]]:
        """(kind, uuid) -> (claimed, approved, withdrawal pending) over every claim of the unit.

        Claimed counts the original and its supplements; a replacement re-claims lines the
        original already holds (rejected ones), so only its approved amount is added.
        """
        units = {(r["unit_kind"], r["unit_uuid"]) for r in rows}
        codes: dict[str, tuple[tuple[str, str], str]] = {
            r["claim_code"]: ((r["unit_kind"], r["unit_uuid"]), "original") for r in rows if r["claim_code"]
        }
        pending: set[tuple[str, str]] = set()
        history = self._many(
            cur,
            "SELECT unit_kind, unit_uuid, claim_code, kind, withdrawal FROM cdc_claims_claim"
            " WHERE unit_uuid IN ({marks})",
            [uuid for _, uuid in units],
        )
        for h in history:
            unit = (h["unit_kind"], h["unit_uuid"])
            if unit not in units:
                continue
            codes[h["claim_code"]] = (unit, h["kind"])
            if _withdrawals(h["withdrawal"]):
                pending.add(unit)
        by_uuid = {row_uuid("claim", code): code for code in codes}
        billed = self._many(
            cur,
            "SELECT uuid, claimed_total, approved_total FROM iclm_claim WHERE voided = 0 AND uuid IN ({marks})",
            by_uuid,
        )
        claimed: dict[tuple[str, str], Decimal] = {}
        approved: dict[tuple[str, str], Decimal] = {}
        for b in billed:
            unit, kind = codes[by_uuid[b["uuid"]]]
            if kind != "replacement" and b["claimed_total"] is not None:
                claimed[unit] = claimed.get(unit, Decimal(0)) + Decimal(str(b["claimed_total"]))
            if b["approved_total"] is not None:
                approved[unit] = approved.get(unit, Decimal(0)) + Decimal(str(b["approved_total"]))
        return {u: (claimed.get(u), approved.get(u), u in pending) for u in units}

    # ------------------------------------------------------------------ one unit
    def claim_unit(self, claim_code: str) -> tuple[UnitKind, str] | None:
        with self._reading() as cur:
            rows = self._rows(
                cur,
                "SELECT unit_kind, unit_uuid FROM cdc_claims_claim WHERE claim_code = %s"
                " UNION ALL SELECT unit_kind, unit_uuid FROM cdc_claims_ledger WHERE claim_code = %s",
                (claim_code, claim_code),
            )
        return (cast(UnitKind, rows[0]["unit_kind"]), rows[0]["unit_uuid"]) if rows else None

    def unit(self, kind: UnitKind, uuid: str) -> UnitDetail | None:
        try:
            entry = self._ledger.get(kind, uuid)
            records = self._ledger.claims_of(kind, uuid) if entry is not None else []
        except CdcClaimsError as err:
            raise SourceUnavailable(f"desk read: {err}") from err
        if entry is None:
            return None
        if (original := missing_original(entry, records)) is not None:
            records = [original, *records]
        actions = self._actions([uuid, *(r.claim_code for r in records)])
        drafts: dict[str, ClaimDraft] = {}
        for record in records:
            if record.draft_json:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    drafts[record.claim_code] = decode_draft(record.draft_json)
        last = _last_draft(entry, records, drafts)
        with self._reading() as cur:
            billed = self._billing(cur, [r.claim_code for r in records])
            items = self._billing_items(cur, [int(b["iclm_claim_id"]) for b in billed.values()])
            concept_ids = {line.concept_id for d in drafts.values() for line in d.lines}
            concept_ids |= {dx.concept_id for dx in (last.diagnoses if last else ())}
            concepts = self._concept_names(cur, concept_ids)
            drug_orders = [line.source_uuid for d in drafts.values() for line in d.lines if line.kind == "drug"]
            drugs = self._order_drugs(cur, drug_orders)
            patient = self._patient(cur, entry.patient_uuid) if entry.patient_uuid else None
            visit_uuid = entry.visit_uuid or (uuid if kind == "visit" else None)
            visit = self._visit(cur, visit_uuid) if visit_uuid else None
            encounter_uuids = entry.encounter_uuids or ((uuid,) if kind == "encounter" else ())
            encounters = self._encounters(cur, encounter_uuids)
            names = self._mentioned_names(cur, mentioned(entry.reason, entry.detail))
        claims = tuple(
            _claim_view(
                record,
                drafts.get(record.claim_code),
                billed.get(record.claim_code),
                items=items,
                concepts=concepts,
                drugs=drugs,
            )
            for record in records
        )
        diagnoses = tuple(
            DiagnosisView(dx.icd10, concepts.get(dx.concept_id), dx.primary) for dx in (last.diagnoses if last else ())
        )
        places = [e.location for e in encounters if e.location]
        return UnitDetail(
            entry=entry,
            patient=patient,
            visit_type=visit[0] if visit else None,
            facility=(places[0] if places else None) or (visit[1] if visit else None),
            visit_started=visit[2] if visit else None,
            visit_stopped=visit[3] if visit else None,
            encounters=encounters,
            claims=claims,
            diagnoses=diagnoses,
            timeline=timeline(entry, claims, actions),
            names=names,
        )

    def _actions(self, targets: Sequence[str]) -> list[ActionRecord]:
        """What staff did to the unit and its claims (``cdc_claims_action``). A database that
        predates the audit table has none to show: the page does without, it does not fail."""
        found: list[ActionRecord] = []
        for target in dict.fromkeys(targets):
            try:
                found += self._ledger.actions_for(target, limit=50)
            except CdcClaimsError:
                return found
        return found

    def _billing(self, cur: DictCursor, codes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """claim code -> its ``iclm_claim`` row (when the writer applied a reply)."""
        by_uuid = {row_uuid("claim", code): code for code in codes}
        sql = (
            "SELECT iclm_claim_id, uuid, status, claimed_total, approved_total, rejection_reason, explanation,"
            " adjustment, external_id, date_created, date_changed, date_processed FROM iclm_claim"
            " WHERE voided = 0 AND uuid IN ({marks})"
        )
        return {by_uuid[r["uuid"]]: r for r in self._many(cur, sql, by_uuid)}

    def _billing_items(self, cur: DictCursor, claim_ids: Sequence[int]) -> dict[str, dict[str, Any]]:
        """claim item uuid -> its ``iclm_claim_item`` row."""
        sql = (
            "SELECT uuid, quantity_provided, quantity_approved, price_approved, status, rejection_reason, explanation"
            " FROM iclm_claim_item WHERE voided = 0 AND claim IN ({marks})"
        )
        return {r["uuid"]: r for r in self._many(cur, sql, claim_ids)}

    def _concept_names(self, cur: DictCursor, concept_ids: Iterable[int]) -> dict[int, str]:
        """concept id -> its English preferred name (fully specified first), else any name."""
        sql = (
            "SELECT concept_id, name, locale, locale_preferred, concept_name_type FROM concept_name"
            " WHERE voided = 0 AND concept_id IN ({marks})"
        )
        best: dict[int, tuple[tuple[bool, bool, bool], str]] = {}
        for r in self._many(cur, sql, concept_ids):
            rank = (
                str(r["locale"] or "").startswith("en"),
                bool(r["locale_preferred"]),
                r["concept_name_type"] == "FULLY_SPECIFIED",
            )
            cid = int(r["concept_id"])
            if cid not in best or rank > best[cid][0]:
                best[cid] = (rank, str(r["name"]))
        return {cid: name for cid, (_, name) in best.items()}

    def _order_drugs(self, cur: DictCursor, order_uuids: Iterable[str]) -> dict[str, str]:
        """drug order uuid -> the drug's name (``Paracetamol 500 mg``)."""
        sql = (
            "SELECT o.uuid, d.name FROM orders o JOIN drug_order dro ON dro.order_id = o.order_id"
            " JOIN drug d ON d.drug_id = dro.drug_inventory_id WHERE o.uuid IN ({marks})"
        )
        return {r["uuid"]: r["name"] for r in self._many(cur, sql, order_uuids)}

    def _patient(self, cur: DictCursor, uuid: str) -> PatientView | None:
        people = self._rows(
            cur,
            "SELECT p.person_id, p.gender, p.birthdate, pn.given_name, pn.middle_name, pn.family_name FROM person p"
            " LEFT JOIN person_name pn ON pn.person_id = p.person_id AND pn.voided = 0 AND pn.preferred = 1"
            " WHERE p.uuid = %s ORDER BY pn.person_name_id LIMIT 1",
            (uuid,),
        )
        if not people:
            return None
        person = people[0]
        ids = self._rows(
            cur,
            "SELECT pit.name AS type, pi.identifier FROM patient_identifier pi"
            " JOIN patient_identifier_type pit ON pit.patient_identifier_type_id = pi.identifier_type"
            " WHERE pi.patient_id = %s AND pi.voided = 0 ORDER BY pi.preferred DESC, pit.name",
            (person["person_id"],),
        )
        return PatientView(
            uuid=uuid,
            name=_person_name(person),
            identifiers=tuple((str(i["type"]), str(i["identifier"])) for i in ids),
            gender=person["gender"],
            birthdate=person["birthdate"],
        )

    def _visit(self, cur: DictCursor, uuid: str) -> tuple[str | None, str | None, datetime | None, datetime | None]:
        rows = self._rows(
            cur,
            "SELECT vt.name AS visit_type, lo.name AS location, v.date_started, v.date_stopped FROM visit v"
            " LEFT JOIN visit_type vt ON vt.visit_type_id = v.visit_type_id"
            " LEFT JOIN location lo ON lo.location_id = v.location_id WHERE v.uuid = %s",
            (uuid,),
        )
        if not rows:
            return (None, None, None, None)
        r = rows[0]
        return (r["visit_type"], r["location"], r["date_started"], r["date_stopped"])

    def _encounters(self, cur: DictCursor, uuids: Sequence[str]) -> tuple[EncounterView, ...]:
        sql = (
            "SELECT e.uuid, et.name AS type_name, e.encounter_datetime, lo.name AS location, e.voided FROM encounter e"
            " LEFT JOIN encounter_type et ON et.encounter_type_id = e.encounter_type"
            " LEFT JOIN location lo ON lo.location_id = e.location_id WHERE e.uuid IN ({marks})"
        )
        found = {r["uuid"]: r for r in self._many(cur, sql, uuids)}
        return tuple(
            EncounterView(
                uuid=u,
                type_name=found[u]["type_name"],
                at=found[u]["encounter_datetime"],
                location=found[u]["location"],
                voided=bool(found[u]["voided"]),
            )
            for u in uuids
            if u in found
        )

    def _mentioned_names(self, cur: DictCursor, mentions: Mentions) -> dict[str, str]:
        """uuid -> name of each drug, concept, location and encounter (its type) a detail names."""
        names: dict[str, str] = {}
        lookups = (
            (mentions.drugs, "SELECT uuid, name FROM drug WHERE uuid IN ({marks})"),
            (
                mentions.concepts,
                "SELECT c.uuid, cn.name FROM concept c JOIN concept_name cn ON cn.concept_id = c.concept_id"
                " AND cn.voided = 0 WHERE c.uuid IN ({marks})"
                " ORDER BY cn.locale LIKE 'en%%' DESC, cn.locale_preferred DESC,"
                " cn.concept_name_type = 'FULLY_SPECIFIED' DESC",
            ),
            (mentions.locations, "SELECT uuid, name FROM location WHERE uuid IN ({marks})"),
            (
                mentions.encounters,
                "SELECT e.uuid, et.name FROM encounter e JOIN encounter_type et"
                " ON et.encounter_type_id = e.encounter_type WHERE e.uuid IN ({marks})",
            ),
        )
        for uuids, sql in lookups:
            for r in self._many(cur, sql, uuids):
                names.setdefault(r["uuid"], str(r["name"]))
        return names

    # ------------------------------------------------------------------ select boxes
    def facilities(self) -> Sequence[Option]:
        with self._reading() as cur:
            rows = self._rows(cur, "SELECT uuid, name FROM location WHERE retired = 0 ORDER BY name LIMIT 1000", ())
        return [Option(r["uuid"], r["name"]) for r in rows]

    def visit_types(self) -> Sequence[Option]:
        with self._reading() as cur:
            rows = self._rows(cur, "SELECT uuid, name FROM visit_type WHERE retired = 0 ORDER BY name", ())
        return [Option(r["uuid"], r["name"]) for r in rows]

    # ------------------------------------------------------------------ summary
    def summary(self, date_from: date, date_to: date) -> Summary:
        date_from, date_to = clamp_range(date_from, date_to)
        start = datetime.combine(date_from, time.min)
        end = datetime.combine(date_to + timedelta(days=1), time.min)
        with self._reading() as cur:
            sent = self._rows(
                cur,
                "SELECT claim_code, state, created_at FROM cdc_claims_claim WHERE created_at >= %s AND created_at < %s",
                (start, end),
            )
            billed = self._billing_totals(cur, [s["claim_code"] for s in sent])
            rejected = self._rows(
                cur,
                "SELECT ci.rejection_reason AS reason, COUNT(*) AS n FROM iclm_claim_item ci"
                " JOIN iclm_claim c ON c.iclm_claim_id = ci.claim"
                " WHERE c.voided = 0 AND ci.voided = 0 AND ci.status = 'REJECTED'"
                " AND c.date_created >= %s AND c.date_created < %s GROUP BY ci.rejection_reason",
                (start, end),
            )
            waiting = self._rows(
                cur,
                f"SELECT state, reason, COUNT(*) AS n FROM cdc_claims_ledger"  # noqa: S608 - placeholders only
                f" WHERE state IN ({placeholders(len(NEEDS_ACTION_STATES))}) GROUP BY state, reason",
                sorted(s.value for s in NEEDS_ACTION_STATES),
            )
        facts = [
            ClaimFact(
                day=s["created_at"].date(),
                state=s["state"],
                claimed=billed.get(s["claim_code"], (None, None))[0],
                approved=billed.get(s["claim_code"], (None, None))[1],
            )
            for s in sent
        ]
        needs = sorted(((r["reason"] or r["state"], int(r["n"])) for r in waiting), key=lambda x: (-x[1], x[0]))
        return summarize(facts, date_from, date_to, top_rejections=top_reasons(rejected), needs_action=needs)

    def _billing_totals(
        self, cur: DictCursor, codes: Sequence[str]
    ) -> dict[str, tuple[Decimal | None, Decimal | None]]:
        by_uuid = {row_uuid("claim", code): code for code in codes}
        sql = "SELECT uuid, claimed_total, approved_total FROM iclm_claim WHERE voided = 0 AND uuid IN ({marks})"
        return {
            by_uuid[r["uuid"]]: (_decimal(r["claimed_total"]), _decimal(r["approved_total"]))
            for r in self._many(cur, sql, by_uuid)
        }


def top_reasons(rows: Iterable[dict[str, Any]], limit: int = _TOP_REJECTIONS) -> tuple[tuple[str, int], ...]:
    """Rejected-line counts merged by openIMIS reason code (``"-1 7 FAMILY"`` counts as 7)."""
    merged: dict[str, int] = {}
    for row in rows:
        raw = str(row["reason"] or "")
        code = rejection_code(raw)
        label = f"{code} {REJECTION_REASONS[code]}" if code is not None and code in REJECTION_REASONS else raw
        label = label or "no reason given"
        merged[label] = merged.get(label, 0) + int(row["n"])
    return tuple(sorted(merged.items(), key=lambda x: (-x[1], x[0]))[:limit])


def _last_draft(entry: LedgerEntry, records: Sequence[ClaimRecord], drafts: dict[str, ClaimDraft]) -> ClaimDraft | None:
    """The draft as last sent: the ledger's own, else the newest claim's."""
    if entry.claim_code and entry.claim_code in drafts:
        return drafts[entry.claim_code]
    for record in reversed(records):
        if record.claim_code in drafts:
            return drafts[record.claim_code]
    return None


def _claim_view(
    record: ClaimRecord,
    draft: ClaimDraft | None,
    billed: dict[str, Any] | None,
    *,
    items: dict[str, dict[str, Any]],
    concepts: dict[int, str],
    drugs: dict[str, str],
) -> ClaimView:
    withdrawals = _withdrawals(record.withdrawal)
    whole = any(w.source_uuid == "*" for w in withdrawals)
    why = {w.source_uuid: w.why for w in withdrawals}
    lines = []
    for line in draft.lines if draft is not None else ():
        item = items.get(row_uuid("claim_item", record.claim_code, line.source_uuid), {})
        rejected = item.get("status") == "REJECTED" or line.source_uuid in record.rejected_lines
        lines.append(
            LineView(
                claim_code=record.claim_code,
                source_uuid=line.source_uuid,
                sequence=line.sequence,
                kind=line.kind,
                category=line.category,
                code=line.code,
                name=drugs.get(line.source_uuid) or concepts.get(line.concept_id),
                quantity=line.quantity,
                unit_price=line.unit_price,
                quantity_approved=_decimal(item.get("quantity_approved")),
                price_approved=_decimal(item.get("price_approved")),
                status=item.get("status") or ("REJECTED" if rejected else None),
                rejection_reason=item.get("rejection_reason"),
                withdraw=why.get(line.source_uuid) or (why["*"] if whole else None),
            )
        )
    names = {line.source_uuid: line.name for line in lines}
    b = billed or {}
    documents = tuple(
        DocumentView(record.claim_code, a.title, a.content_type, a.creation, a.obs_uuid)
        for a in (draft.attachments if draft is not None else ())
    )
    return ClaimView(
        record=record,
        lines=tuple(lines),
        documents=documents,
        withdrawals=tuple(replace(w, name=names.get(w.source_uuid)) for w in withdrawals),
        iclm_status=b.get("status"),
        claimed_total=_decimal(b.get("claimed_total")),
        approved_total=_decimal(b.get("approved_total")),
        rejection_reason=b.get("rejection_reason"),
        explanation=b.get("explanation"),
        adjustment=b.get("adjustment"),
        external_id=b.get("external_id"),
        billed_at=b.get("date_created"),
        changed_at=b.get("date_changed"),
        processed_at=b.get("date_processed"),
    )
