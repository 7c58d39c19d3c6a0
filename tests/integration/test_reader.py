"""OpenMrsReader against a real MariaDB holding the Bahmni 0.94 demo DB (+ insuranceclaims DDL).

No mocks. Connection by environment (defaults: the scratch instance of the reader's author):

* ``CDC_TEST_MYSQL_HOST`` (127.0.0.1), ``CDC_TEST_MYSQL_PORT`` (33307), ``CDC_TEST_MYSQL_DB`` (openmrs);
* ``CDC_TEST_MYSQL_READER_USER`` / ``_PASSWORD`` (cdc_reader): SELECT only, what the reader gets;
* ``CDC_TEST_MYSQL_WRITER_USER`` / ``_PASSWORD`` (cdc_test): SELECT, INSERT, UPDATE, DELETE on the
  OpenMRS tables, used only to write the test's own rows.

The scenario rows are written the way Bahmni writes them (DATA_MODEL §3.3, §4, §5): one
transaction per "save", fresh uuids every run, and they are deleted again afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
import pytest

from cdc_claims.assemble.reader import OpenMrsReader, ReaderConfig
from cdc_claims.db import connection_factory
from cdc_claims.errors import ConfigError, NotClaimable, SourceUnavailable
from cdc_claims.mapping.apply import build_draft
from cdc_claims.mapping.check import check_mapping, render_text
from cdc_claims.mapping.model import AttachmentsSection, ClaimMapping, DocumentRule, load_mapping
from cdc_claims.mapping.reading import reader_config
from cdc_dev.base import Ports

pytestmark = pytest.mark.integration

DEMO_MAPPING = Path(__file__).resolve().parents[2] / "examples" / "mapping.yaml"

HOST = os.environ.get("CDC_TEST_MYSQL_HOST", "127.0.0.1")
CONSULTATION_NOTE = "81d6e852-3f10-11e4-adec-0800271c1b75"  # concept 'Consultation Note'
PORT = int(os.environ.get("CDC_TEST_MYSQL_PORT", str(Ports().mariadb)))
DB = os.environ.get("CDC_TEST_MYSQL_DB", "openmrs")
READER = (
    os.environ.get("CDC_TEST_MYSQL_READER_USER", "cdc_reader"),
    os.environ.get("CDC_TEST_MYSQL_READER_PASSWORD", "cdc_reader"),
)
WRITER = (
    os.environ.get("CDC_TEST_MYSQL_WRITER_USER", "cdc_admin"),
    os.environ.get("CDC_TEST_MYSQL_WRITER_PASSWORD", "cdc_admin"),
)

# Bahmni 0.94 uuids (DATA_MODEL §3.1, §8.1)
VISIT_DX, CODED, NON_CODED = (
    "81c5840e-3f10-11e4-adec-0800271c1b75",
    "81c7149b-3f10-11e4-adec-0800271c1b75",
    "81c66271-3f10-11e4-adec-0800271c1b75",
)
CERTAINTY, CONFIRMED, PRESUMED = (
    "81c7d52c-3f10-11e4-adec-0800271c1b75",
    "81c90d57-3f10-11e4-adec-0800271c1b75",
    "81c88f93-3f10-11e4-adec-0800271c1b75",
)
DX_ORDER, PRIMARY, SECONDARY = (
    "81c9da5f-3f10-11e4-adec-0800271c1b75",
    "81cafebe-3f10-11e4-adec-0800271c1b75",
    "81ca9451-3f10-11e4-adec-0800271c1b75",
)
STATUS, RULED_OUT = "82389c0c-3f10-11e4-adec-0800271c1b75", "823051c4-3f10-11e4-adec-0800271c1b75"
INITIAL, REVISED = "82397881-3f10-11e4-adec-0800271c1b75", "823a4d34-3f10-11e4-adec-0800271c1b75"
TRUE, FALSE = "78763e68-104e-465d-8ce3-35f9edfb083d", "f9f633a5-1544-4c44-9394-a7f746a12dff"
HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"  # E05.90
DIABETES_II = "de0be4e3-4e14-11e4-8a57-0800271c1b75"  # E11.9
HYPERTENSION = "e4a391e6-4e14-11e4-8a57-0800271c1b75"  # no ICD map
OPERATIVE_PROCEDURE = "243d25b1-9d6e-4883-86f0-ed3a34c83ab4"
PROCEDURE_ANSWER = "d44c70cb-25c8-4407-976b-a1383dbca3d5"  # an answer of "Operative Notes, Procedure"
THYROID_FUNCTION = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"
NIFEDIPINE, NIFEDIPINE_5MG = "251a17f9-c229-4aee-9555-9bf7620b2a5a", "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
METHIMAZOLE, METHIMAZOLE_DRUG = "095d1d67-1f62-4731-aa4e-a76bb77f2fa9", "5d3aa389-a44e-410d-9525-30af971b096c"
CONSULTATION_TYPE = "81852aee-3f10-11e4-adec-0800271c1b75"
OPD = "c22a5000-3f10-11e4-adec-0800271c1b75"
OPD_1 = "c58e12ed-3f12-11e4-adec-0800271c1b75"
GENERAL_WARD_ROOM_2 = "e48fb2b3-d490-11e5-b193-0800270d80ce"  # child of General Ward (a Visit Location)
GENERAL_WARD = "baf7bd38-d225-11e4-9c67-080027b662ec"
EXTERNAL_ID = "ee8e82c4-1563-43aa-8c73-c3e4e88cb79b"
DRUG_ORDER_TYPE, LAB_ORDER_TYPE = "131168f4-15f5-102d-96e4-000c29c2a5d7", "8189b409-3f10-11e4-adec-0800271c1b75"
PROVIDER = "c1c26908-3f10-11e4-adec-0800271c1b75"

ENC5 = "20ed758c-09ff-4b02-8a06-228f6ddfacd2"


def _connect(user: tuple[str, str]) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=HOST, port=PORT, user=user[0], password=user[1], database=DB, autocommit=False)


@pytest.fixture(scope="module")
def mapping() -> ClaimMapping:
    return load_mapping(DEMO_MAPPING)


@pytest.fixture(scope="module")
def reader(mapping: ClaimMapping) -> OpenMrsReader:
    r = OpenMrsReader(
        connection_factory(host=HOST, port=PORT, user=READER[0], password=READER[1], database=DB),
        reader_config(mapping),
    )
    r.resolve()
    return r


# ---- the demo data as shipped ------------------------------------------------------------------


def test_reader_user_is_select_only() -> None:
    conn = _connect(READER)
    try:
        with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError):
            cur.execute("UPDATE encounter SET voided = voided WHERE encounter_id = %s", (5,))
    finally:
        conn.close()


def test_demo_encounter_5(reader: OpenMrsReader) -> None:
    ctx = reader.read_encounter(5)
    assert ctx.unit_kind == "encounter" and ctx.unit_uuid == ENC5
    assert ctx.visit.uuid == "72588661-147f-4050-9694-2e663b1e7535" and ctx.visit.type_name == "OPD"
    assert ctx.patient.uuid == "1dfff08c-141b-46df-b6a2-6b69080a5000"
    assert ctx.patient.insurance_number is None  # the demo has no insurance numbers
    (enc,) = ctx.encounters
    assert not enc.voided and enc.type_name == "Consultation"
    assert enc.location is not None and enc.location.uuid == OPD_1 and enc.location.visit_location_uuid == OPD_1
    assert [p.uuid for p in enc.providers] == [PROVIDER]

    (dx,) = ctx.diagnoses
    assert (dx.source, dx.concept_uuid, dx.icd10, dx.certainty, dx.primary) == (
        "obs",
        HYPERTHYROIDISM,
        "E05.90",
        "CONFIRMED",
        True,
    )
    assert dx.ref_uuid == "342162cb-8653-4e56-947b-b79b9102a5b1"

    lines = {(ln.kind, ln.concept_uuid): ln for ln in ctx.lines}
    assert set(lines) == {
        ("lab", THYROID_FUNCTION),
        ("drug", NIFEDIPINE),
        ("drug", METHIMAZOLE),
        ("consultation", CONSULTATION_NOTE),  # the consultation rule's billing concept
    }
    assert lines["drug", NIFEDIPINE].quantity == Decimal(2)
    assert lines["drug", NIFEDIPINE].drug_uuid == NIFEDIPINE_5MG
    assert lines["drug", METHIMAZOLE].quantity == Decimal(84)
    assert lines["lab", THYROID_FUNCTION].quantity == 1
    assert lines["lab", THYROID_FUNCTION].care_setting == "OUTPATIENT"


def test_demo_encounter_5_is_uninsured(reader: OpenMrsReader, mapping: ClaimMapping) -> None:
    with pytest.raises(NotClaimable) as err:
        build_draft(reader.read_encounter(5), mapping, created=date(2026, 11, 25), revision=0)
    assert err.value.reason == "uninsured"


def test_demo_encounter_5_with_chf_id_gives_the_demo_claim(reader: OpenMrsReader, mapping: ClaimMapping) -> None:
    ctx = reader.read_encounter(5)
    ctx = replace(ctx, patient=replace(ctx.patient, insurance_number="070707081"))
    draft = build_draft(ctx, mapping, created=date(2026, 11, 25), revision=0)
    assert draft.code == "RAHOS001-20ed758c09ff4b028a06228f6ddfacd2"
    assert draft.insuree == "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"
    assert draft.facility == "d8a25f21-f36a-4d4d-9e58-1db8ffbe7036" and draft.facility_code == "RAHOS001"
    assert draft.enterer == "598e43ca-9977-4f4b-a678-992528ce3454"
    assert draft.visit_type == "O"
    assert (draft.period_start, draft.period_end) == (date(2017, 5, 5), date(2017, 5, 5))
    assert [d.icd10 for d in draft.diagnoses] == ["A09"]  # demo override of E05.90
    assert sorted((ln.code, ln.quantity) for ln in draft.lines) == [
        ("0050", Decimal(84)),
        ("0171", Decimal(2)),
        ("A1", Decimal(1)),
        ("I125", Decimal(1)),
    ]
    assert draft.total == Decimal(400 + 650 + 2 * 35 + 84 * 100)


def test_demo_visit_and_helpers(reader: OpenMrsReader) -> None:
    ctx = reader.read_visit("39814b99-10b9-41f3-8448-658fbf00e13a")
    assert ctx.unit_kind == "visit"
    assert [e.encounter_id for e in ctx.encounters] == [2, 6, 11, 13, 16]
    assert ctx.primary_encounter.encounter_id == 2
    assert len([ln for ln in ctx.lines if ln.kind != "consultation"]) == 9  # 2 + 3 + 4 orders
    assert len([ln for ln in ctx.lines if ln.kind == "consultation"]) == 3
    (dx,) = ctx.diagnoses
    assert (dx.icd10, dx.certainty) == ("E11.9", "PROVISIONAL")  # Diabetes II, Presumed
    assert reader.read_visit(2).unit_uuid == ctx.unit_uuid

    assert reader.encounter_visit([5, 6, 16, 999999]) == {5: 1, 6: 2, 16: 2}
    assert reader.order_encounters([1, 2, 23]) == {1: 5, 2: 5, 23: 20}
    units = reader.patient_units(74)
    assert units.encounter_ids == (1, 5, 9) and units.visit_ids == (1, 8)


def test_demo_hypertension_has_no_icd(reader: OpenMrsReader) -> None:
    (dx,) = reader.read_encounter(8).diagnoses
    assert dx.concept_uuid == HYPERTENSION and dx.icd10 is None


def test_demo_location_without_tag_resolves_visit_location(reader: OpenMrsReader) -> None:
    # Encounter 13 is at General Ward (tagged itself); child rooms resolve to their parent.
    ctx = reader.read_encounter(13)
    loc = ctx.encounters[0].location
    assert loc is not None and loc.visit_location_uuid == GENERAL_WARD


def test_missing_units_are_not_claimable(reader: OpenMrsReader) -> None:
    with pytest.raises(NotClaimable) as err:
        reader.read_encounter(str(uuid.uuid4()))
    assert err.value.reason == "voided"
    with pytest.raises(NotClaimable):
        reader.read_visit(99999999)


def test_database_down_is_source_unavailable(mapping: ClaimMapping) -> None:
    dead = OpenMrsReader(
        connection_factory(host=HOST, port=1, user=READER[0], password=READER[1], database=DB, connect_timeout=1),
        ReaderConfig(),
    )
    with pytest.raises(SourceUnavailable):
        dead.read_encounter(5)


def test_unknown_insurance_type_is_config_error() -> None:
    bad = OpenMrsReader(
        connection_factory(host=HOST, port=PORT, user=READER[0], password=READER[1], database=DB),
        ReaderConfig(insurance_attribute_type="NHIS Number"),
    )
    with pytest.raises(ConfigError, match="NHIS Number"):
        bad.resolve()


def test_check_mapping_demo_is_complete(mapping: ClaimMapping) -> None:
    """The demo mapping covers the Bahmni demo data (rows other tests add on purpose may not be)."""
    conn = _connect(READER)
    try:
        report = check_mapping(conn, mapping)
        with conn.cursor() as cur:  # what the pristine demo DB itself uses (created before 2020)
            cur.execute(
                "SELECT DISTINCT c.uuid FROM orders o JOIN concept c ON c.concept_id = o.concept_id"
                " WHERE o.date_created < %s UNION SELECT DISTINCT d.uuid FROM drug_order x"
                " JOIN orders o ON o.order_id = x.order_id JOIN drug d ON d.drug_id = x.drug_inventory_id"
                " WHERE o.date_created < %s",
                ("2020-01-01", "2020-01-01"),
            )
            demo = {row[0] if isinstance(row, tuple) else row["uuid"] for row in cur.fetchall()}
    finally:
        conn.close()
    blocking = [f for f in report.findings if f.severity == "blocking" and f.uuid in demo]
    assert not blocking, render_text(report)
    assert {f.name for f in report.by_topic("encounter type")} >= {"REG", "LAB_RESULT"}


def test_check_mapping_reports_gaps(mapping: ClaimMapping) -> None:
    bare = mapping.model_copy(
        update={"drugs": {}, "facilities": {}, "icd10": mapping.icd10.model_copy(update={"overrides": {}})}
    )
    bare._known_icd = mapping.known_icd_codes
    conn = _connect(READER)
    try:
        report = check_mapping(conn, bare)
    finally:
        conn.close()
    assert not report.ok
    assert NIFEDIPINE_5MG in {f.uuid for f in report.by_topic("drug")}
    assert OPD_1 in {f.uuid for f in report.by_topic("facility")}
    details = {f.uuid: f.detail for f in report.by_topic("diagnosis ICD")}
    assert details[HYPERTHYROIDISM] == "E05.90 unknown to openIMIS"
    assert details[HYPERTENSION] == "no ICD-10 map"
    assert "NOT OK" in render_text(report)


def test_the_demo_radiology_image_is_a_document_of_every_encounter_of_its_visit(mapping: ClaimMapping) -> None:
    """The demo's one Bahmni upload (a CHEST AP image in RADIOLOGY encounter 15 of visit 3)."""
    with_docs = mapping.model_copy(
        update={"attachments": AttachmentsSection(documents=(DocumentRule(concept="CHEST AP"),))}
    )
    reader = OpenMrsReader(
        connection_factory(host=HOST, port=PORT, user=READER[0], password=READER[1], database=DB),
        reader_config(with_docs),
    )
    consultation = reader.read_encounter(14)  # a consultation of visit 3: the image is in another encounter
    (doc,) = consultation.documents
    assert doc.obs_uuid == "7ee7c72f-9063-45a6-9a1c-265e511e22ac"
    assert (doc.concept_name, doc.store) == ("CHEST AP", "documents")
    assert doc.path == "100/76-RADIOLOGY-7b13fa5f-3827-4668-a3c5-9809c29feff7.jpeg"
    assert doc.encounter_uuid == "2653b5dc-0c52-4d50-92bd-f80a4b9e5639"
    assert reader.read_visit("6e7323b5-4a43-4135-8afc-aa3dc38406cd").documents == (doc,)
    assert reader.read_encounter(5).documents == ()  # another visit
    assert OpenMrsReader(reader._conn_factory, reader_config(mapping)).read_encounter(14).documents == ()
    conn = _connect(READER)
    try:
        report = check_mapping(conn, with_docs)
        unknown = mapping.model_copy(
            update={"attachments": AttachmentsSection(documents=(DocumentRule(concept="No Such Document"),))}
        )
        missing = check_mapping(conn, unknown)
    finally:
        conn.close()
    (finding,) = report.by_topic("attachment document")
    assert (finding.name, finding.count, finding.severity) == ("CHEST AP", 1, "info")
    assert not missing.ok and missing.by_topic("attachment document")[0].detail == "no such concept in OpenMRS"
    bad = OpenMrsReader(reader._conn_factory, reader_config(unknown))
    with pytest.raises(ConfigError, match="'No Such Document' not found"):
        bad.resolve()


