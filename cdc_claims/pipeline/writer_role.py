"""The writer role: reply topic -> ``iclm_*`` billing tables, one committed record at a time.

The offset of a reply is committed only after its database transaction committed, and the
writer is idempotent, so a crash between the two only re-applies a reply (a no-op).
A reply that can never be applied (undecodable, paired with the wrong claim, refused by the
database for a reason that retrying cannot fix, or failing on a bug) goes to the dead-letter
topic with the reason, and the writer goes on; nothing is dropped, nothing crash-loops.
"""

from __future__ import annotations

import time

from pydantic import ValidationError

from cdc_claims import metrics
from cdc_claims.errors import CdcClaimsError
from cdc_claims.log import get_logger
from cdc_claims.pipeline.ports import Applier, DeadLetters, Record, RecordSource
from cdc_claims.pipeline.runner import Stopper
from cdc_claims.reply.model import WithdrawalNotice, decode_message

log = get_logger(__name__)


class ReplyWriter:
    """Consumes the reply topic and applies each record durably before committing it."""

    def __init__(
        self,
        consumer: RecordSource,
        applier: Applier,
        dead_letters: DeadLetters,
        stopper: Stopper,
        *,
        retry_pause: float = 2.0,
    ) -> None:
        self._consumer = consumer
        self._applier = applier
        self._dlq = dead_letters
        self._stopper = stopper
        self._pause = retry_pause

    def step(self, timeout_ms: int = 500) -> int:
        """Poll once and apply everything received; returns the number of records handled.

        Offsets are committed once per poll, after every record before them is in the database:
        a crash in between replays a few replies, which the idempotent writer absorbs.
        """
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        handled = 0
        applied: dict[tuple[str, int], int] = {}
        try:
            for tp, records in batches.items():
                for record in records:
                    if self._stopper.stopped:
                        return handled
                    self._handle(record)
                    applied[(tp.topic, tp.partition)] = record.offset + 1
                    handled += 1
        finally:
            if applied:
                self._consumer.commit(applied)
        return handled

    def _handle(self, record: Record) -> None:
        if record.value is None:  # a tombstone: nobody should write those to the reply topic
            self._dead_letter(record, "undecodable_reply: empty record (tombstone)")
            return
        try:
            message = decode_message(record.value)
        except (ValidationError, ValueError, TypeError) as err:
            self._dead_letter(record, f"undecodable_reply: {err}"[:500])
            return
        code = message.claim_code if isinstance(message, WithdrawalNotice) else message.claim.code
        while True:
            try:
                if isinstance(message, WithdrawalNotice):
                    if not self._applier.apply_withdrawal(message):
                        log.warning("withdrawal_without_claim_rows", claim_code=code)
                else:
                    self._applier.apply(message)
            except CdcClaimsError as err:
                if err.retriable and not self._stopper.stopped:
                    log.warning("write_back_retry", claim_code=code, error=str(err)[:300])
                    self._stopper.wait(self._pause)
                    if self._stopper.stopped:
                        raise
                    continue
                self._dead_letter(record, f"write_back_failed: {err}"[:500])
                return
            except Exception as err:  # a bug on one reply must not stop every other one
                self._dead_letter(record, f"internal_error: {type(err).__name__}: {err}"[:500])
                return
            break
        if isinstance(message, WithdrawalNotice):
            log.info("withdrawal_written", claim_code=code, reason=message.reason)
            return
        metrics.REPLIES_WRITTEN.labels(status=message.response.iclm_status).inc()
        if message.source_committed_ms:
            metrics.END_TO_END_LATENCY.observe(max(0.0, time.time() - message.source_committed_ms / 1000))
        log.info(
            "reply_written",
            claim_code=message.claim.code,
            status=message.response.iclm_status,
            encounter_uuids=list(message.claim.encounter_uuids),
        )

    def _dead_letter(self, record: Record, reason: str) -> None:
        log.error("reply_dead_lettered", topic=record.topic, offset=record.offset, reason=reason[:200])
        self._dlq.dead_letter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
        )
        self._dlq.flush()
