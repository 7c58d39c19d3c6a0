"""Builders of realistic Debezium MariaDB records (full envelope, schemaless JSON).

Shapes follow what the connector configured in ``infra/kafka/openmrs-mariadb.json`` emits
(``provide.transaction.metadata=true``, ``time.precision.mode=connect``,
``decimal.handling.mode=string``, ``tombstones.on.delete=true``): see ``infra/INFRA.md`` §4.
Row contents follow ``openmrs/DATA_MODEL.md`` §2 (what one Bahmni Save writes) and §5
(voiding and versioning). Ids echo the Bahmni 0.94 demo DB (patient 74, encounter 5, concept
442 "Hyperthyroidism, NOS") but nothing here needs that database.

:class:`FakeConnector` hands out offsets per topic and GTIDs like the real connector, so a
test can deliver the records of a transaction in any interleaving, replay them, or re-emit
an END, and still get positions a real consumer would see.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cdc_claims.capture import ChangeEvent, parse_record

PREFIX = "openmrs"
DB = "openmrs"
TX_TOPIC = f"{PREFIX}.transaction"

#: Primary key column of every captured table (Debezium's record key).
PK: dict[str, str] = {
    "encounter": "encounter_id",
    "obs": "obs_id",
    "orders": "order_id",
    "drug_order": "order_id",
    "encounter_diagnosis": "diagnosis_id",
    "encounter_provider": "encounter_provider_id",
    "visit": "visit_id",
    "visit_attribute": "visit_attribute_id",
    "patient_identifier": "patient_identifier_id",
    "person_attribute": "person_attribute_id",
    "conditions": "condition_id",
}

# Concept ids of the Bahmni 0.94 demo DB (resolve by uuid in real code; fine in a fixture).
VISIT_DIAGNOSES, CODED_DIAGNOSIS, CERTAINTY, DX_ORDER = 15, 16, 19, 22
INITIAL_DX, REVISED_DX, CONFIRMED, PRIMARY, TRUE, FALSE = 50, 51, 26, 24, 1, 2
HYPERTHYROIDISM, METHIMAZOLE, THYROID_FUNCTION = 442, 393, 405


def topic(table: str) -> str:
    return f"{PREFIX}.{DB}.{table}"


def ms(text: str) -> int:
    """A DATETIME as the connector sends it: epoch milliseconds of the wall-clock value "as if UTC"."""
    return int((datetime.fromisoformat(text) - datetime(1970, 1, 1)).total_seconds() * 1000)


def _uuid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


# --------------------------------------------------------------------------------------
# Row images (every column a claim reader could care about, with realistic encodings)
# --------------------------------------------------------------------------------------

NOW = "2024-05-06 10:15:00"


def visit_row(visit_id: int, *, patient_id: int = 74, stopped: str | None = None, voided: int = 0) -> dict[str, object]:
    return {
        "visit_id": visit_id,
        "patient_id": patient_id,
        "visit_type_id": 4,  # OPD
        "date_started": ms("2024-05-06 09:00:00"),
        "date_stopped": None if stopped is None else ms(stopped),
        "indication_concept_id": None,
        "location_id": 8,
        "creator": 4,
        "date_created": ms("2024-05-06 09:00:00"),
        "changed_by": None,
        "date_changed": None,
        "voided": voided,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
        "uuid": _uuid("visit", visit_id),
    }


def visit_attribute_row(attr_id: int, visit_id: int, value: str = "OPD") -> dict[str, object]:
    return {
        "visit_attribute_id": attr_id,
        "visit_id": visit_id,
        "attribute_type_id": 1,  # Visit Status
        "value_reference": value,
        "uuid": _uuid("visit_attribute", attr_id),
        "creator": 4,
        "date_created": ms(NOW),
        "changed_by": None,
        "date_changed": None,
        "voided": 0,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
    }


def encounter_row(
    encounter_id: int, visit_id: int | None, *, patient_id: int = 74, voided: int = 0
) -> dict[str, object]:
    return {
        "encounter_id": encounter_id,
        "encounter_type": 1,  # Consultation
        "patient_id": patient_id,
        "location_id": 7,
        "form_id": None,
        "encounter_datetime": ms("2024-05-06 10:00:00"),
        "creator": 4,
        "date_created": ms("2024-05-06 10:00:00"),
        "voided": voided,
        "voided_by": 4 if voided else None,
        "date_voided": ms(NOW) if voided else None,
        "void_reason": "Erroneous" if voided else None,
        "uuid": _uuid("encounter", encounter_id),
        "changed_by": None,
        "date_changed": None,
        "visit_id": visit_id,
    }


def obs_row(
    obs_id: int,
    encounter_id: int | None,
    concept_id: int,
    *,
    group: int | None = None,
    value_coded: int | None = None,
    value_text: str | None = None,
    previous_version: int | None = None,
    status: str = "FINAL",
    voided: int = 0,
    person_id: int = 74,
) -> dict[str, object]:
    return {
        "obs_id": obs_id,
        "person_id": person_id,
        "concept_id": concept_id,
        "encounter_id": encounter_id,
        "order_id": None,
        "obs_datetime": ms("2024-05-06 10:00:00"),
        "location_id": 7,
        "obs_group_id": group,
        "accession_number": None,
        "value_group_id": None,
        "value_coded": value_coded,
        "value_coded_name_id": None,
        "value_drug": None,
        "value_datetime": None,
        "value_numeric": None,
        "value_modifier": None,
        "value_text": value_text,
        "value_complex": None,
        "comments": None,
        "creator": 4,
        "date_created": ms(NOW),
        "voided": voided,
        "voided_by": 4 if voided else None,
        "date_voided": ms(NOW) if voided else None,
        "void_reason": "edited" if voided else None,
        "uuid": _uuid("obs", obs_id),
        "previous_version": previous_version,
        "form_namespace_and_path": None,
        "status": status,
        "interpretation": None,
    }


def order_row(
    order_id: int,
    encounter_id: int,
    concept_id: int,
    *,
    order_type_id: int = 2,
    action: str = "NEW",
    previous_order_id: int | None = None,
    voided: int = 0,
    stopped: str | None = None,
) -> dict[str, object]:
    return {
        "order_id": order_id,
        "order_type_id": order_type_id,
        "concept_id": concept_id,
        "orderer": 1,
        "instructions": None,
        "date_activated": ms("2024-05-06 10:00:00"),
        "auto_expire_date": ms("2024-05-11 23:59:59"),
        "date_stopped": None if stopped is None else ms(stopped),
        "order_reason": None,
        "order_reason_non_coded": None,
        "creator": 4,
        "date_created": ms(NOW),
        "voided": voided,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
        "patient_id": 74,
        "accession_number": None,
        "uuid": _uuid("orders", order_id),
        "urgency": "ROUTINE",
        "order_number": f"ORD-{order_id}",
        "previous_order_id": previous_order_id,
        "order_action": action,
        "comment_to_fulfiller": None,
        "care_setting": 1,
        "scheduled_date": None,
        "order_group_id": None,
        "sort_weight": None,
        "fulfiller_comment": None,
        "fulfiller_status": None,
        "encounter_id": encounter_id,
    }


def drug_order_row(order_id: int, *, drug: int = 7, quantity: float = 84.0) -> dict[str, object]:
    return {
        "order_id": order_id,
        "drug_inventory_id": drug,
        "dose": 1.0,
        "as_needed": 0,
        "dosing_type": "org.openmrs.module.bahmniemrapi.drugorder.dosinginstructions.FlexibleDosingInstructions",
        "quantity": quantity,
        "as_needed_condition": None,
        "num_refills": 0,
        "dosing_instructions": '{"instructions":"As directed","additionalInstructions":""}',
        "duration": 28,
        "duration_units": 28,
        "quantity_units": 51,
        "route": 40,
        "dose_units": 51,
        "frequency": 1,
        "brand_name": None,
        "dispense_as_written": 0,
        "drug_non_coded": None,
    }


def encounter_provider_row(row_id: int, encounter_id: int, *, voided: int = 0) -> dict[str, object]:
    return {
        "encounter_provider_id": row_id,
        "encounter_id": encounter_id,
        "provider_id": 1,
        "encounter_role_id": 1,
        "creator": 4,
        "date_created": ms(NOW),
        "changed_by": None,
        "date_changed": None,
        "voided": voided,
        "date_voided": None,
        "voided_by": None,
        "void_reason": None,
        "uuid": _uuid("encounter_provider", row_id),
    }


def encounter_diagnosis_row(diagnosis_id: int, encounter_id: int, *, coded: int = HYPERTHYROIDISM) -> dict[str, object]:
    return {
        "diagnosis_id": diagnosis_id,
        "diagnosis_coded": coded,
        "diagnosis_non_coded": None,
        "diagnosis_coded_name": None,
        "encounter_id": encounter_id,
        "patient_id": 74,
        "condition_id": None,
        "certainty": "CONFIRMED",
        "dx_rank": 1,
        "uuid": _uuid("encounter_diagnosis", diagnosis_id),
        "creator": 4,
        "date_created": ms(NOW),
        "changed_by": None,
        "date_changed": None,
        "voided": 0,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
        "form_namespace_and_path": None,
    }


def person_attribute_row(attr_id: int, person_id: int, value: str = "111111111") -> dict[str, object]:
    return {
        "person_attribute_id": attr_id,
        "person_id": person_id,
        "value": value,
        "person_attribute_type_id": 12,  # NHIS Number
        "creator": 4,
        "date_created": ms(NOW),
        "changed_by": None,
        "date_changed": None,
        "voided": 0,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
        "uuid": _uuid("person_attribute", attr_id),
    }


def patient_identifier_row(row_id: int, patient_id: int, identifier: str = "CHF-1") -> dict[str, object]:
    return {
        "patient_identifier_id": row_id,
        "patient_id": patient_id,
        "identifier": identifier,
        "identifier_type": 6,  # ExternalId
        "preferred": 0,
        "location_id": 8,
        "creator": 4,
        "date_created": ms(NOW),
        "date_changed": None,
        "changed_by": None,
        "voided": 0,
        "voided_by": None,
        "date_voided": None,
        "void_reason": None,
        "uuid": _uuid("patient_identifier", row_id),
        "patient_program_id": None,
    }


# --------------------------------------------------------------------------------------
# Kafka records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One Kafka record as the consumer sees it (key/value still bytes)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def parse(self) -> ChangeEvent:
        return parse_record(self.topic, self.partition, self.offset, self.key, self.value, transaction_topic=TX_TOPIC)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class _PendingRow:
    table: str
    op: str
    before: Mapping[str, object] | None
    after: Mapping[str, object] | None


@dataclass(frozen=True)
class CommittedTx:
    """The records one source transaction produced, in the connector's emission order."""

    gtid: str
    begin: Record
    rows: tuple[Record, ...]  # data rows, tombstones excluded
    tombstones: tuple[Record, ...]
    end: Record

    def in_order(self) -> list[Record]:
        """BEGIN, rows (each delete followed by its tombstone), END."""
        rows: list[Record] = []
        for row in self.rows:
            rows.append(row)
            rows.extend(t for t in self.tombstones if t.topic == row.topic and t.offset == row.offset + 1)
        return [self.begin, *rows, self.end]

    def end_first(self) -> list[Record]:
        """The transaction topic fully consumed before any data topic: BEGIN, END, rows."""
        return [self.begin, self.end, *[r for r in self.in_order() if r.topic != TX_TOPIC]]

    @property
    def all(self) -> tuple[Record, ...]:
        return (self.begin, *self.rows, *self.tombstones, self.end)


