"""Every port of the pipeline, in one place: the small interfaces roles and the claim service
talk through, one per external system.

Each adapter (MySQL reader, ledger, openHIM client, Kafka consumer and publisher, iclm writer)
satisfies one of these, so the roles (:mod:`~cdc_claims.pipeline.consumer_role`,
:mod:`~cdc_claims.pipeline.writer_role`, :mod:`~cdc_claims.pipeline.poller`) and
:mod:`~cdc_claims.pipeline.claim_service` are tested with plain in-memory fakes and run in
production with the adapters :mod:`cdc_claims.roles` wires in. Nothing here imports an adapter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, Protocol

from cdc_claims.assemble.model import ClaimContext, ClaimDraft
from cdc_claims.errors import NotClaimable
from cdc_claims.ledger.model import ActionRecord, ClaimRecord, Lease, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.reply.model import ReplyMessage, WithdrawalNotice
from cdc_claims.settings import UnitKind

JsonDict = dict[str, Any]
Offsets = Mapping[tuple[str, int], int]  # {(topic, partition): next offset to read}


@dataclass(frozen=True)
class UnitRef:
    """An encounter or a visit that settled, by OpenMRS integer id."""

    kind: UnitKind
    id: int
    source_committed_ms: int | None = None  # commit time of the last transaction that touched it
    captured_ms: int | None = None  # when the consumer saw that transaction complete

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


# ---------------------------------------------------------------------- Kafka
class Partition(Protocol):
    """A topic partition (kafka-python's ``TopicPartition``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...


class Record(Protocol):
    """One consumed record (kafka-python's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class RecordSource(Protocol):
    """A subscribed Kafka consumer (``kafka_io.GuardedConsumer``): every error is ours
    (:class:`~cdc_claims.errors.KafkaUnavailable`), never kafka-python's."""

    def poll(self, timeout_ms: int = 0) -> Mapping[Any, Sequence[Record]]: ...
    def assignment(self) -> set[Any]: ...
    def commit(self, offsets: Offsets) -> None: ...
    def seek_to_committed(self, parts: Iterable[Partition]) -> None: ...
    def pause(self, parts: Iterable[Partition]) -> None: ...
    def resume(self, parts: Iterable[Partition]) -> None: ...


class DeadLetters(Protocol):
    """Where records that can never be processed go, with the reason (the dead-letter topic)."""

    def dead_letter(
        self, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, reason: str
    ) -> None: ...

    def flush(self) -> None: ...


class Publisher(Protocol):
    """Kafka side effects of the claim service; ``flush`` makes them durable."""

    def reply(self, message: ReplyMessage) -> None: ...
    def withdrawal(self, notice: WithdrawalNotice) -> None: ...
    def held(self, key: str, payload: Mapping[str, Any]) -> None: ...
    def audit(self, key: str, bundle: JsonDict) -> None: ...
    def flush(self) -> None: ...


class ConsumerSink(DeadLetters, Protocol):
    """What the consumer role publishes itself: dead letters and held notices."""

    def held(self, key: str, payload: Mapping[str, Any]) -> None: ...


# ---------------------------------------------------------------------- the claim service's
class Reader(Protocol):
    """The OpenMRS database as the claim service reads it (``assemble.reader.OpenMrsReader``)."""

    def read(self, kind: UnitKind, unit_id: int) -> ClaimContext: ...


class DraftBuilder(Protocol):
    def __call__(self, ctx: ClaimContext, *, created: date, revision: int) -> ClaimDraft: ...


class PayerCheck(Protocol):
    """The payer's rules before a POST (``cdc_claims.payer.checks.PayerChecks``): why the claim
    must be held (``not_in_pricelist``, ``price_above_pricelist``, ``no_active_policy``), or None.
    May raise a retriable error when the payer cannot be asked."""

    def check(self, draft: ClaimDraft, insurance_number: str | None) -> NotClaimable | None: ...


class Renderer(Protocol):
    def claim(self, draft: ClaimDraft) -> JsonDict: ...
    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: JsonDict) -> JsonDict: ...


class ClaimApi(Protocol):
    def submit_claim(self, claim: JsonDict) -> JsonDict: ...
    def get_claim_response(self, code_or_uuid: str) -> JsonDict: ...


HeldKind = Literal["held", "failed", "cancelled", "notice"]


