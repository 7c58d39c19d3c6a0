"""A small emulator of openHIM 8.5's client-facing router, for tests (not part of openHIM).

Run it as a process::

    python -m cdc_dev.openhim_emulator --config <emulator.json>

or through :class:`OpenHimEmulator` (``up``/``down``/``status``), which writes that config from
``docs/openhim/cdc-claims-openhim-config.json`` (the body operators ``POST /metadata`` into a real
openHIM) with host, port and credentials of the local openIMIS substituted.

Ports: router HTTP (``router.httpPort``), router HTTPS (``router.httpsPort``, where mutual TLS
works), and an **emulator-only admin port** (``admin.port``): ``GET /transactions[?status=..]``,
``GET /transactions/<id>``, ``DELETE /transactions``, ``GET /health`` and ``POST /token``
(a test identity provider: OAuth2 client credentials -> HS256 JWT with ``sub`` = client id),
because openHIM itself does not issue client JWTs. Behaviour is described in ``docs/openhim.md``.

The emulator config (JSON)::

    {"router": {"host": "127.0.0.1", "httpPort": 15001, "httpsPort": 15000, "timeout": 60000},
     "admin": {"port": 15080},
     "authentication": {"enableBasicAuthentication": true, "enableCustomTokenAuthentication": true,
                        "enableJWTAuthentication": true, "enableMutualTLSAuthentication": true,
                        "jwt": {"secretOrPublicKey": "...", "algorithms": ["HS256"],
                                "audience": "", "issuer": ""}},
     "tls": {"certFile": "server.pem", "keyFile": "server.key", "caFile": "ca.pem"},
     "tokenIssuer": {"expiresIn": 3600},
     "metadata": {"Channels": [...], "Clients": [...]}}
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt

from cdc_dev.openhim_model import (
    DEFAULT_ROUTER_TIMEOUT_MS,
    DROPPED_REQUEST_HEADERS,
    DROPPED_RESPONSE_HEADERS,
    INTERNAL_ERROR_BODY,
    Channel,
    Client,
    Metadata,
    TransactionLog,
    authorised,
    fingerprint_of,
    header_items,
    new_transaction_id,
    transaction_status,
    truncate,
)

MAX_BODY = 64 * 1024 * 1024


@dataclass
class AuthConfig:
    basic: bool = True
    custom_token: bool = False
    jwt: bool = False
    mutual_tls: bool = True
    jwt_secret: str = ""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str = ""
    jwt_issuer: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuthConfig:
        jwt_doc = doc.get("jwt", {})
        return cls(
            basic=bool(doc.get("enableBasicAuthentication", True)),
            custom_token=bool(doc.get("enableCustomTokenAuthentication", False)),
            jwt=bool(doc.get("enableJWTAuthentication", False)),
            mutual_tls=bool(doc.get("enableMutualTLSAuthentication", True)),
            jwt_secret=str(jwt_doc.get("secretOrPublicKey", "")),
            jwt_algorithms=tuple(jwt_doc.get("algorithms", ["HS256"])),
            jwt_audience=str(jwt_doc.get("audience") or ""),
            jwt_issuer=str(jwt_doc.get("issuer") or ""),
        )


@dataclass
class EmulatorConfig:
    metadata: Metadata
    auth: AuthConfig
    host: str = "127.0.0.1"
    http_port: int | None = 15001
    https_port: int | None = 15000
    admin_port: int | None = 15080
    router_timeout_ms: int = DEFAULT_ROUTER_TIMEOUT_MS
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    token_lifetime: int = 3600
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EmulatorConfig:
        router, admin, tls = doc.get("router", {}), doc.get("admin", {}), doc.get("tls", {})
        return cls(
            metadata=Metadata.from_json(doc.get("metadata", {})),
            auth=AuthConfig.from_json(doc.get("authentication", {})),
            host=str(router.get("host", "127.0.0.1")),
            http_port=router.get("httpPort"),
            https_port=router.get("httpsPort") if tls.get("certFile") else None,
            admin_port=admin.get("port"),
            router_timeout_ms=int(router.get("timeout", DEFAULT_ROUTER_TIMEOUT_MS)),
            cert_file=str(tls.get("certFile", "")),
            key_file=str(tls.get("keyFile", "")),
            ca_file=str(tls.get("caFile", "")),
            token_lifetime=int(doc.get("tokenIssuer", {}).get("expiresIn", 3600)),
            raw=doc,
        )

    @classmethod
    def load(cls, path: Path) -> EmulatorConfig:
        return cls.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class Incoming:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Upstream:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Emulator:
    """The router logic shared by the HTTP and HTTPS listeners, plus the admin functions."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.transactions = TransactionLog()
        upstream_ssl = ssl.create_default_context()
        if config.ca_file:
            upstream_ssl.load_verify_locations(config.ca_file)
        # no client default headers: upstream sees the client's headers, not httpx's
        self._http = httpx.Client(verify=upstream_ssl, follow_redirects=False, trust_env=False)

    def close(self) -> None:
        self._http.close()

    # --- authentication (each method leaves the request unauthenticated on failure) ----------

    def authenticate(self, headers: Any, peer_fingerprint: str | None) -> tuple[Client | None, str | None]:
        auth = self.config.auth
        meta = self.config.metadata
        if auth.mutual_tls and peer_fingerprint:
            client = meta.client_by_fingerprint(peer_fingerprint)
            if client:
                return client, "tls"
        header = str(headers.get("Authorization", ""))
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if auth.basic and scheme == "basic":
            client = self._basic(value)
            if client:
                return client, "basic"
        if auth.custom_token and scheme == "custom" and value:
            client = meta.client_by_token(value)
            if client:
                return client, "token"
        if auth.jwt and scheme == "bearer" and value:
            client = self._jwt(value)
            if client:
                return client, "jwt"
        return None, None

    def _basic(self, value: str) -> Client | None:
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, sep, password = decoded.partition(":")
        client = self.config.metadata.client(client_id) if sep else None
        return client if client and client.check_password(password) else None

    def _jwt(self, token: str) -> Client | None:
        auth = self.config.auth
        try:
            claims = jwt.decode(
                token,
                auth.jwt_secret,
                algorithms=list(auth.jwt_algorithms),
                audience=auth.jwt_audience or None,
                issuer=auth.jwt_issuer or None,
                options={"verify_aud": bool(auth.jwt_audience)},
            )
        except jwt.PyJWTError:
            return None
        return self.config.metadata.client(str(claims.get("sub", "")))

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """OAuth2 client credentials (RFC 6749 §4.4) against the clients' Basic passwords."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        client = self.config.metadata.client(form.get("client_id", ""))
        if client is None or not client.check_password(form.get("client_secret", "")):
            return 401, {"error": "invalid_client"}
        now = int(time.time())
        claims: dict[str, Any] = {"sub": client.client_id, "iat": now, "exp": now + self.config.token_lifetime}
        if self.config.auth.jwt_audience:
            claims["aud"] = self.config.auth.jwt_audience
        if self.config.auth.jwt_issuer:
            claims["iss"] = self.config.auth.jwt_issuer
        token = jwt.encode(claims, self.config.auth.jwt_secret, algorithm=self.config.auth.jwt_algorithms[0])
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_lifetime}

    # --- routing --------------------------------------------------------------------------------

    def forward(self, channel: Channel, client: Client | None, transaction_id: str, req: Incoming) -> Upstream | None:
        """Call the primary route; ``None`` on a connection error or timeout."""
        route = channel.primary_route
        if route is None:
            return None
        method, body = req.method, req.body
        out = header_items(req.headers, DROPPED_REQUEST_HEADERS)
        has_client_auth = any(k.lower() == "authorization" for k, _ in out)
        if not route.forward_auth_header:
            out = [(k, v) for k, v in out if k.lower() != "authorization"]
            has_client_auth = False
        if route.username and route.password and not has_client_auth:
            creds = base64.b64encode(f"{route.username}:{route.password}".encode()).decode()
            out.append(("Authorization", f"Basic {creds}"))
        out = [(k, v) for k, v in out if k.lower() not in {"x-openhim-transactionid", "x-openhim-clientid"}]
        out.append(("X-OpenHIM-TransactionID", transaction_id))
        if client is not None:
            out.append(("X-OpenHIM-ClientID", client.client_id))
        scheme = "https" if route.secured else "http"
        target = route.upstream_path(req.path) + (f"?{req.query}" if req.query else "")
        url = f"{scheme}://{route.host}:{route.port}{target}"
        timeout_ms = route.timeout_ms or channel.timeout_ms or self.config.router_timeout_ms
        request = httpx.Request(
            method,
            url,
            headers=out,
            content=body if body or method in ("POST", "PUT") else None,
            extensions={"timeout": httpx.Timeout(timeout_ms / 1000).as_dict()},
        )
        try:
            response = self._http.send(request)
        except httpx.HTTPError:
            return None
        # httpx decodes gzip/deflate in .content; content-encoding is dropped with the others
        return Upstream(response.status_code, list(response.headers.multi_items()), response.content)

    def record(self, **fields: Any) -> None:
        self.transactions.add(fields)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} [{self.log_date_time_string()}] {format % args}\n")

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as err:
                sys.stderr.write(f"TLS handshake with {self.client_address[0]} failed: {err}\n")
                self.close_connection = True
                raise
            self.request.settimeout(None)

    def handle(self) -> None:
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            super().handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status)
        names = {k.lower() for k, _ in headers}
        for key, value in headers:
            self.send_header(key, value)
        if "date" not in names:
            self.send_header("Date", self.date_time_string())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, [("Content-Type", "application/json")], json.dumps(doc).encode())


class RouterHandler(_Handler):
    def _route(self) -> None:
        emulator = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        path, query = parsed.path, parsed.query
        body = self._read_body()
        channel = emulator.config.metadata.match(self.command, path)
        if channel is None:  # matching runs before authorisation
            self._send(404, [("Content-Type", "text/plain")], b"Not Found")
            return
        fingerprint = None
        if isinstance(self.request, ssl.SSLSocket):
            der = self.request.getpeercert(binary_form=True)
            fingerprint = fingerprint_of(der) if der else None
        client, auth_type = emulator.authenticate(self.headers, fingerprint)
        if not authorised(channel, client, self.client_address[0]):
            headers = [("WWW-Authenticate", "Basic")] if emulator.config.auth.basic else []
            self._send(401, headers, b"")
            return
        transaction_id = new_transaction_id()
        started = _now()
        incoming = Incoming(self.command, path, query, list(self.headers.items()), body)
        upstream = emulator.forward(channel, client, transaction_id, incoming)
        if upstream is None:
            status, headers, out = 500, [("Content-Type", "text/plain")], INTERNAL_ERROR_BODY
            state, error = "Failed", {"message": "primary route failed (connection error or timeout)"}
        else:
            status, headers, out = _client_response(upstream)
            state, error = transaction_status(status), None
        headers.append(("X-OpenHIM-TransactionID", transaction_id))
        self._send(status, headers, out)
        emulator.record(
            _id=transaction_id,
            channel=channel.name,
            clientID=client.client_id if client else None,
            authenticationType=auth_type,
            status=state,
            error=error,
            request={
                "method": self.command,
                "path": path,
                "querystring": query,
                "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
                "body": truncate(body),
                "timestamp": started,
            },
            response={"status": status, "headers": dict(headers), "body": truncate(out), "timestamp": _now()},
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _route  # noqa: N815


def _client_response(upstream: Upstream) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers, body = upstream.status, upstream.headers, upstream.body
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    if content_type.lower().startswith("application/json+openhim"):  # a mediator response
        with contextlib.suppress(ValueError, KeyError, TypeError):
            mediator = json.loads(body)["response"]
            status = int(mediator["status"])
            headers = [(str(k), str(v)) for k, v in (mediator.get("headers") or {}).items()]
            raw = mediator.get("body", "")
            body = raw.encode() if isinstance(raw, str) else json.dumps(raw).encode()
    out = header_items(headers, DROPPED_RESPONSE_HEADERS | {"connection", "keep-alive"})
    location = next((v for k, v in out if k.lower() == "location"), None)
    if location is not None and 300 <= status < 400:  # koa's ctx.redirect()
        out = [(k, v) for k, v in out if k.lower() != "content-type"] + [("Content-Type", "text/plain; charset=utf-8")]
        body = f"Redirecting to {location}.".encode()
    return status, out, body


class AdminHandler(_Handler):
    def do_GET(self) -> None:
        emulator = self.server.emulator
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path == "/health":
            self._json(200, {"status": "ok"})
        elif parsed.path == "/transactions":
            filters = dict(urllib.parse.parse_qsl(parsed.query))
            self._json(200, emulator.transactions.list(filters))
        elif parsed.path.startswith("/transactions/"):
            record = emulator.transactions.get(parsed.path.rsplit("/", 1)[1])
            self._json(200 if record else 404, record or {"error": "not found"})
        else:
            self._json(404, {"error": "not found"})

    def do_DELETE(self) -> None:
        if urllib.parse.urlsplit(self.path).path == "/transactions":
            self._json(200, {"deleted": self.server.emulator.transactions.clear()})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self._read_body()
        if urllib.parse.urlsplit(self.path).path != "/token":
            self._json(404, {"error": "not found"})
            return
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        if "client_id" not in form and self.headers.get("Authorization", "").lower().startswith("basic "):
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                decoded = base64.b64decode(self.headers["Authorization"][6:].strip()).decode()
                form["client_id"], _, form["client_secret"] = decoded.partition(":")
        status, doc = self.server.emulator.issue_token(form)
        self._json(status, doc)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        emulator: Emulator,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.emulator = emulator
        self.tls = tls
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:  # handshake in the handler thread, not in the accept loop
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ssl.SSLError | ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


def server_tls_context(config: EmulatorConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config.cert_file, config.key_file)
    if config.auth.mutual_tls:
        # openHIM asks for a client certificate but does not require one; an unknown or absent
        # certificate just leaves the request unauthenticated
        context.verify_mode = ssl.CERT_OPTIONAL
        if config.ca_file:
            context.load_verify_locations(config.ca_file)
    return context


def serve(config: EmulatorConfig) -> tuple[Emulator, list[_Server]]:
    """Bind every configured listener and serve each in a daemon thread."""
    emulator = Emulator(config)
    servers: list[_Server] = []
    if config.http_port is not None:
        servers.append(_Server((config.host, int(config.http_port)), RouterHandler, emulator))
    if config.https_port is not None:
        tls = server_tls_context(config)
        servers.append(_Server((config.host, int(config.https_port)), RouterHandler, emulator, tls))
    if config.admin_port is not None:
        servers.append(_Server((config.host, int(config.admin_port)), AdminHandler, emulator))
    for server in servers:
        threading.Thread(target=server.serve_forever, name=f"listener-{server.server_port}", daemon=True).start()
    return emulator, servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openhim_emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="emulator config JSON")
    args = parser.parse_args(argv)
    config = EmulatorConfig.load(args.config)
    emulator, servers = serve(config)
    ports = ", ".join(f"{config.host}:{s.server_port}{' (tls)' if s.tls else ''}" for s in servers)
    print(f"openHIM emulator listening on {ports}; channels: {[c.name for c in config.metadata.channels]}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()
    emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


def __getattr__(name: str) -> Any:
    # the stack component lives beside this module; re-exported for `openhim_emulator.OpenHimEmulator`
    if name == "OpenHimEmulator":
        from cdc_dev.openhim_component import OpenHimEmulator

        return OpenHimEmulator
    raise AttributeError(name)