@dataclass
class FakeConnector:
    """Emits records like Debezium's MariaDB connector: offsets per topic, one GTID per transaction."""

    server_id: int = 1
    next_seq: int = 42
    clock_ms: int = field(default_factory=lambda: ms("2024-05-06 10:15:00"))
    offsets: Counter[str] = field(default_factory=Counter)
    binlog_pos: int = 4_000

    def _offset(self, topic_name: str) -> int:
        offset = self.offsets[topic_name]
        self.offsets[topic_name] += 1
        return offset

    def _source(self, table: str, *, gtid: str | None, snapshot: str = "false", row: int = 0) -> dict[str, object]:
        self.binlog_pos += 317
        return {
            "version": "3.6.3.Final",
            "connector": "mariadb",
            "name": PREFIX,
            "ts_ms": self.clock_ms,
            "snapshot": snapshot,
            "db": DB,
            "sequence": None,
            "ts_us": self.clock_ms * 1000,
            "ts_ns": self.clock_ms * 1_000_000,
            "table": table,
            "server_id": self.server_id if gtid else 0,
            "gtid": gtid,
            "file": "mysql-bin.000003",
            "pos": self.binlog_pos,
            "row": row,
            "thread": 17 if gtid else None,
            "query": None,
        }

    def _row_record(
        self,
        table: str,
        op: str,
        before: Mapping[str, object] | None,
        after: Mapping[str, object] | None,
        *,
        gtid: str | None,
        transaction: Mapping[str, object] | None,
        snapshot: str = "false",
    ) -> Record:
        image = after if after is not None else before
        assert image is not None
        pk = PK[table]
        envelope = {
            "before": before,
            "after": after,
            "source": self._source(table, gtid=gtid, snapshot=snapshot),
            "transaction": transaction,
            "op": op,
            "ts_ms": self.clock_ms + 40,
            "ts_us": (self.clock_ms + 40) * 1000,
            "ts_ns": (self.clock_ms + 40) * 1_000_000,
        }
        name = topic(table)
        return Record(name, 0, self._offset(name), dumps({pk: image[pk]}), dumps(envelope))

    def transaction(self) -> TxBuilder:
        return TxBuilder(self)

    def commit(self, rows: list[_PendingRow]) -> CommittedTx:
        gtid = f"0-{self.server_id}-{self.next_seq}"
        self.next_seq += 1
        self.clock_ms += 1_000
        begin = Record(
            TX_TOPIC,
            0,
            self._offset(TX_TOPIC),
            dumps({"id": gtid}),
            dumps(
                {"status": "BEGIN", "id": gtid, "event_count": None, "data_collections": None, "ts_ms": self.clock_ms}
            ),
        )
        per_table: Counter[str] = Counter()
        records: list[Record] = []
        tombstones: list[Record] = []
        for total, pending in enumerate(rows, start=1):
            per_table[pending.table] += 1
            block = {"id": gtid, "total_order": total, "data_collection_order": per_table[pending.table]}
            record = self._row_record(
                pending.table, pending.op, pending.before, pending.after, gtid=gtid, transaction=block
            )
            records.append(record)
            if pending.op == "d":
                tombstones.append(Record(record.topic, 0, self._offset(record.topic), record.key, None))
        end = Record(
            TX_TOPIC,
            0,
            self._offset(TX_TOPIC),
            dumps({"id": gtid}),
            dumps(
                {
                    "status": "END",
                    "id": gtid,
                    "event_count": len(rows),
                    "data_collections": [
                        {"data_collection": f"{DB}.{table}", "event_count": count} for table, count in per_table.items()
                    ],
                    "ts_ms": self.clock_ms,
                }
            ),
        )
        return CommittedTx(gtid, begin, tuple(records), tuple(tombstones), end)

    def snapshot_row(self, table: str, after: Mapping[str, object], *, marker: str = "true") -> Record:
        return self._row_record(table, "r", None, after, gtid=None, transaction=None, snapshot=marker)

    def plain_row(
        self, table: str, op: str, before: Mapping[str, object] | None, after: Mapping[str, object] | None
    ) -> Record:
        """A streaming row without transaction metadata (metadata switched off)."""
        return self._row_record(table, op, before, after, gtid=f"0-{self.server_id}-{self.next_seq}", transaction=None)

    def reemit(self, record: Record) -> Record:
        """The same record emitted again after a connector restart: new offset, same content."""
        return Record(record.topic, record.partition, self._offset(record.topic), record.key, record.value)


