"""Visit mode: one claim per visit, sent when the visit closes, covering every Save of the visit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from conftest import CaptureStack
from pipeline_support import (
    CHEST_PA,
    HYPERTHYROIDISM,
    INSUREES,
    NIFEDIPINE,
    claim_code_of,
    ledger,
    openimis_claims,
    rows,
    wait_for,
)

from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]


@pytest.fixture(scope="module")
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    env = {"CDC_CLAIMS_SETTLE__MODE": "visit"}
    with Sidecar(full_stack.stack, settle_seconds=0.5, extra_env=env, metrics_base_port=19504) as running:
        yield running


def test_a_visit_is_claimed_once_when_it_closes_with_every_save_in_it(
    sidecar: Sidecar, full_stack: CaptureStack
) -> None:
    db = full_stack.mariadb
    sim = BahmniSim(lambda: db.connect("cdc_admin"))
    visit = sim.start_visit(sim.create_patient(INSUREES[2], gender="F"))
    sim.save_consultation(visit, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 2)])
    sim.save_consultation(visit, radiology=[CHEST_PA])  # a second Save later in the visit
    time.sleep(3)  # well past the settle window: an open visit must still not be claimed
    assert ledger(db, visit.uuid) is None
    assert not rows(db, "SELECT 1 FROM iclm_claim WHERE visit = %s", visit.visit_id)

    sim.close_visit(visit)
    claim = wait_for("visit claim", lambda: rows(db, "SELECT * FROM iclm_claim WHERE visit = %s", visit.visit_id))
    assert len(claim) == 1
    assert claim[0]["claim_code"] == claim_code_of(visit.uuid)
    assert claim[0]["claimed_total"] == Decimal("3720.00")  # A1 400 + 2 x 0171 at 35 + I42 3250
    assert ledger(db, visit.uuid)["unit_kind"] == "visit"  # type: ignore[index]
    assert openimis_claims(OpenImis(full_stack.stack), claim_code_of(visit.uuid)) == 1
