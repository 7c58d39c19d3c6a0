"""Ledger round-trip against MariaDB (writer user)."""

from __future__ import annotations

import uuid

import pytest

from cdc_claims.errors import WriteBackError
from cdc_claims.ledger.model import LedgerEntry
from cdc_claims.ledger.store import Ledger
from cdc_claims.lifecycle import State
from cdc_dev.bahmni_testdb import admin_factory, writer_factory

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    admin = Ledger(admin_factory())  # the sidecar's writer user may not CREATE: an admin applies the DDL
    admin.ensure_schema()
    admin.ensure_schema()  # idempotent
    return Ledger(writer_factory())


def new_unit() -> str:
    return str(uuid.uuid4())


def test_upsert_get_roundtrip(ledger: Ledger) -> None:
    unit, enc2 = new_unit(), new_unit()
    code = f"T-{unit[:8]}"
    entry = LedgerEntry(
        unit_kind="encounter",
        unit_uuid=unit,
        state=State.DETECTED,
        claim_code=code,
        revision=1,
        content_hash="abc",
        patient_uuid=new_unit(),
        visit_uuid=new_unit(),
        encounter_uuids=(unit, enc2),
    )
    stored = ledger.upsert(entry)
    assert stored.created_at is not None and stored.updated_at is not None
    assert stored == LedgerEntry(**{**entry.__dict__, "created_at": stored.created_at, "updated_at": stored.updated_at})
    assert ledger.get("encounter", unit) == stored
    assert ledger.get_by_code(code) == stored
    assert ledger.get("visit", unit) is None
    assert ledger.get_by_code("no-such-code") is None

    held = ledger.upsert(
        LedgerEntry(
            **{**stored.__dict__, "state": State.HELD, "reason": "uninsured", "detail": "no CHF id", "attempts": 2}
        )
    )
    assert held.state is State.HELD and held.reason == "uninsured" and held.attempts == 2
    assert held.created_at == stored.created_at and held.encounter_uuids == (unit, enc2)
    assert unit in {e.unit_uuid for e in ledger.held()}
    assert unit in {e.unit_uuid for e in ledger.list_by_state([State.HELD, State.FAILED])}
    assert unit not in {e.unit_uuid for e in ledger.list_by_state([State.DETECTED])}
    assert ledger.list_by_state([]) == []


def test_submitted_fields_and_null_code(ledger: Ledger) -> None:
    unit = new_unit()
    first = ledger.upsert(LedgerEntry(unit_kind="visit", unit_uuid=unit, state=State.SETTLED))
    assert first.claim_code is None and first.encounter_uuids == ()
    other = ledger.upsert(LedgerEntry(unit_kind="visit", unit_uuid=new_unit(), state=State.SETTLED))
    assert other.claim_code is None  # several units may not have a code yet
    done = ledger.upsert(
        LedgerEntry(
            unit_kind="visit",
            unit_uuid=unit,
            state=State.CHECKED,
            claim_code=f"V-{unit[:8]}",
            openimis_claim_uuid=new_unit(),
            last_error="timeout once",
        )
    )
    assert done.state is State.CHECKED and done.openimis_claim_uuid and done.last_error == "timeout once"


def test_claim_code_is_unique(ledger: Ledger) -> None:
    code = f"DUP-{new_unit()[:8]}"
    ledger.upsert(LedgerEntry(unit_kind="encounter", unit_uuid=new_unit(), state=State.SUBMITTING, claim_code=code))
    with pytest.raises(WriteBackError):
        ledger.upsert(LedgerEntry(unit_kind="encounter", unit_uuid=new_unit(), state=State.SUBMITTING, claim_code=code))
