"""The mapping file: how OpenMRS metadata becomes openIMIS codes (validated once, at start-up).

One YAML file says where the insurance number lives, which concept source carries ICD-10, which
openIMIS health facility, claim admin, item or service each OpenMRS location, provider, concept
or drug stands for, and what a consultation is billed as. :func:`load_mapping` validates all of
it and raises one :class:`~cdc_claims.errors.ConfigError` that lists *every* problem with its
YAML path (``concepts.f2af3cd5-....price: Input should be ...``), so an operator fixes the file
in one go. Nothing here reads the database; ``check-mapping`` (:mod:`cdc_claims.mapping.check`)
compares a loaded mapping with what the database actually uses.

Shape (see ``examples/mapping.yaml`` for a complete example)::

    openimis:        {claim_admin_default: {code, uuid?}, insuree_uuids: {CHF id: uuid}}
    claim_code:      {prefix: ""}
    insurance_number: {patient_identifier_type: <uuid|name>} | {person_attribute_type: <uuid|name>}
    icd10:           {source: {uuid?, names: [...]}, strip_dots, known_codes_file?, overrides: {concept uuid: code}}
    diagnoses:       {confirmed_only: true, max: 5}
    facilities:      {location uuid: {code, uuid?}}
    claim_admins:    {provider uuid: {code, uuid?}}
    visit_types:     {visit type uuid|name: E|R|O}         # anything else: O
    concepts:        {concept uuid: {category: item|service, code, price, uuid?}}
    concept_terms:   [{source: <source name>, term: <term code>, category, code, price, uuid?}]
    reference_terms: {source: ExternalCode}   # term code = openIMIS code; item/service, uuid, price from openIMIS
    drugs:           {drug uuid: {code, price, uuid?}}       # drugs are openIMIS items
    consultations:   [{encounter_type: <uuid|name>, visit_type?: <uuid|name>, service: {code, price, uuid?}}]
    order_types:     {lab: [...], radiology: [...], procedure: [...]}   # uuid or name; drug = DrugOrder class
    procedure_obs_concepts: [concept uuid, ...]
    attachments:     {max_bytes, max_total_bytes, document_concept: Document,
                      documents: [{concept: <uuid|name>, title?, required: false}]}   # Claim.supportingInfo
"""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from cdc_claims.assemble.vocabulary import DEFAULT_ICD_SOURCE_NAMES, OPERATIVE_NOTES_PROCEDURE
from cdc_claims.errors import ConfigError

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: Longest openIMIS claim code (``tblClaim.ClaimCode varchar(50)``).
CLAIM_CODE_MAX = 50
#: Fewest hex digits of the unit uuid a claim code keeps (64 bits), checked at load for revisions up to 99.
CLAIM_CODE_MIN_HEX = 16
_REVISION_ROOM = len("-R99")


def is_uuid(value: str) -> bool:
    return bool(_UUID.match(value))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OpenImisRef(_Strict):
    """An openIMIS object: its code, and its uuid when known (uuid references are deterministic)."""

    code: str = Field(min_length=1, max_length=50)
    uuid: str | None = None

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is not None and not is_uuid(value):
            raise ValueError("must be a uuid")
        return value

    @property
    def reference(self) -> str:
        return self.uuid or self.code


class PricedRef(OpenImisRef):
    price: Decimal = Field(ge=0)


class BillableTarget(PricedRef):
    category: Literal["item", "service"]


class TermRule(BillableTarget):
    """A concept identified by a reference term (``source`` name + ``term`` code) instead of a uuid."""

    source: str = Field(min_length=1)
    term: str = Field(min_length=1)


class ReferenceTerms(_Strict):
    """Codes the hospital already keeps: a concept's (or, via ``drug_reference_map``, a drug's)
    reference term in ``source`` *is* its openIMIS code. The item or service, its uuid and its
    price come from openIMIS's catalogue (the facility's pricelist price), so no entry is written
    per concept or drug. Explicit ``concepts``/``drugs``/``concept_terms`` entries win."""

    source: str = Field(default="ExternalCode", min_length=1)  # openmrs-module-insuranceclaims' source


#: openIMIS 1.10 keeps an attachment whose content type matches one of these (CONTRACT §4.1);
#: a Bahmni document of another type is held as ``attachment_unsupported``, never sent.
ATTACHMENT_TYPES: dict[str, str] = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".txt": "text/plain",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


class DocumentRule(_Strict):
    """A kind of Bahmni document sent with the claim: the obs group concept a document is filed
    under (a Bahmni upload: ``Discharge Summary``, a radiology test; a complex obs: its own concept)."""

    concept: str = Field(min_length=1)  # uuid or fully specified name
    title: str | None = Field(default=None, max_length=250)  # default: the concept's name
    #: hold the claim as ``attachment_missing`` until such a document is in the visit
    required: bool = False


