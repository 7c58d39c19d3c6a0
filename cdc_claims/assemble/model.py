"""Domain snapshot of one claimable unit (an encounter, or a whole visit), read from OpenMRS.

These are plain frozen values: the reader (:mod:`cdc_claims.assemble.reader`) fills them from
the *current* database state, and everything after it (selection rules, mapping, the FHIR
builder) is pure. Patient names are deliberately absent: nothing downstream needs them, so
they can never leak into a log or a Kafka topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from cdc_claims.settings import UnitKind

LineKind = Literal["drug", "lab", "radiology", "procedure", "procedure_obs", "consultation"]
Certainty = Literal["CONFIRMED", "PROVISIONAL"]
#: Where a diagnosis is stored: a Bahmni ``Visit Diagnoses`` obs group, or OpenMRS core's table.
DiagnosisSource = Literal["obs", "encounter_diagnosis"]


@dataclass(frozen=True)
class Patient:
    patient_id: int
    uuid: str
    gender: str | None
    birthdate: date | None
    insurance_number: str | None  # openIMIS CHF id, from the configured identifier/attribute


@dataclass(frozen=True)
class Provider:
    provider_id: int
    uuid: str


@dataclass(frozen=True)
class Location:
    location_id: int
    uuid: str
    name: str
    visit_location_uuid: str | None = None  # nearest ancestor tagged "Visit Location"


@dataclass(frozen=True)
class Encounter:
    encounter_id: int
    uuid: str
    type_uuid: str
    type_name: str
    encounter_datetime: datetime
    voided: bool
    location: Location | None
    providers: tuple[Provider, ...] = ()


@dataclass(frozen=True)
class Visit:
    visit_id: int
    uuid: str
    type_uuid: str
    type_name: str
    date_started: datetime
    date_stopped: datetime | None
    voided: bool
    location: Location | None


@dataclass(frozen=True)
class Diagnosis:
    """One current diagnosis, from either storage model (obs group or ``encounter_diagnosis``)."""

    source: DiagnosisSource
    ref_uuid: str  # obs group uuid, or encounter_diagnosis uuid
    encounter_uuid: str
    concept_id: int | None  # None for a non-coded (free-text) diagnosis
    concept_uuid: str | None
    icd10: str | None  # normalised code through the configured ICD source, None if unmapped
    certainty: Certainty
    primary: bool
    recorded: datetime


@dataclass(frozen=True)
class BillableLine:
    """One billable thing: an active order, a procedure recorded as an obs, or a derived service."""

    kind: LineKind
    source_uuid: str  # order uuid, obs uuid, or a deterministic synthetic id for derived lines
    encounter_uuid: str
    concept_id: int
    concept_uuid: str
    quantity: Decimal
    served: datetime
    drug_id: int | None = None
    drug_uuid: str | None = None
    order_type_uuid: str | None = None
    care_setting: str | None = None  # OUTPATIENT / INPATIENT
    #: the line's identity across edits: the first order of its revision chain (a Bahmni edit of
    #: a drug's quantity REVISEs the order: a new order uuid, the same line). Empty: ``source_uuid``.
    line_id: str = ""
    #: (source name, term code) of the concept's reference maps, for mapping rules keyed by a term
    #: instead of a concept uuid; only the sources the mapping names are read.
    concept_codes: tuple[tuple[str, str], ...] = ()
    #: (source name, term code) of the drug's own reference maps (``drug_reference_map``): a
    #: hospital that keeps openIMIS item codes as drug reference terms needs no entry per drug.
    drug_codes: tuple[tuple[str, str], ...] = ()


DocumentStore = Literal["documents", "complex_obs"]


@dataclass(frozen=True)
class DocumentRef:
    """A document filed in the unit's visit: where its file is, never its content."""

    obs_uuid: str
    encounter_uuid: str
    concept_uuid: str  # the obs group concept of a Bahmni upload; a complex obs's own concept
    concept_name: str
    store: DocumentStore  # Bahmni's document_images, or OpenMRS's complex_obs directory
    path: str  # relative to the store, as OpenMRS keeps it
    recorded: datetime


