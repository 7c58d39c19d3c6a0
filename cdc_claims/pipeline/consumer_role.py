"""The consumer role: Debezium records -> settled units -> claims, offsets committed last.

One ``step()``: poll, parse, group by transaction, record what each completed transaction
touched, run every unit whose settle window passed through the claim service, then commit
the offsets the :class:`~cdc_claims.pipeline.offsets.OffsetTracker` says are durable.

The transaction id is the tag that ties records to units: a transaction's offsets are
released only when every unit it touched is done (submitted and replied, held, or cancelled),
so a transaction touching two encounters commits after both claims.

Failure policy, decided here for every unit (the error tree says which is which):

* retriable (openHIM auth or routing, network, 5xx, database, Kafka, a lease held by another
  sidecar): the unit is tried again after a doubling, jittered pause capped at
  ``retry_max_seconds``, **forever**: its offsets stay uncommitted, nothing is parked, and the
  claim goes out by itself once the cause is fixed;
* anything else (a bug, an illegal transition) is retried a few times, then parked as
  ``failed`` / ``internal_error`` in the ledger, where ``rerun-held`` finds it;
* a transaction that cannot be read (touch extraction fails) is dead-lettered with the reason.

A rebalance finishes (or abandons) the units in flight and commits what is durable right after
the poll in which it happened (kafka-python runs listeners on its IO thread, where a commit
cannot block), then forgets everything else: the next owner, or this consumer after it is
reassigned, reads again from the committed offsets; the submit lease keeps two owners from
POSTing one unit meanwhile.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from cdc_claims import metrics
from cdc_claims.capture import Position, RowChange, Transaction, TransactionBuffer, parse_record, slim, touched_by
from cdc_claims.capture.touched import EXTRACTORS
from cdc_claims.errors import CdcClaimsError, ConsumerStalled, KafkaUnavailable, MalformedEvent
from cdc_claims.log import get_logger
from cdc_claims.pipeline.flow import CAUSES, OPEN, FlowControl, Intake, Load
from cdc_claims.pipeline.offsets import OffsetTracker
from cdc_claims.pipeline.ports import ConsumerSink, Lookups, Partition, Record, RecordSource, UnitRef, UnitService
from cdc_claims.pipeline.stall import LagReport, StallDetector
from cdc_claims.settings import Settings
from cdc_claims.settle import Due, SettleTracker, Unit

log = get_logger(__name__)

#: tables whose changes we read (anything else in an END is not waited for): exactly the tables
#: touch extraction has a rule for
CAPTURED_TABLES = tuple(EXTRACTORS)
#: tries of a unit that fails with an unexpected (non-retriable) error before it is parked
MAX_UNIT_ATTEMPTS = 8


def backoff(attempt: int, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds before try ``attempt + 1``: 2, 4, 8... capped at ``cap``, then jittered down to
    half, so units that failed together (openIMIS down) do not all come back in one burst."""
    base = min(cap, 2.0 ** min(attempt, 30))
    return base * (0.5 + 0.5 * rng())


def data_topics(settings: Settings) -> list[str]:
    return [settings.kafka.table_topic(t) for t in CAPTURED_TABLES] + [settings.kafka.transaction_topic]


