"""The poller's view of the ledger: every claim sent (originals, supplements, replacements)
still open in openIMIS, and how a status it reports later is written back.

Glue over the ledger port, no SQL. A claim's history row and, for an original, its unit row
move together; lines openIMIS rejected settle the withdrawals flagged on them (a rejected line
holds no money, so there is nothing left to withdraw).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cdc_claims import metrics
from cdc_claims.errors import HELD_REASONS
from cdc_claims.lifecycle import NEEDS_ACTION_STATES, OPEN_STATES, State
from cdc_claims.pipeline.ports import ClaimLedger, OpenClaim
from cdc_claims.reply.model import decode_draft


@dataclass
class LedgerOpenClaims:
    """The poller's ``OpenClaimStore`` port."""

    ledger: ClaimLedger

    def open_claims(self) -> Sequence[OpenClaim]:
        return [
            OpenClaim(record.claim_code, record.state, decode_draft(record.draft_json), changed_at=record.updated_at)
            for record in self.ledger.open_claims(OPEN_STATES)
            if record.draft_json
        ]

    def open_claim(self, claim_code: str) -> OpenClaim | None:
        record = self.ledger.claim(claim_code)
        if record is None or record.state not in OPEN_STATES or not record.draft_json:
            return None
        return OpenClaim(record.claim_code, record.state, decode_draft(record.draft_json), changed_at=record.updated_at)

    def report_held(self) -> None:
        """``cdc_claims_held_claims{reason}``: held and failed ledger rows, as billing staff see them
        (``nothing_to_claim`` units are not among them)."""
        counts = Counter(e.reason or "unknown" for e in self.ledger.list_by_state(NEEDS_ACTION_STATES))
        for reason in {*HELD_REASONS, *counts}:
            metrics.CLAIMS_HELD_CURRENT.labels(reason=reason).set(counts.get(reason, 0))

    def set_state(
        self,
        claim_code: str,
        state: State,
        *,
        openimis_claim_uuid: str | None,
        reason: str | None = None,
        rejected: tuple[str, ...] | None = None,
    ) -> tuple[str, ...] | None:
        """Move the claim on; returns its remaining withdrawal lines when openIMIS's rejection of
        some of them settled those (None when nothing changed there)."""
        remaining: tuple[str, ...] | None = None
        record = self.ledger.claim(claim_code)
        if record is not None:
            changed = replace(
                record, state=state, openimis_claim_uuid=openimis_claim_uuid or record.openimis_claim_uuid
            )
            if reason is not None:
                changed = replace(changed, reason=reason)
            if rejected is not None:
                changed = replace(changed, rejected_lines=rejected)
                pending = json.loads(record.withdrawal) if record.withdrawal else {}
                settled = {line for line in pending if line in rejected}
                if settled and "*" not in pending:
                    left = {k: v for k, v in pending.items() if k not in settled}
                    changed = replace(changed, withdrawal=json.dumps(left, sort_keys=True) if left else None)
                    remaining = tuple(sorted(left))
            self.ledger.upsert_claim(changed)
        entry = self.ledger.get_by_code(claim_code)  # the unit row of an original claim
        if entry is not None:
            unit = replace(entry, state=state, openimis_claim_uuid=openimis_claim_uuid or entry.openimis_claim_uuid)
            self.ledger.upsert(replace(unit, reason=reason) if reason is not None else unit)
        return remaining

    def note(self, claim_code: str, text: str) -> bool:
        record = self.ledger.claim(claim_code)
        if record is not None and record.last_error == text:
            return False
        if record is not None:
            self.ledger.upsert_claim(replace(record, last_error=text))
        entry = self.ledger.get_by_code(claim_code)
        if entry is not None and entry.last_error != text:
            self.ledger.upsert(replace(entry, last_error=text))
        return True