class TxBuilder:
    """Collects the row changes of one source transaction; :meth:`commit` emits its records."""

    def __init__(self, connector: FakeConnector) -> None:
        self._connector = connector
        self._rows: list[_PendingRow] = []

    def insert(self, table: str, after: Mapping[str, object]) -> TxBuilder:
        self._rows.append(_PendingRow(table, "c", None, after))
        return self

    def update(self, table: str, before: Mapping[str, object], **changes: object) -> TxBuilder:
        self._rows.append(_PendingRow(table, "u", before, {**before, **changes}))
        return self

    def delete(self, table: str, before: Mapping[str, object]) -> TxBuilder:
        self._rows.append(_PendingRow(table, "d", before, None))
        return self

    def commit(self) -> CommittedTx:
        return self._connector.commit(self._rows)


# --------------------------------------------------------------------------------------
# Bahmni scenarios (DATA_MODEL.md §2, §3, §5, §8.2)
# --------------------------------------------------------------------------------------


def diagnosis_group(first_obs_id: int, encounter_id: int, *, initial_of: int | None = None) -> list[dict[str, object]]:
    """A ``Visit Diagnoses`` obs group: parent + coded diagnosis, certainty, order, initial, revised."""
    group = first_obs_id
    initial = _uuid("obs", initial_of if initial_of is not None else group)
    return [
        obs_row(group, encounter_id, VISIT_DIAGNOSES),
        obs_row(group + 1, encounter_id, CODED_DIAGNOSIS, group=group, value_coded=HYPERTHYROIDISM),
        obs_row(group + 2, encounter_id, CERTAINTY, group=group, value_coded=CONFIRMED),
        obs_row(group + 3, encounter_id, DX_ORDER, group=group, value_coded=PRIMARY),
        obs_row(group + 4, encounter_id, INITIAL_DX, group=group, value_text=initial),
        obs_row(group + 5, encounter_id, REVISED_DX, group=group, value_coded=FALSE),
    ]


