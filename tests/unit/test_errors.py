"""The error tree: every error the sidecar raises is in it, and each knows its own policy."""

from __future__ import annotations

import pytest

from cdc_claims import errors
from cdc_claims.claim import ClaimRenderError
from cdc_claims.errors import IllegalTransition
from cdc_claims.reply import ResponseMismatch

#: what time or a person fixes without touching the claim: retried forever, never parked
RETRIABLE = [
    errors.SourceUnavailable,
    errors.KafkaUnavailable,
    errors.LeaseHeld,
    errors.ConsumerStalled,
    errors.TransientSubmitError,
    errors.AuthenticationFailed,
    errors.UpstreamMisconfigured,
    errors.WriteBackError,
]
#: what is wrong with the claim or the record itself: parked with a reason or dead-lettered
PERMANENT = [
    errors.ConfigError,
    errors.MalformedEvent,
    errors.ClaimRenderError,
    errors.ResponseMismatch,
    errors.IllegalTransition,
    errors.ClaimRefused,
    errors.DuplicateClaimCode,
    errors.WriteBackRefused,
]


@pytest.mark.parametrize("cls", RETRIABLE)
def test_retriable_errors(cls: type[errors.CdcClaimsError]) -> None:
    assert issubclass(cls, errors.CdcClaimsError)
    assert cls.retriable is True


@pytest.mark.parametrize("cls", PERMANENT)
def test_permanent_errors(cls: type[errors.CdcClaimsError]) -> None:
    assert issubclass(cls, errors.CdcClaimsError)
    assert cls.retriable is False


def test_the_pure_core_raises_errors_of_the_tree_not_bare_value_errors() -> None:
    for cls in (ClaimRenderError, ResponseMismatch, IllegalTransition):
        assert issubclass(cls, errors.CdcClaimsError)
        assert not issubclass(cls, ValueError)


def test_every_error_class_has_a_reason_of_its_own() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.CdcClaimsError)]
    assert set(classes) >= set(RETRIABLE) | set(PERMANENT)
    reasons = [c.reason for c in classes if c is not errors.CdcClaimsError]
    assert len(reasons) == len(set(reasons)), "two error classes share a reason (metric label)"


def test_an_unknown_status_keeps_its_code() -> None:
    err = errors.UnknownClaimStatus("status 17", code=17, claim_uuid="u")
    assert (err.code, err.claim_uuid, err.reason, err.retriable) == (17, "u", "unknown_status", False)
    assert isinstance(err, errors.ResponseMismatch)
