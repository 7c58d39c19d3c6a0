"""Crash injection for the durability tests: ``CDC_CLAIMS_FAILPOINT=<name>`` kills the process
at that point with ``os._exit`` (no clean-up, no offset commit, no flush), as a power cut would.

Unset in production; the check is one environment lookup per claim.
"""

from __future__ import annotations

import os
import sys

EXIT_CODE = 86


def failpoint(name: str) -> None:
    if os.environ.get("CDC_CLAIMS_FAILPOINT") == name:
        print(f"failpoint {name}: exiting", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)
