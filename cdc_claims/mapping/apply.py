"""Apply the mapping to a :class:`ClaimContext`: the openIMIS-facing :class:`ClaimDraft`, or why not.

Pure: no I/O, no clock (``created`` is passed in). The checks run in this order, and the first
that fails holds the claim with its :class:`~cdc_claims.errors.NotClaimable` reason:

1. ``voided``            the encounter (encounter mode), the visit, or every encounter of it is voided;
2. ``uninsured``         the patient has no insurance number;
3. ``unmapped_facility`` neither the encounter location nor its visit location (nor the visit's) is mapped;
4. ``no_billable_lines`` nothing billable at all (a registration or lab-result encounter);
5. ``unmapped_line``     a billable line has no openIMIS code: *every* one is listed, by kind and uuid;
6. ``no_diagnosis``      no diagnosis left with an ICD code openIMIS knows (see :mod:`~cdc_claims.assemble.selection`);
7. ``attachment_missing`` / ``attachment_unsupported``: a required document is not in the visit,
   or a document to attach is of a type openIMIS does not keep (``attachments`` in the mapping).
   Sizes are checked when the file is read (:mod:`cdc_claims.assemble.documents`).

Claim code: ``<prefix><facility code>-<unit uuid hex>`` plus ``-R<n>`` for revision n > 0, at most
50 characters; when too long, the hex part is cut from the right (deterministically).
``content_hash``: sha256 over everything that the claim says except ``created`` and the code
(the code carries the revision), so a replay of unchanged content gives the same hash, and a
revision can be compared with what was submitted before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from cdc_claims.assemble.model import (
    BillableLine,
    ClaimAttachment,
    ClaimContext,
    ClaimDraft,
    ClaimLine,
    Encounter,
    ItemCategory,
)
from cdc_claims.assemble.selection import consultation_rule, known_index, select_diagnoses
from cdc_claims.errors import NotClaimable
from cdc_claims.mapping.model import ATTACHMENT_TYPES, CLAIM_CODE_MAX, ClaimMapping, OpenImisRef, PricedRef


class CodeBook(Protocol):
    """openIMIS's catalogue as the ``reference_terms`` rule needs it (``cdc_claims.payer``)."""

    def lookup(
        self, facility_code: str, category: ItemCategory | None, code: str
    ) -> tuple[ItemCategory, PricedRef] | None:
        """The item or service ``code`` (of ``category``, or either), priced for the facility;
        None when openIMIS has no such code. Raises a retriable error when no catalogue was read."""


def build_draft(
    ctx: ClaimContext,
    mapping: ClaimMapping,
    *,
    created: date,
    revision: int,
    codebook: CodeBook | None = None,
) -> ClaimDraft:
    """The claim for ``ctx`` (see the module docstring for the hold reasons and their order).

    ``codebook`` resolves lines by the ``reference_terms`` rule (their reference term in the
    configured source is the openIMIS code); without one that rule maps nothing."""
    if revision < 0:
        raise ValueError("revision must be >= 0")
    if _voided(ctx):
        raise NotClaimable("voided", f"{ctx.unit_kind} {ctx.unit_uuid} is voided")
    if not ctx.patient.insurance_number:
        raise NotClaimable("uninsured", f"patient {ctx.patient.uuid} has no insurance number")
    if not ctx.encounters:
        raise NotClaimable("no_billable_lines", f"visit {ctx.unit_uuid} has no encounters")
    primary = ctx.primary_encounter
    facility = _facility(ctx, primary, mapping)
    if facility is None:
        loc = primary.location
        where = f"location {loc.uuid} (visit location {loc.visit_location_uuid})" if loc else "no location"
        raise NotClaimable("unmapped_facility", f"encounter {primary.uuid}: {where} has no openIMIS facility")
    if not ctx.lines:
        raise NotClaimable("no_billable_lines", f"{ctx.unit_kind} {ctx.unit_uuid} has nothing billable")
    lines = _lines(ctx, mapping, facility.code, codebook)
    known = known_index(mapping.known_icd_codes) if mapping.known_icd_codes is not None else None
    selection = select_diagnoses(
        ctx.diagnoses,
        mapping.diagnoses,
        strip_dots=mapping.icd10.strip_dots,
        known=known,
        overrides=mapping.icd10.overrides,
    )
    if not selection.chosen:
        dropped = "; ".join(f"{d.ref_uuid} ({d.why})" for d in selection.dropped) or "none recorded"
        raise NotClaimable("no_diagnosis", f"{ctx.unit_kind} {ctx.unit_uuid}: diagnoses: {dropped}")

    attachments = _attachments(ctx, mapping)
    admin = _claim_admin(primary, mapping)
    insurance_number = ctx.patient.insurance_number
    start, end = _period(ctx, primary)
    draft = ClaimDraft(
        code=claim_code(mapping.claim_code.prefix, facility.code, ctx.unit_uuid, revision),
        unit_kind=ctx.unit_kind,
        unit_uuid=ctx.unit_uuid,
        visit_uuid=ctx.visit.uuid,
        encounter_uuids=tuple(e.uuid for e in ctx.encounters if not e.voided),
        patient_uuid=ctx.patient.uuid,
        patient_id=ctx.patient.patient_id,
        insuree=mapping.openimis.insuree_uuids.get(insurance_number, insurance_number),
        facility=facility.reference,
        facility_code=facility.code,
        enterer=admin.reference,
        visit_type=mapping.visit_type_code(ctx.visit.type_uuid, ctx.visit.type_name),
        period_start=start,
        period_end=end,
        created=created,
        diagnoses=selection.chosen,
        lines=lines,
        location_id=primary.location.location_id if primary.location else None,
        provider_id=primary.providers[0].provider_id if primary.providers else None,
        visit_id=ctx.visit.visit_id,
        encounter_id=primary.encounter_id if ctx.unit_kind == "encounter" else None,
        visit_type_id=None,
        attachments=attachments,
    )
    return replace(draft, content_hash=content_hash(draft))


