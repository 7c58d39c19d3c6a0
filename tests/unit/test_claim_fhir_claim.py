"""render_claim against the Claims a real openIMIS accepted (tests/data/openimis_samples)."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.claim import Claim
from pydantic import ValidationError

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.claim import MAX_DIAGNOSES, ClaimRenderError, claim_diagnoses, render_claim
from cdc_claims.claim._fhir import validate_claim

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "openimis_samples"
IG = "https://openimis.github.io/openimis_fhir_r4_ig/"
ITEM_REF_URL = IG + "StructureDefinition/claim-item-reference"

UUID_PATIENT = "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"
UUID_HF = "d8a25f21-f36a-4d4d-9e58-1db8ffbe7036"
UUID_ADMIN = "598e43ca-9977-4f4b-a678-992528ce3454"
UUID_A1 = "488d8bcb-5b88-438c-9077-f177f6f32626"
UUID_0001 = "71efb78b-64ee-4a68-be29-87daf566eb20"


def load(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def line(seq: int, category: str, code: str, ref: str, qty: str, price: str, kind: str = "drug") -> ClaimLine:
    return ClaimLine(
        sequence=seq,
        category=category,  # type: ignore[arg-type]
        code=code,
        reference=ref,
        quantity=Decimal(qty),
        unit_price=Decimal(price),
        source_uuid=f"src-{seq}",
        concept_id=1000 + seq,
        kind=kind,  # type: ignore[arg-type]
    )


def draft(**overrides: Any) -> ClaimDraft:
    """The CONTRACT §4.3 minimal claim (request_claim_by_code.json) as a ClaimDraft."""
    values: dict[str, Any] = {
        "code": "BAHMNI-T0002",
        "unit_kind": "encounter",
        "unit_uuid": "enc-1",
        "visit_uuid": "visit-1",
        "encounter_uuids": ("enc-1",),
        "patient_uuid": "pat-1",
        "patient_id": 7,
        "insuree": "070707081",
        "facility": "RAHOS001",
        "facility_code": "RAHOS001",
        "enterer": "RHOS0011",
        "visit_type": "O",
        "period_start": date(2026, 11, 20),
        "period_end": date(2026, 11, 20),
        "created": date(2026, 11, 25),
        "diagnoses": (ClaimDiagnosis(icd10="A09", concept_id=84, primary=True),),
        "lines": (
            line(1, "service", "A1", "A1", "1", "400", kind="consultation"),
            line(2, "item", "0001", "0001", "2", "10"),
        ),
    }
    values.update(overrides)
    return ClaimDraft(**values)


def uuid_draft() -> ClaimDraft:
    return draft(
        code="BAHMNI-T0006",
        insuree=UUID_PATIENT,
        facility=UUID_HF,
        enterer=UUID_ADMIN,
        lines=(
            line(1, "service", "A1", UUID_A1, "1", "400", kind="consultation"),
            line(2, "item", "0001", UUID_0001, "2", "10"),
        ),
    )


def with_mr(request: dict[str, Any]) -> dict[str, Any]:
    """The sample plus the MR alias identifier render_claim always adds after ``Code``."""
    expected = copy.deepcopy(request)
    mr = copy.deepcopy(expected["identifier"][0])
    mr["type"]["coding"][0]["code"] = "MR"
    expected["identifier"].append(mr)
    return expected


def test_minimal_claim_equals_the_accepted_sample() -> None:
    sample = load("request_claim_by_code.json")
    rendered = render_claim(draft(), currency="$")
    assert rendered == with_mr(sample)
    assert rendered["identifier"][0] == sample["identifier"][0]  # Code first: openIMIS reads that one


def test_uuid_reference_claim_equals_the_accepted_sample() -> None:
    sample = load("case_uuid_references.json")
    assert sample["http_status"] == 201
    assert render_claim(uuid_draft(), currency="$") == sample["request"]


def test_identifier_code_first_then_mr_with_same_value() -> None:
    identifiers = render_claim(draft())["identifier"]
    assert [i["type"]["coding"][0]["code"] for i in identifiers] == ["Code", "MR"]
    assert {i["value"] for i in identifiers} == {"BAHMNI-T0002"}
    assert {i["type"]["coding"][0]["system"] for i in identifiers} == {IG + "CodeSystem/openimis-identifiers"}


def test_header_references_and_fields() -> None:
    claim = render_claim(uuid_draft())
    assert claim["patient"] == {"reference": f"Patient/{UUID_PATIENT}"}
    assert claim["provider"] == {"reference": f"Organization/{UUID_HF}"}
    assert claim["enterer"] == {"reference": f"Practitioner/{UUID_ADMIN}"}
    assert (claim["status"], claim["use"], claim["created"]) == ("active", "claim", "2026-11-25")
    assert claim["billablePeriod"] == {"start": "2026-11-20", "end": "2026-11-20"}
    assert claim["type"]["coding"] == [{"system": IG + "CodeSystem/claim-visit-type", "code": "O"}]
    assert "contained" not in claim


def test_items_reference_extension_first_and_category_text() -> None:
    claim = render_claim(uuid_draft())
    first, second = claim["item"]
    assert next(iter(first)) == "extension"  # first key, and the only extension
    assert first["extension"] == [
        {"url": ITEM_REF_URL, "valueReference": {"reference": f"ActivityDefinition/{UUID_A1}"}}
    ]
    assert second["extension"][0]["valueReference"] == {"reference": f"Medication/{UUID_0001}"}
    assert [i["category"] for i in claim["item"]] == [{"text": "service"}, {"text": "item"}]
    assert [i["productOrService"] for i in claim["item"]] == [{"text": "A1"}, {"text": "0001"}]
    assert [i["sequence"] for i in claim["item"]] == [1, 2]


def test_total_is_the_sum_and_currency_is_consistent_or_absent() -> None:
    d = draft(
        lines=(
            line(1, "service", "A1", "A1", "1", "400", kind="consultation"),
            line(2, "item", "0011", "0011", "3", "40.5"),
            line(3, "item", "0001", "0001", "1.5", "10"),
        )
    )
    claim = render_claim(d)
    assert claim["total"] == {"value": 400 + 3 * 40.5 + 15}
    assert [i["quantity"]["value"] for i in claim["item"]] == [1, 3, 1.5]
    assert [i["unitPrice"] for i in claim["item"]] == [{"value": 400.0}, {"value": 40.5}, {"value": 10.0}]
    assert "currency" not in json.dumps(claim)

    with_currency = render_claim(d, currency="XAF")
    assert {i["unitPrice"]["currency"] for i in with_currency["item"]} == {"XAF"}
    assert with_currency["total"]["currency"] == "XAF"


def test_output_is_plain_json() -> None:
    claim = render_claim(draft(lines=(line(1, "item", "0011", "0011", "3", "40.25"),)))
    assert json.loads(json.dumps(claim)) == claim
    assert claim["item"][0]["unitPrice"]["value"] == 40.25
    assert isinstance(claim["item"][0]["quantity"]["value"], int)


def test_diagnoses_primary_first_deduplicated_at_most_five() -> None:
    diagnoses = (
        ClaimDiagnosis("A000", 1, False),
        ClaimDiagnosis("A0100", 2, False),
        ClaimDiagnosis("A09", 3, True),
        ClaimDiagnosis("A000", 4, False),  # same ICD code through another concept
        ClaimDiagnosis("B01", 5, False),
        ClaimDiagnosis("B02", 6, False),
        ClaimDiagnosis("B03", 7, False),
    )
    d = draft(diagnoses=diagnoses)
    claim = render_claim(d)
    codes = [x["diagnosisCodeableConcept"]["coding"][0]["code"] for x in claim["diagnosis"]]
    assert codes == ["A09", "A000", "A0100", "B01", "B02"]
    assert len(codes) == MAX_DIAGNOSES
    assert [x["sequence"] for x in claim["diagnosis"]] == [1, 2, 3, 4, 5]
    assert [x.concept_id for x in claim_diagnoses(d)] == [3, 1, 2, 5, 6]
    system = {x["diagnosisCodeableConcept"]["coding"][0]["system"] for x in claim["diagnosis"]}
    assert system == {IG + "CodeSystem/diagnosis-ICD10-level1"}


def _replace_line(**changes: Any) -> ClaimDraft:
    base = draft()
    return dataclasses.replace(base, lines=(dataclasses.replace(base.lines[0], **changes), base.lines[1]))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (draft(diagnoses=()), "no diagnosis"),
        (draft(diagnoses=(ClaimDiagnosis(" ", 1, True),)), "no ICD code"),
        (draft(lines=()), "no line"),
        (draft(lines=(line(1, "item", "0001", "0001", "1", "0"),)), "total is zero"),
        (draft(visit_type="X"), "visit type"),
        (draft(code="C" * 51), "claim code"),
        (draft(code=""), "claim code"),
        (draft(period_end=date(2026, 11, 19)), "billable period"),
        (
            draft(lines=(line(1, "item", "0001", "0001", "1", "1"), line(1, "item", "0011", "0011", "1", "1"))),
            "sequence",
        ),
        (_replace_line(unit_price=Decimal(-1)), "must not be negative"),
        (_replace_line(quantity=Decimal(0)), "must be positive"),
        (_replace_line(quantity=Decimal("NaN")), "must be positive"),
        (_replace_line(category="drug"), "not item/service"),
        (_replace_line(code=""), "empty openIMIS code"),
        (_replace_line(reference="Medication/A1"), "reference"),
        (draft(insuree=""), "Patient reference"),
        (draft(facility="RAH OS"), "Organization reference"),
    ],
)
def test_invalid_draft_raises(bad: ClaimDraft, message: str) -> None:
    with pytest.raises(ClaimRenderError, match=message):
        render_claim(bad)


def test_fhir_validation_rejects_what_the_builder_must_never_emit() -> None:
    claim = render_claim(draft())
    mutations: list[tuple[Callable[[dict[str, Any]], object], str]] = [
        (lambda c: c.update(bogus=1), "bogus"),
        (lambda c: c["item"][0].pop("productOrService"), "productOrService"),
        (lambda c: c.update(created="25/11/2026"), "created"),
        (lambda c: c["item"][0]["quantity"].update(value="two"), "quantity"),
        (lambda c: c.update(contained=[]), "contained"),
        (lambda c: c.update(resourceType="ClaimResponse"), "not a Claim"),
    ]
    for mutate, message in mutations:
        broken = copy.deepcopy(claim)
        mutate(broken)
        with pytest.raises(ClaimRenderError, match=message):
            validate_claim(broken)


def test_strict_r4_differs_only_by_the_fields_openimis_relaxes() -> None:
    """Documents the one relaxation: R4 requires priority and insurance, openIMIS ignores them."""
    with pytest.raises(ValidationError) as info:
        Claim.model_validate(render_claim(draft()))
    assert sorted(str(e["loc"][0]) for e in info.value.errors()) == ["insurance", "priority"]
