"""The port the desk acts through: re-run, resubmit, refresh, withdrawal handled.

The desk never changes a claim itself. Each button calls one method of :class:`DeskActions`
with the signed-in user as ``by``; the live implementation (``cdc_claims.actions``) is the same
audited code the CLI commands run, so a fix made from the desk and one made from a terminal
leave the same trace. A method answers with an :class:`ActionResult` whose message is shown to
the clerk as is: it must be plain words, without patient names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cdc_claims.settings import UnitKind


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str


class DeskActions(Protocol):
    def rerun(self, kind: UnitKind, uuid: str, *, by: str) -> ActionResult:
        """Run a held or failed unit through the claim service again (after its cause was fixed)."""
        ...

    def resubmit(self, uuid: str, *, force: bool, by: str) -> ActionResult:
        """Send the corrected rejected lines of a unit as a replacement claim (``force``: unchanged ones too)."""
        ...

    def refresh(self, claim_code: str, *, by: str) -> ActionResult:
        """Ask openIMIS for the claim's status now instead of at the poller's next turn."""
        ...

    def withdrawal_handled(self, claim_code: str, lines: Sequence[str] | None, *, by: str) -> ActionResult:
        """Billing staff withdrew ``lines`` (``None``: every flagged line) of the claim in openIMIS."""
        ...
