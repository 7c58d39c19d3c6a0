"""The claim service's ``Renderer`` port: the Claim posted and the audit Bundle published."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from cdc_claims.assemble.model import ClaimAttachment, ClaimContext, ClaimDraft
from cdc_claims.claim.audit_bundle import render_audit_bundle
from cdc_claims.claim.fhir_claim import render_validated_claim, without_attachment_data
from cdc_claims.errors import NotClaimable


class DocumentFiles(Protocol):
    """Where the documents a claim carries are read (``cdc_claims.assemble.documents``)."""

    def load(self, attachments: Sequence[ClaimAttachment]) -> tuple[bytes, ...]:
        """Each attachment's content, in order; raises NotClaimable (missing, too large)."""


class FhirRenderer:
    """Renders on the claim service's worker threads.

    The Claim's validated model is kept per thread from :meth:`claim` to :meth:`audit_bundle`
    (a unit runs both on one thread, in that order), so the Bundle reuses it instead of
    validating the same Claim again; a Claim it did not render here is validated as before.
    Documents are read here, at the last moment, from ``documents``; the audit Bundle records
    their size and hash, not their content.
    """

    def __init__(self, documents: DocumentFiles | None = None) -> None:
        self._last = threading.local()
        self._documents = documents

    def claim(self, draft: ClaimDraft) -> dict[str, Any]:
        files: tuple[bytes, ...] = ()
        if draft.attachments:
            if self._documents is None:
                raise NotClaimable(
                    "attachment_missing",
                    f"claim {draft.code} has documents to attach but no document store is configured"
                    " (CDC_CLAIMS_DOCUMENTS__DIR)",
                )
            files = self._documents.load(draft.attachments)
        claim, model = render_validated_claim(draft, files=files)
        self._last.claim, self._last.model = claim, model
        return claim

    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: dict[str, Any]) -> dict[str, Any]:
        model = getattr(self._last, "model", None) if getattr(self._last, "claim", None) is claim else None
        self._last.claim = self._last.model = None
        slim = without_attachment_data(claim)
        return render_audit_bundle(ctx, draft, slim, claim_model=model if slim is claim else None)
