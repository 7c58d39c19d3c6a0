"""cdc_claims.pipeline.offsets: commit only what is durable."""

from __future__ import annotations

from debezium_fixtures import (
    TX_TOPIC,
    FakeConnector,
    Record,
    bahmni_save,
    diagnosis_revision,
    topic,
    visit_row,
)

from cdc_claims.capture import Position, TransactionBuffer, touched_by
from cdc_claims.pipeline.offsets import OffsetTracker
from cdc_claims.settings import SettleSettings
from cdc_claims.settle import SettleTracker

OBS = topic("obs")


def _p(offset: int, name: str = OBS, partition: int = 0) -> Position:
    return Position(name, partition, offset)


def test_committable_is_lowest_pending_or_next_after_last_seen() -> None:
    offsets = OffsetTracker()
    for o in (10, 11, 12):
        assert offsets.track(_p(o))
    assert offsets.committable() == {(OBS, 0): 10}
    offsets.done([_p(11)])
    assert offsets.committable() == {(OBS, 0): 10}  # 10 still pending: 11 cannot be committed past it
    offsets.done([_p(10)])
    assert offsets.committable() == {(OBS, 0): 12}
    offsets.done([_p(12)])
    assert offsets.committable() == {(OBS, 0): 13}  # Kafka commits the next offset to read
    assert offsets.pending_count == 0


def test_gaps_in_offsets_are_fine() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(5))
    offsets.track(_p(7))  # 6 was a transaction control record
    offsets.done([_p(5), _p(7)])
    assert offsets.committable() == {(OBS, 0): 8}


def test_redelivery_is_reported_and_not_tracked_again() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(3))
    offsets.done([_p(3)])
    assert offsets.track(_p(3)) is False
    assert offsets.track(_p(2)) is False
    assert offsets.pending_count == 0
    assert offsets.track(_p(4)) is True


def test_partitions_are_independent() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(0))
    offsets.track(_p(0, partition=1))
    offsets.done([_p(0, partition=1)])
    assert offsets.committable() == {(OBS, 0): 0, (OBS, 1): 1}


def test_owned_positions_wait_for_every_owner() -> None:
    offsets = OffsetTracker()
    positions = [_p(0), _p(1), _p(0, TX_TOPIC)]
    for p in positions:
        offsets.track(p)
    offsets.assign(positions, "tx-a")
    offsets.assign([_p(1)], "tx-b")
    assert offsets.release("tx-a") == (_p(0), _p(0, TX_TOPIC))
    assert offsets.is_pending(_p(1))
    assert offsets.committable() == {(OBS, 0): 1, (TX_TOPIC, 0): 1}
    assert offsets.release("tx-b") == (_p(1),)
    assert offsets.committable() == {(OBS, 0): 2, (TX_TOPIC, 0): 1}
    assert offsets.release("tx-b") == ()  # releasing twice is harmless


def test_done_overrides_owners_and_assign_skips_finished_positions() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(0))
    offsets.assign([_p(0)], "tx")
    offsets.done([_p(0)])  # e.g. dead-lettered
    assert offsets.release("tx") == ()
    offsets.assign([_p(0), _p(99)], "other")  # neither pending: nothing to hold
    assert offsets.release("other") == ()
    assert offsets.committable() == {(OBS, 0): 1}


def test_to_commit_only_reports_progress() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(0))
    offsets.track(_p(1))
    assert offsets.to_commit() == {(OBS, 0): 0}
    offsets.mark_committed({(OBS, 0): 0})
    assert offsets.to_commit() == {}
    offsets.done([_p(0)])
    assert offsets.to_commit() == {(OBS, 0): 1}
    offsets.mark_committed({(OBS, 0): 1, ("unknown", 0): 5})
    assert offsets.to_commit() == {}


