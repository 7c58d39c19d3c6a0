"""Pure selection rules: which diagnoses count and which a claim carries, ICD codes, consultations.

No I/O here: the reader (:mod:`cdc_claims.assemble.reader`) runs the SQL and hands over rows,
and these functions decide what they mean. Keeping the rules out of the MySQL adapter lets
them be tested on plain dicts, and read in one place.

Which recorded diagnoses are current (:func:`obs_diagnoses`, :func:`encounter_diagnoses`)
    ``shared/openmrs/DATA_MODEL.md`` §3. The reader fetches only non-voided rows (voided groups,
    members and ``encounter_diagnosis`` rows never reach these functions). A Bahmni ``Visit
    Diagnoses`` obs group then does **not** count when its ``Bahmni Diagnosis Revised`` member
    is True (the GP ``concept.true``: a later group replaces it), when its ``Bahmni Diagnosis
    Status`` is ``Ruled Out``, or when it names nothing (neither a coded answer nor free text).
    It is CONFIRMED when its ``Diagnosis Certainty`` answer is ``Confirmed`` (else PROVISIONAL)
    and primary when its ``Diagnosis order`` answer is ``Primary``. A core ``encounter_diagnosis``
    row counts when it is coded or has free text; CONFIRMED by its ``certainty`` (any case),
    primary when its rank is 1. :func:`pick_icd_codes` then gives each coded concept the first
    ICD code of the configured source, SAME-AS maps first (the SQL orders the rows so).

ICD-10 codes
    Bahmni's ICD source spells codes with a dot (``E05.90``); openIMIS's own list
    (``tblICDCodes``) spells them without (``E0590``) and is not the full ICD-10 (CONTRACT
    pitfall 11). :func:`normalise_icd` therefore:

    * with ``strip_dots`` removes dots (``E05.90`` -> ``E0590``), otherwise keeps the code;
    * when openIMIS's list is configured, accepts a code **only if it matches a listed code
      exactly**, comparing dotted and undotted spellings both ways (``E05.90`` matches a listed
      ``E0590`` or ``E05.90``), and returns the code *as openIMIS spells it*.

    It deliberately does **not** fall back to shorter prefixes (``E05.90`` -> ``E05.9`` ->
    ``E05``): a shorter code is a different, broader diagnosis, and silently claiming it would
    change what the clinician recorded. Such a diagnosis is dropped here, the claim is held as
    ``no_diagnosis`` if nothing else is left, and an explicit ``icd10.overrides`` entry (concept
    uuid -> openIMIS code) is the visible, reviewable way to choose another code.

Diagnosis policy (:func:`select_diagnoses`)
    Only CONFIRMED diagnoses unless ``confirmed_only`` is off; primary ones first, then in the
    order they were recorded; one entry per ICD code (the first wins, so a primary beats a
    secondary with the same code); at most ``max`` (openIMIS reads five).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from cdc_claims.assemble.model import (
    BillableLine,
    Certainty,
    ClaimDiagnosis,
    Diagnosis,
    DiagnosisSource,
    Encounter,
    Visit,
)

# ------------------------------------------------------------------------------------------
# What the rules read of the mapping file. Declared here as protocols, so this package imports
# nothing from cdc_claims.mapping (whose apply and check import this one): the mapping's own
# DiagnosisPolicy and ConsultationRule fit them as they are.
# ------------------------------------------------------------------------------------------


class DiagnosisPolicyLike(Protocol):
    """Which diagnoses a claim carries (``mapping.model.DiagnosisPolicy``)."""

    @property
    def confirmed_only(self) -> bool: ...

    @property
    def max(self) -> int: ...


class CodedLike(Protocol):
    @property
    def code(self) -> str: ...


class ConsultationRuleLike(Protocol):
    """An encounter (and visit) type billed as a service (``mapping.model.ConsultationRule``)."""

    @property
    def encounter_type(self) -> str: ...

    @property
    def visit_type(self) -> str | None: ...

    @property
    def service(self) -> CodedLike: ...

    @property
    def concept(self) -> str: ...


RuleT = TypeVar("RuleT", bound=ConsultationRuleLike)

#: Namespace of the synthetic ``source_uuid`` of derived lines (uuid5 over "<encounter uuid>:<code>").
DERIVED_LINE_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-5b8e-9c2a-5d1f0e4b7a21")


# ------------------------------------------------------------------------------------------
# Which recorded diagnoses are current (rows as the reader fetched them)
# ------------------------------------------------------------------------------------------

Row = Mapping[str, Any]


@dataclass(frozen=True)
class DiagnosisObsConcepts:
    """The Bahmni diagnosis concepts as concept ids of one database (None: not in it)."""

    coded: int | None  # Coded Diagnosis (member: value_coded is the diagnosis concept)
    non_coded: int | None  # Non-coded Diagnosis (member: value_text)
    certainty: int | None  # Diagnosis Certainty (member: value_coded is `confirmed` or not)
    confirmed: int | None  # Confirmed
    order: int | None  # Diagnosis order (member: value_coded is `primary` or not)
    primary: int | None  # Primary
    status: int | None  # Bahmni Diagnosis Status (member: value_coded may be `ruled_out`)
    ruled_out: int | None  # Ruled Out Diagnosis
    revised: int | None  # Bahmni Diagnosis Revised (member: value_coded is `true` once revised)
    true: int | None  # the "True" answer concept (global property concept.true)


@dataclass(frozen=True)
class RecordedDiagnosis:
    """A current diagnosis as recorded, before its concept's uuid and ICD code are attached."""

    source: DiagnosisSource
    ref_uuid: str  # obs group uuid, or encounter_diagnosis uuid
    encounter_id: int
    concept_id: int | None  # None: a non-coded (free-text) diagnosis
    certainty: Certainty
    primary: bool
    recorded: datetime


