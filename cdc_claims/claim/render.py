"""The claim service's ``Renderer`` port: the Claim posted and the audit Bundle published."""

from __future__ import annotations

import threading
from typing import Any

from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.claim.audit_bundle import render_audit_bundle
from cdc_claims.claim.fhir_claim import render_validated_claim


class FhirRenderer:
    """Renders on the claim service's worker threads.

    The Claim's validated model is kept per thread from :meth:`claim` to :meth:`audit_bundle`
    (a unit runs both on one thread, in that order), so the Bundle reuses it instead of
    validating the same Claim again; a Claim it did not render here is validated as before.
    """

    def __init__(self) -> None:
        self._last = threading.local()

    def claim(self, draft: ClaimDraft) -> dict[str, Any]:
        claim, model = render_validated_claim(draft)
        self._last.claim, self._last.model = claim, model
        return claim

    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: dict[str, Any]) -> dict[str, Any]:
        model = getattr(self._last, "model", None) if getattr(self._last, "claim", None) is claim else None
        self._last.claim = self._last.model = None
        return render_audit_bundle(ctx, draft, claim, claim_model=model)
