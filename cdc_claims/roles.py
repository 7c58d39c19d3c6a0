"""Wiring: the real adapters behind each role's ports, built from :class:`Settings`.

This is the only module that knows every adapter; the roles and the claim service only know
the small protocols of :mod:`cdc_claims.pipeline.ports`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from cdc_claims import metrics, observability
from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.assemble.reader import OpenMrsReader, ReaderConfig
from cdc_claims.claim import render_audit_bundle, render_claim
from cdc_claims.db import ConnFactory, reader_connection_factory, writer_connection_factory
from cdc_claims.errors import (
    HELD_REASONS,
    CdcClaimsError,
    ConfigError,
    ConsumerStalled,
    KafkaUnavailable,
    SourceUnavailable,
)
from cdc_claims.health import HEALTH
from cdc_claims.ledger.store import Ledger
from cdc_claims.lifecycle import NEEDS_ACTION_STATES, OPEN_STATES, State
from cdc_claims.log import get_logger
from cdc_claims.mapping.apply import build_draft
from cdc_claims.mapping.check import check_mapping as run_check
from cdc_claims.mapping.check import render_text
from cdc_claims.mapping.model import ClaimMapping, load_mapping
from cdc_claims.pipeline.claim_service import ClaimService
from cdc_claims.pipeline.consumer_role import ConsumerRole, data_topics
from cdc_claims.pipeline.kafka_io import (
    GroupProbe,
    GuardedConsumer,
    KafkaPublisher,
    LagReporter,
    RebalanceListener,
    commit,
    kafka_call,
    make_consumer,
    make_producer,
    seek_to_committed,
)
from cdc_claims.pipeline.poller import OpenClaim, Poller
from cdc_claims.pipeline.ports import JsonDict, UnitRef
from cdc_claims.pipeline.runner import Stopper, run_loop
from cdc_claims.pipeline.writer_role import ReplyWriter
from cdc_claims.reply.model import WithdrawalNotice, decode_draft
from cdc_claims.reply.normalize import normalize
from cdc_claims.settings import Settings
from cdc_claims.submit.client import OpenImisClient
from cdc_claims.writeback.iclm import IclmWriter

log = get_logger(__name__)


# ---------------------------------------------------------------------- adapters
@dataclass
class UnitReader:
    """``Reader`` port over :class:`OpenMrsReader`."""

    reader: OpenMrsReader

    def read(self, unit: UnitRef) -> ClaimContext:
        if unit.kind == "visit":
            return self.reader.read_visit(unit.id)
        return self.reader.read_encounter(unit.id)


class FhirRenderer:
    """``Renderer`` port over :mod:`cdc_claims.claim`."""

    def claim(self, draft: ClaimDraft) -> JsonDict:
        return render_claim(draft)

    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: JsonDict) -> JsonDict:
        return render_audit_bundle(ctx, draft, claim)


@dataclass
class DraftBuilder:
    mapping: ClaimMapping

    def __call__(self, ctx: ClaimContext, *, created: date, revision: int) -> ClaimDraft:
        return build_draft(ctx, self.mapping, created=created, revision=revision)


@dataclass
class ConsumerLookups:
    """The consumer's look-ups: order -> encounter, encounter -> visit, patient -> held units."""

    reader: OpenMrsReader
    ledger: Ledger
    conn_factory: Any

    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]:
        return self.reader.order_encounters(order_ids)

    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]:
        return self.reader.encounter_visit(encounter_ids)

    def patient_held_encounters(self, patient_ids: Iterable[int]) -> list[tuple[str, int]]:
        ids = sorted(set(patient_ids))
        if not ids:
            return []
        held = [e for e in self.ledger.list_by_state([State.HELD]) if e.unit_kind == "encounter"]
        if not held:
            return []
        marks = ", ".join(["%s"] * len(ids))
        conn = self.conn_factory()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT uuid FROM person WHERE person_id IN ({marks})", ids)  # noqa: S608 - placeholders
                patients = {row["uuid"] for row in cur.fetchall()}
                wanted = [e.unit_uuid for e in held if e.patient_uuid in patients]
                if not wanted:
                    return []
                marks = ", ".join(["%s"] * len(wanted))
                cur.execute(
                    f"SELECT uuid, encounter_id FROM encounter WHERE uuid IN ({marks})",  # noqa: S608 - placeholders
                    wanted,
                )
                return [(str(r["uuid"]), int(r["encounter_id"])) for r in cur.fetchall()]
        finally:
            conn.close()


