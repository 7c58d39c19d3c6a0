"""The summary's buckets, a unit's timeline, the CSV export and the store's pure helpers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.desk.export import HEADER, cell, to_csv
from cdc_claims.desk.model import ClaimFact, ClaimView, UnitRow
from cdc_claims.desk.store import _claim_view, _withdrawals, top_reasons
from cdc_claims.desk.summary import MAX_DAYS, clamp_range, summarize
from cdc_claims.desk.timeline import timeline
from cdc_claims.ledger.model import ActionRecord, ClaimRecord, LedgerEntry, missing_original
from cdc_claims.lifecycle import State
from cdc_claims.writeback.iclm import row_uuid


def test_every_day_of_the_range_has_a_bucket_and_weeks_are_iso() -> None:
    facts = [
        ClaimFact(date(2026, 12, 1), "checked", Decimal("100"), Decimal("90")),
        ClaimFact(date(2026, 12, 1), "checked", Decimal("50"), None),
        ClaimFact(date(2026, 12, 1), "rejected", Decimal("30"), None),
        ClaimFact(date(2026, 12, 7), "valuated", Decimal("10"), Decimal("10")),
        ClaimFact(date(2026, 11, 1), "checked", Decimal("999"), None),  # outside: ignored
    ]
    s = summarize(facts, date(2026, 11, 30), date(2026, 12, 8), top_rejections=[("7 FAMILY", 3)])
    assert [b.label for b in s.days][:2] == ["2026-11-30", "2026-12-01"]
    assert len(s.days) == 9
    day = s.days[1]
    assert day.counts == {"checked": 2, "rejected": 1}
    assert day.claimed == {"checked": Decimal("150"), "rejected": Decimal("30")}
    assert day.approved == {"checked": Decimal("90")}
    assert day.total == 3
    assert s.days[0].total == 0
    assert [w.label for w in s.weeks] == ["2026-W49 (2026-11-30)", "2026-W50 (2026-12-07) partial"]
    assert s.weeks[0].counts == {"checked": 2, "rejected": 1}
    assert s.weeks[1].counts == {"valuated": 1}
    assert s.statuses == ("checked", "valuated", "rejected")  # the lifecycle's order, only those seen
    assert s.top_rejections == (("7 FAMILY", 3),)


def test_a_range_starting_midweek_has_a_partial_first_week() -> None:
    s = summarize([], date(2026, 12, 3), date(2026, 12, 6))
    assert [w.label for w in s.weeks] == ["2026-W49 (2026-11-30) partial"]
    assert s.statuses == ()


def test_the_range_is_ordered_and_capped_keeping_the_recent_days() -> None:
    assert clamp_range(date(2026, 12, 9), date(2026, 12, 1)) == (date(2026, 12, 1), date(2026, 12, 9))
    start, end = clamp_range(date(2020, 1, 1), date(2026, 12, 31))
    assert end == date(2026, 12, 31)
    assert (end - start).days + 1 == MAX_DAYS


def _entry(**kw: object) -> LedgerEntry:
    base: dict[str, object] = {
        "unit_kind": "encounter",
        "unit_uuid": "u1",
        "state": State.CHECKED,
        "claim_code": "C1",
        "created_at": datetime(2026, 12, 1, 10, 0, 0, 100),
        "updated_at": datetime(2026, 12, 1, 10, 5, 0, 500),
    }
    base.update(kw)
    return LedgerEntry(**base)  # type: ignore[arg-type]


def test_timeline_orders_stored_moments_and_keeps_sent_before_answered_in_one_second() -> None:
    record = ClaimRecord(
        claim_code="C1",
        unit_kind="encounter",
        unit_uuid="u1",
        kind="original",
        state=State.CHECKED,
        created_at=datetime(2026, 12, 1, 10, 0, 1, 900_000),
        updated_at=datetime(2026, 12, 1, 10, 0, 1, 950_000),
    )
    claim = ClaimView(
        record=record,
        iclm_status="CHECKED",
        billed_at=datetime(2026, 12, 1, 10, 0, 1),  # whole seconds: before "sent" by the clock
        changed_at=datetime(2026, 12, 1, 10, 3, 0),
    )
    events = [e.what for e in timeline(_entry(reason="withdrawal_needed"), [claim])]
    assert events == [
        "First seen: a Bahmni save touched it",
        "Claim C1 sent to openIMIS",
        "Claim C1: first reply written to billing (CHECKED)",
        "Claim C1: last change, now checked",
        "Claim C1: billing row last changed (now CHECKED)",
        "Last change: checked (withdrawal_needed)",
    ]


def test_timeline_shows_what_staff_did_and_what_it_came_to() -> None:
    at = datetime(2026, 12, 1, 9, 0)
    actions = [
        ActionRecord(datetime(2026, 12, 1, 9, 30), "amina", "rerun", "u1", False, "held again: uninsured"),
        ActionRecord(datetime(2026, 12, 1, 9, 10), "amina", "rerun", "u1", True, "submitted"),
    ]
    entry = _entry(state=State.CHECKED, reason=None, created_at=at, updated_at=datetime(2026, 12, 1, 9, 45))
    assert [e.what for e in timeline(entry, [], actions)] == [
        "First seen: a Bahmni save touched it",
        "amina: rerun on u1 (done): submitted",
        "amina: rerun on u1 (not done): held again: uninsured",
        "Last change: checked",
    ]


def test_timeline_orders_naive_and_aware_utc_times_together() -> None:
    """The driver hands some stored times back naive and some aware (the audit's): both are UTC."""
    actions = [ActionRecord(datetime(2026, 12, 1, 9, 30, tzinfo=UTC), "amina", "rerun", "u1", True, "submitted")]
    entry = _entry(created_at=datetime(2026, 12, 1, 9, 0), updated_at=datetime(2026, 12, 1, 9, 45))
    events = timeline(entry, [], actions)
    assert [e.what for e in events] == [
        "First seen: a Bahmni save touched it",
        "amina: rerun on u1 (done): submitted",
        "Last change: checked",
    ]
    assert events[1].at == datetime(2026, 12, 1, 9, 30)


def test_timeline_of_a_unit_never_changed_says_where_it_stands() -> None:
    at = datetime(2026, 12, 1, 9, 0)
    events = timeline(_entry(state=State.HELD, reason="uninsured", created_at=at, updated_at=at), [])
    assert [(e.at, e.what) for e in events] == [
        (at, "First seen: a Bahmni save touched it"),
        (at, "Now: held (uninsured)"),
    ]


def test_csv_has_a_header_rows_and_neutralised_formulas() -> None:
    rows = [
        UnitRow(
            unit_kind="encounter",
            unit_uuid="u1",
            state=State.HELD,
            reason="uninsured",
            patient_name='=HYPERLINK("http://evil","x")',
            patient_identifier="+254700",
            detail="-1 thing",
            visit_type="@SUM(A1)",
            claimed=Decimal("12.5"),
            withdrawal=True,
            updated_at=datetime(2026, 12, 1, 10, 0, 0, 5),
        )
    ]
    parsed = list(csv.reader(io.StringIO(to_csv(rows))))
    assert parsed[0] == list(HEADER)
    row = dict(zip(HEADER, parsed[1], strict=True))
    assert row["patient_name"] == '\'=HYPERLINK("http://evil","x")'
    assert row["patient_identifier"] == "'+254700"
    assert row["detail"] == "'-1 thing"
    assert row["visit_type"] == "'@SUM(A1)"
    assert row["claimed"] == "12.50"
    assert row["withdrawal_needed"] == "yes"
    assert row["updated_at_utc"] == "2026-12-01 10:00:00"
    assert row["state"] == "held"
    assert (cell(None), cell("\tx"), cell("plain")) == ("", "'\tx", "plain")


def test_rejection_reasons_are_merged_by_code() -> None:
    rows: list[dict[str, Any]] = [
        {"reason": "7 FAMILY", "n": 3},
        {"reason": "-1 7 FAMILY", "n": 2},
        {"reason": "3 NO PRODUCT FOUND", "n": 4},
        {"reason": None, "n": 1},
    ]
    assert top_reasons(rows) == (("7 FAMILY", 5), ("3 NO PRODUCT FOUND", 4), ("no reason given", 1))
    assert top_reasons(rows, limit=1) == (("7 FAMILY", 5),)


def test_withdrawals_are_read_from_the_history_json() -> None:
    raw = json.dumps({"b": {"code": "0171", "quantity": "10.0", "why": "removed"}, "a": {"why": "reduced"}})
    read = [(w.source_uuid, w.code, w.why) for w in _withdrawals(raw)]
    assert read == [("a", "", "reduced"), ("b", "0171", "removed")]
    assert _withdrawals(None) == ()
    assert _withdrawals("not json") == ()
    assert _withdrawals("[1]") == ()


def _draft() -> ClaimDraft:
    line = ClaimLine(
        sequence=1,
        category="item",
        code="0171",
        reference="ref",
        quantity=Decimal("10"),
        unit_price=Decimal("35"),
        source_uuid="order-1",
        concept_id=1643,
        kind="drug",
    )
    lab = ClaimLine(
        sequence=2,
        category="service",
        code="I125",
        reference="ref2",
        quantity=Decimal("1"),
        unit_price=Decimal("650"),
        source_uuid="order-2",
        concept_id=3572,
        kind="lab",
    )
    return ClaimDraft(
        code="C1",
        unit_kind="encounter",
        unit_uuid="u1",
        visit_uuid="v1",
        encounter_uuids=("u1",),
        patient_uuid="p1",
        patient_id=1,
        insuree="i",
        facility="f",
        facility_code="F",
        enterer="e",
        visit_type="O",
        period_start=date(2026, 12, 1),
        period_end=date(2026, 12, 1),
        created=date(2026, 12, 1),
        diagnoses=(ClaimDiagnosis(icd10="A09", concept_id=442, primary=True),),
        lines=(line, lab),
    )


def test_a_claim_view_joins_the_draft_lines_with_their_billing_items() -> None:
    record = ClaimRecord(
        claim_code="C1",
        unit_kind="encounter",
        unit_uuid="u1",
        kind="original",
        state=State.CHECKED,
        withdrawal=json.dumps({"order-1": {"code": "0171", "quantity": "10", "why": "removed"}}),
        rejected_lines=("order-2",),
    )
    items: dict[str, dict[str, Any]] = {
        row_uuid("claim_item", "C1", "order-1"): {
            "status": "PASSED",
            "quantity_approved": 10,
            "price_approved": Decimal("35.00"),
            "rejection_reason": None,
        },
        row_uuid("claim_item", "C1", "order-2"): {
            "status": "REJECTED",
            "quantity_approved": None,
            "price_approved": None,
            "rejection_reason": "3 NO PRODUCT FOUND",
        },
    }
    billed = {"status": "CHECKED", "claimed_total": Decimal("1000.00"), "approved_total": Decimal("350.00")}
    view = _claim_view(
        record, _draft(), billed, items=items, concepts={3572: "Thyroid Function"}, drugs={"order-1": "Nifedipine 5mg"}
    )
    drug, lab = view.lines
    assert (drug.name, drug.status, drug.withdraw) == ("Nifedipine 5mg", "PASSED", "removed")
    assert drug.approved == Decimal(350)
    assert (lab.name, lab.status, lab.rejection_reason, lab.approved) == (
        "Thyroid Function",
        "REJECTED",
        "3 NO PRODUCT FOUND",
        None,
    )
    assert lab.claimed == Decimal(650)
    assert (view.iclm_status, view.approved_total) == ("CHECKED", Decimal("350.00"))
    assert view.open


def test_a_claim_without_billing_rows_yet_still_lists_its_lines() -> None:
    record = ClaimRecord(
        claim_code="C1",
        unit_kind="encounter",
        unit_uuid="u1",
        kind="original",
        state=State.REJECTED,
        withdrawal=json.dumps({"*": {"code": "*", "quantity": "all", "why": "voided"}}),
        rejected_lines=("order-2",),
    )
    view = _claim_view(record, _draft(), None, items={}, concepts={}, drugs={})
    assert [(line.status, line.withdraw) for line in view.lines] == [(None, "voided"), ("REJECTED", "voided")]
    assert view.iclm_status is None
    assert not view.open


def test_a_claim_known_only_to_its_ledger_row_is_shown_as_the_original() -> None:
    entry = _entry(draft_json="{}")
    original = missing_original(entry, [])
    assert original is not None
    assert (original.claim_code, original.kind, original.state) == ("C1", "original", State.CHECKED)
    other = ClaimRecord("C1", "encounter", "u1", "original", State.CHECKED)
    assert missing_original(entry, [other]) is None  # the history has it
    assert missing_original(_entry(draft_json=None), []) is None
