"""Desk sign-in rules: password hashes, the users file, the throttle, sessions, the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from cdc_claims.desk.auth import (
    ITERATIONS,
    SESSION_SECONDS,
    AuthConfig,
    LocalUsers,
    Throttle,
    auth_config,
    csrf_ok,
    csrf_token,
    hash_password,
    parse_users,
    safe_next,
    sign_in,
    signed_in,
    user_line,
    verify_password,
)
from cdc_claims.errors import ConfigError
from cdc_claims.settings import DeskSettings

SECRET = SecretStr("x" * 40)


def test_a_hash_has_the_documented_shape_and_verifies() -> None:
    encoded = hash_password("s3cret pass", iterations=1000, salt=b"0123456789abcdef")
    algorithm, iterations, salt, digest = encoded.split("$")
    assert (algorithm, iterations, salt) == ("pbkdf2_sha256", "1000", "MDEyMzQ1Njc4OWFiY2RlZg==")
    assert len(digest) == 44  # 32 bytes, base64
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pasS", encoded)
    assert hash_password("s3cret pass", iterations=1000) != encoded  # a fresh salt each time
    assert f"${ITERATIONS}$" in hash_password("x")


@pytest.mark.parametrize(
    "encoded", ["", "md5$1$a$b", "pbkdf2_sha256$x$a$b", "pbkdf2_sha256$1000$!!$b", "pbkdf2_sha256$1000$YQ==$", "a$b"]
)
def test_malformed_hashes_never_verify(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_empty_passwords_and_odd_names_are_refused() -> None:
    with pytest.raises(ValueError, match="empty password"):
        hash_password("")
    with pytest.raises(ValueError, match="user name"):
        user_line("two words", "pw")
    with pytest.raises(ValueError, match="user name"):
        user_line("a:b", "pw")
    assert user_line("amina.k@hospital", "pw").startswith("amina.k@hospital:pbkdf2_sha256$")


def test_the_users_file_skips_comments_and_names_only_the_bad_line() -> None:
    good = hash_password("pw", iterations=1000)
    assert parse_users(f"# staff\n\namina:{good}\n") == {"amina": good}
    with pytest.raises(ConfigError, match="line 2") as raised:
        parse_users(f"amina:{good}\nbob:plaintext-password\n")
    assert "plaintext-password" not in str(raised.value)


def test_local_users_check_and_see_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"amina:{hash_password('pw-a', iterations=1000)}\n", encoding="utf-8")
    users = LocalUsers(path)
    assert users.check("amina", "pw-a")
    assert not users.check("amina", "pw-b")
    assert not users.check("bob", "pw-b")
    path.write_text(path.read_text() + f"bob:{hash_password('pw-b', iterations=1000)}\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))  # a different stamp even on a coarse clock
    assert users.check("bob", "pw-b")


def test_a_missing_users_file_stops_the_desk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="desk users file"):
        LocalUsers(tmp_path / "absent")


def test_the_throttle_counts_failures_per_name_within_the_window() -> None:
    now = [1000.0]
    throttle = Throttle(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.blocked("amina")
        throttle.failed("amina")
    assert throttle.blocked("amina")
    assert not throttle.blocked("bob")
    now[0] += 61
    assert not throttle.blocked("amina")
    throttle.failed("amina")
    throttle.succeeded("amina")
    assert not throttle.blocked("amina")


def test_sessions_last_eight_hours_from_sign_in() -> None:
    session: dict[str, object] = {"csrf": "pre-login-token" * 3, "other": 1}
    sign_in(session, "amina", via="local", now=1000.0)
    assert session["user"] == "amina" and "other" not in session
    assert session["csrf"] != "pre-login-token" * 3  # a new token after sign-in
    assert signed_in(session, now=1000.0 + SESSION_SECONDS - 1) == "amina"
    assert signed_in(dict(session), now=999.0) is None  # from the future: not trusted
    assert signed_in(session, now=1000.0 + SESSION_SECONDS) is None
    assert session == {}  # an expired session is emptied
    assert signed_in({"user": "amina"}) is None


def test_csrf_tokens_are_per_session_and_compared_exactly() -> None:
    session: dict[str, object] = {}
    token = csrf_token(session)
    assert len(token) >= 32 and csrf_token(session) == token
    assert csrf_ok(session, token)
    assert not csrf_ok(session, token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not csrf_ok(session, None)
    assert not csrf_ok(session, "")
    assert not csrf_ok({}, token)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/summary", "/summary"),
        ("/?q=GAN1&page=2", "/?q=GAN1&page=2"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("summary", "/"),
        (None, "/"),
    ],
)
def test_only_paths_of_this_site_are_followed_after_sign_in(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_the_desk_needs_a_long_session_secret_and_a_way_to_sign_in(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CDC_CLAIMS_DESK__SESSION_SECRET is not set"):
        auth_config(DeskSettings())
    with pytest.raises(ConfigError, match="at least 32 characters"):
        auth_config(DeskSettings(session_secret=SecretStr("short")))
    with pytest.raises(ConfigError, match="CDC_CLAIMS_DESK__USERS_FILE or CDC_CLAIMS_DESK__OIDC_ISSUER"):
        auth_config(DeskSettings(session_secret=SECRET))
    with pytest.raises(ConfigError, match="CDC_CLAIMS_DESK__OIDC_CLIENT_ID"):
        auth_config(DeskSettings(session_secret=SECRET, oidc_issuer="https://kc.example/realms/x"))
    users = tmp_path / "users"
    users.write_text("", encoding="utf-8")
    config = auth_config(DeskSettings(session_secret=SECRET, users_file=users, secure_cookies=False))
    assert isinstance(config, AuthConfig)
    assert (config.session_secret, config.secure_cookies, config.oidc) == ("x" * 40, False, None)
    assert isinstance(config.users, LocalUsers)
