"""The upstream hop for real: OpenImisClient -> openHIM emulator -> openIMIS sandbox.

Needs the openIMIS sandbox (started by the fixtures if it is not running; the first install
downloads from PyPI) and starts the openHIM emulator. No mocks.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stamina

from cdc_claims.errors import AuthenticationFailed, DuplicateClaimCode, TransientSubmitError
from cdc_claims.submit.client import OpenImisClient
from cdc_dev.openhim_component import CLIENT_ID, CLIENT_PASSWORD, OpenHimEmulator
from cdc_dev.openimis import OpenImis

pytest_plugins = ["fixtures_upstream"]
pytest.register_assert_rewrite("fixtures_upstream")

from fixtures_upstream import (  # noqa: E402
    claim_code,
    free_port,
    highest_category,
    minimal_claim,
    settings_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.no_database]

TRANSACTION_ID = re.compile(r"^[0-9a-f]{24}$")


@pytest.fixture(autouse=True)
def no_backoff() -> Iterator[None]:
    with stamina.set_testing(True, attempts=100, cap=True):
        yield


def transaction(admin: httpx.Client, transaction_id: str) -> dict[str, Any]:
    response = admin.get(f"/transactions/{transaction_id}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


# --- openIMIS accepts a known-good claim through each openHIM auth mode ---------------------------


@pytest.mark.parametrize(
    ("mode", "authentication_type"),
    [("basic", "basic"), ("custom", "token"), ("bearer", "jwt"), ("mtls", "tls")],
)
def test_claim_accepted_through_each_auth_mode(
    openhim: OpenHimEmulator, admin: httpx.Client, mode: str, authentication_type: str
) -> None:
    claim = minimal_claim()
    with OpenImisClient(settings_for(openhim, mode)) as client:
        response = client.submit_claim(claim)
        transaction_id = client.last_transaction_id

    assert response["resourceType"] == "ClaimResponse"
    assert highest_category(response) == 4  # checked
    assert {i["value"] for i in response["identifier"]} >= {claim_code(claim), response["id"]}
    assert response["total"][-1]["amount"]["value"] == 420.0
    assert transaction_id is not None and TRANSACTION_ID.match(transaction_id)

    recorded = transaction(admin, transaction_id)
    assert recorded["channel"] == "cdc-claims → openIMIS FHIR"
    assert recorded["clientID"] == CLIENT_ID
    assert recorded["authenticationType"] == authentication_type
    assert recorded["status"] == "Successful"
    assert recorded["request"]["method"] == "POST"
    assert recorded["request"]["path"] == "/openimis/api/api_fhir_r4/Claim/"
    assert recorded["response"]["status"] == 201
    assert "Authorization" not in recorded["request"]["headers"]


def test_duplicate_code_then_poll_by_code(openhim: OpenHimEmulator, admin: httpx.Client, openimis: OpenImis) -> None:
    claim = minimal_claim()
    code = claim_code(claim)
    with OpenImisClient(settings_for(openhim, "basic")) as client:
        first = client.submit_claim(claim)
        with pytest.raises(DuplicateClaimCode) as caught:
            client.submit_claim(claim)
        assert code in caught.value.message
        failed = transaction(admin, client.last_transaction_id or "")
        assert failed["status"] == "Failed"  # openIMIS's validation 500, as openHIM records it
        assert failed["response"]["status"] == 500

        by_code = client.get_claim_response(code)
        assert by_code["id"] == code  # openIMIS answers a by-code GET with id = the code
        assert first["id"] in {i["value"] for i in by_code["identifier"]}
        assert highest_category(by_code) == 4

        openimis.process_claim(first["id"])
        processed = client.get_claim_response(first["id"])
        assert highest_category(processed) == 16  # valuated
        assert processed["outcome"] == "complete"


# --- openHIM's answers of its own ------------------------------------------------------------------


def test_bad_credentials_get_401_with_basic_challenge(openhim: OpenHimEmulator) -> None:
    url = openhim.fhir_url() + "ClaimResponse/X/"
    for auth in [(CLIENT_ID, "wrong"), ("nobody", CLIENT_PASSWORD), None]:
        response = httpx.get(url, auth=auth)
        assert response.status_code == 401
        assert response.content == b""
        assert response.headers["WWW-Authenticate"] == "Basic"
        assert "X-OpenHIM-TransactionID" not in response.headers
    for header in ["Custom not-a-token", "Bearer not.a.jwt"]:
        assert httpx.get(url, headers={"Authorization": header}).status_code == 401


def test_client_reports_refused_credentials(openhim: OpenHimEmulator) -> None:
    with (
        OpenImisClient(settings_for(openhim, "basic", password="wrong")) as client,
        pytest.raises(AuthenticationFailed),
    ):
        client.submit_claim(minimal_claim())


def test_token_endpoint_checks_client_credentials(openhim: OpenHimEmulator) -> None:
    good = {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_PASSWORD}
    response = httpx.post(openhim.token_url, data=good)
    assert response.status_code == 200
    assert response.json()["token_type"] == "Bearer"
    assert httpx.post(openhim.token_url, data={**good, "client_secret": "x"}).status_code == 401
    assert httpx.post(openhim.token_url, data={**good, "grant_type": "password"}).status_code == 400


def test_unknown_path_is_404_even_without_credentials(openhim: OpenHimEmulator) -> None:
    for url in [f"{openhim.http_url}/fhir/Claim/", f"{openhim.http_url}/api/api_fhir_r4/Claim/"]:
        response = httpx.post(url, json={})
        assert response.status_code == 404
        assert "X-OpenHIM-TransactionID" not in response.headers
        assert "WWW-Authenticate" not in response.headers


def test_mtls_needs_a_known_certificate(openhim: OpenHimEmulator) -> None:
    # the HTTPS port without a client certificate and without other credentials: 401
    url = openhim.fhir_url(https=True) + "ClaimResponse/X/"
    response = httpx.get(url, verify=ssl.create_default_context(cafile=str(openhim.tls.ca)))
    assert response.status_code == 401


def test_upstream_down_gives_openhims_500(extra_emulator: Any, admin: httpx.Client) -> None:
    dead = extra_emulator([channel("dead upstream", "^/dead/.*$", port=free_port())])
    response = httpx.post(f"{dead.http_url}/dead/Claim/", json={}, auth=(CLIENT_ID, CLIENT_PASSWORD))
    assert response.status_code == 500
    assert response.text == "An internal server error occurred"
    assert response.headers["Content-Type"].startswith("text/plain")
    transaction_id = response.headers["X-OpenHIM-TransactionID"]
    with httpx.Client(base_url=dead.admin_url) as dead_admin:
        assert transaction(dead_admin, transaction_id)["status"] == "Failed"

    from cdc_claims.settings import OpenHimSettings

    settings = OpenHimSettings(
        base_url=f"{dead.http_url}/dead/", username=CLIENT_ID, password=CLIENT_PASSWORD, max_attempts=2
    )
    with OpenImisClient(settings) as client, pytest.raises(TransientSubmitError):
        client.submit_claim(minimal_claim())


# --- pass-through, against a real HTTP upstream of the test's own ------------------------------


def channel(name: str, pattern: str, *, port: int, **route: Any) -> dict[str, Any]:
    return {
        "name": name,
        "urlPattern": pattern,
        "methods": [],
        "type": "http",
        "status": "enabled",
        "authType": "private",
        "allow": ["fhir-submitters"],  # by role
        "routes": [{"name": name, "host": "127.0.0.1", "port": port, "primary": True, **route}],
    }


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []  # noqa: RUF012

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Upstream.seen.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        payload = gzip.compress(json.dumps({"teapot": True}).encode())
        self.send_response(418)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Upstream", "yes")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_port)
    server.shutdown()


def test_upstream_answer_passes_through(extra_emulator: Any, upstream: int) -> None:
    emulator = extra_emulator(
        [
            channel(
                "strip auth", "^/echo/.*$", port=upstream, pathTransform="s/^\\/echo//", username="u", password="p"
            ),
            channel("forward auth", "^/fwd/.*$", port=upstream, path="/fixed", forwardAuthHeader=True),
        ]
    )
    Upstream.seen.clear()
    response = httpx.post(f"{emulator.http_url}/echo/x/y?q=1&r=2", content=b"hello", auth=(CLIENT_ID, CLIENT_PASSWORD))
    assert response.status_code == 418
    assert response.json() == {"teapot": True}  # decompressed by openHIM
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["X-Upstream"] == "yes"
    assert response.headers.get_list("Set-Cookie") == ["a=1", "b=2"]
    transaction_id = response.headers["X-OpenHIM-TransactionID"]

    (seen,) = Upstream.seen
    assert seen["path"] == "/x/y?q=1&r=2"
    assert seen["body"] == b"hello"
    assert seen["headers"]["X-OpenHIM-TransactionID"] == transaction_id
    assert seen["headers"]["X-OpenHIM-ClientID"] == CLIENT_ID
    assert seen["headers"]["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()

    with httpx.Client(base_url=emulator.admin_url) as admin:
        assert transaction(admin, transaction_id)["status"] == "Completed"  # a 4xx

    Upstream.seen.clear()
    client_auth = httpx.BasicAuth(CLIENT_ID, CLIENT_PASSWORD)
    assert httpx.get(f"{emulator.http_url}/fwd/anything", auth=client_auth).status_code == 418
    (seen,) = Upstream.seen
    assert seen["path"] == "/fixed"
    assert seen["headers"]["Authorization"].startswith("Basic ")  # the client's own, forwarded
    assert base64.b64decode(seen["headers"]["Authorization"][6:]) == f"{CLIENT_ID}:{CLIENT_PASSWORD}".encode()


def test_openimis_errors_pass_through_unchanged(openhim: OpenHimEmulator) -> None:
    # openIMIS's own 500 + OperationOutcome for an unknown claim reaches the client as is
    response = httpx.get(openhim.fhir_url() + "ClaimResponse/NO-SUCH-CLAIM/", auth=(CLIENT_ID, CLIENT_PASSWORD))
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert TRANSACTION_ID.match(response.headers["X-OpenHIM-TransactionID"])
