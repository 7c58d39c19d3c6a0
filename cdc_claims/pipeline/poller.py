"""The poller role: later status changes in openIMIS flow back like the first response.

openIMIS reviews and processes claims long after the POST (status 8 processed, 16 valuated,
or a late rejection) and offers no callback a FHIR client can rely on. The poller asks for the
ClaimResponse of every claim still open in the ledger and, when its status moved, publishes a
reply exactly like the consumer does, so the writer has one path for every update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from cdc_claims import metrics
from cdc_claims.errors import CdcClaimsError, ResponseMismatch, UnknownClaimStatus
from cdc_claims.lifecycle import State, advance, judge_response, response_event
from cdc_claims.log import get_logger
from cdc_claims.pipeline.claim_service import Normalizer, rejected_lines
from cdc_claims.pipeline.ports import ClaimApi, OpenClaim, OpenClaimStore, Publisher
from cdc_claims.reply.model import ReplyMessage, WithdrawalNotice

log = get_logger(__name__)


def _utc(at: datetime) -> datetime:
    """Ledger times are UTC (the connection sets ``time_zone = '+00:00'``) and come back naive."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


class Poller:
    """Asks openIMIS about open claims, each on its own back-off schedule.

    A claim can stay "checked" for days until a reviewer gets to it, so asking about every open
    claim every cycle would grow without bound. Each claim is asked about after ``interval``
    seconds, doubling (up to ``max_interval``) while nothing changes, back to ``interval`` when
    it does; at most ``batch`` claims per cycle.

    Which due claims go first: the one whose *next* turn comes soonest (its due time plus its
    current interval), i.e. the claims on a short interval, freshly submitted or just changed,
    before those backed off to hours. Oldest-due-first made a new claim wait behind every
    overdue one: with ~1000 old open claims due at once (every start, or when their long turns
    come round together) a new claim was reached only after the whole backlog, 100 per cycle,
    and its next status change was seen minutes late. Now it is reached in the next cycle
    however long the backlog (unless more than ``batch`` claims on shorter intervals are due);
    old claims still get their turn (their next-turn time is fixed, the new claims' keeps
    moving on), only later.

    The schedule lives in memory, so a claim this process has not asked about yet starts on the
    back-off it would have reached by now: its interval is the time since the ledger last
    recorded a change to it (``OpenClaim.changed_at``), within ``interval`` .. ``max_interval``.
    It is asked about at once, but after any claim on a shorter interval, and then not again
    for that long: a restart does not put a week-old claim back on the one-minute schedule, and
    needs no extra ledger column.
    """

    def __init__(
        self,
        store: OpenClaimStore,
        api: ClaimApi,
        normalize: Normalizer,
        publisher: Publisher,
        *,
        interval: float = 60.0,
        max_interval: float = 6 * 3600.0,
        batch: int = 100,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._api = api
        self._normalize = normalize
        self._pub = publisher
        self._now = now
        self._clock = clock
        self._interval = interval
        self._max_interval = max_interval
        self._batch = batch
        self._schedule: dict[str, tuple[float, float]] = {}  # code -> (next check, current interval)

    def poll_once(self) -> int:
        """Check the open claims that are due (at most ``batch``); returns how many changed."""
        changed = 0
        now = self._clock()
        claims = self._store.open_claims()
        wall = self._now()
        self._schedule = {
            c.claim_code: self._schedule[c.claim_code]
            if c.claim_code in self._schedule
            else (now, self._first_interval(c, wall))
            for c in claims
        }
        due = sorted((c for c in claims if self._schedule[c.claim_code][0] <= now), key=self._urgency)
        for claim in due[: self._batch]:
            moved = self._check(claim)
            changed += moved
            current = self._schedule[claim.claim_code][1]
            if moved:
                self._schedule[claim.claim_code] = (self._clock() + self._interval, self._interval)
            else:
                self._schedule[claim.claim_code] = (self._clock() + current, min(self._max_interval, current * 2))
        return changed

    def poll_claim(self, claim_code: str) -> bool | None:
        """Ask about one claim now, out of turn (an operator pressed "refresh"): True if its status
        moved (the reply is published), False if not, None if it is not open (unknown, final, or
        not in openIMIS yet). Same rules as :meth:`poll_once`; its next turn starts over."""
        claim = self._store.open_claim(claim_code)
        if claim is None:
            return None
        moved = self._check(claim)
        self._schedule[claim_code] = (self._clock() + self._interval, self._interval)
        return moved

    def _first_interval(self, claim: OpenClaim, wall: datetime) -> float:
        """The interval of a claim not asked about yet: the time since its last recorded change,
        what a doubling back-off started then would have reached (``interval`` if unknown)."""
        if claim.changed_at is None:
            return self._interval
        idle = (wall - _utc(claim.changed_at)).total_seconds()
        return min(self._max_interval, max(self._interval, idle))

    def _urgency(self, claim: OpenClaim) -> tuple[float, float]:
        """Sort key of a due claim: when its next turn would come (due time + interval), soonest
        first; then the most recently changed first."""
        due, current = self._schedule[claim.claim_code]
        changed = _utc(claim.changed_at).timestamp() if claim.changed_at is not None else float("-inf")
        return (due + current, -changed)

    def _check(self, claim: OpenClaim) -> bool:
        """Ask openIMIS about one claim; publish a reply when its status moved. True if it did.

        What cannot be applied is recorded on the ledger row, never dropped: a status that
        would go backwards (CHECKED polled back as ENTERED), an unknown status code (the claim
        moves to ``unknown_status`` and is still followed), an unreadable response."""
        try:
            response = self._api.get_claim_response(claim.claim_code)
        except CdcClaimsError as err:
            if err.retriable:
                raise
            log.warning("poll_failed", claim_code=claim.claim_code, reason=err.reason, error=str(err)[:200])
            self._store.note(claim.claim_code, f"poll failed ({err.reason}): {err}"[:2000])
            return False
        try:
            normalized = self._normalize(response, claim.draft, received_at=self._now())
        except UnknownClaimStatus as unknown:
            if claim.state is State.UNKNOWN_STATUS:
                return False  # already recorded and counted
            metrics.STATUS_NOT_APPLIED.labels(kind="unknown_status").inc()
            log.warning("poll_unknown_status", claim_code=claim.claim_code, code=unknown.code)
            self._store.set_state(
                claim.claim_code,
                advance(claim.state, response_event(unknown.code)),
                openimis_claim_uuid=unknown.claim_uuid,
                reason="unknown_status",
            )
            self._store.note(claim.claim_code, f"openIMIS status code {unknown.code}: {unknown.message}"[:2000])
            return True
        except ResponseMismatch as mismatch:
            log.warning("poll_unreadable_response", claim_code=claim.claim_code, error=str(mismatch)[:200])
            if self._store.note(claim.claim_code, f"unreadable ClaimResponse: {mismatch}"[:2000]):
                metrics.STATUS_NOT_APPLIED.labels(kind="unreadable").inc()
            return False
        event = response_event(normalized.openimis_status)
        verdict = judge_response(claim.state, event)
        if verdict == "same":
            return False
        if verdict == "backward":
            text = f"openIMIS reports {normalized.iclm_status} after {claim.state.value}: recorded, not applied"
            if self._store.note(claim.claim_code, text):  # counted once, not at every poll
                metrics.STATUS_NOT_APPLIED.labels(kind="backward").inc()
                log.warning(
                    "poll_backward_status",
                    claim_code=claim.claim_code,
                    old=claim.state.value,
                    new=normalized.iclm_status,
                )
            return False
        new_state = advance(claim.state, event)
        self._pub.reply(ReplyMessage(claim.draft, normalized, None))
        self._pub.flush()
        remaining = self._store.set_state(
            claim.claim_code,
            new_state,
            openimis_claim_uuid=normalized.claim_uuid,
            rejected=rejected_lines(normalized),
        )
        if remaining is not None:  # openIMIS rejected lines flagged for withdrawal: done
            text = "openIMIS rejected the lines to withdraw" if not remaining else "some lines still to withdraw"
            notice = WithdrawalNotice(claim.claim_code, "rejected_by_openimis", text, self._now(), remaining)
            self._pub.withdrawal(notice)
            self._pub.flush()
        log.info("claim_status_changed", claim_code=claim.claim_code, old=claim.state.value, new=new_state.value)
        return True
