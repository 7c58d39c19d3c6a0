"""A unit's status timeline, pieced together from the timestamps that are stored. Pure.

Nothing records every status change with its time: the ledger keeps when a unit was first seen
and last changed, each claim's history row when it was sent and last changed, and the billing
row (``iclm_claim``) when the first reply was written, when it last changed and when the money
was decided. The timeline shows exactly those moments, in order, and no more: a status in
between (entered, then checked, then processed) has no time of its own anywhere. What staff did
(re-run, resubmit, refresh, withdrawal handled, from the desk or the command line) comes from
the action audit, ``cdc_claims_action``, with who did it and what it answered.

The billing rows keep whole seconds (the iclm writer drops the microseconds) while the sidecar's
own tables keep microseconds, so events are ordered by the second they happened in and, within
one second, in the order things happen to a claim (sent, then answered).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from cdc_claims.desk.model import ClaimView, TimelineEvent
from cdc_claims.ledger.model import ActionRecord, LedgerEntry

_KIND_WORDS = {"original": "Claim", "supplement": "Supplementary claim", "replacement": "Replacement claim"}


def timeline(
    entry: LedgerEntry, claims: Sequence[ClaimView], actions: Sequence[ActionRecord] = ()
) -> tuple[TimelineEvent, ...]:
    """Every stored moment of the unit, its claims and what staff did about them, oldest first."""
    events: list[tuple[datetime, int, str]] = []

    def add(at: datetime | None, what: str) -> None:
        if at is not None:
            events.append((_naive_utc(at), len(events), what))

    add(entry.created_at, "First seen: a Bahmni save touched it")
    for claim in claims:
        record = claim.record
        name = f"{_KIND_WORDS.get(record.kind, 'Claim')} {record.claim_code}"
        add(record.created_at, f"{name} sent to openIMIS")
        add(claim.billed_at, f"{name}: first reply written to billing ({claim.iclm_status or 'no status'})")
        if claim.changed_at is not None and claim.changed_at != claim.billed_at:
            add(claim.changed_at, f"{name}: billing row last changed (now {claim.iclm_status or 'no status'})")
        if claim.processed_at is not None:
            add(claim.processed_at, f"{name}: money decided ({claim.iclm_status or 'no status'})")
        if record.updated_at is not None and record.updated_at != record.created_at:
            add(record.updated_at, f"{name}: last change, now {record.state.value}")
    for action in actions:
        outcome = "done" if action.ok else "not done"
        add(action.at, f"{action.actor}: {action.action} on {action.target} ({outcome}): {action.message}")
    reason = f" ({entry.reason})" if entry.reason else ""
    if entry.updated_at is not None and entry.updated_at != entry.created_at:
        add(entry.updated_at, f"Last change: {entry.state.value}{reason}")
    elif entry.created_at is not None:
        events.append((_naive_utc(entry.created_at), len(events), f"Now: {entry.state.value}{reason}"))
    events.sort(key=lambda e: (e[0].replace(microsecond=0), e[1]))
    return tuple(TimelineEvent(at, what) for at, _, what in events)


def _naive_utc(at: datetime) -> datetime:
    """Every stored time is UTC, but some come back from the driver naive and some aware (the
    audit's ``UTC_TIMESTAMP(3)`` through pymysql, the ledger's through its model): one kind, or
    sorting them fails."""
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at