@dataclass
class LedgerOpenClaims:
    """``OpenClaimStore`` for the poller, over the claim history (every claim sent: originals,
    supplements, replacements) and the unit ledger rows of the originals."""

    ledger: Ledger

    def open_claims(self) -> Sequence[OpenClaim]:
        return [
            OpenClaim(record.claim_code, record.state, decode_draft(record.draft_json))
            for record in self.ledger.open_claims(OPEN_STATES)
            if record.draft_json
        ]

    def report_held(self) -> None:
        """``cdc_claims_held_claims{reason}``: held and failed ledger rows, as billing staff see them
        (``nothing_to_claim`` units are not among them)."""
        counts = Counter(e.reason or "unknown" for e in self.ledger.list_by_state(NEEDS_ACTION_STATES))
        for reason in {*HELD_REASONS, *counts}:
            metrics.CLAIMS_HELD_CURRENT.labels(reason=reason).set(counts.get(reason, 0))

    def set_state(
        self,
        claim_code: str,
        state: State,
        *,
        openimis_claim_uuid: str | None,
        reason: str | None = None,
        rejected: tuple[str, ...] | None = None,
    ) -> tuple[str, ...] | None:
        """Move the claim on; returns its remaining withdrawal lines when openIMIS's rejection of
        some of them settled those (None when nothing changed there)."""
        remaining: tuple[str, ...] | None = None
        record = self.ledger.claim(claim_code)
        if record is not None:
            changed = replace(
                record, state=state, openimis_claim_uuid=openimis_claim_uuid or record.openimis_claim_uuid
            )
            if reason is not None:
                changed = replace(changed, reason=reason)
            if rejected is not None:
                changed = replace(changed, rejected_lines=rejected)
                pending = json.loads(record.withdrawal) if record.withdrawal else {}
                settled = {line for line in pending if line in rejected}
                if settled and "*" not in pending:
                    left = {k: v for k, v in pending.items() if k not in settled}
                    changed = replace(changed, withdrawal=json.dumps(left, sort_keys=True) if left else None)
                    remaining = tuple(sorted(left))
            self.ledger.upsert_claim(changed)
        entry = self.ledger.get_by_code(claim_code)  # the unit row of an original claim
        if entry is not None:
            unit = replace(entry, state=state, openimis_claim_uuid=openimis_claim_uuid or entry.openimis_claim_uuid)
            self.ledger.upsert(replace(unit, reason=reason) if reason is not None else unit)
        return remaining

    def note(self, claim_code: str, text: str) -> bool:
        record = self.ledger.claim(claim_code)
        if record is not None and record.last_error == text:
            return False
        if record is not None:
            self.ledger.upsert_claim(replace(record, last_error=text))
        entry = self.ledger.get_by_code(claim_code)
        if entry is not None and entry.last_error != text:
            self.ledger.upsert(replace(entry, last_error=text))
        return True


# ---------------------------------------------------------------------- construction
def load(settings: Settings) -> ClaimMapping:
    if not settings.mapping_file.is_file():
        raise ConfigError(f"mapping file {settings.mapping_file} not found (set CDC_CLAIMS_MAPPING_FILE)")
    return load_mapping(settings.mapping_file)


def reader_factory(settings: Settings) -> ConnFactory:
    return reader_connection_factory(settings.db)


