"""The local stack's users, passwords and endpoints, in one place.

The product has no password defaults (``cdc_claims.settings``): everything here is handed to
the sidecar explicitly, as an operator would through the environment. The passwords equal the
user names, as ``kafka/mariadb/grants.sql`` creates them; they only ever exist on this stack.

The desk's secrets (the clerk's password, the session secret, the OIDC client secret) are
generated once per stack and kept in ``<state>/desk/secrets.json`` (mode 0600): a browser signs
in with them, so they are not the user name. ``python -m cdc_dev.credentials --desk`` prints them.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from cdc_claims.settings import DatabaseSettings, KafkaSettings
from cdc_dev import openimis
from cdc_dev.base import Ports, Stack
from cdc_dev.openhim_component import CLIENT_ID, CLIENT_PASSWORD

DB_READER = ("cdc_reader", "cdc_reader")
DB_WRITER = ("cdc_writer", "cdc_writer")
#: the openHIM client the emulator's operator config knows (its password hash is there)
OPENHIM_CLIENT = (CLIENT_ID, CLIENT_PASSWORD)
#: the desk's local dev user and its client at the dev OpenID provider (cdc_dev.oidc_provider)
DESK_USER = "clerk"
DESK_OIDC_CLIENT_ID = "cdc-claims-desk"
#: where the desk receives the OIDC provider's answer: must match the desk's route (the dev
#: provider accepts any path on the desk's origin, so only the desk's setting names it)
DESK_OIDC_CALLBACK = "/auth/callback"


@dataclass(frozen=True)
class DeskCredentials:
    """Everything the desk and a browser need on this stack."""

    base_url: str  # the desk, http://127.0.0.1:<Ports.desk>
    user: str
    password: str
    users_file: Path  # the desk's local users (written by whoever starts the desk)
    session_secret: str
    oidc_issuer: str  # the dev OpenID provider, http://127.0.0.1:<Ports.oidc>
    oidc_client_id: str
    oidc_client_secret: str

    @property
    def oidc_redirect_url(self) -> str:
        return self.base_url + DESK_OIDC_CALLBACK


def _stack_secrets(path: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Secrets generated once per stack and kept (0600) so they survive restarts."""
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    missing = [n for n in names if not stored.get(n)]
    if missing:
        stored.update({n: secrets.token_urlsafe(24) for n in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(stored, out, indent=2, sort_keys=True)
    return stored


def desk(stack: Stack | None = None) -> DeskCredentials:
    stack = stack or Stack.from_env()
    home = stack.dir("desk")
    found = _stack_secrets(home / "secrets.json", ("password", "session_secret", "oidc_client_secret"))
    return DeskCredentials(
        base_url=f"http://127.0.0.1:{stack.ports.desk}",
        user=DESK_USER,
        password=found["password"],
        users_file=home / "users.yaml",
        session_secret=found["session_secret"],
        oidc_issuer=f"http://127.0.0.1:{stack.ports.oidc}",
        oidc_client_id=DESK_OIDC_CLIENT_ID,
        oidc_client_secret=found["oidc_client_secret"],
    )


def desk_env(stack: Stack | None = None) -> dict[str, str]:
    """``CDC_CLAIMS_DESK__*`` for a desk on this stack, signing in through the dev OpenID provider
    (plain HTTP on loopback, so no Secure cookies)."""
    found = desk(stack)
    return {
        "CDC_CLAIMS_DESK__PORT": found.base_url.rsplit(":", 1)[1],
        "CDC_CLAIMS_DESK__SESSION_SECRET": found.session_secret,
        "CDC_CLAIMS_DESK__USERS_FILE": str(found.users_file),
        "CDC_CLAIMS_DESK__OIDC_ISSUER": found.oidc_issuer,
        "CDC_CLAIMS_DESK__OIDC_CLIENT_ID": found.oidc_client_id,
        "CDC_CLAIMS_DESK__OIDC_CLIENT_SECRET": found.oidc_client_secret,
        "CDC_CLAIMS_DESK__OIDC_REDIRECT_URL": found.oidc_redirect_url,
        "CDC_CLAIMS_DESK__SECURE_COOKIES": "false",
    }


def database(ports: Ports | None = None) -> DatabaseSettings:
    ports = ports or Ports()
    return DatabaseSettings(
        host="127.0.0.1",
        port=ports.mariadb,
        user=DB_READER[0],
        password=SecretStr(DB_READER[1]),
        writer_user=DB_WRITER[0],
        writer_password=SecretStr(DB_WRITER[1]),
    )


def kafka(ports: Ports | None = None, **overrides: str) -> KafkaSettings:
    ports = ports or Ports()
    return KafkaSettings(bootstrap_servers=f"127.0.0.1:{ports.kafka}", **overrides)


def openhim_base_url(ports: Ports | None = None) -> str:
    ports = ports or Ports()
    return f"http://127.0.0.1:{ports.openhim_http}/openimis/api/api_fhir_r4/"


def sidecar_env(ports: Ports | None = None) -> dict[str, str]:
    """``CDC_CLAIMS_*`` for a sidecar on this stack: endpoints and credentials (no tuning)."""
    ports = ports or Ports()
    return {
        "CDC_CLAIMS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{ports.kafka}",
        "CDC_CLAIMS_DB__HOST": "127.0.0.1",
        "CDC_CLAIMS_DB__PORT": str(ports.mariadb),
        "CDC_CLAIMS_DB__USER": DB_READER[0],
        "CDC_CLAIMS_DB__PASSWORD": DB_READER[1],
        "CDC_CLAIMS_DB__WRITER_USER": DB_WRITER[0],
        "CDC_CLAIMS_DB__WRITER_PASSWORD": DB_WRITER[1],
        "CDC_CLAIMS_OPENHIM__BASE_URL": openhim_base_url(ports),
        "CDC_CLAIMS_OPENHIM__USERNAME": OPENHIM_CLIENT[0],
        "CDC_CLAIMS_OPENHIM__PASSWORD": OPENHIM_CLIENT[1],
        # the payer checks read openIMIS's GraphQL API directly (the demo database's Admin:
        # the sandbox has no read-only user; production uses one, see docs/payer-checks.md)
        "CDC_CLAIMS_PAYER__URL": f"http://127.0.0.1:{ports.openimis}/api/",
        "CDC_CLAIMS_PAYER__USERNAME": openimis.USER,
        "CDC_CLAIMS_PAYER__PASSWORD": openimis.PASSWORD,
    }


if __name__ == "__main__":  # `python -m cdc_dev.credentials`: shell-sourceable env (CI's image check)
    if "--desk" in sys.argv[1:]:  # the desk's settings, and who signs in with which password
        for key, value in desk_env().items():
            print(f"{key}={value}")
        creds = desk()
        print(f"# sign in at {creds.base_url}/ as {creds.user} / {creds.password}")
    else:
        for key, value in sidecar_env().items():
            print(f"{key}={value}")
