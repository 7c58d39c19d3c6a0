"""cdc_claims.capture.transactions: reassembling source transactions, idempotently."""

from __future__ import annotations

import random

from debezium_fixtures import (
    TX_TOPIC,
    CommittedTx,
    FakeConnector,
    Record,
    bahmni_save,
    dumps,
    encounter_row,
    obs_row,
    visit_row,
)

from cdc_claims.capture import FeedResult, Position, RowChange, Transaction, TransactionBuffer, parse_record


def _pos(record: Record) -> Position:
    return Position(record.topic, record.partition, record.offset)


def _feed_all(buffer: TransactionBuffer, records: list[Record], now: float = 0.0) -> list[FeedResult]:
    return [buffer.feed(record.parse(), now) for record in records]


def _completed(results: list[FeedResult]) -> list[Transaction]:
    return [tx for result in results for tx in result.completed]


def _ignored(results: list[FeedResult]) -> list[Position]:
    return [pos for result in results for pos in result.ignored]


def test_bahmni_save_in_emission_order() -> None:
    save = bahmni_save(FakeConnector())
    buffer = TransactionBuffer()
    results = _feed_all(buffer, save.in_order())

    assert all(not r.completed for r in results[:-1])  # nothing before the END
    [tx] = _completed(results)
    assert tx.tx_id == save.gtid and tx.complete and tx.transactional
    assert [row.tx_order for row in tx.rows] == list(range(1, len(save.rows) + 1))
    assert tx.tables == {"encounter", "obs", "orders", "drug_order", "encounter_provider", "visit_attribute"}
    assert set(tx.positions) == {_pos(r) for r in save.all}  # BEGIN and END included
    assert tx.commit_ts_ms == max(row.source_ts_ms for row in tx.rows)
    assert buffer.open_count == 0 and buffer.buffered_rows == 0


def test_end_before_rows_waits_for_every_row() -> None:
    save = bahmni_save(FakeConnector())
    buffer = TransactionBuffer()
    records = save.end_first()
    results = _feed_all(buffer, records[:-1])
    assert _completed(results) == []
    assert buffer.open_count == 1 and buffer.buffered_rows == len(save.rows) - 1

    [tx] = buffer.feed(records[-1].parse(), 1.0).completed
    assert len(tx.rows) == len(save.rows)
    assert [row.tx_order for row in tx.rows] == sorted(row.tx_order or 0 for row in tx.rows)


def test_any_interleaving_completes_exactly_once_on_the_last_record() -> None:
    save = bahmni_save(FakeConnector())
    for seed in range(25):
        records = save.in_order()
        random.Random(seed).shuffle(records)
        buffer = TransactionBuffer()
        results = _feed_all(buffer, records)
        assert [len(r.completed) for r in results] == [0] * (len(records) - 1) + [1], seed
        assert len(results[-1].completed[0].rows) == len(save.rows)


def test_two_interleaved_transactions() -> None:
    conn = FakeConnector()
    first = bahmni_save(conn, encounter_id=5, first_obs_id=56)
    second = bahmni_save(
        conn,
        encounter_id=6,
        first_obs_id=70,
        drug_order_id=21,
        lab_order_id=22,
        encounter_provider_id=19,
        visit_attribute_id=14,
    )
    mixed = [r for pair in zip(first.end_first(), second.end_first(), strict=True) for r in pair]
    completed = _completed(_feed_all(TransactionBuffer(), mixed))
    assert {tx.tx_id for tx in completed} == {first.gtid, second.gtid}
    for tx in completed:
        encounter_ids = {row.value("encounter_id") for row in tx.rows if row.table == "obs"}
        assert encounter_ids == ({5} if tx.tx_id == first.gtid else {6})


def test_replayed_row_while_open_is_folded_into_the_transaction() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn)
    replay = conn.reemit(save.rows[0])
    buffer = TransactionBuffer()
    records = [save.begin, save.rows[0], replay, *save.rows[1:], save.end]
    results = _feed_all(buffer, records)
    [tx] = _completed(results)
    assert len(tx.rows) == len(save.rows)  # counted once
    assert _pos(replay) in tx.positions  # but settled together with its transaction
    assert _ignored(results) == []


def test_same_position_twice_is_not_counted_twice() -> None:
    save = bahmni_save(FakeConnector())
    buffer = TransactionBuffer()
    results = _feed_all(buffer, [save.begin, save.end, save.rows[0], save.rows[0]])
    assert _completed(results) == []
    assert buffer.buffered_rows == 1


def test_reemitted_end_and_replayed_rows_after_completion_are_ignored() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn)
    buffer = TransactionBuffer()
    assert len(_completed(_feed_all(buffer, save.in_order()))) == 1

    again = [conn.reemit(save.end), conn.reemit(save.rows[3]), conn.reemit(save.begin)]
    results = _feed_all(buffer, again)
    assert _completed(results) == []
    assert _ignored(results) == [_pos(r) for r in again]
    assert buffer.open_count == 0
    assert buffer.is_finished(save.gtid)


def test_completed_ids_are_remembered_in_a_bounded_lru() -> None:
    conn = FakeConnector()
    saves = [conn.transaction().insert("obs", obs_row(100 + i, 5, 15)).commit() for i in range(3)]
    buffer = TransactionBuffer(remember_completed=2)
    for save in saves:
        _feed_all(buffer, save.in_order())
    assert buffer.remembered_count == 2
    assert not buffer.is_finished(saves[0].gtid)
    # the oldest id is forgotten: its re-emitted END opens a (never completing) transaction
    result = buffer.feed(conn.reemit(saves[0].end).parse(), 5.0)
    assert result == FeedResult()
    assert buffer.open_count == 1


