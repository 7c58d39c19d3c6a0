"""Parse one Debezium Kafka record into a small frozen value: a row change, a transaction
marker, or a tombstone.

Bytes in, values out (the h11 habit): nothing here knows about a consumer or a clock, so every
edge case of the wire format is a plain unit test. The connector emits the *full envelope*
(``before``/``after``/``source``/``op``/``transaction``) as schemaless JSON
(``infra/INFRA.md`` §4); if someone switches ``value.converter.schemas.enable`` on, the
``{"schema", "payload"}`` wrapper is peeled off rather than dead-lettering every record.

Anything we cannot trust raises :class:`~cdc_claims.errors.MalformedEvent` with a short,
bounded ``reason`` (one of :data:`MALFORMED_REASONS`, fit for a metric label) and a message that
names the record position and the offending field (fit for the dead-letter record). A record
is never silently dropped here: the caller dead-letters it, then marks its offset done.

Column values keep their JSON types; the ``as_*`` helpers decode the three encodings the
connector settings in use produce (epoch-millisecond or ISO DATETIMEs, DECIMAL strings,
TINYINT(1) booleans as ints or bools).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from types import MappingProxyType
from typing import TypeGuard

from cdc_claims.errors import MalformedEvent

#: One row image (``before`` or ``after``) or a record key: column name -> JSON value.
Row = Mapping[str, object]
TopicPartition = tuple[str, int]

#: Every ``MalformedEvent.reason`` this module raises, with what it means.
MALFORMED_REASONS: dict[str, str] = {
    "invalid_json": "key or value is not UTF-8 JSON",
    "invalid_key": "the record key is not a JSON object",
    "invalid_envelope": "the value is not a Debezium change envelope (missing or mistyped field)",
    "invalid_transaction": "transaction metadata (data row block or BEGIN/END record) is unusable",
    "invalid_value": "a column value cannot be decoded as the type the column needs",
}

_SNAPSHOT_FALSE = frozenset({"false", ""})
_EPOCH = datetime(1970, 1, 1)  # naive: OpenMRS DATETIME has no zone, Debezium encodes it "as if UTC"


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Where a record was read: the unit of offset bookkeeping."""

    topic: str
    partition: int
    offset: int

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot


class TxStatus(StrEnum):
    BEGIN = "BEGIN"
    END = "END"


@dataclass(frozen=True)
class RowChange:
    """One row-level change of one captured table, as Debezium saw it in the binlog."""

    table: str
    database: str
    op: Op
    before: Row | None = field(hash=False)
    after: Row | None = field(hash=False)
    pk: Row = field(hash=False)
    tx_id: str | None  # MariaDB: the GTID of the source transaction; None for snapshot rows
    tx_order: int | None  # ``transaction.total_order``: position inside the transaction
    collection_order: int | None  # ``transaction.data_collection_order``: position inside its table
    gtid: str | None
    source_ts_ms: int  # binlog event time (commit time of the source transaction)
    snapshot: bool
    position: Position

    @property
    def data_collection(self) -> str:
        """``<db>.<table>``, the name END records count rows under."""
        return f"{self.database}.{self.table}"

    @property
    def images(self) -> tuple[Row, ...]:
        """The images present, ``before`` first: a moved row touches both its old and new parent."""
        return tuple(image for image in (self.before, self.after) if image is not None)

    def value(self, column: str) -> object:
        """The column's current value: from ``after``, or ``before`` for a delete."""
        image = self.after if self.after is not None else self.before
        return None if image is None else image.get(column)


@dataclass(frozen=True)
class TxMarker:
    """A BEGIN or END record from the transaction topic."""

    status: TxStatus
    tx_id: str
    event_count: int | None  # END only: data events the transaction produced
    collections: Mapping[str, int] = field(hash=False)  # END only: ``<db>.<table>`` -> event count
    ts_ms: int | None
    position: Position


@dataclass(frozen=True)
class Tombstone:
    """The null-valued record that follows a delete (log compaction only): nothing to do."""

    position: Position
    key: Row | None = field(hash=False)


ChangeEvent = RowChange | TxMarker | Tombstone


