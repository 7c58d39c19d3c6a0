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

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from cdc_claims import metrics
from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.claim import corrections
from cdc_claims.errors import (
    HELD_REASONS,
    ClaimRefused,
    ClaimRenderError,
    DuplicateClaimCode,
    LeaseHeld,
    NotClaimable,
    ResponseMismatch,
    UnknownClaimStatus,
    WriteBackError,
)
from cdc_claims.failpoints import no_failpoint
from cdc_claims.ledger.model import ClaimRecord, LedgerEntry, missing_original, original_record
from cdc_claims.lifecycle import SUBMITTED_STATES, Event, State, advance, response_event
from cdc_claims.log import get_logger
from cdc_claims.metrics import ClaimMetrics
from cdc_claims.pipeline.ports import (
    ClaimApi,
    Clock,
    DraftBuilder,
    JsonDict,
    LedgerPort,
    PayerCheck,
    Publisher,
    Reader,
    Renderer,
    SystemClock,
    UnitRef,
)
from cdc_claims.reply.model import (
    NormalizedResponse,
    ReplyMessage,
    Timings,
    WithdrawalNotice,
    decode_draft,
    encode_draft,
)

log = get_logger(__name__)

Normalizer = Callable[..., NormalizedResponse]
Outcome = Literal[
    "submitted",
    "replayed",
    "held",
    "failed",
    "cancelled",
    "nothing_to_claim",
    "unchanged",
    "changed_after_submit",
    "withdrawal_needed",
    "supplemented",
    "unknown_status",
]


