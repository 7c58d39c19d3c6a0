"""Pure core of the openHIM emulator: channels, clients and the router's decisions.

Everything here is data in, decision out (no sockets), so it is unit-testable. The rules follow
openHIM core 8.5's client-facing router (``docs/openhim.md``):

* channels come from an openHIM ``/metadata`` import body (``{"Channels": [...], "Clients": [...]}``);
* enabled channels are tried in ascending ``priority``; the first whose ``urlPattern`` matches the
  request path (and whose ``methods``, if any, contain the method) wins; no match is a 404;
* a ``private`` channel needs an authenticated client whose ``clientID`` or one of whose ``roles`` is
  in ``allow``; a non-empty ``whitelist`` restricts source IPs;
* Basic passwords are checked as openHIM does: ``hex(H(password + salt)) == passwordHash`` for a
  hash algorithm ``H`` named by ``passwordAlgorithm`` (e.g. ``sha512``);
* a route's ``pathTransform`` is sed-like: ``s/from/to/`` or ``s/from/to/g``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: openHIM's default ``router.timeout`` (ms)
DEFAULT_ROUTER_TIMEOUT_MS = 60000
#: what openHIM answers when the primary route fails (connection error, timeout)
INTERNAL_ERROR_BODY = b"An internal server error occurred"
#: upstream response headers openHIM does not pass on (it re-frames and decompresses the body)
DROPPED_RESPONSE_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding"})
#: hop-by-hop request headers that never go upstream as-is
DROPPED_REQUEST_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
#: openHIM API ``api.truncateSize``: bodies longer than this are truncated when listed
TRUNCATE_SIZE = 15000


class ConfigurationError(ValueError):
    """The emulator configuration (or the metadata in it) is not usable."""


@dataclass(frozen=True)
class Route:
    name: str
    host: str
    port: int
    secured: bool = False
    primary: bool = True
    path: str = ""
    path_transform: str = ""
    username: str = ""
    password: str = ""
    forward_auth_header: bool = False
    timeout_ms: int | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Route:
        return cls(
            name=str(doc.get("name", "")),
            host=str(doc["host"]),
            port=int(doc["port"]),
            secured=bool(doc.get("secured", False)),
            primary=bool(doc.get("primary", False)),
            path=str(doc.get("path") or ""),
            path_transform=str(doc.get("pathTransform") or ""),
            username=str(doc.get("username") or ""),
            password=str(doc.get("password") or ""),
            forward_auth_header=bool(doc.get("forwardAuthHeader", False)),
            timeout_ms=int(doc["timeout"]) if doc.get("timeout") else None,
        )

    def upstream_path(self, request_path: str) -> str:
        if self.path:
            return self.path
        if self.path_transform:
            return transform_path(self.path_transform, request_path)
        return request_path


@dataclass(frozen=True)
class Channel:
    name: str
    url_pattern: re.Pattern[str]
    routes: tuple[Route, ...]
    methods: tuple[str, ...] = ()
    auth_type: str = "private"
    allow: tuple[str, ...] = ()
    whitelist: tuple[str, ...] = ()
    priority: int | None = None
    enabled: bool = True
    timeout_ms: int | None = None

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Channel:
        routes = tuple(Route.from_json(r) for r in doc.get("routes", []) if r.get("status", "enabled") == "enabled")
        if routes and not any(r.primary for r in routes):
            raise ConfigurationError(f"channel {doc.get('name')!r} has no primary route")
        try:
            pattern = re.compile(_js_regex(str(doc["urlPattern"])))
        except re.error as err:
            raise ConfigurationError(f"channel {doc.get('name')!r}: bad urlPattern: {err}") from err
        return cls(
            name=str(doc["name"]),
            url_pattern=pattern,
            routes=routes,
            methods=tuple(m.upper() for m in doc.get("methods", [])),
            auth_type=str(doc.get("authType", "private")),
            allow=tuple(doc.get("allow", [])),
            whitelist=tuple(doc.get("whitelist", [])),
            priority=int(doc["priority"]) if doc.get("priority") is not None else None,
            enabled=doc.get("status", "enabled") == "enabled" and doc.get("type", "http") == "http",
            timeout_ms=int(doc["timeout"]) if doc.get("timeout") else None,
        )

    @property
    def primary_route(self) -> Route | None:
        return next((r for r in self.routes if r.primary), None)

    def matches(self, method: str, path: str) -> bool:
        if not self.url_pattern.search(path):
            return False
        return not self.methods or method.upper() in self.methods


@dataclass(frozen=True)
class Client:
    client_id: str
    roles: tuple[str, ...] = ()
    password_algorithm: str = ""
    password_hash: str = ""
    password_salt: str = ""
    custom_token_id: str = ""
    cert_fingerprint: str = ""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Client:
        return cls(
            client_id=str(doc["clientID"]),
            roles=tuple(doc.get("roles", [])),
            password_algorithm=str(doc.get("passwordAlgorithm") or ""),
            password_hash=str(doc.get("passwordHash") or ""),
            password_salt=str(doc.get("passwordSalt") or ""),
            custom_token_id=str(doc.get("customTokenID") or ""),
            cert_fingerprint=normalise_fingerprint(str(doc.get("certFingerprint") or "")),
        )

    def check_password(self, password: str) -> bool:
        """openHIM's check: ``hex(H(password + salt))``; bcrypt hashes are not supported here."""
        if not (self.password_algorithm and self.password_hash):
            return False
        if self.password_algorithm not in hashlib.algorithms_available:
            return False  # openHIM would try bcrypt; the emulator does not
        digest = hashlib.new(self.password_algorithm, (password + self.password_salt).encode()).hexdigest()
        return hmac.compare_digest(digest, self.password_hash)


