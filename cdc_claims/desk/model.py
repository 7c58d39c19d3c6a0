"""What the desk shows, as plain frozen values, and the read port the web app depends on.

:class:`DeskReads` is what :func:`cdc_claims.desk.app.create_app` asks; the MySQL adapter is
:class:`cdc_claims.desk.store.DeskStore`, and the unit tests pass an in-memory one. Patient
names and identifiers appear here (staff who signed in may see them); nothing here is logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from cdc_claims.desk.filters import Filters
from cdc_claims.ledger.model import ClaimRecord, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.settings import UnitKind


@dataclass(frozen=True)
class Option:
    """One choice of a select box (a facility, a visit type)."""

    value: str
    label: str


@dataclass(frozen=True)
class UnitRow:
    """One encounter or visit in the list."""

    unit_kind: UnitKind
    unit_uuid: str
    state: State
    reason: str | None = None
    detail: str | None = None
    claim_code: str | None = None
    patient_uuid: str | None = None
    patient_name: str | None = None
    patient_identifier: str | None = None
    visit_type: str | None = None
    facility: str | None = None
    claimed: Decimal | None = None
    approved: Decimal | None = None
    withdrawal: bool = False  # some claim of the unit has lines to withdraw in openIMIS
    attempts: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Page:
    rows: tuple[UnitRow, ...]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


@dataclass(frozen=True)
class LineView:
    """One claim line: what was claimed (the draft as sent) and what openIMIS made of it (iclm)."""

    claim_code: str
    source_uuid: str
    sequence: int
    kind: str  # drug, lab, radiology, procedure, procedure_obs, consultation
    category: str  # item | service
    code: str  # openIMIS code
    name: str | None
    quantity: Decimal
    unit_price: Decimal
    quantity_approved: Decimal | None = None
    price_approved: Decimal | None = None
    status: str | None = None  # PASSED | REJECTED | None (no answer yet)
    rejection_reason: str | None = None  # "<code> <openIMIS text>", as the iclm writer stores it
    withdraw: str | None = None  # why it must be withdrawn in openIMIS (removed, reduced, voided)

    @property
    def claimed(self) -> Decimal:
        return self.quantity * self.unit_price

    @property
    def approved(self) -> Decimal | None:
        if self.price_approved is None:
            return None
        return (self.quantity_approved if self.quantity_approved is not None else self.quantity) * self.price_approved


@dataclass(frozen=True)
class WithdrawalLine:
    """A line of a claim billing staff must withdraw in openIMIS (``*``: the whole claim)."""

    source_uuid: str
    code: str
    quantity: str
    why: str
    name: str | None = None  # the line's drug or test name, when the claim as sent holds it


@dataclass(frozen=True)
class DocumentView:
    """A document sent with a claim (mapping ``attachments``): what openIMIS's reviewer sees."""

    claim_code: str
    title: str
    content_type: str
    creation: date
    obs_uuid: str


@dataclass(frozen=True)
class ClaimView:
    """One claim sent for the unit, with its billing row (``iclm_claim``) when a reply was written."""

    record: ClaimRecord
    lines: tuple[LineView, ...] = ()
    documents: tuple[DocumentView, ...] = ()
    withdrawals: tuple[WithdrawalLine, ...] = ()
    iclm_status: str | None = None
    claimed_total: Decimal | None = None
    approved_total: Decimal | None = None
    rejection_reason: str | None = None
    explanation: str | None = None
    adjustment: str | None = None
    external_id: str | None = None
    billed_at: datetime | None = None  # iclm_claim.date_created: the first reply written
    changed_at: datetime | None = None  # iclm_claim.date_changed
    processed_at: datetime | None = None  # iclm_claim.date_processed: the money decided

    @property
    def open(self) -> bool:
        """openIMIS may still change it: worth a Refresh."""
        return self.record.state in {
            State.SUBMITTING,
            State.ENTERED,
            State.CHECKED,
            State.PROCESSED,
            State.UNKNOWN_STATUS,
        }


@dataclass(frozen=True)
class DiagnosisView:
    icd10: str
    name: str | None
    primary: bool


@dataclass(frozen=True)
class EncounterView:
    uuid: str
    type_name: str | None
    at: datetime | None
    location: str | None
    voided: bool = False


@dataclass(frozen=True)
class PatientView:
    uuid: str
    name: str | None
    identifiers: tuple[tuple[str, str], ...] = ()  # (identifier type, identifier)
    gender: str | None = None
    birthdate: date | None = None


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    what: str


@dataclass(frozen=True)
class UnitDetail:
    """Everything the detail page shows about one encounter or visit."""

    entry: LedgerEntry
    patient: PatientView | None = None
    visit_type: str | None = None
    facility: str | None = None
    visit_started: datetime | None = None
    visit_stopped: datetime | None = None
    encounters: tuple[EncounterView, ...] = ()
    claims: tuple[ClaimView, ...] = ()
    diagnoses: tuple[DiagnosisView, ...] = ()
    timeline: tuple[TimelineEvent, ...] = ()
    #: uuid -> display name of what the held detail names (drugs, concepts, locations...)
    names: dict[str, str] = field(default_factory=dict)

    @property
    def lines(self) -> tuple[LineView, ...]:
        return tuple(line for claim in self.claims for line in claim.lines)

    @property
    def rejected_lines(self) -> tuple[LineView, ...]:
        return tuple(line for line in self.lines if line.status == "REJECTED")

    @property
    def documents(self) -> tuple[DocumentView, ...]:
        return tuple(doc for claim in self.claims for doc in claim.documents)


@dataclass(frozen=True)
class Bucket:
    """One day or week of the summary: claims and amounts by status."""

    start: date
    label: str
    counts: dict[str, int]
    claimed: dict[str, Decimal]
    approved: dict[str, Decimal]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class ClaimFact:
    """One claim sent, for the summary: when (UTC day), where it stands, and its amounts."""

    day: date
    state: str
    claimed: Decimal | None = None
    approved: Decimal | None = None


@dataclass(frozen=True)
class Summary:
    date_from: date
    date_to: date
    statuses: tuple[str, ...]
    days: tuple[Bucket, ...]
    weeks: tuple[Bucket, ...]
    top_rejections: tuple[tuple[str, int], ...] = ()  # (stored reason, lines) most frequent first
    needs_action: tuple[tuple[str, int], ...] = ()  # (reason, units held or failed now)


class DeskReads(Protocol):
    """What the web app reads. Every method may raise a ``CdcClaimsError`` (database down)."""

    def units(self, filters: Filters, *, page_size: int) -> Page: ...

    def unit(self, kind: UnitKind, uuid: str) -> UnitDetail | None: ...

    def claim_unit(self, claim_code: str) -> tuple[UnitKind, str] | None: ...

    def summary(self, date_from: date, date_to: date) -> Summary: ...

    def facilities(self) -> Sequence[Option]: ...

    def visit_types(self) -> Sequence[Option]: ...

    def ping(self) -> None: ...
