"""The openIMIS FHIR R4 client, through an openHIM channel (sync httpx).

Error policy, decided here and only here (``openimis/CONTRACT.md`` §6, openHIM INFRA §6.4):

==========================================================  ======================================
what came back                                              what the caller gets
==========================================================  ======================================
2xx (a 201 with rejected lines is a normal result)          the JSON body
500 + ``OperationOutcome`` (openIMIS validation)            :class:`ClaimRefused`, permanent
... whose text says ``already exists``                      :class:`DuplicateClaimCode`
other 5xx, incl. openHIM's plain-text 500                   :class:`TransientSubmitError`, retried
``An internal server error occurred`` (upstream down)
408, 429                                                    :class:`TransientSubmitError`, retried
network error, timeout                                      :class:`TransientSubmitError`, retried
401 (bearer: after one token refresh), 403                  :class:`AuthenticationFailed`, retriable
404 (no openHIM channel matches), other 3xx/4xx, non-JSON   :class:`UpstreamMisconfigured`, retriable
==========================================================  ======================================

Transient errors are retried here with exponential backoff (stamina, ``max_attempts``); under
``stamina.set_testing(True)`` nothing sleeps. Credential and routing errors are not retried
here (the next attempt would fail the same way) but they are *retriable*: the consumer tries
the unit again later, forever, so claims flow by themselves once an operator fixes the cause.
Only :class:`ClaimRefused` (openIMIS says the claim itself is wrong) is permanent.

Each failed attempt counts in ``UPSTREAM_ERRORS{kind}`` and marks openHIM failing in
:mod:`cdc_claims.health` (``/readyz``, ``cdc_claims_upstream_failing``) until an answer comes
back; each claim POST attempt is timed in ``SUBMIT_LATENCY``.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import stamina

from cdc_claims.errors import (
    AuthenticationFailed,
    ClaimRefused,
    DuplicateClaimCode,
    SubmitError,
    TransientSubmitError,
    UpstreamMisconfigured,
)
from cdc_claims.health import HEALTH, DependencyHealth
from cdc_claims.log import get_logger
from cdc_claims.metrics import SUBMIT_LATENCY, UPSTREAM_ERRORS
from cdc_claims.settings import OpenHimSettings
from cdc_claims.submit.auth import build_auth, tls_context

log = get_logger(__name__)

TRANSACTION_HEADER = "X-OpenHIM-TransactionID"
OPENHIM_INTERNAL_ERROR = "An internal server error occurred"
#: backoff between attempts (seconds): 0.5, 1, 2, 4 ... capped, with jitter
WAIT_INITIAL, WAIT_MAX = 0.5, 10.0


def operation_outcome_text(doc: Any) -> str | None:
    """The issue texts of a FHIR OperationOutcome, or None if ``doc`` is not one."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    for issue in doc.get("issue") or []:
        if not isinstance(issue, dict):
            continue
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        text = (details or {}).get("text") or issue.get("diagnostics") or issue.get("code") or ""
        texts.append(str(text).strip())
    return "; ".join(t for t in texts if t) or "OperationOutcome without text"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def classify(response: httpx.Response) -> tuple[str, SubmitError] | None:
    """``None`` for a usable answer, else ``(metric kind, error to raise)``. Pure."""
    status = response.status_code
    if 200 <= status < 300:
        if not isinstance(_json(response), dict):
            return "bad_response", UpstreamMisconfigured(f"HTTP {status} without a JSON object body")
        return None
    where = f"{response.request.method} {response.request.url.path}"
    if status >= 500:
        outcome = operation_outcome_text(_json(response))
        if status == 500 and outcome is not None:
            if "already exists" in outcome:
                return "duplicate", DuplicateClaimCode(outcome, http_status=status)
            return "refused", ClaimRefused(outcome, http_status=status)
        body = response.text.strip()
        if body == OPENHIM_INTERNAL_ERROR:
            return "upstream_unreachable", TransientSubmitError(f"openHIM could not reach openIMIS ({where})")
        return "server_error", TransientSubmitError(f"HTTP {status} from {where}: {body[:200]}")
    if status in (408, 429):
        return "throttled", TransientSubmitError(f"HTTP {status} from {where}")
    if status in (401, 403):
        return "auth", AuthenticationFailed(f"HTTP {status} from {where}: credentials refused")
    if status == 404:
        return "no_channel", UpstreamMisconfigured(f"HTTP 404 from {where}: no openHIM channel matches")
    return "client_error", UpstreamMisconfigured(f"HTTP {status} from {where}: {response.text[:200]}")


def _transport_error(err: httpx.RequestError) -> tuple[str, TransientSubmitError]:
    if isinstance(err, httpx.TimeoutException):
        return "timeout", TransientSubmitError(f"timeout talking to openHIM: {err!r}")
    cause = err.__cause__ or err.__context__
    kind = "tls" if isinstance(cause, ssl.SSLError) or "SSL" in str(err) else "network"
    return kind, TransientSubmitError(f"{kind} error talking to openHIM: {err}")


