"""Capture: Debezium records -> source transactions -> what they touched.

``parse_record`` turns one Kafka record into a :class:`RowChange`, :class:`TxMarker` or
:class:`Tombstone`; :class:`TransactionBuffer` reassembles committed transactions from the
interleaved topics; :func:`touched_by` says which encounters, visits and patients one touched.
"""

from cdc_claims.capture.envelope import (
    MALFORMED_REASONS,
    ChangeEvent,
    Op,
    Position,
    Row,
    RowChange,
    Tombstone,
    TopicPartition,
    TxMarker,
    TxStatus,
    as_bool,
    as_datetime,
    as_decimal,
    as_int,
    parse_record,
)
from cdc_claims.capture.touched import EXTRACTORS, TOUCH_COLUMNS, Touches, slim, touched_by
from cdc_claims.capture.transactions import FeedResult, Transaction, TransactionBuffer

__all__ = [
    "EXTRACTORS",
    "MALFORMED_REASONS",
    "TOUCH_COLUMNS",
    "ChangeEvent",
    "FeedResult",
    "Op",
    "Position",
    "Row",
    "RowChange",
    "Tombstone",
    "TopicPartition",
    "Touches",
    "Transaction",
    "TransactionBuffer",
    "TxMarker",
    "TxStatus",
    "as_bool",
    "as_datetime",
    "as_decimal",
    "as_int",
    "parse_record",
    "slim",
    "touched_by",
]
