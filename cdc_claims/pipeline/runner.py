"""What every long-running role shares: signals, the observability server, a retry pause.

A role is a loop of ``step()`` calls; SIGTERM/SIGINT end it after the current step, so a pod
shutdown never interrupts a unit between its side effects and its offset commit.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from cdc_claims.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class Stopper:
    """Set by SIGTERM/SIGINT (or by tests); roles check it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> None:
        def _handler(signum: int, _frame: FrameType | None) -> None:
            log.info("stop_requested", signal=signal.Signals(signum).name)
            self._event.set()

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)

    def stop(self) -> None:
        self._event.set()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested meanwhile."""
        return self._event.wait(seconds)


def run_loop(
    step: Callable[[], None],
    stopper: Stopper,
    *,
    name: str,
    error_pause: float = 2.0,
    escalate: tuple[type[Exception], ...] = (),
) -> None:
    """Call ``step`` until stopped. Retriable errors pause and retry (a broker restart, a database
    blip); errors in ``escalate`` go to the caller (e.g. a stalled consumer to rebuild); any other
    error ends the role, so that a bug is seen and the pod restarted."""
    from cdc_claims.errors import CdcClaimsError

    log.info("role_started", role=name)
    while not stopper.stopped:
        try:
            step()
        except CdcClaimsError as err:
            if not err.retriable or isinstance(err, escalate):
                raise
            log.warning("role_retrying", role=name, reason=err.reason, error=str(err)[:300])
            stopper.wait(error_pause)
    log.info("role_stopped", role=name)


def when_reachable(build: Callable[[], T], stopper: Stopper, pause: float = 2.0) -> T | None:
    """``build()`` a client, trying again while it fails for a retriable reason (a broker not
    up yet); None if a stop was requested meanwhile. A permanent error goes to the caller."""
    from cdc_claims.errors import CdcClaimsError

    while not stopper.stopped:
        try:
            return build()
        except CdcClaimsError as err:
            if not err.retriable:
                raise
            log.warning("client_retry", error=str(err)[:300])
            stopper.wait(pause)
    return None
