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
  halves the limit, once per outage seen: requests sent before the last halving that fail too
  are the same outage (as TCP ignores losses from before its last window cut), so eight slots
  failing together halve it once, not down to 1.

The limit never falls below 1: a single claim at a time still probes the payer, so claims flow
again by themselves once it recovers.

The limit governs **requests to openIMIS**, not units: :class:`PacedApi` wraps the claim API,
so the consumer's workers (``submit_concurrency`` + a few) read the database, build and record
claims while others wait on openIMIS, and openIMIS sees exactly as many requests at once as it
absorbs. Its latency, not the sidecar's own work, is what the limit reads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cdc_claims import metrics
from cdc_claims.errors import TransientSubmitError
from cdc_claims.pipeline.ports import ClaimApi, JsonDict

#: workers beyond the POST ceiling: units being read, built and recorded while others POST
ASSEMBLING = 2


class AdaptiveLimit:
    def __init__(self, ceiling: int, *, initial: int | None = None, tolerance: float = 2.0, window: int = 100) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        self.ceiling = ceiling
        self._limit = float(min(ceiling, initial if initial is not None else max(1, ceiling // 2)))
        self._tolerance = tolerance
        self._recent: deque[float] = deque(maxlen=window)  # latencies of recent successes
        #: how many times the limit was halved: a request remembers it when it starts
        self.epoch = 0

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
        step = 1.0 / max(self._limit, 1.0)
        if baseline is None or seconds <= self._tolerance * baseline:
            self._limit = min(float(self.ceiling), self._limit + step)
        else:
            self._limit = max(1.0, self._limit - step)

    def on_overload(self, started_epoch: int | None = None) -> None:
        """``started_epoch``: :attr:`epoch` when the failed request started (None: a fresh one)."""
        if started_epoch is not None and started_epoch != self.epoch:
            return  # sent before the last halving: the outage already counted
        self.epoch += 1
        self._limit = max(1.0, self._limit / 2)


class PacedApi:
    """The claim API with at most ``limit.limit`` requests in flight; feeds the limit what it sees.

    Why a wrapper: the claim service stays unaware of pacing (one port, ``ClaimApi``), and the
    request is the only place where openIMIS's own latency can be told from ours."""

    def __init__(self, api: ClaimApi, limit: AdaptiveLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self.limit = limit
        self._clock = clock
        self._cond = threading.Condition()
        self._in_flight = 0
        metrics.SUBMIT_LIMIT.set(limit.limit)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit_claim(self, claim: JsonDict) -> JsonDict:
        with self._slot() as epoch:
            return self._timed(lambda: self._api.submit_claim(claim), epoch)

    def get_claim_response(self, code_or_uuid: str) -> JsonDict:
        with self._slot() as epoch:
            return self._timed(lambda: self._api.get_claim_response(code_or_uuid), epoch)

    @contextmanager
    def _slot(self) -> Iterator[int]:
        with self._cond:
            while self._in_flight >= self.limit.limit:
                self._cond.wait()
            self._in_flight += 1
            epoch = self.limit.epoch
        try:
            yield epoch
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()  # the limit may have grown by more than one

    def _timed(self, call: Callable[[], JsonDict], epoch: int) -> JsonDict:
        started = self._clock()
        try:
            result = call()
        except TransientSubmitError:
            with self._cond:
                self.limit.on_overload(epoch)
            raise
        # anything else (refused, auth, a duplicate code) says nothing about openIMIS's load
        else:
            with self._cond:
                self.limit.on_success(self._clock() - started)
            return result
        finally:
            metrics.SUBMIT_LIMIT.set(self.limit.limit)