def obs_diagnoses(rows: Iterable[Row], concepts: DiagnosisObsConcepts) -> list[RecordedDiagnosis]:
    """The current diagnoses among ``Visit Diagnoses`` group members (rows ordered by group).

    Each row is one non-voided member: ``group_id``, ``group_uuid``, ``encounter_id``,
    ``obs_datetime`` of its group, and its own ``member_concept_id``, ``value_coded``, ``value_text``.
    """
    groups: dict[int, list[Row]] = {}
    for row in rows:
        groups.setdefault(int(row["group_id"]), []).append(row)
    found = (_obs_group(members, concepts) for members in groups.values())
    return [dx for dx in found if dx is not None]


def _obs_group(members: list[Row], concepts: DiagnosisObsConcepts) -> RecordedDiagnosis | None:
    by_concept = {int(m["member_concept_id"]): m for m in members}

    def member(concept_id: int | None) -> Row | None:
        return by_concept.get(concept_id) if concept_id is not None else None

    revised, status = member(concepts.revised), member(concepts.status)
    if revised is not None and concepts.true is not None and revised["value_coded"] == concepts.true:
        return None  # a later group replaces this one
    if status is not None and concepts.ruled_out is not None and status["value_coded"] == concepts.ruled_out:
        return None
    coded, non_coded = member(concepts.coded), member(concepts.non_coded)
    concept_id = int(coded["value_coded"]) if coded is not None and coded["value_coded"] is not None else None
    if concept_id is None and not (non_coded is not None and non_coded["value_text"]):
        return None  # an incomplete group: nothing diagnosed
    certainty, order = member(concepts.certainty), member(concepts.order)
    confirmed = certainty is not None and certainty["value_coded"] == concepts.confirmed
    head = members[0]
    return RecordedDiagnosis(
        source="obs",
        ref_uuid=str(head["group_uuid"]),
        encounter_id=int(head["encounter_id"]),
        concept_id=concept_id,
        certainty="CONFIRMED" if confirmed else "PROVISIONAL",
        primary=order is not None and order["value_coded"] == concepts.primary,
        recorded=head["obs_datetime"],
    )


