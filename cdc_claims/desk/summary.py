"""The summary page's numbers: claims and amounts per day and per ISO week, by status. Pure.

Every day of the range gets a bucket, empty or not, so the chart's axis has no gaps that would
read as "nothing happened" being the same as "no data". Days are UTC (the database's clock).
A week is the ISO week (Monday first) and is labelled by its Monday; the range's first and last
weeks may be partial, which their labels say.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from decimal import Decimal

from cdc_claims.desk.model import Bucket, ClaimFact, Summary
from cdc_claims.lifecycle import State

#: the statuses in the order the tables and the chart stack them (money decided last)
STATUS_ORDER: tuple[str, ...] = (
    State.SUBMITTING.value,
    State.FAILED.value,
    State.ENTERED.value,
    State.CHECKED.value,
    State.PROCESSED.value,
    State.VALUATED.value,
    State.REJECTED.value,
    State.UNKNOWN_STATUS.value,
)
#: the longest range the summary covers (a year and a day: a leap year's 1 January to 1 January)
MAX_DAYS = 367


def clamp_range(date_from: date, date_to: date) -> tuple[date, date]:
    """Ordered, and at most :data:`MAX_DAYS` long (the end is kept: the recent days matter)."""
    if date_from > date_to:
        date_from, date_to = date_to, date_from
    if (date_to - date_from).days >= MAX_DAYS:
        date_from = date_to - timedelta(days=MAX_DAYS - 1)
    return date_from, date_to


def _empty(start: date, label: str) -> Bucket:
    return Bucket(start=start, label=label, counts={}, claimed={}, approved={})


def _add(bucket: Bucket, fact: ClaimFact) -> None:
    bucket.counts[fact.state] = bucket.counts.get(fact.state, 0) + 1
    if fact.claimed is not None:
        bucket.claimed[fact.state] = bucket.claimed.get(fact.state, Decimal(0)) + fact.claimed
    if fact.approved is not None:
        bucket.approved[fact.state] = bucket.approved.get(fact.state, Decimal(0)) + fact.approved


def summarize(
    facts: Iterable[ClaimFact],
    date_from: date,
    date_to: date,
    *,
    top_rejections: Sequence[tuple[str, int]] = (),
    needs_action: Sequence[tuple[str, int]] = (),
) -> Summary:
    """Bucket ``facts`` by day and by week between ``date_from`` and ``date_to`` (inclusive)."""
    date_from, date_to = clamp_range(date_from, date_to)
    n_days = (date_to - date_from).days + 1
    every_day = (date_from + timedelta(days=i) for i in range(n_days))
    days = {d: _empty(d, d.isoformat()) for d in every_day}
    weeks: dict[date, Bucket] = {}
    for d in days:
        monday = d - timedelta(days=d.weekday())
        if monday not in weeks:
            iso = d.isocalendar()
            partial = monday < date_from or monday + timedelta(days=6) > date_to
            label = f"{iso.year}-W{iso.week:02d} ({monday.isoformat()})" + (" partial" if partial else "")
            weeks[monday] = _empty(monday, label)
    seen: set[str] = set()
    for fact in facts:
        if fact.day not in days:
            continue
        seen.add(fact.state)
        _add(days[fact.day], fact)
        _add(weeks[fact.day - timedelta(days=fact.day.weekday())], fact)
    statuses = tuple(s for s in STATUS_ORDER if s in seen) + tuple(sorted(seen - set(STATUS_ORDER)))
    return Summary(
        date_from=date_from,
        date_to=date_to,
        statuses=statuses,
        days=tuple(days.values()),
        weeks=tuple(weeks.values()),
        top_rejections=tuple(top_rejections),
        needs_action=tuple(needs_action),
    )
