"""Reassemble source transactions from Debezium's interleaved streams.

One Bahmni Save is one database transaction (``DATA_MODEL.md`` §6), so the transaction, not
the row, is the unit of change. Debezium spreads it over one topic per table plus the
transaction topic, and the consumer reads those partitions in no particular relative order:
the END can arrive before some of its rows. A transaction is therefore *complete* when its END
has been seen **and** the rows received per data collection reach the END's counts.

Delivery is at-least-once (``INFRA.md`` §4.6): the last END of a connector run is re-emitted
after a restart, and records after the last offset flush replay. The buffer is idempotent:

* a row already held (same ``<db>.<table>`` + ``data_collection_order``, or same position) is
  folded into its transaction (its position is settled with it);
* any record of a transaction completed recently (bounded LRU of ids) is reported as
  ``ignored``: its effect is covered by the original records.

Rows without transaction metadata: snapshot rows (``op`` ``r``) are ``ignored`` (they
describe history, not a change to claim); a streaming row without metadata becomes its own
single-row transaction. A transaction that never completes is returned by :meth:`expire`
(``complete=False``) so it cannot pin memory or offsets forever; rows that turn up for an
expired transaction afterwards are passed on at once, one partial transaction each.

Same-position redeliveries (a consumer seek) must be dropped *before* the buffer, by
:meth:`cdc_claims.pipeline.offsets.OffsetTracker.track`: the buffer cannot tell whether the
first delivery's effect is durable yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cdc_claims.capture.envelope import ChangeEvent, Position, RowChange, Tombstone, TxMarker, TxStatus
from cdc_claims.lru import Lru


@dataclass(frozen=True)
class Transaction:
    """A source transaction ready to be interpreted (or the part of one that ever arrived)."""

    tx_id: str
    rows: tuple[RowChange, ...]  # ordered by ``transaction.total_order``
    positions: tuple[Position, ...]  # every record that belongs to it, BEGIN/END and duplicates included
    commit_ts_ms: int | None  # latest ``source.ts_ms`` of its rows, else the END's ``ts_ms``
    complete: bool = True  # False: handed out by :meth:`TransactionBuffer.expire`, rows may be missing
    transactional: bool = True  # False: a streaming row without transaction metadata

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(row.table for row in self.rows)


@dataclass(frozen=True)
class FeedResult:
    """What one :meth:`TransactionBuffer.feed` produced."""

    completed: tuple[Transaction, ...] = ()
    #: Records with nothing left to do (snapshot rows, tombstones, replays of finished
    #: transactions): the caller marks them done at once.
    ignored: tuple[Position, ...] = ()


@dataclass
class _Open:
    """Mutable accumulator of one transaction still waiting for rows or for its END."""

    tx_id: str
    last_seen: float
    rows: dict[tuple[str, int], RowChange] = field(default_factory=dict)
    positions: dict[Position, None] = field(default_factory=dict)  # an ordered set
    end: TxMarker | None = None

    def add_position(self, position: Position) -> bool:
        if position in self.positions:
            return False
        self.positions[position] = None
        return True

    def is_complete(self, watched: frozenset[str] | None) -> bool:
        if self.end is None:
            return False
        per_table = Counter(collection for collection, _ in self.rows)
        expected = {n: c for n, c in self.end.collections.items() if watched is None or n in watched}
        if any(per_table[name] < count for name, count in expected.items()):
            return False
        if watched is not None and self.end.collections:
            return True  # the total counts tables we do not read
        return self.end.event_count is None or len(self.rows) >= self.end.event_count

    def freeze(self, *, complete: bool) -> Transaction:
        rows = tuple(sorted(self.rows.values(), key=lambda r: (r.tx_order or 0, r.position)))
        commit_ts = max((r.source_ts_ms for r in rows), default=None)
        if commit_ts is None and self.end is not None:
            commit_ts = self.end.ts_ms
        return Transaction(self.tx_id, rows, tuple(sorted(self.positions)), commit_ts, complete=complete)


class TransactionBuffer:
    """Feed parsed records in any interleaving; get completed transactions back.

    ``now`` is any monotonic number of seconds the caller chooses; it is only compared with
    itself in :meth:`expire`.

    ``watched``: the data collections (``<db>.<table>``) the consumer subscribes to. The
    connector may capture more tables than we read (``infra/kafka/openmrs-mariadb.json``
    also captures ``conditions``, ``patient``, ``person_name``); their END counts would
    otherwise keep every transaction that wrote them incomplete until it expires.
    ``None`` = every collection an END names is expected.
    """

    def __init__(self, *, watched: Iterable[str] | None = None, remember_completed: int = 10_000) -> None:
        self._watched = None if watched is None else frozenset(watched)
        self._open: dict[str, _Open] = {}
        # ids of transactions finished recently: an LRU used as a set (the values mean nothing)
        self._completed: Lru[str, None] = Lru(remember_completed)
        self._expired: Lru[str, None] = Lru(remember_completed)
        # kept up to date on every change, so flow control can read them on every poll for free
        self._rows_without_end: Counter[str] = Counter()  # data collection -> rows
        self._ends_without_rows = 0

    # -- counts, for metrics and memory bounds ------------------------------------------
    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def buffered_rows(self) -> int:
        return sum(len(o.rows) for o in self._open.values())

    @property
    def rows_waiting_for_end(self) -> int:
        """Rows of transactions whose END has not been read yet: the data topics run ahead."""
        return self._rows_without_end.total()

    def rows_waiting_for_end_by_collection(self) -> dict[str, int]:
        """The same, per data collection (``<db>.<table>``): which topics run ahead."""
        return {name: n for name, n in self._rows_without_end.items() if n > 0}

    @property
    def ends_waiting_for_rows(self) -> int:
        """Transactions whose END was read but not all their rows: the transaction topic runs ahead."""
        return self._ends_without_rows

    @property
    def remembered_count(self) -> int:
        return len(self._completed) + len(self._expired)

    def is_finished(self, tx_id: str) -> bool:
        """True if ``tx_id`` was completed or expired recently (and is still remembered)."""
        return self._completed.touch(tx_id) or self._expired.touch(tx_id)

    # -- feeding -------------------------------------------------------------------------
    def feed(self, event: ChangeEvent, now: float) -> FeedResult:
        if isinstance(event, Tombstone):
            return FeedResult(ignored=(event.position,))
        if isinstance(event, TxMarker):
            return self._feed_marker(event, now)
        return self._feed_row(event, now)

    def _feed_row(self, row: RowChange, now: float) -> FeedResult:
        if row.snapshot:
            return FeedResult(ignored=(row.position,))
        if row.tx_id is None:
            tx_id = f"{row.position.topic}/{row.position.partition}/{row.position.offset}"
            single = Transaction(tx_id, (row,), (row.position,), row.source_ts_ms, transactional=False)
            return FeedResult(completed=(single,))
        if self._completed.touch(row.tx_id):
            return FeedResult(ignored=(row.position,))
        if self._expired.touch(row.tx_id):
            late = Transaction(row.tx_id, (row,), (row.position,), row.source_ts_ms, complete=False)
            return FeedResult(completed=(late,))
        tx = self._open_tx(row.tx_id, now)
        if tx.add_position(row.position):
            key = (row.data_collection, row.collection_order or 0)
            if key not in tx.rows:
                tx.rows[key] = row
                if tx.end is None:
                    self._rows_without_end[row.data_collection] += 1
        return self._maybe_complete(tx)

    def _feed_marker(self, marker: TxMarker, now: float) -> FeedResult:
        if self._completed.touch(marker.tx_id) or self._expired.touch(marker.tx_id):
            return FeedResult(ignored=(marker.position,))
        tx = self._open_tx(marker.tx_id, now)
        if tx.add_position(marker.position) and marker.status is TxStatus.END and tx.end is None:
            tx.end = marker
            self._rows_without_end.subtract(collection for collection, _ in tx.rows)
            self._ends_without_rows += 1
        return self._maybe_complete(tx)

    def _open_tx(self, tx_id: str, now: float) -> _Open:
        tx = self._open.get(tx_id)
        if tx is None:
            tx = self._open[tx_id] = _Open(tx_id, now)
        tx.last_seen = now
        return tx

    def _maybe_complete(self, tx: _Open) -> FeedResult:
        if not tx.is_complete(self._watched):
            return FeedResult()
        self._close(tx)
        self._completed.put(tx.tx_id, None)
        return FeedResult(completed=(tx.freeze(complete=True),))

    # -- bounding ------------------------------------------------------------------------
    def expire(self, now: float, older_than: float) -> tuple[Transaction, ...]:
        """Give up on transactions without any record for ``older_than`` seconds.

        They come back with ``complete=False`` (oldest first) for best-effort processing; the
        caller logs them. An END re-emitted after a sidecar restart, whose rows were committed
        before the restart, ends here as an empty partial transaction.
        """
        stale = sorted((o for o in self._open.values() if now - o.last_seen >= older_than), key=lambda o: o.last_seen)
        for tx in stale:
            self._close(tx)
            self._expired.put(tx.tx_id, None)
        return tuple(tx.freeze(complete=False) for tx in stale)

    def _close(self, tx: _Open) -> None:
        del self._open[tx.tx_id]
        if tx.end is None:
            self._rows_without_end.subtract(collection for collection, _ in tx.rows)
        else:
            self._ends_without_rows -= 1
