"""The consumer loop on recorded Debezium-shaped records: settle, claims, offsets, dead letters."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from debezium_fixtures import (
    TX_TOPIC,
    FakeConnector,
    Record,
    bahmni_save,
    diagnosis_revision,
    drug_order_row,
    obs_row,
    topic,
)

from cdc_claims.errors import AuthenticationFailed, ConsumerStalled, KafkaUnavailable, TransientSubmitError
from cdc_claims.pipeline.consumer_role import ConsumerRole, backoff
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.settings import Settings, SettleSettings, UnitKind


class TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class FakeConsumer:
    def __init__(self) -> None:
        self.queue: list[Record] = []
        self.committed: dict[tuple[str, int], int] = {}
        self.commit_error: Exception | None = None
        self.seeks: list[list[Any]] = []

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.committed.update(offsets)

    def seek_to_committed(self, parts: Iterable[Any]) -> None:
        self.seeks.append(list(parts))

    def assignment(self) -> set[Any]:
        return set()

    def pause(self, parts: Iterable[Any]) -> None:
        pass

    def resume(self, parts: Iterable[Any]) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        batch: dict[Any, list[Record]] = defaultdict(list)
        for record in self.queue:
            batch[(record.topic, record.partition)].append(record)
        self.queue = []
        return {TP(*k): v for k, v in batch.items()}


class FakeService:
    def __init__(self) -> None:
        self.processed: list[UnitRef] = []
        self.parked: list[tuple[UnitRef, str]] = []
        self.fail_next = 0
        self.error: Exception = TransientSubmitError("openHIM answered 500")

    def process(self, unit: UnitRef) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise self.error
        self.processed.append(unit)

    def park(self, unit: UnitRef, reason: str, text: str) -> None:
        self.parked.append((unit, reason))


class Sink:
    def __init__(self) -> None:
        self.dead: list[dict[str, Any]] = []
        self.held_: list[Any] = []

    def dead_letter(self, **kw: Any) -> None:
        self.dead.append(kw)

    def held(self, key: str, payload: Mapping[str, Any]) -> None:
        self.held_.append(payload)

    def flush(self) -> None:
        pass


class Lookups:
    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]:
        return {}

    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]:
        return {e: 3 for e in encounter_ids}

    def patient_held_encounters(self, patient_ids: Iterable[int]) -> list[tuple[str, int]]:
        return []

    def held_units_to_recheck(self) -> list[tuple[UnitKind, int]]:
        return list(self.payer_held)

    def __init__(self) -> None:
        self.payer_held: list[tuple[UnitKind, int]] = []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def role(settle_seconds: float = 0.0) -> tuple[ConsumerRole, FakeConsumer, FakeService, Sink, Clock]:
    settings = Settings(settle=SettleSettings(settle_seconds=settle_seconds), retry_max_seconds=30)
    consumer, service, sink, clock = FakeConsumer(), FakeService(), Sink(), Clock()

    r = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=Lookups(),
        sink=sink,
        settings=settings,
        clock=clock,
        rng=lambda: 1.0,
        wall_clock=lambda: 0.0,  # every change is fresh: the window runs from its receipt
    )
    return r, consumer, service, sink, clock


def test_a_save_whose_end_arrives_first_becomes_one_claim_and_commits_everything() -> None:
    r, consumer, service, _, _clock = role()
    save = bahmni_save(FakeConnector())
    consumer.queue = save.end_first()
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5]
    assert service.processed[0].kind == "encounter"
    assert consumer.committed[(TX_TOPIC, 0)] == save.end.offset + 1
    assert consumer.committed[(topic("obs"), 0)] == max(x.offset for x in save.rows if x.topic == topic("obs")) + 1


def test_three_saves_inside_the_window_give_one_claim() -> None:
    r, consumer, service, _, clock = role(settle_seconds=10)
    conn = FakeConnector()
    first = bahmni_save(conn)
    consumer.queue = first.in_order()
    r.step()
    r.drain()
    for i in range(2):
        clock.now += 3
        consumer.queue = bahmni_save(
            conn, new_encounter=False, first_obs_id=100 + 10 * i, drug_order_id=30 + i, lab_order_id=40 + i
        ).in_order()
        r.step()
        r.drain()
    assert service.processed == []
    assert consumer.committed.get((TX_TOPIC, 0), 0) <= first.begin.offset  # nothing durable yet
    clock.now += 10
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5]
    assert consumer.committed[(TX_TOPIC, 0)] > first.end.offset


def test_malformed_record_is_dead_lettered_and_does_not_block() -> None:
    r, consumer, _service, sink, _ = role()
    bad = Record(topic("obs"), 0, 0, b'{"obs_id": 1}', b"{not json")
    consumer.queue = [bad]
    r.step()
    r.drain()
    assert sink.dead and sink.dead[0]["reason"].startswith("invalid_json")
    assert sink.dead[0]["value"] == b"{not json"
    assert consumer.committed[(topic("obs"), 0)] == 1


def test_transient_failure_keeps_offsets_until_the_retry_succeeds() -> None:
    r, consumer, service, _, clock = role()
    service.fail_next = 1
    save = bahmni_save(FakeConnector())
    consumer.queue = save.in_order()
    r.step()
    r.drain()
    assert service.processed == []
    assert consumer.committed.get((TX_TOPIC, 0), 0) <= save.begin.offset
    clock.now += 5
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5]
    assert consumer.committed[(TX_TOPIC, 0)] == save.end.offset + 1


def test_a_transaction_touching_two_encounters_claims_both() -> None:
    r, consumer, service, _, _ = role()
    conn = FakeConnector()
    consumer.queue = diagnosis_revision(conn, old_encounter=5, new_encounter=12).in_order()
    r.step()
    r.drain()
    assert sorted(u.id for u in service.processed) == [5, 12]
    assert all(u.captured_ms for u in service.processed)


def test_a_transaction_whose_lookups_fail_is_retried_not_dropped() -> None:
    from cdc_claims.errors import SourceUnavailable

    r, consumer, service, _, _ = role()
    calls = {"n": 0}

    def flaky(order_ids: Iterable[int]) -> Mapping[int, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SourceUnavailable("database restarting")
        return {order_id: 5 for order_id in order_ids}

    r._lookups.order_encounters = flaky  # type: ignore[method-assign]
    conn = FakeConnector()
    tx = conn.transaction().insert("drug_order", drug_order_row(11)).commit()  # needs order -> encounter
    consumer.queue = tx.in_order()
    r.step()
    r.drain()
    assert service.processed == []
    assert consumer.committed.get((TX_TOPIC, 0), 0) <= tx.begin.offset  # still pending, not lost
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5]
    assert consumer.committed[(TX_TOPIC, 0)] == tx.end.offset + 1


def _drain_retries(r: ConsumerRole, clock: Clock, rounds: int, advance: float = 31.0) -> None:
    for _ in range(rounds):
        clock.now += advance
        r.step()
        r.drain()


def test_a_retriable_failure_is_retried_forever_never_parked() -> None:
    """Wrong openHIM credentials for hours: the unit waits, its offsets stay, nothing is parked."""
    r, consumer, service, sink, clock = role()
    service.error = AuthenticationFailed("HTTP 401: credentials refused")
    service.fail_next = 40  # far beyond MAX_UNIT_ATTEMPTS
    save = bahmni_save(FakeConnector())
    consumer.queue = save.in_order()
    r.step()
    r.drain()
    _drain_retries(r, clock, 39)
    assert service.processed == [] and service.parked == [] and sink.held_ == []
    assert consumer.committed.get((TX_TOPIC, 0), 0) <= save.begin.offset
    _drain_retries(r, clock, 1)  # the password was fixed: the next try goes through
    assert [u.id for u in service.processed] == [5]
    assert consumer.committed[(TX_TOPIC, 0)] == save.end.offset + 1


def test_backoff_doubles_is_capped_and_jittered() -> None:
    assert [backoff(n, 60, lambda: 1.0) for n in (1, 2, 3, 6, 7, 50)] == [2, 4, 8, 60, 60, 60]
    assert backoff(10, 60, lambda: 0.0) == 30  # jitter brings it down to half at most


def test_an_unexpected_error_is_retried_then_parked_in_the_ledger() -> None:
    r, consumer, service, sink, clock = role()
    service.error = KeyError("a bug")
    service.fail_next = 100
    save = bahmni_save(FakeConnector())
    consumer.queue = save.in_order()
    r.step()
    r.drain()
    _drain_retries(r, clock, 10)
    assert [(u.id, reason) for u, reason in service.parked] == [(5, "internal_error")]
    assert sink.held_[0]["reason"] == "internal_error"
    assert consumer.committed[(TX_TOPIC, 0)] == save.end.offset + 1  # parked: the stream goes on


def test_a_transaction_whose_rows_cannot_be_read_is_dead_lettered_not_crash_looped() -> None:
    r, consumer, service, sink, _ = role()
    conn = FakeConnector()
    bad = conn.transaction().insert("obs", {**obs_row(900, 5, 1), "encounter_id": "not-a-number"}).commit()
    good = bahmni_save(conn)
    consumer.queue = bad.in_order() + good.in_order()
    r.step()
    r.drain()
    assert len(sink.dead) == 1 and sink.dead[0]["reason"].startswith("invalid_value: not an integer")
    summary = json.loads(sink.dead[0]["value"])
    assert summary["tx_id"] == bad.gtid and f"{topic('obs')}/0/0" in summary["records"]
    assert [u.id for u in service.processed] == [5]  # the next Save is claimed
    assert consumer.committed[(TX_TOPIC, 0)] == good.end.offset + 1


def test_a_failed_commit_keeps_the_offsets_for_the_next_commit() -> None:
    r, consumer, _service, _, clock = role()
    consumer.commit_error = KafkaUnavailable("kafka commit: CommitFailedError")
    save = bahmni_save(FakeConnector())
    consumer.queue = save.in_order()
    r.step()
    r.drain()  # must not raise
    assert consumer.committed == {}
    consumer.commit_error = None
    clock.now += 2
    r.step()
    assert consumer.committed[(TX_TOPIC, 0)] == save.end.offset + 1


def test_a_rebalance_finishes_in_flight_units_commits_and_rewinds() -> None:
    r, consumer, service, _, clock = role(settle_seconds=10)
    conn = FakeConnector()
    done = bahmni_save(conn)
    consumer.queue = done.in_order()
    r.step()
    clock.now += 11
    r.step()  # due: submitted on a worker
    waiting = bahmni_save(
        conn, encounter_id=6, first_obs_id=156, drug_order_id=21, lab_order_id=22, encounter_provider_id=19
    )
    consumer.queue = waiting.in_order()
    r.step()  # still inside its settle window
    r.on_revoked([TP(TX_TOPIC, 0)])  # on kafka-python's IO thread: nothing blocking here
    r.on_assigned([TP(TX_TOPIC, 0)])
    consumer.queue = waiting.in_order()  # what that poll returned is dropped and rewound
    r.step()
    assert [u.id for u in service.processed] == [5]
    assert consumer.committed[(TX_TOPIC, 0)] == waiting.begin.offset  # the waiting Save is not committed
    assert r.settle.pending_count == 0  # forgotten: it will be read again
    assert consumer.seeks
    consumer.queue = waiting.in_order()  # read again from the commit
    r.step()
    clock.now += 11
    r.step()
    r.drain()
    assert sorted(u.id for u in service.processed) == [5, 6]


def test_no_assignment_while_the_membership_is_not_stable_is_a_stall() -> None:
    """After a broker restart: an empty assignment, a revoke, then nothing (member evicted)."""
    r, _consumer, _service, _, clock = role()
    assert r.ready() == "no assignment"
    r.observe_lag({(TX_TOPIC, 0): (0, False)}, stable=False)
    clock.now += 29
    r.observe_lag(None, stable=False)  # a join can take a while
    clock.now += 2  # half a minute without a completed join: it will not complete
    with pytest.raises(ConsumerStalled):
        r.observe_lag(None, stable=False)


def test_a_stable_standby_with_no_partitions_is_ready_and_not_rebuilt_at_once() -> None:
    """A rolling update: the new pod joined, the old one still owns the partitions. The new pod
    must be ready (or the rollout never ends); it takes over when the old one leaves."""
    r, _consumer, _service, _, clock = role()
    r.on_assigned([])
    assert r.ready() == "no assignment"  # not known yet to be a standby
    for _ in range(4):
        clock.now += 61
        r.observe_lag({(TX_TOPIC, 0): (5, False)}, stable=True)
    assert r.ready() is True
    clock.now += 61  # five stall periods with group lag and still nothing: rebuild after all
    with pytest.raises(ConsumerStalled):
        r.observe_lag({(TX_TOPIC, 0): (5, False)}, stable=True)


def test_an_assigned_consumer_whose_position_does_not_move_is_stalled() -> None:
    r, consumer, _service, _, clock = role()
    r.on_assigned([TP(TX_TOPIC, 0)])
    consumer.queue = []
    r.step()  # the rewind after the assignment
    r.observe_lag({(TX_TOPIC, 0): (12, True)})
    assert r.ready() is True
    clock.now += 30
    r.observe_lag({(TX_TOPIC, 0): (12, True)})
    clock.now += 31
    with pytest.raises(ConsumerStalled):
        r.observe_lag({(TX_TOPIC, 0): (12, True)})
    assert r.ready() == "no progress"


def test_an_idle_assigned_consumer_is_ready_and_not_stalled() -> None:
    r, _consumer, _service, _, clock = role()
    r.on_assigned([TP(TX_TOPIC, 0)])
    for _ in range(10):
        clock.now += 30
        r.observe_lag({(TX_TOPIC, 0): (0, True)})
    assert r.ready() is True


# ---------------------------------------------------------------------------- a backlog is settled on arrival
def _role_at(wall: float, settle_seconds: float) -> tuple[ConsumerRole, FakeConsumer, FakeService, Clock]:
    settings = Settings(settle=SettleSettings(settle_seconds=settle_seconds), retry_max_seconds=30)
    consumer, service, clock = FakeConsumer(), FakeService(), Clock()
    r = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=Lookups(),
        sink=Sink(),
        settings=settings,
        clock=clock,
        rng=lambda: 1.0,
        wall_clock=lambda: wall + (clock.now - 1000.0),
    )
    return r, consumer, service, clock


def test_a_save_committed_long_before_it_is_read_is_claimed_on_arrival() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn)
    committed = conn.clock_ms / 1000
    r, consumer, service, _clock = _role_at(committed + 2 * 3600, settle_seconds=300)
    consumer.queue = save.in_order()
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5], "nobody touched it for two hours: it is settled"


def test_a_fresh_save_waits_its_window_and_a_database_clock_ahead_changes_nothing() -> None:
    for skew in (0.5, -120.0):  # read half a second after commit; the database clock 2 min ahead
        conn = FakeConnector()
        save = bahmni_save(conn)
        r, consumer, service, clock = _role_at(conn.clock_ms / 1000 + skew, settle_seconds=300)
        consumer.queue = save.in_order()
        r.step()
        r.drain()
        clock.now += 298
        r.step()
        r.drain()
        assert service.processed == [], f"skew {skew}: still inside the window"
        clock.now += 3
        r.step()
        r.drain()
        assert [u.id for u in service.processed] == [5]


def test_a_save_read_late_waits_only_what_is_left_of_its_window() -> None:
    conn = FakeConnector()
    save = bahmni_save(conn)
    r, consumer, service, clock = _role_at(conn.clock_ms / 1000 + 200, settle_seconds=300)
    consumer.queue = save.in_order()
    r.step()
    r.drain()
    clock.now += 99
    r.step()
    r.drain()
    assert service.processed == []
    clock.now += 2
    r.step()
    r.drain()
    assert [u.id for u in service.processed] == [5], "200 s old on arrival: 100 s left to wait"


def test_units_held_for_a_payer_reason_go_again_on_the_recheck_timer_and_only_then() -> None:
    from cdc_claims.settings import PayerSettings

    settings = Settings(
        settle=SettleSettings(settle_seconds=300),
        payer=PayerSettings(url="https://openimis.example.org/api/", recheck_seconds=60),
    )
    consumer, service, lookups, clock = FakeConsumer(), FakeService(), Lookups(), Clock()
    r = ConsumerRole(consumer=consumer, service=service, lookups=lookups, sink=Sink(), settings=settings, clock=clock)
    lookups.payer_held = [("encounter", 42)]
    r.step()
    clock.now += 59
    r.step()
    r.drain()
    assert service.processed == []  # not yet: the timer has not run out
    clock.now += 2
    r.step()  # due at once, not after another settle window: nothing changed in OpenMRS
    r.drain()
    assert [(u.kind, u.id) for u in service.processed] == [("encounter", 42)]


def test_a_held_unit_is_rechecked_without_the_payer_api_too_and_never_with_a_zero_timer() -> None:
    # a required document uploaded later lands in an encounter of its own: only the timer sees it
    from cdc_claims.settings import PayerSettings

    for seconds, expected in ((60.0, [("encounter", 42)]), (0.0, [])):
        settings = Settings(payer=PayerSettings(recheck_seconds=seconds))
        consumer, service, lookups, clock = FakeConsumer(), FakeService(), Lookups(), Clock()
        r = ConsumerRole(
            consumer=consumer, service=service, lookups=lookups, sink=Sink(), settings=settings, clock=clock
        )
        lookups.payer_held = [("encounter", 42)]
        clock.now += 10_000
        r.step()
        r.drain()
        assert [(u.kind, u.id) for u in service.processed] == expected, seconds
