"""Pure diagnosis selection, ICD normalisation and consultation derivation."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from cdc_claims.assemble.model import Diagnosis, Encounter, Visit
from cdc_claims.assemble.selection import (
    DiagnosisObsConcepts,
    RecordedDiagnosis,
    attach_icd,
    derive_consultations,
    derived_line_uuid,
    encounter_diagnoses,
    known_index,
    normalise_icd,
    obs_diagnoses,
    pick_icd_codes,
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


# ------------------------------------------------------------------------------------------
# Which recorded diagnoses count: rows as the reader fetches them
# ------------------------------------------------------------------------------------------

CODED, NON_CODED, CERTAINTY, CONFIRMED, ORDER, PRIMARY, SECONDARY = 1, 2, 3, 4, 5, 6, 7
STATUS, RULED_OUT, REVISED, TRUE, FALSE, PROVISIONAL_ANSWER = 8, 9, 10, 11, 12, 13
CONCEPTS = DiagnosisObsConcepts(
    coded=CODED, non_coded=NON_CODED, certainty=CERTAINTY, confirmed=CONFIRMED, order=ORDER, primary=PRIMARY,
    status=STATUS, ruled_out=RULED_OUT, revised=REVISED, true=TRUE,
)  # fmt: skip


def group(gid: int, *members: tuple[int, int | None, str | None], encounter: int = 5) -> list[dict[str, Any]]:
    """The member rows of one Visit Diagnoses group: (member concept, value_coded, value_text)."""
    return [
        {"group_id": gid, "group_uuid": f"g{gid}", "encounter_id": encounter, "obs_datetime": T0.replace(minute=gid),
         "member_concept_id": concept, "value_coded": coded, "value_text": text}
        for concept, coded, text in members
    ]  # fmt: skip


def test_a_confirmed_primary_obs_group_is_one_diagnosis() -> None:
    rows = group(1, (CODED, 500, None), (CERTAINTY, CONFIRMED, None), (ORDER, PRIMARY, None), (REVISED, FALSE, None))
    assert obs_diagnoses(rows, CONCEPTS) == [
        RecordedDiagnosis("obs", "g1", 5, 500, "CONFIRMED", True, T0.replace(minute=1))
    ]


def test_certainty_and_order_default_to_provisional_and_secondary() -> None:
    (only,) = obs_diagnoses(group(1, (CODED, 500, None)), CONCEPTS)
    assert (only.certainty, only.primary) == ("PROVISIONAL", False)
    (other,) = obs_diagnoses(
        group(2, (CODED, 500, None), (CERTAINTY, PROVISIONAL_ANSWER, None), (ORDER, SECONDARY, None)), CONCEPTS
    )
    assert (other.certainty, other.primary) == ("PROVISIONAL", False)


def test_revised_and_ruled_out_groups_do_not_count() -> None:
    rows = [
        *group(1, (CODED, 501, None), (REVISED, TRUE, None)),  # replaced by a later group
        *group(2, (CODED, 502, None), (STATUS, RULED_OUT, None)),
        *group(3, (CODED, 503, None), (STATUS, 77, None), (REVISED, FALSE, None)),  # another status: counts
    ]
    assert [d.ref_uuid for d in obs_diagnoses(rows, CONCEPTS)] == ["g3"]


def test_revision_is_ignored_where_the_database_has_no_true_concept() -> None:
    no_true = replace(CONCEPTS, true=None)
    assert [d.concept_id for d in obs_diagnoses(group(1, (CODED, 501, None), (REVISED, TRUE, None)), no_true)] == [501]


def test_a_group_must_name_a_diagnosis_coded_or_free_text() -> None:
    rows = [
        *group(1, (NON_CODED, None, "fever of unknown origin")),
        *group(2, (NON_CODED, None, ""), (CERTAINTY, CONFIRMED, None)),  # nothing diagnosed
        *group(3, (CODED, None, None)),
    ]
    (free_text,) = obs_diagnoses(rows, CONCEPTS)
    assert (free_text.ref_uuid, free_text.concept_id) == ("g1", None)


def test_groups_keep_the_order_the_rows_came_in() -> None:
    rows = [*group(7, (CODED, 507, None), encounter=6), *group(3, (CODED, 503, None))]
    assert [(d.ref_uuid, d.encounter_id) for d in obs_diagnoses(rows, CONCEPTS)] == [("g7", 6), ("g3", 5)]


def edx(uuid: str, coded: int | None, *, text: str | None = None, certainty: str | None = "CONFIRMED",
        rank: int | None = 1) -> dict[str, Any]:  # fmt: skip
    return {"uuid": uuid, "encounter_id": 5, "diagnosis_coded": coded, "diagnosis_non_coded": text,
            "certainty": certainty, "dx_rank": rank, "date_created": T0}  # fmt: skip


def test_encounter_diagnosis_rows_certainty_any_case_and_rank_one_is_primary() -> None:
    found = encounter_diagnoses(
        [edx("a", 500), edx("b", 501, certainty="confirmed", rank=2), edx("c", 502, certainty="PROVISIONAL"),
         edx("d", 503, certainty=None, rank=None)]
    )  # fmt: skip
    assert [(d.ref_uuid, d.certainty, d.primary) for d in found] == [
        ("a", "CONFIRMED", True),
        ("b", "CONFIRMED", False),
        ("c", "PROVISIONAL", True),
        ("d", "PROVISIONAL", False),
    ]
    assert {d.source for d in found} == {"encounter_diagnosis"}


def test_encounter_diagnosis_needs_a_concept_or_free_text() -> None:
    found = encounter_diagnoses([edx("coded", 500), edx("text", None, text="malaria"), edx("empty", None, text="")])
    assert [(d.ref_uuid, d.concept_id) for d in found] == [("coded", 500), ("text", None)]


def test_pick_icd_codes_takes_the_first_code_in_row_order() -> None:
    rows = [
        {"concept_id": 1, "uuid": "c1", "code": " A09 "},  # SAME-AS, first: wins (trimmed)
        {"concept_id": 1, "uuid": "c1", "code": "A08"},
        {"concept_id": 2, "uuid": "c2", "code": None},  # a map to another source
        {"concept_id": 2, "uuid": "c2", "code": "B50.9"},  # the first one with a code
        {"concept_id": 3, "uuid": "c3", "code": None},
        {"concept_id": 4, "uuid": "c4", "code": "  "},  # blank is no code
    ]
    assert pick_icd_codes(rows) == {1: ("c1", "A09"), 2: ("c2", "B50.9"), 3: ("c3", None), 4: ("c4", None)}


def test_attach_icd_gives_the_context_its_diagnoses() -> None:
    recorded = [
        RecordedDiagnosis("obs", "g1", 5, 1, "CONFIRMED", True, T0),
        RecordedDiagnosis("encounter_diagnosis", "d1", 6, None, "PROVISIONAL", False, T0),
    ]
    coded, free = attach_icd(recorded, {5: "enc-5", 6: "enc-6"}, {1: ("c1", "A09")})
    assert coded == Diagnosis("obs", "g1", "enc-5", 1, "c1", "A09", "CONFIRMED", True, T0)
    assert free == Diagnosis("encounter_diagnosis", "d1", "enc-6", None, None, None, "PROVISIONAL", False, T0)