# ---- rows written by the test, the way Bahmni writes them -------------------------------------------


@dataclass
class Scenario:
    patient_uuid: str
    visit_uuid: str
    enc_a: str  # day 1: diagnoses + orders
    enc_b: str  # day 2: revises/discontinues A's orders, revises A's diagnosis
    enc_voided: str
    groups: dict[str, str]  # name -> obs group uuid
    orders: dict[str, str]  # name -> order uuid
    diagnosis_row: str
    procedure_obs: str


class _Writer:
    def __init__(self, cur: Any) -> None:
        self.cur = cur
        self.created: list[tuple[str, str, int]] = []

    def id_of(self, table: str, uuid_: str) -> int:
        key = {"concept": "concept_id", "location": "location_id", "drug": "drug_id", "provider": "provider_id"}
        if table in key:
            self.cur.execute(f"SELECT {key[table]} FROM {table} WHERE uuid = %s", (uuid_,))
        else:
            self.cur.execute(f"SELECT {table}_id FROM {table} WHERE uuid = %s", (uuid_,))
        row = self.cur.fetchone()
        assert row is not None, (table, uuid_)
        return int(row[0])

    def insert(self, table: str, pk: str, **cols: Any) -> int:
        if table not in ("drug_order", "patient"):  # the tables here without a uuid
            cols.setdefault("uuid", str(uuid.uuid4()))
        names = ", ".join(f"`{c}`" for c in cols)
        marks = ", ".join(["%s"] * len(cols))
        self.cur.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(cols.values()))
        new_id = int(self.cur.lastrowid) if pk != "patient_id" else int(cols["patient_id"])
        self.created.append((table, pk, new_id))
        return new_id


