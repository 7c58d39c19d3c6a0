"""The port the desk acts through (the live implementation is cdc_claims.actions.LiveActions)."""

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
    def rerun(self, kind: UnitKind, uuid: str, *, by: str) -> ActionResult: ...

    def resubmit(self, uuid: str, *, force: bool, by: str) -> ActionResult: ...

    def refresh(self, claim_code: str, *, by: str) -> ActionResult: ...

    def withdrawal_handled(self, claim_code: str, lines: Sequence[str] | None, *, by: str) -> ActionResult: ...
