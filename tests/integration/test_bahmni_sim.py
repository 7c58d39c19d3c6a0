"""The Bahmni save simulator writes the row shapes of DATA_MODEL.md §2.2 / §3.1 / §5.

Needs a MariaDB with the Bahmni 0.94 demo DB + iclm schema (see cdc_dev.bahmni_testdb).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sql_support import q

from cdc_claims.db import Connection
from cdc_dev.bahmni import BahmniSim, Drug, Dx, EncounterRef
from cdc_dev.bahmni_testdb import admin_factory

pytestmark = pytest.mark.integration

HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"
HYPERTENSION = "e4a391e6-4e14-11e4-8a57-0800271c1b75"
NIFEDIPINE_5MG = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
METHIMAZOLE = "5d3aa389-a44e-410d-9525-30af971b096c"
THYROID_FUNCTION = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"
FASTING_BLOOD_SUGAR = "38e31e15-e017-45a2-a5ae-a6f70ba1799a"
CHEST_AP = "c425d233-3f10-11e4-adec-0800271c1b75"
APPENDECTOMY = "70de1c00-d244-4649-b413-bc7893ead902"
OTHER_PROVIDER = "df17bca9-ff9b-4a73-bac7-f302fc688974"  # demo provider of user "automation"

COUNTED = (
    "visit",
    "visit_attribute",
    "encounter",
    "encounter_provider",
    "obs",
    "orders",
    "drug_order",
    "event_records",
    "encounter_diagnosis",
)


@pytest.fixture(scope="module")
def sim() -> BahmniSim:
    return BahmniSim(admin_factory())


def one(conn: Connection, sql: str, *args: Any) -> dict[str, Any]:
    rows = q(conn, sql, *args)
    assert len(rows) == 1, rows
    return rows[0]


def counts(conn: Connection, patient_id: int) -> dict[str, int]:
    """Rows of one patient per table (event_records: by encounter uuid of this patient)."""
    out: dict[str, int] = {}
    for table in COUNTED:
        if table == "visit":
            sql = "SELECT COUNT(*) n FROM visit WHERE patient_id = %s"
        elif table == "visit_attribute":
            sql = "SELECT COUNT(*) n FROM visit_attribute a JOIN visit v USING (visit_id) WHERE v.patient_id = %s"
        elif table in ("encounter_provider",):
            sql = f"SELECT COUNT(*) n FROM {table} x JOIN encounter e USING (encounter_id) WHERE e.patient_id = %s"
        elif table == "obs":
            sql = "SELECT COUNT(*) n FROM obs WHERE person_id = %s"
        elif table == "drug_order":
            sql = "SELECT COUNT(*) n FROM drug_order d JOIN orders o USING (order_id) WHERE o.patient_id = %s"
        elif table == "event_records":
            sql = (
                "SELECT COUNT(*) n FROM event_records r JOIN encounter e"
                " ON r.object LIKE CONCAT('%%', e.uuid, '%%') WHERE e.patient_id = %s"
            )
        else:
            sql = f"SELECT COUNT(*) n FROM {table} WHERE patient_id = %s"
        out[table] = int(one(conn, sql, patient_id)["n"])
    return out


def dx_members(conn: Connection, group_obs_id: int) -> dict[str, dict[str, Any]]:
    rows = q(
        conn,
        "SELECT o.*, n.name AS concept_name FROM obs o JOIN concept_name n ON n.concept_id = o.concept_id"
        " AND n.locale = 'en' AND n.concept_name_type = 'FULLY_SPECIFIED' WHERE o.obs_group_id = %s AND o.voided = 0",
        group_obs_id,
    )
    return {str(r["concept_name"]): r for r in rows}


def concept_name(conn: Connection, concept_id: int) -> str:
    return str(
        one(
            conn,
            "SELECT name FROM concept_name WHERE concept_id = %s AND locale = 'en'"
            " AND concept_name_type = 'FULLY_SPECIFIED'",
            concept_id,
        )["name"]
    )


def consultation(sim: BahmniSim) -> EncounterRef:
    patient = sim.create_patient("CHF-SIM-1")
    visit = sim.start_visit(patient)
    return sim.save_consultation(
        visit,
        diagnoses=[Dx(HYPERTHYROIDISM, "PROVISIONAL", primary=True), Dx(text="odd rash", primary=False)],
        drugs=[Drug(NIFEDIPINE_5MG, 2), Drug(METHIMAZOLE, 84)],
        labs=[THYROID_FUNCTION],
        radiology=[CHEST_AP],
        procedures_obs=[APPENDECTOMY],
    )


def test_create_patient_has_primary_and_external_identifiers(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-000123")
    rows = q(
        db,
        "SELECT t.uuid, t.name, i.identifier, i.preferred FROM patient_identifier i"
        " JOIN patient_identifier_type t ON t.patient_identifier_type_id = i.identifier_type WHERE i.patient_id = %s",
        patient.patient_id,
    )
    by_type = {r["uuid"]: r for r in rows}
    assert by_type["ee8e82c4-1563-43aa-8c73-c3e4e88cb79b"]["identifier"] == "CHF-000123"
    primary = by_type["81433852-3f10-11e4-adec-0800271c1b75"]
    assert primary["identifier"] == patient.identifier and primary["preferred"] == 1
    assert patient.identifier.startswith("GAN")
    uninsured = sim.create_patient(None)
    assert len(q(db, "SELECT 1 FROM patient_identifier WHERE patient_id = %s", uninsured.patient_id)) == 1
    assert patient.committed_at > 0


def test_consultation_save_writes_bahmni_rows(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    e = one(db, "SELECT * FROM encounter WHERE encounter_id = %s", enc.encounter_id)
    assert enc.created and e["date_changed"] is None and e["visit_id"] == enc.visit.visit_id
    assert one(db, "SELECT name FROM encounter_type WHERE encounter_type_id = %s", e["encounter_type"])["name"] == (
        "Consultation"
    )
    assert len(q(db, "SELECT 1 FROM encounter_provider WHERE encounter_id = %s", enc.encounter_id)) == 1

    coded, free = enc.diagnoses
    members = dx_members(db, coded.group_obs_id)
    assert members["Coded Diagnosis"]["value_coded"] == coded.concept_id
    assert concept_name(db, members["Diagnosis Certainty"]["value_coded"]) == "Presumed"
    assert concept_name(db, members["Diagnosis order"]["value_coded"]) == "Primary"
    assert members["Bahmni Initial Diagnosis"]["value_text"] == coded.group_uuid
    assert concept_name(db, members["Bahmni Diagnosis Revised"]["value_coded"]) == "False"
    free_members = dx_members(db, free.group_obs_id)
    assert free_members["Non-coded Diagnosis"]["value_text"] == "odd rash"
    assert concept_name(db, free_members["Diagnosis order"]["value_coded"]) == "Secondary"

    orders = q(
        db,
        "SELECT o.*, t.name AS type_name, d.quantity, d.drug_inventory_id, c.care_setting_type FROM orders o"
        " JOIN order_type t ON t.order_type_id = o.order_type_id"
        " JOIN care_setting c ON c.care_setting_id = o.care_setting"
        " LEFT JOIN drug_order d ON d.order_id = o.order_id WHERE o.encounter_id = %s ORDER BY o.order_id",
        enc.encounter_id,
    )
    assert [o["type_name"] for o in orders] == ["Drug Order", "Drug Order", "Lab Order", "Radiology Order"]
    assert [o["quantity"] for o in orders[:2]] == [2.0, 84.0]
    assert all(o["order_action"] == "NEW" and o["care_setting_type"] == "OUTPATIENT" for o in orders)
    assert len({o["order_number"] for o in orders}) == 4 and all(o["order_number"].startswith("ORD-") for o in orders)
    proc = enc.obs[0]
    assert one(db, "SELECT uuid FROM concept WHERE concept_id = (SELECT value_coded FROM obs WHERE obs_id = %s)",
               proc.obs_id)["uuid"] == APPENDECTOMY  # fmt: skip

    status = one(
        db,
        "SELECT a.value_reference FROM visit_attribute a JOIN visit_attribute_type t"
        " ON t.visit_attribute_type_id = a.attribute_type_id WHERE a.visit_id = %s AND t.name = 'Visit Status'",
        enc.visit.visit_id,
    )
    assert status["value_reference"] == "OPD"
    events = q(db, "SELECT category FROM event_records WHERE object LIKE %s", f"%{enc.uuid}%")
    assert [r["category"] for r in events] == ["Encounter"]


def test_second_save_in_session_reuses_encounter_untouched(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-2")
    visit = sim.start_visit(patient)
    first = sim.save_consultation(visit, diagnoses=[Dx(HYPERTHYROIDISM)], labs=[THYROID_FUNCTION])
    before = counts(db, patient.patient_id)
    second = sim.save_consultation(visit, labs=[FASTING_BLOOD_SUGAR], drugs=[Drug(METHIMAZOLE, 30)])
    after = counts(db, patient.patient_id)

    assert second.encounter_id == first.encounter_id and not second.created
    # exactly the rows of one Save: 2 orders, 1 drug_order, 1 event; no new encounter/provider/visit rows
    delta = {t: after[t] - before[t] for t in COUNTED}
    assert delta == {
        "visit": 0,
        "visit_attribute": 0,
        "encounter": 0,
        "encounter_provider": 0,
        "obs": 0,
        "orders": 2,
        "drug_order": 1,
        "event_records": 1,
        "encounter_diagnosis": 0,
    }
    e = one(db, "SELECT date_changed, changed_by FROM encounter WHERE encounter_id = %s", first.encounter_id)
    assert e["date_changed"] is None and e["changed_by"] is None
    assert second.committed_at >= first.committed_at > 0


def test_save_for_patient_creates_visit_in_same_transaction(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-3")
    before = counts(db, patient.patient_id)
    enc = sim.save_consultation(patient, diagnoses=[Dx(HYPERTENSION)])
    after = counts(db, patient.patient_id)
    assert after["visit"] - before["visit"] == 1 and after["encounter"] - before["encounter"] == 1
    assert after["visit_attribute"] - before["visit_attribute"] == 1
    again = sim.save_consultation(patient, labs=[THYROID_FUNCTION])
    assert again.visit.visit_id == enc.visit.visit_id and again.encounter_id == enc.encounter_id


def test_failed_save_writes_nothing(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-4")
    visit = sim.start_visit(patient)
    before = counts(db, patient.patient_id)
    with pytest.raises(LookupError):
        sim.save_consultation(visit, diagnoses=[Dx(HYPERTENSION)], labs=["00000000-0000-0000-0000-000000000000"])
    assert counts(db, patient.patient_id) == before


def test_edit_certainty_reversions_member_only(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    dx = enc.diagnoses[0]
    old = dx_members(db, dx.group_obs_id)["Diagnosis Certainty"]
    edit = sim.edit_diagnosis_certainty(dx, "CONFIRMED")
    new = dx_members(db, dx.group_obs_id)["Diagnosis Certainty"]
    assert new["obs_id"] == edit.obs[0].obs_id and new["previous_version"] == old["obs_id"]
    assert new["status"] == "AMENDED" and new["obs_group_id"] == dx.group_obs_id
    assert concept_name(db, new["value_coded"]) == "Confirmed"
    voided = one(db, "SELECT voided, void_reason, date_voided FROM obs WHERE obs_id = %s", old["obs_id"])
    assert voided["voided"] == 1 and voided["void_reason"] and voided["date_voided"] is not None
    group = one(db, "SELECT voided FROM obs WHERE obs_id = %s", dx.group_obs_id)
    assert group["voided"] == 0
    assert (
        one(db, "SELECT date_changed FROM encounter WHERE encounter_id = %s", enc.encounter_id)["date_changed"] is None
    )


def test_revise_and_discontinue_orders(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    nifedipine, methimazole, lab = enc.orders[0], enc.orders[1], enc.orders[2]
    revised = sim.revise_drug(nifedipine, 10).orders[0]
    row = one(
        db,
        "SELECT o.*, d.quantity, d.drug_inventory_id FROM orders o JOIN drug_order d USING (order_id)"
        " WHERE o.order_id = %s",
        revised.order_id,
    )
    assert row["order_action"] == "REVISE" and row["previous_order_id"] == nifedipine.order_id
    assert row["quantity"] == 10.0 and row["drug_inventory_id"] == nifedipine.drug_id
    old = one(db, "SELECT date_stopped FROM orders WHERE order_id = %s", nifedipine.order_id)
    assert old["date_stopped"] is not None and old["date_stopped"] < row["date_activated"]

    # another clinician's encounter of the same visit (the matcher is per provider) discontinues
    other = BahmniSim(admin_factory(), provider_uuid=OTHER_PROVIDER)
    later = other.save_consultation(enc.visit, labs=[FASTING_BLOOD_SUGAR])
    assert later.created and later.encounter_id != enc.encounter_id
    stop = sim.discontinue_order(methimazole, in_encounter=later).orders[0]
    stop_row = one(
        db,
        "SELECT o.order_action, o.previous_order_id, o.encounter_id, d.drug_inventory_id, d.quantity FROM orders o"
        " LEFT JOIN drug_order d USING (order_id) WHERE o.order_id = %s",
        stop.order_id,
    )
    assert stop_row["order_action"] == "DISCONTINUE" and stop_row["previous_order_id"] == methimazole.order_id
    assert stop_row["encounter_id"] == later.encounter_id and stop_row["drug_inventory_id"] == methimazole.drug_id
    assert stop_row["quantity"] is None
    assert one(db, "SELECT date_stopped FROM orders WHERE order_id = %s", methimazole.order_id)["date_stopped"]
    lab_stop = sim.discontinue_order(lab).orders[0]
    assert len(q(db, "SELECT 1 FROM drug_order WHERE order_id = %s", lab_stop.order_id)) == 0

    # Q4 of queries_claim_extraction.sql: the active orders of the original encounter
    active = q(
        db,
        "SELECT o.order_id FROM orders o WHERE o.encounter_id = %s AND o.voided = 0 AND o.order_action <> 'DISCONTINUE'"
        " AND NOT EXISTS (SELECT 1 FROM orders c WHERE c.previous_order_id = o.order_id AND c.voided = 0)",
        enc.encounter_id,
    )
    assert {r["order_id"] for r in active} == {revised.order_id, enc.orders[3].order_id}
    with pytest.raises(ValueError, match="not active"):
        sim.revise_drug(nifedipine, 3)


def test_void_diagnosis_voids_group_and_members(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    dx = enc.diagnoses[1]
    sim.void_diagnosis(dx)
    rows = q(db, "SELECT voided, void_reason FROM obs WHERE obs_id = %s OR obs_group_id = %s", dx.group_obs_id,
             dx.group_obs_id)  # fmt: skip
    assert len(rows) == 6 and all(r["voided"] == 1 for r in rows)
    assert len(dx_members(db, enc.diagnoses[0].group_obs_id)) == 5  # the other diagnosis is intact


def test_revise_diagnosis_in_later_encounter_touches_both(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-5")
    first_visit = sim.start_visit(patient)
    first = sim.save_consultation(first_visit, diagnoses=[Dx(HYPERTHYROIDISM, "PROVISIONAL")])
    sim.close_visit(first_visit)
    second_visit = sim.start_visit(patient)
    later = sim.revise_diagnosis_in_later_encounter(first.diagnoses[0], second_visit, Dx(HYPERTHYROIDISM))

    assert later.encounter_id != first.encounter_id
    assert set(later.touched_encounter_ids) == {first.encounter_id, later.encounter_id}
    new_group = later.diagnoses[0]
    assert new_group.encounter_id == later.encounter_id
    assert (
        dx_members(db, new_group.group_obs_id)["Bahmni Initial Diagnosis"]["value_text"]
        == first.diagnoses[0].group_uuid
    )
    revised = dx_members(db, first.diagnoses[0].group_obs_id)["Bahmni Diagnosis Revised"]
    assert concept_name(db, revised["value_coded"]) == "True"
    assert revised["encounter_id"] == first.encounter_id and revised["status"] == "AMENDED"
    assert revised["previous_version"] is not None
    for enc_id in (first.encounter_id, later.encounter_id):
        assert one(db, "SELECT date_changed FROM encounter WHERE encounter_id = %s", enc_id)["date_changed"] is None


def test_void_encounter_cascades_without_event(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    sim.add_encounter_diagnosis(enc, HYPERTHYROIDISM)
    events_before = len(q(db, "SELECT 1 FROM event_records WHERE object LIKE %s", f"%{enc.uuid}%"))
    sim.void_encounter(enc)
    for table in ("obs", "orders", "encounter_provider", "encounter_diagnosis"):
        rows = q(db, f"SELECT voided, void_reason FROM {table} WHERE encounter_id = %s", enc.encounter_id)
        assert rows and all(r["voided"] == 1 and r["void_reason"] == "Deleted" for r in rows), table
    e = one(db, "SELECT voided, date_changed FROM encounter WHERE encounter_id = %s", enc.encounter_id)
    assert e["voided"] == 1 and e["date_changed"] is not None
    assert len(q(db, "SELECT 1 FROM event_records WHERE object LIKE %s", f"%{enc.uuid}%")) == events_before


def test_close_visit_sets_date_stopped(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-6")
    visit = sim.start_visit(patient)
    assert one(db, "SELECT date_stopped FROM visit WHERE visit_id = %s", visit.visit_id)["date_stopped"] is None
    assert sim.close_visit(visit) > 0
    assert one(db, "SELECT date_stopped FROM visit WHERE visit_id = %s", visit.visit_id)["date_stopped"] is not None


def test_fhir_path_encounter_diagnosis_and_procedure_order(sim: BahmniSim, db: Connection) -> None:
    patient = sim.create_patient("CHF-SIM-7")
    enc = sim.save_consultation(patient, labs=[THYROID_FUNCTION])
    ref = sim.add_encounter_diagnosis(enc, HYPERTHYROIDISM, certainty="PROVISIONAL")
    rank_col = "dx_rank" if q(db, "SHOW COLUMNS FROM encounter_diagnosis LIKE 'dx_rank'") else "rank"
    row = one(db, f"SELECT *, `{rank_col}` AS r FROM encounter_diagnosis WHERE diagnosis_id = %s", ref.diagnosis_id)
    assert row["r"] == 1 and row["certainty"] == "PROVISIONAL" and row["encounter_id"] == enc.encounter_id
    free = sim.add_encounter_diagnosis(enc, text="strange cough")
    assert one(db, "SELECT diagnosis_non_coded FROM encounter_diagnosis WHERE diagnosis_id = %s", free.diagnosis_id)[
        "diagnosis_non_coded"
    ] == ("strange cough")

    proc = sim.add_procedure_order(enc.visit, APPENDECTOMY).orders[0]
    t = one(
        db,
        "SELECT t.name, t.java_class_name FROM orders o JOIN order_type t ON t.order_type_id = o.order_type_id"
        " WHERE o.order_id = %s",
        proc.order_id,
    )
    assert t == {"name": "Procedure Order", "java_class_name": "org.openmrs.Order"}
    assert sim.ensure_procedure_order_type() == sim.ensure_procedure_order_type()
    assert len(q(db, "SELECT 1 FROM order_type WHERE name = 'Procedure Order'")) == 1


def test_multi_edit_save_is_one_transaction(sim: BahmniSim, db: Connection) -> None:
    enc = consultation(sim)
    before = counts(db, enc.visit.patient_id)
    with sim.save(enc) as s:
        s.edit_diagnosis_certainty(enc.diagnoses[0], "CONFIRMED")
        s.revise_drug(enc.orders[0], Decimal(6))
        s.add_order("lab", FASTING_BLOOD_SUGAR)
    after = counts(db, enc.visit.patient_id)
    delta = {t: after[t] - before[t] for t in COUNTED if after[t] != before[t]}
    assert delta == {"obs": 1, "orders": 2, "drug_order": 1, "event_records": 1}
    assert s.result.committed_at > 0 and len(s.result.orders) == 2
