"""The small interfaces the claim service talks through: one per external system.

Each adapter (MySQL reader, ledger, openHIM client, Kafka publisher) satisfies one of these,
so :mod:`cdc_claims.pipeline.claim_service` can be tested with plain in-memory fakes and run
in production with the real adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, Protocol

from cdc_claims.assemble.model import ClaimContext, ClaimDraft, UnitKind
from cdc_claims.ledger.model import ClaimRecord, LedgerEntry
from cdc_claims.reply.model import ReplyMessage, WithdrawalNotice

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class UnitRef:
    """An encounter or a visit that settled, by OpenMRS integer id."""

    kind: UnitKind
    id: int
    source_committed_ms: int | None = None  # commit time of the last transaction that touched it
    captured_ms: int | None = None  # when the consumer saw that transaction complete

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


class Reader(Protocol):
    def read(self, unit: UnitRef) -> ClaimContext: ...


class DraftBuilder(Protocol):
    def __call__(self, ctx: ClaimContext, *, created: date, revision: int) -> ClaimDraft: ...


class Renderer(Protocol):
    def claim(self, draft: ClaimDraft) -> JsonDict: ...
    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: JsonDict) -> JsonDict: ...


class ClaimApi(Protocol):
    def submit_claim(self, claim: JsonDict) -> JsonDict: ...
    def get_claim_response(self, code_or_uuid: str) -> JsonDict: ...


HeldKind = Literal["held", "failed", "cancelled", "notice"]


class Publisher(Protocol):
    """Kafka side effects of the claim service; ``flush`` makes them durable."""

    def reply(self, message: ReplyMessage) -> None: ...
    def withdrawal(self, notice: WithdrawalNotice) -> None: ...
    def held(self, key: str, payload: Mapping[str, Any]) -> None: ...
    def audit(self, key: str, bundle: JsonDict) -> None: ...
    def flush(self) -> None: ...


class LedgerPort(Protocol):
    """The claim ledger (``cdc_claims.ledger.store.Ledger``)."""

    def get(self, unit_kind: UnitKind, unit_uuid: str) -> LedgerEntry | None: ...
    def upsert(self, entry: LedgerEntry) -> LedgerEntry: ...
    def acquire_lease(
        self, unit_kind: UnitKind, unit_uuid: str, owner: str, seconds: float, *, steal_from: str | None = None
    ) -> str | None: ...
    def release_lease(self, unit_kind: UnitKind, unit_uuid: str, owner: str) -> None: ...
    def claims_of(self, unit_kind: UnitKind, unit_uuid: str) -> list[ClaimRecord]: ...
    def upsert_claim(self, record: ClaimRecord) -> ClaimRecord: ...
