"""What the ledger holds, as plain data: one row per unit, one row per claim sent, one row per
operator action.

Pure (no database driver): the claim service and the ports use these types without importing
the pymysql adapter in :mod:`cdc_claims.ledger.store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdc_claims.lifecycle import State
from cdc_claims.settings import UnitKind


@dataclass(frozen=True)
class LedgerEntry:
    """One ledger row. ``created_at`` / ``updated_at`` are set by the database (UTC)."""

    unit_kind: UnitKind
    unit_uuid: str
    state: State
    claim_code: str | None = None
    revision: int = 0
    content_hash: str = ""
    reason: str | None = None  # a HELD_REASONS key, or None
    detail: str | None = None  # shown to billing staff; never patient names
    attempts: int = 0
    patient_uuid: str | None = None
    visit_uuid: str | None = None
    encounter_uuids: tuple[str, ...] = ()
    openimis_claim_uuid: str | None = None
    last_error: str | None = None
    draft_json: str | None = None  # ClaimDraft JSON as last sent
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ClaimRecord:
    """One claim sent to openIMIS for a unit: the original, a supplement or a replacement."""

    claim_code: str
    unit_kind: UnitKind
    unit_uuid: str
    kind: str  # original | supplement | replacement
    state: State
    seq: int = 0
    related_code: str | None = None
    content_hash: str = ""
    draft_json: str | None = None
    openimis_claim_uuid: str | None = None
    reason: str | None = None
    detail: str | None = None
    last_error: str | None = None
    withdrawal: str | None = None  # JSON {source uuid: {code, quantity, why}} or {"*": ...}
    rejected_lines: tuple[str, ...] = ()  # source uuids of the lines openIMIS rejected
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ActionRecord:
    """One operator action as audited (``cdc_claims_action``): who asked what of which unit or
    claim, when (UTC), and what it came to. Never changed once written."""

    at: datetime
    actor: str
    action: str  # rerun | rerun-held | resubmit | refresh | withdrawal-handled
    target: str  # unit uuid, claim code, or the filter of a bulk re-run
    ok: bool
    message: str
    id: int | None = None


def missing_original(entry: LedgerEntry, history: Sequence[ClaimRecord]) -> ClaimRecord | None:
    """The original claim a unit's ledger row stands for when its history has no row for it (a
    unit claimed before the history table existed); None when the history has it, or there is none."""
    if not entry.claim_code or not entry.draft_json or any(r.claim_code == entry.claim_code for r in history):
        return None
    return original_record(entry, created_at=entry.created_at, updated_at=entry.updated_at)


def original_record(entry: LedgerEntry, **extra: Any) -> ClaimRecord:
    """The history row of the original claim a unit's ledger row holds (one rule for the fields
    both share; ``extra`` sets the rest: reason, detail, rejected lines, timestamps)."""
    if not entry.claim_code:
        raise ValueError(f"{entry.unit_kind} {entry.unit_uuid} has no claim code")
    return ClaimRecord(
        claim_code=entry.claim_code,
        unit_kind=entry.unit_kind,
        unit_uuid=entry.unit_uuid,
        kind="original",
        state=entry.state,
        seq=entry.revision,
        content_hash=entry.content_hash,
        draft_json=entry.draft_json,
        openimis_claim_uuid=entry.openimis_claim_uuid,
        **extra,
    )


@dataclass(frozen=True)
class Lease:
    """Who holds a unit's submit lease after an attempt to take it, and the unit's row as read in
    the same transaction (so the holder needs no second read before it works on the unit)."""

    holder: str | None
    entry: LedgerEntry | None
