"""FHIR rendering of a claim: the Claim posted to openIMIS and the audit Bundle published to Kafka.

Pure functions of the draft (and context): no network, no clock, no configuration lookups.
"""

from cdc_claims.claim.audit_bundle import AUDIT_NAMESPACE as AUDIT_NAMESPACE
from cdc_claims.claim.audit_bundle import render_audit_bundle as render_audit_bundle
from cdc_claims.claim.fhir_claim import MAX_DIAGNOSES as MAX_DIAGNOSES
from cdc_claims.claim.fhir_claim import claim_diagnoses as claim_diagnoses
from cdc_claims.claim.fhir_claim import render_claim as render_claim
from cdc_claims.claim.render import FhirRenderer as FhirRenderer
from cdc_claims.errors import ClaimRenderError as ClaimRenderError

__all__ = [
    "AUDIT_NAMESPACE",
    "MAX_DIAGNOSES",
    "ClaimRenderError",
    "FhirRenderer",
    "claim_diagnoses",
    "render_audit_bundle",
    "render_claim",
]
