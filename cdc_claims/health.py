"""Which dependency keeps refusing us, and why: the input of ``/readyz`` and of the alerts.

A role that retries forever must not look healthy while it does: an operator has to see at
once that claims wait because openHIM refuses the password, not find out from billing staff a
week later. The openHIM client reports every failure and every success here; ``/readyz`` says
"not ready: openhim auth" once a dependency has failed without a success in between for
``grace`` seconds, and ``cdc_claims_upstream_failing{dependency, cause}`` is 1 meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cdc_claims import metrics


class DependencyHealth:
    """Thread-safe record of the dependencies failing right now (since when, and why)."""

    def __init__(self, *, grace: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[str, float]] = {}  # dependency -> (cause, since)

    def failed(self, dependency: str, cause: str) -> None:
        with self._lock:
            previous = self._failing.get(dependency)
            since = previous[1] if previous is not None else self._clock()
            if previous is not None and previous[0] != cause:
                metrics.UPSTREAM_FAILING.labels(dependency=dependency, cause=previous[0]).set(0)
            self._failing[dependency] = (cause, since)
        metrics.UPSTREAM_FAILING.labels(dependency=dependency, cause=cause).set(1)

    def succeeded(self, dependency: str) -> None:
        with self._lock:
            previous = self._failing.pop(dependency, None)
        if previous is not None:
            metrics.UPSTREAM_FAILING.labels(dependency=dependency, cause=previous[0]).set(0)

    def problem(self) -> str | None:
        """``"openhim auth"`` for the longest-failing dependency past the grace period, else None."""
        now = self._clock()
        with self._lock:
            late = sorted((since, dep, cause) for dep, (cause, since) in self._failing.items())
        for since, dependency, cause in late:
            if now - since >= self._grace:
                return f"{dependency} {cause}"
        return None


#: The process's own record (one role per process); tests make their own.
HEALTH = DependencyHealth()


class Heartbeat:
    """Liveness of a role's loop: it completed a step within ``max_age`` seconds."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age
        self._clock = clock
        self._last = 0.0

    def beat(self) -> None:
        self._last = self._clock()

    def __call__(self) -> bool:
        return self._clock() - self._last < self._max_age


class Readiness:
    """``/readyz``: the loop turns, the role's own check passes (a consumer: assigned and
    consuming) and no dependency has kept refusing us (openHIM credentials, routing...)."""

    def __init__(self, heartbeat: Heartbeat, health: DependencyHealth = HEALTH) -> None:
        self.heartbeat = heartbeat
        self.health = health
        self.check: Callable[[], bool | str] = lambda: True

    def __call__(self) -> bool | str:
        if not self.heartbeat():
            return "loop not turning"
        own = self.check()
        if own is not True:
            return own or "not ready"
        return self.health.problem() or True
