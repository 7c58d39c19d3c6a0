"""Fixtures for the upstream hop: the real openIMIS sandbox and the openHIM emulator.

Use from a test module with ``pytest_plugins = ["fixtures_upstream"]``. Both services are started
once per session (and left running: ``cdc-dev down`` or the components' ``down`` stop them).
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cdc_claims.settings import OpenHimSettings
from cdc_dev.base import Stack, http_ok, read_pid, start_process, stop_process, tail, wait_until
from cdc_dev.openhim_component import (
    CLIENT_ID,
    CLIENT_PASSWORD,
    CUSTOM_TOKEN,
    OpenHimEmulator,
    emulator_config,
    local_metadata,
)
from cdc_dev.openimis import OpenImis

IG = "https://openimis.github.io/openimis_fhir_r4_ig"
#: demo master data by UUID (tests/data/openimis/demo_codes): deterministic references
PATIENT = "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"  # 070707081 Jane Macintyre, BCUL0001
FACILITY = "d8a25f21-f36a-4d4d-9e58-1db8ffbe7036"  # RAHOS001
CLAIM_ADMIN = "598e43ca-9977-4f4b-a678-992528ce3454"  # RHOS0011
SERVICE_A1 = "488d8bcb-5b88-438c-9077-f177f6f32626"  # consultation, 400
ITEM_0001 = "71efb78b-64ee-4a68-be29-87daf566eb20"  # aspirin, 10


def minimal_claim(code: str | None = None) -> dict[str, Any]:
    """CONTRACT.md §4.3 with UUID references and a unique code: 201, every line checked, 420."""
    today = dt.datetime.now(dt.UTC).date()
    day = (today - dt.timedelta(days=2)).isoformat()
    ref = f"{IG}/StructureDefinition/claim-item-reference"
    return {
        "resourceType": "Claim",
        "status": "active",
        "use": "claim",
        "created": today.isoformat(),
        "identifier": [
            {
                "type": {"coding": [{"system": f"{IG}/CodeSystem/openimis-identifiers", "code": "Code"}]},
                "value": code or f"CDC-T-{uuid.uuid4().hex[:12].upper()}",
            }
        ],
        "type": {"coding": [{"system": f"{IG}/CodeSystem/claim-visit-type", "code": "O"}]},
        "patient": {"reference": f"Patient/{PATIENT}"},
        "provider": {"reference": f"Organization/{FACILITY}"},
        "enterer": {"reference": f"Practitioner/{CLAIM_ADMIN}"},
        "billablePeriod": {"start": day, "end": day},
        "diagnosis": [{"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"code": "A09"}]}}],
        "total": {"value": 420.0},
        "item": [
            {
                "sequence": 1,
                "category": {"text": "service"},
                "productOrService": {"text": "A1"},
                "quantity": {"value": 1},
                "unitPrice": {"value": 400.0},
                "extension": [{"url": ref, "valueReference": {"reference": f"ActivityDefinition/{SERVICE_A1}"}}],
            },
            {
                "sequence": 2,
                "category": {"text": "item"},
                "productOrService": {"text": "0001"},
                "quantity": {"value": 2},
                "unitPrice": {"value": 10.0},
                "extension": [{"url": ref, "valueReference": {"reference": f"Medication/{ITEM_0001}"}}],
            },
        ],
    }


def claim_code(claim: dict[str, Any]) -> str:
    return str(claim["identifier"][0]["value"])


def highest_category(response: dict[str, Any]) -> int:
    """The claim status a ClaimResponse shows (CONTRACT.md §5.4): the highest category present."""
    codes = [
        int(adj["category"]["coding"][0]["code"])
        for item in response.get("item", [])
        for adj in item.get("adjudication", [])
    ]
    codes += [int(t["category"]["coding"][0]["code"]) for t in response.get("total", [])]
    return max(codes)


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack.from_env()


@pytest.fixture(scope="session")
def openimis(stack: Stack) -> OpenImis:
    component = OpenImis(stack)
    component.up()  # idempotent: about 0.1 s when already running
    return component


@pytest.fixture(scope="session")
def openhim(stack: Stack, openimis: OpenImis) -> OpenHimEmulator:
    component = OpenHimEmulator(stack)
    component.up()
    return component


@pytest.fixture(scope="session")
def admin(openhim: OpenHimEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=openhim.admin_url, timeout=10) as client:
        yield client


def settings_for(openhim: OpenHimEmulator, mode: str, **overrides: Any) -> OpenHimSettings:
    """Client settings for one auth mode against the stack's emulator."""
    values: dict[str, Any] = {"auth": mode, "username": CLIENT_ID, "password": CLIENT_PASSWORD, "max_attempts": 2}
    if mode == "custom":
        values["custom_token"] = CUSTOM_TOKEN
    elif mode == "bearer":
        values["token_url"] = openhim.token_url
    if mode == "mtls":
        values.update(
            base_url=openhim.fhir_url(https=True),
            client_cert=openhim.tls.client_cert,
            client_key=openhim.tls.client_key,
            ca_bundle=openhim.tls.ca,
        )
    else:
        values["base_url"] = openhim.fhir_url()
    values.update(overrides)
    return OpenHimSettings(**values)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ExtraEmulator:
    """A second emulator process with its own channels (free ports, own state)."""

    http_url: str
    admin_url: str


@pytest.fixture(scope="session")
def extra_emulator(tmp_path_factory: pytest.TempPathFactory, openhim: OpenHimEmulator) -> Iterator[Any]:
    """``start(channels)`` runs an emulator with the operator client and the given channels."""
    started: list[Path] = []

    def start(channels: list[dict[str, Any]]) -> ExtraEmulator:
        folder = tmp_path_factory.mktemp("openhim-extra")
        http_port, admin_port = free_port(), free_port()
        metadata = local_metadata(upstream_host="127.0.0.1", upstream_port=0, upstream_user="", upstream_password="")
        metadata["Channels"] = channels
        config = emulator_config(
            metadata,
            http_port=http_port,
            https_port=None,
            admin_port=admin_port,
            tls=None,
            jwt_secret="extra-secret",
            timeout_ms=3000,
        )
        config_file = folder / "emulator.json"
        config_file.write_text(json.dumps(config))
        pidfile, log = folder / "emulator.pid", folder / "emulator.log"
        start_process(
            [sys.executable, "-m", "cdc_dev.openhim_emulator", "--config", str(config_file)],
            pidfile=pidfile,
            log=log,
        )
        started.append(pidfile)
        admin_url = f"http://127.0.0.1:{admin_port}"

        def ready() -> bool:
            assert read_pid(pidfile) is not None, tail(log)
            return http_ok(f"{admin_url}/health")

        wait_until(ready, 30, "the extra openHIM emulator", log)
        return ExtraEmulator(http_url=f"http://127.0.0.1:{http_port}", admin_url=admin_url)

    yield start
    for pidfile in started:
        stop_process(pidfile, timeout=5)
