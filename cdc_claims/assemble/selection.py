"""Pure selection rules: which diagnoses a claim carries, how ICD codes are spelled, consultations.

No I/O here: the reader hands over every *current* diagnosis and billable line, and these
functions decide what the claim shows.

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
from decimal import Decimal
from typing import Protocol, TypeVar

from cdc_claims.assemble.model import BillableLine, ClaimDiagnosis, Diagnosis, Encounter, Visit

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