def claim_code(prefix: str, facility_code: str, unit_uuid: str, revision: int) -> str:
    """``<prefix><facility>-<uuid hex>[-R<n>]``, never longer than 50 (the hex part is cut if needed)."""
    hex_part = unit_uuid.replace("-", "").lower()
    suffix = f"-R{revision}" if revision > 0 else ""
    head = f"{prefix}{facility_code}-"
    room = CLAIM_CODE_MAX - len(head) - len(suffix)
    if room < 8:
        raise ValueError(f"claim code prefix and facility code leave only {room} characters for the unit id")
    return f"{head}{hex_part[:room]}{suffix}"


def content_hash(draft: ClaimDraft) -> str:
    """sha256 (hex) of the claim's content, without ``created``, ``code`` and the hash itself."""
    body: dict[str, Any] = {
        "unit": [draft.unit_kind, draft.unit_uuid, draft.visit_uuid, list(draft.encounter_uuids)],
        "patient": [draft.patient_uuid, draft.insuree],
        "facility": [draft.facility, draft.facility_code],
        "enterer": draft.enterer,
        "visit_type": draft.visit_type,
        "period": [draft.period_start.isoformat(), draft.period_end.isoformat()],
        "diagnoses": [[d.icd10, d.concept_id, d.primary] for d in draft.diagnoses],
        "lines": [
            [ln.sequence, ln.category, ln.code, ln.reference, _num(ln.quantity), _num(ln.unit_price), ln.source_uuid,
             ln.concept_id, ln.kind]
            for ln in draft.lines
        ],
    }  # fmt: skip
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ---- pieces --------------------------------------------------------------------------------


def _num(value: Decimal) -> str:
    """Canonical decimal text: 2, 2.0 and 2.00 hash alike."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _voided(ctx: ClaimContext) -> bool:
    if ctx.visit.voided:
        return True
    if ctx.unit_kind == "encounter":
        return bool(ctx.encounters) and ctx.encounters[0].voided
    return bool(ctx.encounters) and all(e.voided for e in ctx.encounters)


def _facility(ctx: ClaimContext, primary: Encounter, mapping: ClaimMapping) -> OpenImisRef | None:
    candidates: list[str | None] = []
    for loc in (primary.location, ctx.visit.location):
        if loc is not None:
            candidates += [loc.uuid, loc.visit_location_uuid]
    for key in candidates:
        if key is not None and key in mapping.facilities:
            return mapping.facilities[key]
    return None


def _claim_admin(primary: Encounter, mapping: ClaimMapping) -> OpenImisRef:
    for provider in primary.providers:
        if provider.uuid in mapping.claim_admins:
            return mapping.claim_admins[provider.uuid]
    return mapping.openimis.claim_admin_default


def _period(ctx: ClaimContext, primary: Encounter) -> tuple[date, date]:
    if ctx.unit_kind == "encounter":
        day = primary.encounter_datetime.date()
        return day, day
    start = ctx.visit.date_started.date()
    if ctx.visit.date_stopped is not None:
        end = ctx.visit.date_stopped.date()
    else:  # open visit claimed while idle: up to its last encounter
        end = max(e.encounter_datetime for e in ctx.encounters if not e.voided).date()
    return start, max(start, end)


def _target(
    line: BillableLine, ctx: ClaimContext, mapping: ClaimMapping, facility: str, codebook: CodeBook | None
) -> tuple[ItemCategory, PricedRef] | None:
    if line.kind == "consultation":
        enc = next((e for e in ctx.encounters if e.uuid == line.encounter_uuid), None)
        rule = consultation_rule(enc, ctx.visit, mapping.consultations) if enc is not None else None
        return ("service", rule.service) if rule is not None else None
    if line.kind == "drug" and line.drug_uuid is not None and line.drug_uuid in mapping.drugs:
        return "item", mapping.drugs[line.drug_uuid]
    target = mapping.concepts.get(line.concept_uuid)
    if target is None:
        rules = mapping.term_rules()
        target = next((rules[c] for c in line.concept_codes if c in rules), None)
    if target is not None:
        return target.category, target
    return _by_reference_term(line, mapping, facility, codebook)


def reference_codes(line: BillableLine, mapping: ClaimMapping) -> list[str]:
    """The line's term codes in the ``reference_terms`` source: the drug's own first, then its concept's."""
    if mapping.reference_terms is None:
        return []
    source = mapping.reference_terms.source
    return [code for name, code in (*line.drug_codes, *line.concept_codes) if name == source]