def test_snapshot_rows_and_tombstones_are_ignored_but_reported() -> None:
    conn = FakeConnector()
    snap = conn.snapshot_row("visit", visit_row(3), marker="first")
    deleted = conn.transaction().delete("obs", obs_row(56, 5, 15)).commit()
    buffer = TransactionBuffer()
    results = _feed_all(buffer, [snap, *deleted.in_order()])
    assert _ignored(results) == [_pos(snap), _pos(deleted.tombstones[0])]
    [tx] = _completed(results)
    assert [row.op.value for row in tx.rows] == ["d"]
    assert _pos(deleted.tombstones[0]) not in tx.positions


def test_row_without_transaction_metadata_is_its_own_transaction() -> None:
    record = FakeConnector().plain_row("encounter", "u", encounter_row(5, 3), encounter_row(5, 3, voided=1))
    [tx] = TransactionBuffer().feed(record.parse(), 0.0).completed
    assert tx.transactional is False and tx.complete
    assert tx.positions == (_pos(record),)
    assert tx.tx_id == f"{record.topic}/0/{record.offset}"


def test_empty_transaction_completes_at_end() -> None:
    buffer = TransactionBuffer()
    begin = parse_record(TX_TOPIC, 0, 0, None, dumps({"status": "BEGIN", "id": "0-1-7"}), transaction_topic=TX_TOPIC)
    end = parse_record(
        TX_TOPIC,
        0,
        1,
        None,
        dumps({"status": "END", "id": "0-1-7", "event_count": 0, "data_collections": [], "ts_ms": 123}),
        transaction_topic=TX_TOPIC,
    )
    assert buffer.feed(begin, 0).completed == ()
    [tx] = buffer.feed(end, 0).completed
    assert tx.rows == () and tx.commit_ts_ms == 123 and len(tx.positions) == 2


def _missing_one_row(save: CommittedTx) -> tuple[list[Record], Record]:
    records = save.end_first()
    return records[:-1], records[-1]


def test_expire_returns_stale_partials_only() -> None:
    conn = FakeConnector()
    stale, fresh = bahmni_save(conn), bahmni_save(conn, encounter_id=6, first_obs_id=70)
    buffer = TransactionBuffer()
    stale_records, missing = _missing_one_row(stale)
    _feed_all(buffer, stale_records, now=100.0)
    _feed_all(buffer, _missing_one_row(fresh)[0], now=150.0)

    assert buffer.expire(now=159.0, older_than=60.0) == ()
    [partial] = buffer.expire(now=160.0, older_than=60.0)
    assert partial.tx_id == stale.gtid and partial.complete is False
    assert len(partial.rows) == len(stale.rows) - 1
    assert set(partial.positions) == {_pos(r) for r in stale_records}
    assert buffer.open_count == 1

    # the straggler turns up later: passed on at once, as a one-row partial
    [late] = buffer.feed(missing.parse(), 200.0).completed
    assert late.complete is False
    assert late.tx_id == stale.gtid and late.positions == (_pos(missing),) and len(late.rows) == 1
    # its END, re-emitted after a connector restart, has nothing left to do
    reemitted = conn.reemit(stale.end)
    assert buffer.feed(reemitted.parse(), 201.0).ignored == (_pos(reemitted),)
    assert buffer.open_count == 1


def test_activity_keeps_a_large_transaction_alive() -> None:
    save = bahmni_save(FakeConnector())
    buffer = TransactionBuffer()
    records = save.end_first()
    for i, record in enumerate(records[:-1]):
        buffer.feed(record.parse(), now=float(i * 50))
    last = float((len(records) - 2) * 50)
    assert buffer.expire(now=last + 59, older_than=60.0) == ()


def test_orphan_end_after_sidecar_restart_expires_as_empty_partial() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn)
    reemitted = conn.reemit(save.end)  # rows were committed before the restart
    buffer = TransactionBuffer()  # fresh process: no memory of the transaction
    assert buffer.feed(reemitted.parse(), 0.0) == FeedResult()
    [partial] = buffer.expire(now=600.0, older_than=300.0)
    assert partial.rows == () and partial.positions == (_pos(reemitted),) and not partial.complete


def test_rows_are_row_changes() -> None:
    save = bahmni_save(FakeConnector())
    [tx] = _completed(_feed_all(TransactionBuffer(), save.in_order()))
    assert all(isinstance(row, RowChange) and row.tx_id == save.gtid for row in tx.rows)


def test_tables_we_do_not_read_do_not_block_completion() -> None:
    conn = FakeConnector()
    tx = conn.transaction().insert("obs", obs_row(56, 5, 15)).insert("conditions", {"condition_id": 1}).commit()
    obs_only = [r for r in tx.in_order() if r.topic != "openmrs.openmrs.conditions"]

    strict = TransactionBuffer()
    assert _completed(_feed_all(strict, obs_only)) == []  # waits for a row it will never get

    buffer = TransactionBuffer(watched={"openmrs.obs", "openmrs.encounter"})
    [done] = _completed(_feed_all(buffer, obs_only))
    assert [row.table for row in done.rows] == ["obs"]