def owner_id() -> str:
    """Who holds a submit lease: the pod (host name) and the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_dead(holder: str) -> bool:
    """True when ``holder`` (an :func:`owner_id`) was a process of this host that no longer runs.

    A container restarted in its pod keeps the host name: its old lease is taken over at once
    instead of being waited out. Holders on other hosts are never judged (their lease expires).
    """
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def build_service(
    settings: Settings, mapping: ClaimMapping, publisher: KafkaPublisher, client: OpenImisClient
) -> tuple[ClaimService, OpenMrsReader, Ledger]:
    reader = OpenMrsReader(reader_factory(settings), ReaderConfig.from_mapping(mapping))
    reader.resolve()
    ledger = Ledger(writer_connection_factory(settings.db))
    service = ClaimService(
        reader=UnitReader(reader),
        build_draft=DraftBuilder(mapping),
        renderer=FhirRenderer(),
        api=client,
        normalize=normalize,
        publisher=publisher,
        ledger=ledger,
        supplements=settings.supplements,
        owner=owner_id(),
        lease_seconds=settings.lease_seconds,
        holder_dead=holder_dead,
    )
    return service, reader, ledger


class Heartbeat:
    """Liveness of the loop: it completed a step recently."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._last = 0.0

    def beat(self) -> None:
        self._last = time.monotonic()

    def __call__(self) -> bool:
        return time.monotonic() - self._last < self._max_age


class Readiness:
    """``/readyz``: the loop turns, the role's own check passes (a consumer: assigned and
    consuming) and no dependency has kept refusing us (openHIM credentials, routing...)."""

    def __init__(self, heartbeat: Heartbeat) -> None:
        self.heartbeat = heartbeat
        self.check: Callable[[], bool | str] = lambda: True

    def __call__(self) -> bool | str:
        if not self.heartbeat():
            return "loop not turning"
        own = self.check()
        if own is not True:
            return own or "not ready"
        return HEALTH.problem() or True


def run_role(role: str, settings: Settings) -> int:
    stopper = Stopper()
    stopper.install()
    heartbeat = Heartbeat(max_age=max(60.0, settings.poll_seconds * 3))
    readiness = Readiness(heartbeat)
    server = observability.serve(settings.metrics_port, readiness)
    readiness.check = lambda: "waiting for kafka"
    producer = _retrying(lambda: make_producer(settings.kafka, f"cdc-claims-{role}"), stopper)
    if producer is None:  # stopped while Kafka was still unreachable
        server.close()
        return 0
    readiness.check = lambda: True
    publisher = KafkaPublisher(producer, settings.kafka)
    try:
        if role == "consumer":
            _run_consumer(settings, publisher, stopper, readiness)
        elif role == "writer":
            _run_writer(settings, publisher, stopper, readiness)
        else:
            _run_poller(settings, publisher, stopper, readiness)
    finally:
        publisher.close()
        server.close()
    return 0


def _run_consumer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    """Run the consumer; a stalled Kafka consumer is closed and built again (a fresh join)."""
    mapping = load(settings)
    client = OpenImisClient(settings.openhim)
    service, reader, ledger = build_service(settings, mapping, publisher, client)
    lookups = ConsumerLookups(reader, ledger, reader_factory(settings))
    try:
        while not stopper.stopped:
            try:
                _consume_until_stalled(
                    settings,
                    service=service,
                    lookups=lookups,
                    publisher=publisher,
                    stopper=stopper,
                    readiness=readiness,
                )
            except ConsumerStalled as stalled:
                metrics.CONSUMER_REBUILDS.labels(cause=stalled.cause).inc()
                log.warning("consumer_rebuilding", reason=stalled.message)
    finally:
        client.close()


def _consume_until_stalled(
    settings: Settings,
    *,
    service: ClaimService,
    lookups: ConsumerLookups,
    publisher: KafkaPublisher,
    stopper: Stopper,
    readiness: Readiness,
) -> None:
    raw = _retrying(lambda: make_consumer(settings.kafka, group_id=settings.kafka.group_id), stopper)
    if raw is None:
        return
    consumer = GuardedConsumer(raw)
    role = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=lookups,
        sink=publisher,
        settings=settings,
        commit=commit,
        seek_to_committed=seek_to_committed,
        concurrency=settings.submit_concurrency,
    )
    topics = data_topics(settings)
    # Metadata first: a JoinGroup sent before the consumer knows the topics' partitions gets an
    # empty assignment, and the rejoin that the metadata then triggers can hang in kafka-python
    # (seen at start and after broker restarts); the stall detector is the net under this.
    kafka_call("metadata", lambda: [raw.partitions_for_topic(topic) for topic in topics])
    raw.subscribe(topics=topics, listener=RebalanceListener(role.on_revoked, role.on_assigned))
    readiness.check = role.ready
    lag = LagReporter(raw)

    probe = GroupProbe(settings.kafka, settings.kafka.group_id)
    standby = [False]

    def step() -> None:
        role.step()
        try:
            report = lag.maybe_report()
        except KafkaUnavailable as err:  # the lag is a report: it never stops the consumer
            log.warning("lag_report_failed", error=str(err)[:200])
            report = None
        if report is not None:  # every 10 s: is an unassigned consumer a standby, or stuck?
            standby[0] = bool(consumer.assignment()) or probe.may_be_standby()
        role.observe_lag(report, stable=standby[0])
        readiness.heartbeat.beat()

    try:
        run_loop(step, stopper, name="consumer", escalate=(ConsumerStalled,))
    finally:
        role.close()
        consumer.close()
        probe.close()


