"""Durability: the consumer dies between the POST and the offset commit, and nothing is lost or
duplicated. The process exits with ``os._exit`` at a failpoint (no flush, no commit, no clean-up),
then a fresh consumer in the same consumer group replays from the last committed offsets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import CaptureStack
from pipeline_support import claim_code_of, claim_rows, consultation, ledger, openimis_claims, rows, wait_for

from cdc_claims.failpoints import EXIT_CODE
from cdc_dev.bahmni import BahmniSim
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]


@pytest.fixture
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    running = Sidecar(full_stack.stack, settle_seconds=0, roles=("writer",), metrics_base_port=19494)
    running.start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("failpoint", "ledger_after_crash"),
    [
        ("after_submit", "submitting"),  # openIMIS has the claim; no reply, no offsets
        ("after_reply", "submitting"),  # the reply is on Kafka too; ledger and offsets not moved
    ],
)
def test_crash_between_submit_and_commit_loses_no_claim_and_duplicates_none(
    sidecar: Sidecar, full_stack: CaptureStack, failpoint: str, ledger_after_crash: str
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    sidecar.start_role("consumer", {"CDC_CLAIMS_FAILPOINT": failpoint})
    sim = BahmniSim(lambda: db.connect("cdc_admin"))
    _, enc = consultation(sim)
    code = claim_code_of(enc.uuid)

    assert sidecar.wait_exit("consumer", timeout=90) == EXIT_CODE
    assert openimis_claims(openimis, code) == 1  # the POST reached openIMIS before the crash
    assert ledger(db, enc.uuid)["state"] == ledger_after_crash  # type: ignore[index]

    sidecar.start_role("consumer")  # same group: replays from the last committed offset
    claim = wait_for("iclm_claim after the restart", lambda: claim_rows(db, enc.encounter_id))[0]
    assert claim["claim_code"] == code and claim["status"] == "CHECKED"
    assert wait_for("ledger checked", lambda: (ledger(db, enc.uuid) or {}).get("state") == "checked")
    assert openimis_claims(openimis, code) == 1  # replay found "already exists": no second claim
    assert len(claim_rows(db, enc.encounter_id)) == 1
    items = rows(db, "SELECT count(*) AS n FROM iclm_claim_item WHERE claim = %s", claim["iclm_claim_id"])
    assert items[0]["n"] == 3  # a replayed reply did not duplicate billing lines
