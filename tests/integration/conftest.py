"""Shared fixtures for integration tests: the real local stack (no mocks).

Each stack fixture brings its components up idempotently and, at the end of the session, stops only
the components *it* started: a stack that was already running (``cdc-dev up`` or a previous
session) is left alone. Set ``CDC_STACK_KEEP=1`` to keep whatever the session started running too
(faster re-runs). State lives in ``CDC_STACK_DIR`` (default ``<repo>/.stack``).

To add a component fixture (openIMIS, the openHIM emulator, ...), follow ``mariadb``::

    @pytest.fixture(scope="session")
    def openimis(stack: Stack) -> Iterator[OpenImis]:
        component = OpenImis(stack)
        with running(component):
            yield component

Helpers for reading Kafka: :class:`TopicReader` (assign + seek to "now", then collect until a
predicate holds).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.serializer import Deserializer

from cdc_claims.db import Connection
from cdc_dev.bahmni_testdb import admin_factory
from cdc_dev.base import Component, Stack
from cdc_dev.kafka import KafkaBroker, KafkaConnect
from cdc_dev.mariadb import MariaDB

#: how long a test waits for an expected record before failing (a deadline, not a timing assertion)
RECORD_WAIT_SECONDS = float(os.environ.get("CDC_TEST_RECORD_WAIT", "90"))


def _is_running(component: Component) -> bool:
    return component.status().startswith("running")


@contextlib.contextmanager
def running(*components: Component) -> Iterator[None]:
    """Bring ``components`` up in order; on exit stop (in reverse) those that were not running before."""
    started: list[Component] = []
    try:
        for component in components:
            was_running = _is_running(component)
            component.up()
            if not was_running:
                started.append(component)
        yield
    finally:
        if os.environ.get("CDC_STACK_KEEP", "") not in ("1", "true", "yes"):
            for component in reversed(started):
                component.down()


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack.from_env()


@pytest.fixture(scope="session")
def mariadb(stack: Stack) -> Iterator[MariaDB]:
    """MariaDB 10.11 with the Bahmni demo DB, iclm + ledger tables and the dev users."""
    component = MariaDB(stack)
    with running(component):
        yield component


@pytest.fixture(autouse=True)
def _database_up(request: pytest.FixtureRequest) -> None:
    """Every integration test but the openHIM/openIMIS ones reads or writes the OpenMRS database."""
    if request.node.get_closest_marker("no_database") is None:
        request.getfixturevalue("mariadb")


@pytest.fixture(scope="session")
def kafka_broker(stack: Stack) -> Iterator[KafkaBroker]:
    component = KafkaBroker(stack)
    with running(component):
        yield component


@dataclass
class CaptureStack:
    """MariaDB → Debezium (Kafka Connect) → Kafka, streaming (initial snapshot done)."""

    stack: Stack
    mariadb: MariaDB
    kafka: KafkaBroker
    connect: KafkaConnect

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap


@pytest.fixture(scope="session")
def capture_stack(stack: Stack, mariadb: MariaDB, kafka_broker: KafkaBroker) -> Iterator[CaptureStack]:
    connect = KafkaConnect(stack, mariadb)
    with running(connect):
        yield CaptureStack(stack=stack, mariadb=mariadb, kafka=kafka_broker, connect=connect)


@pytest.fixture
def db() -> Iterator[Connection]:
    """A connection with Bahmni's own rights (``cdc_admin``), for writing scenarios and asserting."""
    conn = admin_factory()()
    yield conn
    conn.close()


@pytest.fixture
def clean_sidecar_tables(mariadb: MariaDB) -> MariaDB:
    """Truncate ``iclm_*`` and ``cdc_claims_*`` before the test (see :meth:`MariaDB.reset`)."""
    mariadb.reset()
    return mariadb


# -- Kafka helpers ------------------------------------------------------------------------------------


class JsonDeserializer(Deserializer):  # type: ignore[misc]
    """JSON (Connect's JsonConverter without schemas); ``None`` for tombstones."""

    def deserialize(self, topic: str, headers: list[tuple[str, bytes]], data: bytes | None) -> Any:
        return None if data is None else json.loads(data)


@dataclass
class Record:
    topic: str
    offset: int
    key: Any
    value: Any  # None for a tombstone


@dataclass
class TopicReader:
    """Reads topics from the end offsets they had when the reader was created (no consumer group)."""

    bootstrap: str
    topics: list[str]
    consumer: KafkaConsumer = field(init=False)
    start: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        ensure_topics(self.bootstrap, self.topics)
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            key_deserializer=JsonDeserializer(),
            value_deserializer=JsonDeserializer(),
            client_id="cdc-claims-tests",
        )
        partitions = [TopicPartition(topic, 0) for topic in self.topics]
        self.consumer.assign(partitions)
        ends = self.consumer.end_offsets(partitions)
        self.start = {tp.topic: int(ends[tp]) for tp in partitions}
        for tp in partitions:
            self.consumer.seek(tp, ends[tp])

    def collect(
        self, until: Callable[[list[Record]], bool], timeout: float = RECORD_WAIT_SECONDS, settle: float = 0.0
    ) -> list[Record]:
        """Poll until ``until(records)`` holds (records in arrival order), then keep polling ``settle``
        seconds more (to catch unwanted extras). Fails the test at the deadline."""
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        satisfied_at: float | None = None
        while True:
            for tp_records in self.consumer.poll(timeout_ms=500).values():
                records += [Record(r.topic, r.offset, r.key, r.value) for r in tp_records]
            now = time.monotonic()
            if satisfied_at is None and until(records):
                satisfied_at = now
            if satisfied_at is not None and now - satisfied_at >= settle:
                return records
            if now > deadline:
                seen = sorted({(r.topic, r.offset) for r in records})[:20]
                pytest.fail(f"expected records did not arrive within {timeout:.0f}s; got {len(records)}: {seen}")

    def close(self) -> None:
        self.consumer.close()


def ensure_topics(bootstrap: str, topics: list[str]) -> None:
    """Create missing single-partition topics (Debezium creates its topics lazily, on first record)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="cdc-claims-tests")
    try:
        missing = set(topics) - set(admin.list_topics())
        for topic in sorted(missing):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


@pytest.fixture
def topic_reader(capture_stack: CaptureStack) -> Iterator[Callable[[list[str]], TopicReader]]:
    """Factory: ``reader = topic_reader([topics])`` reads those topics from "now" on."""
    readers: list[TopicReader] = []

    def make(topics: list[str]) -> TopicReader:
        reader = TopicReader(capture_stack.bootstrap, topics)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
