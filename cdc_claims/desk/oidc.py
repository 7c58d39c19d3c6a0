"""OpenID Connect sign-in (Bahmni 1.0 ships Keycloak) through authlib's Starlette client.

Authorization-code flow with PKCE (S256), ``state`` and ``nonce``: authlib keeps the three in
the session between the redirect and the callback, checks the state on return, exchanges the
code with the verifier, and validates the ID token (signature against the provider's JWKS,
issuer, audience, expiry, nonce). The signed-in name is the token's ``preferred_username``
(Keycloak's user name), else its ``sub``. The provider is found through its discovery document
(``<issuer>/.well-known/openid-configuration``), read on the first sign-in.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.integrations.starlette_client import OAuth, OAuthError
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import Response

from cdc_claims.desk.auth import USER_NAME, OidcFailed

_NAME = "desk"


class AuthlibOidc:
    """:class:`~cdc_claims.desk.auth.OidcLogin` over authlib (``transport``: tests only)."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._issuer = issuer.rstrip("/")
        kwargs: dict[str, Any] = {"scope": "openid profile", "code_challenge_method": "S256", "timeout": 10.0}
        if transport is not None:
            kwargs["transport"] = transport
        oauth = OAuth()
        oauth.register(
            _NAME,
            client_id=client_id,
            client_secret=client_secret or None,
            server_metadata_url=f"{self._issuer}/.well-known/openid-configuration",
            client_kwargs=kwargs,
        )
        self._client: Any = oauth.create_client(_NAME)

    @property
    def label(self) -> str:
        return f"Sign in with {urlsplit(self._issuer).hostname or self._issuer}"

    async def start(self, request: Request, redirect_uri: str) -> Response:
        try:
            response: Response = await self._client.authorize_redirect(request, redirect_uri)
        except (httpx.HTTPError, ValueError, RuntimeError) as err:
            raise OidcFailed(f"provider unreachable or misconfigured: {type(err).__name__}") from err
        return response

    async def finish(self, request: Request) -> str:
        try:
            token = await self._client.authorize_access_token(request)
        except OAuthError as err:
            raise OidcFailed(f"refused: {err.error}") from err
        except (httpx.HTTPError, JoseError, ValueError, KeyError, RuntimeError) as err:
            raise OidcFailed(f"token not obtained or not valid: {type(err).__name__}") from err
        claims = token.get("userinfo") or {}
        name = claims.get("preferred_username") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise OidcFailed("the ID token names no user")
        if not USER_NAME.match(name):  # shown on every page and kept with every action
            name = str(claims.get("sub") or "")
            if not USER_NAME.match(name):
                raise OidcFailed("the user name in the ID token cannot be shown")
        return name
