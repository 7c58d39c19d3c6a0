"""Thin kafka-python adapters: a consumer with manual commits and the sidecar's publisher.

Nothing here decides anything: offsets to commit come from the offset tracker, and what to
publish comes from the claim service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from cdc_claims import metrics
from cdc_claims.pipeline.ports import JsonDict
from cdc_claims.reply.model import ReplyMessage, encode_reply
from cdc_claims.settings import KafkaSettings


def make_consumer(settings: KafkaSettings, topics: Iterable[str], *, group_id: str) -> KafkaConsumer:
    """A consumer that never commits by itself: the caller commits what is durable."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        # small fetches: a backlog waits in Kafka, not in this process's memory
        max_partition_fetch_bytes=256 * 1024,
        fetch_max_bytes=4 * 1024 * 1024,
        session_timeout_ms=10000,
        heartbeat_interval_ms=2000,
        max_poll_interval_ms=300000,
        client_id=f"{group_id}-consumer",
    )
    consumer.subscribe(topics=list(topics))
    return consumer


def commit(consumer: KafkaConsumer, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit ``{(topic, partition): next_offset}`` synchronously."""
    if offsets:
        consumer.commit(offsets={TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})


def make_producer(settings: KafkaSettings, client_id: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        client_id=client_id,
    )


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


class KafkaPublisher:
    """Publishes replies, held notices, audit bundles and dead letters; ``flush`` = durable."""

    def __init__(self, producer: KafkaProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._settings = settings

    def reply(self, message: ReplyMessage) -> None:
        self._producer.send(self._settings.reply_topic, key=message.claim.code.encode(), value=encode_reply(message))

    def held(self, key: str, payload: Mapping[str, Any]) -> None:
        self._producer.send(self._settings.held_topic, key=key.encode(), value=_json(payload))

    def audit(self, key: str, bundle: JsonDict) -> None:
        self._producer.send(self._settings.claims_topic, key=key.encode(), value=_json(bundle))

    def dead_letter(
        self, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        """Keep the original bytes and say why; headers carry the provenance."""
        headers = [
            ("cdc-claims-reason", reason.encode()[:1000]),
            ("cdc-claims-source", f"{topic}/{partition}/{offset}".encode()),
        ]
        self._producer.send(self._settings.dead_letter_topic, key=key, value=value, headers=headers)
        metrics.DEAD_LETTERS.labels(reason=reason.split(":", 1)[0][:60]).inc()

    def flush(self) -> None:
        self._producer.flush(timeout=30)

    def close(self) -> None:
        self._producer.close(timeout=10)


class LagReporter:
    """Sets ``cdc_claims_consumer_lag_records`` for the consumer's partitions every ``every`` s."""

    def __init__(self, consumer: KafkaConsumer, every: float = 10.0) -> None:
        self._consumer = consumer
        self._every = every
        self._last = 0.0

    def maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        parts = list(self._consumer.assignment())
        if not parts:
            return  # not assigned yet: try again next step
        self._last = now
        ends = self._consumer.end_offsets(parts)
        for tp in parts:
            lag = max(0, int(ends.get(tp, 0)) - int(self._consumer.position(tp)))
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
