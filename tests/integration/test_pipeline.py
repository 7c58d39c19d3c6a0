"""End to end on the real stack: Bahmni-shaped Saves -> Debezium -> sidecar -> openHIM emulator ->
openIMIS -> reply topic -> iclm_* rows. Every assertion reads a real system of record."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import CaptureStack
from kafka import KafkaProducer
from pipeline_support import (
    APPENDECTOMY,
    CHEST_PA,
    DIABETES_II,
    HYPERTHYROIDISM,
    INSUREES,
    METFORMIN,
    NIFEDIPINE,
    NOT_COVERED,
    UNMAPPED_DRUG,
    Tail,
    claim_code_of,
    claim_rows,
    consultation,
    ledger,
    openimis_claims,
    rows,
    run_cli,
    wait_for,
    wait_ledger,
)

from cdc_claims.writeback.iclm import encounter_billing_state
from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]  # the full_stack fixture

REPLIES, HELD, AUDIT, DLQ = "cdc-claims.replies", "cdc-claims.held", "cdc-claims.claims", "cdc-claims.dlq"


@pytest.fixture(scope="module")
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    # coverage "warn": a claim without a policy still goes out, so openIMIS's own rejection (7 FAMILY)
    # and its billing rows are exercised here; test_payer_checks.py holds such claims ("hold")
    with Sidecar(
        full_stack.stack,
        settle_seconds=1.5,
        poll_seconds=1.0,
        metrics_base_port=19484,
        extra_env={"CDC_CLAIMS_PAYER__COVERAGE": "warn"},
    ) as running:
        yield running


@pytest.fixture
def tail(full_stack: CaptureStack) -> Iterator[Tail]:
    reader = Tail(full_stack.bootstrap, [REPLIES, HELD, AUDIT, DLQ])
    yield reader
    reader.close()


def test_a_saved_consultation_becomes_a_checked_claim_with_reply_audit_and_billing_rows(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
    tail: Tail,
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim, qty=10)
    code = claim_code_of(enc.uuid)
    claim = wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
    assert claim["claim_code"] == code
    assert claim["status"] == "CHECKED"
    assert claim["claimed_total"] == Decimal("1400.00")  # A1 400 + I125 650 + 10 x 0171 at 35
    assert claim["approved_total"] == Decimal("1400.00")
    assert (claim["usetype"], claim["visit"]) == ("claim", enc.visit.visit_id)
    items = rows(
        db,
        "SELECT ci.status, ci.quantity_provided, pi.price FROM iclm_claim_item ci "
        "JOIN iclm_provided_item pi ON pi.iclm_provided_item_id = ci.item WHERE ci.claim = %s ORDER BY pi.price",
        claim["iclm_claim_id"],
    )
    assert [(i["quantity_provided"], i["price"], i["status"]) for i in items] == [
        (10, Decimal("35.00"), "PASSED"),
        (1, Decimal("400.00"), "PASSED"),
        (1, Decimal("650.00"), "PASSED"),
    ]
    assert len(rows(db, "SELECT 1 FROM iclm_claim_diagnosis WHERE claim = %s", claim["iclm_claim_id"])) == 1
    bill = rows(db, "SELECT payment_type FROM iclm_bill WHERE iclm_bill_id = %s", claim["bill"])[0]
    assert bill["payment_type"] == "INSURANCE_CLAIM"
    assert openimis_claims(OpenImis(full_stack.stack), code) == 1
    assert ledger(db, enc.uuid)["state"] == "checked"  # type: ignore[index]

    tail.wait("reply and audit bundle", lambda _: bool(tail.of(REPLIES, code) and tail.of(AUDIT, code)))
    reply = tail.of(REPLIES, code)[-1].value
    assert reply["schema"] == "cdc-claims.reply/v1"
    assert reply["response"]["iclm_status"] == "CHECKED" and reply["response"]["openimis_status"] == 4
    assert {line["status"] for line in reply["response"]["lines"]} == {"PASSED"}
    assert reply["timings"]["submit_seconds"] > 0
    bundle = tail.of(AUDIT, code)[-1].value
    resources = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    assert {"Claim", "Patient", "Encounter", "Condition", "Coverage", "Practitioner", "Location"} <= set(resources)
    assert "name" not in resources["Patient"]  # no patient names leave the hospital


def test_several_saves_inside_the_settle_window_give_one_claim_with_the_final_content(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
) -> None:
    db = full_stack.mariadb
    patient = sim.create_patient(INSUREES[1], gender="M")
    visit = sim.start_visit(patient)
    first = sim.save_consultation(
        visit, diagnoses=[Dx(HYPERTHYROIDISM, "PROVISIONAL")], drugs=[Drug(METFORMIN, 10), Drug(NIFEDIPINE, 5)]
    )
    metformin, nifedipine = first.orders
    with sim.save(first) as save:  # the doctor edits the same encounter: confirms, revises, stops, adds
        save.edit_diagnosis_certainty(first.diagnoses[0], "CONFIRMED")
        save.revise_drug(metformin, 30)
        save.discontinue_order(nifedipine)
        save.add_order("radiology", CHEST_PA)
    assert save.result.encounter_id == first.encounter_id

    claim = wait_for("iclm_claim row", lambda: claim_rows(db, first.encounter_id))[0]
    lines = rows(
        db,
        "SELECT pi.price, ci.quantity_provided FROM iclm_claim_item ci "
        "JOIN iclm_provided_item pi ON pi.iclm_provided_item_id = ci.item WHERE ci.claim = %s ORDER BY pi.price",
        claim["iclm_claim_id"],
    )
    assert [(line["price"], line["quantity_provided"]) for line in lines] == [
        (Decimal("40.00"), 30),  # the revised quantity, not the first one
        (Decimal("400.00"), 1),
        (Decimal("3250.00"), 1),  # the test added in the second Save
    ]  # and no Nifedipine line: discontinued in the second Save
    assert claim["claimed_total"] == Decimal("4850.00")
    assert openimis_claims(OpenImis(full_stack.stack), claim["claim_code"]) == 1
    assert len(claim_rows(db, first.encounter_id)) == 1


def test_a_bahmni_procedure_order_is_claimed_as_a_service(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db = full_stack.mariadb
    visit = sim.start_visit(sim.create_patient(INSUREES[0], gender="M"))
    enc = sim.save_consultation(visit, diagnoses=[Dx(HYPERTHYROIDISM)])
    sim.add_procedure_order(enc, APPENDECTOMY)  # Bahmni 1.0 "Procedure Order", its own Save
    claim = wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
    prices = rows(
        db,
        "SELECT pi.price FROM iclm_claim_item ci JOIN iclm_provided_item pi ON pi.iclm_provided_item_id = ci.item"
        " WHERE ci.claim = %s ORDER BY pi.price",
        claim["iclm_claim_id"],
    )
    assert [p["price"] for p in prices] == [Decimal("400.00"), Decimal("21000.00")]
    assert claim["claimed_total"] == Decimal("21400.00")


def test_a_diagnosis_revised_in_a_later_encounter_is_claimed_there_and_reported_on_the_first(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, tail: Tail
) -> None:
    db = full_stack.mariadb
    patient = sim.create_patient(INSUREES[1], gender="F")
    first = sim.save_consultation(sim.start_visit(patient), diagnoses=[Dx(HYPERTHYROIDISM)])
    wait_ledger(db, first.uuid, "checked")
    follow_up = sim.start_visit(patient)  # a later visit: a new encounter
    later = sim.revise_diagnosis_in_later_encounter(first.diagnoses[0], follow_up, Dx(DIABETES_II))
    assert first.encounter_id in later.touched_encounter_ids  # one transaction, two encounters

    claim = wait_for("claim of the later encounter", lambda: claim_rows(db, later.encounter_id))[0]
    dx = rows(
        db,
        "SELECT c.uuid FROM iclm_claim_diagnosis d JOIN concept c ON c.concept_id = d.concept WHERE d.claim = %s",
        claim["iclm_claim_id"],
    )
    assert [d["uuid"] for d in dx] == [DIABETES_II]
    first_code = claim_code_of(first.uuid)
    tail.wait("notice on the first encounter", lambda _: bool(tail.of(HELD, first_code)))
    notice = tail.of(HELD, first_code)[-1].value
    assert (notice["kind"], notice["reason"]) == ("notice", "no_diagnosis")  # its only diagnosis was revised
    assert ledger(db, first.uuid)["state"] == "checked"  # type: ignore[index]  # openIMIS keeps the first claim


def test_uninsured_patient_is_held_visibly_then_claimed_when_the_insurance_number_arrives(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
    tail: Tail,
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim, insurance=None)
    held = wait_ledger(db, enc.uuid, "held")
    assert held["reason"] == "uninsured"
    tail.wait("held notice", lambda _: bool(tail.of(HELD, enc.uuid)))
    notice = tail.of(HELD, enc.uuid)[-1].value
    assert (notice["reason"], notice["kind"]) == ("uninsured", "held")
    assert not claim_rows(db, enc.encounter_id)
    assert openimis_claims(OpenImis(full_stack.stack), claim_code_of(enc.uuid)) == 0

    conn = db.connect("cdc_admin")  # registration adds the openIMIS number (ExternalId identifier)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id,"
            " creator, date_created, voided, uuid) SELECT %s, %s, patient_identifier_type_id, 0, 1, 1, NOW(), 0,"
            " UUID() FROM patient_identifier_type WHERE uuid = %s",
            (enc.visit.patient_id, INSUREES[2], "ee8e82c4-1563-43aa-8c73-c3e4e88cb79b"),
        )
    conn.commit()
    conn.close()
    claim = wait_for("iclm_claim row after the number arrived", lambda: claim_rows(db, enc.encounter_id))[0]
    assert claim["status"] == "CHECKED"
    assert ledger(db, enc.uuid)["state"] == "checked"  # type: ignore[index]


def test_free_text_diagnosis_only_is_held_for_lack_of_an_icd_code(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim, dx=Dx(text="pain in the knee"))
    held = wait_ledger(db, enc.uuid, "held")
    assert held["reason"] == "no_diagnosis"
    assert not claim_rows(db, enc.encounter_id)


def test_encounter_voided_before_it_settled_is_cancelled_and_never_sent(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim)
    sim.void_encounter(enc)
    row = wait_ledger(db, enc.uuid, "cancelled", "checked")
    assert row["state"] == "cancelled", "the void arrived inside the 1.5 s window: nothing may be sent"
    assert openimis_claims(OpenImis(full_stack.stack), claim_code_of(enc.uuid)) == 0


def test_a_later_status_change_in_openimis_flows_back_to_the_billing_tables(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim, insurance=INSUREES[3], qty=4)
    claim = wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
    conn = db.connect("cdc_reader", autocommit=True)
    try:
        assert encounter_billing_state(conn, enc.uuid) == "pending"
    finally:
        conn.close()
    OpenImis(full_stack.stack).process_claim(claim["claim_code"])  # a medical officer processes it
    final = wait_for(
        "processed status in iclm_claim",
        lambda: [r for r in claim_rows(db, enc.encounter_id) if r["status"] in ("PROCESSED", "VALUATED")],
    )[0]
    assert final["approved_total"] == Decimal("1190.00")  # 400 + 650 + 4 x 35
    assert final["date_processed"] is not None
    conn = db.connect("cdc_reader", autocommit=True)
    try:
        assert encounter_billing_state(conn, enc.uuid) == "reimbursed"
    finally:
        conn.close()
    assert ledger(db, enc.uuid)["state"] in ("processed", "valuated")  # type: ignore[index]


def test_a_claim_openimis_rejects_reads_denied_with_the_reason_on_every_line(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db = full_stack.mariadb
    _, enc = consultation(sim, insurance=NOT_COVERED)
    claim = wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
    assert (claim["status"], claim["rejection_reason"]) == ("REJECTED", "7 FAMILY")
    items = rows(db, "SELECT status, rejection_reason FROM iclm_claim_item WHERE claim = %s", claim["iclm_claim_id"])
    assert {(i["status"], i["rejection_reason"]) for i in items} == {("REJECTED", "7 FAMILY")}
    conn = db.connect("cdc_reader", autocommit=True)
    try:
        assert encounter_billing_state(conn, enc.uuid) == "denied"
    finally:
        conn.close()
    assert ledger(db, enc.uuid)["state"] == "rejected"  # type: ignore[index]
    consumer_metrics = httpx.get(f"http://127.0.0.1:{sidecar.metrics_ports['consumer']}/metrics").text
    assert 'cdc_claims_payer_checks_total{check="coverage",outcome="warn"}' in consumer_metrics  # it was announced


def test_malformed_change_event_goes_to_the_dead_letter_topic_with_its_reason(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
    tail: Tail,
) -> None:
    producer = KafkaProducer(bootstrap_servers=full_stack.bootstrap)
    producer.send("openmrs.openmrs.obs", key=b'{"obs_id": -1}', value=b"{this is not json")
    producer.flush()
    producer.close()
    tail.wait("dead letter", lambda _: any(m.value == b"{this is not json" for m in tail.of(DLQ)))
    letter = next(m for m in tail.of(DLQ) if m.value == b"{this is not json")
    assert letter.headers["cdc-claims-reason"].startswith(b"invalid_json")
    assert letter.headers["cdc-claims-source"].startswith(b"openmrs.openmrs.obs/0/")
    _, enc = consultation(sim)  # and the pipeline keeps going
    wait_for("claim after the bad record", lambda: claim_rows(full_stack.mariadb, enc.encounter_id))


def test_held_claims_are_rerun_by_the_command_once_the_mapping_is_fixed(
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
    tmp_path: Path,
) -> None:
    db = full_stack.mariadb
    patient = sim.create_patient(INSUREES[0], gender="F")
    enc = sim.save_consultation(
        sim.start_visit(patient), diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(UNMAPPED_DRUG, 1)]
    )
    held = wait_ledger(db, enc.uuid, "held")
    assert held["reason"] == "unmapped_line" and UNMAPPED_DRUG in held["detail"]

    fixed = yaml.safe_load(DEMO_MAPPING.read_text())
    fixed["drugs"][UNMAPPED_DRUG] = {"code": "0001", "price": 10, "uuid": "71efb78b-64ee-4a68-be29-87daf566eb20"}
    out = run_cli(sidecar, fixed, tmp_path, "rerun-held", "--unit", enc.uuid)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted" in out.stdout
    assert wait_ledger(db, enc.uuid, "checked")["claim_code"] == claim_code_of(enc.uuid)
    wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))


def test_every_role_serves_metrics_health_and_readiness(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    _, enc = consultation(sim)
    wait_for("iclm_claim row", lambda: claim_rows(full_stack.mariadb, enc.encounter_id))
    for role, port in sidecar.metrics_ports.items():
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200, role
        text = httpx.get(f"{base}/metrics", timeout=5).text
        assert "cdc_claims_submit_duration_seconds_bucket" in text
    consumer = httpx.get(f"http://127.0.0.1:{sidecar.metrics_ports['consumer']}/metrics", timeout=5).text
    submitted = [line for line in consumer.splitlines() if line.startswith("cdc_claims_claims_submitted_total ")]
    assert submitted and float(submitted[0].split()[1]) >= 1
    assert 'cdc_claims_change_events_consumed_total{table="obs"}' in consumer
    assert 'cdc_claims_consumer_lag_records{partition="0",topic="openmrs.transaction"}' in consumer
    poller = httpx.get(f"http://127.0.0.1:{sidecar.metrics_ports['poller']}/metrics", timeout=5).text
    assert 'cdc_claims_held_claims{reason="uninsured"}' in poller
    writer = httpx.get(f"http://127.0.0.1:{sidecar.metrics_ports['writer']}/metrics", timeout=5).text
    assert 'cdc_claims_replies_written_total{status="CHECKED"}' in writer
    assert "cdc_claims_end_to_end_latency_seconds_count" in writer


def test_check_mapping_command_lists_what_the_database_uses_and_the_mapping_lacks(
    sidecar: Sidecar, tmp_path: Path
) -> None:
    reduced = yaml.safe_load(DEMO_MAPPING.read_text())
    del reduced["drugs"][NIFEDIPINE]  # the Bahmni demo DB has Nifedipine orders
    out = run_cli(sidecar, reduced, tmp_path, "check-mapping")
    assert out.returncode == 1, out.stdout + out.stderr
    assert NIFEDIPINE in out.stdout