def test_forget_a_revoked_partition() -> None:
    offsets = OffsetTracker()
    offsets.track(_p(0))
    offsets.track(_p(0, partition=1))
    offsets.assign([_p(0), _p(0, partition=1)], "tx")
    offsets.forget(OBS, 1)
    assert offsets.committable() == {(OBS, 0): 0}
    assert offsets.release("tx") == (_p(0),)
    offsets.forget("nothing", 0)
    assert offsets.track(_p(0, partition=1)) is True  # reassigned later: starts afresh
    assert offsets.pending_in(OBS, 1) == (0,)


# -- the whole pure path: records -> transactions -> units -> offsets ----------------------


class _Pipeline:
    """The consumer loop without Kafka: what the pipeline module is expected to do."""

    def __init__(self, settle_seconds: float = 10) -> None:
        self.offsets = OffsetTracker()
        self.buffer = TransactionBuffer()
        self.settle = SettleTracker(SettleSettings(settle_seconds=settle_seconds))

    def consume(self, record: Record, now: float) -> None:
        position = Position(record.topic, record.partition, record.offset)
        if not self.offsets.track(position):
            return
        result = self.buffer.feed(record.parse(), now)
        self.offsets.done(result.ignored)
        for tx in result.completed:
            self.settle.record(touched_by(tx), now, tag=tx.tx_id)
            if self.settle.holds(tx.tx_id):
                self.offsets.assign(tx.positions, tx.tx_id)
            else:
                self.offsets.done(tx.positions)

    def settle_all(self, now: float) -> None:
        for due in self.settle.due(now):
            for tag in self.settle.done(due.unit, due.token):  # "claim submitted, reply published"
                self.offsets.release(tag)


def test_offsets_advance_only_after_the_claim_is_durable() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn, encounter_id=5)
    pipe = _Pipeline()
    for record in save.end_first():
        pipe.consume(record, 0.0)
    obs_topic_start = {(r.topic, 0): r.offset for r in reversed(save.all)}  # lowest offset per topic
    assert pipe.offsets.committable() == obs_topic_start  # nothing durable yet

    pipe.settle_all(5.0)  # not quiet yet
    assert pipe.offsets.committable() == obs_topic_start
    pipe.settle_all(10.0)
    assert pipe.offsets.pending_count == 0
    assert pipe.offsets.committable()[(TX_TOPIC, 0)] == save.end.offset + 1
    last_obs = max(r.offset for r in save.rows if r.topic == topic("obs"))
    assert pipe.offsets.committable()[(topic("obs"), 0)] == last_obs + 1


def test_two_encounter_transaction_commits_after_both_claims() -> None:
    conn = FakeConnector()
    revision = diagnosis_revision(conn, old_encounter=5, new_encounter=12)
    pipe = _Pipeline()
    for record in revision.in_order():
        pipe.consume(record, 0.0)
    first, second = pipe.settle.due(10.0)
    for tag in pipe.settle.done(first.unit, first.token):
        pipe.offsets.release(tag)
    assert pipe.offsets.committable()[(TX_TOPIC, 0)] == revision.begin.offset
    for tag in pipe.settle.done(second.unit, second.token):
        pipe.offsets.release(tag)
    assert pipe.offsets.committable()[(TX_TOPIC, 0)] == revision.end.offset + 1


def test_snapshot_rows_and_replays_do_not_hold_commits() -> None:
    conn = FakeConnector()
    pipe = _Pipeline()
    snap = conn.snapshot_row("visit", visit_row(3))
    pipe.consume(snap, 0.0)
    assert pipe.offsets.committable() == {(topic("visit"), 0): snap.offset + 1}

    save = bahmni_save(conn)
    for record in save.in_order():
        pipe.consume(record, 0.0)
    pipe.settle_all(10.0)
    replayed_end = conn.reemit(save.end)
    pipe.consume(replayed_end, 20.0)
    pipe.consume(save.end, 20.0)  # a same-position redelivery is dropped before the buffer
    assert pipe.offsets.pending_count == 0
    assert pipe.offsets.committable()[(TX_TOPIC, 0)] == replayed_end.offset + 1
