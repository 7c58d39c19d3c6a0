"""Error mapping, retries and auth flows of the openIMIS client (pure logic, httpx.MockTransport)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stamina
from pydantic import SecretStr
from structlog.testing import capture_logs

from cdc_claims.errors import (
    AuthenticationFailed,
    ClaimRefused,
    ConfigError,
    DuplicateClaimCode,
    SubmitError,
    TransientSubmitError,
    UpstreamMisconfigured,
)
from cdc_claims.health import DependencyHealth
from cdc_claims.metrics import SUBMIT_LATENCY, UPSTREAM_ERRORS
from cdc_claims.settings import OpenHimSettings
from cdc_claims.submit.client import OpenImisClient, classify, operation_outcome_text

BASE = "http://openhim.test:5001/openimis/api/api_fhir_r4/"
PASSWORD = SecretStr("s3cret")
TOKEN_URL = "http://idp.test/token"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "openimis" / "samples"

CLAIM = {
    "resourceType": "Claim",
    "identifier": [{"type": {"coding": [{"code": "Code"}]}, "value": "UNIT-0001"}],
}
CLAIM_RESPONSE = {"resourceType": "ClaimResponse", "id": "7fe37a31-edbd-4f20-92a8-64a3d36a0a4c", "outcome": "partial"}


def outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "details": {"text": text}}],
    }


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    # no sleeping; the client's own max_attempts still applies (cap=True)
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport that answers from a script and keeps the requests it saw."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    def client(self, health: DependencyHealth | None = None, **settings: Any) -> OpenImisClient:
        return OpenImisClient(
            OpenHimSettings(base_url=BASE, max_attempts=3, **{"password": PASSWORD, **settings}),
            transport=httpx.MockTransport(self),
            health=health or DependencyHealth(),
        )


def created(doc: dict[str, Any] = CLAIM_RESPONSE, **headers: str) -> httpx.Response:
    return httpx.Response(201, json=doc, headers={"X-OpenHIM-TransactionID": "abc123", **headers})


def counter(kind: str) -> float:
    samples = (s for m in UPSTREAM_ERRORS.collect() for s in m.samples if s.name.endswith("_total"))
    return next((s.value for s in samples if s.labels == {"kind": kind}), 0.0)


# --- happy path --------------------------------------------------------------------------------


def test_submit_posts_to_claim_with_trailing_slash_and_basic_auth() -> None:
    mock = Recorder(created())
    with mock.client() as client:
        assert client.submit_claim(CLAIM) == CLAIM_RESPONSE
        assert client.last_transaction_id == "abc123"
    (request,) = mock.requests
    assert request.method == "POST"
    assert request.url.path == "/openimis/api/api_fhir_r4/Claim/"
    assert json.loads(request.content) == CLAIM
    assert request.headers["Content-Type"] == "application/json"  # openIMIS: fhir+json -> 415
    expected = base64.b64encode(b"cdc-claims:s3cret").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"


def test_a_201_with_rejected_lines_is_a_normal_result() -> None:
    rejected = json.loads((SAMPLES / "response_rejected_family.json").read_text())
    mock = Recorder(created(rejected))
    with mock.client() as client:
        assert client.submit_claim(CLAIM) == rejected


def test_submit_latency_is_observed() -> None:
    def count() -> float:
        return next(s.value for m in SUBMIT_LATENCY.collect() for s in m.samples if s.name.endswith("_count"))

    before = count()
    with Recorder(created()).client() as client:
        client.submit_claim(CLAIM)
    assert count() == before + 1


def test_get_claim_response_quotes_the_id_and_keeps_the_trailing_slash() -> None:
    mock = Recorder(httpx.Response(200, json=CLAIM_RESPONSE))
    with mock.client() as client:
        assert client.get_claim_response("BAHMNI/42 x") == CLAIM_RESPONSE
    assert mock.requests[0].url.raw_path == b"/openimis/api/api_fhir_r4/ClaimResponse/BAHMNI%2F42%20x/"


def test_base_url_without_trailing_slash_still_resolves_claim_path() -> None:
    mock = Recorder(created())
    client = OpenImisClient(
        OpenHimSettings(base_url=BASE.rstrip("/"), password=PASSWORD), transport=httpx.MockTransport(mock)
    )
    client.submit_claim(CLAIM)
    assert mock.requests[0].url.path == "/openimis/api/api_fhir_r4/Claim/"


# --- permanent errors ------------------------------------------------------------------------


def test_operation_outcome_500_is_refused_without_retry() -> None:
    mock = Recorder(httpx.Response(500, json=outcome("Unknown diagnosis code 'J06'")))
    before = counter("refused")
    with mock.client() as client, pytest.raises(ClaimRefused) as caught:
        client.submit_claim(CLAIM)
    assert not isinstance(caught.value, DuplicateClaimCode)
    assert "J06" in caught.value.message
    assert not caught.value.retriable
    assert len(mock.requests) == 1
    assert counter("refused") == before + 1


def test_duplicate_claim_code_from_the_real_sample() -> None:
    sample = json.loads((SAMPLES / "case_duplicate_code.json").read_text())
    assert sample["http_status"] == 500
    mock = Recorder(httpx.Response(500, json=sample["response"]))
    with mock.client() as client, pytest.raises(DuplicateClaimCode) as caught:
        client.submit_claim(CLAIM)
    assert "already exists" in caught.value.message
    assert caught.value.reason == "duplicate"
    assert len(mock.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_is_not_retried_here_but_is_retriable_for_the_unit(status: int) -> None:
    """The next attempt would fail the same way, so no fast retry; but an operator fixes the
    password, so the consumer tries the unit again later instead of parking it."""
    mock = Recorder(httpx.Response(status, headers={"WWW-Authenticate": "Basic"}))
    with mock.client() as client, pytest.raises(AuthenticationFailed) as caught:
        client.submit_claim(CLAIM)
    assert len(mock.requests) == 1
    assert caught.value.retriable


def test_no_channel_404_is_not_retried_here_but_is_retriable_for_the_unit() -> None:
    mock = Recorder(httpx.Response(404, text="Not Found"))
    with mock.client() as client, pytest.raises(UpstreamMisconfigured) as caught:
        client.submit_claim(CLAIM)
    assert caught.value.retriable
    assert caught.value.reason == "upstream_misconfigured"
    assert len(mock.requests) == 1


def test_a_refusing_openhim_marks_the_dependency_failing_until_it_answers() -> None:
    clock = [0.0]
    health = DependencyHealth(grace=10.0, clock=lambda: clock[0])
    mock = Recorder(httpx.Response(401, headers={"WWW-Authenticate": "Basic"}))
    with mock.client(health=health) as client:
        with pytest.raises(AuthenticationFailed):
            client.submit_claim(CLAIM)
        assert health.problem() is None  # within the grace period
        clock[0] = 11.0
        with pytest.raises(AuthenticationFailed):
            client.submit_claim(CLAIM)
        assert health.problem() == "openhim auth"
        mock.answers = [httpx.Response(500, json=outcome("Unknown diagnosis code 'J06'"))]
        with pytest.raises(ClaimRefused):
            client.submit_claim(CLAIM)  # openIMIS answered: the route and credentials work
        assert health.problem() is None


def test_non_json_success_is_an_error() -> None:
    with Recorder(httpx.Response(201, text="<html>")).client() as client, pytest.raises(SubmitError):
        client.submit_claim(CLAIM)


# --- transient errors ------------------------------------------------------------------------


def test_openhim_internal_error_is_transient_and_retried() -> None:
    plain = httpx.Response(500, text="An internal server error occurred", headers={"Content-Type": "text/plain"})
    mock = Recorder(plain, created())
    before = counter("upstream_unreachable")
    with mock.client() as client:
        assert client.submit_claim(CLAIM) == CLAIM_RESPONSE
    assert len(mock.requests) == 2
    assert counter("upstream_unreachable") == before + 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="Service Unavailable"),
        httpx.Response(502, json=outcome("not a validation error: 502")),
        httpx.Response(429),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["503", "502-with-outcome", "429", "connect-error", "timeout"],
)
def test_transient_failures_are_retried_up_to_max_attempts(failure: httpx.Response | Exception) -> None:
    mock = Recorder(failure)
    with mock.client() as client, pytest.raises(TransientSubmitError) as caught:
        client.submit_claim(CLAIM)
    assert caught.value.retriable
    assert len(mock.requests) == 3


def test_timeouts_are_counted_as_timeouts() -> None:
    before = counter("timeout")
    mock = Recorder(httpx.ReadTimeout("slow"), created())
    with mock.client() as client:
        client.submit_claim(CLAIM)
    assert counter("timeout") == before + 1


# --- auth modes ----------------------------------------------------------------------------


def test_custom_token_header() -> None:
    mock = Recorder(created())
    with mock.client(auth="custom", custom_token=SecretStr("tok-1")) as client:
        client.submit_claim(CLAIM)
    assert mock.requests[0].headers["Authorization"] == "Custom tok-1"


def token_response(token: str, expires_in: int = 3600) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in})


def bearer_transport(tokens: list[str], accepted: set[str]) -> tuple[Recorder, list[dict[str, str]]]:
    forms: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            forms.append(dict(httpx.QueryParams(request.content.decode())))
            return token_response(tokens.pop(0))
        if request.headers.get("Authorization", "").removeprefix("Bearer ") in accepted:
            return created()
        return httpx.Response(401, headers={"WWW-Authenticate": "Basic"})

    return Recorder(handler), forms


def test_bearer_fetches_a_token_with_client_credentials_and_caches_it() -> None:
    mock, forms = bearer_transport(["t1"], {"t1"})
    with mock.client(auth="bearer", token_url=TOKEN_URL) as client:
        client.submit_claim(CLAIM)
        client.get_claim_response("UNIT-0001")
    assert forms == [{"grant_type": "client_credentials", "client_id": "cdc-claims", "client_secret": "s3cret"}]
    assert [r.headers.get("Authorization") for r in mock.requests[1:]] == ["Bearer t1", "Bearer t1"]


def test_bearer_refreshes_once_on_401_and_retries() -> None:
    mock, forms = bearer_transport(["stale", "fresh"], {"fresh"})
    with mock.client(auth="bearer", token_url=TOKEN_URL) as client:
        assert client.submit_claim(CLAIM) == CLAIM_RESPONSE
    assert len(forms) == 2
    assert mock.requests[-1].headers["Authorization"] == "Bearer fresh"


def test_bearer_still_401_after_refresh_is_authentication_failed() -> None:
    mock, forms = bearer_transport(["bad1", "bad2"], set())
    with mock.client(auth="bearer", token_url=TOKEN_URL) as client, pytest.raises(AuthenticationFailed):
        client.submit_claim(CLAIM)
    assert len(forms) == 2


def test_bearer_token_endpoint_refusal_is_authentication_failed() -> None:
    mock = Recorder(httpx.Response(401, json={"error": "invalid_client"}))
    with mock.client(auth="bearer", token_url=TOKEN_URL) as client, pytest.raises(AuthenticationFailed):
        client.submit_claim(CLAIM)
    assert len(mock.requests) == 1


def test_bearer_token_endpoint_5xx_is_transient() -> None:
    mock = Recorder(httpx.Response(503), token_response("t"), created())
    with mock.client(auth="bearer", token_url=TOKEN_URL) as client:
        assert client.submit_claim(CLAIM) == CLAIM_RESPONSE


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"auth": "basic"}, "CDC_CLAIMS_OPENHIM__PASSWORD"),  # no password has a default
        ({"auth": "bearer", "token_url": "https://idp.test/token"}, "CDC_CLAIMS_OPENHIM__PASSWORD"),
        ({"auth": "custom"}, "custom_token"),
        ({"auth": "bearer", "password": PASSWORD}, "token_url"),
        ({"auth": "mtls"}, "client_cert"),
    ],
)
def test_incomplete_auth_settings_refuse_to_start(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        OpenImisClient(OpenHimSettings(**settings))


def test_disabling_tls_verification_is_logged() -> None:
    with capture_logs() as logs:
        OpenImisClient(OpenHimSettings(base_url="https://openhim.test/", verify_tls=False, password=PASSWORD)).close()
    assert {"event": "tls_verification_disabled", "log_level": "warning", "setting": "openhim.verify_tls"} in logs


def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        OpenImisClient(OpenHimSettings(ca_bundle=tmp_path / "missing.pem", password=PASSWORD))


# --- pure helpers ----------------------------------------------------------------------------


def test_operation_outcome_text() -> None:
    assert operation_outcome_text(outcome("a")) == "a"
    assert operation_outcome_text({"resourceType": "ClaimResponse"}) is None
    assert operation_outcome_text({"resourceType": "OperationOutcome", "issue": [{"diagnostics": "d"}]}) == "d"


def test_classify_keeps_2xx() -> None:
    response = httpx.Response(201, json=CLAIM_RESPONSE, request=httpx.Request("POST", BASE + "Claim/"))
    assert classify(response) is None