def parse_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    *,
    transaction_topic: str,
) -> ChangeEvent:
    """Parse one consumed record. ``transaction_topic`` is ``KafkaSettings.transaction_topic``.

    Raises :class:`MalformedEvent` for anything unparseable.
    """
    position = Position(topic, partition, offset)
    key_obj = _decode(key, position, "key")
    if key_obj is not None and not isinstance(key_obj, dict):
        raise _bad("invalid_key", position, f"key is a JSON {type(key_obj).__name__}, expected an object")
    value_obj = _decode(value, position, "value")
    if value_obj is None:
        return Tombstone(position, None if key_obj is None else MappingProxyType(key_obj))
    if not isinstance(value_obj, dict):
        raise _bad("invalid_envelope", position, f"value is a JSON {type(value_obj).__name__}, expected an object")
    if topic == transaction_topic:
        return _parse_marker(value_obj, position)
    return _parse_row(value_obj, key_obj, position)


# --------------------------------------------------------------------------------------
# Envelope parts
# --------------------------------------------------------------------------------------


def _decode(raw: bytes | None, position: Position, what: str) -> object:
    if raw is None:
        return None
    try:
        obj: object = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad("invalid_json", position, f"{what} is not JSON: {exc}") from None
    # schemas.enable=true wraps every key and value as {"schema": ..., "payload": ...}
    if isinstance(obj, dict) and obj.keys() == {"schema", "payload"}:
        obj = obj["payload"]
    return obj


def _parse_row(env: dict[str, object], key: dict[str, object] | None, position: Position) -> RowChange:
    op_raw = env.get("op")
    try:
        op = Op(op_raw)  # type: ignore[arg-type]
    except ValueError:
        raise _bad("invalid_envelope", position, f"op is {op_raw!r}, expected one of c/u/d/r") from None
    before = _image(env, "before", position)
    after = _image(env, "after", position)
    if op is not Op.DELETE and after is None:
        raise _bad("invalid_envelope", position, f"op {op.value!r} without an 'after' image")
    if op in (Op.UPDATE, Op.DELETE) and before is None:
        raise _bad("invalid_envelope", position, f"op {op.value!r} without a 'before' image (need full row images)")

    source = env.get("source")
    if not isinstance(source, dict):
        raise _bad("invalid_envelope", position, "missing 'source' block")
    table = _required_str(source, "table", position, "source.table")
    database = _required_str(source, "db", position, "source.db")
    ts_ms = source.get("ts_ms", env.get("ts_ms"))
    if not _is_int(ts_ms):
        raise _bad("invalid_envelope", position, f"source.ts_ms is {ts_ms!r}, expected epoch milliseconds")
    gtid = source.get("gtid")
    if gtid is not None and not isinstance(gtid, str):
        raise _bad("invalid_envelope", position, f"source.gtid is {gtid!r}, expected a string")
    snap = source.get("snapshot", "false")
    snapshot = op is Op.READ or (snap is True) or (isinstance(snap, str) and snap.lower() not in _SNAPSHOT_FALSE)

    tx_id, tx_order, collection_order = _tx_block(env.get("transaction"), position)
    return RowChange(
        table=table,
        database=database,
        op=op,
        before=before,
        after=after,
        pk=MappingProxyType(key or {}),
        tx_id=tx_id,
        tx_order=tx_order,
        collection_order=collection_order,
        gtid=gtid,
        source_ts_ms=ts_ms,
        snapshot=snapshot,
        position=position,
    )


def _image(env: dict[str, object], name: str, position: Position) -> Row | None:
    image = env.get(name)
    if image is None:
        return None
    if not isinstance(image, dict):
        raise _bad("invalid_envelope", position, f"'{name}' is a JSON {type(image).__name__}, expected an object")
    return MappingProxyType(image)


def _tx_block(block: object, position: Position) -> tuple[str | None, int | None, int | None]:
    if block is None:
        return None, None, None
    if not isinstance(block, dict):
        raise _bad("invalid_transaction", position, "'transaction' is not an object")
    tx_id = block.get("id")
    total = block.get("total_order")
    per_table = block.get("data_collection_order")
    if not isinstance(tx_id, str) or not tx_id:
        raise _bad("invalid_transaction", position, f"transaction.id is {tx_id!r}")
    if not _is_int(total) or not _is_int(per_table):
        raise _bad(
            "invalid_transaction",
            position,
            f"transaction orders are total_order={total!r}, data_collection_order={per_table!r}",
        )
    return tx_id, total, per_table