def bahmni_save(
    connector: FakeConnector,
    *,
    encounter_id: int = 5,
    visit_id: int = 3,
    first_obs_id: int = 56,
    drug_order_id: int = 11,
    lab_order_id: int = 12,
    encounter_provider_id: int = 9,
    visit_attribute_id: int = 4,
    new_encounter: bool = True,
) -> CommittedTx:
    """One consultation Save: the encounter row only when new (later Saves leave it untouched),
    a diagnosis obs group, a drug order (orders + drug_order), a lab order, the provider and
    the Visit Status attribute, flushed together (emrapi FlushMode MANUAL)."""
    tx = connector.transaction()
    if new_encounter:
        tx.insert("encounter", encounter_row(encounter_id, visit_id))
    for row in diagnosis_group(first_obs_id, encounter_id):
        tx.insert("obs", row)
    tx.insert("orders", order_row(drug_order_id, encounter_id, METHIMAZOLE))
    tx.insert("drug_order", drug_order_row(drug_order_id))
    tx.insert("orders", order_row(lab_order_id, encounter_id, THYROID_FUNCTION, order_type_id=3))
    if new_encounter:
        tx.insert("encounter_provider", encounter_provider_row(encounter_provider_id, encounter_id))
        tx.insert("visit_attribute", visit_attribute_row(visit_attribute_id, visit_id))
    else:
        attr = visit_attribute_row(visit_attribute_id, visit_id)
        tx.update("visit_attribute", attr, date_changed=ms(NOW), changed_by=4)
    return tx.commit()


