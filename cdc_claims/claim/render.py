"""The claim service's ``Renderer`` port: the Claim posted and the audit Bundle published."""

from __future__ import annotations

from typing import Any

from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.claim.audit_bundle import render_audit_bundle
from cdc_claims.claim.fhir_claim import render_claim


class FhirRenderer:
    def claim(self, draft: ClaimDraft) -> dict[str, Any]:
        return render_claim(draft)

    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: dict[str, Any]) -> dict[str, Any]:
        return render_audit_bundle(ctx, draft, claim)