def _scenario(w: _Writer) -> Scenario:
    c = {u: w.id_of("concept", u) for u in (
        VISIT_DX, CODED, NON_CODED, CERTAINTY, CONFIRMED, PRESUMED, DX_ORDER, PRIMARY, SECONDARY, STATUS,
        RULED_OUT, INITIAL, REVISED, TRUE, FALSE, HYPERTHYROIDISM, DIABETES_II, OPERATIVE_PROCEDURE,
        PROCEDURE_ANSWER, THYROID_FUNCTION, NIFEDIPINE, METHIMAZOLE)}  # fmt: skip
    opd_1 = w.id_of("location", OPD_1)
    provider = w.id_of("provider", PROVIDER)
    now = datetime(2026, 11, 20, 9, 0, 0)
    day2 = datetime(2026, 11, 21, 10, 0, 0)

    # Registration: a new patient with an openIMIS CHF id (patient identifier type ExternalId).
    person = w.insert("person", "person_id", gender="F", birthdate=date(1952, 5, 7), creator=1, date_created=now)
    w.insert("patient", "patient_id", patient_id=person, creator=1, date_created=now)
    w.insert("patient_identifier", "patient_identifier_id", patient_id=person, identifier="070707081",
             identifier_type=w.id_of("patient_identifier_type", EXTERNAL_ID), preferred=0, location_id=opd_1,
             creator=1, date_created=now)  # fmt: skip
    visit = w.insert("visit", "visit_id", patient_id=person, visit_type_id=w.id_of("visit_type", OPD),
                     date_started=now, location_id=w.id_of("location", OPD_1), creator=1, date_created=now)  # fmt: skip
    enc_type = w.id_of("encounter_type", CONSULTATION_TYPE)

    def encounter(at: datetime, location: int, voided: int = 0) -> tuple[int, str]:
        u = str(uuid.uuid4())
        eid = w.insert("encounter", "encounter_id", uuid=u, encounter_type=enc_type, patient_id=person,
                       location_id=location, encounter_datetime=at, visit_id=visit, creator=1, date_created=at,
                       voided=voided)  # fmt: skip
        w.insert("encounter_provider", "encounter_provider_id", encounter_id=eid, provider_id=provider,
                 encounter_role_id=1, creator=1, date_created=at)  # fmt: skip
        return eid, u

    def obs(enc: int, at: datetime, concept: str, *, group: int | None = None, coded: str | None = None,
            text: str | None = None, voided: int = 0, previous: int | None = None,
            uuid_: str | None = None) -> int:  # fmt: skip
        return w.insert("obs", "obs_id", uuid=uuid_ or str(uuid.uuid4()), person_id=person, concept_id=c[concept],
                        encounter_id=enc, obs_datetime=at, location_id=opd_1, obs_group_id=group,
                        value_coded=c[coded] if coded else None, value_text=text, creator=1, date_created=at,
                        voided=voided, previous_version=previous,
                        status="AMENDED" if previous else "FINAL")  # fmt: skip

    def dx_group(enc: int, at: datetime, *, coded: str | None = None, text: str | None = None,
                 certainty: str = CONFIRMED, order: str = PRIMARY, initial: str | None = None,
                 status: str | None = None, voided: int = 0) -> tuple[str, int, int]:  # fmt: skip
        gu = str(uuid.uuid4())
        g = obs(enc, at, VISIT_DX, voided=voided, uuid_=gu)
        if coded:
            obs(enc, at, CODED, group=g, coded=coded, voided=voided)
        if text:
            obs(enc, at, NON_CODED, group=g, text=text, voided=voided)
        obs(enc, at, CERTAINTY, group=g, coded=certainty, voided=voided)
        obs(enc, at, DX_ORDER, group=g, coded=order, voided=voided)
        obs(enc, at, INITIAL, group=g, text=initial or gu, voided=voided)
        revised = obs(enc, at, REVISED, group=g, coded=FALSE, voided=voided)
        if status:
            obs(enc, at, STATUS, group=g, coded=status, voided=voided)
        return gu, g, revised

    def order(enc: int, at: datetime, concept: str, type_uuid: str, *, action: str = "NEW",
              previous: int | None = None, drug: str | None = None,
              qty: float | None = None) -> tuple[int, str]:  # fmt: skip
        u = str(uuid.uuid4())
        oid = w.insert("orders", "order_id", uuid=u, order_type_id=w.id_of("order_type", type_uuid),
                       concept_id=c[concept], orderer=provider, encounter_id=enc, patient_id=person,
                       care_setting=1, date_activated=at, date_created=at, creator=1,
                       order_number=f"T-{u[:8]}", order_action=action, previous_order_id=previous,
                       urgency="ROUTINE")  # fmt: skip
        if drug:
            w.insert("drug_order", "order_id", order_id=oid, drug_inventory_id=w.id_of("drug", drug), quantity=qty,
                     as_needed=0, dosing_type="org.openmrs.FlexibleDosingInstructions")  # fmt: skip
            w.created[-1] = ("drug_order", "order_id", oid)
        return oid, u

    # --- Save 1 (day 1): consultation A with diagnoses and orders
    enc_a, enc_a_uuid = encounter(now, opd_1)
    g1_uuid, _, g1_revised = dx_group(enc_a, now, coded=HYPERTHYROIDISM)
    g3_uuid, _, _ = dx_group(enc_a, now, coded=DIABETES_II, order=SECONDARY, voided=1)  # deleted in the UI
    g4_uuid, _, _ = dx_group(enc_a, now, text="free text diagnosis", order=SECONDARY)  # non-coded
    o1, o1_uuid = order(enc_a, now, NIFEDIPINE, DRUG_ORDER_TYPE, drug=NIFEDIPINE_5MG, qty=2)
    o2, o2_uuid = order(enc_a, now, METHIMAZOLE, DRUG_ORDER_TYPE, drug=METHIMAZOLE_DRUG, qty=84)
    _, o3_uuid = order(enc_a, now, THYROID_FUNCTION, LAB_ORDER_TYPE)

    # --- Save 2 (day 2): consultation B revises A's diagnosis and drugs
    enc_b, enc_b_uuid = encounter(day2, w.id_of("location", GENERAL_WARD_ROOM_2))
    g2_uuid, _, _ = dx_group(enc_b, day2, coded=DIABETES_II, initial=g1_uuid)
    # ... which re-versions A's "Revised" member to True, inside A (DATA_MODEL §3.3)
    w.cur.execute("UPDATE obs SET voided = 1, void_reason = 'revised' WHERE obs_id = %s", (g1_revised,))
    g1_group = w.id_of("obs", g1_uuid)
    obs(enc_a, day2, REVISED, group=g1_group, coded=TRUE, previous=g1_revised)
    g5_uuid, _, _ = dx_group(enc_b, day2, coded=HYPERTHYROIDISM, order=SECONDARY, status=RULED_OUT)
    o1b, o1b_uuid = order(enc_b, day2, NIFEDIPINE, DRUG_ORDER_TYPE, action="REVISE", previous=o1,
                          drug=NIFEDIPINE_5MG, qty=10)  # fmt: skip
    w.cur.execute("UPDATE orders SET date_stopped = %s WHERE order_id = %s", (day2, o1))
    _, o2d_uuid = order(enc_b, day2, METHIMAZOLE, DRUG_ORDER_TYPE, action="DISCONTINUE", previous=o2,
                        drug=METHIMAZOLE_DRUG, qty=84)  # fmt: skip
    w.cur.execute("UPDATE orders SET date_stopped = %s WHERE order_id = %s", (day2, o2))
    # FHIR-path diagnosis (core model) and a procedure recorded on the Operative Notes form
    ed_uuid = str(uuid.uuid4())
    w.insert("encounter_diagnosis", "diagnosis_id", uuid=ed_uuid, diagnosis_coded=c[DIABETES_II],
             encounter_id=enc_b, patient_id=person, certainty="CONFIRMED", rank=1, creator=1,
             date_created=day2)  # fmt: skip
    proc_uuid = str(uuid.uuid4())
    obs(enc_b, day2, OPERATIVE_PROCEDURE, coded=PROCEDURE_ANSWER, uuid_=proc_uuid)

    # --- A third, deleted encounter (everything voided)
    enc_v, enc_v_uuid = encounter(day2, opd_1, voided=1)
    order(enc_v, day2, THYROID_FUNCTION, LAB_ORDER_TYPE)
    w.cur.execute("UPDATE orders SET voided = 1 WHERE encounter_id = %s", (enc_v,))

    w.cur.execute("SELECT uuid FROM person WHERE person_id = %s", (person,))
    (patient_uuid,) = w.cur.fetchone()
    w.cur.execute("SELECT uuid FROM visit WHERE visit_id = %s", (visit,))
    (visit_uuid,) = w.cur.fetchone()
    del o1b
    return Scenario(
        patient_uuid=patient_uuid,
        visit_uuid=visit_uuid,
        enc_a=enc_a_uuid,
        enc_b=enc_b_uuid,
        enc_voided=enc_v_uuid,
        groups={"g1": g1_uuid, "g2": g2_uuid, "g3": g3_uuid, "g4": g4_uuid, "g5": g5_uuid},
        orders={"o1": o1_uuid, "o1b": o1b_uuid, "o2": o2_uuid, "o2d": o2d_uuid, "o3": o3_uuid},
        diagnosis_row=ed_uuid,
        procedure_obs=proc_uuid,
    )


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    conn = _connect(WRITER)
    writer = _Writer(conn.cursor())
    try:
        conn.begin()
        result = _scenario(writer)
        conn.commit()
        yield result
    finally:
        conn.rollback()
        cur = conn.cursor()
        # Children first (obs/orders point at earlier rows of their own table).
        for table, pk, row_id in reversed(writer.created):
            cur.execute(f"DELETE FROM {table} WHERE {pk} = %s", (row_id,))
        conn.commit()
        conn.close()


