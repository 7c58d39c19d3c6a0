"""Flow control: which partitions the consumer reads while a backlog waits in Kafka."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from debezium_fixtures import TX_TOPIC, FakeConnector, Record, bahmni_save
from test_consumer_role import Clock, FakeService, Lookups, Sink

from cdc_claims.capture import TransactionBuffer, parse_record
from cdc_claims.pipeline.consumer_role import ConsumerRole
from cdc_claims.pipeline.flow import FlowControl, Load
from cdc_claims.settings import IntakeSettings, Settings, SettleSettings

LIMITS = IntakeSettings(max_pending_units=10, max_rows_waiting_for_end=100, max_ends_waiting_for_rows=100)


# ---------------------------------------------------------------------------- the decision
OBS, ORDERS = "openmrs.obs", "openmrs.orders"


def test_each_high_load_pauses_what_feeds_it_and_resumes_at_half() -> None:
    flow = FlowControl(LIMITS)
    assert flow.decide(Load(9, {}, 0)).open
    assert flow.decide(Load(10, {}, 0)).closed
    assert flow.decide(Load(6, {}, 0)).closed, "no flapping between the marks"
    assert flow.decide(Load(5, {}, 0)).open
    ahead = flow.decide(Load(0, {ORDERS: 100, OBS: 3}, 0))
    assert ahead.paused_collections == {ORDERS} and not ahead.transactions_paused
    assert ahead.reads(OBS) and not ahead.reads(ORDERS) and ahead.reads(None)
    assert flow.decide(Load(0, {ORDERS: 50}, 0)).open
    behind = flow.decide(Load(0, {}, 100))
    assert behind.transactions_paused and not behind.reads(None) and behind.reads(OBS)
    assert flow.decide(Load(0, {}, 40)).open


def test_a_topic_ahead_and_the_transaction_topic_pause_together_while_the_topic_behind_reads() -> None:
    flow = FlowControl(LIMITS)
    both = flow.decide(Load(0, {ORDERS: 120}, 150))
    assert both.paused_collections == {ORDERS} and both.transactions_paused
    assert both.reads(OBS), "obs is behind: its rows complete the waiting ENDs, so nothing deadlocks"
    assert flow.decide(Load(10, {ORDERS: 120}, 150)).closed, "units win over buffers"
    assert both.causes() == {"rows", "ends"} and flow.decide(Load(10, {}, 0)).causes() == {"units"}


# ---------------------------------------------------------------------------- the buffer's loads
def test_the_buffer_counts_rows_waiting_for_an_end_and_ends_waiting_for_rows() -> None:
    conn = FakeConnector()
    first, second = (
        bahmni_save(conn),
        bahmni_save(
            conn,
            encounter_id=6,
            first_obs_id=70,
            drug_order_id=21,
            lab_order_id=22,
            encounter_provider_id=19,
            visit_attribute_id=14,
        ),
    )
    buffer = TransactionBuffer()
    for record in first.rows:  # data ahead of the transaction topic
        buffer.feed(record.parse(), 1.0)
    assert buffer.rows_waiting_for_end == len(first.rows) and buffer.ends_waiting_for_rows == 0
    for record in (second.begin, second.end, first.begin, second.rows[0]):  # the transaction topic ahead
        buffer.feed(record.parse(), 1.0)
    assert buffer.rows_waiting_for_end == len(first.rows) and buffer.ends_waiting_for_rows == 1
    assert buffer.feed(first.end.parse(), 1.0).completed, "END last: the first Save completes"
    assert buffer.rows_waiting_for_end == 0 and buffer.ends_waiting_for_rows == 1
    assert len(buffer.expire(now=500.0, older_than=60.0)) == 1
    assert buffer.rows_waiting_for_end == 0 and buffer.ends_waiting_for_rows == 0


# ---------------------------------------------------------------------------- the role on a broker
class TP(NamedTuple):
    topic: str
    partition: int


class PartitionedBroker:
    """A consumer over real per-partition logs: each poll hands out at most ``per_poll``
    records of each partition that is not paused, like kafka-python's fetcher; a seek to the
    committed offsets rewinds the positions."""

    def __init__(self, records: Iterable[Record], per_poll: int) -> None:
        self.logs: dict[TP, list[Record]] = defaultdict(list)
        for record in records:
            self.logs[TP(record.topic, record.partition)].append(record)
        self.position: dict[TP, int] = dict.fromkeys(self.logs, 0)
        self.per_poll = per_poll
        self.paused: set[TP] = set()
        self.committed: dict[tuple[str, int], int] = {}
        self.pause_calls = 0

    def append(self, record: Record) -> None:
        tp = TP(record.topic, record.partition)
        self.logs[tp].append(record)
        self.position.setdefault(tp, 0)

    def poll(self, timeout_ms: int = 0) -> Mapping[Any, list[Record]]:
        out: dict[Any, list[Record]] = {}
        for tp, log in self.logs.items():
            if tp in self.paused:
                continue
            start = self.position[tp]
            batch = log[start : start + self.per_poll]
            self.position[tp] = start + len(batch)
            if batch:
                out[tp] = batch
        return out

    def assignment(self) -> set[Any]:
        return set(self.logs)

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.committed.update(offsets)

    def seek_to_committed(self, parts: Iterable[Any]) -> None:
        for tp in parts:
            committed = self.committed.get((tp.topic, tp.partition), 0)
            self.position[tp] = next(
                (i for i, r in enumerate(self.logs[tp]) if r.offset >= committed), len(self.logs[tp])
            )

    def pause(self, parts: Iterable[Any]) -> None:
        chosen = set(parts)
        self.pause_calls += bool(chosen)
        self.paused |= chosen

    def resume(self, parts: Iterable[Any]) -> None:
        self.paused -= set(parts)

    def lag(self) -> dict[tuple[str, int], tuple[int, bool]]:
        return {(tp.topic, tp.partition): (len(log) - self.position[tp], True) for tp, log in self.logs.items()}

    @property
    def left(self) -> int:
        return sum(len(log) - self.position[tp] for tp, log in self.logs.items())


def backlog(saves: int) -> list[Record]:
    conn = FakeConnector()
    records: list[Record] = []
    for i in range(saves):
        records.extend(
            bahmni_save(
                conn,
                encounter_id=100 + i,
                visit_id=1000 + i,
                first_obs_id=10_000 + 10 * i,
                drug_order_id=50_000 + 2 * i,
                lab_order_id=50_001 + 2 * i,
                encounter_provider_id=70_000 + i,
                visit_attribute_id=80_000 + i,
            ).in_order()
        )
    return records


def role_over(
    broker: PartitionedBroker, *, settle: float, limits: IntakeSettings
) -> tuple[ConsumerRole, FakeService, Clock]:
    service, clock = FakeService(), Clock()
    settings = Settings(settle=SettleSettings(settle_seconds=settle), intake=limits)
    r = ConsumerRole(
        consumer=broker,
        service=service,
        lookups=Lookups(),
        sink=Sink(),
        settings=settings,
        clock=clock,
        rng=lambda: 1.0,
        wall_clock=lambda: 0.0,  # every change is fresh: the window runs from its receipt
    )
    return r, service, clock


def test_a_backlog_bigger_than_the_bound_is_held_in_kafka_then_drains_completely() -> None:
    records = backlog(60)
    broker = PartitionedBroker(records, per_poll=4)
    r, service, clock = role_over(broker, settle=30, limits=LIMITS)
    peak_units = 0
    for _ in range(400):
        r.step()
        r.drain()
        peak_units = max(peak_units, r.settle.pending_count)
        clock.now += 1
        if not broker.left and not r.settle.pending_count:
            break
    assert broker.pause_calls, "the bound was reached: intake paused at least once"
    # one poll may overshoot the bound by the transactions it completed, never by the backlog
    assert peak_units < 2 * LIMITS.max_pending_units
    assert sorted(u.id for u in service.processed) == [100 + i for i in range(60)], "every Save claimed, once"
    assert broker.left == 0 and r.intake.open
    ends = [x for x in records if x.topic == TX_TOPIC]
    assert broker.committed[(TX_TOPIC, 0)] == ends[-1].offset + 1, "everything committed at the end"


def test_data_topics_running_ahead_pause_until_the_transaction_topic_catches_up() -> None:
    records = backlog(40)
    # the transaction topic is slow: one record per step, data partitions up to 40 per poll
    broker = PartitionedBroker(records, per_poll=40)
    tx = TP(TX_TOPIC, 0)
    limits = IntakeSettings(max_pending_units=1000, max_rows_waiting_for_end=100, max_ends_waiting_for_rows=100)
    r, service, clock = role_over(broker, settle=0, limits=limits)
    peak_rows = 0
    slow = deque(broker.logs.pop(tx))
    broker.position.pop(tx)
    for _ in range(300):
        if slow:
            broker.append(slow.popleft())
        r.step()
        r.drain()
        peak_rows = max(peak_rows, *r.buffer.rows_waiting_for_end_by_collection().values(), 0)
        clock.now += 0.5
        if not broker.left and not slow and not r.settle.pending_count:
            break
    assert peak_rows <= 100 + 40, "no topic runs further ahead than its mark and one poll"
    assert sorted(u.id for u in service.processed) == [100 + i for i in range(40)]
    assert r.intake.open


def test_a_paused_intake_is_not_a_stalled_consumer() -> None:
    records = backlog(30)
    broker = PartitionedBroker(records, per_poll=50)
    r, _service, clock = role_over(broker, settle=3600, limits=LIMITS)
    r.on_assigned(list(broker.logs))
    for _ in range(10):
        r.step()  # the first takes the assignment
        if r.intake.closed:
            break
    assert r.intake.closed and r.buffer.open_count, "ENDs read, their rows held back in Kafka"
    open_before = r.buffer.open_count
    for _ in range(10):
        clock.now += 30
        r.step()
        r.observe_lag(broker.lag())  # raises ConsumerStalled if lag without records counted as a stall
    assert r.ready() is True
    assert r.buffer.open_count == open_before, "5 minutes closed: no transaction expired incomplete"


def test_parse_record_is_what_the_broker_hands_out() -> None:
    # guard for the fakes above: the records parse as Debezium's would
    record = backlog(1)[0]
    assert parse_record(
        record.topic, record.partition, record.offset, record.key, record.value, transaction_topic=TX_TOPIC
    )


def test_a_rebalance_starts_from_every_partition_read_even_though_kafka_python_keeps_pauses() -> None:
    # kafka-python 3 keeps the paused flag of partitions a rebalance leaves with the member
    records = backlog(30)
    broker = PartitionedBroker(records, per_poll=50)
    r, _service, clock = role_over(broker, settle=3600, limits=LIMITS)
    r.on_assigned(list(broker.logs))
    for _ in range(10):
        r.step()
        if r.intake.closed:
            break
    assert r.intake.closed and broker.paused == set(broker.logs)
    r.on_revoked(list(broker.logs))  # the same partitions come back: their pause is kept
    r.on_assigned(list(broker.logs))
    r.step()
    assert broker.paused == set(), "resumed: the role forgot its units, so nothing holds intake"
    for _ in range(10):
        clock.now += 1
        r.step()
        expected = {
            tp
            for tp in broker.logs
            if not r.intake.reads(None if tp.topic == TX_TOPIC else "openmrs." + tp.topic.rsplit(".", 1)[-1])
        }
        assert broker.paused == expected, "what kafka-python pauses is what the role believes"