def _retrying(build: Callable[[], Any], stopper: Stopper, pause: float = 2.0) -> Any:
    """Build a Kafka client, waiting while the broker is unreachable (None if stopped meanwhile)."""
    while not stopper.stopped:
        try:
            return build()
        except CdcClaimsError as err:
            if not err.retriable:
                raise
            log.warning("kafka_client_retry", error=str(err)[:300])
            stopper.wait(pause)
    return None


def _run_writer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    group = f"{settings.kafka.group_id}-writer"
    raw = _retrying(lambda: make_consumer(settings.kafka, group_id=group), stopper)
    if raw is None:
        return
    raw.subscribe(topics=[settings.kafka.reply_topic])
    consumer = GuardedConsumer(raw)
    writer = ReplyWriter(
        consumer, IclmWriter(writer_connection_factory(settings.db)), publisher, stopper, commit=commit
    )
    readiness.check = lambda: bool(raw.assignment()) or "no assignment"
    lag = LagReporter(raw)

    def step() -> None:
        writer.step()
        try:
            lag.maybe_report()
        except KafkaUnavailable as err:
            log.warning("lag_report_failed", error=str(err)[:200])
        readiness.heartbeat.beat()

    try:
        run_loop(step, stopper, name="writer")
    finally:
        consumer.close()


