"""The iclm writer against MariaDB: first apply, idempotent re-apply, later and older statuses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sql_support import q

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.db import Connection
from cdc_claims.errors import WriteBackRefused
from cdc_claims.reply.model import LineOutcome, NormalizedResponse, ReplyMessage
from cdc_claims.writeback.iclm import IclmWriter, encounter_billing_state, row_uuid, status_moves
from cdc_dev.bahmni import BahmniSim, Drug, Dx, EncounterRef
from cdc_dev.bahmni_testdb import admin_factory, writer_factory

pytestmark = pytest.mark.integration

HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"
NIFEDIPINE_5MG = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
THYROID_FUNCTION = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"
ICLM_TABLES = ("iclm_bill", "iclm_provided_item", "iclm_claim", "iclm_claim_item", "iclm_claim_diagnosis")
OPENIMIS_UUID = "7fe37a31-edbd-4f20-92a8-64a3d36a0a4c"


@pytest.fixture(scope="module")
def sim() -> BahmniSim:
    return BahmniSim(admin_factory())


@pytest.fixture(scope="module")
def writer() -> IclmWriter:
    return IclmWriter(writer_factory())


def billing_state(conn: Connection, encounter_uuid: str) -> str | None:
    conn.commit()  # the helper reads in the caller's transaction: start a fresh snapshot
    return encounter_billing_state(conn, encounter_uuid)


def snapshot(conn: Connection, code: str) -> dict[str, list[dict[str, Any]]]:
    """Every iclm row of one claim, all columns."""
    claim = q(conn, "SELECT * FROM iclm_claim WHERE claim_code = %s", code)
    if not claim:
        return {t: [] for t in ICLM_TABLES}
    cid, bid = claim[0]["iclm_claim_id"], claim[0]["bill"]
    return {
        "iclm_claim": claim,
        "iclm_bill": q(conn, "SELECT * FROM iclm_bill WHERE iclm_bill_id = %s", bid),
        "iclm_provided_item": q(conn, "SELECT * FROM iclm_provided_item WHERE bill = %s ORDER BY 1", bid),
        "iclm_claim_item": q(conn, "SELECT * FROM iclm_claim_item WHERE claim = %s ORDER BY 1", cid),
        "iclm_claim_diagnosis": q(conn, "SELECT * FROM iclm_claim_diagnosis WHERE claim = %s ORDER BY 1", cid),
    }


def make_claim(sim: BahmniSim, db: Connection, insured: str) -> tuple[EncounterRef, ClaimDraft]:
    patient = sim.create_patient(insured)
    enc = sim.save_consultation(
        patient, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE_5MG, 2)], labs=[THYROID_FUNCTION]
    )
    drug, lab = enc.orders
    provider = q(db, "SELECT provider_id FROM encounter_provider WHERE encounter_id = %s", enc.encounter_id)[0]
    location = q(db, "SELECT location_id FROM encounter WHERE encounter_id = %s", enc.encounter_id)[0]
    today = datetime.now(UTC).date()
    draft = ClaimDraft(
        code=f"BAHMNI-{enc.uuid[:13]}",
        unit_kind="encounter",
        unit_uuid=enc.uuid,
        visit_uuid=enc.visit.uuid,
        encounter_uuids=(enc.uuid,),
        patient_uuid=patient.uuid,
        patient_id=patient.patient_id,
        insuree=insured,
        facility="HF-UUID",
        facility_code="HF01",
        enterer="ADMIN-UUID",
        visit_type="O",
        period_start=today,
        period_end=today,
        created=today,
        diagnoses=(ClaimDiagnosis(icd10="E05.90", concept_id=enc.diagnoses[0].concept_id or 0, primary=True),),
        lines=(
            ClaimLine(1, "item", "0001", "0001", Decimal(2), Decimal("10.00"), drug.uuid, drug.concept_id, "drug"),
            ClaimLine(2, "service", "A1", "A1", Decimal(1), Decimal("400.00"), lab.uuid, lab.concept_id, "lab"),
        ),
        location_id=int(location["location_id"]),
        provider_id=int(provider["provider_id"]),
        visit_id=enc.visit.visit_id,
        encounter_id=enc.encounter_id,
        visit_type_id=enc.visit.visit_type_id,
    )
    return enc, draft


def reply(draft: ClaimDraft, status: int, *, reject_lab: bool = False, approved: str | None = None) -> ReplyMessage:
    names = {1: "REJECTED", 2: "ENTERED", 4: "CHECKED", 8: "PROCESSED", 16: "VALUATED"}
    drug, lab = draft.lines
    lines: tuple[LineOutcome, ...] = (
        LineOutcome(drug.source_uuid, "0001", "item", "PASSED", 0, "ACCEPTED", Decimal(2), Decimal("10.00")),
        LineOutcome(lab.source_uuid, "A1", "service", "REJECTED", 3, "NO PRODUCT FOUND", Decimal(1), Decimal("400.00"))
        if reject_lab
        else LineOutcome(lab.source_uuid, "A1", "service", "PASSED", 0, "ACCEPTED", Decimal(1), Decimal("380.00")),
    )
    if status == 1:
        lines = tuple(
            LineOutcome(x.source_uuid, x.code, x.category, "REJECTED", 7, "FAMILY", x.quantity_approved, None)
            for x in lines
        )
    resp = NormalizedResponse(
        claim_code=draft.code,
        claim_uuid=OPENIMIS_UUID,
        openimis_status=status,  # type: ignore[arg-type]
        iclm_status=names[status],  # type: ignore[arg-type]
        outcome={1: "complete", 2: "queued", 4: "partial", 8: "partial", 16: "complete"}[status],
        claimed_total=Decimal("420.00"),
        approved_total=None if status == 1 else Decimal(approved or "400.00"),
        rejection_reason="7 FAMILY" if status == 1 else None,
        lines=lines,
        received_at=datetime.now(UTC),
    )
    return ReplyMessage(claim=draft, response=resp)


def test_status_order() -> None:
    assert status_moves(None, "ENTERED") and status_moves("ENTERED", "CHECKED")
    assert status_moves("CHECKED", "PROCESSED") and status_moves("PROCESSED", "VALUATED")
    assert not status_moves("PROCESSED", "CHECKED") and not status_moves("CHECKED", "CHECKED")
    assert status_moves("CHECKED", "REJECTED")
    assert not status_moves("REJECTED", "ENTERED") and not status_moves("REJECTED", "VALUATED")
    assert not status_moves("VALUATED", "REJECTED")


def test_first_apply_creates_rows(sim: BahmniSim, writer: IclmWriter, db: Connection) -> None:
    enc, draft = make_claim(sim, db, "CHF-W-1")
    assert billing_state(db, enc.uuid) is None
    writer.apply(reply(draft, 4))
    snap = snapshot(db, draft.code)
    assert {t: len(rows) for t, rows in snap.items()} == {
        "iclm_claim": 1, "iclm_bill": 1, "iclm_provided_item": 2, "iclm_claim_item": 2, "iclm_claim_diagnosis": 1,
    }  # fmt: skip
    claim, bill = snap["iclm_claim"][0], snap["iclm_bill"][0]
    assert claim["status"] == "CHECKED" and claim["claimed_total"] == Decimal("420.00")
    assert claim["approved_total"] == Decimal("400.00") and claim["date_processed"] is None
    assert claim["patient"] == draft.patient_id and claim["provider"] == draft.provider_id
    assert claim["location"] == draft.location_id and claim["visit_type"] == draft.visit_type_id
    assert claim["visit"] == draft.visit_id and claim["encounter"] == enc.encounter_id
    assert claim["usetype"] == "claim" and claim["external_id"] == OPENIMIS_UUID
    assert claim["response_UUID"] == OPENIMIS_UUID and claim["uuid"] == row_uuid("claim", draft.code)
    assert claim["date_from"].date() == draft.period_start
    assert bill["payment_type"] == "INSURANCE_CLAIM" and bill["payment_status"] == "REQUESTED"
    assert bill["total_amount"] == Decimal("420.00") and bill["patient"] == draft.patient_id
    daemon = q(db, "SELECT user_id FROM users WHERE uuid = 'A4F30A1B-5EB9-11DF-A648-37A07F9C90FB'")[0]["user_id"]
    assert claim["creator"] == daemon == bill["creator"]

    items = {r["uuid"]: r for r in snap["iclm_provided_item"]}
    drug_line, lab_line = draft.lines
    drug_item = items[row_uuid("item", draft.code, drug_line.source_uuid)]
    assert drug_item["item"] == drug_line.concept_id and drug_item["price"] == Decimal("10.00")
    assert drug_item["number_of_consumptions"] == 2 and drug_item["status"] == "ENTERED"
    assert drug_item["patient"] == draft.patient_id and drug_item["date_of_served"] is not None
    claim_items = {r["uuid"]: r for r in snap["iclm_claim_item"]}
    lab_ci = claim_items[row_uuid("claim_item", draft.code, lab_line.source_uuid)]
    assert lab_ci["status"] == "PASSED" and lab_ci["price_approved"] == Decimal("380.00")
    assert lab_ci["quantity_approved"] == 1 and lab_ci["quantity_provided"] == 1 and lab_ci["rejection_reason"] is None
    assert lab_ci["item"] == items[row_uuid("item", draft.code, lab_line.source_uuid)]["iclm_provided_item_id"]
    assert snap["iclm_claim_diagnosis"][0]["concept"] == draft.diagnoses[0].concept_id
    assert billing_state(db, enc.uuid) == "pending"


def test_reapply_and_older_messages_change_nothing(sim: BahmniSim, writer: IclmWriter, db: Connection) -> None:
    enc, draft = make_claim(sim, db, "CHF-W-2")
    writer.apply(reply(draft, 4))
    first = snapshot(db, draft.code)
    writer.apply(reply(draft, 4))
    assert snapshot(db, draft.code) == first
    writer.apply(reply(draft, 2))  # an older "entered" arriving late
    assert snapshot(db, draft.code) == first

    writer.apply(reply(draft, 8, approved="390.00"))
    processed = snapshot(db, draft.code)
    claim = processed["iclm_claim"][0]
    assert claim["status"] == "PROCESSED" and claim["approved_total"] == Decimal("390.00")
    assert claim["date_processed"] is not None and claim["changed_by"] is not None
    assert all(p["status"] == "PROCESSED" for p in processed["iclm_provided_item"])
    assert processed["iclm_bill"][0]["payment_status"] == "COMPLETED"
    assert billing_state(db, enc.uuid) == "reimbursed"

    writer.apply(reply(draft, 4))  # late CHECKED after PROCESSED: ignored
    assert snapshot(db, draft.code) == processed
    writer.apply(reply(draft, 16))
    assert snapshot(db, draft.code)["iclm_claim"][0]["status"] == "VALUATED"
    assert billing_state(db, enc.uuid) == "reimbursed"
    counts = {t: len(r) for t, r in snapshot(db, draft.code).items()}
    assert counts == {t: len(r) for t, r in first.items()}


def test_rejected_line_and_rejected_claim(sim: BahmniSim, writer: IclmWriter, db: Connection) -> None:
    enc, draft = make_claim(sim, db, "CHF-W-3")
    writer.apply(reply(draft, 4, reject_lab=True))
    snap = snapshot(db, draft.code)
    lab = next(
        r
        for r in snap["iclm_claim_item"]
        if r["uuid"] == row_uuid("claim_item", draft.code, draft.lines[1].source_uuid)
    )
    assert lab["status"] == "REJECTED" and lab["rejection_reason"] == "3 NO PRODUCT FOUND"
    drug = next(
        r
        for r in snap["iclm_claim_item"]
        if r["uuid"] == row_uuid("claim_item", draft.code, draft.lines[0].source_uuid)
    )
    assert drug["status"] == "PASSED"
    assert billing_state(db, enc.uuid) == "pending"

    enc2, draft2 = make_claim(sim, db, "CHF-W-4")
    writer.apply(reply(draft2, 1))  # first sight is already a rejection
    snap2 = snapshot(db, draft2.code)
    claim = snap2["iclm_claim"][0]
    assert claim["status"] == "REJECTED" and claim["rejection_reason"] == "7 FAMILY" and claim["approved_total"] is None
    assert all(r["status"] == "REJECTED" and r["rejection_reason"] == "7 FAMILY" for r in snap2["iclm_claim_item"])
    assert snap2["iclm_bill"][0]["payment_status"] == "COMPLETED"
    assert billing_state(db, enc2.uuid) == "denied"
    writer.apply(reply(draft2, 16))  # nothing leaves REJECTED
    assert snapshot(db, draft2.code) == snap2


def test_processed_with_zero_approved_is_pending(sim: BahmniSim, writer: IclmWriter, db: Connection) -> None:
    enc, draft = make_claim(sim, db, "CHF-W-5")
    writer.apply(reply(draft, 8, approved="0"))
    assert billing_state(db, enc.uuid) == "pending"


def test_mismatched_message_is_refused(sim: BahmniSim, writer: IclmWriter, db: Connection) -> None:
    _, draft = make_claim(sim, db, "CHF-W-6")
    msg = reply(draft, 4)
    bad = ReplyMessage(claim=draft, response=NormalizedResponse(**{**msg.response.__dict__, "claim_code": "OTHER"}))
    with pytest.raises(WriteBackRefused, match="paired") as refused:
        writer.apply(bad)
    assert not refused.value.retriable  # dead-lettered by the writer role, never crash-looped
    assert snapshot(db, draft.code)["iclm_claim"] == []


def test_outcomes_for_lines_the_claim_does_not_hold_are_refused(
    sim: BahmniSim, writer: IclmWriter, db: Connection
) -> None:
    _, draft = make_claim(sim, db, "CHF-W-7")
    msg = reply(draft, 4)
    stray = replace(msg.response.lines[0], source_uuid="not-a-line-of-this-claim")
    bad = ReplyMessage(claim=draft, response=replace(msg.response, lines=(*msg.response.lines, stray)))
    with pytest.raises(WriteBackRefused, match="does not hold"):
        writer.apply(bad)
    assert snapshot(db, draft.code)["iclm_claim"] == []


def test_db_error_is_retriable_write_back_error() -> None:
    from cdc_claims.db import connection_factory
    from cdc_claims.errors import WriteBackError

    dead = IclmWriter(connection_factory(host="127.0.0.1", port=9, user="x", password="x", database="openmrs"))
    today = date.today()
    draft = ClaimDraft("X-1", "encounter", "u", "v", (), "p", 1, "i", "f", "f", "e", "O", today, today, today, (), ())
    msg = ReplyMessage(
        claim=draft,
        response=NormalizedResponse("X-1", None, 2, "ENTERED", "queued", None, None, None, (), datetime.now(UTC)),
    )
    with pytest.raises(WriteBackError) as err:
        dead.apply(msg)
    assert err.value.retriable