def diagnosis_revision(
    connector: FakeConnector,
    *,
    old_encounter: int = 5,
    old_group: int = 56,
    new_encounter: int = 12,
    first_obs_id: int = 80,
) -> CommittedTx:
    """A follow-up encounter revises an older diagnosis: a new group in the new encounter, and
    the *old* encounter's Revised member re-versioned to True in the same transaction."""
    old_revised = obs_row(old_group + 5, old_encounter, REVISED_DX, group=old_group, value_coded=FALSE)
    tx = connector.transaction()
    for row in diagnosis_group(first_obs_id, new_encounter, initial_of=old_group):
        tx.insert("obs", row)
    tx.insert(
        "obs",
        obs_row(
            first_obs_id + 6,
            old_encounter,
            REVISED_DX,
            group=old_group,
            value_coded=TRUE,
            previous_version=old_group + 5,
            status="AMENDED",
        ),
    )
    tx.update("obs", old_revised, voided=1, voided_by=4, date_voided=ms(NOW), void_reason="revised")
    return tx.commit()


def void_encounter(
    connector: FakeConnector,
    *,
    encounter_id: int = 5,
    visit_id: int = 3,
    obs_ids: range = range(56, 62),
    order_id: int = 11,
) -> CommittedTx:
    """``EncounterService.voidEncounter``: obs, orders and providers voided, then the encounter."""
    tx = connector.transaction()
    for obs_id in obs_ids:
        tx.update("obs", obs_row(obs_id, encounter_id, VISIT_DIAGNOSES), voided=1, void_reason="Erroneous")
    tx.update("orders", order_row(order_id, encounter_id, METHIMAZOLE), voided=1)
    tx.update("encounter_provider", encounter_provider_row(9, encounter_id), voided=1)
    encounter = encounter_row(encounter_id, visit_id)
    tx.update("encounter", encounter, voided=1, voided_by=4, date_voided=ms(NOW), void_reason="Erroneous")
    return tx.commit()


def close_visit(connector: FakeConnector, *, visit_id: int = 3, stopped: str = "2024-05-06 17:00:00") -> CommittedTx:
    """The UI's "close visit" (or the auto-close scheduler): ``visit.date_stopped`` set."""
    return connector.transaction().update("visit", visit_row(visit_id), date_stopped=ms(stopped)).commit()


def parsed(records: list[Record]) -> Iterator[ChangeEvent]:
    return (record.parse() for record in records)
