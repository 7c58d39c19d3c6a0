"""Settled unit -> claim in openIMIS -> reply on Kafka, exactly once as seen from openIMIS.

The ordering below is what makes "never a lost claim, never a duplicate" hold across crashes:

1. read the unit's *current* state and build the draft (pure); its claim code is derived from
   facility + unit uuid + revision, and its ``content_hash`` from the claim content;
2. write-ahead: the ledger row goes to ``submitting`` **before** the POST;
3. POST; "Claim with code ... already exists" means an earlier attempt got through, so the
   ClaimResponse is fetched instead;
4. publish the normalized reply (and flush) **before** the ledger moves on;
5. only then may the caller commit the Kafka offsets of the records behind the unit.

A crash anywhere replays the unit: unchanged content gives the same code, hence no duplicate;
content changed after a code reached openIMIS is never re-sent under that code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from cdc_claims import metrics
from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.errors import HELD_REASONS, ClaimRefused, DuplicateClaimCode, NotClaimable
from cdc_claims.failpoints import failpoint
from cdc_claims.ledger.store import LedgerEntry
from cdc_claims.lifecycle import OPENIMIS_STATUS, SUBMITTED_STATES, Event, State, advance
from cdc_claims.log import get_logger
from cdc_claims.pipeline.ports import ClaimApi, DraftBuilder, LedgerPort, Publisher, Reader, Renderer, UnitRef
from cdc_claims.reply.model import NormalizedResponse, ReplyMessage, Timings, encode_draft

log = get_logger(__name__)

Normalizer = Callable[..., NormalizedResponse]
Outcome = Literal["submitted", "replayed", "held", "failed", "cancelled", "unchanged", "changed_after_submit"]


@dataclass(frozen=True)
class UnitResult:
    unit: UnitRef
    outcome: Outcome
    claim_code: str | None = None
    reason: str | None = None
    status: str | None = None


class ClaimService:
    """Runs one settled unit through assemble -> claim -> submit -> reply."""

    def __init__(
        self,
        *,
        reader: Reader,
        build_draft: DraftBuilder,
        renderer: Renderer,
        api: ClaimApi,
        normalize: Normalizer,
        publisher: Publisher,
        ledger: LedgerPort,
        resubmit_on_change: bool = False,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reader = reader
        self._build = build_draft
        self._render = renderer
        self._api = api
        self._normalize = normalize
        self._pub = publisher
        self._ledger = ledger
        self._resubmit = resubmit_on_change
        self._today = today
        self._now = now

    def process(self, unit: UnitRef) -> UnitResult:
        """Process one unit. Retriable errors propagate: the caller keeps the unit pending."""
        ctx = self._reader.read(unit)
        entry = self._ledger.get(ctx.unit_kind, ctx.unit_uuid)
        state = State(entry.state) if entry is not None else State.SETTLED
        revision = entry.revision if entry is not None else 0
        bound = log.bind(unit=str(unit), unit_uuid=ctx.unit_uuid)

        try:
            draft = self._build(ctx, created=self._today(), revision=revision)
        except NotClaimable as held:
            return self._not_claimable(unit, ctx, entry, state, held)

        if entry is not None and state in SUBMITTED_STATES:
            same = entry.content_hash == draft.content_hash and entry.claim_code == draft.code
            if same and state is not State.SUBMITTING:
                bound.debug("claim_unchanged", claim_code=draft.code, state=state.value)
                return UnitResult(unit, "unchanged", draft.code, status=state.value)
            if not same:
                if not self._resubmit:
                    return self._changed_after_submit(unit, ctx, entry, draft)
                draft = self._build(ctx, created=self._today(), revision=revision + 1)
                state = State.SETTLED
        metrics.CLAIMS_BUILT.labels(unit=ctx.unit_kind).inc()
        return self._submit(unit, ctx, entry, state, draft)

    # ------------------------------------------------------------------ submit path
    def _submit(self, unit: UnitRef, ctx: ClaimContext, entry: Any, state: State, draft: ClaimDraft) -> UnitResult:
        attempts = (entry.attempts if entry is not None else 0) + 1
        if state is not State.SUBMITTING:
            # every pre-submit state (held, failed, cancelled, detected) re-enters through "settled"
            advance(State.SETTLED, Event.SUBMIT)
        try:
            claim = self._render.claim(draft)
        except ValueError as invalid:  # ClaimRenderError: nothing was sent
            return self._hold_draft(unit, ctx, draft, "invalid_claim", str(invalid))
        self._record(ctx, draft, State.SUBMITTING, attempts=attempts)
        replayed = False
        started = time.monotonic()
        try:
            metrics.CLAIMS_SUBMITTED.inc()
            response = self._api.submit_claim(claim)
        except DuplicateClaimCode:
            replayed = True
            response = self._api.get_claim_response(draft.code)
        except ClaimRefused as refused:
            self._pub.audit(draft.code, self._render.audit_bundle(ctx, draft, claim))
            return self._fail(unit, ctx, draft, attempts, reason="refused_by_openimis", text=refused.message)

        submit_seconds = time.monotonic() - started
        failpoint("after_submit")  # openIMIS has the claim; no reply, ledger still "submitting"
        try:
            normalized = self._normalize(response, draft, received_at=self._now())
        except ValueError as mismatch:  # ResponseMismatch: keep it visible, re-runnable
            return self._fail(unit, ctx, draft, attempts, reason="unreadable_response", text=str(mismatch))
        timings = Timings(unit.captured_ms, submit_seconds, int(time.time() * 1000))
        self._pub.reply(ReplyMessage(draft, normalized, unit.source_committed_ms, timings))
        self._pub.flush()
        failpoint("after_reply")  # reply published; ledger and offsets not yet moved on
        # The audit Bundle (Claim as sent + Patient, Encounter, ...) is off the writer's critical path.
        self._pub.audit(draft.code, self._render.audit_bundle(ctx, draft, claim))
        new_state = advance(State.SUBMITTING, OPENIMIS_STATUS[normalized.openimis_status][0])
        self._record(ctx, draft, new_state, attempts=attempts, openimis_claim_uuid=normalized.claim_uuid)
        self._pub.flush()
        _count_response(normalized)
        log.info(
            "claim_submitted",
            claim_code=draft.code,
            unit_uuid=ctx.unit_uuid,
            status=normalized.iclm_status,
            replayed=replayed,
            lines=len(draft.lines),
        )
        return UnitResult(unit, "replayed" if replayed else "submitted", draft.code, status=new_state.value)

    def _fail(
        self, unit: UnitRef, ctx: ClaimContext, draft: ClaimDraft, attempts: int, *, reason: str, text: str
    ) -> UnitResult:
        detail = text[:2000]
        self._record(
            ctx, draft, advance(State.SUBMITTING, Event.REFUSED), attempts=attempts, reason=reason, detail=detail
        )
        self._pub.held(draft.code, _held_payload(ctx, draft.code, reason, detail, "failed"))
        self._pub.flush()
        metrics.CLAIMS_HELD.labels(reason=reason).inc()
        log.warning("claim_failed", claim_code=draft.code, unit_uuid=ctx.unit_uuid, reason=reason, detail=detail[:300])
        return UnitResult(unit, "failed", draft.code, reason=reason)

    def _hold_draft(self, unit: UnitRef, ctx: ClaimContext, draft: ClaimDraft, reason: str, text: str) -> UnitResult:
        detail = text[:2000]
        self._record(ctx, draft, State.HELD, attempts=0, reason=reason, detail=detail)
        self._pub.held(ctx.unit_uuid, _held_payload(ctx, draft.code, reason, detail, "held"))
        self._pub.flush()
        metrics.CLAIMS_HELD.labels(reason=reason).inc()
        log.warning("claim_held", unit_uuid=ctx.unit_uuid, reason=reason, detail=detail[:300])
        return UnitResult(unit, "held", draft.code, reason=reason)

    # ------------------------------------------------------------------ skips
    def _not_claimable(
        self, unit: UnitRef, ctx: ClaimContext, entry: Any, state: State, held: NotClaimable
    ) -> UnitResult:
        code = entry.claim_code if entry is not None else ""
        if entry is not None and state in SUBMITTED_STATES:
            # openIMIS already holds a claim for this unit: never silently drop that fact.
            detail = f"{HELD_REASONS[held.reason]} after the claim was submitted: {held.detail}"
            self._pub.held(code, _held_payload(ctx, code, held.reason, detail, "notice"))
            self._pub.flush()
            log.warning("submitted_claim_now_not_claimable", claim_code=code, reason=held.reason)
            return UnitResult(unit, "changed_after_submit", code, reason=held.reason)
        new_state = State.CANCELLED if held.reason == "voided" else State.HELD
        kind: Literal["held", "cancelled"] = "cancelled" if new_state is State.CANCELLED else "held"
        self._ledger.upsert(
            LedgerEntry(
                unit_kind=ctx.unit_kind,
                unit_uuid=ctx.unit_uuid,
                state=new_state,
                claim_code=code or None,
                revision=entry.revision if entry is not None else 0,
                content_hash=entry.content_hash if entry is not None else "",
                reason=held.reason,
                detail=held.detail[:2000],
                attempts=entry.attempts if entry is not None else 0,
                patient_uuid=ctx.patient.uuid,
                visit_uuid=ctx.visit.uuid,
                encounter_uuids=tuple(e.uuid for e in ctx.encounters),
                draft_json=entry.draft_json if entry is not None else None,
            )
        )
        self._pub.held(ctx.unit_uuid, _held_payload(ctx, code or None, held.reason, held.detail, kind))
        self._pub.flush()
        metrics.CLAIMS_HELD.labels(reason=held.reason).inc()
        log.info("claim_held", unit_uuid=ctx.unit_uuid, reason=held.reason, state=new_state.value)
        return UnitResult(unit, "cancelled" if kind == "cancelled" else "held", code or None, reason=held.reason)

    def _changed_after_submit(self, unit: UnitRef, ctx: ClaimContext, entry: Any, draft: ClaimDraft) -> UnitResult:
        detail = (
            f"claim {entry.claim_code} is already in openIMIS; the encounter changed since "
            "(set resubmit_on_change to send a new revision)"
        )
        self._pub.held(entry.claim_code, _held_payload(ctx, entry.claim_code, "changed_after_submit", detail, "notice"))
        self._pub.flush()
        metrics.CLAIMS_HELD.labels(reason="changed_after_submit").inc()
        log.warning("claim_changed_after_submit", claim_code=entry.claim_code, unit_uuid=ctx.unit_uuid)
        return UnitResult(unit, "changed_after_submit", entry.claim_code, reason="changed_after_submit")

    def _record(
        self,
        ctx: ClaimContext,
        draft: ClaimDraft,
        state: State,
        *,
        attempts: int,
        reason: str | None = None,
        detail: str | None = None,
        openimis_claim_uuid: str | None = None,
    ) -> None:
        self._ledger.upsert(
            LedgerEntry(
                unit_kind=ctx.unit_kind,
                unit_uuid=ctx.unit_uuid,
                state=state,
                claim_code=draft.code,
                revision=_revision_of(draft.code),
                content_hash=draft.content_hash,
                reason=reason,
                detail=detail,
                attempts=attempts,
                patient_uuid=ctx.patient.uuid,
                visit_uuid=ctx.visit.uuid,
                encounter_uuids=draft.encounter_uuids,
                openimis_claim_uuid=openimis_claim_uuid,
                draft_json=encode_draft(draft),
            )
        )


def _revision_of(code: str) -> int:
    """Revision suffix ``-R<n>`` of a claim code (0 when absent)."""
    head, sep, tail = code.rpartition("-R")
    return int(tail) if sep and head and tail.isdigit() else 0


def _held_payload(ctx: ClaimContext, code: str | None, reason: str, detail: str, kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "unit_kind": ctx.unit_kind,
        "unit_uuid": ctx.unit_uuid,
        "visit_uuid": ctx.visit.uuid,
        "patient_uuid": ctx.patient.uuid,
        "encounter_uuids": [e.uuid for e in ctx.encounters],
        "claim_code": code,
        "reason": reason,
        "reason_text": HELD_REASONS.get(reason, reason),
        "detail": detail,
        "at": datetime.now(UTC).isoformat(),
    }


def _count_response(normalized: NormalizedResponse) -> None:
    if normalized.openimis_status == 1:
        metrics.CLAIMS_REJECTED.inc()
    else:
        metrics.CLAIMS_ACCEPTED.labels(status=normalized.iclm_status).inc()
    for line in normalized.lines:
        if line.status == "REJECTED":
            metrics.CLAIM_LINES_REJECTED.labels(reason_code=str(line.reason_code)).inc()
