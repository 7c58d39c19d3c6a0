"""The poller role: later status changes in openIMIS flow back like the first response.

openIMIS reviews and processes claims long after the POST (status 8 processed, 16 valuated,
or a late rejection) and offers no callback a FHIR client can rely on. The poller asks for the
ClaimResponse of every claim still open in the ledger and, when its status moved, publishes a
reply exactly like the consumer does, so the writer has one path for every update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cdc_claims.assemble.model import ClaimDraft
from cdc_claims.errors import CdcClaimsError
from cdc_claims.lifecycle import OPENIMIS_STATUS, State, allowed
from cdc_claims.log import get_logger
from cdc_claims.pipeline.claim_service import Normalizer
from cdc_claims.pipeline.ports import ClaimApi, Publisher
from cdc_claims.reply.model import ReplyMessage

log = get_logger(__name__)


@dataclass(frozen=True)
class OpenClaim:
    claim_code: str
    state: State
    draft: ClaimDraft
    approved_total: str | None = None  # last published approved total, to notice amount changes


class OpenClaimStore(Protocol):
    def open_claims(self) -> Sequence[OpenClaim]: ...
    def set_state(self, claim_code: str, state: State, *, openimis_claim_uuid: str | None) -> None: ...


class Poller:
    def __init__(
        self,
        store: OpenClaimStore,
        api: ClaimApi,
        normalize: Normalizer,
        publisher: Publisher,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._api = api
        self._normalize = normalize
        self._pub = publisher
        self._now = now

    def poll_once(self) -> int:
        """Check every open claim once; returns how many changed."""
        changed = 0
        for claim in self._store.open_claims():
            try:
                response = self._api.get_claim_response(claim.claim_code)
            except CdcClaimsError as err:
                if err.retriable:
                    raise
                log.warning("poll_failed", claim_code=claim.claim_code, reason=err.reason, error=str(err)[:200])
                continue
            normalized = self._normalize(response, claim.draft, received_at=self._now())
            event, _ = OPENIMIS_STATUS[normalized.openimis_status]
            new_state = State(normalized.iclm_status.lower())
            if new_state is claim.state or not allowed(claim.state, event):
                continue
            self._pub.reply(ReplyMessage(claim.draft, normalized, None))
            self._pub.flush()
            self._store.set_state(claim.claim_code, new_state, openimis_claim_uuid=normalized.claim_uuid)
            log.info("claim_status_changed", claim_code=claim.claim_code, old=claim.state.value, new=new_state.value)
            changed += 1
        return changed
