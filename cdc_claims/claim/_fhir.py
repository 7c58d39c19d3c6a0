"""FHIR plumbing shared by the Claim renderer and the audit Bundle: constants, numbers, validation.

Which FHIR models, and why
--------------------------
``fhir.resources`` 8 defaults to R5; its R4-family models live in ``fhir.resources.R4B``
(there is no ``fhir.resources.R4`` package in 8.x, only ``R4B`` and ``STU3``). openIMIS
``api_fhir_r4`` speaks R4. For every element this package emits (Claim, Bundle, Patient,
Encounter, Condition, Procedure, Coverage, Practitioner, Location) R4B is structurally identical to
R4, so the R4B models are the validator.

One deliberate relaxation: FHIR R4 makes ``Claim.priority`` (1..1) and ``Claim.insurance`` (1..*)
mandatory, but openIMIS ignores both (CONTRACT.md §4.1; its own ``ClaimV2`` model relaxes them)
and the contract's minimal valid Claim omits them. :class:`OpenImisClaim` is the R4B Claim with just
those two fields made optional, i.e. the openIMIS profile of Claim. Everything else stays strict
(unknown keys, required ``productOrService``, types, codes).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import fhirtypes
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.claim import Claim
from pydantic import Field, ValidationError

from cdc_claims.errors import ClaimRenderError

IG = "https://openimis.github.io/openimis_fhir_r4_ig/"
IDENTIFIER_SYSTEM = IG + "CodeSystem/openimis-identifiers"
VISIT_TYPE_SYSTEM = IG + "CodeSystem/claim-visit-type"
DIAGNOSIS_SYSTEM = IG + "CodeSystem/diagnosis-ICD10-level1"
ITEM_REFERENCE_URL = IG + "StructureDefinition/claim-item-reference"
#: FHIR R4 ``Claim.related.relationship`` (``prior``: a claim this one replaces; ``associated``:
#: a claim this one adds to) and openIMIS's supportingInfo categories
RELATED_CLAIM_SYSTEM = "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship"
SUPPORTING_INFO_SYSTEM = IG + "CodeSystem/claim-supporting-info-category"

#: openIMIS identifier type codes. The claim code MUST be typed ``Code`` (CONTRACT pitfall 1:
#: a configuration bug makes ``MR`` unusable in api_fhir_r4 1.7-1.10); ``SB`` is the CHF id.
CLAIM_CODE_TYPE = "Code"
CLAIM_CODE_ALIAS_TYPE = "MR"
CHF_ID_TYPE = "SB"

#: Item kind -> FHIR resource type of the claim-item-reference (CONTRACT §4.2).
REFERENCE_TYPE = {"item": "Medication", "service": "ActivityDefinition"}

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class OpenImisClaim(Claim):
    """R4B ``Claim`` as openIMIS profiles it: ``priority`` and ``insurance`` optional."""

    insurance: list[fhirtypes.ClaimInsuranceType] | None = Field(  # type: ignore[assignment]
        default=None, alias="insurance", json_schema_extra={"element_property": True}
    )
    priority: fhirtypes.CodeableConceptType | None = Field(  # type: ignore[assignment]
        default=None, alias="priority", json_schema_extra={"element_property": True}
    )


def validate_claim(claim: dict[str, Any]) -> Any:
    """Validate a Claim dict against :class:`OpenImisClaim`; return the model instance."""
    if claim.get("resourceType") != "Claim":
        raise ClaimRenderError(f"not a Claim: resourceType={claim.get('resourceType')!r}")
    if "contained" in claim:
        # contained resources are upserted into openIMIS master data (CONTRACT pitfall 13)
        raise ClaimRenderError("a Claim for openIMIS must not carry contained resources")
    try:
        return OpenImisClaim.model_validate(claim)
    except ValidationError as exc:
        raise ClaimRenderError(f"invalid FHIR Claim: {exc}") from exc


def validate_bundle(bundle: dict[str, Any], claim_model: Any) -> None:
    """Validate a Bundle whose Claim entry is replaced by the already validated ``claim_model``.

    ``Bundle`` dispatches each entry on ``resourceType`` to the strict R4B model, which would
    reject the openIMIS-profiled Claim; handing it the validated instance instead keeps every
    other entry fully checked.
    """
    shell = dict(bundle)
    shell["entry"] = [
        {**entry, "resource": claim_model} if entry["resource"].get("resourceType") == "Claim" else entry
        for entry in bundle.get("entry", [])
    ]
    try:
        Bundle.model_validate(shell)
    except ValidationError as exc:
        raise ClaimRenderError(f"invalid FHIR Bundle: {exc}") from exc


def number(value: Decimal) -> int | float:
    """A Decimal as a JSON number: an int when integral (quantities), else a float (prices).

    openIMIS stores money as ``decimal(18,2)``; a float carries such values exactly enough
    to round-trip. Non-finite values are rejected rather than written as ``NaN``.
    """
    if not value.is_finite():
        raise ClaimRenderError(f"non-finite number {value}")
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def money(value: Decimal, currency: str | None) -> dict[str, Any]:
    """A FHIR Money; the currency is omitted unless configured (openIMIS ignores it)."""
    if not value.is_finite():
        raise ClaimRenderError(f"non-finite amount {value}")
    out: dict[str, Any] = {"value": float(value)}
    if currency:
        out["currency"] = currency
    return out


def is_fhir_id(value: str) -> bool:
    return bool(_FHIR_ID.match(value))


def reference(resource_type: str, ref: str) -> dict[str, str]:
    """``{"reference": "Type/ref"}``; ``ref`` is an openIMIS uuid or business code."""
    if not ref or ref != ref.strip() or "/" in ref or any(ch.isspace() for ch in ref):
        raise ClaimRenderError(f"invalid {resource_type} reference {ref!r}")
    return {"reference": f"{resource_type}/{ref}"}


def drop_none(obj: Any) -> Any:
    """Remove ``None``, empty strings and empty containers, recursively.

    FHIR forbids empty elements (``""``, ``{}``, ``[]``); OpenMRS data can have blank names.
    """
    if isinstance(obj, dict):
        cleaned = {k: drop_none(v) for k, v in obj.items() if v is not None}
        return {k: v for k, v in cleaned.items() if v not in ({}, [], "")}
    if isinstance(obj, list):
        cleaned_items = [drop_none(v) for v in obj if v is not None]
        return [v for v in cleaned_items if v not in ({}, [], "")]
    return obj