class ConsumerRole:
    def __init__(
        self,
        *,
        consumer: RecordSource,
        service: UnitService,
        lookups: Lookups,
        sink: ConsumerSink,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        expire_after: float = 120.0,
        concurrency: int = 4,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._consumer = consumer
        self._service = service
        self._lookups = lookups
        self._sink = sink
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng
        self._expire_after = expire_after
        self._retry_max = settings.retry_max_seconds
        self._settle_seconds = settings.settle.settle_seconds
        self._tx_topic = settings.kafka.transaction_topic
        self._settings = settings
        self._reset()
        self._last_commit = 0.0
        self.stall = StallDetector(settings.kafka.stall_seconds, started=clock())
        self._assignment: list[Partition] = []
        self._rebalanced = False
        self._revoked = False
        # Units run on worker threads (each claim waits ~0.2 s on openIMIS); the settle tracker,
        # the offsets and Kafka stay on this thread. Only as many units are handed out as there
        # are workers: the rest stay in the settle tracker, not in an executor queue. How many
        # POSTs run at once is the claim API's business (``concurrency.PacedApi``).
        self._concurrency = concurrency
        self._workers = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="claim")
        self._flow = FlowControl(settings.intake)
        self._intake = OPEN
        # data topic -> its data collection (``<db>.<table>``), for pausing the topics that run ahead
        self._collections = {settings.kafka.table_topic(t): f"{settings.kafka.database}.{t}" for t in CAPTURED_TABLES}
        # time spent with every partition paused: transactions cannot progress then, so it must
        # not count toward their expiry (they would be handed out incomplete after the resume)
        self._closed_for = 0.0
        self._closed_since: float | None = None
        # units held for a reason that leaves no trace on them (a payer's, a missing document)
        # are looked at again on this timer (0: never); one ledger SELECT per round
        self._recheck_every = settings.payer.recheck_seconds
        self._next_recheck = clock() + self._recheck_every

    def _reset(self) -> None:
        """Forget every record not yet committed: they will be read again from the commit."""
        self.buffer = TransactionBuffer(watched=[f"{self._settings.kafka.database}.{t}" for t in CAPTURED_TABLES])
        self.settle = SettleTracker(self._settings.settle)
        self.offsets = OffsetTracker()
        self._commit_times: dict[Unit, tuple[int | None, int]] = {}
        self._attempts: dict[Unit, int] = {}
        self._deferred: list[Transaction] = []  # waiting for the database look-ups to work again
        self._inflight: dict[Future[object], tuple[Due, UnitRef]] = {}

    # ------------------------------------------------------------------ rebalance
    def on_revoked(self, parts: list[Partition]) -> None:
        """Partitions are being taken away. kafka-python calls this on its IO thread, where no
        blocking call (a commit) may run: only note it; :meth:`step` finishes the units in
        flight, commits what is durable and forgets the rest right after the poll."""
        self._revoked = True

    def on_assigned(self, parts: list[Partition]) -> None:
        self._assignment = list(parts)
        self.stall.assigned(self._clock(), len(parts))
        self._rebalanced = True  # rewind to the committed offsets before reading on

    def _after_rebalance(self) -> None:
        """Finish (or abandon) the units in flight, commit what is durable, forget the rest and
        rewind to the committed offsets. A unit still running keeps its submit lease, so the
        next owner of the partitions waits for it instead of POSTing it a second time."""
        if self._revoked:
            self._revoked = False
            abandoned = self.drain(timeout=30.0)
            if abandoned:
                log.warning("units_abandoned_at_rebalance", units=abandoned)
            self._reset()
        if self._rebalanced:
            self._rebalanced = False
            # kafka-python keeps the paused flag of the partitions a rebalance leaves us: start the
            # new assignment from a known state (everything read) and let _regulate decide again
            self._consumer.resume(self._assignment)
            self._flow = FlowControl(self._settings.intake)
            self._set_intake(OPEN, self._clock())
            self._consumer.seek_to_committed(self._assignment)

    def ready(self) -> bool | str:
        """Readiness: assigned and consuming (not stalled), or a standby of a stable group."""
        return self.stall.ready(self._clock())

    def observe_lag(self, report: LagReport | None, *, stable: bool = True) -> None:
        """Feed a lag report and the group membership; raise :class:`ConsumerStalled` once stuck."""
        now = self._clock()
        self.stall.membership(now, stable)
        if report is not None:
            self.stall.report(now, report)
        problem = self.stall.stalled(now)
        if problem is not None:
            raise ConsumerStalled(f"consumer stalled ({problem}) for {self.stall.stall_seconds:.0f}s", cause=problem)

    # ------------------------------------------------------------------ loop
    def step(self, timeout_ms: int = 200) -> None:
        batches = self._consumer.poll(timeout_ms=min(timeout_ms, 20) if self._inflight else timeout_ms)
        now = self._clock()
        if self._revoked or self._rebalanced:
            # A rebalance happened inside that poll: what it returned may start past the commit
            # (kafka-python keeps positions of partitions it keeps), but the role forgets those
            # records. Drop the batch and rewind; they come again.
            self._after_rebalance()
            return
        self._retry_deferred(now)
        for records in batches.values():
            if records:
                self.stall.records(now)
            for record in records:
                self._consume(record, now)
        for tx in self.buffer.expire(self._buffer_time(now), self._expire_after):
            log.warning("transaction_expired_incomplete", tx_id=tx.tx_id, rows=len(tx.rows))
            self._on_transaction(tx, now)
        self._recheck_held(self._clock())
        self._settle(self._clock())
        self._commit()
        self._regulate()
        metrics.PENDING_UNITS.set(self.settle.pending_count)

    @property
    def intake(self) -> Intake:
        return self._intake

    def _buffer_time(self, now: float) -> float:
        """The transaction buffer's clock: ``now`` without the time intake was closed."""
        closed = self._closed_for + (now - self._closed_since if self._closed_since is not None else 0.0)
        return now - closed

    def _regulate(self) -> None:
        """Pause or resume partitions so memory stays bounded whatever the backlog (``flow.py``)."""
        load = Load(
            pending_units=self.settle.pending_count + len(self._deferred),
            rows_waiting_for_end=self.buffer.rows_waiting_for_end_by_collection(),
            ends_waiting_for_rows=self.buffer.ends_waiting_for_rows,
        )
        intake = self._flow.decide(load)
        self.stall.intake_paused(not intake.open)
        if intake == self._intake:
            return
        reads = {
            tp: intake.reads(None if tp.topic == self._tx_topic else self._collections.get(tp.topic))
            for tp in self._consumer.assignment()
        }
        self._consumer.pause([tp for tp, read in reads.items() if not read])
        self._consumer.resume([tp for tp, read in reads.items() if read])
        causes = intake.causes()
        for cause in CAUSES:
            metrics.INTAKE_PAUSED.labels(cause=cause).set(1 if cause in causes else 0)
        log.info(
            "intake_resumed" if intake.open else "intake_paused",
            intake=intake.describe(),
            was=self._intake.describe(),
            pending_units=load.pending_units,
            rows_waiting_for_end=sum(load.rows_waiting_for_end.values()),
            ends_waiting_for_rows=load.ends_waiting_for_rows,
        )
        self._set_intake(intake, self._clock())

    def _set_intake(self, intake: Intake, now: float) -> None:
        """Note what is being read, and keep the closed time out of the buffer's clock."""
        if intake.closed and self._closed_since is None:
            self._closed_since = now
        elif not intake.closed and self._closed_since is not None:
            self._closed_for += now - self._closed_since
            self._closed_since = None
        self._intake = intake

    def drain(self, timeout: float = 60.0) -> list[str]:
        """Wait for every unit in flight, record its outcome and commit what is durable.

        Returns the units still running at the deadline (abandoned: they replay)."""
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            try:
                next(iter(self._inflight)).exception(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            self._collect(self._clock())
        self._commit(force=True)
        return [str(ref) for _due, ref in self._inflight.values()]

    def _consume(self, record: Record, now: float) -> None:
        position = Position(record.topic, record.partition, record.offset)
        if not self.offsets.track(position):
            return  # same-position redelivery
        table = record.topic.rsplit(".", 1)[-1] if record.topic != self._tx_topic else "transaction"
        metrics.CHANGE_EVENTS.labels(table=table).inc()
        try:
            event = parse_record(
                record.topic,
                record.partition,
                record.offset,
                record.key,
                record.value,
                transaction_topic=self._tx_topic,
            )
        except MalformedEvent as err:
            log.error("malformed_event", topic=record.topic, offset=record.offset, reason=err.reason)
            self._sink.dead_letter(
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value,
                reason=f"{err.reason}: {err}"[:500],
            )
            self._sink.flush()
            self.offsets.done([position])
            return
        if isinstance(event, RowChange):
            event = slim(event)  # rows wait for their transaction: keep only what touches need
        result = self.buffer.feed(event, self._buffer_time(now))
        self.offsets.done(result.ignored)
        for tx in result.completed:
            self._on_transaction(tx, now)

    def _on_transaction(self, tx: Transaction, now: float) -> None:
        try:
            self._apply(tx, now)
        except CdcClaimsError as err:
            if not err.retriable:
                self._dead_letter_transaction(tx, f"{err.reason}: {err}")
                return
            # the database look-ups failed: keep the transaction (its offsets stay pending)
            log.warning("transaction_deferred", tx_id=tx.tx_id, reason=err.reason, error=str(err)[:200])
            self._deferred.append(tx)
        except Exception as err:  # a bug on one transaction must not stop every other claim
            self._dead_letter_transaction(tx, f"internal_error: {type(err).__name__}: {err}")

    def _dead_letter_transaction(self, tx: Transaction, reason: str) -> None:
        """A transaction whose rows cannot be read (``encounter_id: "not-a-number"``): dead-letter
        it, naming its records, and go on. Replaying it would fail the same way forever."""
        log.error("transaction_dead_lettered", tx_id=tx.tx_id, rows=len(tx.rows), reason=reason[:300])
        first = min(tx.positions, key=lambda p: (p.topic, p.partition, p.offset), default=None)
        summary = {
            "tx_id": tx.tx_id,
            "reason": reason[:500],
            "records": [f"{p.topic}/{p.partition}/{p.offset}" for p in tx.positions],
        }
        self._sink.dead_letter(
            topic=first.topic if first else self._tx_topic,
            partition=first.partition if first else 0,
            offset=first.offset if first else -1,
            key=str(tx.tx_id).encode(),
            value=json.dumps(summary).encode(),
            reason=reason[:500],
        )
        self._sink.flush()
        self.offsets.done(tx.positions)

    def _retry_deferred(self, now: float) -> None:
        deferred, self._deferred = self._deferred, []
        for tx in deferred:
            self._on_transaction(tx, now)

    def _touched_at(self, tx: Transaction, now: float) -> float:
        """When the change happened, on the role's clock: ``now`` less the transaction's age.

        The settle window asks "has nobody edited it for settle_seconds?", and the source's commit
        time answers it: a backlog of Saves committed hours ago (a sidecar that was down, a broker
        that kept the records) is settled on arrival and goes at the payer's pace, instead of
        waiting one more window after it is read. The age is clamped to [0, settle_seconds], so a
        database clock ahead of ours changes nothing and one behind it shortens a live window by
        its skew at most."""
        if tx.commit_ts_ms is None:
            return now
        age = self._wall() - tx.commit_ts_ms / 1000
        return now - min(max(age, 0.0), self._settle_seconds)

    def _apply(self, tx: Transaction, now: float) -> None:
        metrics.TRANSACTIONS.inc()
        touches = touched_by(tx)
        tag = tx.tx_id
        captured_ms = int(time.time() * 1000)
        now = self._touched_at(tx, now)
        units = set(self.settle.record(touches, now, tag=tag, visit_of=touches.encounter_visits))
        if touches.order_ids_to_resolve:
            for encounter_id in self._lookups.order_encounters(touches.order_ids_to_resolve).values():
                unit = self.settle.touch_encounter(encounter_id, now, tag=tag)
                if unit is not None:
                    units.add(unit)
        if touches.patient_ids:
            # insurance number added or fixed: give the patient's held claims another go
            for _uuid, encounter_id in self._lookups.patient_held_encounters(touches.patient_ids):
                unit = self.settle.touch_encounter(encounter_id, now, tag=tag)
                if unit is not None:
                    units.add(unit)
        awaiting = self.settle.needs_visit_lookup()
        if awaiting:
            found = self._lookups.encounter_visit(awaiting)
            for encounter_id in awaiting:
                unit = self.settle.resolve(encounter_id, found.get(encounter_id))
                if unit is not None:
                    units.add(unit)
        for unit in units:
            self._commit_times[unit] = (tx.commit_ts_ms, captured_ms)
        if self.settle.holds(tag):
            self.offsets.assign(tx.positions, tag)
        else:
            self.offsets.done(tx.positions)

    def _recheck_held(self, now: float) -> None:
        """Every ``payer.recheck_seconds``: units held for a policy, a pricelist or a missing
        document go again, now."""
        if self._recheck_every <= 0 or now < self._next_recheck:
            return
        self._next_recheck = now + self._recheck_every
        try:
            units = list(self._lookups.held_units_to_recheck())
        except CdcClaimsError as err:  # the database is down: the next round tries again
            log.warning("held_recheck_skipped", error=str(err)[:200])
            return
        settled = now - self._settle_seconds  # nothing changed in OpenMRS: due at once
        for kind, unit_id in units:
            if kind == "encounter":
                self.settle.touch_encounter(unit_id, settled)
            else:
                self.settle.touch_visit(unit_id, settled)
        if units:
            log.info("held_recheck", units=len(units))

    # ------------------------------------------------------------------ settle -> claims
    def _settle(self, now: float) -> None:
        self._collect(now)
        free = self._concurrency - len(self._inflight)
        for due in self.settle.due(now, limit=free) if free > 0 else ():
            committed_ms, captured_ms = self._commit_times.get(due.unit, (None, int(time.time() * 1000)))
            ref = UnitRef(due.unit.kind, due.unit.id, committed_ms, captured_ms)
            self._attempts[due.unit] = self._attempts.get(due.unit, 0) + 1
            self._inflight[self._workers.submit(self._service.process, ref)] = (due, ref)
        self._collect(now)

    def _collect(self, now: float) -> None:
        """Record the outcome of every finished unit: release its offsets, or schedule a retry."""
        for future in [f for f in self._inflight if f.done()]:
            due, ref = self._inflight.pop(future)
            if self._finished(due, ref, future, now):
                for tag in self.settle.done(due.unit, due.token):
                    self.offsets.release(tag)
                self._attempts.pop(due.unit, None)
                self._commit_times.pop(due.unit, None)

    def _finished(self, due: Due, ref: UnitRef, future: Future[object], now: float) -> bool:
        attempt = self._attempts.get(due.unit, 1)
        err = future.exception()
        if err is None:
            return True
        if isinstance(err, CdcClaimsError) and err.retriable:
            # time or a person fixes this: never park, never give up (see the module docstring)
            delay = backoff(attempt, self._retry_max, self._rng)
            log.warning("unit_retry", unit=str(ref), reason=err.reason, attempt=attempt, delay=round(delay, 1))
            metrics.UNIT_RETRIES.labels(reason=err.reason).inc()
            self.settle.retry(due.unit, due.token, now, delay)
            return False
        # a bug (or an illegal transition) must not stop every other claim: retry, then park
        reason = "internal_error"
        log.error("unit_failed_unexpectedly", unit=str(ref), attempt=attempt, error=repr(err)[:500])
        if attempt < MAX_UNIT_ATTEMPTS:
            self.settle.retry(due.unit, due.token, now, backoff(attempt, self._retry_max, self._rng))
            return False
        return self._give_up(due, ref, reason, f"{type(err).__name__}: {err}")

    def _give_up(self, due: Due, ref: UnitRef, reason: str, text: str) -> bool:
        """Park the unit as ``failed`` in the ledger (rerun-held picks it up), publish it, move on."""
        log.error("unit_parked", unit=str(ref), reason=reason, error=text[:300])
        try:
            self._service.park(ref, reason, text)
        except CdcClaimsError as err:
            if err.retriable:  # the ledger is unreachable: keep the unit, try again later
                self.settle.retry(due.unit, due.token, self._clock(), self._retry_max)
                return False
            log.error("unit_park_failed", unit=str(ref), error=str(err)[:300])
        except Exception as err:  # the park itself hit the bug: the held notice is the record
            log.error("unit_park_failed", unit=str(ref), error=repr(err)[:300])
        self._sink.held(
            str(ref),
            {"kind": "failed", "unit_kind": ref.kind, "unit_id": ref.id, "reason": reason, "detail": text[:2000]},
        )
        self._sink.flush()
        metrics.CLAIMS_HELD.labels(reason=reason).inc()
        return True

    # ------------------------------------------------------------------ offsets
    def _commit(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last_commit < 1.0:
            return
        offsets = self.offsets.to_commit()
        self._last_commit = now
        if offsets:
            try:
                self._consumer.commit(dict(offsets))
            except KafkaUnavailable as err:
                # broker restart or rebalance: nothing is lost, the same offsets go next time
                log.warning("commit_failed", error=str(err)[:300])
                return
            self.offsets.mark_committed(offsets)

    def close(self) -> None:
        """Finish the units in flight, commit what is durable; pending units replay after a restart.

        Never raises: closing must not hide why the role stopped, nor crash on a dead broker."""
        try:
            self.drain()
        except Exception as err:
            log.warning("close_drain_failed", error=repr(err)[:300])
        self._workers.shutdown(wait=True, cancel_futures=True)
