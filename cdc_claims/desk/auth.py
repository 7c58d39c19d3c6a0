"""Who may use the desk: local users (a users file of PBKDF2 hashes), OIDC, sessions and CSRF.

Nothing but ``/login``, ``/healthz``, ``/readyz`` and the stylesheet answers without a session.

**Local users.** One line per user, ``name:pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``
(``cdc-claims desk-user NAME`` prints one), compared in constant time; an unknown name costs the
same hash as a known one, so response times do not tell which names exist. The file is read
again when it changes, so adding a clerk needs no restart. Five wrong passwords for one name
within 15 minutes refuse that name for the rest of the window (the process's memory: a restart
forgets, which is fine for a throttle).

**Sessions** are Starlette's signed cookie (itsdangerous), ``HttpOnly``, ``SameSite=Lax``,
``Secure`` unless ``secure_cookies`` is off, and last :data:`SESSION_SECONDS` from sign-in
however busy the clerk is (the cookie's own expiry slides; the sign-in time does not).

**CSRF.** Every form carries the session's random token (``csrf_token``), compared with
:func:`hmac.compare_digest`; a POST without it, or with another, is refused with 403. The login
form has one too, bound to the pre-login session, so nobody can sign a clerk into another
account from a foreign page.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cdc_claims.errors import ConfigError
from cdc_claims.settings import DeskSettings

ALGORITHM = "pbkdf2_sha256"
#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about a third of a second on one core)
ITERATIONS = 600_000
SESSION_SECONDS = 8 * 3600
MIN_SECRET_LENGTH = 32
USER_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")

_USER, _SINCE, _CSRF, _VIA = "user", "since", "csrf", "via"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` of ``password`` (a fresh 16-byte salt)."""
    if not password:
        raise ValueError("an empty password cannot be stored")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` hashes to ``encoded``; False for anything malformed."""
    try:
        algorithm, iterations, salt_b64, hash_b64 = encoded.split("$")
        rounds = int(iterations)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    if algorithm != ALGORITHM or rounds < 1 or not expected:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, rounds)
    return hmac.compare_digest(digest, expected)


def user_line(name: str, password: str) -> str:
    """One line of the users file."""
    if not USER_NAME.match(name):
        raise ValueError("a user name is 1 to 64 letters, digits or . _ @ + -")
    return f"{name}:{hash_password(password)}"


def parse_users(text: str) -> dict[str, str]:
    """name -> encoded hash. Blank lines and ``#`` comments are skipped; a bad line is refused
    by its number only (the file holds hashes: they are not printed)."""
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.partition(":")
        if not sep or not USER_NAME.match(name) or not encoded.startswith(f"{ALGORITHM}$"):
            raise ConfigError(f"desk users file, line {number}: expected name:{ALGORITHM}$<iterations>$<salt>$<hash>")
        users[name] = encoded
    return users


@functools.cache
def _dummy_hash() -> str:
    """What an unknown name is checked against, so it costs as long as a known one."""
    return hash_password("not a password of anyone", salt=b"cdc-claims-desk!")


class PasswordCheck(Protocol):
    def check(self, name: str, password: str) -> bool: ...


class LocalUsers:
    """The users file, read again whenever its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}
        self._current()  # a missing or malformed file stops the desk at start, not at first login

    def _current(self) -> dict[str, str]:
        try:
            stat = self._path.stat()
        except OSError as err:
            raise ConfigError(f"desk users file {self._path}: {err.strerror}") from err
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = parse_users(self._path.read_text(encoding="utf-8"))
                self._stamp = stamp
            return self._users

    def check(self, name: str, password: str) -> bool:
        try:
            encoded = self._current().get(name)
        except ConfigError:
            encoded = None  # the file went bad after start: nobody signs in with it until fixed
        if encoded is None:
            verify_password(password, _dummy_hash())
            return False
        return verify_password(password, encoded)


class Throttle:
    """At most ``limit`` failed sign-ins per name within ``window`` seconds."""

    def __init__(self, *, limit: int = 5, window: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, []) if now - t < self._window]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key, self._clock())) >= self._limit

    def failed(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            if len(self._failures) > 10_000:  # a flood of made-up names: forget the old ones
                for name in list(self._failures):
                    self._recent(name, now)
            self._failures.setdefault(key, []).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class OidcFailed(Exception):
    """The provider refused, the callback did not match the session, or the token was not valid."""


class OidcLogin(Protocol):
    """An OpenID Connect sign-in (authorization code + PKCE): see :mod:`cdc_claims.desk.oidc`."""

    @property
    def label(self) -> str:
        """The button's text: ``Sign in with keycloak.example.org``."""
        ...

    async def start(self, request: Any, redirect_uri: str) -> Any:
        """The redirect to the provider (state, nonce and code verifier kept in the session)."""
        ...

    async def finish(self, request: Any) -> str:
        """Complete the callback; the actor name (``preferred_username``, else ``sub``), or
        :class:`OidcFailed`."""
        ...


@dataclass(frozen=True)
class AuthConfig:
    session_secret: str
    secure_cookies: bool = True
    users: PasswordCheck | None = None
    oidc: OidcLogin | None = None
    oidc_redirect_url: str = ""
    session_seconds: int = SESSION_SECONDS


def auth_config(desk: DeskSettings, *, oidc: OidcLogin | None = None) -> AuthConfig:
    """Check the desk's settings and build its :class:`AuthConfig` (``ConfigError`` names the variable)."""
    secret = desk.session_secret.get_secret_value() if desk.session_secret else ""
    if not secret:
        raise ConfigError("CDC_CLAIMS_DESK__SESSION_SECRET is not set (it signs the desk's session cookies)")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigError(f"CDC_CLAIMS_DESK__SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    if desk.oidc_issuer and not desk.oidc_client_id:
        raise ConfigError("CDC_CLAIMS_DESK__OIDC_CLIENT_ID is not set (CDC_CLAIMS_DESK__OIDC_ISSUER is)")
    if desk.oidc_issuer and oidc is None:
        raise ConfigError("OIDC sign-in is configured but no OIDC client was built")
    users = LocalUsers(desk.users_file) if desk.users_file is not None else None
    if users is None and oidc is None:
        raise ConfigError("the desk needs CDC_CLAIMS_DESK__USERS_FILE or CDC_CLAIMS_DESK__OIDC_ISSUER to sign staff in")
    return AuthConfig(
        session_secret=secret,
        secure_cookies=desk.secure_cookies,
        users=users,
        oidc=oidc,
        oidc_redirect_url=desk.oidc_redirect_url,
    )


# ---------------------------------------------------------------------- the session itself
Session = MutableMapping[str, Any]


def csrf_token(session: Session) -> str:
    """The session's CSRF token, made on first use (also for the login page's pre-session)."""
    token = session.get(_CSRF)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


def csrf_ok(session: Session, sent: object) -> bool:
    expected = session.get(_CSRF)
    if not isinstance(expected, str) or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))


def sign_in(session: Session, user: str, *, via: str, now: float | None = None) -> None:
    """A fresh session for ``user``: everything before (the pre-login token) is dropped."""
    session.clear()
    session.update({_USER: user, _SINCE: time.time() if now is None else now, _VIA: via})
    csrf_token(session)


def signed_in(session: Session, *, max_age: float = SESSION_SECONDS, now: float | None = None) -> str | None:
    """The user of a session younger than ``max_age`` seconds, else None (and the session is cleared)."""
    user, since = session.get(_USER), session.get(_SINCE)
    if not isinstance(user, str) or not isinstance(since, int | float):
        return None
    age = (time.time() if now is None else now) - since
    if not 0 <= age < max_age:
        session.clear()
        return None
    return user


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//host`` or ``https://``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target
