"""Adaptive concurrency toward openIMIS: as many claims at once as the payer absorbs.

Why: a fixed number of claims in flight is wrong twice. Below the payer's capacity a backlog
drains slower than it could; above it, every extra claim only queues inside openIMIS, its
latency grows until requests time out, and the 5xx/timeouts then slow everyone (openIMIS runs
on one gunicorn box in most districts). The consumer instead adapts, in the manner of TCP's
AIMD and Netflix's concurrency-limits:

* every claim finished quickly (latency within ``tolerance`` times the best recent latency)
  adds ``1/limit``: one more slot per round of ``limit`` claims, up to ``ceiling`` (the
  ``submit_concurrency`` setting: the most this payer may get from us);
* a claim slower than that takes ``1/limit`` back: latency rising means queueing at the payer;
* an overload (5xx, a timeout, a refused connection: :class:`~cdc_claims.errors.TransientSubmitError`)
  halves the limit, at most once per round, so one outage does not collapse it to 1 in a burst.

The limit never falls below 1: a single claim at a time still probes the payer, so claims flow
again by themselves once it recovers. Pure; the role feeds it outcomes with its clock.
"""

from __future__ import annotations

from collections import deque


class AdaptiveLimit:
    def __init__(self, ceiling: int, *, initial: int | None = None, tolerance: float = 2.0, window: int = 100) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.ceiling = ceiling
        self._limit = float(min(ceiling, initial if initial is not None else max(1, ceiling // 2)))
        self._tolerance = tolerance
        self._recent: deque[float] = deque(maxlen=window)  # latencies of recent successes
        self._since_decrease = ceiling  # claims finished since the last halving (none yet)

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def baseline(self) -> float | None:
        """The best latency among recent successes: the payer unloaded."""
        return min(self._recent) if self._recent else None

    def on_success(self, seconds: float) -> None:
        baseline = self.baseline
        self._recent.append(seconds)
        self._since_decrease += 1
        step = 1.0 / max(self._limit, 1.0)
        if baseline is None or seconds <= self._tolerance * baseline:
            self._limit = min(float(self.ceiling), self._limit + step)
        else:
            self._limit = max(1.0, self._limit - step)

    def on_overload(self) -> None:
        if self._since_decrease < self.limit:
            return  # already halved for this round: the same outage, seen by every slot
        self._since_decrease = 0
        self._limit = max(1.0, self._limit / 2)

    def on_other(self) -> None:
        """A claim ended for a cause that says nothing about the payer's load (held, auth...)."""
        self._since_decrease += 1
