"""Is the consumer really consuming? The answer behind ``/readyz`` and the self-rebuild.

A kafka-python consumer can join its group and then never fetch: stuck in a rebalance after a
broker restart ("No partition metadata", an empty assignment, a revoke, then nothing: its member
id was evicted), or assigned with a position that stops moving while records wait (seen about
once in 25 starts, and on a fresh machine's first demo). A heartbeat that only says "the loop
turns" reports such a consumer ready forever. This detector looks at what matters instead:

* no assignment, for ``stall_seconds`` (30 s at most: a join takes seconds), while the broker
  does not show a stable group in which
  this member could be a standby: ``no_assignment`` (a standby of a rolling update is ready to
  take over, and only rebuilt if the group has lag for five times as long);
* lag on its own partitions and no record arriving, for ``stall_seconds``: ``no_progress``
  (not while flow control has paused intake on purpose: that lag is a backlog held in Kafka).

Pure: the role feeds it assignments, membership, lag reports and record arrivals with its clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LagReport = Mapping[tuple[str, int], tuple[int, bool]]  # (topic, partition) -> (lag, assigned)


@dataclass
class StallDetector:
    """``stalled()`` names the problem once it has lasted ``stall_seconds``; ``ready()`` is
    "assigned, and not stalled"."""

    stall_seconds: float
    started: float
    _assigned_since: float | None = None
    _unassigned_since: float | None = None
    _last_record: float | None = None
    _lag_since: float | None = None  # assigned partitions have had lag, with no record, since then
    _group_lag: bool = False
    _unstable_since: float | None = None
    _standby: bool = False
    _paused: bool = False

    def __post_init__(self) -> None:
        self._unassigned_since = self.started

    def assigned(self, now: float, count: int) -> None:
        if count:
            self._assigned_since, self._unassigned_since = now, None
            self._lag_since = None
        else:
            self._assigned_since, self._unassigned_since = None, now

    def records(self, now: float) -> None:
        self._last_record = now
        self._lag_since = None

    def intake_paused(self, paused: bool) -> None:
        """Intake is paused on purpose (flow control) or not: while it is, lag that waits in
        Kafka is the backlog being held back, not a stall."""
        self._paused = paused
        if paused:
            self._lag_since = None

    def membership(self, now: float, stable: bool) -> None:
        """``stable``: joined and not rebalancing; with no assignment, a standby of a stable group."""
        self._standby = stable and self._unassigned_since is not None
        if stable:
            self._unstable_since = None
        elif self._unstable_since is None:
            self._unstable_since = now

    def report(self, now: float, lag: LagReport) -> None:
        assigned_lag = any(value > 0 for value, mine in lag.values() if mine) and not self._paused
        self._group_lag = any(value > 0 for value, _mine in lag.values())
        if assigned_lag:
            if self._lag_since is None:
                self._lag_since = now
        else:
            self._lag_since = None

    def stalled(self, now: float) -> str | None:
        if self._unassigned_since is not None:
            # a join takes seconds; one that has not completed in half a minute will not
            join = min(self.stall_seconds, 30.0)
            unstable = self._unstable_since is not None and now - self._unstable_since >= join
            idle = now - self._unassigned_since
            if (unstable and idle >= join) or (self._group_lag and idle >= 5 * self.stall_seconds):
                return "no_assignment"
            return None
        if self._lag_since is not None and now - self._lag_since >= self.stall_seconds:
            return "no_progress"
        return None

    def ready(self, now: float) -> bool | str:
        """Assigned and consuming; or a standby in a stable group (a RollingUpdate's new pod must
        become ready while the old one still holds the partitions, or the rollout never ends)."""
        if self._assigned_since is None:
            return True if self._standby and self.stalled(now) is None else "no assignment"
        problem = self.stalled(now)
        return problem.replace("_", " ") if problem else True
