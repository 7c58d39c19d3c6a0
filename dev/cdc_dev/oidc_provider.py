"""A tiny OpenID Connect provider for the desk's tests and the demo (development tooling only).

The desk signs billing staff in through a hospital's OpenID Connect provider (Keycloak, Azure AD,
...). Tests and the demo need one that starts in milliseconds, knows a dev user and runs the real
protocol, so the desk's sign-in is tested as it runs in production: the authorization-code flow
with PKCE (S256) and a confidential client, an RS256-signed id_token checked against the keys
published at ``/jwks``. Nothing else (no refresh tokens, no consent, no sessions).

Endpoints (``issuer`` = ``http://<host>:<port>``):

    GET  /.well-known/openid-configuration   discovery document
    GET  /authorize    ?response_type=code&client_id&redirect_uri&scope=openid...&state&nonce
                       &code_challenge&code_challenge_method=S256[&login_hint=<user>]
                       a sign-in form (inputs #username, #password, button #sign-in), or at once
                       a redirect with ``code`` + ``state`` when login_hint names a dev user
    POST /authorize    the form: right password -> redirect with code + state; else 401 + form
    POST /token        grant_type=authorization_code, code, redirect_uri, code_verifier; client
                       secret by HTTP Basic or in the form -> access_token + id_token
    GET  /jwks         the RSA public key (generated at start)
    GET  /userinfo     Bearer access_token -> the user's claims

In a test: ``with OidcProvider(clients=[...], users=[...]) as idp: idp.issuer``; as a process:
``python -m cdc_dev.oidc_provider --port 15090`` (the stack's desk client and user from
:mod:`cdc_dev.credentials`). A redirect URI is accepted when it starts with a registered one, so
a client registered as ``http://127.0.0.1:18080/`` may use any callback path on that origin.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import secrets
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

CODE_SECONDS = 60.0


@dataclass(frozen=True)
class OidcClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]  # prefixes: a redirect_uri must start with one of them

    def allows(self, redirect_uri: str) -> bool:
        return any(redirect_uri.startswith(prefix) for prefix in self.redirect_uris)


@dataclass(frozen=True)
class OidcUser:
    username: str
    password: str
    name: str = ""
    email: str = ""

    @property
    def sub(self) -> str:  # stable per user, not the login name (as real providers do)
        return hashlib.sha256(f"cdc-dev:{self.username}".encode()).hexdigest()[:32]

    def claims(self) -> dict[str, str]:
        found = {"sub": self.sub, "preferred_username": self.username, "name": self.name, "email": self.email}
        return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class _Grant:
    """What an issued code stands for, until it is exchanged once (or expires)."""

    client_id: str
    redirect_uri: str
    user: OidcUser
    code_challenge: str
    nonce: str | None
    scope: str
    expires: float


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636): base64url(sha256), no padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _half_hash(token: str) -> str:
    """``at_hash`` (OIDC core 3.1.3.6): the left half of sha256(access token), base64url."""
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class Provider:
    """The protocol, without HTTP: issue codes, exchange them, sign id_tokens."""

    issuer: str
    clients: Mapping[str, OidcClient]
    users: Mapping[str, OidcUser]
    token_seconds: int = 3600
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = field(default_factory=lambda: secrets.token_hex(8))
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _tokens: dict[str, tuple[OidcUser, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "preferred_username", "name", "email"],
        }

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def check_request(self, query: Mapping[str, str]) -> OidcClient:
        """An authorization request's client, once it is one this provider may answer."""
        client = self.clients.get(query.get("client_id", ""))
        if client is None or not client.allows(query.get("redirect_uri", "")):
            raise OAuthError(400, "invalid_request", "unknown client_id or redirect_uri not registered")
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            raise OAuthError(400, "unsupported_response_type", "only response_type=code with scope openid")
        if not query.get("code_challenge") or query.get("code_challenge_method") != "S256":
            raise OAuthError(400, "invalid_request", "PKCE is required: code_challenge with method S256")
        return client

    def sign_in(self, username: str, password: str) -> OidcUser | None:
        user = self.users.get(username)
        if user is None or not secrets.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def issue_code(self, query: Mapping[str, str], user: OidcUser) -> str:
        """The redirect back to the client: ``code`` and ``state`` on its redirect_uri."""
        code = secrets.token_urlsafe(24)
        grant = _Grant(
            client_id=query["client_id"],
            redirect_uri=query["redirect_uri"],
            user=user,
            code_challenge=query["code_challenge"],
            nonce=query.get("nonce"),
            scope=query.get("scope", "openid"),
            expires=time.monotonic() + CODE_SECONDS,
        )
        with self._lock:
            self._codes[code] = grant
        params = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        separator = "&" if "?" in grant.redirect_uri else "?"
        return f"{grant.redirect_uri}{separator}{urllib.parse.urlencode(params)}"

    def exchange(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint: a code, once, for the client it was issued to, with its verifier."""
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret.encode(), secret.encode()):
            raise OAuthError(401, "invalid_client", "unknown client or wrong client secret")
        if form.get("grant_type") != "authorization_code":
            raise OAuthError(400, "unsupported_grant_type", "only authorization_code")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)  # single use, even when refused below
        if grant is None or grant.expires < time.monotonic() or grant.client_id != client_id:
            raise OAuthError(400, "invalid_grant", "unknown, used or expired code")
        if form.get("redirect_uri") != grant.redirect_uri:
            raise OAuthError(400, "invalid_grant", "redirect_uri differs from the authorization request")
        if not secrets.compare_digest(s256(form.get("code_verifier", "")), grant.code_challenge):
            raise OAuthError(400, "invalid_grant", "PKCE code_verifier does not match the code_challenge")
        access = secrets.token_urlsafe(32)
        now = int(time.time())
        with self._lock:
            self._tokens[access] = (grant.user, time.monotonic() + self.token_seconds)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client_id,
            "azp": client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + self.token_seconds,
            "at_hash": _half_hash(access),
            **grant.user.claims(),
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_seconds,
            "scope": grant.scope,
            "id_token": id_token,
        }

    def userinfo(self, access_token: str) -> dict[str, str]:
        with self._lock:
            found = self._tokens.get(access_token)
        if found is None or found[1] < time.monotonic():
            raise OAuthError(401, "invalid_token", "unknown or expired access token")
        return found[0].claims()


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in (dev OpenID provider)</title></head>
<body><h1>Sign in</h1><p>Development OpenID Connect provider of cdc-claims: not for real users.</p>
{error}<form method="post" action="/authorize">{hidden}
<label>User <input id="username" name="username" autocomplete="username" value="{hint}"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="sign-in" type="submit">Sign in</button></form></body></html>
"""


def _form(query: Mapping[str, str], error: str = "") -> bytes:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in query.items()
        if k not in ("username", "password")
    )
    shown = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _FORM.format(error=shown, hidden=hidden, hint=html.escape(query.get("login_hint", ""))).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"oidc {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, doc: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", headers)

    def _error(self, err: OAuthError) -> None:
        extra = [("WWW-Authenticate", "Basic")] if err.status == 401 else []
        self._json(err.status, {"error": err.error, "error_description": err.description}, extra)

    def _query(self) -> tuple[str, dict[str, str]]:
        parsed = urllib.parse.urlsplit(self.path)
        return parsed.path, dict(urllib.parse.parse_qsl(parsed.query))

    def _form_body(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        return dict(urllib.parse.parse_qsl(self.rfile.read(length).decode() if length else ""))

    def _basic(self) -> tuple[str, str] | None:
        value = self.headers.get("Authorization", "")
        if not value.lower().startswith("basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", "text/plain", [("Location", location)])

    def do_GET(self) -> None:
        provider = self.server.provider
        path, query = self._query()
        try:
            if path == "/.well-known/openid-configuration":
                self._json(200, provider.discovery())
            elif path == "/jwks":
                self._json(200, provider.jwks())
            elif path == "/userinfo":
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                self._json(200, provider.userinfo(bearer))
            elif path == "/authorize":
                provider.check_request(query)
                user = provider.users.get(query.get("login_hint", ""))
                if user is not None:  # a dev user named by the client: no form to fill
                    self._redirect(provider.issue_code(query, user))
                else:
                    self._send(200, _form(query), "text/html; charset=utf-8")
            else:
                self._json(404, {"error": "not_found"})
        except OAuthError as err:
            self._error(err)

    def do_POST(self) -> None:
        provider = self.server.provider
        path, _ = self._query()
        form = self._form_body()
        try:
            if path == "/token":
                self._json(200, provider.exchange(form, self._basic()))
            elif path == "/authorize":
                provider.check_request(form)
                user = provider.sign_in(form.get("username", ""), form.get("password", ""))
                if user is None:
                    self._send(401, _form(form, "Wrong user name or password."), "text/html; charset=utf-8")
                else:
                    self._redirect(provider.issue_code(form, user))
            else:
                self._json(404, {"error": "not_found"})
        except OAuthError as err:
            self._error(err)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: Provider
    verbose: bool = False


class OidcProvider:
    """The provider on ``host:port`` (0: a free port) in a daemon thread; ``issuer`` is its URL."""

    def __init__(
        self,
        *,
        clients: Iterable[OidcClient],
        users: Iterable[OidcUser],
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        self._server = _Server((host, port), _Handler)  # bound now: the issuer names the real port
        self.issuer = f"http://{host}:{self._server.server_port}"
        self.provider = Provider(self.issuer, {c.client_id: c for c in clients}, {u.username: u for u in users})
        self._server.provider = self.provider
        self._server.verbose = verbose
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> OidcProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve the local stack's desk client and dev user (``cdc_dev.credentials``) until SIGTERM."""
    from cdc_dev import credentials
    from cdc_dev.base import Stack

    parser = argparse.ArgumentParser(prog="oidc_provider", description=__doc__.split("\n")[0])
    stack = Stack.from_env()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=stack.ports.oidc)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    desk = credentials.desk(stack)
    idp = OidcProvider(
        clients=[OidcClient(desk.oidc_client_id, desk.oidc_client_secret, (desk.base_url + "/",))],
        users=[OidcUser(desk.user, desk.password, name="Billing Clerk (dev)")],
        host=args.host,
        port=args.port,
        verbose=args.verbose,
    ).start()
    print(f"dev OpenID provider {idp.issuer}: client {desk.oidc_client_id}, user {desk.user}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    idp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
