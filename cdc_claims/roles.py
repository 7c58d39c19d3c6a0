"""Wiring: the real adapters behind each role's ports, built from :class:`Settings`.

This is the only module that knows every adapter; the roles and the claim service only know
the small protocols of :mod:`cdc_claims.pipeline.ports`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cdc_claims import metrics, observability
from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.assemble.reader import OpenMrsReader, ReaderConfig
from cdc_claims.claim import render_audit_bundle, render_claim
from cdc_claims.db import ConnFactory, reader_connection_factory, writer_connection_factory
from cdc_claims.errors import HELD_REASONS, ConfigError, SourceUnavailable
from cdc_claims.ledger.store import Ledger
from cdc_claims.lifecycle import OPEN_STATES, State
from cdc_claims.log import get_logger
from cdc_claims.mapping.apply import build_draft
from cdc_claims.mapping.check import check_mapping as run_check
from cdc_claims.mapping.check import render_text
from cdc_claims.mapping.model import ClaimMapping, load_mapping
from cdc_claims.pipeline.claim_service import ClaimService
from cdc_claims.pipeline.consumer_role import ConsumerRole, data_topics
from cdc_claims.pipeline.kafka_io import KafkaPublisher, LagReporter, commit, make_consumer, make_producer
from cdc_claims.pipeline.poller import OpenClaim, Poller
from cdc_claims.pipeline.ports import JsonDict, UnitRef
from cdc_claims.pipeline.runner import Stopper, run_loop
from cdc_claims.pipeline.writer_role import ReplyWriter
from cdc_claims.reply.model import decode_draft
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
    """``OpenClaimStore`` for the poller, over the ledger."""

    ledger: Ledger

    def open_claims(self) -> Sequence[OpenClaim]:
        claims = []
        for entry in self.ledger.list_by_state(OPEN_STATES):
            if entry.claim_code and entry.draft_json:
                claims.append(OpenClaim(entry.claim_code, entry.state, decode_draft(entry.draft_json)))
        return claims

    def report_held(self) -> None:
        """``cdc_claims_held_claims{reason}``: held and failed ledger rows, as billing staff see them."""
        counts = Counter(e.reason or "unknown" for e in self.ledger.list_by_state([State.HELD, State.FAILED]))
        for reason in {*HELD_REASONS, *counts}:
            metrics.CLAIMS_HELD_CURRENT.labels(reason=reason).set(counts.get(reason, 0))

    def set_state(self, claim_code: str, state: State, *, openimis_claim_uuid: str | None) -> None:
        entry = self.ledger.get_by_code(claim_code)
        if entry is not None:
            self.ledger.upsert(
                replace(entry, state=state, openimis_claim_uuid=openimis_claim_uuid or entry.openimis_claim_uuid)
            )


# ---------------------------------------------------------------------- construction
def load(settings: Settings) -> ClaimMapping:
    if not settings.mapping_file.is_file():
        raise ConfigError(f"mapping file {settings.mapping_file} not found (set CDC_CLAIMS_MAPPING_FILE)")
    return load_mapping(settings.mapping_file)


def reader_factory(settings: Settings) -> ConnFactory:
    return reader_connection_factory(settings.db)


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
        resubmit_on_change=settings.resubmit_on_change,
    )
    return service, reader, ledger


class Heartbeat:
    """Readiness: the role completed a loop step recently (its dependencies answered)."""

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._last = 0.0

    def beat(self) -> None:
        self._last = time.monotonic()

    def __call__(self) -> bool:
        return time.monotonic() - self._last < self._max_age


def run_role(role: str, settings: Settings) -> int:
    stopper = Stopper()
    stopper.install()
    heartbeat = Heartbeat(max_age=max(60.0, settings.poll_seconds * 3))
    server = observability.serve(settings.metrics_port, heartbeat)
    producer = make_producer(settings.kafka, f"cdc-claims-{role}")
    publisher = KafkaPublisher(producer, settings.kafka)
    try:
        if role == "consumer":
            _run_consumer(settings, publisher, stopper, heartbeat)
        elif role == "writer":
            _run_writer(settings, publisher, stopper, heartbeat)
        else:
            _run_poller(settings, publisher, stopper, heartbeat)
    finally:
        publisher.close()
        server.close()
    return 0


def _run_consumer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, heartbeat: Heartbeat) -> None:
    mapping = load(settings)
    client = OpenImisClient(settings.openhim)
    service, reader, ledger = build_service(settings, mapping, publisher, client)
    consumer = make_consumer(settings.kafka, data_topics(settings), group_id=settings.kafka.group_id)
    role = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=ConsumerLookups(reader, ledger, reader_factory(settings)),
        sink=publisher,
        settings=settings,
        commit=commit,
        concurrency=settings.submit_concurrency,
    )

    lag = LagReporter(consumer)

    def step() -> None:
        role.step()
        lag.maybe_report()
        heartbeat.beat()

    try:
        run_loop(step, stopper, name="consumer")
    finally:
        role.close()
        consumer.close(autocommit=False)
        client.close()


def _run_writer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, heartbeat: Heartbeat) -> None:
    consumer = make_consumer(settings.kafka, [settings.kafka.reply_topic], group_id=f"{settings.kafka.group_id}-writer")
    writer = ReplyWriter(
        consumer, IclmWriter(writer_connection_factory(settings.db)), publisher, stopper, commit=commit
    )

    lag = LagReporter(consumer)

    def step() -> None:
        writer.step()
        lag.maybe_report()
        heartbeat.beat()

    try:
        run_loop(step, stopper, name="writer")
    finally:
        consumer.close(autocommit=False)


def _run_poller(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, heartbeat: Heartbeat) -> None:
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
        entries = [
            e
            for e in ledger.list_by_state([State.HELD, State.FAILED])
            if (reason is None or e.reason == reason) and (unit_uuid is None or e.unit_uuid == unit_uuid)
        ]
        print(f"{len(entries)} held/failed claim(s) to re-run", flush=True)
        failures = 0
        for entry in entries:
            unit_id = _unit_id(reader_factory(settings), entry.unit_kind, entry.unit_uuid)
            if unit_id is None:
                print(f"  {entry.unit_kind} {entry.unit_uuid}: no longer in the database", flush=True)
                failures += 1
                continue
            result = service.process(UnitRef(entry.unit_kind, unit_id))
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
