"""The consumer loop on recorded Debezium-shaped records: settle, claims, offsets, dead letters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from debezium_fixtures import TX_TOPIC, FakeConnector, Record, bahmni_save, diagnosis_revision, drug_order_row, topic

from cdc_claims.errors import TransientSubmitError
from cdc_claims.pipeline.consumer_role import ConsumerRole
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.settings import Settings, SettleSettings


class TP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class FakeConsumer:
    def __init__(self) -> None:
        self.queue: list[Record] = []
        self.committed: dict[tuple[str, int], int] = {}

    def poll(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        batch: dict[Any, list[Record]] = defaultdict(list)
        for record in self.queue:
            batch[(record.topic, record.partition)].append(record)
        self.queue = []
        return {TP(*k): v for k, v in batch.items()}


class FakeService:
    def __init__(self) -> None:
        self.processed: list[UnitRef] = []
        self.fail_next = 0

    def process(self, unit: UnitRef) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise TransientSubmitError("openHIM answered 500")
        self.processed.append(unit)


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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def role(settle_seconds: float = 0.0) -> tuple[ConsumerRole, FakeConsumer, FakeService, Sink, Clock]:
    settings = Settings(settle=SettleSettings(settle_seconds=settle_seconds))
    consumer, service, sink, clock = FakeConsumer(), FakeService(), Sink(), Clock()

    def commit(c: FakeConsumer, offsets: dict[tuple[str, int], int]) -> None:
        c.committed.update(offsets)

    r = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=Lookups(),
        sink=sink,
        settings=settings,  # type: ignore[arg-type]
        commit=commit,
        clock=clock,
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
