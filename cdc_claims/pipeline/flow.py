"""Flow control: read Kafka only as far ahead as the consumer can hold, whatever the backlog.

Why: a consumer that polls everything it is given holds the whole backlog in memory: rows
waiting for their transaction's END while the data topics run ahead of the transaction topic,
units waiting for their settle window, claims queued for the workers (about 10 KiB per unit:
373 MiB with 30,000 encounters queued). The backlog is safe in Kafka; nothing is gained by
copying it into this process.

Three loads, each with a high mark (its setting) and a low mark (half of it), so intake does not
flap:

* **pending units** above the mark: every partition is paused. Units leave by themselves (their
  settle window passes, a worker finishes the claim), so this cannot deadlock; while openIMIS is
  down they stay, and the backlog stays in Kafka, which is the point;
* **rows waiting for their END** (the data topics ahead): the data topics pause, the
  transaction topic keeps being read, so the ENDs that complete those rows come in;
* **ENDs waiting for their rows** (the transaction topic ahead): the transaction topic pauses
  and the data topics bring the rows.

If both buffer loads are high at once, neither side is paused: pausing both could only end by
transactions expiring incomplete. Pure: the role feeds the loads and applies the decision with
``pause`` / ``resume`` (kafka-python keeps records it already fetched for a paused partition and
returns them after the resume, so nothing is skipped).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cdc_claims.settings import IntakeSettings


class Intake(enum.Enum):
    """Which partitions to read from."""

    OPEN = "open"
    TRANSACTIONS_ONLY = "transactions_only"  # data topics paused
    DATA_ONLY = "data_only"  # the transaction topic paused
    CLOSED = "closed"  # everything paused

    def reads_data(self) -> bool:
        return self in (Intake.OPEN, Intake.DATA_ONLY)

    def reads_transactions(self) -> bool:
        return self in (Intake.OPEN, Intake.TRANSACTIONS_ONLY)


#: the load behind each paused state, for the metric and the log
CAUSES = {Intake.CLOSED: "units", Intake.TRANSACTIONS_ONLY: "rows", Intake.DATA_ONLY: "ends"}


@dataclass(frozen=True)
class Load:
    pending_units: int
    rows_waiting_for_end: int
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
        self._units = _Mark(limits.max_pending_units)
        self._rows = _Mark(limits.max_rows_waiting_for_end)
        self._ends = _Mark(limits.max_ends_waiting_for_rows)

    def decide(self, load: Load) -> Intake:
        units = self._units.update(load.pending_units)
        rows = self._rows.update(load.rows_waiting_for_end)
        ends = self._ends.update(load.ends_waiting_for_rows)
        if units:
            return Intake.CLOSED
        if rows and not ends:
            return Intake.TRANSACTIONS_ONLY
        if ends and not rows:
            return Intake.DATA_ONLY
        return Intake.OPEN