@dataclass(frozen=True)
class UnitResult:
    unit: UnitRef
    outcome: Outcome
    claim_code: str | None = None
    reason: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class _Sent:
    """What one POST came to: a normalized response, or why there is none."""

    normalized: NormalizedResponse | None = None
    replayed: bool = False  # openIMIS already had the code: the response was fetched
    refused: str | None = None  # openIMIS refused the claim (the message says why)
    unknown: UnknownClaimStatus | None = None  # openIMIS holds it under a status we do not know
    mismatch: str = ""  # the answer could not be read


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
        supplements: bool = True,
        owner: str = "cdc-claims",
        lease_seconds: float = 300.0,
        holder_dead: Callable[[str], bool] = lambda _holder: False,
        clock: Clock | None = None,
        counters: ClaimMetrics | None = None,
        failpoint: Callable[[str], None] = no_failpoint,
        payer: PayerCheck | None = None,
    ) -> None:
        self._reader = reader
        self._build = build_draft
        self._render = renderer
        self._api = api
        self._normalize = normalize
        self._pub = publisher
        self._ledger = ledger
        self._supplements = supplements
        self._clock = clock or SystemClock()
        self._count = counters or metrics.CLAIM
        self._failpoint = failpoint
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._holder_dead = holder_dead
        self._payer = payer

    def process(self, unit: UnitRef, *, resubmit: bool = False, force: bool = False) -> UnitResult:
        """Process one unit. Retriable errors propagate: the caller keeps the unit pending.

        ``resubmit``: look at a submitted unit again even if it did not change (the mapping was
        fixed: rejected lines whose claim would now differ go out as a replacement); ``force``:
        also re-send rejected lines that did not change (their cause was fixed in openIMIS, such
        as a renewed policy). Never an accepted line.

        The unit's ledger row is leased first (compare-and-set on owner and expiry), so two
        sidecars never work on one unit at once; the loser gets :class:`LeaseHeld` (retriable)
        and finds the claim done when it tries again.
        """
        ctx = self._reader.read(unit.kind, unit.id)
        lease = self._ledger.acquire_lease(ctx.unit_kind, ctx.unit_uuid, self._owner, self._lease_seconds)
        holder = lease.holder
        if holder != self._owner and holder is not None and self._holder_dead(holder):
            # the holder crashed on this very host (a restarted container): no need to wait it out
            lease = self._ledger.acquire_lease(
                ctx.unit_kind, ctx.unit_uuid, self._owner, self._lease_seconds, steal_from=holder
            )
            holder = lease.holder
        if holder != self._owner:
            self._count.lease_conflicts.inc()
            raise LeaseHeld(f"{ctx.unit_kind} {ctx.unit_uuid} is being submitted by another sidecar")
        try:
            # the row as read under the lease: nobody else changes it while we hold it
            return self._process(unit, ctx, lease.entry, resubmit=resubmit or force, force=force)
        finally:
            try:
                self._ledger.release_lease(ctx.unit_kind, ctx.unit_uuid, self._owner)
            except WriteBackError as err:  # the lease expires by itself
                log.warning("lease_release_failed", unit_uuid=ctx.unit_uuid, error=str(err)[:200])

    def park(self, unit: UnitRef, reason: str, text: str) -> None:
        """Give up on a unit after repeated unexpected errors: ``failed`` with ``reason``, so it is
        visible and ``rerun-held`` picks it up (never left ``submitting`` with nobody to retry)."""
        ctx = self._reader.read(unit.kind, unit.id)
        entry = self._ledger.get(ctx.unit_kind, ctx.unit_uuid)
        state = entry.state if entry is not None else State.DETECTED
        if state in SUBMITTED_STATES and state is not State.SUBMITTING:
            return  # openIMIS has it and the ledger knows: nothing is stranded
        if state is not State.SUBMITTING:
            state = advance(state, Event.SETTLE)
        self._ledger.upsert(
            LedgerEntry(
                unit_kind=ctx.unit_kind,
                unit_uuid=ctx.unit_uuid,
                state=advance(state, Event.FAIL),
                claim_code=entry.claim_code if entry is not None else None,
                revision=entry.revision if entry is not None else 0,
                content_hash=entry.content_hash if entry is not None else "",
                reason=reason,
                detail=text[:2000],
                attempts=entry.attempts if entry is not None else 0,
                patient_uuid=ctx.patient.uuid,
                visit_uuid=ctx.visit.uuid,
                encounter_uuids=tuple(e.uuid for e in ctx.encounters),
                draft_json=entry.draft_json if entry is not None else None,
            )
        )

    def _process(
        self,
        unit: UnitRef,
        ctx: ClaimContext,
        entry: LedgerEntry | None,
        *,
        resubmit: bool = False,
        force: bool = False,
    ) -> UnitResult:
        state = entry.state if entry is not None else State.DETECTED
        revision = entry.revision if entry is not None else 0
        bound = log.bind(unit=str(unit), unit_uuid=ctx.unit_uuid)

        try:
            draft: ClaimDraft | None = self._build(ctx, created=self._clock.now().date(), revision=revision)
            held: NotClaimable | None = None
        except NotClaimable as not_claimable:
            draft, held = None, not_claimable
        if entry is not None and _in_doubt_and_changed(entry, draft):
            # the unit changed while a POST was in doubt: first learn whether openIMIS has it
            entry = self._resolve_in_doubt(ctx, entry)
            state = entry.state
        if held is not None or draft is None:
            assert held is not None
            return self._not_claimable(unit, ctx, entry, state, held)

        if entry is not None and state in SUBMITTED_STATES:
            same = entry.content_hash == draft.content_hash and entry.claim_code == draft.code
            if same and state is not State.SUBMITTING and not resubmit:
                bound.debug("claim_unchanged", claim_code=draft.code, state=state.value)
                return UnitResult(unit, "unchanged", draft.code, status=state.value)
            if not same or (resubmit and state is not State.SUBMITTING):
                return self._changed_after_submit(unit, ctx, entry, draft, force=force)
        elif state is not State.SUBMITTING:
            state = advance(state, Event.SETTLE)  # held, failed, cancelled... re-enter here
        self._count.built.labels(unit=ctx.unit_kind).inc()
        return self._submit(unit, ctx, entry, state, draft)

    def _resolve_in_doubt(self, ctx: ClaimContext, entry: LedgerEntry) -> LedgerEntry:
        """A ``submitting`` row whose claim may or may not be in openIMIS: ask by code.

        In openIMIS: its reply is published and the row moves on, so later changes are handled
        as changes after submission. Not there: the POST never arrived, the row may re-enter."""
        code = entry.claim_code or ""
        sent = decode_draft(entry.draft_json or "")
        try:
            response = self._api.get_claim_response(code)
        except ClaimRefused:  # "no such claim": the earlier POST never reached openIMIS
            log.info("in_doubt_claim_not_in_openimis", claim_code=code, unit_uuid=ctx.unit_uuid)
            return replace(entry, state=advance(State.SUBMITTING, Event.FAIL))
        try:
            normalized = self._normalize(response, sent, received_at=self._clock.now())
        except UnknownClaimStatus as unknown:
            resolved = replace(entry, state=State.UNKNOWN_STATUS, reason="unknown_status", detail=unknown.message)
            return self._store_original(resolved)
        self._pub.reply(ReplyMessage(sent, normalized, None))
        self._pub.flush()
        resolved = replace(
            entry,
            state=advance(State.SUBMITTING, response_event(normalized.openimis_status)),
            openimis_claim_uuid=normalized.claim_uuid or entry.openimis_claim_uuid,
        )
        log.info("in_doubt_claim_resolved", claim_code=code, unit_uuid=ctx.unit_uuid, state=resolved.state.value)
        return self._store_original(resolved, rejected_lines(normalized))

    # ------------------------------------------------------------------ submit path
    def _submit(self, unit: UnitRef, ctx: ClaimContext, entry: Any, state: State, draft: ClaimDraft) -> UnitResult:
        attempts = (entry.attempts if entry is not None else 0) + 1
        if self._payer is not None and state is not State.SUBMITTING:
            # an in-doubt POST is completed whatever the payer now says: openIMIS may hold it
            problem = self._payer.check(draft, ctx.patient.insurance_number)
            if problem is not None:  # nothing was sent
                return self._hold_draft(unit, ctx, draft, problem.reason, problem.detail)
        try:
            try:
                claim = self._render.claim(draft)
            except NotClaimable as held:  # a document to attach is missing or too large
                if state is not State.SUBMITTING:  # nothing was sent
                    return self._hold_draft(unit, ctx, draft, held.reason, held.detail)
                # an in-doubt POST is completed whatever happened to the file since: openIMIS
                # may already hold the claim, documents and all; this POST goes without them
                log.warning("in_doubt_claim_sent_without_documents", claim_code=draft.code, reason=held.reason)
                draft = replace(draft, attachments=())
                claim = self._render.claim(draft)
        except ClaimRenderError as invalid:  # nothing was sent
            return self._hold_draft(unit, ctx, draft, "invalid_claim", str(invalid))
        self._record(ctx, draft, advance(state, Event.SUBMIT), attempts=attempts)
        sent = self._post(unit, draft, claim)
        if sent.refused is not None:
            self._pub.audit(draft.code, self._render.audit_bundle(ctx, draft, claim))
            return self._fail(unit, ctx, draft, attempts, reason="refused_by_openimis", text=sent.refused)
        if sent.unknown is not None:  # openIMIS holds it: follow it, never re-send it
            return self._unknown_status(unit, ctx, draft, attempts, sent.unknown)
        if sent.normalized is None:  # unreadable: keep it visible, re-runnable
            return self._fail(unit, ctx, draft, attempts, reason="unreadable_response", text=sent.mismatch)
        normalized, replayed = sent.normalized, sent.replayed
        # The audit Bundle (Claim as sent + Patient, Encounter, ...) is off the writer's critical path.
        self._pub.audit(draft.code, self._render.audit_bundle(ctx, draft, claim))
        new_state = advance(State.SUBMITTING, response_event(normalized.openimis_status))
        self._record(
            ctx,
            draft,
            new_state,
            attempts=attempts,
            openimis_claim_uuid=normalized.claim_uuid,
            rejected=rejected_lines(normalized),
        )
        self._pub.flush()
        self._count_response(normalized)
        log.info(
            "claim_submitted",
            claim_code=draft.code,
            unit_uuid=ctx.unit_uuid,
            status=normalized.iclm_status,
            replayed=replayed,
            lines=len(draft.lines),
        )
        return UnitResult(unit, "replayed" if replayed else "submitted", draft.code, status=new_state.value)

    def _post(self, unit: UnitRef, draft: ClaimDraft, claim: JsonDict) -> _Sent:
        """POST the claim (a "code already exists" answer means an earlier try got through: its
        ClaimResponse is fetched instead), read the answer and publish the reply.

        Any other SubmitError is retriable (network, 5xx, auth, no channel): it propagates and
        the row stays ``submitting`` until the next try, which finds the claim by its code.
        """
        replayed = False
        started = self._clock.monotonic()
        try:
            self._count.submitted.inc()
            response = self._api.submit_claim(claim)
        except DuplicateClaimCode:
            replayed = True
            response = self._api.get_claim_response(draft.code)
        except ClaimRefused as refused:
            return _Sent(refused=refused.message)
        submit_seconds = self._clock.monotonic() - started
        self._failpoint("after_submit")  # openIMIS has the claim; no reply, ledger still "submitting"
        try:
            normalized = self._normalize(response, draft, received_at=self._clock.now())
        except UnknownClaimStatus as unknown:
            return _Sent(unknown=unknown)
        except ResponseMismatch as mismatch:
            return _Sent(mismatch=str(mismatch))
        timings = Timings(unit.captured_ms, submit_seconds, int(self._clock.now().timestamp() * 1000))
        self._pub.reply(ReplyMessage(draft, normalized, unit.source_committed_ms, timings))
        self._pub.flush()
        self._failpoint("after_reply")  # reply published; ledger and offsets not yet moved on
        return _Sent(normalized=normalized, replayed=replayed)

    def _fail(
        self, unit: UnitRef, ctx: ClaimContext, draft: ClaimDraft, attempts: int, *, reason: str, text: str
    ) -> UnitResult:
        detail = text[:2000]
        self._record(ctx, draft, advance(State.SUBMITTING, Event.FAIL), attempts=attempts, reason=reason, detail=detail)
        self._pub.held(draft.code, self._notice(ctx, draft.code, reason, detail, "failed"))
        self._pub.flush()
        self._count.held.labels(reason=reason).inc()
        log.warning("claim_failed", claim_code=draft.code, unit_uuid=ctx.unit_uuid, reason=reason, detail=detail[:300])
        return UnitResult(unit, "failed", draft.code, reason=reason)

    def _unknown_status(
        self, unit: UnitRef, ctx: ClaimContext, draft: ClaimDraft, attempts: int, unknown: UnknownClaimStatus
    ) -> UnitResult:
        detail = f"openIMIS status code {unknown.code}: {unknown.message}"[:2000]
        self._record(
            ctx,
            draft,
            advance(State.SUBMITTING, Event.RESP_UNKNOWN),
            attempts=attempts,
            reason="unknown_status",
            detail=detail,
            openimis_claim_uuid=unknown.claim_uuid,
        )
        self._pub.held(draft.code, self._notice(ctx, draft.code, "unknown_status", detail, "notice"))
        self._pub.flush()
        self._count.status_not_applied.labels(kind="unknown_status").inc()
        log.warning("claim_unknown_status", claim_code=draft.code, unit_uuid=ctx.unit_uuid, code=unknown.code)
        return UnitResult(unit, "unknown_status", draft.code, reason="unknown_status", status="unknown_status")

    def _hold_draft(self, unit: UnitRef, ctx: ClaimContext, draft: ClaimDraft, reason: str, text: str) -> UnitResult:
        detail = text[:2000]
        self._record(ctx, draft, advance(State.SETTLED, Event.HOLD), attempts=0, reason=reason, detail=detail)
        self._pub.held(ctx.unit_uuid, self._notice(ctx, draft.code, reason, detail, "held"))
        self._pub.flush()
        self._count.held.labels(reason=reason).inc()
        log.warning("claim_held", unit_uuid=ctx.unit_uuid, reason=reason, detail=detail[:300])
        return UnitResult(unit, "held", draft.code, reason=reason)

    # ------------------------------------------------------------------ skips
    def _not_claimable(
        self, unit: UnitRef, ctx: ClaimContext, entry: Any, state: State, held: NotClaimable
    ) -> UnitResult:
        code = entry.claim_code if entry is not None else ""
        if entry is not None and state in SUBMITTED_STATES and state is not State.SUBMITTING:
            if held.reason == "voided":
                return self._withdrawal_needed(unit, ctx, entry, held)
            # openIMIS already holds a claim for this unit: never silently drop that fact.
            detail = f"{HELD_REASONS[held.reason]} after the claim was submitted: {held.detail}"
            self._pub.held(code, self._notice(ctx, code, held.reason, detail, "notice"))
            self._pub.flush()
            log.warning("submitted_claim_now_not_claimable", claim_code=code, reason=held.reason)
            return UnitResult(unit, "changed_after_submit", code, reason=held.reason)
        if state is not State.SUBMITTING:
            state = advance(state, Event.SETTLE)
        # A "submitting" row whose unit is no longer claimable: the POST may or may not have
        # gone through; the row is parked as failed with the reason, never left submitting.
        event = {"voided": Event.VOIDED, "no_billable_lines": Event.NOTHING}.get(held.reason, Event.HOLD)
        if state is State.SUBMITTING:
            event = Event.FAIL
        new_state = advance(state, event)
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
        if new_state is State.NOTHING_TO_CLAIM:
            # registration, lab results, admission...: not a held claim nobody must chase
            self._count.nothing_to_claim.labels(unit=ctx.unit_kind).inc()
            log.info("nothing_to_claim", unit_uuid=ctx.unit_uuid)
            return UnitResult(unit, "nothing_to_claim", code or None, reason=held.reason)
        kind: Literal["held", "cancelled", "failed"] = (
            "cancelled" if new_state is State.CANCELLED else "failed" if new_state is State.FAILED else "held"
        )
        self._pub.held(ctx.unit_uuid, self._notice(ctx, code or None, held.reason, held.detail, kind))
        self._pub.flush()
        self._count.held.labels(reason=held.reason).inc()
        log.info("claim_held", unit_uuid=ctx.unit_uuid, reason=held.reason, state=new_state.value)
        return UnitResult(unit, "failed" if kind == "failed" else kind, code or None, reason=held.reason)

    def _withdrawal_needed(
        self, unit: UnitRef, ctx: ClaimContext, entry: LedgerEntry, held: NotClaimable
    ) -> UnitResult:
        """The encounter was voided after openIMIS got its claim: flag it everywhere, once.

        The ledger keeps following the claim (its state is openIMIS's); the flag is the row's
        reason, the iclm rows get it through a :class:`WithdrawalNotice` on the reply topic."""
        code = entry.claim_code or ""
        reason = "voided_after_submit"
        if entry.reason == reason:
            return UnitResult(unit, "withdrawal_needed", code, reason=reason, status=entry.state.value)
        detail = (
            f"claim {code} is in openIMIS ({entry.state.value}) but {ctx.unit_kind} {ctx.unit_uuid} was voided"
            f" in OpenMRS: withdraw the claim in openIMIS. {held.detail}"
        )[:2000]
        for record in self._history(ctx, entry):
            if record.state not in SUBMITTED_STATES or _whole_claim(record):
                continue
            self._pub.withdrawal(
                WithdrawalNotice(record.claim_code, reason, detail, self._clock.now(), whole_claim=True)
            )
            whole = {"*": {"code": "*", "quantity": "all", "why": "voided"}}
            self._ledger.upsert_claim(replace(record, withdrawal=json.dumps(whole)))
            self._count.withdrawals_needed.labels(reason=reason).inc()
        self._pub.held(code, self._notice(ctx, code, reason, detail, "withdrawal"))
        self._pub.flush()
        self._ledger.upsert(replace(entry, reason=reason, detail=detail))
        log.warning("claim_withdrawal_needed", claim_code=code, unit_uuid=ctx.unit_uuid, reason=reason)
        return UnitResult(unit, "withdrawal_needed", code, reason=reason, status=entry.state.value)

    def _changed_after_submit(
        self, unit: UnitRef, ctx: ClaimContext, entry: LedgerEntry, draft: ClaimDraft, *, force: bool = False
    ) -> UnitResult:
        """The unit changed after its claim reached openIMIS: send only the difference.

        See :mod:`cdc_claims.claim.corrections`: a supplement for what was added, a withdrawal
        flag for what was removed, a replacement for rejected lines that were corrected, and a
        notice for a change of diagnoses only. Never a line billed twice."""
        history = self._history(ctx, entry)
        for record in history:  # a follow-up whose POST is in doubt goes first (same code)
            if record.state is State.SUBMITTING and record.kind != "original" and record.draft_json:
                self._send_follow_up(unit, ctx, record, decode_draft(record.draft_json), in_doubt=True)
        history = self._history(ctx, entry)
        sent = [_sent(r) for r in history if r.draft_json and r.state in SUBMITTED_STATES]
        change = corrections.diff(draft, sent, force=force)
        notes: list[str] = []
        outcome: Outcome = "changed_after_submit"
        code = entry.claim_code or draft.code
        if change.supplement:
            lines = ", ".join(f"{ln.code} x{ln.quantity.normalize():f}" for ln in change.supplement)
            if self._supplements:
                seq = 1 + max((r.seq for r in history if r.kind == "supplement"), default=0)
                follow = corrections.follow_up(
                    draft,
                    change.supplement,
                    kind="supplement",
                    original_code=code,
                    related_code=code,
                    seq=seq,
                    created=self._clock.now().date(),
                )
                record = _follow_up_record(ctx, follow, "supplement", seq)
                self._send_follow_up(unit, ctx, record, follow)
                notes.append(f"supplement {follow.code} sent for lines added after submission: {lines}")
                outcome = "supplemented"
            else:
                notes.append(f"lines added after submission, not sent (supplements are off): {lines}")
                self._count.held.labels(reason="changed_after_submit").inc()
        for rejected_code, lines_ in change.replacement.items():
            seq = 1 + max((r.seq for r in history if r.kind == "replacement"), default=0)
            follow = corrections.follow_up(
                draft,
                lines_,
                kind="replacement",
                original_code=code,
                related_code=rejected_code,
                seq=seq,
                created=self._clock.now().date(),
            )
            self._send_follow_up(unit, ctx, _follow_up_record(ctx, follow, "replacement", seq), follow)
            notes.append(f"replacement {follow.code} sent for corrected lines openIMIS had rejected in {rejected_code}")
            outcome = "supplemented"
        if self._flag_withdrawals(ctx, history, change.withdrawals):
            notes.append("withdraw in openIMIS: " + corrections.describe(change.withdrawals))
            outcome = "withdrawal_needed" if outcome == "changed_after_submit" else outcome
        if change.diagnoses_changed and not change.supplement:
            notes.append("diagnoses changed after submission: openIMIS keeps the submitted ones (docs/corrections.md)")
        detail = ("; ".join(notes) or "changed after submission; nothing billable changed")[:2000]
        reason = _change_reason(change, self._supplements)
        self._pub.held(code, {**self._notice(ctx, code, reason, detail, "notice"), "lines": _lines_payload(change)})
        self._pub.flush()
        self._ledger.upsert(replace(entry, content_hash=draft.content_hash, reason=reason, detail=detail))
        log.warning("claim_changed_after_submit", claim_code=code, unit_uuid=ctx.unit_uuid, reason=reason)
        return UnitResult(unit, outcome, code, reason=reason, status=entry.state.value)

    def _history(self, ctx: ClaimContext, entry: LedgerEntry) -> list[ClaimRecord]:
        """The unit's claims; a unit claimed before the history existed has its ledger row."""
        history = self._ledger.claims_of(ctx.unit_kind, ctx.unit_uuid)
        if (original := missing_original(entry, history)) is not None:
            history = [self._ledger.upsert_claim(original), *history]
        return history

    def _flag_withdrawals(
        self, ctx: ClaimContext, history: list[ClaimRecord], withdrawals: tuple[corrections.Withdrawal, ...]
    ) -> bool:
        """Record, per claim, the complete set of its lines to withdraw; publish what changed."""
        wanted = corrections.withdrawal_map(withdrawals)
        changed = False
        for record in history:
            if record.state not in SUBMITTED_STATES or _whole_claim(record):
                continue
            lines = wanted.get(record.claim_code, {})
            stored = json.loads(record.withdrawal) if record.withdrawal else {}
            if lines == stored:
                continue
            changed = changed or bool(lines)
            self._ledger.upsert_claim(replace(record, withdrawal=json.dumps(lines, sort_keys=True) if lines else None))
            detail = corrections.describe(w for w in withdrawals if w.claim_code == record.claim_code)
            self._pub.withdrawal(
                WithdrawalNotice(
                    record.claim_code,
                    "changed_after_submit",
                    detail or "withdrawal no longer needed",
                    self._clock.now(),
                    source_uuids=tuple(sorted(lines)),
                )
            )
            self._count.withdrawals_needed.labels(reason="changed_after_submit").inc(len(set(lines) - set(stored)))
        return changed

    def _send_follow_up(
        self, unit: UnitRef, ctx: ClaimContext, record: ClaimRecord, draft: ClaimDraft, *, in_doubt: bool = False
    ) -> None:
        """POST a supplement or replacement with the same write-ahead rules as the original."""
        if self._payer is not None and not in_doubt:
            problem = self._payer.check(draft, ctx.patient.insurance_number)
            if problem is not None:  # held in the history, never sent; `resubmit --unit` sends it later
                self._ledger.upsert_claim(
                    replace(record, state=State.HELD, reason=problem.reason, detail=problem.detail[:2000])
                )
                self._pub.held(draft.code, self._notice(ctx, draft.code, problem.reason, problem.detail, "held"))
                self._pub.flush()
                self._count.held.labels(reason=problem.reason).inc()
                log.warning("follow_up_held", claim_code=draft.code, reason=problem.reason)
                return
        try:
            claim = self._render.claim(draft)
        except ClaimRenderError as invalid:
            self._ledger.upsert_claim(
                replace(record, state=State.FAILED, reason="invalid_claim", detail=str(invalid)[:2000])
            )
            return
        self._ledger.upsert_claim(replace(record, state=State.SUBMITTING, draft_json=encode_draft(draft)))
        sent = self._post(unit, draft, claim)
        if sent.refused is not None:
            self._ledger.upsert_claim(
                replace(record, state=State.FAILED, reason="refused_by_openimis", detail=sent.refused[:2000])
            )
            self._pub.held(draft.code, self._notice(ctx, draft.code, "refused_by_openimis", sent.refused, "failed"))
            self._pub.flush()
            self._count.held.labels(reason="refused_by_openimis").inc()
            return
        if sent.unknown is not None:
            self._ledger.upsert_claim(
                replace(
                    record,
                    state=State.UNKNOWN_STATUS,
                    reason="unknown_status",
                    detail=sent.unknown.message[:2000],
                    openimis_claim_uuid=sent.unknown.claim_uuid,
                )
            )
            return
        if sent.normalized is None:
            self._ledger.upsert_claim(
                replace(record, state=State.FAILED, reason="unreadable_response", detail=sent.mismatch[:2000])
            )
            return
        normalized = sent.normalized
        self._pub.audit(draft.code, self._render.audit_bundle(ctx, draft, claim))
        state = advance(State.SUBMITTING, response_event(normalized.openimis_status))
        self._ledger.upsert_claim(
            replace(
                record,
                state=state,
                openimis_claim_uuid=normalized.claim_uuid,
                rejected_lines=rejected_lines(normalized),
                draft_json=encode_draft(draft),
            )
        )
        self._pub.flush()
        self._count_response(normalized)
        log.info("follow_up_submitted", claim_code=draft.code, kind=record.kind, lines=len(draft.lines))

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
        rejected: tuple[str, ...] = (),
    ) -> None:
        entry = LedgerEntry(
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
        self._store_original(entry, rejected)

    def _store_original(self, entry: LedgerEntry, rejected: tuple[str, ...] = ()) -> LedgerEntry:
        """The unit's ledger row, and, once openIMIS holds the original claim, its history row
        (what the poller follows and the diff compares with). The write-ahead ``submitting`` state
        lives on the ledger row alone; the history row goes in the ledger row's transaction."""
        history: ClaimRecord | None = None
        if entry.claim_code and entry.state in SUBMITTED_STATES and entry.state is not State.SUBMITTING:
            history = original_record(entry, reason=entry.reason, detail=entry.detail, rejected_lines=rejected)
        return self._ledger.upsert(entry, history=history)

    # ------------------------------------------------------------------ notices and counts
    def _notice(self, ctx: ClaimContext, code: str | None, reason: str, detail: str, kind: str) -> dict[str, Any]:
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
            "at": self._clock.now().isoformat(),
        }

    def _count_response(self, normalized: NormalizedResponse) -> None:
        if normalized.openimis_status == 1:
            self._count.rejected.inc()
        else:
            self._count.accepted.labels(status=normalized.iclm_status).inc()
        for line in normalized.lines:
            if line.status == "REJECTED":
                self._count.lines_rejected.labels(reason_code=str(line.reason_code)).inc()


