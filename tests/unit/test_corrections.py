"""What changes after submission become: supplements, withdrawals, replacements (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.claim import corrections, render_claim
from cdc_claims.claim.corrections import SentClaim, diff, follow_up

CONSULT = ClaimLine(1, "service", "A1", "A1", Decimal(1), Decimal(400), "consult-1", 5, "consultation")


def drug(uuid: str, qty: int, *, code: str = "0171", identity: str = "", price: int = 35) -> ClaimLine:
    return ClaimLine(2, "item", code, code, Decimal(qty), Decimal(price), uuid, 9, "drug", line_id=identity)


def draft(*lines: ClaimLine, code: str = "RAHOS001-abc", dx: str = "A09") -> ClaimDraft:
    return ClaimDraft(
        code=code, unit_kind="encounter", unit_uuid="u", visit_uuid="v", encounter_uuids=("u",), patient_uuid="p",
        patient_id=1, insuree="i", facility="f", facility_code="RAHOS001", enterer="e", visit_type="O",
        period_start=date(2026, 11, 25), period_end=date(2026, 11, 25), created=date(2026, 11, 25),
        diagnoses=(ClaimDiagnosis(dx, 1, True),), lines=lines,
    )  # fmt: skip


ORIGINAL = SentClaim("RAHOS001-abc", "original", 0, draft(CONSULT, drug("d1", 10)))


def test_nothing_changed_is_an_empty_diff() -> None:
    assert diff(draft(CONSULT, drug("d1", 10)), [ORIGINAL]).empty


def test_a_reduction_is_taken_back_from_the_supplement_first() -> None:
    supplement = SentClaim("RAHOS001-abc-S1", "supplement", 1, draft(drug("d1b", 5, identity="d1")))
    change = diff(draft(CONSULT, drug("d1c", 8, identity="d1")), [ORIGINAL, supplement])
    assert not change.supplement
    assert [(w.claim_code, w.source_uuid, w.quantity, w.why) for w in change.withdrawals] == [
        ("RAHOS001-abc-S1", "d1b", Decimal(5), "removed"),
        ("RAHOS001-abc", "d1", Decimal(2), "reduced"),
    ]


def test_a_line_mapped_to_another_code_is_withdrawn_and_added() -> None:
    change = diff(draft(CONSULT, drug("d1", 10, code="0158", price=40)), [ORIGINAL])
    assert [(ln.code, ln.quantity) for ln in change.supplement] == [("0158", Decimal(10))]
    assert [(w.code, w.why) for w in change.withdrawals] == [("0171", "removed")]


def test_a_diagnosis_change_alone_sends_nothing_but_is_reported() -> None:
    change = diff(draft(CONSULT, drug("d1", 10), dx="A499"), [ORIGINAL])
    assert change.diagnoses_changed and not change.supplement and not change.withdrawals and not change.empty


def test_rejected_lines_are_not_claimed_and_return_only_when_changed_or_forced() -> None:
    rejected = replace(ORIGINAL, rejected=frozenset({"d1"}))
    same = diff(draft(CONSULT, drug("d1", 10)), [rejected])
    assert [ln.source_uuid for ln in same.still_rejected] == ["d1"] and not same.replacement
    forced = diff(draft(CONSULT, drug("d1", 10)), [rejected], force=True)
    assert [ln.source_uuid for ln in forced.replacement["RAHOS001-abc"]] == ["d1"]
    fixed = diff(draft(CONSULT, drug("d1", 10, price=30)), [rejected])
    assert list(fixed.replacement) == ["RAHOS001-abc"] and not fixed.withdrawals
    whole = diff(draft(CONSULT, drug("d1", 10)), [replace(ORIGINAL, whole_claim_rejected=True)], force=True)
    assert sorted(ln.source_uuid for ln in whole.replacement["RAHOS001-abc"]) == ["consult-1", "d1"]


def test_a_follow_up_claim_holds_only_its_lines_and_names_its_relation() -> None:
    current = draft(CONSULT, drug("d1", 10), drug("lab", 1, code="I125", price=650))
    added = diff(current, [ORIGINAL]).supplement
    sup = follow_up(
        current, added, kind="supplement", original_code=ORIGINAL.code, related_code=ORIGINAL.code, seq=1,
        created=date(2026, 11, 26),
    )  # fmt: skip
    assert sup.code == "RAHOS001-abc-S1" and [ln.sequence for ln in sup.lines] == [1]
    assert sup.total == Decimal(650) and sup.content_hash
    fhir = render_claim(sup)
    assert fhir["related"][0]["claim"]["identifier"]["value"] == ORIGINAL.code
    assert fhir["related"][0]["relationship"]["coding"][0]["code"] == "associated"
    assert fhir["supportingInfo"][0]["valueString"].startswith("Supplement to claim RAHOS001-abc")
    assert corrections.suffixed("X" * 50, "-S12") == "X" * 46 + "-S12"
