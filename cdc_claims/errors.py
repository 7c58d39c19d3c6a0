"""One exception tree for the whole sidecar.

Every error carries its own policy (as aiokafka does): retry loops ask ``err.retriable``
instead of chains of ``isinstance``, and every permanent error has a machine-readable
``reason`` that ends up somewhere visible (a held status row, a dead-letter record, a metric
label, a log line).

**Retriable** means "time or a person can fix it without touching the claim": the unit is
retried forever, with capped and jittered backoff, and the claim goes out by itself once the
cause is gone (a fixed password, a created openHIM channel, a broker back up). **Permanent**
means "this claim or record itself is wrong": it is parked in a terminal state with a reason
that ``cdc-claims rerun-held`` picks up, or dead-lettered::

    CdcClaimsError                     retriable=False
    +-- ConfigError                    bad settings or mapping file: refuse to start
    +-- MalformedEvent                 a Kafka record we cannot parse -> dead-letter topic
    +-- NotClaimable                   business skip (uninsured, unmapped, no ICD...) -> held row
    +-- ClaimRenderError               the draft is not a valid FHIR Claim -> held invalid_claim
    +-- ResponseMismatch               a ClaimResponse we cannot read against its claim
    |   +-- UnknownClaimStatus         a status code this sidecar does not know -> visible state
    +-- IllegalTransition              a lifecycle event not allowed in the current state
    +-- SourceUnavailable              OpenMRS database unreachable            retriable=True
    +-- KafkaUnavailable               broker down, rebalance, commit refused  retriable=True
    +-- LeaseHeld                      another sidecar is submitting this unit retriable=True
    +-- ConsumerStalled                no assignment / no progress: rebuild    retriable=True
    +-- SubmitError
    |   +-- TransientSubmitError       network error, timeout, 5xx w/o OperationOutcome  retriable
    |   +-- AuthenticationFailed       401/403, token refused                  retriable=True
    |   +-- UpstreamMisconfigured      404 no channel, other 4xx, non-JSON 2xx retriable=True
    |   +-- ClaimRefused               openIMIS 500 + OperationOutcome (validation): permanent
    |       +-- DuplicateClaimCode     "Claim with code ... already exists": already submitted
    +-- WriteBackError                 billing tables could not be written      retriable=True
        +-- WriteBackRefused           a constraint or data error: dead-letter the reply
"""

from __future__ import annotations


class CdcClaimsError(Exception):
    """Base of every error raised by cdc-claims."""

    retriable: bool = False
    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(CdcClaimsError):
    """Settings or mapping file invalid. Raised at start-up, never in the hot path."""

    reason = "config"


class MalformedEvent(CdcClaimsError):
    """A change event that cannot be parsed. It goes to the dead-letter topic, not away."""

    reason = "malformed_event"


class NotClaimable(CdcClaimsError):
    """A settled encounter or visit that must not be sent (yet).

    Not a failure of the sidecar: the claim is *held* with ``reason`` (one of
    :data:`HELD_REASONS`) and ``detail`` for billing staff, and can be re-run once fixed.
    """

    reason = "not_claimable"

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in HELD_REASONS:
            raise ValueError(f"unknown held reason {reason!r}")
        super().__init__(detail or reason, reason=reason)
        self.detail = detail


#: Every reason a claim can be held for, with the text billing staff see.
HELD_REASONS: dict[str, str] = {
    "uninsured": "patient has no insurance number",
    "no_diagnosis": "no diagnosis with an ICD-10 code known to openIMIS",
    "unmapped_line": "a billable order or procedure has no openIMIS code in the mapping",
    "unmapped_facility": "the encounter location has no openIMIS health facility code",
    "no_billable_lines": "nothing billable in the encounter or visit",
    "voided": "the encounter or visit was voided",
    "voided_after_submit": "the encounter was voided after its claim reached openIMIS: withdraw the claim",
    "unknown_status": "openIMIS reported a claim status this sidecar does not know",
    "internal_error": "the sidecar failed on this claim (a bug): see the logs, then re-run it",
    "changed_after_submit": "the encounter changed after its claim was submitted",
    "supplemented": "lines added after submission went out in a supplementary claim",
    "withdrawal_needed": "lines claimed in openIMIS were removed or reduced in Bahmni: withdraw them in openIMIS",
    "diagnosis_changed_after_submit": "the diagnoses changed after submission; openIMIS keeps the submitted ones",
    "refused_by_openimis": "openIMIS refused the claim (validation error)",
    "invalid_claim": "the claim built from the encounter is not a valid FHIR Claim",
    "unreadable_response": "openIMIS answered with a ClaimResponse that does not match the claim",
    "not_in_pricelist": "a line's item or service is not in the health facility's openIMIS pricelist",
    "price_above_pricelist": "a line asks more than the health facility's openIMIS pricelist pays",
    "no_active_policy": "no openIMIS policy of the insuree covers the claim's date",
    "attachment_missing": "a document the claim must carry is not in the visit (or its file is not in the store)",
    "attachment_too_large": "a document to attach is larger than the mapping's attachment limits",
    "attachment_unsupported": "a document to attach is of a type openIMIS does not keep (PDF, PNG, JPEG, text, Word)",
}