def test_encounter_a_drops_revised_voided_and_superseded(reader: OpenMrsReader, scenario: Scenario) -> None:
    ctx = reader.read_encounter(scenario.enc_a)
    assert ctx.patient.uuid == scenario.patient_uuid and ctx.patient.insurance_number == "070707081"
    # g1 is Revised=True (re-versioned in A by B's save), g3 is voided: only the non-coded g4 is left.
    (dx,) = ctx.diagnoses
    assert dx.ref_uuid == scenario.groups["g4"]
    assert dx.concept_id is None and dx.concept_uuid is None and dx.icd10 is None
    assert (dx.certainty, dx.primary) == ("CONFIRMED", False)
    # o1 was REVISEd and o2 DISCONTINUEd in the later encounter B: only the lab order bills in A.
    assert {(ln.kind, ln.source_uuid) for ln in ctx.lines if ln.kind != "consultation"} == {
        ("lab", scenario.orders["o3"])
    }


def test_encounter_a_is_held_for_its_non_coded_diagnosis(
    reader: OpenMrsReader, scenario: Scenario, mapping: ClaimMapping
) -> None:
    with pytest.raises(NotClaimable) as err:
        build_draft(reader.read_encounter(scenario.enc_a), mapping, created=date(2026, 11, 25), revision=0)
    assert err.value.reason == "no_diagnosis"
    assert "non_coded" in err.value.detail


