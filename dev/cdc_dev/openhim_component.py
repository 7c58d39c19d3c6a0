"""The openHIM emulator as a stack component: config generation, dev TLS material, process.

Everything lives in ``<state>/openhim/``:

* ``emulator.json``: the emulator config, generated on every ``up`` from
  ``docs/openhim/cdc-claims-openhim-config.json`` (the same body operators load into a real
  openHIM), with the route pointed at the local openIMIS and the client's ``certFingerprint`` set;
* ``jwt-secret``: the HS256 secret the router checks and the admin ``/token`` endpoint signs with;
* ``tls/``: dev TLS material made with trustme on first ``up``: ``ca.pem`` (+ ``ca.key``),
  ``server.pem`` / ``server.key`` (for 127.0.0.1 and localhost), ``client.pem`` / ``client.key``
  (the ``cdc-claims`` client certificate for mutual TLS).
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdc_dev import openimis
from cdc_dev.base import (
    REPO_ROOT,
    Stack,
    StackError,
    http_ok,
    read_pid,
    start_process,
    stop_process,
    tail,
    wait_until,
)

OPERATOR_CONFIG = REPO_ROOT / "docs" / "openhim" / "cdc-claims-openhim-config.json"
CLIENT_ID = "cdc-claims"
CLIENT_PASSWORD = "cdc-claims-password"  # noqa: S105 - matches the hash in the operator config
CUSTOM_TOKEN = "cdc-claims-custom-token"  # noqa: S105 - matches customTokenID in the operator config
CHANNEL_PREFIX = "/openimis"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def under(cls, folder: Path) -> TlsFiles:
        return cls(
            ca=folder / "ca.pem",
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            client_cert=folder / "client.pem",
            client_key=folder / "client.key",
        )

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca, self.server_cert, self.server_key, self.client_cert, self.client_key))


def make_tls(folder: Path) -> TlsFiles:
    """CA, server and client certificates for local tests (trustme), kept across runs."""
    files = TlsFiles.under(folder)
    if files.exist():
        return files
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="cdc-claims dev CA")
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="openhim-emulator")
    client = ca.issue_cert(f"{CLIENT_ID}.clients.local", common_name=CLIENT_ID)
    ca.cert_pem.write_to_path(str(files.ca))
    ca.private_key_pem.write_to_path(str(folder / "ca.key"))
    server.private_key_pem.write_to_path(str(files.server_key))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    for key in (folder / "ca.key", files.server_key, files.client_key):
        key.chmod(0o600)
    return files


def pem_fingerprint(pem_file: Path) -> str:
    """SHA-1 fingerprint of a PEM certificate, ``AB:CD:...`` as openHIM stores ``certFingerprint``."""
    import ssl

    der = ssl.PEM_cert_to_DER_cert(pem_file.read_text())
    digest = hashlib.sha1(der).hexdigest().upper()  # noqa: S324 - openHIM's fingerprint format
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def operator_metadata() -> dict[str, Any]:
    """The openHIM ``/metadata`` body shipped in ``docs/openhim/``."""
    doc: dict[str, Any] = json.loads(OPERATOR_CONFIG.read_text())
    return doc


def local_metadata(
    *,
    upstream_host: str,
    upstream_port: int,
    upstream_user: str,
    upstream_password: str,
    client_fingerprint: str = "",
) -> dict[str, Any]:
    """The operator metadata with the route aimed at a local openIMIS (nothing else changes)."""
    doc = copy.deepcopy(operator_metadata())
    for channel in doc["Channels"]:
        for route in channel["routes"]:
            route.update(host=upstream_host, port=upstream_port, username=upstream_user, password=upstream_password)
    if client_fingerprint:
        for client in doc["Clients"]:
            if client["clientID"] == CLIENT_ID:
                client["certFingerprint"] = client_fingerprint
    return doc


def emulator_config(
    metadata: dict[str, Any],
    *,
    http_port: int | None,
    https_port: int | None,
    admin_port: int | None,
    tls: TlsFiles | None,
    jwt_secret: str,
    timeout_ms: int = 60000,
) -> dict[str, Any]:
    """An emulator config with every client authentication method enabled."""
    doc: dict[str, Any] = {
        "router": {"host": "127.0.0.1", "httpPort": http_port, "httpsPort": https_port, "timeout": timeout_ms},
        "admin": {"port": admin_port},
        "authentication": {
            "enableMutualTLSAuthentication": tls is not None,
            "enableBasicAuthentication": True,
            "enableCustomTokenAuthentication": True,
            "enableJWTAuthentication": True,
            "jwt": {"secretOrPublicKey": jwt_secret, "algorithms": ["HS256"], "audience": "", "issuer": ""},
        },
        "tokenIssuer": {"expiresIn": 3600},
        "metadata": metadata,
    }
    if tls is not None:
        doc["tls"] = {"certFile": str(tls.server_cert), "keyFile": str(tls.server_key), "caFile": str(tls.ca)}
    return doc


class OpenHimEmulator:
    """openHIM emulator on ``Ports.openhim_http`` / ``openhim_https``, admin on ``openhim_admin``."""

    name = "openhim"

    def __init__(self, stack: Stack | None = None, *, config_file: Path | None = None) -> None:
        self.stack = stack or Stack.from_env()
        self.home = self.stack.dir(self.name)
        self.tls = TlsFiles.under(self.home / "tls")
        self._config_file = config_file

    # --- where things are -------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self._config_file or self.home / "emulator.json"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.openhim_http}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.stack.ports.openhim_https}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.openhim_admin}"

    @property
    def token_url(self) -> str:
        return f"{self.admin_url}/token"

    def fhir_url(self, *, https: bool = False) -> str:
        """The channel URL for openIMIS's FHIR R4 API (what the sidecar's ``base_url`` is)."""
        return f"{self.https_url if https else self.http_url}{CHANNEL_PREFIX}/api/api_fhir_r4/"

    def jwt_secret(self) -> str:
        path = self.home / "jwt-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()

    # --- lifecycle ----------------------------------------------------------------------------
    def write_config(self) -> Path:
        tls = make_tls(self.home / "tls")
        ports = self.stack.ports
        metadata = local_metadata(
            upstream_host="127.0.0.1",
            upstream_port=ports.openimis,
            upstream_user=openimis.USER,
            upstream_password=openimis.PASSWORD,
            client_fingerprint=pem_fingerprint(tls.client_cert),
        )
        doc = emulator_config(
            metadata,
            http_port=ports.openhim_http,
            https_port=ports.openhim_https,
            admin_port=ports.openhim_admin,
            tls=tls,
            jwt_secret=self.jwt_secret(),
        )
        path = self.home / "emulator.json"
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        path.chmod(0o600)
        return path

    def up(self) -> None:
        pidfile, log = self.stack.pidfile(self.name), self.stack.log(self.name)
        if read_pid(pidfile) is not None:
            return
        config = self._config_file or self.write_config()
        start_process(
            [sys.executable, "-m", "cdc_dev.openhim_emulator", "--config", str(config)],
            pidfile=pidfile,
            log=log,
            env={"PYTHONUNBUFFERED": "1"},
            cwd=REPO_ROOT,
        )

        def ready() -> bool:
            if read_pid(pidfile) is None:
                raise StackError(f"openHIM emulator exited during start-up:\n{tail(log)}")
            return http_ok(f"{self.admin_url}/health")

        wait_until(ready, 30, "the openHIM emulator admin API", log)

    def down(self) -> None:
        stop_process(self.stack.pidfile(self.name), timeout=10)

    def status(self) -> str:
        pid = read_pid(self.stack.pidfile(self.name))
        if pid is None:
            return "stopped"
        state = "running" if http_ok(f"{self.admin_url}/health") else "not answering"
        return f"{state} (pid {pid}) router {self.http_url} / {self.https_url}, admin {self.admin_url}"

    def reset(self) -> None:
        """Forget recorded transactions (configuration and TLS material stay)."""
        import urllib.request

        request = urllib.request.Request(f"{self.admin_url}/transactions", method="DELETE")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - loopback admin URL
            pass