def _by_reference_term(
    line: BillableLine, mapping: ClaimMapping, facility: str, codebook: CodeBook | None
) -> tuple[ItemCategory, PricedRef] | None:
    if codebook is None:
        return None
    category: ItemCategory | None = "item" if line.kind == "drug" else None
    for code in reference_codes(line, mapping):
        found = codebook.lookup(facility, category, code)
        if found is not None:
            return found
    return None


def _attachments(ctx: ClaimContext, mapping: ClaimMapping) -> tuple[ClaimAttachment, ...]:
    """The visit's documents the mapping attaches, in the mapping's order, then by time."""
    section = mapping.attachments
    if section is None:
        return ()
    out: list[ClaimAttachment] = []
    for rule in section.documents:
        found = [d for d in ctx.documents if rule.concept in (d.concept_uuid, d.concept_name)]
        if not found:
            if rule.required:
                title = rule.title or rule.concept
                raise NotClaimable(
                    "attachment_missing", f"visit {ctx.visit.uuid} has no {title!r} document (concept {rule.concept})"
                )
            continue
        for n, doc in enumerate(found, start=1):
            suffix = doc.path[doc.path.rfind(".") :].lower() if "." in doc.path else ""
            content_type = ATTACHMENT_TYPES.get(suffix)
            if content_type is None:
                raise NotClaimable(
                    "attachment_unsupported",
                    f"document obs {doc.obs_uuid} ({doc.concept_name}) is a {suffix or 'file without extension'}:"
                    f" openIMIS keeps {', '.join(sorted(ATTACHMENT_TYPES))}",
                )
            title = rule.title or doc.concept_name
            out.append(
                ClaimAttachment(
                    obs_uuid=doc.obs_uuid,
                    title=title if len(found) == 1 else f"{title} ({n})",
                    content_type=content_type,
                    store=doc.store,
                    path=doc.path,
                    creation=doc.recorded.date(),
                )
            )
    return tuple(out)


def _describe(line: BillableLine) -> str:
    if line.kind == "drug":
        return f"drug order {line.source_uuid} (drug {line.drug_uuid}, concept {line.concept_uuid})"
    if line.kind == "consultation":
        return f"consultation of encounter {line.encounter_uuid}"
    return f"{line.kind} {line.source_uuid} (concept {line.concept_uuid})"


def _lines(ctx: ClaimContext, mapping: ClaimMapping, facility: str, codebook: CodeBook | None) -> tuple[ClaimLine, ...]:
    out: list[ClaimLine] = []
    missing: list[str] = []
    ordered = sorted(ctx.lines, key=lambda ln: (ln.served, ln.kind, ln.source_uuid))
    for line in ordered:
        found = _target(line, ctx, mapping, facility, codebook)
        if found is None:
            codes = reference_codes(line, mapping)
            missing.append(
                _describe(line) + (f" (reference term {', '.join(codes)} unknown to openIMIS)" if codes else "")
            )
            continue
        category, target = found
        out.append(
            ClaimLine(
                sequence=len(out) + 1,
                category=category,
                code=target.code,
                reference=target.reference,
                quantity=line.quantity,
                unit_price=target.price,
                source_uuid=line.source_uuid,
                concept_id=line.concept_id,
                kind=line.kind,
                line_id=line.line_id if line.line_id != line.source_uuid else "",
            )
        )
    if missing:
        raise NotClaimable("unmapped_line", f"{len(missing)} unmapped: " + "; ".join(missing))
    return tuple(out)


@dataclass(frozen=True)
class DraftBuilder:
    """The claim service's ``DraftBuilder`` port: :func:`build_draft` bound to one mapping."""

    mapping: ClaimMapping
    codebook: CodeBook | None = None

    def __call__(self, ctx: ClaimContext, *, created: date, revision: int) -> ClaimDraft:
        return build_draft(ctx, self.mapping, created=created, revision=revision, codebook=self.codebook)
