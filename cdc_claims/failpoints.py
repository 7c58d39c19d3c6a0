"""Crash injection for the durability tests: with ``CDC_CLAIMS_FAILPOINT=<name>`` (read once,
into :class:`~cdc_claims.settings.Settings`) the claim service kills the process at that point
with ``os._exit`` (no clean-up, no offset commit, no flush), as a power cut would.

The composition root hands the service :func:`crash_at` for the configured name, or
:func:`no_failpoint` (production, and unit tests).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_CODE = 86

Failpoint = Callable[[str], None]


def no_failpoint(_name: str) -> None:
    """Production: reaching a failpoint does nothing."""


def crash_at(wanted: str | None) -> Failpoint:
    """A failpoint that exits the process at ``wanted`` (a no-op when None)."""
    if not wanted:
        return no_failpoint

    def failpoint(name: str) -> None:
        if name == wanted:
            print(f"failpoint {name}: exiting", file=sys.stderr, flush=True)
            os._exit(EXIT_CODE)

    return failpoint
