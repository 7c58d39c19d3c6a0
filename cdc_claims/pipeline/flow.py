"""Flow control: read Kafka only as far ahead as the consumer can hold, whatever the backlog.

Why: a consumer that polls everything it is given holds the whole backlog in memory: rows
waiting for their transaction's END while some data topics run ahead of the transaction topic,
ENDs waiting for rows of the topics that lag, units waiting for their settle window, claims
queued for the workers (about 10 KiB per unit: 373 MiB with 30,000 encounters queued). The
backlog is safe in Kafka; nothing is gained by copying it into this process.

Each table topic has one partition and Debezium writes every topic in commit order, so a data
topic is either *ahead* of the transaction topic (its rows wait for ENDs) or *behind* it (ENDs
wait for its rows), never both. Three loads, each with a high mark (its setting) and a low mark
(half of it), so intake does not flap:

* **pending units** above the mark: every partition is paused. Units leave by themselves (their
  settle window passes, a worker finishes the claim), so this cannot deadlock; while openIMIS is
  down they stay, and the backlog stays in Kafka, which is the point;
* **rows waiting for their END, per data topic**: a topic that ran that far ahead pauses; the
  transaction topic brings the ENDs that complete its rows;
* **ENDs waiting for their rows**: the transaction topic pauses; the topics behind it, never
  paused for rows (they have none waiting), bring the rows.

A paused topic ahead and a paused transaction topic cannot wait on each other: the ENDs wait on
topics behind, which stay open. Pure: the role feeds the loads and applies the decision with
``pause`` / ``resume`` (kafka-python keeps records it already fetched for a paused partition
and returns them after the resume, so nothing is skipped).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cdc_claims.settings import IntakeSettings


@dataclass(frozen=True)
class Intake:
    """Which partitions to read from: all but ``paused_collections`` (``<db>.<table>``) and,
    unless ``transactions_paused``, the transaction topic; nothing at all when ``closed``."""

    closed: bool = False
    paused_collections: frozenset[str] = frozenset()
    transactions_paused: bool = False

    @property
    def open(self) -> bool:
        return not (self.closed or self.paused_collections or self.transactions_paused)

    def reads(self, collection: str | None) -> bool:
        """``collection`` None: the transaction topic."""
        if self.closed:
            return False
        if collection is None:
            return not self.transactions_paused
        return collection not in self.paused_collections

    def causes(self) -> frozenset[str]:
        """The loads behind the pause, for the metric: units, rows, ends."""
        if self.closed:
            return frozenset({"units"})
        return frozenset(
            cause for cause, on in (("rows", bool(self.paused_collections)), ("ends", self.transactions_paused)) if on
        )

    def describe(self) -> str:
        if self.closed:
            return "closed"
        if self.open:
            return "open"
        parts = sorted(c.rsplit(".", 1)[-1] for c in self.paused_collections)
        if self.transactions_paused:
            parts.append("transaction")
        return "paused: " + ",".join(parts)


OPEN = Intake()
CAUSES = ("units", "rows", "ends")


@dataclass(frozen=True)
class Load:
    pending_units: int
    rows_waiting_for_end: Mapping[str, int]  # per data collection
    ends_waiting_for_rows: int


@dataclass
class _Mark:
    """One load's high/low hysteresis."""

    high: int
    over: bool = False

    def update(self, value: int) -> bool:
        if value >= self.high:
            self.over = True
        elif value <= self.high // 2:
            self.over = False
        return self.over


class FlowControl:
    def __init__(self, limits: IntakeSettings) -> None:
        self._limits = limits
        self._units = _Mark(limits.max_pending_units)
        self._rows: dict[str, _Mark] = {}
        self._ends = _Mark(limits.max_ends_waiting_for_rows)

    def decide(self, load: Load) -> Intake:
        units = self._units.update(load.pending_units)
        ends = self._ends.update(load.ends_waiting_for_rows)
        ahead = set()
        for collection in set(self._rows) | set(load.rows_waiting_for_end):
            mark = self._rows.setdefault(collection, _Mark(self._limits.max_rows_waiting_for_end))
            if mark.update(load.rows_waiting_for_end.get(collection, 0)):
                ahead.add(collection)
        if units:
            return Intake(closed=True)
        return Intake(paused_collections=frozenset(ahead), transactions_paused=ends)
