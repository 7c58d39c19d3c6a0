"""No password has a default: a role that needs one and lacks it says which variable to set."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from cdc_claims.db import reader_connection_factory, writer_connection_factory
from cdc_claims.errors import ConfigError
from cdc_claims.settings import DatabaseSettings, Settings


def test_settings_have_no_password_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CDC_CLAIMS_DB__PASSWORD", "CDC_CLAIMS_DB__WRITER_PASSWORD", "CDC_CLAIMS_OPENHIM__PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.db.password is None
    assert settings.db.writer_password is None
    assert settings.openhim.password is None


@pytest.mark.parametrize(
    ("factory", "variable"),
    [
        (reader_connection_factory, "CDC_CLAIMS_DB__PASSWORD"),
        (writer_connection_factory, "CDC_CLAIMS_DB__WRITER_PASSWORD"),
    ],
)
def test_a_database_user_without_password_is_a_config_error(factory: object, variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        factory(DatabaseSettings())  # type: ignore[operator]


def test_passwords_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_CLAIMS_DB__WRITER_PASSWORD", "from-env")
    assert Settings().db.writer_password == SecretStr("from-env")
    assert "from-env" not in repr(Settings())


def test_desk_settings_defaults_and_the_charts_empty_users_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CDC_CLAIMS_DESK__SESSION_SECRET", "CDC_CLAIMS_DESK__OIDC_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CDC_CLAIMS_DESK__USERS_FILE", "")  # what the chart renders for "no file"
    desk = Settings().desk
    assert (desk.port, desk.page_size, desk.secure_cookies) == (8080, 50, True)
    assert desk.session_secret is None
    assert desk.users_file is None  # not Path("."), the current directory
    assert desk.oidc_issuer == ""


def test_desk_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDC_CLAIMS_DESK__SESSION_SECRET", "s" * 40)
    monkeypatch.setenv("CDC_CLAIMS_DESK__OIDC_CLIENT_SECRET", "oidc-secret-value")
    settings = Settings()
    assert settings.desk.session_secret == SecretStr("s" * 40)
    assert "s" * 40 not in repr(settings)
    assert "oidc-secret-value" not in repr(settings)
