"""Render a :class:`~cdc_claims.assemble.model.ClaimDraft` as the FHIR R4 Claim openIMIS accepts.

The shape follows ``/work/shared/openimis/CONTRACT.md`` §4 field by field, including the parts
that are openIMIS quirks rather than FHIR:

* the claim code is an identifier typed ``Code`` (first), repeated as ``MR`` for FHIR readers
  (pitfall 1: an ``MR``-only claim is refused by api_fhir_r4 1.7-1.10);
* the item kind is ``item.category.text`` and the medical item/service is the
  ``claim-item-reference`` extension, which must be ``extension[0]`` (pitfall 2);
  ``productOrService`` only carries the code as text, because FHIR requires it;
* ``unitPrice`` is always sent (pitfall 3) and ``total`` is the non-zero sum, which openIMIS
  recomputes anyway;
* at most 5 diagnoses, primary first, because openIMIS zips ``diagnosis[0..4]`` in array order
  into ``icd, icd_1..icd_4`` and ignores ``sequence`` (pitfall 11);
* no ``contained`` resources: openIMIS would upsert them into its master data (pitfall 13);
* documents go as ``supportingInfo`` of category ``attachment`` with ``valueAttachment``
  ``{contentType, data, title, creation}`` and **no** ``hash``: openIMIS 1.10 answers any hash
  with a 500 (``'bytes' object has no attribute 'encode'``), verified on the sandbox.

The output is validated with ``fhir.resources`` (R4B, see :mod:`cdc_claims.claim._fhir`) and
returned as a plain JSON-able dict: the submitter posts it as is and the audit topic stores it
verbatim, so both see exactly the same bytes' worth of data.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from cdc_claims.assemble.model import ClaimAttachment, ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.claim._fhir import (
    CLAIM_CODE_ALIAS_TYPE,
    CLAIM_CODE_TYPE,
    DIAGNOSIS_SYSTEM,
    IDENTIFIER_SYSTEM,
    ITEM_REFERENCE_URL,
    REFERENCE_TYPE,
    RELATED_CLAIM_SYSTEM,
    SUPPORTING_INFO_SYSTEM,
    VISIT_TYPE_SYSTEM,
    money,
    number,
    reference,
    validate_claim,
)
from cdc_claims.errors import ClaimRenderError

#: openIMIS has five ICD slots on a claim (``icd``, ``icd_1`` .. ``icd_4``).
MAX_DIAGNOSES = 5
#: ``tblClaim.ClaimCode`` is ``varchar(50)``.
MAX_CLAIM_CODE = 50
VISIT_TYPES = frozenset({"E", "R", "O"})


def claim_diagnoses(draft: ClaimDraft) -> tuple[ClaimDiagnosis, ...]:
    """The diagnoses the Claim carries, in the order openIMIS stores them.

    Primary diagnoses first (stable, so the mapping's order decides between several
    primaries), then the others; the same ICD code only once (two OpenMRS concepts can map to
    one openIMIS code, and a repeated code would waste one of the five slots); cut at five,
    because openIMIS silently ignores the rest. The audit Bundle uses the same selection so
    that it records what was really claimed.
    """
    ordered = sorted(draft.diagnoses, key=lambda d: not d.primary)
    seen: set[str] = set()
    out: list[ClaimDiagnosis] = []
    for diagnosis in ordered:
        if diagnosis.icd10 in seen:
            continue
        seen.add(diagnosis.icd10)
        out.append(diagnosis)
    return tuple(out[:MAX_DIAGNOSES])


def render_claim(draft: ClaimDraft, *, currency: str | None = None, files: Sequence[bytes] = ()) -> dict[str, Any]:
    """The FHIR Claim for ``draft``, validated, as a JSON-able dict (see :func:`render_validated_claim`)."""
    return render_validated_claim(draft, currency=currency, files=files)[0]


def render_validated_claim(
    draft: ClaimDraft, *, currency: str | None = None, files: Sequence[bytes] = ()
) -> tuple[dict[str, Any], Any]:
    """The FHIR Claim for ``draft``, validated, as a JSON-able dict.

    ``files`` are the contents of ``draft.attachments``, in order (read by the renderer's
    document store); a draft with attachments and no files is a programming error.

    ``currency`` is optional because openIMIS ignores it; when given it is put on every
    ``unitPrice`` and on ``total`` alike, so the Claim never mixes currencies.

    Raises :class:`~cdc_claims.errors.ClaimRenderError` for a draft
    openIMIS would refuse or misread (no diagnosis, no line, zero total, bad visit type, over-long
    code, duplicate sequences, ...) or whose rendering is not valid FHIR.
    """
    _check_draft(draft)
    diagnoses = claim_diagnoses(draft)
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "status": "active",
        "use": "claim",
        "created": draft.created.isoformat(),
        "identifier": [_identifier(CLAIM_CODE_TYPE, draft.code), _identifier(CLAIM_CODE_ALIAS_TYPE, draft.code)],
        "type": {"coding": [{"system": VISIT_TYPE_SYSTEM, "code": draft.visit_type}]},
        "patient": reference("Patient", draft.insuree),
        "provider": reference("Organization", draft.facility),
        "enterer": reference("Practitioner", draft.enterer),
        "billablePeriod": {"start": draft.period_start.isoformat(), "end": draft.period_end.isoformat()},
        "diagnosis": [
            {
                "sequence": index,
                "diagnosisCodeableConcept": {"coding": [{"system": DIAGNOSIS_SYSTEM, "code": diagnosis.icd10}]},
            }
            for index, diagnosis in enumerate(diagnoses, start=1)
        ],
        "total": money(draft.total, currency),
        "item": [_item(line, currency) for line in draft.lines],
    }
    if draft.related_code:
        # openIMIS 1.10 ignores Claim.related (docs/corrections.md); it is sent for the audit
        # trail and for payers that read it. The explanation is what openIMIS's reviewer sees.
        claim["related"] = [
            {
                "claim": {"identifier": _identifier(CLAIM_CODE_TYPE, draft.related_code)},
                "relationship": {"coding": [{"system": RELATED_CLAIM_SYSTEM, "code": draft.relationship or "prior"}]},
            }
        ]
    if len(files) != len(draft.attachments):
        raise ClaimRenderError(
            f"claim {draft.code!r}: {len(draft.attachments)} attachment(s) but {len(files)} file(s) read"
        )
    supporting: list[dict[str, Any]] = []
    if draft.explanation:
        supporting.append(
            {
                "category": {"coding": [{"system": SUPPORTING_INFO_SYSTEM, "code": "explanation"}]},
                "valueString": draft.explanation,
            }
        )
    supporting += [_attachment(attachment, data) for attachment, data in zip(draft.attachments, files, strict=True)]
    if supporting:
        claim["supportingInfo"] = [{"sequence": i, **info} for i, info in enumerate(supporting, start=1)]
    return claim, validate_claim(claim)


def _attachment(attachment: ClaimAttachment, data: bytes) -> dict[str, Any]:
    return {
        "category": {"coding": [{"system": SUPPORTING_INFO_SYSTEM, "code": "attachment"}]},
        "valueAttachment": {
            "contentType": attachment.content_type,
            "data": base64.b64encode(data).decode("ascii"),
            "title": attachment.title,
            "creation": attachment.creation.isoformat(),
        },
    }


def without_attachment_data(claim: dict[str, Any]) -> dict[str, Any]:
    """``claim`` as the audit trail keeps it: each attachment's ``data`` replaced by its ``size``
    and SHA-1 ``hash`` (FHIR's own fields), so the audit topic records which document went
    with the claim without holding a copy of it. ``claim`` itself is not changed."""
    infos = claim.get("supportingInfo")
    if not infos or not any("valueAttachment" in info for info in infos):
        return claim
    slim: list[dict[str, Any]] = []
    for info in infos:
        value = info.get("valueAttachment")
        if isinstance(value, dict) and "data" in value:
            raw = base64.b64decode(value["data"])
            kept = {k: v for k, v in value.items() if k != "data"}
            # FHIR Attachment.hash is SHA-1 by definition: an identity, not a security measure
            digest = hashlib.sha1(raw, usedforsecurity=False).digest()
            kept |= {"size": len(raw), "hash": base64.b64encode(digest).decode("ascii")}
            slim.append({**info, "valueAttachment": kept})
        else:
            slim.append(info)
    return {**claim, "supportingInfo": slim}


def _identifier(type_code: str, value: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": IDENTIFIER_SYSTEM, "code": type_code}]}, "value": value}


def _item(line: ClaimLine, currency: str | None) -> dict[str, Any]:
    # "extension" is deliberately the first key and the only extension: openIMIS reads
    # extension[0] and nothing else to find the medical item or service.
    return {
        "extension": [
            {"url": ITEM_REFERENCE_URL, "valueReference": reference(REFERENCE_TYPE[line.category], line.reference)}
        ],
        "sequence": line.sequence,
        "category": {"text": line.category},
        "productOrService": {"text": line.code},
        "quantity": {"value": number(line.quantity)},
        "unitPrice": money(line.unit_price, currency),
    }


def _check_draft(draft: ClaimDraft) -> None:
    """Business rules FHIR validation cannot know, each from an observed openIMIS refusal."""
    problems: list[str] = []
    if not draft.code or draft.code != draft.code.strip() or len(draft.code) > MAX_CLAIM_CODE:
        problems.append(f"claim code {draft.code!r} must be 1-{MAX_CLAIM_CODE} characters without outer spaces")
    if draft.visit_type not in VISIT_TYPES:
        problems.append(f"visit type {draft.visit_type!r} is not one of E/R/O")
    if draft.period_end < draft.period_start:
        problems.append(f"billable period ends ({draft.period_end}) before it starts ({draft.period_start})")
    if not draft.diagnoses:
        problems.append("no diagnosis (openIMIS needs at least one ICD code)")
    problems += [f"diagnosis of concept {d.concept_id} has no ICD code" for d in draft.diagnoses if not d.icd10.strip()]
    if not draft.lines:
        problems.append("no line")
    sequences = [line.sequence for line in draft.lines]
    if len(set(sequences)) != len(sequences) or any(s < 1 for s in sequences):
        problems.append(f"line sequences must be distinct positive integers, got {sequences}")
    for line in draft.lines:
        where = f"line {line.sequence} ({line.code!r})"
        if line.category not in REFERENCE_TYPE:
            problems.append(f"{where}: category {line.category!r} is not item/service")
        if not line.code.strip():
            problems.append(f"{where}: empty openIMIS code")
        if not line.quantity.is_finite() or line.quantity <= 0:
            problems.append(f"{where}: quantity {line.quantity} must be positive")
        if not line.unit_price.is_finite() or line.unit_price < 0:
            problems.append(f"{where}: unit price {line.unit_price} must not be negative")
    if not problems and draft.total <= Decimal(0):
        problems.append("total is zero (openIMIS refuses a claim without a non-zero total)")
    if problems:
        raise ClaimRenderError(f"claim {draft.code!r} cannot be rendered: " + "; ".join(problems))
