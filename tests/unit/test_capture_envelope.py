"""cdc_claims.capture.envelope: Debezium records -> RowChange / TxMarker / Tombstone."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest
from debezium_fixtures import (
    TX_TOPIC,
    FakeConnector,
    Record,
    dumps,
    encounter_row,
    ms,
    obs_row,
    topic,
    visit_row,
)

from cdc_claims.capture import (
    MALFORMED_REASONS,
    Op,
    Position,
    RowChange,
    Tombstone,
    TxMarker,
    TxStatus,
    as_bool,
    as_datetime,
    as_decimal,
    as_int,
    parse_record,
)
from cdc_claims.errors import MalformedEvent


def _envelope(record: Record) -> dict[str, object]:
    assert record.value is not None
    value = json.loads(record.value)
    assert isinstance(value, dict)
    return value


def _with_value(record: Record, value: object) -> Record:
    return Record(record.topic, record.partition, record.offset, record.key, dumps(value))


def _insert_obs() -> Record:
    return FakeConnector().transaction().insert("obs", obs_row(56, 5, 15)).commit().rows[0]


def test_insert_row_parses_all_fields() -> None:
    tx = (
        FakeConnector()
        .transaction()
        .insert("obs", obs_row(56, 5, 15))
        .insert("obs", obs_row(57, 5, 16, group=56))
        .commit()
    )
    event = tx.rows[1].parse()
    assert isinstance(event, RowChange)
    assert event.table == "obs"
    assert event.database == "openmrs"
    assert event.data_collection == "openmrs.obs"
    assert event.op is Op.CREATE
    assert event.before is None
    assert event.after is not None and event.after["obs_group_id"] == 56
    assert dict(event.pk) == {"obs_id": 57}
    assert event.tx_id == tx.gtid == "0-1-42"
    assert event.gtid == tx.gtid
    assert (event.tx_order, event.collection_order) == (2, 2)
    assert event.snapshot is False
    assert event.position == Position(topic("obs"), 0, 1)
    assert event.value("encounter_id") == 5


def test_update_and_delete_keep_before_images() -> None:
    conn = FakeConnector()
    tx = (
        conn.transaction()
        .update("encounter", encounter_row(5, 3), visit_id=4)
        .delete("obs", obs_row(56, 5, 15))
        .commit()
    )
    update, delete = (r.parse() for r in tx.rows)
    assert isinstance(update, RowChange) and isinstance(delete, RowChange)
    assert update.op is Op.UPDATE
    assert [image["visit_id"] for image in update.images] == [3, 4]
    assert delete.op is Op.DELETE and delete.after is None
    assert delete.value("encounter_id") == 5  # falls back to the before image


def test_row_images_are_read_only() -> None:
    event = _insert_obs().parse()
    assert isinstance(event, RowChange) and event.after is not None
    with pytest.raises(TypeError):
        event.after["voided"] = 1  # type: ignore[index]


def test_snapshot_row_has_no_transaction() -> None:
    event = FakeConnector().snapshot_row("visit", visit_row(3), marker="last").parse()
    assert isinstance(event, RowChange)
    assert event.op is Op.READ and event.snapshot is True
    assert event.tx_id is None and event.tx_order is None


def test_begin_and_end_markers() -> None:
    tx = FakeConnector().transaction().insert("obs", obs_row(56, 5, 15)).insert("orders", {"order_id": 11}).commit()
    begin, end = tx.begin.parse(), tx.end.parse()
    assert isinstance(begin, TxMarker) and isinstance(end, TxMarker)
    assert begin.status is TxStatus.BEGIN and begin.event_count is None and dict(begin.collections) == {}
    assert end.status is TxStatus.END and end.tx_id == tx.gtid
    assert end.event_count == 2
    assert dict(end.collections) == {"openmrs.obs": 1, "openmrs.orders": 1}
    assert end.position == Position(TX_TOPIC, 0, 1)


def test_tombstone_follows_delete() -> None:
    tx = FakeConnector().transaction().delete("obs", obs_row(56, 5, 15)).commit()
    event = tx.tombstones[0].parse()
    assert isinstance(event, Tombstone)
    assert event.key is not None and dict(event.key) == {"obs_id": 56}
    assert event.position == Position(topic("obs"), 0, tx.rows[0].offset + 1)


def test_schema_wrapped_value_is_unwrapped() -> None:
    record = _insert_obs()
    wrapped = _with_value(record, {"schema": {"type": "struct"}, "payload": _envelope(record)})
    event = wrapped.parse()
    assert isinstance(event, RowChange) and event.table == "obs"


@pytest.mark.parametrize(
    ("value", "reason", "needle"),
    [
        (b"{not json", "invalid_json", "value is not JSON"),
        (b"\xff\xfe", "invalid_json", "value is not JSON"),
        (b"[1, 2]", "invalid_envelope", "JSON list"),
    ],
)
def test_unparseable_values(value: bytes, reason: str, needle: str) -> None:
    record = _insert_obs()
    with pytest.raises(MalformedEvent) as err:
        Record(record.topic, 0, 7, record.key, value).parse()
    assert err.value.reason == reason
    assert needle in err.value.message
    assert f"{topic('obs')}[0]@7" in err.value.message


def test_key_must_be_an_object() -> None:
    record = _insert_obs()
    with pytest.raises(MalformedEvent) as err:
        Record(record.topic, 0, 0, b"56", record.value).parse()
    assert err.value.reason == "invalid_key"


def _broken(mutate: dict[str, object]) -> MalformedEvent:
    record = _insert_obs()
    env = _envelope(record)
    for path, new in mutate.items():
        target = env
        *parents, last = path.split(".")
        for part in parents:
            child = target[part]
            assert isinstance(child, dict)
            target = child
        if new is _DROP:
            del target[last]
        else:
            target[last] = new
    with pytest.raises(MalformedEvent) as err:
        _with_value(record, env).parse()
    return err.value


_DROP = object()


@pytest.mark.parametrize(
    ("mutate", "reason", "needle"),
    [
        ({"op": "x"}, "invalid_envelope", "op is 'x'"),
        ({"op": _DROP}, "invalid_envelope", "op is None"),
        ({"op": ["c"]}, "invalid_envelope", "op is ['c']"),
        ({"after": None}, "invalid_envelope", "without an 'after' image"),
        ({"after": "row"}, "invalid_envelope", "'after' is a JSON str"),
        ({"op": "u"}, "invalid_envelope", "without a 'before' image"),
        ({"source": _DROP}, "invalid_envelope", "missing 'source'"),
        ({"source.table": _DROP}, "invalid_envelope", "source.table is None"),
        ({"source.db": ""}, "invalid_envelope", "source.db is ''"),
        ({"source.ts_ms": "yesterday"}, "invalid_envelope", "source.ts_ms"),
        ({"source.gtid": 42}, "invalid_envelope", "source.gtid"),
        ({"transaction": "0-1-42"}, "invalid_transaction", "not an object"),
        ({"transaction.id": None}, "invalid_transaction", "transaction.id is None"),
        ({"transaction.total_order": "3"}, "invalid_transaction", "total_order='3'"),
        ({"transaction.data_collection_order": True}, "invalid_transaction", "data_collection_order=True"),
    ],
)
def test_broken_envelopes(mutate: dict[str, object], reason: str, needle: str) -> None:
    error = _broken(mutate)
    assert error.reason == reason
    assert reason in MALFORMED_REASONS
    assert needle in error.message


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"status": "COMMIT", "id": "0-1-1"}, "status is 'COMMIT'"),
        ({"status": "BEGIN", "id": ""}, "transaction id is ''"),
        ({"status": "END", "id": "0-1-1"}, "END without event_count"),
        ({"status": "END", "id": "0-1-1", "event_count": "2"}, "event_count is '2'"),
        ({"status": "END", "id": "0-1-1", "event_count": 1, "data_collections": {}}, "not a list"),
        (
            {
                "status": "END",
                "id": "0-1-1",
                "event_count": 1,
                "data_collections": [{"data_collection": "openmrs.obs"}],
            },
            "data_collections entry",
        ),
        ({"status": "BEGIN", "id": "0-1-1", "ts_ms": 1.5}, "ts_ms is 1.5"),
    ],
)
def test_broken_transaction_markers(value: dict[str, object], needle: str) -> None:
    with pytest.raises(MalformedEvent) as err:
        parse_record(TX_TOPIC, 0, 3, dumps({"id": "0-1-1"}), dumps(value), transaction_topic=TX_TOPIC)
    assert err.value.reason == "invalid_transaction"
    assert needle in err.value.message


def test_null_json_value_is_a_tombstone() -> None:
    event = parse_record(topic("obs"), 0, 3, dumps({"obs_id": 1}), b"null", transaction_topic=TX_TOPIC)
    assert isinstance(event, Tombstone)


# -- column helpers ---------------------------------------------------------------------


def test_as_datetime_accepts_epoch_millis_and_iso() -> None:
    expected = datetime(2024, 5, 6, 17, 0, 0)
    assert as_datetime(ms("2024-05-06 17:00:00")) == expected
    assert as_datetime(str(ms("2024-05-06 17:00:00"))) == expected
    assert as_datetime("2024-05-06T17:00:00Z") == expected
    assert as_datetime("2024-05-06T19:00:00+02:00") == expected
    assert as_datetime("2024-05-06T17:00:00.250") == datetime(2024, 5, 6, 17, 0, 0, 250_000)
    assert as_datetime(None) is None


@pytest.mark.parametrize("bad", ["tomorrow", True, [1]])
def test_as_datetime_rejects(bad: object) -> None:
    with pytest.raises(MalformedEvent) as err:
        as_datetime(bad)
    assert err.value.reason == "invalid_value"


def test_as_bool() -> None:
    values = (1, 0, True, False, "1", "false", None)
    assert [as_bool(v) for v in values] == [True, False, True, False, True, False, None]
    with pytest.raises(MalformedEvent):
        as_bool("maybe")


def test_as_int() -> None:
    assert [as_int(v) for v in (5, "5", 5.0, None)] == [5, 5, 5, None]
    bad_values: tuple[object, ...] = (True, 5.5, "five", {})
    for bad in bad_values:
        with pytest.raises(MalformedEvent):
            as_int(bad)


def test_as_decimal() -> None:
    assert as_decimal("12.50") == Decimal("12.50")
    assert as_decimal(84) == Decimal(84)
    assert as_decimal(2.5) == Decimal("2.5")
    assert as_decimal(None) is None
    for bad in (True, "12,50", [1]):
        with pytest.raises(MalformedEvent):
            as_decimal(bad)