def rejected_lines(normalized: NormalizedResponse) -> tuple[str, ...]:
    """Source uuids of the lines openIMIS rejected (all of them when the claim was rejected)."""
    return tuple(sorted(line.source_uuid for line in normalized.lines if line.status == "REJECTED"))


def _sent(record: ClaimRecord) -> corrections.SentClaim:
    return corrections.SentClaim(
        code=record.claim_code,
        kind=record.kind,  # type: ignore[arg-type]
        seq=record.seq,
        draft=decode_draft(record.draft_json or ""),
        rejected=frozenset(record.rejected_lines),
        whole_claim_rejected=record.state is State.REJECTED,
    )


def _whole_claim(record: ClaimRecord) -> bool:
    """Already flagged for withdrawal as a whole (its encounter was voided)."""
    return bool(record.withdrawal and '"*"' in record.withdrawal)


def _follow_up_record(ctx: ClaimContext, draft: ClaimDraft, kind: str, seq: int) -> ClaimRecord:
    return ClaimRecord(
        claim_code=draft.code,
        unit_kind=ctx.unit_kind,
        unit_uuid=ctx.unit_uuid,
        kind=kind,
        state=State.SUBMITTING,
        seq=seq,
        related_code=draft.related_code,
        content_hash=draft.content_hash,
        draft_json=encode_draft(draft),
    )


