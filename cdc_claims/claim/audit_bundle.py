"""The audit record of one submission: a FHIR ``Bundle`` (``collection``) published to Kafka.

Why a Bundle: the Claim alone says *what* was asked of openIMIS, with openIMIS references
(insuree, health facility, claim admin, item/service uuids or codes). Auditors and billing staff
also need *why*: which OpenMRS patient, visit, encounters, diagnoses, procedures, providers and
locations the claim was built from. The Bundle carries the Claim **verbatim** (exactly what was
POSTed) next to the OpenMRS-side resources, each with its OpenMRS uuid as ``id``. References
inside the Claim point at openIMIS; references inside the other resources point at the OpenMRS
resources of the Bundle. It is never sent to openIMIS.

Privacy: the audit topic is protected, so the insurance number may appear (Patient identifier,
Coverage ``subscriberId``), but no person name does: :class:`~cdc_claims.assemble.model.Patient`
and ``Provider`` have no name fields, and this module adds no name, address or telecom to Patient
or Practitioner. Location names are facility names, not personal data.

Time: OpenMRS stores naive local ``DATETIME`` values, while FHIR requires a timezone on every
``dateTime`` that has a time part. Naive values are read in ``source_tz`` (the OpenMRS server's
zone, which only the caller knows; UTC by default). Aware values are kept as they are.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, tzinfo
from typing import Any

from cdc_claims.assemble.model import ClaimContext, ClaimDiagnosis, ClaimDraft, Diagnosis, Encounter, Location
from cdc_claims.claim._fhir import (
    CHF_ID_TYPE,
    CLAIM_CODE_TYPE,
    DIAGNOSIS_SYSTEM,
    IDENTIFIER_SYSTEM,
    drop_none,
    is_fhir_id,
    validate_bundle,
    validate_claim,
)
from cdc_claims.claim.fhir_claim import claim_diagnoses
from cdc_claims.errors import ClaimRenderError

#: Namespace of the deterministic ids given to resources OpenMRS has no uuid for (Bundle,
#: Coverage, synthetic lines): the same submission always yields the same audit ids.
AUDIT_NAMESPACE = uuid.UUID("5b7e1c0e-3c1f-5d55-9a41-4f1c2f0d6a11")

_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}
PROCEDURE_KINDS = frozenset({"procedure", "procedure_obs"})


def render_audit_bundle(
    ctx: ClaimContext,
    draft: ClaimDraft,
    claim: dict[str, Any],
    *,
    source_tz: tzinfo = UTC,
    claim_model: Any = None,
) -> dict[str, Any]:
    """The audit Bundle for ``claim`` (the output of :func:`render_claim` for ``draft``).

    ``claim_model``: ``claim`` as already validated (:func:`render_validated_claim`), so it is
    not validated twice per claim (about 4 % of the consumer's CPU).

    Raises :class:`~cdc_claims.claim._fhir.ClaimRenderError` when ``ctx``, ``draft`` and
    ``claim`` do not describe the same submission, or when the Bundle is not valid FHIR.
    """
    _check_same_submission(ctx, draft, claim)
    if claim_model is None:
        claim_model = validate_claim(claim)
    tz = _Clock(source_tz)
    patient_ref = f"Patient/{ctx.patient.uuid}"
    resources: list[dict[str, Any]] = [
        claim,
        _patient(ctx, draft),
        _coverage(ctx, draft, patient_ref),
        _visit(ctx, patient_ref, tz),
        *(_encounter(ctx, enc, patient_ref, tz) for enc in ctx.encounters),
        *(_condition(ctx, d, patient_ref, tz) for d in claim_diagnoses(draft)),
        *_procedures(ctx, draft, patient_ref, tz),
        *_practitioners(ctx),
        *_locations(ctx),
    ]
    bundle: dict[str, Any] = drop_none(
        {
            "resourceType": "Bundle",
            "id": str(uuid.uuid5(AUDIT_NAMESPACE, f"bundle|{draft.code}|{draft.content_hash}")),
            "identifier": {
                "type": {"coding": [{"system": IDENTIFIER_SYSTEM, "code": CLAIM_CODE_TYPE}]},
                "value": draft.code,
            },
            "type": "collection",
            "timestamp": tz.instant(ctx.read_at) if ctx.read_at else None,
        }
    )
    # drop_none is applied per resource, never to the Claim: it is recorded exactly as sent.
    bundle["entry"] = [{"resource": r if r is claim else drop_none(r)} for r in resources]
    validate_bundle(bundle, claim_model)
    return bundle


class _Clock:
    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz

    def instant(self, value: datetime) -> str:
        return (value if value.tzinfo else value.replace(tzinfo=self.tz)).isoformat()


def _check_same_submission(ctx: ClaimContext, draft: ClaimDraft, claim: dict[str, Any]) -> None:
    codes = [
        i.get("value")
        for i in claim.get("identifier", [])
        if any(c.get("code") == CLAIM_CODE_TYPE for c in i.get("type", {}).get("coding", []))
    ]
    problems = []
    if codes[:1] != [draft.code]:
        problems.append(f"claim identifier {codes[:1]} is not the draft code {draft.code!r}")
    if ctx.unit_uuid != draft.unit_uuid:
        problems.append(f"context unit {ctx.unit_uuid} is not the draft unit {draft.unit_uuid}")
    if ctx.patient.uuid != draft.patient_uuid:
        problems.append(f"context patient {ctx.patient.uuid} is not the draft patient {draft.patient_uuid}")
    if not ctx.encounters:
        problems.append("context has no encounter")
    if problems:
        raise ClaimRenderError("audit bundle: " + "; ".join(problems))


def _fhir_id(value: str, kind: str) -> str:
    """``value`` when it is a valid FHIR id (OpenMRS uuids are), else a stable uuid5 of it."""
    return value if is_fhir_id(value) else str(uuid.uuid5(AUDIT_NAMESPACE, f"{kind}|{value}"))


def _typed_identifier(type_code: str, value: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": IDENTIFIER_SYSTEM, "code": type_code}]}, "value": value}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _patient(ctx: ClaimContext, draft: ClaimDraft) -> dict[str, Any]:
    """Identifiers, gender and birth date only: never a name, address or telecom."""
    identifiers = []
    if ctx.patient.insurance_number:
        identifiers.append(_typed_identifier(CHF_ID_TYPE, ctx.patient.insurance_number))
    if draft.insuree != ctx.patient.insurance_number and _is_uuid(draft.insuree):
        identifiers.append(_typed_identifier("UUID", draft.insuree))  # the openIMIS insuree uuid
    return {
        "resourceType": "Patient",
        "id": ctx.patient.uuid,
        "identifier": identifiers,
        "gender": _GENDER.get((ctx.patient.gender or "").upper()),
        "birthDate": ctx.patient.birthdate.isoformat() if ctx.patient.birthdate else None,
    }


def _coverage(ctx: ClaimContext, draft: ClaimDraft, patient_ref: str) -> dict[str, Any]:
    number = ctx.patient.insurance_number
    return {
        "resourceType": "Coverage",
        "id": str(uuid.uuid5(AUDIT_NAMESPACE, f"coverage|{ctx.patient.uuid}|{number or draft.insuree}")),
        "identifier": [_typed_identifier(CHF_ID_TYPE, number)] if number else None,
        "status": "active",
        "subscriberId": number,
        "beneficiary": {"reference": patient_ref},
        "payor": [{"display": "openIMIS"}],
    }


def _status(voided: bool, finished: bool) -> str:
    if voided:
        return "entered-in-error"
    return "finished" if finished else "in-progress"


def _location_ref(location: Location | None) -> list[dict[str, Any]] | None:
    return [{"location": {"reference": f"Location/{location.uuid}"}}] if location else None


def _visit(ctx: ClaimContext, patient_ref: str, clock: _Clock) -> dict[str, Any]:
    """The visit as an Encounter, as the OpenMRS FHIR2 module maps visits; encounters are partOf it."""
    visit = ctx.visit
    return {
        "resourceType": "Encounter",
        "id": visit.uuid,
        "status": _status(visit.voided, visit.date_stopped is not None),
        "class": _encounter_class(ctx, None),
        "type": [{"coding": [{"code": visit.type_uuid, "display": visit.type_name}], "text": visit.type_name}],
        "subject": {"reference": patient_ref},
        "period": {
            "start": clock.instant(visit.date_started),
            "end": clock.instant(visit.date_stopped) if visit.date_stopped else None,
        },
        "location": _location_ref(visit.location),
    }


def _encounter_class(ctx: ClaimContext, encounter_uuid: str | None) -> dict[str, str]:
    inpatient = any(
        line.care_setting == "INPATIENT"
        for line in ctx.lines
        if encounter_uuid is None or line.encounter_uuid == encounter_uuid
    )
    code, display = ("IMP", "inpatient encounter") if inpatient else ("AMB", "ambulatory")
    return {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": code, "display": display}


def _encounter(ctx: ClaimContext, enc: Encounter, patient_ref: str, clock: _Clock) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": enc.uuid,
        "status": _status(enc.voided, True),
        "class": _encounter_class(ctx, enc.uuid),
        "type": [{"coding": [{"code": enc.type_uuid, "display": enc.type_name}], "text": enc.type_name}],
        "subject": {"reference": patient_ref},
        "participant": [{"individual": {"reference": f"Practitioner/{p.uuid}"}} for p in enc.providers],
        "period": {"start": clock.instant(enc.encounter_datetime)},
        "location": _location_ref(enc.location),
        "partOf": {"reference": f"Encounter/{ctx.visit.uuid}"},
    }


def _source_diagnosis(ctx: ClaimContext, claimed: ClaimDiagnosis) -> Diagnosis | None:
    """The OpenMRS diagnosis a claimed one came from: same concept, same ICD code preferred."""
    same_concept = [d for d in ctx.diagnoses if d.concept_id == claimed.concept_id]
    same_concept.sort(key=lambda d: (d.icd10 != claimed.icd10, d.primary != claimed.primary))
    return same_concept[0] if same_concept else None


def _condition(ctx: ClaimContext, claimed: ClaimDiagnosis, patient_ref: str, clock: _Clock) -> dict[str, Any]:
    source = _source_diagnosis(ctx, claimed)
    verification = "provisional" if source and source.certainty == "PROVISIONAL" else "confirmed"
    codings: list[dict[str, Any]] = [{"system": DIAGNOSIS_SYSTEM, "code": claimed.icd10}]
    if source and source.concept_uuid:
        codings.append({"code": source.concept_uuid})  # the OpenMRS concept (no canonical system)
    return {
        "resourceType": "Condition",
        "id": source.ref_uuid if source else str(uuid.uuid5(AUDIT_NAMESPACE, f"condition|{claimed.concept_id}")),
        "clinicalStatus": {"coding": [{"system": _TERMINOLOGY + "condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": _TERMINOLOGY + "condition-ver-status", "code": verification}]},
        "category": [
            {"coding": [{"system": _TERMINOLOGY + "condition-category", "code": "encounter-diagnosis"}]},
        ],
        "code": {"coding": codings, "text": claimed.icd10},
        "subject": {"reference": patient_ref},
        "encounter": {"reference": f"Encounter/{source.encounter_uuid}"} if source else None,
        "recordedDate": clock.instant(source.recorded) if source else None,
    }


def _procedures(ctx: ClaimContext, draft: ClaimDraft, patient_ref: str, clock: _Clock) -> list[dict[str, Any]]:
    by_source = {line.source_uuid: line for line in ctx.lines}
    out = []
    for line in draft.lines:
        if line.kind not in PROCEDURE_KINDS:
            continue
        source = by_source.get(line.source_uuid)
        out.append(
            {
                "resourceType": "Procedure",
                "id": _fhir_id(line.source_uuid, "procedure"),
                "status": "completed",
                "code": {
                    "coding": [{"code": source.concept_uuid}] if source else None,
                    "text": line.code,  # the openIMIS service code it was claimed as
                },
                "subject": {"reference": patient_ref},
                "encounter": {"reference": f"Encounter/{source.encounter_uuid}"} if source else None,
                "performedDateTime": clock.instant(source.served) if source else None,
            }
        )
    return out


def _practitioners(ctx: ClaimContext) -> list[dict[str, Any]]:
    """One id-only Practitioner per OpenMRS provider: ids link encounters, names stay out."""
    seen: dict[str, None] = {}
    for enc in ctx.encounters:
        for provider in enc.providers:
            seen.setdefault(provider.uuid, None)
    return [{"resourceType": "Practitioner", "id": uuid_} for uuid_ in seen]


def _locations(ctx: ClaimContext) -> list[dict[str, Any]]:
    found: dict[str, Location] = {}
    for location in [ctx.visit.location, *(enc.location for enc in ctx.encounters)]:
        if location is not None:
            found.setdefault(location.uuid, location)
    return [
        {
            "resourceType": "Location",
            "id": loc.uuid,
            "name": loc.name,
            "partOf": (
                {"reference": f"Location/{loc.visit_location_uuid}"}
                if loc.visit_location_uuid and loc.visit_location_uuid != loc.uuid
                else None
            ),
        }
        for loc in found.values()
    ]