class AttachmentsSection(_Strict):
    """Documents attached as ``Claim.supportingInfo`` (category ``attachment``), read from Bahmni's
    document store. The limits keep one claim's POST (base64 adds a third) within what the
    openHIM channel and openIMIS accept; a document above them holds the claim
    (``attachment_too_large``) instead of being dropped silently."""

    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_total_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    #: the concept of the obs that holds a Bahmni upload's file path (Bahmni's ``Document``)
    document_concept: str = Field(default="Document", min_length=1)
    documents: tuple[DocumentRule, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _limits(self) -> AttachmentsSection:
        if self.max_total_bytes < self.max_bytes:
            raise ValueError("max_total_bytes must be at least max_bytes")
        return self


class ConsultationRule(_Strict):
    encounter_type: str = Field(min_length=1)  # uuid or name
    visit_type: str | None = None  # uuid or name; None = any
    service: PricedRef
    #: uuid of the OpenMRS concept that stands for this service in the billing tables
    #: (``iclm_provided_item.item`` is a NOT NULL reference to ``concept``).
    concept: str = Field(min_length=36, max_length=38)


class OpenImisSection(_Strict):
    claim_admin_default: OpenImisRef
    insuree_uuids: dict[str, str] = Field(default_factory=dict)  # CHF id -> insuree uuid (cache)

    @field_validator("insuree_uuids")
    @classmethod
    def _uuids(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k, v in value.items() if not is_uuid(v))
        if bad:
            raise ValueError(f"not a uuid for CHF id(s): {', '.join(bad)}")
        return value


class ClaimCodeSection(_Strict):
    prefix: str = Field(default="", max_length=20, pattern=r"^[A-Za-z0-9_.-]*$")


class InsuranceNumberSection(_Strict):
    """Exactly one home of the openIMIS CHF id."""

    patient_identifier_type: str | None = None  # uuid or name, e.g. ExternalId
    person_attribute_type: str | None = None  # uuid or name, e.g. "NHIS Number"

    @model_validator(mode="after")
    def _exactly_one(self) -> InsuranceNumberSection:
        if (self.patient_identifier_type is None) == (self.person_attribute_type is None):
            raise ValueError("set exactly one of patient_identifier_type, person_attribute_type")
        return self


class IcdSource(_Strict):
    uuid: str | None = None
    names: tuple[str, ...] = DEFAULT_ICD_SOURCE_NAMES


class Icd10Section(_Strict):
    source: IcdSource = IcdSource()
    strip_dots: bool = True
    known_codes_file: Path | None = None  # CSV with a "code" column; '#' lines are comments
    overrides: dict[str, str] = Field(default_factory=dict)  # diagnosis concept uuid -> openIMIS ICD code


class DiagnosisPolicy(_Strict):
    confirmed_only: bool = True
    max: int = Field(default=5, ge=1, le=5)  # openIMIS keeps icd, icd_1 .. icd_4


class OrderTypesSection(_Strict):
    """Non-drug order types that bill (uuid or name). Drug orders are recognised by their Java class."""

    lab: tuple[str, ...] = ("Lab Order",)
    radiology: tuple[str, ...] = ("Radiology Order",)
    procedure: tuple[str, ...] = ("Procedure Order",)


class ClaimMapping(_Strict):
    version: Literal[1] = 1
    openimis: OpenImisSection
    claim_code: ClaimCodeSection = ClaimCodeSection()
    insurance_number: InsuranceNumberSection
    icd10: Icd10Section = Icd10Section()
    diagnoses: DiagnosisPolicy = DiagnosisPolicy()
    facilities: dict[str, OpenImisRef]
    claim_admins: dict[str, OpenImisRef] = Field(default_factory=dict)
    visit_types: dict[str, Literal["E", "R", "O"]] = Field(default_factory=dict)
    concepts: dict[str, BillableTarget] = Field(default_factory=dict)
    concept_terms: tuple[TermRule, ...] = ()
    reference_terms: ReferenceTerms | None = None
    drugs: dict[str, PricedRef] = Field(default_factory=dict)
    consultations: tuple[ConsultationRule, ...] = ()
    order_types: OrderTypesSection = OrderTypesSection()
    procedure_obs_concepts: tuple[str, ...] = (OPERATIVE_NOTES_PROCEDURE,)
    attachments: AttachmentsSection | None = None

    _known_icd: frozenset[str] | None = PrivateAttr(default=None)

    @property
    def known_icd_codes(self) -> frozenset[str] | None:
        """openIMIS's own ICD list (as openIMIS spells the codes), or None when not configured."""
        return self._known_icd

    def term_rules(self) -> dict[tuple[str, str], TermRule]:
        return {(r.source, r.term): r for r in self.concept_terms}

    def term_sources(self) -> set[str]:
        """The concept sources whose reference terms the reader must fetch for each line."""
        sources = {rule.source for rule in self.concept_terms}
        if self.reference_terms is not None:
            sources.add(self.reference_terms.source)
        return sources

    def visit_type_code(self, type_uuid: str, type_name: str) -> Literal["E", "R", "O"]:
        return self.visit_types.get(type_uuid) or self.visit_types.get(type_name) or "O"


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def load_mapping(path: Path | str) -> ClaimMapping:
    """Read, validate and resolve a mapping file; every problem is reported in one ConfigError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"mapping file {path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"mapping file {path}: not valid YAML: {err}") from err
    return parse_mapping(data, base_dir=path.parent, origin=str(path))


def parse_mapping(data: Any, *, base_dir: Path, origin: str = "mapping") -> ClaimMapping:
    """Validate an already parsed YAML document; relative file names resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping (key: value)")
    try:
        mapping = ClaimMapping.model_validate(data)
    except ValidationError as err:
        problems = [f"{_loc(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(_problems(origin, problems)) from None
    problems = _semantic_problems(mapping, base_dir)
    if problems:
        raise ConfigError(_problems(origin, problems))
    return mapping


def read_known_codes(path: Path) -> frozenset[str]:
    """The ``code`` column of an openIMIS ICD CSV; lines starting with ``#`` are comments."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        if rows.fieldnames is None or "code" not in rows.fieldnames:
            raise ValueError("no 'code' column")
        return frozenset(row["code"].strip() for row in rows if row["code"] and row["code"].strip())


def _semantic_problems(mapping: ClaimMapping, base_dir: Path) -> list[str]:
    problems: list[str] = []
    for section, keys in (
        ("facilities", mapping.facilities),
        ("claim_admins", mapping.claim_admins),
        ("concepts", mapping.concepts),
        ("drugs", mapping.drugs),
        ("icd10.overrides", mapping.icd10.overrides),
    ):
        problems += [f"{section}.{key}: key must be a uuid" for key in keys if not is_uuid(key)]
    if mapping.icd10.source.uuid is not None and not is_uuid(mapping.icd10.source.uuid):
        problems.append("icd10.source.uuid: must be a uuid")
    if mapping.icd10.source.uuid is None and not mapping.icd10.source.names:
        problems.append("icd10.source: give a uuid or at least one name")
    problems += [
        f"procedure_obs_concepts.{i}: must be a concept uuid"
        for i, value in enumerate(mapping.procedure_obs_concepts)
        if not is_uuid(value)
    ]
    if mapping.attachments is not None:
        concepts = [rule.concept for rule in mapping.attachments.documents]
        problems += [
            f"attachments.documents.{i}: {concept!r} is listed twice"
            for i, concept in enumerate(concepts)
            if concept in concepts[:i]
        ]
    seen: set[tuple[str, str]] = set()
    for i, rule in enumerate(mapping.concept_terms):
        if (rule.source, rule.term) in seen:
            problems.append(f"concept_terms.{i}: duplicate rule for {rule.source}:{rule.term}")
        seen.add((rule.source, rule.term))
    # A claim code must keep at least CLAIM_CODE_MIN_HEX digits of the unit uuid for every facility.
    for key, fac in mapping.facilities.items():
        room = CLAIM_CODE_MAX - len(mapping.claim_code.prefix) - len(fac.code) - 1 - _REVISION_ROOM
        if room < CLAIM_CODE_MIN_HEX:
            problems.append(
                f"facilities.{key}.code: prefix + facility code too long for a {CLAIM_CODE_MAX}-character claim code"
            )
    known_file = mapping.icd10.known_codes_file
    if known_file is not None:
        resolved = known_file if known_file.is_absolute() else base_dir / known_file
        try:
            known = read_known_codes(resolved)
        except (OSError, ValueError, csv.Error) as err:
            problems.append(f"icd10.known_codes_file: {resolved}: {err}")
        else:
            mapping._known_icd = known
            problems += [
                f"icd10.overrides.{concept}: {code!r} is not in the openIMIS ICD list"
                for concept, code in mapping.icd10.overrides.items()
                if code not in known
            ]
    return problems


def _loc(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def _problems(origin: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{origin}: {len(problems)} problem(s):\n{lines}"