@dataclass(frozen=True)
class Metadata:
    """The parts of an openHIM ``/metadata`` import body the router uses."""

    channels: tuple[Channel, ...]
    clients: tuple[Client, ...]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Metadata:
        channels = [Channel.from_json(c) for c in doc.get("Channels", [])]
        # ascending priority; channels without one come last, in document order (stable sort)
        channels.sort(key=lambda c: (c.priority is None, c.priority or 0))
        return cls(channels=tuple(channels), clients=tuple(Client.from_json(c) for c in doc.get("Clients", [])))

    def match(self, method: str, path: str) -> Channel | None:
        return next((c for c in self.channels if c.enabled and c.matches(method, path)), None)

    def client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def client_by_token(self, token: str) -> Client | None:
        return next(
            (c for c in self.clients if c.custom_token_id and hmac.compare_digest(c.custom_token_id, token)), None
        )

    def client_by_fingerprint(self, fingerprint: str) -> Client | None:
        wanted = normalise_fingerprint(fingerprint)
        return next((c for c in self.clients if c.cert_fingerprint and c.cert_fingerprint == wanted), None)


def authorised(channel: Channel, client: Client | None, remote_ip: str) -> bool:
    """openHIM's authorisation: IP whitelist, then ``public`` or a client allowed by id or role."""
    if channel.whitelist and remote_ip not in channel.whitelist:
        return False
    if channel.auth_type == "public":
        return True
    if client is None:
        return False
    return client.client_id in channel.allow or any(role in channel.allow for role in client.roles)


def transaction_status(http_status: int) -> str:
    """The openHIM transaction status a primary-route response leads to (INFRA §6.5)."""
    if 200 <= http_status < 300:
        return "Successful"
    if 500 <= http_status < 600:
        return "Failed"
    return "Completed"


def transform_path(expression: str, path: str) -> str:
    """Apply a sed-like ``s/from/to/[g]`` (``\\/`` escapes a slash) to ``path``."""
    parts = re.split(r"(?<!\\)/", expression)
    if len(parts) != 4 or parts[0] != "s":
        raise ConfigurationError(f"pathTransform must look like s/from/to/ (got {expression!r})")
    source, target, flags = (p.replace("\\/", "/") for p in parts[1:])
    replacement = re.sub(r"\$(\d+)", r"\\g<\1>", target.replace("\\", "\\\\"))
    return re.sub(_js_regex(source), replacement, path, count=0 if "g" in flags else 1)


def normalise_fingerprint(value: str) -> str:
    """``AB:CD:...`` (openHIM's format for SHA-1 certificate fingerprints) from any hex spelling."""
    hexdigits = re.sub(r"[^0-9A-Fa-f]", "", value).upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def fingerprint_of(der_certificate: bytes) -> str:
    return normalise_fingerprint(hashlib.sha1(der_certificate).hexdigest())  # noqa: S324 - openHIM's format


def hash_password(password: str, salt: str, algorithm: str = "sha512") -> str:
    """A ``passwordHash`` openHIM (and the emulator) accepts for ``password``."""
    return hashlib.new(algorithm, (password + salt).encode()).hexdigest()


def _js_regex(pattern: str) -> str:
    """JavaScript regex source -> Python: only the constructs that differ in practice."""
    return re.sub(r"\(\?<([A-Za-z_]\w*)>", r"(?P<\1>", pattern)


# --- transaction records -----------------------------------------------------------------------


_counter_lock = threading.Lock()
_counter = int.from_bytes(os.urandom(3), "big")
_process_random = os.urandom(5)


def new_transaction_id() -> str:
    """A MongoDB-ObjectId-shaped id (24 hex digits), like openHIM's transaction ids."""
    global _counter  # noqa: PLW0603 - a process-wide counter, as ObjectId has
    with _counter_lock:
        _counter = (_counter + 1) % 0x1000000
        count = _counter
    return (int(time.time()).to_bytes(4, "big") + _process_random + count.to_bytes(3, "big")).hex()


def truncate(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= TRUNCATE_SIZE else text[:TRUNCATE_SIZE] + "\n[truncated ...]"


@dataclass
class TransactionLog:
    """Recorded transactions, newest last, bounded."""

    limit: int = 10000
    _items: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(record)
            del self._items[: max(0, len(self._items) - self.limit)]

    def list(self, filters: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items)
        for key, value in (filters or {}).items():
            items = [t for t in items if str(t.get(key)) == value]
        return items

    def get(self, transaction_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next((t for t in self._items if t["_id"] == transaction_id), None)

    def clear(self) -> int:
        with self._lock:
            count = len(self._items)
            self._items.clear()
            return count


def header_items(headers: Sequence[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in drop]
