"""render_audit_bundle: a valid FHIR collection that explains a Claim without naming anyone."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cdc_claims.assemble.model import (
    BillableLine,
    ClaimContext,
    ClaimDiagnosis,
    ClaimDraft,
    ClaimLine,
    Diagnosis,
    Encounter,
    Location,
    Patient,
    Provider,
    Visit,
)
from cdc_claims.claim import ClaimRenderError, FhirRenderer, render_audit_bundle, render_claim

PATIENT_UUID = "0f5c0b2a-1a2b-4c3d-8e9f-000000000001"
VISIT_UUID = "0f5c0b2a-1a2b-4c3d-8e9f-000000000002"
ENC1, ENC2 = "0f5c0b2a-1a2b-4c3d-8e9f-0000000000e1", "0f5c0b2a-1a2b-4c3d-8e9f-0000000000e2"
PROV1, PROV2 = "0f5c0b2a-1a2b-4c3d-8e9f-0000000000a1", "0f5c0b2a-1a2b-4c3d-8e9f-0000000000b2"
OPD = Location(
    3, "0f5c0b2a-1a2b-4c3d-8e9f-00000000010c", "OPD-1", visit_location_uuid="0f5c0b2a-0000-4c3d-8e9f-0000000001a0"
)
LAB = Location(4, "0f5c0b2a-1a2b-4c3d-8e9f-00000000010d", "Laboratory")
DIAG_PRIMARY = "0f5c0b2a-1a2b-4c3d-8e9f-0000000000d1"
DIAG_SECOND = "0f5c0b2a-1a2b-4c3d-8e9f-0000000000d2"
PROC_OBS = "0f5c0b2a-1a2b-4c3d-8e9f-0000000000f1"
T0 = datetime(2026, 11, 20, 9, 30)  # naive, as OpenMRS DATETIME columns are
INSURANCE_NO = "070707081"


def context() -> ClaimContext:
    enc1 = Encounter(11, ENC1, "enc-type-consult", "Consultation", T0, False, OPD, (Provider(21, PROV1),))
    enc2 = Encounter(
        12,
        ENC2,
        "enc-type-proc",
        "Procedure",
        T0 + timedelta(hours=1),
        False,
        LAB,
        (Provider(21, PROV1), Provider(22, PROV2)),
    )
    return ClaimContext(
        unit_kind="visit",
        unit_uuid=VISIT_UUID,
        patient=Patient(7, PATIENT_UUID, "F", date(1990, 5, 1), INSURANCE_NO),
        visit=Visit(5, VISIT_UUID, "visit-type-opd", "OPD", T0, T0 + timedelta(hours=3), False, OPD),
        encounters=(enc1, enc2),
        diagnoses=(
            Diagnosis("obs", DIAG_SECOND, ENC1, 601, "concept-a000", "A000", "PROVISIONAL", False, T0),
            Diagnosis("obs", DIAG_PRIMARY, ENC1, 600, "concept-a09", "A09", "CONFIRMED", True, T0),
        ),
        lines=(
            BillableLine("drug", "order-0001", ENC1, 700, "concept-aspirin", Decimal(2), T0, drug_uuid="drug-1"),
            BillableLine("consultation", "derived-a1", ENC1, 701, "concept-consult", Decimal(1), T0),
            BillableLine("procedure_obs", PROC_OBS, ENC2, 702, "concept-suture", Decimal(1), T0 + timedelta(hours=1)),
        ),
        read_at=datetime(2026, 11, 20, 14, 0, tzinfo=UTC),
    )


def claim_draft() -> ClaimDraft:
    def line(seq: int, cat: str, code: str, qty: str, price: str, src: str, concept: int, kind: str) -> ClaimLine:
        return ClaimLine(seq, cat, code, code, Decimal(qty), Decimal(price), src, concept, kind)  # type: ignore[arg-type]

    return ClaimDraft(
        code="BAHMNI-V-0001",
        unit_kind="visit",
        unit_uuid=VISIT_UUID,
        visit_uuid=VISIT_UUID,
        encounter_uuids=(ENC1, ENC2),
        patient_uuid=PATIENT_UUID,
        patient_id=7,
        insuree="7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73",
        facility="RAHOS001",
        facility_code="RAHOS001",
        enterer="RHOS0011",
        visit_type="O",
        period_start=date(2026, 11, 20),
        period_end=date(2026, 11, 20),
        created=date(2026, 11, 20),
        diagnoses=(ClaimDiagnosis("A000", 601, False), ClaimDiagnosis("A09", 600, True)),
        lines=(
            line(1, "item", "0001", "2", "10", "order-0001", 700, "drug"),
            line(2, "service", "A1", "1", "400", "derived-a1", 701, "consultation"),
            line(3, "service", "M1", "1", "1500", PROC_OBS, 702, "procedure_obs"),
        ),
        content_hash="abc123",
    )


def build(**kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    d = claim_draft()
    claim = render_claim(d)
    return render_audit_bundle(context(), d, claim, **kwargs), claim


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_is_a_collection_with_every_resource() -> None:
    bundle, _ = build()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    assert bundle["identifier"]["value"] == "BAHMNI-V-0001"
    counts = Counter(e["resource"]["resourceType"] for e in bundle["entry"])
    assert counts == {
        "Claim": 1,
        "Patient": 1,
        "Coverage": 1,
        "Encounter": 3,  # the visit + two encounters
        "Condition": 2,
        "Procedure": 1,
        "Practitioner": 2,
        "Location": 2,
    }


def test_every_entry_validates_with_fhir_resources() -> None:
    bundle, _ = build()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Claim":
            continue  # openIMIS-profiled Claim: covered in test_claim_fhir_claim
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert json.loads(json.dumps(bundle)) == bundle


def test_claim_is_recorded_exactly_as_sent() -> None:
    bundle, claim = build()
    (recorded,) = resources(bundle, "Claim")
    assert recorded == claim
    assert recorded == render_claim(claim_draft())


def test_no_person_names_anywhere() -> None:
    bundle, _ = build()
    for kind in ("Patient", "Practitioner", "Coverage", "Encounter", "Condition", "Procedure"):
        for resource in resources(bundle, kind):
            assert not {"name", "address", "telecom", "contact", "photo"} & set(resource), resource
    # names can only be facility names on Location resources
    text = json.dumps([e for e in bundle["entry"] if e["resource"]["resourceType"] != "Location"])
    assert '"name"' not in text


def test_patient_and_coverage_carry_the_insurance_number() -> None:
    bundle, _ = build()
    (patient,) = resources(bundle, "Patient")
    assert patient["id"] == PATIENT_UUID
    assert {i["type"]["coding"][0]["code"]: i["value"] for i in patient["identifier"]} == {
        "SB": INSURANCE_NO,
        "UUID": "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73",  # the openIMIS insuree the Claim points at
    }
    assert (patient["gender"], patient["birthDate"]) == ("female", "1990-05-01")
    (coverage,) = resources(bundle, "Coverage")
    assert coverage["beneficiary"] == {"reference": f"Patient/{PATIENT_UUID}"}
    assert coverage["subscriberId"] == INSURANCE_NO
    assert coverage["payor"] == [{"display": "openIMIS"}]
    assert coverage["status"] == "active"


def test_encounters_visit_practitioners_locations() -> None:
    bundle, _ = build()
    by_id = {e["id"]: e for e in resources(bundle, "Encounter")}
    assert set(by_id) == {VISIT_UUID, ENC1, ENC2}
    assert by_id[VISIT_UUID]["status"] == "finished"
    assert by_id[VISIT_UUID]["period"] == {"start": "2026-11-20T09:30:00+00:00", "end": "2026-11-20T12:30:00+00:00"}
    assert by_id[ENC1]["partOf"] == {"reference": f"Encounter/{VISIT_UUID}"}
    assert [p["individual"]["reference"] for p in by_id[ENC2]["participant"]] == [
        f"Practitioner/{PROV1}",
        f"Practitioner/{PROV2}",
    ]
    assert by_id[ENC2]["location"] == [{"location": {"reference": f"Location/{LAB.uuid}"}}]
    assert [p["id"] for p in resources(bundle, "Practitioner")] == [PROV1, PROV2]
    locations = {loc["id"]: loc for loc in resources(bundle, "Location")}
    assert set(locations) == {OPD.uuid, LAB.uuid}
    assert locations[OPD.uuid]["partOf"] == {"reference": f"Location/{OPD.visit_location_uuid}"}


def test_one_condition_per_claimed_diagnosis_primary_first() -> None:
    bundle, _ = build()
    conditions = resources(bundle, "Condition")
    assert [c["id"] for c in conditions] == [DIAG_PRIMARY, DIAG_SECOND]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == ["A09", "A000"]
    assert [c["verificationStatus"]["coding"][0]["code"] for c in conditions] == ["confirmed", "provisional"]
    assert {c["encounter"]["reference"] for c in conditions} == {f"Encounter/{ENC1}"}
    assert {c["subject"]["reference"] for c in conditions} == {f"Patient/{PATIENT_UUID}"}


def test_procedures_only_for_procedure_lines() -> None:
    bundle, _ = build()
    (procedure,) = resources(bundle, "Procedure")
    assert procedure["id"] == PROC_OBS
    assert procedure["code"] == {"coding": [{"code": "concept-suture"}], "text": "M1"}
    assert procedure["encounter"] == {"reference": f"Encounter/{ENC2}"}
    assert procedure["performedDateTime"] == "2026-11-20T10:30:00+00:00"


def test_naive_openmrs_times_are_read_in_the_source_timezone() -> None:
    bundle, _ = build(source_tz=timezone(timedelta(hours=3)))
    visit = next(e for e in resources(bundle, "Encounter") if e["id"] == VISIT_UUID)
    assert visit["period"]["start"] == "2026-11-20T09:30:00+03:00"
    assert bundle["timestamp"] == "2026-11-20T14:00:00+00:00"  # aware values are kept


def test_bundle_is_deterministic() -> None:
    first, _ = build()
    second, _ = build()
    assert first == second
    assert first["id"] == second["id"]


def test_mismatched_inputs_are_refused() -> None:
    d = claim_draft()
    claim = render_claim(d)
    other = render_claim(dataclasses.replace(d, code="OTHER-1"))
    with pytest.raises(ClaimRenderError, match="not the draft code"):
        render_audit_bundle(context(), d, other)
    with pytest.raises(ClaimRenderError, match="not the draft patient"):
        render_audit_bundle(context(), dataclasses.replace(d, patient_uuid="someone-else"), claim)
    with pytest.raises(ClaimRenderError, match="not the draft unit"):
        render_audit_bundle(context(), dataclasses.replace(d, unit_uuid="other-visit"), claim)
    broken = copy.deepcopy(claim)
    broken["item"][0].pop("unitPrice")
    broken["item"][0]["quantity"] = {"value": "many"}
    with pytest.raises(ClaimRenderError, match="invalid FHIR Claim"):
        render_audit_bundle(context(), d, broken)


def test_invalid_non_claim_resource_is_refused() -> None:
    """The Bundle itself is validated: a provider id FHIR cannot carry is caught before Kafka."""
    ctx = context()
    bad = dataclasses.replace(ctx.encounters[0], providers=(Provider(23, "not a fhir id"),))
    d = claim_draft()
    with pytest.raises(ClaimRenderError, match="invalid FHIR Bundle"):
        render_audit_bundle(dataclasses.replace(ctx, encounters=(bad, ctx.encounters[1])), d, render_claim(d))


def test_empty_strings_are_dropped_not_emitted() -> None:
    ctx = context()
    d = claim_draft()
    blank = dataclasses.replace(ctx, visit=dataclasses.replace(ctx.visit, type_name=""))
    bundle = render_audit_bundle(blank, d, render_claim(d))
    visit = next(e for e in resources(bundle, "Encounter") if e["id"] == VISIT_UUID)
    assert visit["type"] == [{"coding": [{"code": "visit-type-opd"}]}]


def test_the_renderer_reuses_the_validated_claim_and_still_validates_one_it_did_not_render() -> None:
    renderer = FhirRenderer()
    ctx, draft = context(), claim_draft()
    claim = renderer.claim(draft)
    assert renderer.audit_bundle(ctx, draft, claim) == render_audit_bundle(ctx, draft, render_claim(draft))
    foreign = copy.deepcopy(claim)
    foreign["item"][0]["quantity"] = {"value": "many"}  # not a FHIR Quantity
    with pytest.raises(ClaimRenderError):
        renderer.audit_bundle(ctx, draft, foreign)