def test_encounter_b_revisions_both_models_and_procedure(reader: OpenMrsReader, scenario: Scenario) -> None:
    ctx = reader.read_encounter(scenario.enc_b)
    by_ref = {d.ref_uuid: d for d in ctx.diagnoses}
    assert set(by_ref) == {scenario.groups["g2"], scenario.diagnosis_row}  # g5 is Ruled Out
    g2, core = by_ref[scenario.groups["g2"]], by_ref[scenario.diagnosis_row]
    assert (g2.source, g2.concept_uuid, g2.icd10, g2.certainty, g2.primary) == (
        "obs", DIABETES_II, "E11.9", "CONFIRMED", True)  # fmt: skip
    assert (core.source, core.concept_uuid, core.icd10, core.certainty, core.primary) == (
        "encounter_diagnosis", DIABETES_II, "E11.9", "CONFIRMED", True)  # fmt: skip
    lines = {ln.source_uuid: ln for ln in ctx.lines if ln.kind != "consultation"}
    assert set(lines) == {scenario.orders["o1b"], scenario.procedure_obs}  # the DISCONTINUE row never bills
    assert lines[scenario.orders["o1b"]].quantity == Decimal(10)
    assert lines[scenario.procedure_obs].kind == "procedure_obs"
    assert lines[scenario.procedure_obs].concept_uuid == PROCEDURE_ANSWER
    loc = ctx.encounters[0].location
    assert loc is not None and loc.uuid == GENERAL_WARD_ROOM_2 and loc.visit_location_uuid == GENERAL_WARD