class LedgerPort(Protocol):
    """The claim ledger (``cdc_claims.ledger.store.Ledger``)."""

    def get(self, unit_kind: UnitKind, unit_uuid: str) -> LedgerEntry | None: ...
    def upsert(self, entry: LedgerEntry, *, history: ClaimRecord | None = None) -> LedgerEntry: ...
    def acquire_lease(
        self, unit_kind: UnitKind, unit_uuid: str, owner: str, seconds: float, *, steal_from: str | None = None
    ) -> Lease: ...
    def release_lease(self, unit_kind: UnitKind, unit_uuid: str, owner: str) -> None: ...
    def claims_of(self, unit_kind: UnitKind, unit_uuid: str) -> list[ClaimRecord]: ...
    def upsert_claim(self, record: ClaimRecord) -> ClaimRecord: ...


class Clock(Protocol):
    """Wall time (what is written down) and monotonic time (what is measured)."""

    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


# ---------------------------------------------------------------------- the consumer role's
class UnitService(Protocol):
    """The claim service as the consumer sees it."""

    def process(self, unit: UnitRef) -> object: ...
    def park(self, unit: UnitRef, reason: str, text: str) -> None: ...


class Lookups(Protocol):
    """The few look-ups the consumer needs before a unit can be settled."""

    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]: ...
    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]: ...
    def patient_held_encounters(self, patient_ids: Iterable[int]) -> Iterable[tuple[str, int]]: ...
    def held_units_to_recheck(self) -> Iterable[tuple[UnitKind, int]]: ...


class Directory(Protocol):
    """Id and uuid look-ups in the OpenMRS database (``assemble.reader.OpenMrsReader``)."""

    def order_encounters(self, order_ids: Iterable[int]) -> Mapping[int, int]: ...
    def encounter_visit(self, encounter_ids: Iterable[int]) -> Mapping[int, int]: ...
    def person_uuids(self, person_ids: Iterable[int]) -> Mapping[int, str]: ...
    def encounter_ids(self, uuids: Iterable[str]) -> Mapping[str, int]: ...
    def unit_id(self, kind: UnitKind, uuid: str) -> int | None: ...


class ClaimLedger(LedgerPort, Protocol):
    """The whole ledger: unit rows and the claim history (``cdc_claims.ledger.store.Ledger``)."""

    def get_by_code(self, code: str) -> LedgerEntry | None: ...
    def list_by_state(self, states: Iterable[State]) -> list[LedgerEntry]: ...
    def claim(self, claim_code: str) -> ClaimRecord | None: ...
    def open_claims(self, states: Iterable[State]) -> list[ClaimRecord]: ...
    def to_rerun(self, *, reason: str | None = None, unit_uuid: str | None = None) -> list[LedgerEntry]: ...


class AuditLog(Protocol):
    """Who asked for which operator action and what it came to (``cdc_claims_action``, append-only)."""

    def record_action(self, *, actor: str, action: str, target: str, ok: bool, message: str) -> None: ...
    def actions_for(self, target: str, *, limit: int = 100) -> list[ActionRecord]: ...


# ---------------------------------------------------------------------- the poller's
@dataclass(frozen=True)
class OpenClaim:
    claim_code: str
    state: State
    draft: ClaimDraft
    approved_total: str | None = None  # last published approved total, to notice amount changes
    #: when the ledger last recorded a change to the claim (sent, a status, a note), UTC: how far
    #: the poller backs off a claim it has not asked about yet (a restart keeps old claims slow)
    changed_at: datetime | None = None


class OpenClaimStore(Protocol):
    def open_claims(self) -> Sequence[OpenClaim]: ...
    def open_claim(self, claim_code: str) -> OpenClaim | None:
        """One claim, if openIMIS may still change it (an operator asked about it now)."""
        ...

    def set_state(
        self,
        claim_code: str,
        state: State,
        *,
        openimis_claim_uuid: str | None,
        reason: str | None = None,
        rejected: tuple[str, ...] | None = None,
    ) -> tuple[str, ...] | None:
        """Record the new state; returns the claim's remaining withdrawal lines when openIMIS's
        rejection settled some of them (None otherwise)."""
        ...

    def note(self, claim_code: str, text: str) -> bool:
        """Record what openIMIS said that was not applied (ledger ``last_error``); True if new."""
        ...


# ---------------------------------------------------------------------- the writer's
class Applier(Protocol):
    """The ``iclm_*`` writer."""

    def apply(self, message: ReplyMessage) -> None: ...
    def apply_withdrawal(self, notice: WithdrawalNotice) -> bool: ...
