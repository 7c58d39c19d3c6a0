"""The desk's command-line side: ``cdc-claims desk-user`` and ``cdc-claims run desk``."""

from __future__ import annotations

import io

import pytest

from cdc_claims.cli import _parser
from cdc_claims.commands import desk_user
from cdc_claims.desk.auth import verify_password


def test_desk_is_a_role_and_desk_user_a_command() -> None:
    assert _parser().parse_args(["run", "desk"]).role == "desk"
    assert _parser().parse_args(["desk-user", "amina"]).name == "amina"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_desk_user_prints_a_line_for_the_users_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert desk_user("amina", stdin=io.StringIO("pw of amina\n")) == 0
    line = capsys.readouterr().out.strip()
    name, encoded = line.split(":", 1)
    assert name == "amina"
    assert verify_password("pw of amina", encoded)
    assert "pw of amina" not in line


def test_desk_user_refuses_an_empty_password_and_a_mistyped_confirmation(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert desk_user("amina", stdin=io.StringIO("\n")) == 2
    assert "empty password" in capsys.readouterr().err
    answers = iter(["first", "second"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert desk_user("amina", stdin=_Terminal()) == 1
    assert "differ" in capsys.readouterr().err