def test_voided_encounter(reader: OpenMrsReader, scenario: Scenario, mapping: ClaimMapping) -> None:
    ctx = reader.read_encounter(scenario.enc_voided)
    assert ctx.encounters[0].voided and not ctx.lines and not ctx.diagnoses
    with pytest.raises(NotClaimable) as err:
        build_draft(ctx, mapping, created=date(2026, 11, 25), revision=0)
    assert err.value.reason == "voided"


def test_visit_claim(reader: OpenMrsReader, scenario: Scenario, mapping: ClaimMapping) -> None:
    ctx = reader.read_visit(scenario.visit_uuid)
    assert [e.uuid for e in ctx.encounters] == [scenario.enc_a, scenario.enc_b]  # the voided one is left out
    # The procedure answer has no openIMIS code in the demo mapping: held, and it says which line.
    with pytest.raises(NotClaimable) as err:
        build_draft(ctx, mapping, created=date(2026, 11, 25), revision=0)
    assert err.value.reason == "unmapped_line"
    assert scenario.procedure_obs in err.value.detail and PROCEDURE_ANSWER in err.value.detail

    concepts = dict(mapping.concepts)
    concepts[PROCEDURE_ANSWER] = concepts[THYROID_FUNCTION].model_copy(update={"code": "G34", "price": Decimal(42000)})
    full = mapping.model_copy(update={"concepts": concepts})
    full._known_icd = mapping.known_icd_codes
    draft = build_draft(ctx, full, created=date(2026, 11, 25), revision=1)
    assert draft.code.endswith("-R1") and len(draft.code) <= 50
    assert draft.insuree == "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"
    assert (draft.period_start, draft.period_end) == (date(2026, 11, 20), date(2026, 11, 21))  # open visit
    assert [d.icd10 for d in draft.diagnoses] == ["A499"]  # Diabetes II (override), deduplicated
    assert sorted(ln.code for ln in draft.lines) == ["0171", "A1", "A1", "G34", "I125"]
    assert next(ln for ln in draft.lines if ln.code == "0171").quantity == Decimal(10)
