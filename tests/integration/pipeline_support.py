"""Shared pieces of the end-to-end tests: the full stack, a running sidecar, DB and openIMIS probes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CaptureStack, running

from cdc_dev.bahmni import BahmniSim, Drug, Dx, EncounterRef, VisitRef
from cdc_dev.mariadb import MariaDB
from cdc_dev.openhim_component import OpenHimEmulator
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"  # -> openIMIS ICD A09 (demo mapping)
NIFEDIPINE = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"  # -> item 0171 at 35
METFORMIN = "952916ed-55f9-498a-8880-3b69855598ef"  # -> item 0158 at 40
THYROID_FUNCTION = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"  # lab -> service I125 at 650
CHEST_PA = "c423e55e-3f10-11e4-adec-0800271c1b75"  # radiology -> service I42 at 3250
DIABETES_II = "de0be4e3-4e14-11e4-8a57-0800271c1b75"  # -> openIMIS ICD A499 (demo mapping)
APPENDECTOMY = "70de1c00-d244-4649-b413-bc7893ead902"  # procedure -> service M17 at 21000
UNMAPPED_DRUG = "4ee2744a-6e41-43a6-98ca-2390cb9e18b8"  # Clobetasone 15g: not in the demo mapping
#: demo insurees with a policy valid 2025-2030 in Rapta's district (R1D1, product BCUL0001)
INSUREES = ("070707081", "070707070", "070707055", "111111119")
#: an insuree whose policy has expired (status 8): openIMIS rejects the claim (7 FAMILY)
NOT_COVERED = "171000001"
WAIT = 90.0


@pytest.fixture(scope="session")
def full_stack(capture_stack: CaptureStack) -> Iterator[CaptureStack]:
    """Capture stack + openIMIS + the openHIM emulator, all real processes."""
    with running(OpenImis(capture_stack.stack), OpenHimEmulator(capture_stack.stack)):
        yield capture_stack


@pytest.fixture
def sim(full_stack: CaptureStack) -> BahmniSim:
    """Bahmni Saves as Bahmni's own database user writes them."""
    db = full_stack.mariadb
    return BahmniSim(lambda: db.connect("cdc_admin"))


def wait_for(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``probe`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: nothing after {timeout:.0f}s")
        time.sleep(0.2)


def rows(db: MariaDB, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = db.connect("cdc_admin", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def claim_rows(db: MariaDB, encounter_id: int) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM iclm_claim WHERE encounter = %s AND voided = 0", encounter_id)


def ledger(db: MariaDB, unit_uuid: str) -> dict[str, Any] | None:
    found = rows(db, "SELECT * FROM cdc_claims_ledger WHERE unit_uuid = %s", unit_uuid)
    return found[0] if found else None


def wait_ledger(db: MariaDB, unit_uuid: str, *states: str, timeout: float = WAIT) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        row = ledger(db, unit_uuid)
        return row if row is not None and row["state"] in states else None

    return wait_for(f"ledger row of {unit_uuid} in {states}", probe, timeout)  # type: ignore[no-any-return]


def openimis_claims(openimis: OpenImis, code: str) -> int:
    """How many live claims openIMIS holds under ``code`` (its own database)."""
    out = openimis.psql(
        'SELECT count(*) FROM "tblClaim" WHERE "ClaimCode" = \'' + code.replace("'", "") + '\' AND "ValidityTo" IS NULL'
    )
    return int(out.strip())


def consultation(
    sim: BahmniSim, insurance: str | None = INSUREES[0], *, dx: Dx | None = None, qty: int = 10
) -> tuple[VisitRef, EncounterRef]:
    patient = sim.create_patient(insurance, gender="F")
    visit = sim.start_visit(patient)
    enc = sim.save_consultation(
        visit, diagnoses=[dx or Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, qty)], labs=[THYROID_FUNCTION]
    )
    return visit, enc


class Tail:
    """Reads the sidecar's own topics from "now" on: keys are text, values JSON (or raw bytes)."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from cdc_dev.sidecar import ensure_topics

        ensure_topics(bootstrap, topics)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        parts = [TopicPartition(t, 0) for t in topics]
        self.consumer.assign(parts)
        for tp, end in self.consumer.end_offsets(parts).items():
            self.consumer.seek(tp, end)
        self.seen: list[Any] = []

    def wait(self, what: str, predicate: Callable[[list[Any]], bool], timeout: float = WAIT) -> list[Any]:
        """Accumulate records until ``predicate(all records so far)`` holds; returns them all."""
        deadline = time.monotonic() + timeout
        while not predicate(self.seen):
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not on Kafka after {timeout:.0f}s ({len(self.seen)} records seen)")
            for batch in self.consumer.poll(timeout_ms=300).values():
                for r in batch:
                    value: Any = r.value
                    with contextlib.suppress(ValueError):
                        value = json.loads(r.value) if r.value is not None else None
                    self.seen.append(Msg(r.topic, r.key.decode() if r.key else None, value, dict(r.headers or [])))
        return self.seen

    def of(self, topic: str, key: str | None = None) -> list[Msg]:
        return [m for m in self.seen if m.topic == topic and (key is None or m.key == key)]

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Msg:
    topic: str
    key: str | None
    value: Any
    headers: dict[str, bytes]


def claim_code_of(unit_uuid: str) -> str:
    return "RAHOS001-" + unit_uuid.replace("-", "")


def run_cli(sidecar: Sidecar, mapping: dict[str, Any], folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``cdc-claims <args>`` in a subprocess, configured like the running sidecar but with ``mapping``."""
    path = folder / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping))
    (folder / "openimis_icd_codes.csv").write_text((DEMO_MAPPING.parent / "openimis_icd_codes.csv").read_text())
    env = {**os.environ, **sidecar.env, "CDC_CLAIMS_MAPPING_FILE": str(path), "CDC_CLAIMS_METRICS_PORT": "0"}
    return subprocess.run(
        [sys.executable, "-m", "cdc_claims", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
