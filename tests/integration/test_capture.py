"""Capture half of the stack, for real: MariaDB binlog → Debezium MariaDB connector (Kafka Connect) → Kafka.

(a) one DB transaction arrives as Debezium full envelopes plus BEGIN/END on ``openmrs.transaction``;
(b) a Kafka Connect restart resumes from the stored offsets: no new snapshot, nothing lost;
plus a kafka-python round trip against Kafka 4.x (KIP-896 removed the old protocol versions).
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pymysql
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from cdc_claims.pipeline.consumer_role import CAPTURED_TABLES
from cdc_dev import credentials

if TYPE_CHECKING:  # fixtures come from conftest.py; tests/integration is not a package
    from conftest import CaptureStack, Record, TopicReader

    from cdc_dev.mariadb import MariaDB

pytestmark = pytest.mark.integration

SETTINGS = credentials.kafka()
OBS = SETTINGS.table_topic("obs")
ENCOUNTER = SETTINGS.table_topic("encounter")
TX = SETTINGS.transaction_topic
CAPTURED = list(CAPTURED_TABLES)  # what the consumer reads is what the connector must capture

# Demo encounter 1 (patient 74, visit 1) of the Bahmni 0.94 DB; concept 117 is a numeric vital there.
ENCOUNTER_ID = 1
PATIENT_ID = 74
NUMERIC_CONCEPT_ID = 117


def _epoch_ms(value: datetime) -> int:
    """``time.precision.mode=connect``: a DATETIME is epoch milliseconds of its wall-clock value as if UTC."""
    return calendar.timegm(value.timetuple()) * 1000 + value.microsecond // 1000


def _insert_obs(capture_stack: CaptureStack, *, touch_encounter: bool) -> dict[str, Any]:
    """One transaction as ``cdc_admin``: INSERT an obs (and UPDATE its encounter). Returns what was written."""
    obs_uuid = str(uuid.uuid4())
    value = float(uuid.uuid4().int % 100_000) / 10
    conn = capture_stack.mariadb.connect("cdc_admin")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT NOW()")
            (now,) = cur.fetchone()  # type: ignore[misc]
            cur.execute(
                "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, value_numeric,"
                " creator, date_created, voided, uuid, status)"
                " VALUES (%s, %s, %s, %s, %s, 1, %s, 0, %s, 'FINAL')",
                (PATIENT_ID, NUMERIC_CONCEPT_ID, ENCOUNTER_ID, now, value, now, obs_uuid),
            )
            obs_id = cur.lastrowid
            if touch_encounter:
                cur.execute(
                    "UPDATE encounter SET date_changed = %s, changed_by = 1 WHERE encounter_id = %s",
                    (now, ENCOUNTER_ID),
                )
                assert cur.rowcount == 1
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT @@last_gtid")
            (gtid,) = cur.fetchone()  # type: ignore[misc]
    finally:
        conn.close()
    assert gtid, "MariaDB reported no GTID for the transaction"
    return {"uuid": obs_uuid, "obs_id": obs_id, "value": value, "now": now, "gtid": str(gtid)}


def _obs_with_uuid(records: list[Record], obs_uuid: str) -> list[Record]:
    return [r for r in records if r.topic == OBS and r.value and (r.value.get("after") or {}).get("uuid") == obs_uuid]


def _tx_records(records: list[Record], gtid: str) -> list[Record]:
    return [r for r in records if r.topic == TX and r.value and r.value.get("id") == gtid]


def test_transaction_arrives_as_full_envelopes_with_begin_end(
    capture_stack: CaptureStack, topic_reader: Callable[[list[str]], TopicReader]
) -> None:
    reader = topic_reader([OBS, ENCOUNTER, TX])
    written = _insert_obs(capture_stack, touch_encounter=True)
    gtid = written["gtid"]

    def complete(records: list[Record]) -> bool:
        statuses = {r.value["status"] for r in _tx_records(records, gtid)}
        return bool(_obs_with_uuid(records, written["uuid"])) and {"BEGIN", "END"} <= statuses

    records = reader.collect(complete)

    # -- data events: Debezium full envelope (no unwrap SMT), JSON without schemas ------------------
    (obs,) = _obs_with_uuid(records, written["uuid"])
    assert obs.key == {"obs_id": written["obs_id"]}
    env = obs.value
    assert {"before", "after", "source", "op", "transaction", "ts_ms"} <= set(env)
    assert "schema" not in env and "payload" not in env
    assert env["op"] == "c" and env["before"] is None
    after = env["after"]
    assert after["obs_id"] == written["obs_id"]
    assert after["encounter_id"] == ENCOUNTER_ID and after["person_id"] == PATIENT_ID
    assert after["value_numeric"] == pytest.approx(written["value"])
    assert after["obs_datetime"] == _epoch_ms(written["now"])  # time.precision.mode=connect
    source = env["source"]
    assert source["connector"] == "mariadb" and source["name"] == SETTINGS.topic_prefix
    assert source["db"] == "openmrs" and source["table"] == "obs"
    assert source["gtid"] == gtid
    assert source["snapshot"] == "false"
    assert env["transaction"]["id"] == gtid

    enc = [
        r for r in records if r.topic == ENCOUNTER and r.value and (r.value.get("transaction") or {}).get("id") == gtid
    ]
    assert len(enc) == 1
    enc_env = enc[0].value
    assert enc[0].key == {"encounter_id": ENCOUNTER_ID}
    assert enc_env["op"] == "u"
    assert enc_env["before"]["encounter_id"] == ENCOUNTER_ID  # binlog_row_image=FULL: complete before image
    assert enc_env["after"]["date_changed"] == _epoch_ms(written["now"])
    assert enc_env["after"]["changed_by"] == 1
    assert enc_env["source"]["gtid"] == gtid
    # statement order inside the transaction
    assert env["transaction"]["total_order"] == 1 and env["transaction"]["data_collection_order"] == 1
    assert enc_env["transaction"]["total_order"] == 2 and enc_env["transaction"]["data_collection_order"] == 1

    # -- transaction metadata: BEGIN then END, same id, per-table counts ---------------------------
    tx = _tx_records(records, gtid)
    begins = [r for r in tx if r.value["status"] == "BEGIN"]
    ends = [r for r in tx if r.value["status"] == "END"]
    assert len(begins) == 1 and len(ends) == 1
    assert begins[0].offset < ends[0].offset
    assert begins[0].key == {"id": gtid}
    end = ends[0].value
    assert end["event_count"] == 2
    counts = {c["data_collection"]: c["event_count"] for c in end["data_collections"]}
    assert counts == {"openmrs.obs": 1, "openmrs.encounter": 1}


def test_connect_restart_resumes_without_snapshot_or_loss(
    capture_stack: CaptureStack, topic_reader: Callable[[list[str]], TopicReader]
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=capture_stack.bootstrap)
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    # every captured table that has a topic (the snapshot created one per non-empty table)
    topics = [SETTINGS.table_topic(t) for t in CAPTURED if SETTINGS.table_topic(t) in existing]
    assert OBS in topics and ENCOUNTER in topics
    reader = topic_reader([*topics, TX])

    connect = capture_stack.connect
    connect.down()
    assert connect.status() == "stopped"
    written = _insert_obs(capture_stack, touch_encounter=False)  # committed while Connect is down
    connect.up()
    assert connect.status().startswith("running")

    def arrived(records: list[Record]) -> bool:
        return bool(_obs_with_uuid(records, written["uuid"])) and any(
            r.value["status"] == "END" for r in _tx_records(records, written["gtid"])
        )

    # keep reading a few seconds past arrival: a re-snapshot would follow with op="r" records
    records = reader.collect(arrived, settle=5.0)

    (obs,) = {r.offset: r for r in _obs_with_uuid(records, written["uuid"])}.values()  # at-least-once: dedupe
    assert obs.value["op"] == "c" and obs.value["source"]["gtid"] == written["gtid"]
    snapshot_reads = [r for r in records if r.value and r.value.get("op") == "r"]
    assert snapshot_reads == [], f"{len(snapshot_reads)} snapshot records after a restart"
    data = [r for r in records if r.topic != TX and r.value]
    assert all(r.value["source"]["snapshot"] == "false" for r in data)


def test_kafka_python_round_trip_against_kafka_4(capture_stack: CaptureStack) -> None:
    """kafka-python negotiates API versions with a Kafka 4.x broker: produce, group consume, commit."""
    topic = f"cdc-claims-test-roundtrip-{uuid.uuid4().hex[:8]}"
    group = f"cdc-claims-test-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=capture_stack.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    try:
        producer = KafkaProducer(bootstrap_servers=capture_stack.bootstrap, acks="all", enable_idempotence=True)
        try:
            assert producer.config["api_version"] >= (4, 0)  # negotiated from the broker's ApiVersions
            for i in range(3):
                producer.send(topic, key=b"k", value=f"m{i}".encode()).get(timeout=30)
        finally:
            producer.close()

        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=capture_stack.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        try:
            assert consumer.config["api_version"] >= (4, 0)
            values: list[bytes] = []
            for _ in range(120):
                for batch in consumer.poll(timeout_ms=500).values():
                    values += [r.value for r in batch]
                if len(values) >= 3:
                    break
            assert values == [b"m0", b"m1", b"m2"]
            consumer.commit()
        finally:
            consumer.close()

        # the group's committed offset reads back (OffsetFetch through the group coordinator)
        checker = KafkaConsumer(bootstrap_servers=capture_stack.bootstrap, group_id=group, enable_auto_commit=False)
        try:
            assert checker.committed(TopicPartition(topic, 0)) == 3
        finally:
            checker.close()
    finally:
        admin.delete_topics([topic])
        admin.close()


def test_dev_users_have_least_privilege(mariadb: MariaDB) -> None:
    """cdc_reader only reads openmrs; cdc_writer also inserts/updates iclm_*/cdc_claims_* (never DELETE)
    but no OpenMRS table."""
    denied = pymysql.err.OperationalError  # ER_TABLEACCESS_DENIED_ERROR (1142)
    reader = mariadb.connect(mariadb.db.user)
    writer = mariadb.connect(mariadb.db.writer_user)
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM encounter")
            assert cur.fetchone()[0] > 0  # type: ignore[index]
            with pytest.raises(denied):
                cur.execute("DELETE FROM iclm_claim WHERE iclm_claim_id = %s", (-1,))
        with writer.cursor() as cur:
            cur.execute("UPDATE iclm_claim SET status = status WHERE iclm_claim_id = %s", (-1,))
            cur.execute("UPDATE cdc_claims_ledger SET state = state WHERE ledger_id = %s", (-1,))
            # the runbook's rule: no user of the sidecar may DELETE, not even its own rows
            with pytest.raises(denied):
                cur.execute("DELETE FROM iclm_claim WHERE iclm_claim_id = %s", (-1,))
            with pytest.raises(denied):
                cur.execute("DELETE FROM cdc_claims_ledger WHERE ledger_id = %s", (-1,))
            with pytest.raises(denied):
                cur.execute("UPDATE obs SET comments = comments WHERE obs_id = %s", (-1,))
            with pytest.raises(denied):
                cur.execute("SELECT 1 FROM mysql.user")
        writer.rollback()
    finally:
        reader.close()
        writer.close()
    debezium = mariadb.connect("debezium", database=None)
    try:
        with debezium.cursor() as cur:
            cur.execute("SHOW GRANTS")
            grants = " ".join(row[0] for row in cur.fetchall())
    finally:
        debezium.close()
    assert "REPLICATION SLAVE" in grants and "BINLOG MONITOR" in grants
    assert "ALL PRIVILEGES" not in grants and "INSERT" not in grants


def test_reset_truncates_sidecar_tables_only(mariadb: MariaDB) -> None:
    admin = mariadb.connect("cdc_admin")
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM obs")
            (obs_before,) = cur.fetchone()  # type: ignore[misc]
            cur.execute(
                "INSERT INTO iclm_policy (patient, policy_number, status, uuid, date_created)"
                " VALUES (%s, %s, %s, %s, NOW())",
                (PATIENT_ID, "TEST-RESET", "ACTIVE", str(uuid.uuid4())),
            )
        admin.commit()
    finally:
        admin.close()
    mariadb.reset()
    admin = mariadb.connect("cdc_admin")
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM iclm_policy")
            assert cur.fetchone() == (0,)
            cur.execute("SELECT COUNT(*) FROM obs")
            assert cur.fetchone() == (obs_before,)
    finally:
        admin.close()
