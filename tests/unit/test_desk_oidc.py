"""OIDC sign-in against an in-memory provider: PKCE, state and nonce are really checked."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from desk_fakes import client
from joserfc import jwt
from joserfc.jwk import RSAKey

from cdc_claims.desk.oidc import AuthlibOidc

ISSUER = "https://keycloak.example.org/realms/bahmni"
CLIENT = "cdc-desk"


class Provider:
    """Discovery, JWKS and a token endpoint that checks the code verifier against the challenge."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.challenge = ""
        self.nonce = ""
        self.claims: Callable[[], dict[str, Any]] = self.good_claims
        self.token_requests: list[dict[str, list[str]]] = []

    def good_claims(self) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": ISSUER,
            "aud": CLIENT,
            "sub": "0b3c-sub",
            "preferred_username": "amina",
            "nonce": self.nonce,
            "iat": now,
            "exp": now + 300,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
                    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
                    "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs",
                    "id_token_signing_alg_values_supported": ["RS256"],
                },
            )
        if path.endswith("/certs"):
            return httpx.Response(200, json={"keys": [self.key.as_dict(private=False)]})
        if path.endswith("/token"):
            form = parse_qs(request.content.decode())
            self.token_requests.append(form)
            verifier = form.get("code_verifier", [""])[0]
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if form.get("code") != ["the-code"] or digest != self.challenge:
                return httpx.Response(400, json={"error": "invalid_grant"})
            id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, self.claims(), self.key)
            return httpx.Response(
                200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
            )
        return httpx.Response(404)


def _start(tmp_path: Path, provider: Provider) -> tuple[Any, dict[str, list[str]]]:
    oidc = AuthlibOidc(ISSUER, CLIENT, "client-secret", transport=httpx.MockTransport(provider.handle))
    c = client(tmp_path, oidc=oidc, local=False)
    front = c.get("/summary")
    assert front.headers["location"] == "/login?next=%2Fsummary"
    login = c.get(front.headers["location"])  # the only way in: straight to the provider
    assert (login.status_code, login.headers["location"]) == (303, "/auth/oidc?next=%2Fsummary")
    answer = c.get(login.headers["location"])
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/protocol/openid-connect/auth"
    params = parse_qs(location.query)
    provider.challenge = params["code_challenge"][0]
    provider.nonce = params["nonce"][0]
    return c, params


def test_the_authorization_request_uses_pkce_state_and_nonce(tmp_path: Path) -> None:
    _, params = _start(tmp_path, Provider())
    assert params["response_type"] == ["code"]
    assert params["client_id"] == [CLIENT]
    assert params["code_challenge_method"] == ["S256"]
    assert params["redirect_uri"] == ["http://testserver/auth/callback"]
    assert "openid" in params["scope"][0].split()
    assert all(len(params[k][0]) >= 20 for k in ("state", "nonce", "code_challenge"))


def test_the_callback_signs_in_as_the_preferred_username(tmp_path: Path) -> None:
    provider = Provider()
    c, params = _start(tmp_path, provider)
    answer = c.get("/auth/callback", params={"code": "the-code", "state": params["state"][0]})
    assert (answer.status_code, answer.headers["location"]) == (303, "/summary")
    (token_request,) = provider.token_requests
    assert token_request["redirect_uri"] == ["http://testserver/auth/callback"]
    who = re.search(r'id="who">([^<]+)<', c.get("/").text)
    assert who is not None and who.group(1) == "amina"


def test_without_a_user_name_the_subject_is_the_actor(tmp_path: Path) -> None:
    provider = Provider()
    provider.claims = lambda: {k: v for k, v in provider.good_claims().items() if k != "preferred_username"}
    c, params = _start(tmp_path, provider)
    c.get("/auth/callback", params={"code": "the-code", "state": params["state"][0]})
    assert 'id="who">0b3c-sub<' in c.get("/").text


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda claims: {**claims, "nonce": "replayed"}, id="nonce"),
        pytest.param(lambda claims: {**claims, "aud": "another-client"}, id="audience"),
        pytest.param(lambda claims: {**claims, "iss": "https://evil.example"}, id="issuer"),
        pytest.param(lambda claims: {**claims, "exp": int(time.time()) - 3600}, id="expired"),
    ],
)
def test_a_token_that_does_not_validate_signs_nobody_in(
    tmp_path: Path, spoil: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    provider = Provider()
    provider.claims = lambda: spoil(provider.good_claims())
    c, params = _start(tmp_path, provider)
    answer = c.get("/auth/callback", params={"code": "the-code", "state": params["state"][0]})
    assert answer.status_code == 401
    assert "Sign-in with the identity provider failed" in answer.text
    assert c.get("/").status_code == 303


def test_a_callback_with_another_state_is_refused(tmp_path: Path) -> None:
    provider = Provider()
    c, _ = _start(tmp_path, provider)
    answer = c.get("/auth/callback", params={"code": "the-code", "state": "forged"})
    assert answer.status_code == 401
    assert provider.token_requests == []  # the code was never even exchanged
    assert c.get("/").status_code == 303


def test_a_provider_error_on_return_signs_nobody_in(tmp_path: Path) -> None:
    c, params = _start(tmp_path, Provider())
    answer = c.get("/auth/callback", params={"error": "access_denied", "state": params["state"][0]})
    assert answer.status_code == 401


def test_with_local_users_too_the_login_page_offers_both(tmp_path: Path) -> None:
    oidc = AuthlibOidc(ISSUER, CLIENT, "client-secret", transport=httpx.MockTransport(Provider().handle))
    page = client(tmp_path, oidc=oidc).get("/login", params={"next": "/summary"})
    assert page.status_code == 200
    assert 'id="username"' in page.text
    assert '<a id="sign-in-oidc" class="button" href="/auth/oidc?next=%2Fsummary">' in page.text
    assert "Sign in with keycloak.example.org" in page.text


def test_a_failed_sign_in_shows_the_login_page_instead_of_looping(tmp_path: Path) -> None:
    c, _ = _start(tmp_path, Provider())
    answer = c.get("/auth/callback", params={"code": "the-code", "state": "forged"})
    assert answer.status_code == 401
    assert 'id="login-error"' in answer.text
    assert 'id="sign-in-oidc"' in answer.text  # a way to try again, by hand


def test_without_oidc_the_oidc_routes_do_not_exist(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert c.get("/auth/oidc").status_code == 404
    assert c.get("/auth/callback").status_code == 404
    assert 'id="sign-in-oidc"' not in c.get("/login").text
