"""A ClaimResponse reduced to what the billing tables need, and the reply-topic message.

openIMIS answers in FHIR with several traps (ambiguous ``outcome``, reordered lines, a
"valuated" amount that echoes the asked price). :mod:`cdc_claims.reply.normalize` resolves them
once; everything downstream (the reply topic, the iclm writer, metrics) reads these values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import TypeAdapter

from cdc_claims.assemble.model import ClaimDraft

REPLY_SCHEMA = "cdc-claims.reply/v1"
WITHDRAWAL_SCHEMA = "cdc-claims.withdrawal/v1"


@dataclass(frozen=True)
class LineOutcome:
    source_uuid: str  # ClaimLine.source_uuid: the order / obs / derived line it answers
    code: str  # openIMIS item/service code
    category: Literal["item", "service"]
    status: Literal["PASSED", "REJECTED"]
    reason_code: int  # openIMIS rejection reason, 0 = accepted
    reason_text: str  # e.g. "NO PRODUCT FOUND"
    quantity_approved: Decimal | None
    price_approved: Decimal | None  # unit price of the highest money stage (processed > checked)


@dataclass(frozen=True)
class NormalizedResponse:
    claim_code: str
    claim_uuid: str | None  # openIMIS claim uuid
    openimis_status: Literal[1, 2, 4, 8, 16]  # highest adjudication category present
    iclm_status: Literal["REJECTED", "ENTERED", "CHECKED", "PROCESSED", "VALUATED"]
    outcome: str  # FHIR outcome as sent (ambiguous: kept for the audit trail only)
    claimed_total: Decimal | None  # "entered" total (includes rejected lines)
    approved_total: Decimal | None  # processed total, else checked total; None when rejected
    rejection_reason: str | None  # claim level: "7 FAMILY", ... when every line was rejected
    lines: tuple[LineOutcome, ...]
    received_at: datetime


@dataclass(frozen=True)
class Timings:
    """Where the time went for one claim, so latency can be split without guessing."""

    captured_ms: int | None = None  # the consumer saw the triggering transaction complete
    submit_seconds: float | None = None  # the POST through openHIM (openIMIS's own share)
    published_ms: int | None = None  # the reply was handed to Kafka


@dataclass(frozen=True)
class ReplyMessage:
    """One record on the reply topic (key = claim code). Self-contained: the writer needs
    nothing else to fill ``iclm_bill``, ``iclm_provided_item``, ``iclm_claim*``."""

    claim: ClaimDraft
    response: NormalizedResponse
    source_committed_ms: int | None = None  # commit time of the triggering transaction
    timings: Timings | None = None
    schema: str = REPLY_SCHEMA


_REPLY = TypeAdapter(ReplyMessage)


def encode_reply(message: ReplyMessage) -> bytes:
    return _REPLY.dump_json(message)


def decode_reply(raw: bytes) -> ReplyMessage:
    return _REPLY.validate_json(raw)


@dataclass(frozen=True)
class WithdrawalNotice:
    """A claim openIMIS holds (or lines of it) that must be withdrawn there by billing staff.

    Sent on the reply topic under the claim code, so it is ordered after the claim's replies and
    the writer flags the same ``iclm_claim`` rows: the whole claim, or exactly ``source_uuids``
    among its lines (a line no longer listed loses its flag: the clinician put it back).
    """

    claim_code: str
    reason: str  # a HELD_REASONS key, e.g. voided_after_submit
    detail: str  # billing-staff text; uuids only, never names
    at: datetime
    source_uuids: tuple[str, ...] = ()  # every line of this claim to withdraw now (others: none)
    whole_claim: bool = False  # the whole claim (its encounter was voided)
    schema: str = WITHDRAWAL_SCHEMA


_WITHDRAWAL = TypeAdapter(WithdrawalNotice)


def encode_withdrawal(notice: WithdrawalNotice) -> bytes:
    return _WITHDRAWAL.dump_json(notice)


def decode_message(raw: bytes) -> ReplyMessage | WithdrawalNotice:
    """Either record the reply topic carries, told apart by its ``schema`` field."""
    doc = json.loads(raw)
    if isinstance(doc, dict) and doc.get("schema") == WITHDRAWAL_SCHEMA:
        return _WITHDRAWAL.validate_json(raw)
    return _REPLY.validate_json(raw)


_DRAFT = TypeAdapter(ClaimDraft)


def encode_draft(draft: ClaimDraft) -> str:
    return _DRAFT.dump_json(draft).decode()


def decode_draft(raw: str | bytes) -> ClaimDraft:
    return _DRAFT.validate_json(raw)
