"""The dev OpenID provider speaks the real protocol: code + PKCE, a confidential client, RS256."""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from cdc_dev.oidc_provider import OidcClient, OidcProvider, OidcUser, s256

CLIENT = OidcClient("desk", "desk-secret", ("http://127.0.0.1:18080/",))
CLERK = OidcUser("clerk", "clerk-password", name="Billing Clerk")
REDIRECT = "http://127.0.0.1:18080/auth/callback"


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with OidcProvider(clients=[CLIENT], users=[CLERK]) as provider:
        yield provider


def authorize_params(verifier: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": CLIENT.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
        **extra,
    }


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert query["state"] == "st-1"
    return query["code"]


def token(http: httpx.Client, meta: dict[str, Any], code: str, verifier: str, **form: str) -> httpx.Response:
    """The token request; the client authenticates by HTTP Basic unless the form has its secret."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    if "client_secret" in form:
        return http.post(meta["token_endpoint"], data={**data, **form})
    return http.post(meta["token_endpoint"], data=data, auth=(CLIENT.client_id, CLIENT.client_secret))


def test_a_full_code_flow_with_pkce_gives_a_signed_id_token(idp: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    with httpx.Client(timeout=5) as http:
        meta = http.get(f"{idp.issuer}/.well-known/openid-configuration").json()
        assert meta["issuer"] == idp.issuer and meta["code_challenge_methods_supported"] == ["S256"]

        page = http.get(meta["authorization_endpoint"], params=authorize_params(verifier))
        assert page.status_code == 200
        for element in ('id="username"', 'id="password"', 'id="sign-in"'):
            assert element in page.text
        hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        wrong = http.post(meta["authorization_endpoint"], data={**hidden, "username": "clerk", "password": "no"})
        assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        signed_in = http.post(
            meta["authorization_endpoint"], data={**hidden, "username": "clerk", "password": "clerk-password"}
        )
        code = code_from(signed_in)

        answer = token(http, meta, code, verifier)
        assert answer.status_code == 200, answer.text
        tokens = answer.json()
        assert tokens["token_type"] == "Bearer"
        keys = http.get(meta["jwks_uri"]).json()["keys"]
        header = jwt.get_unverified_header(tokens["id_token"])
        (key,) = [k for k in keys if k["kid"] == header["kid"]]
        claims = jwt.decode(
            tokens["id_token"],
            jwt.PyJWK(key).key,
            algorithms=["RS256"],
            audience=CLIENT.client_id,
            issuer=idp.issuer,
        )
        assert claims["preferred_username"] == "clerk" and claims["nonce"] == "n-1"
        assert claims["sub"] == CLERK.sub != "clerk" and claims["exp"] > claims["iat"]
        info = http.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert info.json()["sub"] == claims["sub"]

        again = token(http, meta, code, verifier)  # a code is good once
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_a_login_hint_naming_a_dev_user_signs_in_without_the_form(idp: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    with httpx.Client(timeout=5) as http:
        meta = http.get(f"{idp.issuer}/.well-known/openid-configuration").json()
        code = code_from(
            http.get(meta["authorization_endpoint"], params=authorize_params(verifier, login_hint="clerk"))
        )
        # the client secret in the form (client_secret_post) works as well as HTTP Basic
        answer = token(http, meta, code, verifier, client_id=CLIENT.client_id, client_secret=CLIENT.client_secret)
        assert answer.status_code == 200, answer.text


def test_pkce_the_client_secret_and_the_redirect_uri_are_checked(idp: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    with httpx.Client(timeout=5) as http:
        meta = http.get(f"{idp.issuer}/.well-known/openid-configuration").json()
        endpoint = meta["authorization_endpoint"]

        def fresh_code() -> str:
            return code_from(http.get(endpoint, params=authorize_params(verifier, login_hint="clerk")))

        bad_verifier = token(http, meta, fresh_code(), "not-the-verifier")
        assert bad_verifier.status_code == 400 and "PKCE" in bad_verifier.json()["error_description"]
        bad_secret = token(http, meta, fresh_code(), verifier, client_id=CLIENT.client_id, client_secret="guess")
        assert bad_secret.status_code == 401 and bad_secret.json()["error"] == "invalid_client"
        no_pkce = {k: v for k, v in authorize_params(verifier, login_hint="clerk").items() if k != "code_challenge"}
        assert http.get(endpoint, params=no_pkce).status_code == 400
        elsewhere = authorize_params(verifier, login_hint="clerk", redirect_uri="https://evil.example/cb")
        assert http.get(endpoint, params=elsewhere).status_code == 400