@dataclass(frozen=True)
class ClaimContext:
    """Everything the claim builder needs about one unit, as the database holds it now."""

    unit_kind: UnitKind
    unit_uuid: str  # encounter uuid or visit uuid
    patient: Patient
    visit: Visit
    encounters: tuple[Encounter, ...]  # the encounter, or every encounter of the visit
    diagnoses: tuple[Diagnosis, ...] = ()
    lines: tuple[BillableLine, ...] = ()
    read_at: datetime | None = None
    #: documents of the unit's visit filed under a concept the mapping attaches (empty otherwise)
    documents: tuple[DocumentRef, ...] = ()

    @property
    def primary_encounter(self) -> Encounter:
        """The encounter whose location and provider stand for the claim (the first one)."""
        return min(self.encounters, key=lambda e: (e.encounter_datetime, e.encounter_id))


# --------------------------------------------------------------------------------------
# What the mapping makes of a ClaimContext: the openIMIS-facing draft the FHIR builder renders.
# --------------------------------------------------------------------------------------

ItemCategory = Literal["item", "service"]


@dataclass(frozen=True)
class ClaimLine:
    sequence: int
    category: ItemCategory  # openIMIS: "item" (Medication) or "service" (ActivityDefinition)
    code: str  # openIMIS item/service code
    reference: str  # openIMIS uuid when known, else the code
    quantity: Decimal
    unit_price: Decimal
    source_uuid: str  # back-link to the order / obs / derived line
    concept_id: int
    kind: LineKind
    line_id: str = ""  # identity across edits (first order of a revision chain); empty = source_uuid

    @property
    def total(self) -> Decimal:
        return self.quantity * self.unit_price

    @property
    def identity(self) -> str:
        """What stays the same when a clinician edits this line (see :attr:`BillableLine.line_id`)."""
        return self.line_id or self.source_uuid


@dataclass(frozen=True)
class ClaimDiagnosis:
    icd10: str
    concept_id: int
    primary: bool


@dataclass(frozen=True)
class ClaimAttachment:
    """A document the claim carries (``supportingInfo``, category ``attachment``).

    Only where the file is and what openIMIS is told about it: the bytes are read when the Claim
    is rendered for the POST, so neither the ledger, the reply topic nor the audit topic ever
    holds a document's content."""

    obs_uuid: str
    title: str
    content_type: str
    store: DocumentStore
    path: str
    creation: date


@dataclass(frozen=True)
class ClaimDraft:
    """A claim ready to render as FHIR: every openIMIS code resolved, nothing left to look up."""

    code: str  # deterministic claim code, <= 50 characters
    unit_kind: UnitKind
    unit_uuid: str
    visit_uuid: str
    encounter_uuids: tuple[str, ...]
    patient_uuid: str  # OpenMRS patient uuid
    patient_id: int
    insuree: str  # openIMIS insuree reference (uuid, or CHF id)
    facility: str  # openIMIS health facility reference (uuid or code)
    facility_code: str
    enterer: str  # openIMIS claim admin reference (uuid or code)
    visit_type: Literal["E", "R", "O"]
    period_start: date
    period_end: date
    created: date
    diagnoses: tuple[ClaimDiagnosis, ...]
    lines: tuple[ClaimLine, ...]
    location_id: int | None = None
    provider_id: int | None = None
    visit_id: int | None = None
    encounter_id: int | None = None
    visit_type_id: int | None = None
    content_hash: str = field(default="", compare=False)
    #: a supplement or replacement: the claim it adds to or replaces (FHIR ``Claim.related``)
    related_code: str | None = None
    #: FHIR related-claim-relationship: ``associated`` (a supplement), ``prior`` (a replacement)
    relationship: Literal["associated", "prior"] | None = None
    #: free text for the payer's reviewer (openIMIS stores it in ``tblClaim.Explanation``)
    explanation: str | None = None
    #: documents sent with the claim (``Claim.supportingInfo``); not part of ``content_hash``
    attachments: tuple[ClaimAttachment, ...] = ()

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal(0))