def encounter_diagnoses(rows: Iterable[Row]) -> list[RecordedDiagnosis]:
    """The current diagnoses among non-voided ``encounter_diagnosis`` rows (OpenMRS core model).

    Each row: ``uuid``, ``encounter_id``, ``diagnosis_coded``, ``diagnosis_non_coded``,
    ``certainty``, ``dx_rank`` (the ``rank`` or ``dx_rank`` column) and ``date_created``.
    """
    found: list[RecordedDiagnosis] = []
    for row in rows:
        concept_id = int(row["diagnosis_coded"]) if row["diagnosis_coded"] is not None else None
        if concept_id is None and not row["diagnosis_non_coded"]:
            continue
        found.append(
            RecordedDiagnosis(
                source="encounter_diagnosis",
                ref_uuid=str(row["uuid"]),
                encounter_id=int(row["encounter_id"]),
                concept_id=concept_id,
                certainty="CONFIRMED" if str(row["certainty"]).upper() == "CONFIRMED" else "PROVISIONAL",
                primary=row["dx_rank"] == 1,
                recorded=row["date_created"],
            )
        )
    return found


def pick_icd_codes(rows: Iterable[Row]) -> dict[int, tuple[str, str | None]]:
    """concept_id -> (concept uuid, its ICD code or None), from rows in preference order.

    Each row is one reference map of a diagnosis concept (``concept_id``, ``uuid``, ``code``:
    None when the map is not to the ICD source), SAME-AS maps first: the first row with a code
    wins; a concept without any keeps its uuid and no code.
    """
    out: dict[int, tuple[str, str | None]] = {}
    for row in rows:
        concept_id = int(row["concept_id"])
        code = str(row["code"]).strip() if row["code"] is not None else None
        current = out.get(concept_id)
        if current is None or (current[1] is None and code):
            out[concept_id] = (str(row["uuid"]), code or None)
    return out


def attach_icd(
    recorded: Iterable[RecordedDiagnosis],
    encounter_uuids: Mapping[int, str],
    icd: Mapping[int, tuple[str, str | None]],
) -> tuple[Diagnosis, ...]:
    """The :class:`Diagnosis` values of the claim context: encounter uuid, concept uuid, ICD code."""
    out = []
    for dx in recorded:
        concept_uuid, code = icd[dx.concept_id] if dx.concept_id is not None else (None, None)
        out.append(
            Diagnosis(
                source=dx.source,
                ref_uuid=dx.ref_uuid,
                encounter_uuid=encounter_uuids[dx.encounter_id],
                concept_id=dx.concept_id,
                concept_uuid=concept_uuid,
                icd10=code,
                certainty=dx.certainty,
                primary=dx.primary,
                recorded=dx.recorded,
            )
        )
    return tuple(out)


# ------------------------------------------------------------------------------------------
# ICD codes and which diagnoses the claim carries
# ------------------------------------------------------------------------------------------


def undotted(code: str) -> str:
    return code.replace(".", "").strip().upper()


def known_index(known: Iterable[str]) -> dict[str, str]:
    """Undotted spelling -> openIMIS's own spelling, for exact matching across dot styles."""
    return {undotted(code): code for code in sorted(known)}


def normalise_icd(code: str | None, *, strip_dots: bool, known: Mapping[str, str] | None = None) -> str | None:
    """The code openIMIS should receive, or None when it has none (see the module docstring).

    ``known`` is :func:`known_index` of openIMIS's list, or None when no list is configured.
    """
    if code is None or not code.strip():
        return None
    code = code.strip().upper()
    if known is not None:
        return known.get(undotted(code))
    return undotted(code) if strip_dots else code


@dataclass(frozen=True)
class DroppedDiagnosis:
    ref_uuid: str
    concept_uuid: str | None
    why: str  # "provisional", "non_coded", "no_icd_map", "unknown_to_openimis:<code>", "duplicate", "over_max"


