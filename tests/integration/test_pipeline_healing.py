"""Self-healing on the real stack: the pipeline waits out what time or an operator fixes, says so on
``/readyz`` and in a metric, and then claims what was waiting, without a manual step and without a
duplicate. Each test is one fault seen on a real hospital stack (issue 8)."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial

import pytest
from conftest import CaptureStack
from kafka import KafkaProducer
from pipeline_support import (
    Tail,
    claim_code_of,
    claim_rows,
    consultation,
    ledger,
    openimis_claims,
    rows,
    wait_for,
    wait_ledger,
)

from cdc_dev.bahmni import BahmniSim
from cdc_dev.openhim_component import OpenHimEmulator
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]

#: a short cap so a fixed cause shows within seconds (production default: 60 s)
RETRY_MAX = "3"
DLQ = "cdc-claims.dlq"


@pytest.fixture
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    running = Sidecar(
        full_stack.stack,
        settle_seconds=0,
        roles=("writer",),
        metrics_base_port=19504,
        extra_env={"CDC_CLAIMS_RETRY_MAX_SECONDS": RETRY_MAX, "CDC_CLAIMS_KAFKA__STALL_SECONDS": "15"},
    )
    running.start()
    yield running
    running.stop()


def probe(port: int, path: str = "/readyz") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
    except OSError as down:
        return 0, str(down)


def metric(port: int, line_start: str) -> float | None:
    _, text = probe(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def stop_role(sidecar: Sidecar, role: str) -> None:
    """SIGTERM, as Kubernetes does when a Secret change rolls the pod."""
    proc = sidecar.procs.pop(role)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def start_consumer(sidecar: Sidecar, **env: str) -> int:
    sidecar.start_role("consumer", env)
    port = sidecar.metrics_ports["consumer"]
    wait_for("consumer ready (assigned and consuming)", lambda: probe(port)[0] == 200)
    return port


def test_wrong_openhim_password_strands_nothing_and_claims_flow_once_it_is_fixed(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    port = start_consumer(sidecar, CDC_CLAIMS_OPENHIM__PASSWORD="wrong-password")
    _, enc = consultation(sim)
    code = claim_code_of(enc.uuid)

    wait_ledger(db, enc.uuid, "submitting")
    status, text = wait_for("readyz says why", lambda: (s := probe(port))[0] == 503 and s, timeout=60)
    assert (status, text.strip()) == (503, "not ready: openhim auth")
    assert metric(port, 'cdc_claims_upstream_failing{cause="auth",dependency="openhim"}') == 1.0
    assert openimis_claims(openimis, code) == 0
    time.sleep(2 * float(RETRY_MAX))  # more retries: still nothing parked, nothing lost
    assert ledger(db, enc.uuid)["state"] == "submitting"  # type: ignore[index]

    stop_role(sidecar, "consumer")  # the operator fixes the Secret; the pod restarts
    fixed = start_consumer(sidecar)
    claim = wait_for("claim after the fix", lambda: claim_rows(db, enc.encounter_id))[0]
    assert (claim["claim_code"], claim["status"]) == (code, "CHECKED")
    assert openimis_claims(openimis, code) == 1
    assert probe(fixed)[0] == 200


def test_openhim_down_then_back_claims_flow_without_a_restart(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    emulator = OpenHimEmulator(full_stack.stack)
    port = start_consumer(sidecar)
    pid = sidecar.procs["consumer"].pid
    emulator.down()
    try:
        _, enc = consultation(sim)
        wait_ledger(db, enc.uuid, "submitting")
        _status, text = wait_for("readyz says why", lambda: (s := probe(port))[0] == 503 and s, timeout=90)
        assert text.startswith("not ready: openhim ")
    finally:
        emulator.up()
    claim = wait_for("claim once openHIM is back", lambda: claim_rows(db, enc.encounter_id))[0]
    assert claim["status"] == "CHECKED"
    assert openimis_claims(openimis, claim_code_of(enc.uuid)) == 1
    assert sidecar.procs["consumer"].pid == pid and sidecar.procs["consumer"].poll() is None
    wait_for("ready again", lambda: probe(port)[0] == 200)


def test_a_broker_restart_is_ridden_through_by_every_role(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db = full_stack.mariadb
    start_consumer(sidecar)
    sidecar.start_role("poller")
    poller = sidecar.metrics_ports["poller"]
    wait_for("poller ready", lambda: probe(poller)[0] == 200)
    _, before = consultation(sim)
    wait_for("claim before the restart", lambda: claim_rows(db, before.encounter_id))
    full_stack.kafka.down()
    time.sleep(15)
    full_stack.kafka.up()
    full_stack.connect.wait_running()
    for role, proc in sidecar.procs.items():
        assert proc.poll() is None, f"{role} died with the broker (exit {proc.returncode})"
    _, after = consultation(sim)
    claim = wait_for("claim after the restart", lambda: claim_rows(db, after.encounter_id), timeout=180)[0]
    assert claim["status"] == "CHECKED"
    for role, proc in sidecar.procs.items():
        assert proc.poll() is None, f"{role} died after the broker restart"


def test_two_consumers_in_one_group_never_post_a_claim_twice(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    """A RollingUpdate overlap: a second consumer joins, then the first one stops."""
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    start_consumer(sidecar)
    second = Sidecar(
        full_stack.stack,
        settle_seconds=0,
        group=sidecar.group,
        roles=(),
        metrics_base_port=19514,
        extra_env={"CDC_CLAIMS_RETRY_MAX_SECONDS": RETRY_MAX, "CDC_CLAIMS_KAFKA__STALL_SECONDS": "15"},
    )
    encounters = []
    try:
        second.start_role("consumer")
        for i in range(6):
            encounters.append(consultation(sim)[1])
            if i == 2:
                stop_role(sidecar, "consumer")  # the old pod goes away mid-stream
        for enc in encounters:
            claim = wait_for(f"claim of {enc.uuid}", partial(claim_rows, db, enc.encounter_id), timeout=120)
            assert len(claim) == 1
            assert openimis_claims(openimis, claim_code_of(enc.uuid)) == 1
    finally:
        second.stop()


def test_a_lease_keeps_a_second_sidecar_from_posting_a_unit_another_one_is_submitting(
    full_stack: CaptureStack,
) -> None:
    from cdc_claims.db import writer_connection_factory
    from cdc_claims.ledger.store import Ledger
    from cdc_dev import credentials

    ledger_ = Ledger(writer_connection_factory(credentials.database(full_stack.stack.ports)))
    unit = f"lease-{time.time_ns()}"
    assert ledger_.acquire_lease("encounter", unit, "pod-a", 30).holder == "pod-a"
    assert ledger_.acquire_lease("encounter", unit, "pod-b", 30).holder == "pod-a"  # a is submitting
    assert ledger_.acquire_lease("encounter", unit, "pod-a", 30).holder == "pod-a"  # re-entrant for its holder
    ledger_.release_lease("encounter", unit, "pod-b")  # not b's to release
    assert ledger_.acquire_lease("encounter", unit, "pod-b", 30).holder == "pod-a"
    ledger_.release_lease("encounter", unit, "pod-a")
    assert ledger_.acquire_lease("encounter", unit, "pod-b", 0.2).holder == "pod-b"
    time.sleep(0.5)  # b crashed: its lease expires
    assert ledger_.acquire_lease("encounter", unit, "pod-a", 30).holder == "pod-a"
    assert ledger_.acquire_lease("encounter", unit, "pod-c", 30, steal_from="pod-x").holder == "pod-a"
    assert ledger_.acquire_lease("encounter", unit, "pod-c", 30, steal_from="pod-a").holder == "pod-c"  # a is dead
    entry = ledger_.get("encounter", unit)
    assert entry is not None and entry.state.value == "detected"


def test_a_void_after_submission_flags_a_withdrawal_in_the_ledger_and_iclm(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db = full_stack.mariadb
    port = start_consumer(sidecar)
    _, enc = consultation(sim)
    claim = wait_for("claim", lambda: claim_rows(db, enc.encounter_id))[0]
    sim.void_encounter(enc)
    row = wait_for(
        "withdrawal flag on the ledger",
        lambda: (r := ledger(db, enc.uuid)) is not None and r["reason"] == "voided_after_submit" and r,
    )
    assert row["state"] == "checked" and "withdraw" in row["detail"]
    flagged = wait_for(
        "withdrawal flag on iclm_claim",
        lambda: rows(
            db,
            "SELECT explanation FROM iclm_claim WHERE iclm_claim_id = %s AND explanation LIKE 'WITHDRAWAL%%'",
            claim["iclm_claim_id"],
        ),
    )
    assert claim["claim_code"] in flagged[0]["explanation"]
    assert metric(port, 'cdc_claims_withdrawals_needed_total{reason="voided_after_submit"}') == 1.0


def test_an_encounter_with_nothing_billable_is_not_a_held_claim(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    """A registration (REG) encounter: nothing billable, nothing for billing staff to chase."""
    db = full_stack.mariadb
    start_consumer(sidecar)
    visit = sim.start_visit(sim.create_patient("070707081", gender="F"))
    uuid = f"{time.time_ns():032x}"[-32:]
    uuid = f"{uuid[:8]}-{uuid[8:12]}-4{uuid[13:16]}-8{uuid[17:20]}-{uuid[20:32]}"
    conn = db.connect("cdc_admin", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator,"
                " date_created, voided, visit_id, uuid) SELECT et.encounter_type_id, v.patient_id, v.location_id,"
                " NOW(), 1, NOW(), 0, v.visit_id, %s FROM visit v JOIN encounter_type et ON et.name = 'REG'"
                " WHERE v.visit_id = %s",
                (uuid, visit.visit_id),
            )
    finally:
        conn.close()
    row = wait_ledger(db, uuid, "nothing_to_claim", "held")
    assert (row["state"], row["reason"]) == ("nothing_to_claim", "no_billable_lines")
    assert not rows(
        db, "SELECT 1 FROM iclm_claim c JOIN encounter e ON e.encounter_id = c.encounter WHERE e.uuid = %s", uuid
    )


def test_poison_that_passes_parsing_is_dead_lettered_and_the_consumer_goes_on(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    """An obs row with ``encounter_id: "not-a-number"`` inside a complete transaction."""
    db = full_stack.mariadb
    start_consumer(sidecar)
    tail = Tail(full_stack.bootstrap, [DLQ])
    tx = f"0-999-{time.time_ns() % 10**9}"  # a GTID of a server that is not ours
    now = int(time.time() * 1000)
    row = {"obs_id": 990000001, "person_id": 1, "concept_id": 1, "encounter_id": "not-a-number", "voided": 0}
    source = {
        "connector": "mariadb",
        "name": "openmrs",
        "ts_ms": now,
        "snapshot": "false",
        "db": "openmrs",
        "table": "obs",
        "server_id": 999,
        "gtid": tx,
        "file": "mysql-bin.000003",
        "pos": 4,
        "row": 0,
    }
    envelope = {
        "before": None,
        "after": row,
        "source": source,
        "op": "c",
        "ts_ms": now,
        "transaction": {"id": tx, "total_order": 1, "data_collection_order": 1},
    }
    begin = {"status": "BEGIN", "id": tx, "event_count": None, "data_collections": None, "ts_ms": now}
    end = {
        **begin,
        "status": "END",
        "event_count": 1,
        "data_collections": [{"data_collection": "openmrs.obs", "event_count": 1}],
    }
    producer = KafkaProducer(bootstrap_servers=full_stack.bootstrap)
    key = json.dumps({"id": tx}).encode()
    producer.send("openmrs.transaction", key=key, value=json.dumps(begin).encode())
    producer.send("openmrs.openmrs.obs", key=b'{"obs_id": 990000001}', value=json.dumps(envelope).encode())
    producer.flush()
    producer.send("openmrs.transaction", key=key, value=json.dumps(end).encode())
    producer.flush()
    producer.close()
    seen = tail.wait("dead-lettered transaction", lambda seen: any(m.key == tx for m in seen))
    letter = next(m for m in seen if m.key == tx)
    assert letter.headers["cdc-claims-reason"].startswith(b"invalid_value")
    assert any("openmrs.openmrs.obs/0/" in r for r in letter.value["records"])
    _, enc = consultation(sim)
    wait_for("claim after the poison", lambda: claim_rows(db, enc.encounter_id))
    assert sidecar.procs["consumer"].poll() is None
