"""The local stack's users, passwords and endpoints, in one place.

The product has no password defaults (``cdc_claims.settings``): everything here is handed to
the sidecar explicitly, as an operator would through the environment. The passwords equal the
user names, as ``kafka/mariadb/grants.sql`` creates them; they only ever exist on this stack.
"""

from __future__ import annotations

from pydantic import SecretStr

from cdc_claims.settings import DatabaseSettings, KafkaSettings
from cdc_dev.base import Ports
from cdc_dev.openhim_component import CLIENT_ID, CLIENT_PASSWORD

DB_READER = ("cdc_reader", "cdc_reader")
DB_WRITER = ("cdc_writer", "cdc_writer")
#: the openHIM client the emulator's operator config knows (its password hash is there)
OPENHIM_CLIENT = (CLIENT_ID, CLIENT_PASSWORD)


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
    }


if __name__ == "__main__":  # `python -m cdc_dev.credentials`: shell-sourceable env (CI's image check)
    for key, value in sidecar_env().items():
        print(f"{key}={value}")
