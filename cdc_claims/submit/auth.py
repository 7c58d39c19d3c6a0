"""How the sidecar proves who it is to openHIM: one httpx.Auth per ``OpenHimSettings.auth`` mode.

* ``basic``: ``Authorization: Basic`` with the openHIM client id and password;
* ``custom``: ``Authorization: Custom <token>`` (openHIM's custom token, ``customTokenID``);
* ``bearer``: a JWT from ``token_url`` (OAuth2 client credentials: ``username``/``password`` are the
  client id/secret), cached until shortly before it expires, refreshed once on a 401;
* ``mtls``: no header at all; the client certificate in the TLS context is the credential
  (see :func:`tls_context`).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Generator

import httpx

from cdc_claims.errors import AuthenticationFailed, ConfigError, TransientSubmitError
from cdc_claims.log import get_logger
from cdc_claims.settings import OpenHimSettings
from cdc_claims.tls import server_verification

log = get_logger(__name__)

#: refresh a bearer token this many seconds before it expires
EXPIRY_MARGIN = 30.0


class CustomTokenAuth(httpx.Auth):
    """openHIM custom token authentication: ``Authorization: Custom <token>``."""

    def __init__(self, token: str) -> None:
        self._header = f"Custom {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class BearerTokenAuth(httpx.Auth):
    """JWT bearer from an OAuth2 client-credentials token endpoint, cached and refreshed on 401.

    The token request is yielded from the auth flow, so it goes through the same client
    (transport, TLS settings, timeouts) as the call it authorises.
    """

    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str) -> None:
        self.token_url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def _cached(self) -> str | None:
        with self._lock:
            if self._token and time.monotonic() < self._expires_at - EXPIRY_MARGIN:
                return self._token
            return None

    def _token_request(self) -> httpx.Request:
        return httpx.Request("POST", self.token_url, data=self._form, headers={"Accept": "application/json"})

    def _store(self, response: httpx.Response) -> str:
        if response.status_code >= 500:
            raise TransientSubmitError(f"token endpoint answered {response.status_code}")
        if response.status_code != 200:
            raise AuthenticationFailed(f"token endpoint refused the client credentials ({response.status_code})")
        try:
            doc = response.json()
            token = str(doc["access_token"])
            lifetime = float(doc.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as err:
            raise AuthenticationFailed(f"token endpoint answered without an access_token: {err}") from err
        with self._lock:
            self._token, self._expires_at = token, time.monotonic() + lifetime
        log.debug("bearer_token_fetched", token_url=self.token_url, expires_in=lifetime)
        return token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._cached()
        if token is None:
            token = self._store((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # expired or revoked early: one fresh token, one retry; a second 401 is final
            log.info("bearer_token_refused_refreshing", token_url=self.token_url)
            self.invalidate()
            request.headers["Authorization"] = f"Bearer {self._store((yield self._token_request()))}"
            yield request


def build_auth(settings: OpenHimSettings) -> httpx.Auth | None:
    password = settings.password.get_secret_value() if settings.password else ""
    if settings.auth in ("basic", "bearer") and not password:
        raise ConfigError(f"openhim.auth={settings.auth} needs CDC_CLAIMS_OPENHIM__PASSWORD (no default)")
    match settings.auth:
        case "basic":
            return httpx.BasicAuth(settings.username, password)
        case "custom":
            token = settings.custom_token.get_secret_value()
            if not token:
                raise ConfigError("openhim.auth=custom needs openhim.custom_token")
            return CustomTokenAuth(token)
        case "bearer":
            if not settings.token_url:
                raise ConfigError("openhim.auth=bearer needs openhim.token_url")
            return BearerTokenAuth(settings.token_url, settings.username, password)
        case "mtls":
            if settings.client_cert is None or settings.client_key is None:
                raise ConfigError("openhim.auth=mtls needs openhim.client_cert and openhim.client_key")
            return None
    raise ConfigError(f"unknown openhim.auth {settings.auth!r}")


def tls_context(settings: OpenHimSettings) -> ssl.SSLContext | bool:
    """The server check of :func:`cdc_claims.tls.server_verification` (system CAs plus
    ``ca_bundle``; ``verify_tls=False`` switches it off, loudly) and, for mtls, the client
    certificate, which is the credential even when the server is not checked."""
    context = server_verification(settings.verify_tls, settings.ca_bundle, "openhim")
    if settings.auth != "mtls" or settings.client_cert is None or settings.client_key is None:
        return context
    if context is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(str(settings.client_cert), str(settings.client_key))
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"cannot load the mtls client certificate/key: {err}") from err
    return context
