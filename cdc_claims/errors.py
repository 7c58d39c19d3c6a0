"""One exception tree for the whole sidecar.

Every error carries its own policy (as aiokafka does): retry loops ask ``err.retriable``
instead of chains of ``isinstance``, and every permanent error has a machine-readable
``reason`` that ends up somewhere visible (a held status row, a dead-letter record, a metric
label, a log line)::

    CdcClaimsError                     retriable=False
    +-- ConfigError                    bad settings or mapping file: refuse to start
    +-- MalformedEvent                 a Kafka record we cannot parse -> dead-letter topic
    +-- NotClaimable                   business skip (uninsured, unmapped, no ICD...) -> held row
    +-- SourceUnavailable              OpenMRS database unreachable            retriable=True
    +-- SubmitError
    |   +-- TransientSubmitError       network error, timeout, 5xx w/o OperationOutcome  retriable
    |   +-- AuthenticationFailed       401 after a credential refresh           retriable=False
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
    "changed_after_submit": "the encounter changed after its claim was submitted",
    "refused_by_openimis": "openIMIS refused the claim (validation error)",
    "invalid_claim": "the claim built from the encounter is not a valid FHIR Claim",
    "unreadable_response": "openIMIS answered with a ClaimResponse that does not match the claim",
}


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
    """Credentials were refused even after a refresh: an operator must act."""

    reason = "auth"


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
