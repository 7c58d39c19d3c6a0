"""Plain words for billing clerks: where a claim stands, what holds it, and what to do about it.

The ledger speaks in reason keys (``unmapped_line``) and in details written for operators
(``1 unmapped: drug order 5c… (drug 9d…, concept 71…)``); openIMIS speaks in rejection codes
(``7 FAMILY``). A clerk needs one sentence that says what is missing and a second that says
what to do, naming the drug, test or location the way Bahmni shows it. Pure: the names come in
as a ``uuid -> name`` mapping the store looked up for :func:`mentioned` uuids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cdc_claims.lifecycle import State

_RERUN = "then press Re-run"

#: reason -> (what is missing, what to do). Every key of ``errors.HELD_REASONS`` has a line.
REASON_WORDS: Mapping[str, tuple[str, str]] = {
    "uninsured": (
        "No insurance number",
        f"Add it in Registration (patient identifier); the claim is re-run by itself once it is saved, or {_RERUN}",
    ),
    "no_diagnosis": (
        "No diagnosis openIMIS accepts",
        f"Record a confirmed, coded diagnosis (with an ICD-10 code openIMIS knows) in the consultation, {_RERUN}",
    ),
    "unmapped_line": (
        "A drug, test or service has no openIMIS code",
        f"Add it to the mapping file, {_RERUN}",
    ),
    "unmapped_facility": (
        "The location has no openIMIS health facility",
        f"Add the location to the mapping file (facilities), {_RERUN}",
    ),
    "no_billable_lines": ("Nothing billable in this visit or encounter", "Nothing to do"),
    "voided": ("The encounter or visit was voided in Bahmni", "Nothing to do: nothing is claimed"),
    "voided_after_submit": (
        "The encounter was voided after its claim reached openIMIS",
        "Withdraw the claim in openIMIS, then press Mark withdrawal handled",
    ),
    "unknown_status": (
        "openIMIS reported a status this system does not know",
        "Nothing to do now: the claim is followed until a known status comes; tell the administrator if it stays",
    ),
    "internal_error": (
        "The claims system failed on this claim",
        f"Tell the administrator (the logs say why); once fixed, {_RERUN}",
    ),
    "changed_after_submit": (
        "The encounter changed after its claim was sent",
        "Lines added since were not claimed (supplements are off): claim them in openIMIS if they are due",
    ),
    "supplemented": (
        "Lines added after the claim was sent went out in a supplementary claim",
        "Nothing to do",
    ),
    "withdrawal_needed": (
        "Lines claimed in openIMIS were removed or reduced in Bahmni",
        "Withdraw them in openIMIS, then press Mark withdrawal handled",
    ),
    "diagnosis_changed_after_submit": (
        "The diagnoses changed after the claim was sent; openIMIS keeps the ones sent",
        "Correct them in openIMIS if the change matters for payment",
    ),
    "refused_by_openimis": (
        "openIMIS refused the claim",
        f"Fix what openIMIS names (often the mapping, or the patient's insurance), {_RERUN}",
    ),
    "invalid_claim": (
        "The claim built from the encounter is not valid",
        f"Tell the administrator; once fixed, {_RERUN}",
    ),
    "not_in_pricelist": (
        "A drug, test or service is not in the hospital's openIMIS price list",
        "Ask the scheme to add it to the price list, or correct the mapping file;"
        f" the claim is re-checked by itself every few minutes, or {_RERUN}",
    ),
    "price_above_pricelist": (
        "A drug, test or service costs more than the openIMIS price list pays",
        f"Correct the price in the mapping file (check-mapping --openimis shows the list price), {_RERUN}",
    ),
    "no_active_policy": (
        "The patient has no active insurance policy on the visit date",
        "Ask the patient to renew the policy with the scheme; the claim is re-checked by itself every few minutes"
        f" once openIMIS has it, or {_RERUN}",
    ),
    "attachment_missing": (
        "A document the scheme needs with this claim (e.g. a discharge summary) is not in the visit",
        "Upload it in Bahmni's Patient Documents for this visit; the claim is re-checked by itself every few"
        f" minutes, or {_RERUN}",
    ),
    "attachment_too_large": (
        "A document to send with the claim is larger than the scheme accepts",
        f"Upload a smaller copy (a PDF or a lower-resolution scan) in place of it in Bahmni, {_RERUN}",
    ),
    "attachment_unsupported": (
        "A document to send with the claim is of a kind openIMIS does not keep",
        f"Upload it as a PDF, PNG or JPEG in Bahmni, {_RERUN}",
    ),
    "unreadable_response": (
        "openIMIS's answer could not be read against the claim",
        "Tell the administrator; then press Refresh status now, or Re-run",
    ),
}

#: openIMIS rejection reason code -> words (``CONTRACT.md`` §5.5). Every code of
#: ``reply.normalize.REJECTION_REASONS`` has a sentence.
REJECTION_WORDS: Mapping[int, str] = {
    0: "Accepted",
    1: "The item or service is not valid in openIMIS: check its code in the mapping file",
    2: "Not in the facility's price list in openIMIS: ask the scheme to add it, or correct the mapping",
    3: "Not covered by the patient's insurance product",
    4: "The insurance product does not cover this category of care",
    5: "Claimed again too soon: the product limits how often it may be claimed",
    6: "Claimed twice: it is already in this or another claim",
    7: "The patient has no valid insurance policy on the treatment date: check the membership in openIMIS",
    8: "The diagnosis is not in openIMIS's list: correct the ICD-10 code",
    9: "The treatment date is outside the policy period, or in the future",
    10: "Not allowed for this type of care (in-patient or out-patient)",
    11: "The patient's limit of hospital admissions is reached",
    12: "The patient's limit of visits is reached",
    13: "The patient's limit of consultations is reached",
    14: "The patient's limit of surgeries is reached",
    15: "The patient's limit of deliveries is reached",
    16: "The quantity is above the product's limit: reduce it",
    17: "The patient's waiting period is not over yet",
    19: "The patient's limit of antenatal visits is reached",
    -1: "Rejected by the scheme's medical officer on review",
    -2: "Rejected by openIMIS's automatic review",
}

#: Every lifecycle state in a few words (next to the state value the list and detail show).
STATE_WORDS: Mapping[State, str] = {
    State.DETECTED: "Saved in Bahmni, waiting for the edits to settle",
    State.SETTLED: "Being built into a claim",
    State.HELD: "Held: needs a fix before it can be sent",
    State.NOTHING_TO_CLAIM: "Nothing to claim",
    State.CANCELLED: "Cancelled in Bahmni before it was sent",
    State.SUBMITTING: "Being sent to openIMIS",
    State.FAILED: "Not accepted for processing: needs a fix",
    State.REJECTED: "Rejected by openIMIS",
    State.ENTERED: "Entered in openIMIS",
    State.CHECKED: "Checked by openIMIS, waiting for review",
    State.PROCESSED: "Processed by openIMIS",
    State.VALUATED: "Valuated: the amount is final",
    State.UNKNOWN_STATUS: "In openIMIS, with a status this system does not know",
}


@dataclass(frozen=True)
class HeldWords:
    """What holds a claim (``missing``), what to do (``todo``), and one sentence per thing named."""

    missing: str
    todo: str
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mentions:
    """The uuids an operator detail names, by what they are (the store looks up their names)."""

    drugs: frozenset[str] = frozenset()
    concepts: frozenset[str] = frozenset()
    locations: frozenset[str] = frozenset()
    encounters: frozenset[str] = frozenset()


_UUID = r"[0-9A-Za-z][0-9A-Za-z-]{7,37}"
_DRUG = re.compile(rf"drug order (?P<src>\S+) \(drug (?P<drug>{_UUID}|None), concept (?P<concept>{_UUID}|None)\)")
_CONSULT = re.compile(rf"consultation of encounter (?P<encounter>{_UUID})")
_OTHER = re.compile(rf"(?P<kind>lab|radiology|procedure_obs|procedure) (?P<src>\S+) \(concept (?P<concept>{_UUID})\)")
_LOCATION = re.compile(rf"location (?P<location>{_UUID})(?: \(visit location (?P<visit_location>{_UUID}|None)\))?")
_DIAGNOSIS = re.compile(r"\((?P<why>provisional|non_coded|no_icd_map|unknown_to_openimis:[^)]*)\)")
_REJECTION = re.compile(r"^\s*(?P<code>-?\d+)\b\s*(?P<text>.*)$")

_KIND_WORDS = {
    "lab": "Lab test",
    "radiology": "Radiology order",
    "procedure": "Procedure",
    "procedure_obs": "Procedure (recorded in a form)",
}


def state_words(state: State | str) -> str:
    try:
        return STATE_WORDS[State(state)]
    except ValueError:
        return str(state)


def mentioned(reason: str | None, detail: str | None) -> Mentions:
    """The drugs, concepts, locations and encounters ``detail`` names (for name look-ups)."""
    text = detail or ""
    if reason == "unmapped_line":
        drugs = {m["drug"] for m in _DRUG.finditer(text) if m["drug"] != "None"}
        concepts = {m["concept"] for m in _DRUG.finditer(text) if m["concept"] != "None"}
        concepts |= {m["concept"] for m in _OTHER.finditer(text)}
        encounters = {m["encounter"] for m in _CONSULT.finditer(text)}
        return Mentions(drugs=frozenset(drugs), concepts=frozenset(concepts), encounters=frozenset(encounters))
    if reason == "unmapped_facility":
        found = _LOCATION.search(text)
        if found is None:
            return Mentions()
        places = {found["location"], found["visit_location"]} - {None, "None"}
        return Mentions(locations=frozenset(p for p in places if p))
    return Mentions()


def held_words(reason: str | None, detail: str | None, names: Mapping[str, str] | None = None) -> HeldWords | None:
    """The words for a ledger ``reason`` and its ``detail``; ``None`` when nothing is flagged."""
    if not reason:
        return None
    names = names or {}
    missing, todo = REASON_WORDS.get(reason, (reason.replace("_", " ").capitalize(), "Tell the administrator"))
    text = detail or ""
    if reason == "unmapped_line":
        return HeldWords(missing, todo, _unmapped_items(text, names))
    if reason == "unmapped_facility":
        return HeldWords(missing, todo, _facility_items(text, names))
    if reason == "no_diagnosis":
        return HeldWords(missing, todo, _diagnosis_items(text))
    if reason == "refused_by_openimis" and text:
        return HeldWords(missing, todo, (f"openIMIS said: {text}",))
    return HeldWords(missing, todo)


def _name(names: Mapping[str, str], *uuids: str | None) -> str:
    for uuid in uuids:
        if uuid and uuid != "None" and uuid in names:
            return names[uuid]
    return next((u for u in uuids if u and u != "None"), "(unknown)")


def _unmapped_items(text: str, names: Mapping[str, str]) -> tuple[str, ...]:
    found: list[tuple[int, str]] = []
    for m in _DRUG.finditer(text):
        name = _name(names, m["drug"], m["concept"])
        where = f"drugs: {m['drug']}" if m["drug"] != "None" else f"concepts: {m['concept']}"
        found.append((m.start(), f"Drug {name} has no openIMIS item: add it to the mapping file ({where}), {_RERUN}"))
    for m in _OTHER.finditer(text):
        what = _KIND_WORDS[m["kind"]]
        name = _name(names, m["concept"])
        found.append(
            (
                m.start(),
                f"{what} {name} has no openIMIS service: add it to the mapping file (concepts: {m['concept']}), "
                + _RERUN,
            )
        )
    for m in _CONSULT.finditer(text):
        kind = names.get(m["encounter"])
        which = f"The {kind} consultation" if kind else "The consultation"
        found.append(
            (m.start(), f"{which} has no openIMIS service: add a rule to the mapping file (consultations), {_RERUN}")
        )
    return tuple(sentence for _, sentence in sorted(found))


def _facility_items(text: str, names: Mapping[str, str]) -> tuple[str, ...]:
    found = _LOCATION.search(text)
    if found is None:
        return ("The encounter has no location: set one in Bahmni, then press Re-run",)
    place = _name(names, found["location"])
    parent = found["visit_location"]
    within = f" (visit location {_name(names, parent)})" if parent and parent != "None" else ""
    return (f"Location {place}{within} has no openIMIS health facility: add it to the mapping file (facilities)",)


def _diagnosis_items(text: str) -> tuple[str, ...]:
    said: list[str] = []
    for m in _DIAGNOSIS.finditer(text):
        why = m["why"]
        if why == "provisional":
            sentence = "A diagnosis is only provisional: openIMIS takes confirmed diagnoses"
        elif why == "non_coded":
            sentence = "A diagnosis was typed as free text: choose a coded diagnosis instead"
        elif why == "no_icd_map":
            sentence = "A diagnosis has no ICD-10 code: ask the administrator to map its concept"
        else:
            code = why.partition(":")[2]
            sentence = (
                f"ICD-10 code {code} is not in openIMIS's list: choose another code, or ask for a mapping override"
            )
        if sentence not in said:
            said.append(sentence)
    if not said and "none recorded" in text:
        said.append("No diagnosis is recorded: add one in the consultation")
    return tuple(said)


def rejection_code(raw: str | None) -> int | None:
    """The openIMIS reason code of a stored rejection (``"7 FAMILY"`` -> 7, ``"-1 7 FAMILY"`` -> 7)."""
    found = _REJECTION.match(raw or "")
    if found is None:
        return None
    code, inner = int(found["code"]), _REJECTION.match(found["text"])
    return int(inner["code"]) if code == -1 and inner else code


def rejection_words(raw: str | None) -> str:
    """A stored rejection reason (``iclm_*.rejection_reason``, ``"<code> <openIMIS text>"``) in words."""
    if not raw:
        return ""
    found = _REJECTION.match(raw)
    if found is None:
        return f"Rejected by openIMIS: {raw}"
    code, text = int(found["code"]), found["text"].strip()
    if code == -1 and text and text != "REJECTED BY MEDICAL OFFICER":
        # the iclm writer's mark for a line of a wholly rejected claim: "-1 <claim's reason>"
        inner = _REJECTION.match(text)
        return rejection_words(text) if inner else f"The whole claim was rejected ({text})"
    words = REJECTION_WORDS.get(code)
    if words is None:
        return f"Rejected by openIMIS (reason {code}{': ' + text if text else ''})"
    return words
