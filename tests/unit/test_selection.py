"""Pure diagnosis selection, ICD normalisation and consultation derivation."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from cdc_claims.assemble.model import Diagnosis, Encounter, Visit
from cdc_claims.assemble.selection import (
    derive_consultations,
    derived_line_uuid,
    known_index,
    normalise_icd,
    select_diagnoses,
)
from cdc_claims.mapping.model import ConsultationRule, DiagnosisPolicy, PricedRef

T0 = datetime(2026, 11, 20, 9, 0)


def dx(ref: str, icd: str | None, *, primary: bool = False, certainty: str = "CONFIRMED", concept: int | None = 1,
       minute: int = 0) -> Diagnosis:  # fmt: skip
    return Diagnosis(
        source="obs", ref_uuid=ref, encounter_uuid="e", concept_id=concept,
        concept_uuid=None if concept is None else f"c-{ref}", icd10=icd, certainty=certainty,  # type: ignore[arg-type]
        primary=primary, recorded=T0.replace(minute=minute),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("code", "strip", "known", "expected"),
    [
        ("E05.90", True, None, "E0590"),
        ("E05.90", False, None, "E05.90"),
        (" a09 ", True, None, "A09"),
        ("A01.00", True, {"A0100"}, "A0100"),  # dotted Bahmni code, undotted openIMIS list
        ("A0100", False, {"A01.00"}, "A01.00"),  # returned as openIMIS spells it
        ("E05.90", True, {"E05", "E059"}, None),  # no silent fallback to a shorter prefix
        (None, True, None, None),
        ("", True, None, None),
    ],
)
def test_normalise_icd(code: str | None, strip: bool, known: set[str] | None, expected: str | None) -> None:
    assert normalise_icd(code, strip_dots=strip, known=known_index(known) if known is not None else None) == expected


def test_primary_first_then_recorded_order() -> None:
    sel = select_diagnoses(
        [dx("b", "A01", minute=1), dx("a", "A02", primary=True, minute=5), dx("c", "A03", minute=0)],
        DiagnosisPolicy(),
        strip_dots=True,
    )
    assert [d.icd10 for d in sel.chosen] == ["A02", "A03", "A01"]
    assert [d.primary for d in sel.chosen] == [True, False, False]


def test_confirmed_only_by_default_and_provisional_when_asked() -> None:
    dxs = [dx("a", "A01", certainty="PROVISIONAL"), dx("b", "A02")]
    assert [d.icd10 for d in select_diagnoses(dxs, DiagnosisPolicy(), strip_dots=True).chosen] == ["A02"]
    wide = select_diagnoses(dxs, DiagnosisPolicy(confirmed_only=False), strip_dots=True)
    assert sorted(d.icd10 for d in wide.chosen) == ["A01", "A02"]


def test_dedupe_by_normalised_icd_and_max_five() -> None:
    dxs = [dx("p", "A01.0", primary=True), dx("d", "A010")] + [dx(f"x{i}", f"B0{i}", minute=i + 1) for i in range(6)]
    sel = select_diagnoses(dxs, DiagnosisPolicy(), strip_dots=True)
    assert [d.icd10 for d in sel.chosen] == ["A010", "B00", "B01", "B02", "B03"]
    assert sel.chosen[0].primary
    whys = {d.ref_uuid: d.why for d in sel.dropped}
    assert whys["d"] == "duplicate" and whys["x4"] == whys["x5"] == "over_max"


def test_non_coded_unmapped_unknown_and_overrides() -> None:
    dxs = [dx("n", None, concept=None), dx("u", None), dx("k", "E05.90"), dx("o", "E11.9")]
    sel = select_diagnoses(
        dxs, DiagnosisPolicy(), strip_dots=True, known=known_index({"A09", "A499"}), overrides={"c-o": "A499"}
    )
    assert [d.icd10 for d in sel.chosen] == ["A499"]
    assert {d.ref_uuid: d.why for d in sel.dropped} == {
        "n": "non_coded",
        "u": "no_icd_map",
        "k": "unknown_to_openimis:E05.90",
    }


NOTE = "81d6e852-3f10-11e4-adec-0800271c1b75"  # Consultation Note


def test_consultations_per_encounter_by_type_and_visit_type() -> None:
    visit = Visit(1, "v", "vt-opd", "OPD", T0, None, False, None)
    encs = [
        Encounter(1, "e1", "et-consult", "Consultation", T0, False, None),
        Encounter(2, "e2", "et-reg", "REG", T0, False, None),
        Encounter(3, "e3", "et-consult", "Consultation", T0, True, None),  # voided
    ]
    rules = [
        ConsultationRule(
            encounter_type="Consultation", visit_type="EMERGENCY", service=PricedRef(code="E1", price=1), concept=NOTE
        ),
        ConsultationRule(encounter_type="et-consult", service=PricedRef(code="A1", price=400), concept=NOTE),
    ]
    (line,) = derive_consultations(encs, visit, rules, {NOTE: 28})
    assert (line.kind, line.encounter_uuid, line.quantity) == ("consultation", "e1", Decimal(1))
    assert (line.concept_id, line.concept_uuid) == (28, NOTE)  # the billing concept, not the encounter type
    again = derive_consultations(encs, visit, rules, {NOTE: 28})[0].source_uuid
    assert line.source_uuid == derived_line_uuid("e1", "A1") == again
    assert derived_line_uuid("e1", "A1") != derived_line_uuid("e1", "A2")
