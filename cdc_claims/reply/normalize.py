"""Reduce an openIMIS ClaimResponse to a :class:`~cdc_claims.reply.model.NormalizedResponse`.

Every rule here answers one trap of openIMIS api_fhir_r4 1.10 (``CONTRACT.md`` §5, §8):

* **Status** is the highest adjudication category present in ``total[]`` and
  ``item[].adjudication[]`` (1 rejected, 2 entered, 4 checked, 8 processed, 16 valuated), never
  ``outcome`` (``complete`` means rejected *or* valuated). A fully rejected claim has no
  ``total`` at all; its lines' category-1 adjudications give status 1.
* **Lines** are matched back to the draft through ``item[].extension[0].valueReference``
  (``reference`` = ``Medication/<uuid>`` or ``ActivityDefinition/<uuid>``, ``display`` = the
  code), never through ``itemSequence``: openIMIS lists items first, then services, renumbered
  (and in the observed partial-rejection sample not even in request order within a kind).
* **Money**: the approved unit price is the category-8 "processed" amount, else the category-4
  "checked" one. The category-16 "valuated" amount is never used: without ``price_valuated`` it
  echoes the *asked* price (999 asked, 400 pricelist -> processed 400, valuated 999).
* **Identity**: ``POST`` and ``GET ClaimResponse/<uuid>/`` put the claim uuid in ``id``; the code
  is always in the ``Code`` identifier. A response whose ``id`` is the code (the
  ``GET ClaimResponse/<code>/`` form) carries the uuid only in the ``UUID`` identifier, and that
  form also renders every reference by code (``Medication/0001``, ``Patient/<CHF id>``; observed
  live), so a line sent by uuid can come back referenced by its code. A searchset
  ``Bundle`` (or one of its entries) is accepted too: the entry with the draft's code is used.

Duplicates of one code in one claim (pitfall 6): openIMIS answers with one line per claimed
line but nothing that says which is which. Lines sharing a (kind, code) are paired by sorting
both sides on (asked unit price, quantity) and then on draft sequence / response position, so
lines that differ in price or quantity are paired correctly, and lines that are identical in
both are interchangeable for every amount (only which ``source_uuid`` receives which outcome is
arbitrary, e.g. a reason 6 DUPLICATED rejection). Upstream merging of duplicate codes into one
line with the summed quantity avoids the question altogether.

Line values: a rejected line has ``quantity_approved`` and ``price_approved`` ``None`` (nothing
approved; its reason says why); an accepted line of a claim still at "entered" has them ``None``
too (not decided yet). ``claimed_total`` is the "entered" total; a fully rejected claim has no
``total``, so it is the same sum (asked price x quantity) taken from the rejected lines.
``approved_total`` is ``None`` below "checked" (rejected or entered).

Anything that cannot be matched (another claim's response, an unknown line reference, a
missing or extra line, an adjudication without a known category) raises
:class:`ResponseMismatch`: a response is never half-applied to the billing tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from cdc_claims.assemble.model import ClaimDraft, ClaimLine
from cdc_claims.errors import ResponseMismatch, UnknownClaimStatus
from cdc_claims.lifecycle import OPENIMIS_STATUS
from cdc_claims.reply.model import LineOutcome, NormalizedResponse

#: openIMIS claim rejection reasons (``CONTRACT.md`` §5.5; IG ``CodeSystem/claim-rejection-reasons``).
#: The texts are the ``display`` values openIMIS sends; 7 means "no valid policy for the insuree".
REJECTION_REASONS: Mapping[int, str] = {
    0: "ACCEPTED",
    1: "INVALID ITEM OR SERVICE",
    2: "NOT IN PRICE LIST",
    3: "NO PRODUCT FOUND",
    4: "CATEGORY LIMITATION",
    5: "FREQUENCY FAILURE",
    6: "DUPLICATED",
    7: "FAMILY",
    8: "DIAGNOSIS NOT IN LIST",
    9: "TARGET DATE",
    10: "CARE TYPE",
    11: "MAX HOSPITAL ADMISSIONS",
    12: "MAX VISITS",
    13: "MAX CONSULTATIONS",
    14: "MAX SURGERIES",
    15: "MAX DELIVERIES",
    16: "QTY OVER LIMIT",
    17: "WAITING PERIOD FAIL",
    19: "MAX ANTENATAL",
    -1: "REJECTED BY MEDICAL OFFICER",
    -2: "REJECTED BY AI EVALUATION",
}

REJECTED, ENTERED, CHECKED, PROCESSED, VALUATED = 1, 2, 4, 8, 16
#: Money stages, best first. VALUATED is deliberately absent (see the module docstring).
MONEY_STAGES = (PROCESSED, CHECKED)
#: Item-reference resource type -> ClaimLine.category.
_KIND = {"Medication": "item", "ActivityDefinition": "service"}

StatusCode = Literal[1, 2, 4, 8, 16]
IclmStatus = Literal["REJECTED", "ENTERED", "CHECKED", "PROCESSED", "VALUATED"]


def reason_text(code: int, display: str | None = None) -> str:
    """The text for a rejection reason: the table first, then what openIMIS sent."""
    return REJECTION_REASONS.get(code) or display or f"UNKNOWN REASON {code}"


@dataclass(frozen=True)
class _Adjudication:
    category: int
    reason: int
    reason_display: str | None
    amount: Decimal | None  # unit price at this stage
    value: Decimal | None  # quantity at this stage


@dataclass(frozen=True)
class _ResponseLine:
    position: int  # index in item[]: only a tie-breaker, never a match key
    kind: str  # item / service
    ref_id: str | None  # id part of valueReference.reference (a uuid in practice)
    display: str | None  # the openIMIS code
    adjudications: tuple[_Adjudication, ...]

    def stage(self, category: int) -> _Adjudication | None:
        return next((a for a in self.adjudications if a.category == category), None)

    @property
    def rejected(self) -> _Adjudication | None:
        return self.stage(REJECTED) or next((a for a in self.adjudications if a.reason != 0), None)

    @property
    def asked(self) -> _Adjudication | None:
        """The adjudication carrying the asked price: "entered", or the single "rejected" one."""
        return self.stage(ENTERED) or self.stage(REJECTED)


def normalize(response: Mapping[str, Any], draft: ClaimDraft, *, received_at: datetime) -> NormalizedResponse:
    """Normalize ``response`` (ClaimResponse, searchset Bundle, or Bundle entry) against ``draft``.

    Raises :class:`ResponseMismatch` when the response is not for ``draft`` or cannot be read.
    """
    resource = _select_resource(response, draft.code)
    code, claim_uuid = _identity(resource)
    if code != draft.code:
        raise ResponseMismatch(f"response is for claim {code!r}, not {draft.code!r}")
    lines = tuple(_response_line(i, item) for i, item in enumerate(_list(resource, "item")))
    totals = _totals(resource)

    categories = {a.category for line in lines for a in line.adjudications} | set(totals)
    if not categories:
        raise ResponseMismatch(f"claim {code!r}: response has no adjudication at all")
    unknown = categories - set(OPENIMIS_STATUS)
    if unknown:
        raise UnknownClaimStatus(
            f"claim {code!r}: openIMIS status code(s) {sorted(unknown)} unknown to this sidecar",
            code=max(unknown),
            claim_uuid=claim_uuid,
        )
    status = cast(StatusCode, max(categories))
    iclm_status = cast(IclmStatus, OPENIMIS_STATUS[status][2])

    outcomes = tuple(_outcome(draft_line, line) for draft_line, line in _match(draft, lines))
    return NormalizedResponse(
        claim_code=code,
        claim_uuid=claim_uuid,
        openimis_status=status,
        iclm_status=iclm_status,
        outcome=str(resource.get("outcome") or ""),
        claimed_total=_claimed_total(totals, lines),
        approved_total=_approved_total(status, outcomes),
        rejection_reason=_claim_rejection(outcomes),
        lines=outcomes,
        received_at=received_at,
    )


# ----------------------------------------------------------------------------- reading


def _select_resource(response: Mapping[str, Any], code: str) -> Mapping[str, Any]:
    """The ClaimResponse itself, from a bare resource, a Bundle entry, or a searchset Bundle."""
    if "resource" in response and "resourceType" not in response:
        response = response["resource"]  # a Bundle entry
    kind = response.get("resourceType")
    if kind == "ClaimResponse":
        return response
    if kind == "Bundle":
        matches = [
            entry["resource"]
            for entry in _list(response, "entry")
            if isinstance(entry.get("resource"), Mapping)
            and entry["resource"].get("resourceType") == "ClaimResponse"
            and _code_or_none(entry["resource"]) == code
        ]
        if len(matches) != 1:
            raise ResponseMismatch(f"Bundle holds {len(matches)} ClaimResponse(s) for claim {code!r}, expected 1")
        return cast(Mapping[str, Any], matches[0])
    raise ResponseMismatch(f"not a ClaimResponse: resourceType={kind!r}")


def _code_or_none(resource: Mapping[str, Any]) -> str | None:
    """The claim code of a searchset entry; an unreadable entry is just not the one we look for."""
    try:
        return _identity(resource)[0]
    except ResponseMismatch:
        return None


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key) or []
    if not isinstance(value, list):
        raise ResponseMismatch(f"{key} is not a list")
    return value


def _first_code(concept: Any) -> str | None:
    if isinstance(concept, Mapping):
        codings = concept.get("coding") or []
        if codings and isinstance(codings[0], Mapping) and codings[0].get("code") is not None:
            return str(codings[0]["code"])
    return None


def _looks_like_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _identity(resource: Mapping[str, Any]) -> tuple[str, str | None]:
    """(claim code, claim uuid), from the typed identifiers first, ``id`` as a fallback."""
    typed = {
        _first_code(i.get("type")): i.get("value") for i in _list(resource, "identifier") if isinstance(i, Mapping)
    }
    rid = resource.get("id")
    rid = str(rid) if rid is not None else None
    claim_uuid = typed.get("UUID") or (rid if rid and _looks_like_uuid(rid) else None)
    code = typed.get("Code") or (rid if rid and not _looks_like_uuid(rid) else None)
    if not code:
        raise ResponseMismatch("response carries no claim code (no Code identifier, no code id)")
    return str(code), (str(claim_uuid) if claim_uuid else None)


def _decimal(value: Any, what: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ResponseMismatch(f"{what}: not a number: {value!r}")
    try:
        # via str: the JSON float 10.1 becomes Decimal("10.1"), not its binary expansion
        result = Decimal(str(value))
    except InvalidOperation:
        raise ResponseMismatch(f"{what}: not a number: {value!r}") from None
    if not result.is_finite():
        raise ResponseMismatch(f"{what}: not a finite number: {value!r}")
    return result


def _category(concept: Any, what: str) -> int:
    code = _first_code(concept)
    try:
        category = int(code) if code is not None else None
    except ValueError:
        category = None
    if category is None:
        raise ResponseMismatch(f"{what}: claim-status category {code!r} is not an integer")
    return category  # an unknown code is reported by normalize() as UnknownClaimStatus


def _adjudication(adj: Mapping[str, Any], what: str) -> _Adjudication:
    reason_code = _first_code(adj.get("reason"))
    try:
        reason = int(reason_code) if reason_code is not None else 0
    except ValueError:
        raise ResponseMismatch(f"{what}: rejection reason {reason_code!r} is not an integer") from None
    codings = (adj.get("reason") or {}).get("coding") or [{}]
    return _Adjudication(
        category=_category(adj.get("category"), what),
        reason=reason,
        reason_display=codings[0].get("display"),
        amount=_decimal((adj.get("amount") or {}).get("value"), f"{what} amount"),
        value=_decimal(adj.get("value"), f"{what} value"),
    )


def _item_reference(item: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    """``extension[0].valueReference``: the only place openIMIS says which item/service a line is."""
    extensions = item.get("extension") or []
    if not extensions or not isinstance(extensions[0], Mapping) or "valueReference" not in extensions[0]:
        raise ResponseMismatch(f"{what}: no claim-item-reference in extension[0]")
    return cast(Mapping[str, Any], extensions[0]["valueReference"])


def _response_line(position: int, item: Mapping[str, Any]) -> _ResponseLine:
    what = f"item[{position}]"
    ref = _item_reference(item, what)
    reference = str(ref.get("reference") or "")
    rtype, _, ref_id = reference.partition("/")
    rtype = rtype or str(ref.get("type") or "")
    if rtype not in _KIND:
        raise ResponseMismatch(f"{what}: reference {reference!r} is neither Medication nor ActivityDefinition")
    adjudications = tuple(_adjudication(a, f"{what}.adjudication") for a in _list(item, "adjudication"))
    if not adjudications:
        raise ResponseMismatch(f"{what}: no adjudication")
    display = ref.get("display")
    return _ResponseLine(position, _KIND[rtype], ref_id or None, str(display) if display else None, adjudications)


def _totals(resource: Mapping[str, Any]) -> dict[int, Decimal]:
    totals: dict[int, Decimal] = {}
    for total in _list(resource, "total"):
        amount = _decimal((total.get("amount") or {}).get("value"), "total amount")
        if amount is not None:
            totals[_category(total.get("category"), "total")] = amount
    return totals


# ----------------------------------------------------------------------------- matching


def _code_of(line: _ResponseLine, draft: ClaimDraft) -> str:
    """The openIMIS code a response line answers: ``display``, else its reference resolved via the draft."""
    if line.display:
        return line.display
    for draft_line in draft.lines:
        if draft_line.category == line.kind and line.ref_id in (draft_line.reference, draft_line.code):
            return draft_line.code
    raise ResponseMismatch(f"item[{line.position}]: unknown line reference {line.kind}/{line.ref_id}")


def _check_reference(draft_line: ClaimLine, line: _ResponseLine) -> None:
    """The answered reference must be the one sent (uuid or code) or the line's code.

    The POST reply and ``GET ClaimResponse/<uuid>/`` reference lines by uuid; ``GET
    ClaimResponse/<code>/`` renders every reference by business code (observed live), so a line
    sent by uuid may legitimately come back as ``Medication/<code>``. Anything else means the
    draft's uuid and openIMIS disagree about what the line is. A line sent by code comes back by
    uuid, which the draft cannot check.
    """
    if line.ref_id is None or draft_line.reference == draft_line.code:
        return
    accepted = {draft_line.reference.lower(), draft_line.code.lower()}
    if line.ref_id.lower() not in accepted:
        raise ResponseMismatch(
            f"line {draft_line.sequence} ({draft_line.code}) was sent as {draft_line.reference}, "
            f"openIMIS answered for {line.ref_id}"
        )


def _match(draft: ClaimDraft, lines: Iterable[_ResponseLine]) -> list[tuple[ClaimLine, _ResponseLine]]:
    """Pair every draft line with exactly one response line, by (kind, code); see module docstring."""
    sent: dict[tuple[str, str], list[ClaimLine]] = {}
    for draft_line in draft.lines:
        sent.setdefault((draft_line.category, draft_line.code), []).append(draft_line)
    answered: dict[tuple[str, str], list[_ResponseLine]] = {}
    for line in lines:
        key = (line.kind, _code_of(line, draft))
        if key not in sent:
            raise ResponseMismatch(f"item[{line.position}]: unknown line reference {key[0]} {key[1]!r}")
        answered.setdefault(key, []).append(line)

    pairs: list[tuple[ClaimLine, _ResponseLine]] = []
    for key, draft_lines in sent.items():
        responses = answered.get(key, [])
        if len(responses) != len(draft_lines):
            raise ResponseMismatch(f"{key[0]} {key[1]!r}: {len(draft_lines)} line(s) sent, {len(responses)} answered")
        ordered_draft = sorted(draft_lines, key=lambda d: (d.unit_price, d.quantity, d.sequence))
        ordered_resp = sorted(responses, key=_asked_key)
        for draft_line, line in zip(ordered_draft, ordered_resp, strict=True):
            _check_reference(draft_line, line)
            pairs.append((draft_line, line))
    pairs.sort(key=lambda pair: pair[0].sequence)
    return pairs


def _asked_key(line: _ResponseLine) -> tuple[Decimal, Decimal, int]:
    asked = line.asked
    price = asked.amount if asked and asked.amount is not None else Decimal(0)
    quantity = asked.value if asked and asked.value is not None else Decimal(0)
    return price, quantity, line.position


# ----------------------------------------------------------------------------- results


def _outcome(draft_line: ClaimLine, line: _ResponseLine) -> LineOutcome:
    rejected = line.rejected
    if rejected is not None:
        return LineOutcome(
            source_uuid=draft_line.source_uuid,
            code=draft_line.code,
            category=draft_line.category,
            status="REJECTED",
            reason_code=rejected.reason,
            reason_text=reason_text(rejected.reason, rejected.reason_display),
            quantity_approved=None,
            price_approved=None,
        )
    money = next((a for stage in MONEY_STAGES if (a := line.stage(stage)) is not None), None)
    return LineOutcome(
        source_uuid=draft_line.source_uuid,
        code=draft_line.code,
        category=draft_line.category,
        status="PASSED",
        reason_code=0,
        reason_text=reason_text(0),
        quantity_approved=money.value if money else None,
        price_approved=money.amount if money else None,
    )


def _claimed_total(totals: Mapping[int, Decimal], lines: Iterable[_ResponseLine]) -> Decimal | None:
    """The "entered" total; for a fully rejected claim (no total) the same sum from the lines."""
    if ENTERED in totals:
        return totals[ENTERED]
    parts = [(a.amount, a.value) for line in lines if (a := line.asked) is not None]
    if not parts or any(p is None or q is None for p, q in parts):
        return None
    return sum((cast(Decimal, p) * cast(Decimal, q) for p, q in parts), Decimal(0))


def _approved_total(status: int, outcomes: Iterable[LineOutcome]) -> Decimal | None:
    """Sum of approved price * approved quantity over accepted lines; None before "checked" or when rejected."""
    if status < CHECKED:
        return None
    return sum(
        (
            o.price_approved * o.quantity_approved
            for o in outcomes
            if o.status == "PASSED" and o.price_approved is not None and o.quantity_approved is not None
        ),
        Decimal(0),
    )


def _claim_rejection(outcomes: tuple[LineOutcome, ...]) -> str | None:
    """``"7 FAMILY"`` when every line was rejected (distinct reasons joined by ``"; "``)."""
    if not outcomes or any(o.status != "REJECTED" for o in outcomes):
        return None
    reasons = dict.fromkeys(f"{o.reason_code} {o.reason_text}" for o in outcomes)
    return "; ".join(reasons)