def _change_reason(change: corrections.Diff, supplements: bool) -> str:
    if change.withdrawals:
        return "withdrawal_needed"
    if change.supplement and not supplements:
        return "changed_after_submit"
    if change.supplement or change.replacement:
        return "supplemented"
    if change.diagnoses_changed:
        return "diagnosis_changed_after_submit"
    return "changed_after_submit"


def _lines_payload(change: corrections.Diff) -> dict[str, Any]:
    return {
        "added": [
            {"code": ln.code, "quantity": str(ln.quantity), "source_uuid": ln.source_uuid} for ln in change.supplement
        ],
        "withdraw": [
            {
                "claim_code": w.claim_code,
                "code": w.code,
                "quantity": str(w.quantity),
                "why": w.why,
                "source_uuid": w.source_uuid,
            }
            for w in change.withdrawals
        ],
        "still_rejected": [{"code": ln.code, "source_uuid": ln.source_uuid} for ln in change.still_rejected],
    }


def _in_doubt_and_changed(entry: LedgerEntry, draft: ClaimDraft | None) -> bool:
    """A ``submitting`` row (the POST may have reached openIMIS) whose unit now reads differently."""
    if entry.state is not State.SUBMITTING or not (entry.claim_code and entry.draft_json):
        return False
    return draft is None or (draft.code, draft.content_hash) != (entry.claim_code, entry.content_hash)


def _revision_of(code: str) -> int:
    """Revision suffix ``-R<n>`` of a claim code (0 when absent)."""
    head, sep, tail = code.rpartition("-R")
    return int(tail) if sep and head and tail.isdigit() else 0