def _parse_marker(value: dict[str, object], position: Position) -> TxMarker:
    status_raw = value.get("status")
    try:
        status = TxStatus(status_raw)  # type: ignore[arg-type]
    except ValueError:
        raise _bad("invalid_transaction", position, f"status is {status_raw!r}, expected BEGIN or END") from None
    tx_id = value.get("id")
    if not isinstance(tx_id, str) or not tx_id:
        raise _bad("invalid_transaction", position, f"transaction id is {tx_id!r}")
    ts_ms = value.get("ts_ms")
    if ts_ms is not None and not _is_int(ts_ms):
        raise _bad("invalid_transaction", position, f"ts_ms is {ts_ms!r}")
    event_count = value.get("event_count")
    if event_count is not None and not _is_int(event_count):
        raise _bad("invalid_transaction", position, f"event_count is {event_count!r}")
    collections: dict[str, int] = {}
    raw_collections = value.get("data_collections")
    if raw_collections is not None:
        if not isinstance(raw_collections, list):
            raise _bad("invalid_transaction", position, "data_collections is not a list")
        for entry in raw_collections:
            name = entry.get("data_collection") if isinstance(entry, dict) else None
            count = entry.get("event_count") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not _is_int(count):
                raise _bad("invalid_transaction", position, f"data_collections entry {entry!r}")
            collections[name] = collections.get(name, 0) + count
    if status is TxStatus.END and event_count is None and raw_collections is None:
        raise _bad("invalid_transaction", position, "END without event_count or data_collections")
    return TxMarker(
        status=status,
        tx_id=tx_id,
        event_count=event_count if _is_int(event_count) else None,
        collections=MappingProxyType(collections),
        ts_ms=ts_ms if _is_int(ts_ms) else None,
        position=position,
    )


def _required_str(block: dict[str, object], name: str, position: Position, label: str) -> str:
    value = block.get(name)
    if not isinstance(value, str) or not value:
        raise _bad("invalid_envelope", position, f"{label} is {value!r}, expected a non-empty string")
    return value


def _is_int(value: object) -> TypeGuard[int]:
    """JSON integers only: ``bool`` is an ``int`` subclass in Python but never an id or a count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(reason: str, position: Position, detail: str) -> MalformedEvent:
    return MalformedEvent(f"{position}: {detail}", reason=reason)


# --------------------------------------------------------------------------------------
# Column value helpers
# --------------------------------------------------------------------------------------


def as_int(value: object) -> int | None:
    """An integer column (ids arrive as JSON numbers; ``bigint.unsigned`` may arrive as a string)."""
    if value is None:
        return None
    if _is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise MalformedEvent(f"not an integer: {value!r}", reason="invalid_value")


def as_bool(value: object) -> bool | None:
    """A TINYINT(1)/BIT(1) column: ``true``/``false``, ``0``/``1`` or their string forms."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true"):
            return True
        if text in ("0", "false"):
            return False
    raise MalformedEvent(f"not a boolean: {value!r}", reason="invalid_value")


def as_datetime(value: object) -> datetime | None:
    """A DATETIME column as a naive datetime holding the database's wall-clock value.

    ``time.precision.mode=connect`` sends epoch milliseconds computed "as if UTC";
    ``isostring`` sends ISO-8601 text (possibly with ``Z``). Either way the naive result
    equals what a SELECT on the same column returns.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return _EPOCH + timedelta(milliseconds=int(text))
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise MalformedEvent(f"not a datetime: {value!r}", reason="invalid_value") from None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed
    if _is_int(value) or isinstance(value, float):
        return _EPOCH + timedelta(milliseconds=value)
    raise MalformedEvent(f"not a datetime: {value!r}", reason="invalid_value")


def as_decimal(value: object) -> Decimal | None:
    """A DECIMAL column (``decimal.handling.mode=string`` sends ``"12.50"``; ``double`` a float)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedEvent(f"not a decimal: {value!r}", reason="invalid_value")
    if isinstance(value, int | str):
        try:
            return Decimal(str(value).strip())
        except InvalidOperation:
            pass
    elif isinstance(value, float):
        return Decimal(repr(value))
    raise MalformedEvent(f"not a decimal: {value!r}", reason="invalid_value")
