"""The composition root: the real adapters behind each role's ports, built from :class:`Settings`.

This is the one module that knows every adapter. It builds them and hands them to the roles
(:mod:`cdc_claims.pipeline`), which only know the protocols of
:mod:`cdc_claims.pipeline.ports`; it holds no SQL, no claim logic and no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cdc_claims import metrics, observability
from cdc_claims.assemble.documents import LocalDocumentFiles
from cdc_claims.assemble.reader import OpenMrsReader
from cdc_claims.claim import FhirRenderer
from cdc_claims.db import reader_connection_factory, writer_connection_factory
from cdc_claims.desk.actions import DeskActions
from cdc_claims.errors import ConfigError, ConsumerStalled
from cdc_claims.failpoints import crash_at
from cdc_claims.health import Heartbeat, Readiness
from cdc_claims.ledger.store import Ledger
from cdc_claims.log import get_logger
from cdc_claims.mapping.apply import DraftBuilder
from cdc_claims.mapping.model import ClaimMapping, load_mapping
from cdc_claims.mapping.reading import reader_config
from cdc_claims.payer.cache import CatalogueCache, PolicyCache
from cdc_claims.payer.catalogue import Catalogue
from cdc_claims.payer.checks import CatalogueCodeBook, PayerChecks
from cdc_claims.payer.compare import compare
from cdc_claims.payer.graphql import OpenImisGraphQL
from cdc_claims.pipeline.claim_service import ClaimService
from cdc_claims.pipeline.concurrency import ASSEMBLING, AdaptiveLimit, PacedApi
from cdc_claims.pipeline.consumer_role import ConsumerRole, data_topics
from cdc_claims.pipeline.kafka_io import (
    GroupProbe,
    GuardedConsumer,
    KafkaPublisher,
    LagReporter,
    RebalanceListener,
    make_consumer,
    make_producer,
    subscribe,
)
from cdc_claims.pipeline.lease_owner import holder_dead, owner_id
from cdc_claims.pipeline.lookups import ConsumerLookups
from cdc_claims.pipeline.open_claims import LedgerOpenClaims
from cdc_claims.pipeline.poller import Poller
from cdc_claims.pipeline.ports import ClaimApi
from cdc_claims.pipeline.runner import Stopper, run_loop, when_reachable
from cdc_claims.pipeline.writer_role import ReplyWriter
from cdc_claims.reply.normalize import normalize
from cdc_claims.settings import Settings
from cdc_claims.submit.client import OpenImisClient
from cdc_claims.writeback.iclm import IclmWriter

log = get_logger(__name__)


def load(settings: Settings) -> ClaimMapping:
    if not settings.mapping_file.is_file():
        raise ConfigError(f"mapping file {settings.mapping_file} not found (set CDC_CLAIMS_MAPPING_FILE)")
    return load_mapping(settings.mapping_file)


@dataclass
class Claims:
    """Everything that turns a unit into a claim, built once per process."""

    service: ClaimService
    reader: OpenMrsReader
    ledger: Ledger
    payer: Payer | None = None

    def close(self) -> None:
        if self.payer is not None:
            self.payer.close()


@dataclass
class Payer:
    """The payer checks with what feeds them: one GraphQL session, the catalogue kept fresh."""

    checks: PayerChecks
    client: OpenImisGraphQL
    catalogue: CatalogueCache

    def close(self) -> None:
        self.catalogue.close()
        self.client.close()


def payer_client(settings: Settings) -> OpenImisGraphQL:
    return OpenImisGraphQL(settings.payer)


def build_payer(
    settings: Settings, mapping: ClaimMapping, *, background: bool = True, fresh_policies: bool = False
) -> Payer | None:
    """The checks before each POST, or None when openIMIS's API is not configured (``payer.url``).

    The catalogue is read for the mapped facilities now and then every ``refresh_seconds`` on a
    thread (``background``; a one-shot command reads it once); the first read also compares the
    mapping with it and warns about every entry that would block claims. ``fresh_policies``: ask
    openIMIS about the insuree every time (an operator's re-run after a policy was renewed)."""
    if not settings.payer.enabled:
        log.info("payer_checks_off", why="payer.url is not set: openIMIS checks claims only after they are sent")
        return None
    payer = settings.payer
    client = payer_client(settings)
    codes = sorted({ref.code for ref in mapping.facilities.values()})
    warned = False

    def read() -> Catalogue:
        nonlocal warned
        catalogue = client.catalogue(codes)
        if not warned:
            warned = True
            _warn_mapping(mapping, catalogue)
        return catalogue

    cache = CatalogueCache(read, payer.refresh_seconds)
    if background:
        cache.start()
    else:
        cache.refresh()
    checks = PayerChecks(
        catalogue=cache,
        policies=PolicyCache(client.policies, 0.0 if fresh_policies else payer.policy_ttl_seconds),
        pricelist=payer.pricelist,
        coverage=payer.coverage,
        count=lambda check, outcome: metrics.PAYER_CHECKS.labels(check=check, outcome=outcome).inc(),
    )
    return Payer(checks, client, cache)


def _warn_mapping(mapping: ClaimMapping, catalogue: Catalogue) -> None:
    findings = [f for f in compare(mapping, catalogue) if f.severity == "blocking"]
    for finding in findings[:20]:
        log.warning("mapping_disagrees_with_openimis", entry=finding.uuid, code=finding.name, detail=finding.detail)
    if findings:
        log.warning("mapping_check_openimis", blocking=len(findings), hint="cdc-claims check-mapping --openimis")


def build_reader(settings: Settings, mapping: ClaimMapping | None = None) -> OpenMrsReader:
    """The OpenMRS reader (SELECT-only user) for ``mapping`` (default: the configured one), resolved."""
    reader = OpenMrsReader(reader_connection_factory(settings.db), reader_config(mapping or load(settings)))
    reader.resolve()
    return reader


def build_documents(settings: Settings, mapping: ClaimMapping) -> LocalDocumentFiles | None:
    """The document store the renderer reads attachments from; None when the mapping attaches none."""
    section = mapping.attachments
    if section is None:
        return None
    if not settings.documents.dir.is_dir():
        log.warning("document_store_missing", dir=str(settings.documents.dir), hint="CDC_CLAIMS_DOCUMENTS__DIR")
    return LocalDocumentFiles(
        settings.documents.dir,
        settings.documents.complex_obs_dir,
        max_bytes=section.max_bytes,
        max_total_bytes=section.max_total_bytes,
    )


def build_claims(
    settings: Settings, publisher: KafkaPublisher, client: ClaimApi, *, fresh_policies: bool = False
) -> Claims:
    mapping = load(settings)
    reader = build_reader(settings, mapping)
    ledger = Ledger(writer_connection_factory(settings.db))
    payer = build_payer(settings, mapping, fresh_policies=fresh_policies)
    if mapping.reference_terms is not None and payer is None:
        raise ConfigError(
            "the mapping's reference_terms rule takes codes, prices and uuids from openIMIS's catalogue:"
            " set CDC_CLAIMS_PAYER__URL (and __PASSWORD)"
        )
    service = ClaimService(
        reader=reader,
        build_draft=DraftBuilder(mapping, CatalogueCodeBook(payer.catalogue) if payer is not None else None),
        renderer=FhirRenderer(build_documents(settings, mapping)),
        api=client,
        normalize=normalize,
        publisher=publisher,
        ledger=ledger,
        supplements=settings.supplements,
        owner=owner_id(),
        lease_seconds=settings.lease_seconds,
        holder_dead=holder_dead,
        failpoint=crash_at(settings.failpoint),
        payer=payer.checks if payer is not None else None,
    )
    return Claims(service, reader, ledger, payer)


def publisher_for(settings: Settings, client_id: str) -> KafkaPublisher:
    return KafkaPublisher(make_producer(settings.kafka, client_id), settings.kafka)


# ---------------------------------------------------------------------- long-running roles
def run_role(role: str, settings: Settings) -> int:
    stopper = Stopper()
    stopper.install()
    readiness = Readiness(Heartbeat(max_age=max(60.0, settings.poll_seconds * 3)))
    server = observability.serve(settings.metrics_port, readiness)
    readiness.check = lambda: "waiting for kafka"
    producer = when_reachable(lambda: make_producer(settings.kafka, f"cdc-claims-{role}"), stopper)
    if producer is None:  # stopped while Kafka was still unreachable
        server.close()
        return 0
    readiness.check = lambda: True
    publisher = KafkaPublisher(producer, settings.kafka)
    run = {"consumer": _run_consumer, "writer": _run_writer, "poller": _run_poller}[role]
    try:
        run(settings, publisher, stopper, readiness)
    finally:
        publisher.close()
        server.close()
    return 0


def _run_consumer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    """Run the consumer; a stalled Kafka consumer is closed and built again (a fresh join)."""
    client = OpenImisClient(settings.openhim)
    # openIMIS gets as many requests at once as it absorbs, up to the ceiling (concurrency.py)
    claims = build_claims(settings, publisher, PacedApi(client, AdaptiveLimit(settings.submit_concurrency)))
    lookups = ConsumerLookups(claims.reader, claims.ledger)
    try:
        while not stopper.stopped:
            try:
                _consume(
                    settings,
                    service=claims.service,
                    lookups=lookups,
                    publisher=publisher,
                    stopper=stopper,
                    readiness=readiness,
                )
            except ConsumerStalled as stalled:
                metrics.CONSUMER_REBUILDS.labels(cause=stalled.cause).inc()
                log.warning("consumer_rebuilding", reason=stalled.message)
    finally:
        claims.close()
        client.close()


def _consume(
    settings: Settings,
    *,
    service: ClaimService,
    lookups: ConsumerLookups,
    publisher: KafkaPublisher,
    stopper: Stopper,
    readiness: Readiness,
) -> None:
    """One Kafka consumer's life: join, consume until stopped or stalled, leave."""
    raw = when_reachable(lambda: make_consumer(settings.kafka, group_id=settings.kafka.group_id), stopper)
    if raw is None:
        return
    consumer = GuardedConsumer(raw)
    role = ConsumerRole(
        consumer=consumer,
        service=service,
        lookups=lookups,
        sink=publisher,
        settings=settings,
        concurrency=settings.submit_concurrency + ASSEMBLING,
    )
    subscribe(raw, data_topics(settings), RebalanceListener(role.on_revoked, role.on_assigned))
    readiness.check = role.ready
    lag = LagReporter(raw)
    probe = GroupProbe(settings.kafka, settings.kafka.group_id)
    standby = False

    def step() -> None:
        nonlocal standby
        role.step()
        report = lag.maybe_report_quietly()
        if report is not None:  # every 10 s: is an unassigned consumer a standby, or stuck?
            standby = bool(consumer.assignment()) or probe.may_be_standby()
        role.observe_lag(report, stable=standby)
        readiness.heartbeat.beat()

    try:
        run_loop(step, stopper, name="consumer", escalate=(ConsumerStalled,))
    finally:
        role.close()
        consumer.close()
        probe.close()


def _run_writer(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    group = f"{settings.kafka.group_id}-writer"
    raw = when_reachable(lambda: make_consumer(settings.kafka, group_id=group), stopper)
    if raw is None:
        return
    subscribe(raw, [settings.kafka.reply_topic])
    consumer = GuardedConsumer(raw)
    writer = ReplyWriter(consumer, IclmWriter(writer_connection_factory(settings.db)), publisher, stopper)
    readiness.check = lambda: bool(consumer.assignment()) or "no assignment"
    lag = LagReporter(raw)

    def step() -> None:
        writer.step()
        lag.maybe_report_quietly()
        readiness.heartbeat.beat()

    try:
        run_loop(step, stopper, name="writer")
    finally:
        consumer.close()


def _run_poller(settings: Settings, publisher: KafkaPublisher, stopper: Stopper, readiness: Readiness) -> None:
    client = OpenImisClient(settings.openhim)
    store = LedgerOpenClaims(Ledger(writer_connection_factory(settings.db)))
    poller = Poller(store, client, normalize, publisher, interval=settings.poll_seconds)

    def step() -> None:
        readiness.heartbeat.beat()
        store.report_held()
        changed = poller.poll_once()
        readiness.heartbeat.beat()
        if changed:
            log.info("poll_done", changed=changed)
        stopper.wait(settings.poll_seconds)

    try:
        run_loop(step, stopper, name="poller")
    finally:
        client.close()


# ---------------------------------------------------------------------- the claims desk
def run_desk(settings: Settings, actions: DeskActions) -> int:
    """Serve the desk on ``desk.port`` and the probes and metrics on ``metrics_port``.

    ``actions`` are the live operator actions (``cdc_claims.actions.LiveActions``), built by the
    CLI: they build their adapters through this module, so this module must not import them.
    uvicorn's access log stays off: it would log URLs, and the desk's URLs carry patient
    identifiers. The desk logs each request itself, by route template (``cdc_claims.desk.http``).
    """
    import uvicorn

    from cdc_claims.desk.app import create_app, readiness
    from cdc_claims.desk.auth import auth_config
    from cdc_claims.desk.store import DeskStore

    desk = settings.desk
    oidc = None
    if desk.oidc_issuer:
        from cdc_claims.desk.oidc import AuthlibOidc

        secret = desk.oidc_client_secret.get_secret_value() if desk.oidc_client_secret else None
        oidc = AuthlibOidc(desk.oidc_issuer, desk.oidc_client_id, secret)
    auth = auth_config(desk, oidc=oidc)
    store = DeskStore(reader_connection_factory(settings.db))
    app = create_app(store, actions, auth, desk)
    probes = observability.serve(settings.metrics_port, lambda: readiness(store))
    config = uvicorn.Config(app, host=observability.ALL_INTERFACES, port=desk.port, log_config=None, access_log=False)
    log.info("desk_serving", port=desk.port, local_users=auth.users is not None, oidc=oidc is not None)
    try:
        uvicorn.Server(config).run()
    finally:
        probes.close()
    return 0