class ClaimRenderError(CdcClaimsError):
    """The draft cannot become a valid FHIR Claim (or audit Bundle). Nothing was sent."""

    reason = "invalid_claim"


class ResponseMismatch(CdcClaimsError):
    """A ClaimResponse that is not for the claim it was paired with, or cannot be read.

    Never half-applied: the claim stays visible (``unreadable_response``) and re-runnable.
    """

    reason = "unreadable_response"


class UnknownClaimStatus(ResponseMismatch):
    """openIMIS answered with a claim status code this sidecar does not know (forks use 6, 9,
    17-22...). The claim *is* in openIMIS: it is recorded in a visible state, never dropped,
    never re-sent, and followed until a known status arrives."""

    reason = "unknown_status"

    def __init__(self, message: str, *, code: int, claim_uuid: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.claim_uuid = claim_uuid


class IllegalTransition(CdcClaimsError):
    """A bug or a stale message: the event is not allowed in this state."""

    reason = "illegal_transition"


class KafkaUnavailable(CdcClaimsError):
    """Kafka refused or could not be reached (broker restart, rebalance, timed-out send).

    Every kafka-python error is turned into this at the adapter, so the roles ride through a
    broker restart instead of dying: nothing was committed, the records come again."""

    retriable = True
    reason = "kafka"


class LeaseHeld(CdcClaimsError):
    """Another sidecar holds the submit lease of this unit (a rolling update, a zombie after a
    rebalance). Wait and try again: by then the other one has finished or its lease expired."""

    retriable = True
    reason = "lease_held"


class ConsumerStalled(CdcClaimsError):
    """The Kafka consumer has no assignment, or makes no progress while its partitions have
    lag: the role rebuilds its consumer (rejoins the group) instead of reporting ready."""

    retriable = True
    reason = "consumer_stalled"

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause  # no_assignment | no_progress: the rebuild metric's label


class SourceUnavailable(CdcClaimsError):
    """The OpenMRS database could not be read; try again later."""

    retriable = True
    reason = "source_unavailable"


class SubmitError(CdcClaimsError):
    """Anything that went wrong talking to openHIM/openIMIS."""

    reason = "submit"


class TransientSubmitError(SubmitError):
    """Network error, timeout, or a 5xx that is not an openIMIS validation error."""

    retriable = True
    reason = "transient"


class AuthenticationFailed(SubmitError):
    """Credentials were refused even after a refresh. An operator must fix them; until then
    every claim waits (retried, not parked) and ``/readyz`` and an alert say why."""

    retriable = True
    reason = "auth"


class UpstreamMisconfigured(SubmitError):
    """openHIM answered in a way only configuration can fix (no channel: 404, another 4xx, a 2xx
    that is not JSON). Retried like a credential error: the claim is fine, the route is not."""

    retriable = True
    reason = "upstream_misconfigured"


class ClaimRefused(SubmitError):
    """openIMIS answered 500 with an OperationOutcome: the claim itself is invalid."""

    reason = "refused"

    def __init__(self, message: str, *, http_status: int = 500) -> None:
        super().__init__(message)
        self.http_status = http_status


class DuplicateClaimCode(ClaimRefused):
    """openIMIS already holds a claim with this code: it was submitted before."""

    reason = "duplicate"


class WriteBackError(CdcClaimsError):
    """The billing tables could not be written; the reply is retried, never dropped."""

    retriable = True
    reason = "write_back"


class WriteBackRefused(WriteBackError):
    """The database refused the rows themselves (a constraint, bad data): retrying cannot help,
    so the reply goes to the dead-letter topic with this text."""

    retriable = False
    reason = "write_back_refused"
