"""Thin kafka-python adapters: a consumer with manual commits, the sidecar's publisher, lag.

Nothing here decides anything: offsets to commit come from the offset tracker, and what to
publish comes from the claim service. What this module does guarantee is that **no
kafka-python exception leaves it**: each one becomes
:class:`~cdc_claims.errors.KafkaUnavailable` (retriable), so a broker restart, a rebalance or a
timed-out send is ridden through by the role instead of killing it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from cdc_claims import metrics
from cdc_claims.errors import KafkaUnavailable
from cdc_claims.log import get_logger
from cdc_claims.pipeline.ports import JsonDict, Offsets, Partition
from cdc_claims.reply.model import ReplyMessage, WithdrawalNotice, encode_reply, encode_withdrawal
from cdc_claims.settings import KafkaSettings

log = get_logger(__name__)
T = TypeVar("T")


def kafka_call(op: str, call: Callable[[], T]) -> T:
    """Run one kafka-python call; any of its errors becomes :class:`KafkaUnavailable`."""
    try:
        return call()
    except KafkaError as err:
        metrics.KAFKA_ERRORS.labels(op=op).inc()
        raise KafkaUnavailable(f"kafka {op}: {type(err).__name__}: {err}") from err


def make_consumer(settings: KafkaSettings, *, group_id: str) -> KafkaConsumer:
    """A consumer that never commits by itself: the caller commits what is durable.

    Not subscribed yet: the role subscribes with its rebalance listener. ``metadata_max_age_ms``
    is short because Debezium creates a table's topic at its first row: with kafka-python's
    default (5 minutes) a consumer subscribed before that does not see the new topic, and the
    transactions that wrote it wait incomplete. The range assignor keeps every table topic's
    single partition on one member, so a transaction's rows are never split across consumers.
    """
    return kafka_call(
        "connect",
        lambda: KafkaConsumer(
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
            metadata_max_age_ms=settings.metadata_max_age_ms,
            partition_assignment_strategy=(RangePartitionAssignor,),
            client_id=f"{group_id}-consumer",
        ),
    )


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Forwards kafka-python's rebalance callbacks to the role, and logs them."""

    def __init__(self, on_revoked: Callable[[list[Any]], None], on_assigned: Callable[[list[Any]], None]) -> None:
        self._revoked = on_revoked
        self._assigned = on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        parts = sorted(f"{tp.topic}/{tp.partition}" for tp in revoked)
        metrics.REBALANCES.labels(event="revoked").inc()
        log.info("partitions_revoked", partitions=parts)
        self._revoked(list(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        metrics.REBALANCES.labels(event="assigned").inc()
        log.info("partitions_assigned", partitions=parts)
        self._assigned(list(assigned))


def make_producer(settings: KafkaSettings, client_id: str) -> KafkaProducer:
    return kafka_call(
        "connect",
        lambda: KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            client_id=client_id,
        ),
    )


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


class KafkaPublisher:
    """Publishes replies, held notices, audit bundles and dead letters; ``flush`` = durable.

    kafka-python's ``flush()`` returns even when a record failed (its future holds the error),
    so ``flush`` here also checks every record sent since the last flush: a reply that did not
    reach Kafka raises :class:`KafkaUnavailable` and the claim service does not move on.
    Thread-safe: the consumer's worker threads share one publisher.
    """

    def __init__(self, producer: KafkaProducer, settings: KafkaSettings) -> None:
        self._producer = producer
        self._settings = settings
        self._lock = threading.Lock()
        self._pending: dict[int, list[Any]] = {}  # thread id -> futures since its last flush

    def _send(self, topic: str, *, key: bytes | None, value: bytes | None, headers: Any = None) -> None:
        future = kafka_call("send", lambda: self._producer.send(topic, key=key, value=value, headers=headers))
        with self._lock:
            self._pending.setdefault(threading.get_ident(), []).append(future)

    def reply(self, message: ReplyMessage) -> None:
        self._send(self._settings.reply_topic, key=message.claim.code.encode(), value=encode_reply(message))

    def withdrawal(self, notice: WithdrawalNotice) -> None:
        """On the reply topic, keyed by claim code: ordered after that claim's replies."""
        self._send(self._settings.reply_topic, key=notice.claim_code.encode(), value=encode_withdrawal(notice))

    def held(self, key: str, payload: Mapping[str, Any]) -> None:
        self._send(self._settings.held_topic, key=key.encode(), value=_json(payload))

    def audit(self, key: str, bundle: JsonDict) -> None:
        self._send(self._settings.claims_topic, key=key.encode(), value=_json(bundle))

    def dead_letter(
        self, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None:
        """Keep the original bytes and say why; headers carry the provenance."""
        headers = [
            ("cdc-claims-reason", reason.encode()[:1000]),
            ("cdc-claims-source", f"{topic}/{partition}/{offset}".encode()),
        ]
        self._send(self._settings.dead_letter_topic, key=key, value=value, headers=headers)
        metrics.DEAD_LETTERS.labels(reason=reason.split(":", 1)[0][:60]).inc()

    def flush(self) -> None:
        """Wait until everything this thread sent is acknowledged; raise if any of it failed."""
        with self._lock:
            mine = self._pending.pop(threading.get_ident(), [])
        kafka_call("flush", lambda: self._producer.flush(timeout=30))
        try:
            for future in mine:
                future.get(timeout=0)
        except KafkaError as err:
            metrics.KAFKA_ERRORS.labels(op="send").inc()
            raise KafkaUnavailable(f"kafka send: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        try:
            self._producer.close(timeout=10)
        except KafkaError as err:  # closing must never mask what stopped the role
            log.warning("producer_close_failed", error=str(err)[:200])


class LagReporter:
    """``cdc_claims_consumer_lag_records`` for every partition of the subscription, assigned or not.

    Assigned partitions: log end - the consumer's position. Others (no assignment yet, or owned
    by another member): log end - the group's committed offset, so the lag alert still fires
    for a consumer that joined and never received partitions. Also feeds the stall detector.
    """

    def __init__(self, consumer: KafkaConsumer, every: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._consumer = consumer
        self._every = every
        self._clock = clock
        self._last = -every

    def maybe_report(self) -> dict[tuple[str, int], tuple[int, bool]] | None:
        """Every ``every`` s: ``{(topic, partition): (lag, assigned)}``; otherwise None."""
        now = self._clock()
        if now - self._last < self._every:
            return None
        self._last = now
        return kafka_call("lag", self._report)

    def maybe_report_quietly(self) -> dict[tuple[str, int], tuple[int, bool]] | None:
        """:meth:`maybe_report`, but a broker that cannot answer is logged: the lag is a
        report, it never stops a role."""
        try:
            return self.maybe_report()
        except KafkaUnavailable as err:
            log.warning("lag_report_failed", error=str(err)[:200])
            return None

    def _report(self) -> dict[tuple[str, int], tuple[int, bool]]:
        consumer = self._consumer
        assigned = set(consumer.assignment())
        parts: list[Any] = []
        for topic in sorted(consumer.subscription() or ()):
            for p in consumer.partitions_for_topic(topic) or ():
                parts.append(TopicPartition(topic, p))
        if not parts:
            return {}
        ends = consumer.end_offsets(parts, timeout_ms=5000)
        report: dict[tuple[str, int], tuple[int, bool]] = {}
        for tp in parts:
            end = int(ends.get(tp, 0))
            if tp in assigned:
                at = int(consumer.position(tp, timeout_ms=2000) or 0)
            else:
                committed = consumer.committed(tp, timeout_ms=5000)
                at = int(committed) if committed is not None else 0
            lag = max(0, end - at)
            metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
            report[(tp.topic, tp.partition)] = (lag, tp in assigned)
        return report


def subscribe(consumer: KafkaConsumer, topics: list[str], listener: ConsumerRebalanceListener | None = None) -> None:
    """Fetch the topics' metadata, then subscribe.

    A JoinGroup sent before the consumer knows the topics' partitions gets an empty assignment,
    and the rejoin that the metadata then triggers could be left stranded by kafka-python 3.0
    (:func:`stranded_join`, redone by :meth:`GuardedConsumer.poll`); the consumer role's stall
    detector is the net under anything else.
    """
    kafka_call("metadata", lambda: [consumer.partitions_for_topic(topic) for topic in topics])
    if listener is None:
        consumer.subscribe(topics=topics)
    else:
        consumer.subscribe(topics=topics, listener=listener)


#: How long a poll waits while the consumer is (re)joining its group: long enough for a JoinGroup
#: and SyncGroup round trip, so the poll itself receives the assignment (see :func:`stranded_join`).
JOIN_POLL_MS = 1000


def stranded_join(consumer: KafkaConsumer) -> bool:
    """A group join that finished while no ``poll()`` was waiting for it (kafka-python 3.0.12).

    kafka-python 3 runs JoinGroup/SyncGroup as a task that a ``poll()`` awaits for at most its
    timeout; only the awaiting poll marks the member stable, re-enables its heartbeat and hands
    the assignment to the listener. When the task finishes between polls (the role drains its
    units after a revoke, or the poll waited 20 ms), the next poll asks ``need_rejoin()``, which
    for a rejoin caused by a metadata change is already False once the leader has assigned: the
    result is never taken, no heartbeat is sent, the broker drops the member after the session
    timeout, and the consumer sits unassigned (group Empty) until the stall detector rebuilds it.
    Seen in most starts under load (faults ``bad-credentials``: 150 s to catch up).

    Detected here as "a join was prepared (``rejoining``) but no rejoin is needed"; the caller
    then asks for a rejoin, which the next poll performs and waits for. Attributes are read
    defensively: another kafka-python version without them is simply not detected.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not getattr(coordinator, "rejoining", False):
        return False
    try:
        return not coordinator.need_rejoin()
    except Exception:  # a probe of library internals must never break a poll
        return False


class GuardedConsumer:
    """The few consumer calls the roles make, with kafka-python's errors turned into ours."""

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.raw = consumer

    def poll(self, timeout_ms: int = 0) -> Mapping[Any, list[Any]]:
        """Records per partition. While the consumer (re)joins its group the poll waits up to
        :data:`JOIN_POLL_MS`, and a join left stranded (:func:`stranded_join`) is redone."""
        coordinator = getattr(self.raw, "_coordinator", None)
        if stranded_join(self.raw):
            metrics.KAFKA_ERRORS.labels(op="join_stranded").inc()
            log.warning("kafka_join_stranded", hint="rejoining the group (kafka-python 3.0 join result lost)")
            coordinator.rejoin_needed = True  # type: ignore[union-attr]
        if getattr(coordinator, "rejoining", False) or getattr(coordinator, "rejoin_needed", False):
            timeout_ms = max(timeout_ms, JOIN_POLL_MS)
        result: Mapping[Any, list[Any]] = kafka_call("poll", lambda: self.raw.poll(timeout_ms=timeout_ms))
        return result

    def assignment(self) -> set[Any]:
        return set(kafka_call("assignment", self.raw.assignment))

    def commit(self, offsets: Offsets) -> None:
        """Commit ``{(topic, partition): next_offset}`` synchronously (KafkaUnavailable on failure)."""
        if offsets:
            parts = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            kafka_call("commit", lambda: self.raw.commit(offsets=parts))

    def seek_to_committed(self, parts: Iterable[Partition]) -> None:
        """Rewind ``parts`` to the group's committed offsets (the beginning when none): after a
        rebalance the role forgets what it had not finished, so it must read that again."""
        try:
            for tp in parts:
                committed = self.raw.committed(tp, timeout_ms=10000)
                if committed is None:
                    self.raw.seek_to_beginning(tp)
                else:
                    self.raw.seek(tp, committed)
        except KafkaError as err:
            metrics.KAFKA_ERRORS.labels(op="seek").inc()
            raise KafkaUnavailable(f"kafka seek: {type(err).__name__}: {err}") from err

    def pause(self, parts: Iterable[Partition]) -> None:
        """Stop fetching ``parts`` (flow control); records already fetched wait for the resume."""
        chosen = list(parts)
        if chosen:
            kafka_call("pause", lambda: self.raw.pause(*chosen))

    def resume(self, parts: Iterable[Partition]) -> None:
        chosen = list(parts)
        if chosen:
            kafka_call("resume", lambda: self.raw.resume(*chosen))

    def close(self) -> None:
        """Leave the group without committing (the role committed what was durable)."""
        try:
            self.raw.close(autocommit=False, timeout_ms=10000)
        except KafkaError as err:  # a dead broker must not turn a clean stop into a crash
            log.warning("consumer_close_failed", error=str(err)[:200])


class GroupProbe:
    """Asks the broker how the consumer group stands, for a consumer that has no partitions.

    A member with no partitions is either a standby (a rolling update: another member holds
    them, the group is ``Stable`` with two members or more) or stuck (evicted, or in a rebalance
    that never ends: the group is ``Empty``, rebalancing, or we are its only member)."""

    def __init__(self, settings: KafkaSettings, group_id: str) -> None:
        self._settings = settings
        self._group = group_id
        self._admin: Any = None

    def may_be_standby(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            if self._admin is None:
                self._admin = KafkaAdminClient(
                    bootstrap_servers=self._settings.bootstrap_servers.split(","), client_id=f"{self._group}-probe"
                )
            found = self._admin.describe_groups([self._group]).get(self._group) or {}
        except KafkaError as err:  # cannot tell: do not rebuild on a guess
            log.warning("group_probe_failed", error=str(err)[:200])
            return True
        return found.get("group_state") == "Stable" and len(found.get("members") or ()) >= 2

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            except KafkaError as err:
                log.warning("group_probe_close_failed", error=str(err)[:200])
