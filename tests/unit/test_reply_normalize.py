"""normalize() on every ClaimResponse shape captured from a real openIMIS (tests/data/openimis_samples)."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.errors import ResponseMismatch, UnknownClaimStatus
from cdc_claims.reply.model import ReplyMessage, decode_reply, encode_reply
from cdc_claims.reply.normalize import REJECTION_REASONS, normalize, reason_text

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "openimis_samples"
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

UUID_A1 = "488d8bcb-5b88-438c-9077-f177f6f32626"
UUID_0001 = "71efb78b-64ee-4a68-be29-87daf566eb20"
UUID_G2 = "639fd0f9-d860-487b-8ec0-c7be0d2e2b94"


def load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def line(seq: int, category: str, code: str, qty: str, price: str, ref: str | None = None) -> ClaimLine:
    return ClaimLine(
        sequence=seq,
        category=category,  # type: ignore[arg-type]
        code=code,
        reference=ref or code,
        quantity=Decimal(qty),
        unit_price=Decimal(price),
        source_uuid=f"src-{code}-{seq}",
        concept_id=1000 + seq,
        kind="drug" if category == "item" else "consultation",
    )


def draft(code: str, *lines: ClaimLine) -> ClaimDraft:
    """A draft as the samples' requests were: service A1 (seq 1) then item 0001 (seq 2) by default."""
    return ClaimDraft(
        code=code,
        unit_kind="encounter",
        unit_uuid="enc",
        visit_uuid="visit",
        encounter_uuids=("enc",),
        patient_uuid="pat",
        patient_id=1,
        insuree="070707081",
        facility="RAHOS001",
        facility_code="RAHOS001",
        enterer="RHOS0011",
        visit_type="O",
        period_start=date(2026, 11, 20),
        period_end=date(2026, 11, 20),
        created=date(2026, 11, 25),
        diagnoses=(ClaimDiagnosis("A09", 84, True),),
        lines=lines or (line(1, "service", "A1", "1", "400"), line(2, "item", "0001", "2", "10")),
    )


def by_code(result: Any) -> dict[str, Any]:
    return {o.code: o for o in result.lines}


# ------------------------------------------------------------------------------ samples


def test_checked_accepted() -> None:
    d = draft("BAHMNI-T0002")
    r = normalize(load("response_checked_accepted.json"), d, received_at=AT)
    assert (r.openimis_status, r.iclm_status, r.outcome) == (4, "CHECKED", "partial")
    assert r.claim_code == "BAHMNI-T0002"
    assert r.claim_uuid == "7fe37a31-edbd-4f20-92a8-64a3d36a0a4c"
    assert r.claimed_total == Decimal(420)
    assert r.approved_total == Decimal(420)
    assert r.rejection_reason is None
    assert r.received_at == AT
    # the response lists 0001 first (items before services); the result follows the draft
    assert [o.source_uuid for o in r.lines] == ["src-A1-1", "src-0001-2"]
    a1, aspirin = r.lines
    assert (a1.status, a1.reason_code, a1.reason_text) == ("PASSED", 0, "ACCEPTED")
    assert (a1.quantity_approved, a1.price_approved) == (Decimal(1), Decimal(400))
    assert (aspirin.category, aspirin.quantity_approved, aspirin.price_approved) == ("item", Decimal(2), Decimal(10))


def test_partial_item_rejected_keeps_claim_checked() -> None:
    case = load("case_partial_item_rejected.json")
    d = draft(
        "BAHMNI-T0003",
        line(1, "service", "A1", "1", "400"),
        line(2, "item", "0001", "2", "10"),
        line(3, "service", "G2", "1", "42000"),
    )
    r = normalize(case["response"], d, received_at=AT)
    assert (r.openimis_status, r.iclm_status) == (4, "CHECKED")
    assert r.claimed_total == Decimal(42420)  # "entered" includes the rejected line
    assert r.approved_total == Decimal(420)
    assert r.rejection_reason is None  # not every line was rejected
    lines = by_code(r)
    assert (lines["G2"].status, lines["G2"].reason_code, lines["G2"].reason_text) == ("REJECTED", 3, "NO PRODUCT FOUND")
    assert (lines["G2"].quantity_approved, lines["G2"].price_approved) == (None, None)
    assert lines["G2"].source_uuid == "src-G2-3"
    assert lines["A1"].status == lines["0001"].status == "PASSED"