def _run_poller(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    heartbeat = readiness.heartbeat
    client = OpenImisClient(settings.openhim)
    store = LedgerOpenClaims(Ledger(writer_connection_factory(settings.db)))
    poller = Poller(store, client, normalize, publisher, interval=settings.poll_seconds)

    def step() -> None:
        heartbeat.beat()
        store.report_held()
        changed = poller.poll_once()
        heartbeat.beat()
        if changed:
            log.info("poll_done", changed=changed)
        stopper.wait(settings.poll_seconds)

    try:
        run_loop(step, stopper, name="poller")
    finally:
        client.close()


# ---------------------------------------------------------------------- one-shot commands
def check_mapping(settings: Settings) -> int:
    mapping = load(settings)
    conn = reader_factory(settings)()
    try:
        report = run_check(conn, mapping)
    finally:
        conn.close()
    print(render_text(report), end="")
    return 0 if report.ok else 1


def rerun_held(settings: Settings, *, reason: str | None = None, unit_uuid: str | None = None) -> int:
    """Run held and failed units through the claim service again (after fixing the cause)."""
    if reason is not None and reason not in HELD_REASONS:
        raise ConfigError(f"unknown reason {reason!r}; one of: {', '.join(HELD_REASONS)}")
    mapping = load(settings)
    producer = make_producer(settings.kafka, "cdc-claims-rerun")
    publisher = KafkaPublisher(producer, settings.kafka)
    client = OpenImisClient(settings.openhim)
    try:
        service, _reader, ledger = build_service(settings, mapping, publisher, client)
        entries = ledger.to_rerun(reason=reason, unit_uuid=unit_uuid)
        print(f"{len(entries)} held/failed/stranded claim(s) to re-run", flush=True)
        failures = 0
        for entry in entries:
            unit_id = _unit_id(reader_factory(settings), entry.unit_kind, entry.unit_uuid)
            if unit_id is None:
                print(f"  {entry.unit_kind} {entry.unit_uuid}: no longer in the database", flush=True)
                failures += 1
                continue
            try:
                result = service.process(UnitRef(entry.unit_kind, unit_id))
            except CdcClaimsError as err:
                print(f"  {entry.unit_kind} {entry.unit_uuid}: not now ({err.reason}): {err}", flush=True)
                failures += 1
                continue
            print(
                f"  {entry.unit_kind} {entry.unit_uuid}: {result.outcome}"
                + (f" ({result.reason})" if result.reason else "")
                + (f" claim {result.claim_code}" if result.claim_code else ""),
                flush=True,
            )
            failures += result.outcome in ("held", "failed")
        return 1 if failures else 0
    finally:
        client.close()
        publisher.close()


def resubmit(settings: Settings, *, unit_uuid: str, force: bool = False) -> int:
    """Send the corrected rejected lines of one unit as a replacement claim (never accepted ones)."""
    mapping = load(settings)
    publisher = KafkaPublisher(make_producer(settings.kafka, "cdc-claims-resubmit"), settings.kafka)
    client = OpenImisClient(settings.openhim)
    try:
        service, _reader, ledger = build_service(settings, mapping, publisher, client)
        entry = next((e for kind in ("encounter", "visit") if (e := ledger.get(kind, unit_uuid))), None)
        if entry is None:
            print(f"{unit_uuid}: no claim for this encounter or visit", flush=True)
            return 1
        unit_id = _unit_id(reader_factory(settings), entry.unit_kind, unit_uuid)
        if unit_id is None:
            print(f"{entry.unit_kind} {unit_uuid}: no longer in the database", flush=True)
            return 1
        result = service.process(UnitRef(entry.unit_kind, unit_id), resubmit=True, force=force)
        print(f"{entry.unit_kind} {unit_uuid}: {result.outcome} ({result.reason or '-'})", flush=True)
        for record in ledger.claims_of(entry.unit_kind, unit_uuid):
            print(f"  {record.kind:<11} {record.claim_code}  {record.state.value}", flush=True)
        return 0 if result.outcome not in ("held", "failed") else 1
    finally:
        client.close()
        publisher.close()


def withdrawal_handled(settings: Settings, *, claim_code: str, lines: Sequence[str] | None, by: str) -> int:
    """Billing staff withdrew lines (or the claim) in openIMIS: clear the flags, keep who did it."""
    ledger = Ledger(writer_connection_factory(settings.db))
    record = ledger.claim(claim_code)
    if record is None or not record.withdrawal:
        print(f"{claim_code}: nothing to withdraw", flush=True)
        return 1
    pending: dict[str, Any] = json.loads(record.withdrawal)
    done = set(lines or pending)
    unknown = done - set(pending)
    if unknown:
        print(f"{claim_code}: not flagged for withdrawal: {', '.join(sorted(unknown))}", flush=True)
        return 1
    left = {k: v for k, v in pending.items() if k not in done}
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    note = f"withdrawal of {', '.join(sorted(done))} handled by {by} at {at}"
    ledger.upsert_claim(
        replace(record, withdrawal=json.dumps(left, sort_keys=True) if left else None, last_error=note[:2000])
    )
    publisher = KafkaPublisher(make_producer(settings.kafka, "cdc-claims-withdrawal"), settings.kafka)
    try:
        whole = "*" in left
        publisher.withdrawal(
            WithdrawalNotice(
                claim_code, "handled", note, datetime.now(UTC), tuple(sorted(k for k in left if k != "*")), whole
            )
        )
        publisher.flush()
    finally:
        publisher.close()
    print(f"{claim_code}: {note}; {len(left)} still to withdraw", flush=True)
    return 0


def _unit_id(factory: Any, kind: str, uuid: str) -> int | None:
    table, column = ("visit", "visit_id") if kind == "visit" else ("encounter", "encounter_id")
    conn = factory()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {column} FROM {table} WHERE uuid = %s", (uuid,))  # noqa: S608 - fixed names
            row = cur.fetchone()
    except Exception as err:
        raise SourceUnavailable(str(err)) from err
    finally:
        conn.close()
    return int(row[column]) if row else None