@dataclass(frozen=True)
class DiagnosisSelection:
    chosen: tuple[ClaimDiagnosis, ...]
    dropped: tuple[DroppedDiagnosis, ...]


def select_diagnoses(
    diagnoses: Iterable[Diagnosis],
    policy: DiagnosisPolicyLike,
    *,
    strip_dots: bool,
    known: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> DiagnosisSelection:
    """Apply the diagnosis policy; ``overrides`` maps a diagnosis concept uuid to an openIMIS code.

    An override is used as given (it was checked against openIMIS's list when the mapping was
    loaded) and takes precedence over the concept's ICD map.
    """
    overrides = overrides or {}
    ordered = sorted(diagnoses, key=lambda d: (not d.primary, d.recorded, d.ref_uuid))
    chosen: list[ClaimDiagnosis] = []
    dropped: list[DroppedDiagnosis] = []
    seen: set[str] = set()
    for dx in ordered:

        def drop(why: str, dx: Diagnosis = dx) -> None:
            dropped.append(DroppedDiagnosis(dx.ref_uuid, dx.concept_uuid, why))

        if policy.confirmed_only and dx.certainty != "CONFIRMED":
            drop("provisional")
            continue
        if dx.concept_uuid is None or dx.concept_id is None:
            drop("non_coded")
            continue
        code = overrides.get(dx.concept_uuid)
        if code is None:
            if dx.icd10 is None:
                drop("no_icd_map")
                continue
            code = normalise_icd(dx.icd10, strip_dots=strip_dots, known=known)
            if code is None:
                drop(f"unknown_to_openimis:{dx.icd10}")
                continue
        if code in seen:
            drop("duplicate")
            continue
        if len(chosen) >= policy.max:
            drop("over_max")
            continue
        seen.add(code)
        chosen.append(ClaimDiagnosis(icd10=code, concept_id=dx.concept_id, primary=dx.primary))
    return DiagnosisSelection(tuple(chosen), tuple(dropped))


# ------------------------------------------------------------------------------------------
# Consultations: billed from the encounter type (and optionally the visit type), no OpenMRS row
# ------------------------------------------------------------------------------------------


def consultation_rule(encounter: Encounter, visit: Visit, rules: Iterable[RuleT]) -> RuleT | None:
    """The first rule whose encounter type (and visit type, if it names one) matches, by uuid or name."""
    for rule in rules:
        if rule.encounter_type not in (encounter.type_uuid, encounter.type_name):
            continue
        if rule.visit_type is not None and rule.visit_type not in (visit.type_uuid, visit.type_name):
            continue
        return rule
    return None


def derived_line_uuid(encounter_uuid: str, code: str) -> str:
    """Deterministic synthetic id of a derived line: the same encounter and code give the same id."""
    return str(uuid.uuid5(DERIVED_LINE_NAMESPACE, f"{encounter_uuid}:{code}"))


def derive_consultations(
    encounters: Iterable[Encounter],
    visit: Visit,
    rules: Iterable[ConsultationRuleLike],
    concept_ids: Mapping[str, int],
) -> tuple[BillableLine, ...]:
    """One consultation line per non-voided encounter that a rule matches.

    No OpenMRS row records a consultation, so the line stands for the rule's configured
    ``concept`` (``concept_ids`` resolves its uuid): the billing tables need a real concept.
    """
    rules = tuple(rules)
    lines = []
    for enc in encounters:
        if enc.voided:
            continue
        rule = consultation_rule(enc, visit, rules)
        if rule is None:
            continue
        lines.append(
            BillableLine(
                kind="consultation",
                source_uuid=derived_line_uuid(enc.uuid, rule.service.code),
                encounter_uuid=enc.uuid,
                concept_id=concept_ids.get(rule.concept, 0),
                concept_uuid=rule.concept,
                quantity=Decimal(1),
                served=enc.encounter_datetime,
            )
        )
    return tuple(lines)