def test_rejected_family_has_no_total() -> None:
    response = load("response_rejected_family.json")
    assert "total" not in response
    r = normalize(response, draft("BAHMNI-T0001"), received_at=AT)
    assert (r.openimis_status, r.iclm_status, r.outcome) == (1, "REJECTED", "complete")
    assert r.rejection_reason == "7 FAMILY"
    assert r.approved_total is None
    assert r.claimed_total == Decimal(420)  # asked price x quantity of the rejected lines
    assert {(o.status, o.reason_code, o.reason_text) for o in r.lines} == {("REJECTED", 7, "FAMILY")}
    assert all(o.quantity_approved is None and o.price_approved is None for o in r.lines)


def test_future_date_rejected_with_reason_9() -> None:
    case = load("case_future_date.json")
    r = normalize(case["response"], draft("BAHMNI-T0025"), received_at=AT)
    assert (r.openimis_status, r.rejection_reason) == (1, "9 TARGET DATE")


def test_after_process_claims_valuated() -> None:
    r = normalize(load("response_after_processClaims_valuated.json"), draft("BAHMNI-T0002"), received_at=AT)
    assert (r.openimis_status, r.iclm_status, r.outcome) == (16, "VALUATED", "complete")
    assert (r.claimed_total, r.approved_total) == (Decimal(420), Decimal(420))
    assert by_code(r)["A1"].price_approved == Decimal(400)


def test_price_above_pricelist_checked_then_processed_400_not_999() -> None:
    d = draft("BAHMNI-T0023", line(1, "service", "A1", "1", "999"), line(2, "item", "0001", "2", "10"))
    checked = normalize(load("case_price_above_pricelist.json")["response"], d, received_at=AT)
    assert checked.openimis_status == 4
    assert by_code(checked)["A1"].price_approved == Decimal(999)  # "checked" keeps the asked price
    assert checked.approved_total == Decimal(1019)

    processed = normalize(load("response_price_above_pricelist_after_process.json"), d, received_at=AT)
    assert processed.openimis_status == 16
    assert by_code(processed)["A1"].price_approved == Decimal(400)  # category 8, not the 16 echo of 999
    assert processed.claimed_total == Decimal(1019)
    assert processed.approved_total == Decimal(420)


def test_uuid_references_match_by_uuid() -> None:
    d = draft(
        "BAHMNI-T0006",
        line(1, "service", "A1", "1", "400", ref=UUID_A1),
        line(2, "item", "0001", "2", "10", ref=UUID_0001),
    )
    r = normalize(load("case_uuid_references.json")["response"], d, received_at=AT)
    assert [o.code for o in r.lines] == ["A1", "0001"]
    assert r.openimis_status == 4


def test_search_bundle_and_bundle_entry() -> None:
    bundle = load("response_GET_ClaimResponse_search_bundle.json")
    assert bundle["type"] == "searchset"
    d = draft("BAHMNI-T0020")
    from_bundle = normalize(bundle, d, received_at=AT)
    assert from_bundle.claim_uuid == "46a2063a-52c2-4c8d-b5f0-a2f4b2220a2e"
    assert (from_bundle.openimis_status, from_bundle.approved_total) == (4, Decimal(420))
    entry = next(e for e in bundle["entry"] if e["resource"]["id"] == "46a2063a-52c2-4c8d-b5f0-a2f4b2220a2e")
    assert normalize(entry, d, received_at=AT) == from_bundle
    assert normalize(entry["resource"], d, received_at=AT) == from_bundle
    with pytest.raises(ResponseMismatch, match="0 ClaimResponse"):
        normalize(bundle, draft("NOT-IN-BUNDLE"), received_at=AT)


# ------------------------------------------------------------------------------ live captures


def live_partial_draft() -> ClaimDraft:
    return draft(
        "H7-PART-123513",
        line(1, "service", "A1", "1", "400", ref=UUID_A1),
        line(2, "item", "0001", "2", "10", ref=UUID_0001),
        line(3, "service", "G2", "1", "42000"),
        line(4, "item", "0011", "3", "40.5"),
    )


def test_live_post_reply_reordered_lines() -> None:
    case = load("live_partial_processed.json")
    order = [i["extension"][0]["valueReference"]["display"] for i in case["response"]["item"]]
    assert order == ["0001", "0011", "G2", "A1"]  # neither request order nor sequence order
    r = normalize(case["response"], live_partial_draft(), received_at=AT)
    assert [o.source_uuid for o in r.lines] == ["src-A1-1", "src-0001-2", "src-G2-3", "src-0011-4"]
    assert [o.status for o in r.lines] == ["PASSED", "PASSED", "REJECTED", "PASSED"]
    assert (r.openimis_status, r.claimed_total, r.approved_total) == (4, Decimal("42541.5"), Decimal("541.5"))
    assert by_code(r)["0011"].price_approved == Decimal("40.5")