class OpenImisClient:
    """Submit Claims and read ClaimResponses through openHIM. Thread-safe; one per process."""

    def __init__(
        self,
        settings: OpenHimSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        health: DependencyHealth = HEALTH,
    ) -> None:
        self.settings = settings
        self._health = health
        base = settings.base_url if settings.base_url.endswith("/") else settings.base_url + "/"
        self._http = httpx.Client(
            base_url=base,
            auth=build_auth(settings),
            verify=tls_context(settings),
            timeout=httpx.Timeout(settings.timeout_seconds),
            headers={"Accept": "application/json"},
            transport=transport,
            trust_env=False,
        )
        #: ``X-OpenHIM-TransactionID`` of the last answer (for logs and tests)
        self.last_transaction_id: str | None = None

    def __enter__(self) -> OpenImisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        """POST ``Claim/`` (trailing slash mandatory) -> the ClaimResponse JSON (201).

        Sent as ``application/json``: openIMIS answers ``application/fhir+json`` with 415.

        A 201 is not an acceptance: read the adjudication categories. Raises
        :class:`DuplicateClaimCode` if openIMIS already holds the code (the claim was submitted
        before; a retry after a timeout can see this too): then use :meth:`get_claim_response`.
        """
        code = _claim_code(claim)
        content = json.dumps(claim, separators=(",", ":")).encode()

        def post() -> httpx.Response:
            started = time.perf_counter()
            try:
                return self._http.post("Claim/", content=content, headers={"Content-Type": "application/json"})
            finally:
                SUBMIT_LATENCY.observe(time.perf_counter() - started)

        doc = self._call(post, what="submit_claim", claim_code=code)
        log.info("claim_submitted", claim_code=code, claim_uuid=doc.get("id"), transaction=self.last_transaction_id)
        return doc

    def get_claim_response(self, code_or_uuid: str) -> dict[str, Any]:
        """GET ``ClaimResponse/<uuid or code>/``. openIMIS answers an unknown id with 500 +
        OperationOutcome, raised as :class:`ClaimRefused`. By code, ``id`` is the code."""
        path = f"ClaimResponse/{urllib.parse.quote(code_or_uuid, safe='')}/"
        return self._call(lambda: self._http.get(path), what="get_claim_response", claim_code=code_or_uuid)

    def _call(self, send: Callable[[], httpx.Response], *, what: str, claim_code: str | None) -> dict[str, Any]:
        for attempt in stamina.retry_context(
            on=TransientSubmitError,
            attempts=self.settings.max_attempts,
            timeout=None,
            wait_initial=WAIT_INITIAL,
            wait_max=WAIT_MAX,
        ):
            with attempt:
                return self._attempt(send, what=what, claim_code=claim_code, number=attempt.num)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _attempt(
        self, send: Callable[[], httpx.Response], *, what: str, claim_code: str | None, number: int
    ) -> dict[str, Any]:
        try:
            response = send()
        except httpx.RequestError as err:
            kind, error = _transport_error(err)
            self._failed(kind, error, what=what, claim_code=claim_code, number=number)
            raise error from err
        except SubmitError as auth_error:  # raised by the bearer auth flow (token endpoint)
            self._failed(auth_error.reason, auth_error, what=what, claim_code=claim_code, number=number)
            raise
        self.last_transaction_id = response.headers.get(TRANSACTION_HEADER)
        verdict = classify(response)
        if verdict is None or isinstance(verdict[1], ClaimRefused):
            self._health.succeeded("openhim")  # openIMIS answered: the route and credentials work
        if verdict is None:
            doc: dict[str, Any] = response.json()
            return doc
        kind, refusal = verdict
        self._failed(kind, refusal, what=what, claim_code=claim_code, number=number, status=response.status_code)
        raise refusal

    def _failed(
        self, kind: str, error: SubmitError, *, what: str, claim_code: str | None, number: int, status: int = 0
    ) -> None:
        UPSTREAM_ERRORS.labels(kind=kind).inc()
        if not isinstance(error, ClaimRefused):
            self._health.failed("openhim", kind)
        log.warning(
            "openhim_call_failed",
            call=what,
            claim_code=claim_code,
            attempt=number,
            kind=kind,
            http_status=status or None,
            retriable=error.retriable,
            transaction=self.last_transaction_id,
            error=error.message[:500],
        )


def _claim_code(claim: dict[str, Any]) -> str | None:
    for identifier in claim.get("identifier") or []:
        codings = (identifier.get("type") or {}).get("coding") or [{}]
        if codings[0].get("code") == "Code":
            return str(identifier.get("value"))
    return None