def test_live_get_by_code_after_process() -> None:
    """GET ClaimResponse/<code>/: id = code, uuid only in identifier, references by code."""
    response = load("live_partial_processed.json")["response_get_by_code_after_process"]
    assert response["id"] == "H7-PART-123513"
    assert response["item"][0]["extension"][0]["valueReference"]["reference"] == "Medication/0001"
    r = normalize(response, live_partial_draft(), received_at=AT)
    assert r.claim_code == "H7-PART-123513"
    assert r.claim_uuid == "4cff0f1c-3ea1-4597-86d2-8da0eed1dcc4"
    assert (r.openimis_status, r.iclm_status, r.outcome) == (16, "VALUATED", "complete")
    lines = by_code(r)
    assert lines["0011"].price_approved == Decimal(40)  # processed at the pricelist; valuated echoes 40.5
    assert lines["0011"].quantity_approved == Decimal(3)
    assert r.approved_total == Decimal(540)
    total_processed = next(t for t in response["total"] if t["category"]["coding"][0]["code"] == "8")
    assert r.approved_total == Decimal(str(total_processed["amount"]["value"]))
    assert lines["G2"].reason_code == 3


def test_get_by_code_shape_without_uuid_identifier() -> None:
    response = load("live_partial_processed.json")["response_get_by_code_after_process"]
    response = {**response, "identifier": [i for i in response["identifier"] if i["value"] == "H7-PART-123513"]}
    r = normalize(response, live_partial_draft(), received_at=AT)
    assert (r.claim_code, r.claim_uuid) == ("H7-PART-123513", None)


def test_duplicate_code_lines_told_apart_by_quantity() -> None:
    case = load("live_duplicate_code_processed.json")
    # draft order deliberately differs from the response order (5 first, 2 second)
    d = draft(
        "H7-DUP-123513",
        line(1, "item", "0001", "5", "10", ref=UUID_0001),
        line(2, "item", "0001", "2", "10", ref=UUID_0001),
        line(3, "service", "A1", "1", "400"),
    )
    for response in (case["response"], case["response_get_by_uuid_after_process"]):
        r = normalize(response, d, received_at=AT)
        assert [(o.source_uuid, o.quantity_approved) for o in r.lines] == [
            ("src-0001-1", Decimal(5)),
            ("src-0001-2", Decimal(2)),
            ("src-A1-3", Decimal(1)),
        ]
        assert r.approved_total == Decimal(470)


def test_identical_duplicates_are_assigned_deterministically() -> None:
    """Two identical lines, one rejected as DUPLICATED: totals exact, assignment by draft order."""
    response = copy.deepcopy(load("response_checked_accepted.json"))
    item = response["item"][0]  # 0001, qty 2, price 10
    rejected = copy.deepcopy(item)
    rejected["adjudication"] = [copy.deepcopy(item["adjudication"][0])]
    rejected["adjudication"][0]["category"]["coding"][0].update(code="1", display="rejected")
    rejected["adjudication"][0]["reason"]["coding"][0].update(code="6", display="DUPLICATED")
    response["item"].insert(0, rejected)
    d = draft(
        "BAHMNI-T0002",
        line(1, "service", "A1", "1", "400"),
        line(2, "item", "0001", "2", "10"),
        line(3, "item", "0001", "2", "10"),
    )
    first = normalize(response, d, received_at=AT)
    assert normalize(response, d, received_at=AT) == first
    statuses = sorted((o.status, o.reason_code) for o in first.lines if o.code == "0001")
    assert statuses == [("PASSED", 0), ("REJECTED", 6)]
    assert first.approved_total == Decimal(420)


# ------------------------------------------------------------------------------ refusals


def test_unknown_line_reference_raises() -> None:
    d = draft("BAHMNI-T0002", line(1, "service", "A1", "1", "400"))  # the response also has 0001
    with pytest.raises(ResponseMismatch, match="unknown line reference"):
        normalize(load("response_checked_accepted.json"), d, received_at=AT)


def test_missing_line_raises() -> None:
    d = draft(
        "BAHMNI-T0002",
        line(1, "service", "A1", "1", "400"),
        line(2, "item", "0001", "2", "10"),
        line(3, "item", "0011", "1", "40"),
    )
    with pytest.raises(ResponseMismatch, match="1 line\\(s\\) sent, 0 answered"):
        normalize(load("response_checked_accepted.json"), d, received_at=AT)


def test_other_claims_response_raises() -> None:
    with pytest.raises(ResponseMismatch, match="not 'BAHMNI-T0099'"):
        normalize(load("response_checked_accepted.json"), draft("BAHMNI-T0099"), received_at=AT)


def test_uuid_disagreement_raises() -> None:
    d = draft(
        "BAHMNI-T0002",
        line(1, "service", "A1", "1", "400", ref=UUID_G2),  # sent as another service's uuid
        line(2, "item", "0001", "2", "10"),
    )
    with pytest.raises(ResponseMismatch, match="openIMIS answered for"):
        normalize(load("response_checked_accepted.json"), d, received_at=AT)


def test_reference_without_display_resolved_through_the_draft() -> None:
    response = copy.deepcopy(load("case_uuid_references.json")["response"])
    for item in response["item"]:
        del item["extension"][0]["valueReference"]["display"]
    by_uuid = draft(
        "BAHMNI-T0006",
        line(1, "service", "A1", "1", "400", ref=UUID_A1),
        line(2, "item", "0001", "2", "10", ref=UUID_0001),
    )
    assert [o.code for o in normalize(response, by_uuid, received_at=AT).lines] == ["A1", "0001"]
    with pytest.raises(ResponseMismatch, match="unknown line reference"):
        normalize(response, dataclasses.replace(by_uuid, lines=draft("x").lines), received_at=AT)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(resourceType="OperationOutcome"), "not a ClaimResponse"),
        (
            lambda r: r["item"][0]["adjudication"][0]["category"]["coding"][0].update(code="3"),
            r"status code\(s\) \[3\]",
        ),
        (lambda r: r["item"][0]["adjudication"][0]["category"]["coding"][0].update(code="x"), "not an integer"),
        (lambda r: r["item"][0]["adjudication"][0]["amount"].update(value="ten"), "not a number"),
        (lambda r: r["item"][0]["adjudication"][0]["amount"].update(value=True), "not a number"),
        (lambda r: r["item"][0].update(adjudication=[]), "no adjudication"),
        (lambda r: r["item"][0].update(extension=[]), "claim-item-reference"),
        (lambda r: r["item"][0]["extension"][0]["valueReference"].update(reference="Device/1"), "neither"),
        (lambda r: r.update(identifier=[], id="7fe37a31-edbd-4f20-92a8-64a3d36a0a4c"), "no claim code"),
        (lambda r: r["item"][0]["adjudication"][0]["reason"]["coding"][0].update(code="x"), "not an integer"),
    ],
)
def test_malformed_response_raises(mutate: Any, message: str) -> None:
    response = copy.deepcopy(load("response_checked_accepted.json"))
    mutate(response)
    with pytest.raises(ResponseMismatch, match=message):
        normalize(response, draft("BAHMNI-T0002"), received_at=AT)


def test_an_unknown_status_code_is_reported_with_the_code_not_as_unreadable() -> None:
    """openIMIS forks use claim status codes beyond 1/2/4/8/16 (6, 9, 17-22)."""
    response = copy.deepcopy(load("response_checked_accepted.json"))
    for item in response["item"]:
        for adjudication in item["adjudication"]:
            adjudication["category"]["coding"][0]["code"] = "17"
    with pytest.raises(UnknownClaimStatus) as caught:
        normalize(response, draft("BAHMNI-T0002"), received_at=AT)
    assert caught.value.code == 17
    assert caught.value.reason == "unknown_status"


# ------------------------------------------------------------------------------ tables, codec


def test_rejection_reason_table_matches_the_contract() -> None:
    assert REJECTION_REASONS[0] == "ACCEPTED"
    assert REJECTION_REASONS[3] == "NO PRODUCT FOUND"
    assert REJECTION_REASONS[7] == "FAMILY"
    assert REJECTION_REASONS[9] == "TARGET DATE"
    assert REJECTION_REASONS[-1] == "REJECTED BY MEDICAL OFFICER"
    assert 18 not in REJECTION_REASONS
    assert sorted(REJECTION_REASONS) == [-2, -1, *range(18), 19]
    assert reason_text(42, "SOMETHING NEW") == "SOMETHING NEW"
    assert reason_text(42) == "UNKNOWN REASON 42"


def test_result_round_trips_through_the_reply_codec() -> None:
    d = draft("BAHMNI-T0023", line(1, "service", "A1", "1", "999"), line(2, "item", "0001", "2", "10"))
    r = normalize(load("response_price_above_pricelist_after_process.json"), d, received_at=AT)
    message = ReplyMessage(claim=d, response=r)
    assert decode_reply(encode_reply(message)) == message
