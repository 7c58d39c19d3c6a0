"""The operator actions, live: what the desk's buttons and the one-shot commands do, audited.

A re-run pressed on the desk and one typed in a shell must be the same act: the same claim
service (lease, lifecycle, write-ahead ledger), the same answer, the same trace in
``cdc_claims_action``. So both call :class:`LiveActions`; the CLI (:mod:`cdc_claims.commands`)
only parses arguments and prints, the desk only renders :class:`ActionResult` messages.

Every action is idempotent and says so: re-running a unit that was already submitted answers
``unchanged``, marking a withdrawal handled twice answers ``nothing to withdraw``, refreshing a
claim whose status did not move answers ``unchanged``. ``ok`` means nothing is left for a person
to do. Errors a person or time fixes (a database, Kafka or openHIM down) become ``not now``
answers; a deployment that cannot act at all (no mapping, no password) raises
:class:`~cdc_claims.errors.ConfigError`.

Adapters are built on first use, through :mod:`cdc_claims.roles` (a withdrawal needs no OpenMRS
reader, a refresh no mapping), shared by the desk's request threads, and closed by :meth:`close`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from cdc_claims.db import writer_connection_factory
from cdc_claims.desk.actions import ActionResult
from cdc_claims.errors import HELD_REASONS, CdcClaimsError, ConfigError
from cdc_claims.ledger.model import LedgerEntry
from cdc_claims.ledger.store import Ledger
from cdc_claims.lifecycle import FINAL_STATES, OPEN_STATES, State
from cdc_claims.log import get_logger
from cdc_claims.pipeline.claim_service import UnitResult
from cdc_claims.pipeline.open_claims import LedgerOpenClaims
from cdc_claims.pipeline.poller import Poller
from cdc_claims.pipeline.ports import AuditLog, ClaimLedger, Publisher, UnitRef
from cdc_claims.reply.model import WithdrawalNotice
from cdc_claims.reply.normalize import normalize
from cdc_claims.settings import Settings, UnitKind
from cdc_claims.submit.client import OpenImisClient

if TYPE_CHECKING:  # the Kafka client loads only when an action needs Kafka (and never in unit tests)
    from cdc_claims.assemble.reader import OpenMrsReader
    from cdc_claims.pipeline.kafka_io import KafkaPublisher
    from cdc_claims.roles import Claims

log = get_logger(__name__)

Progress = Callable[[str], None]
_UNIT_KINDS: tuple[UnitKind, ...] = ("encounter", "visit")


class ActionLedger(ClaimLedger, AuditLog, Protocol):
    """The ledger as the actions use it: unit rows, claim history, and the audit."""


class Processor(Protocol):
    """The claim service (``pipeline.claim_service.ClaimService``)."""

    def process(self, unit: UnitRef, *, resubmit: bool = False, force: bool = False) -> UnitResult: ...


class UnitIds(Protocol):
    """Encounter/visit uuid -> OpenMRS id (``assemble.reader.OpenMrsReader``)."""

    def unit_id(self, kind: UnitKind, uuid: str) -> int | None: ...


class Refresher(Protocol):
    """Asks openIMIS about one claim now (``pipeline.poller.Poller``)."""

    def poll_claim(self, claim_code: str) -> bool | None: ...


class Wiring(Protocol):
    """Where the actions get their adapters: :class:`LiveWiring`, or fakes in the unit tests."""

    def ledger(self) -> ActionLedger: ...
    def processor(self) -> Processor: ...
    def unit_ids(self) -> UnitIds: ...
    def publisher(self) -> Publisher: ...
    def refresher(self) -> Refresher: ...
    def close(self) -> None: ...


class LiveWiring:
    """The real adapters, each built once on first use (thread-safe: the desk's requests share them)."""

    def __init__(self, settings: Settings, client_id: str = "cdc-claims-actions") -> None:
        self._settings = settings
        self._client_id = client_id
        self._lock = threading.RLock()
        self._ledger: Ledger | None = None
        self._api: OpenImisClient | None = None
        self._publisher: KafkaPublisher | None = None
        self._claims: Claims | None = None
        self._poller: Poller | None = None
        self._reader: OpenMrsReader | None = None

    def ledger(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                self._ledger = Ledger(writer_connection_factory(self._settings.db))
            return self._ledger

    def _client(self) -> OpenImisClient:
        with self._lock:
            if self._api is None:
                self._api = OpenImisClient(self._settings.openhim)
            return self._api

    def publisher(self) -> KafkaPublisher:
        with self._lock:
            if self._publisher is None:
                from cdc_claims import roles

                self._publisher = roles.publisher_for(self._settings, self._client_id)
            return self._publisher

    def _built(self) -> Claims:
        with self._lock:
            if self._claims is None:
                from cdc_claims import roles

                # an operator re-runs after a fix: ask openIMIS about the insuree afresh each time
                self._claims = roles.build_claims(self._settings, self.publisher(), self._client(), fresh_policies=True)
            return self._claims

    def processor(self) -> Processor:
        return self._built().service

    def unit_ids(self) -> UnitIds:
        return self._built().reader

    def reader(self) -> OpenMrsReader:
        """The OpenMRS reader alone (a dry-run backfill needs neither Kafka nor openIMIS)."""
        with self._lock:
            if self._claims is not None:
                return self._claims.reader
            if self._reader is None:
                from cdc_claims import roles

                self._reader = roles.build_reader(self._settings)
            return self._reader

    def refresher(self) -> Poller:
        with self._lock:
            if self._poller is None:
                store = LedgerOpenClaims(self.ledger())
                self._poller = Poller(store, self._client(), normalize, self.publisher())
            return self._poller

    def close(self) -> None:
        with self._lock:
            api, publisher, claims = self._api, self._publisher, self._claims
            self._api = self._publisher = self._claims = self._poller = None
        if claims is not None:
            claims.close()
        if api is not None:
            api.close()
        if publisher is not None:
            publisher.close()


def _not_now(what: str, err: CdcClaimsError) -> ActionResult:
    return ActionResult(False, f"{what}: not now ({err.reason}): {err}"[:2000])


def _describe(kind: UnitKind, uuid: str, result: UnitResult) -> str:
    text = f"{kind} {uuid}: {result.outcome}"
    if result.reason:
        text += f" ({result.reason})"
    elif result.outcome == "unchanged" and result.status:  # "unchanged (checked)": where it stands
        text += f" ({result.status})"
    if result.claim_code:
        text += f" claim {result.claim_code}"
    if result.outcome in ("held", "failed") and result.reason in HELD_REASONS:
        text += f": {HELD_REASONS[result.reason]}"
    return text


def _needs_person(result: UnitResult) -> bool:
    return result.outcome in ("held", "failed")


class LiveActions:
    """The desk's :class:`~cdc_claims.desk.actions.DeskActions`, and the CLI's actions.

    ``progress`` receives a line per unit during a long run (the CLI prints them; the desk needs
    none). Each action writes one audit row per unit or claim it acted on, ``actor`` = ``by``.
    """

    def __init__(self, settings: Settings, *, wiring: Wiring | None = None, progress: Progress | None = None) -> None:
        self._wiring: Wiring = wiring if wiring is not None else LiveWiring(settings)
        self._progress = progress or (lambda _line: None)

    def __enter__(self) -> LiveActions:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wiring.close()

    # ------------------------------------------------------------------ re-run
    def rerun(self, kind: UnitKind, uuid: str, *, by: str) -> ActionResult:
        """Run one held or failed unit (or one stranded mid-submit) through the claim service again."""
        try:
            ledger = self._wiring.ledger()
            due = [e for e in ledger.to_rerun(unit_uuid=uuid) if e.unit_kind == kind]
            if due:
                result = self._rerun_entry(due[0])
            elif (entry := ledger.get(kind, uuid)) is None:
                result = ActionResult(False, f"{kind} {uuid}: no claim in the ledger")
            elif entry.state is State.SUBMITTING:  # the consumer is sending it this very moment
                claim = f" as claim {entry.claim_code}" if entry.claim_code else ""
                result = ActionResult(
                    True, f"{kind} {uuid}: being sent to openIMIS right now{claim}: look again in a moment"
                )
            else:
                claim = f", claim {entry.claim_code}" if entry.claim_code else ""
                result = ActionResult(True, f"{kind} {uuid}: unchanged ({entry.state.value}{claim}): nothing to re-run")
        except ConfigError:
            raise
        except CdcClaimsError as err:
            result = _not_now(f"{kind} {uuid}", err)
        return self._audit(by, "rerun", uuid, result)

    def rerun_held(self, *, reason: str | None = None, unit_uuid: str | None = None, by: str) -> ActionResult:
        """Every held/failed/stranded unit (or those held for ``reason``, or one unit), one by one."""
        if reason is not None and reason not in HELD_REASONS:
            raise ConfigError(f"unknown reason {reason!r}; one of: {', '.join(HELD_REASONS)}")
        try:
            entries = self._wiring.ledger().to_rerun(reason=reason, unit_uuid=unit_uuid)
        except ConfigError:
            raise
        except CdcClaimsError as err:
            return self._audit(by, "rerun-held", _filter(reason, unit_uuid), _not_now("rerun-held", err))
        self._progress(f"{len(entries)} held/failed/stranded claim(s) to re-run")
        left = 0
        for entry in entries:
            try:
                result = self._rerun_entry(entry)
            except ConfigError:
                raise
            except CdcClaimsError as err:
                result = _not_now(f"{entry.unit_kind} {entry.unit_uuid}", err)
            result = self._audit(by, "rerun", entry.unit_uuid, result)
            self._progress(f"  {result.message}")
            left += not result.ok
        summary = ActionResult(left == 0, f"{len(entries)} re-run, {left} still need a person")
        return self._audit(by, "rerun-held", _filter(reason, unit_uuid), summary)  # the run, besides each unit

    def _rerun_entry(self, entry: LedgerEntry) -> ActionResult:
        unit_id = self._wiring.unit_ids().unit_id(entry.unit_kind, entry.unit_uuid)
        if unit_id is None:
            return ActionResult(False, f"{entry.unit_kind} {entry.unit_uuid}: no longer in the database")
        result = self._wiring.processor().process(UnitRef(entry.unit_kind, unit_id))
        return ActionResult(not _needs_person(result), _describe(entry.unit_kind, entry.unit_uuid, result))

    # ------------------------------------------------------------------ resubmit
    def resubmit(self, uuid: str, *, force: bool, by: str) -> ActionResult:
        """Send corrected lines openIMIS rejected as a replacement claim (``force``: also unchanged
        ones, their cause was fixed in openIMIS). Never an accepted line; nothing new: unchanged."""
        try:
            result = self._resubmit(uuid, force=force)
        except ConfigError:
            raise
        except CdcClaimsError as err:
            result = _not_now(uuid, err)
        return self._audit(by, "resubmit", uuid, result)

    def _resubmit(self, uuid: str, *, force: bool) -> ActionResult:
        ledger = self._wiring.ledger()
        entry = next((e for kind in _UNIT_KINDS if (e := ledger.get(kind, uuid)) is not None), None)
        if entry is None:
            return ActionResult(False, f"{uuid}: no claim for this encounter or visit")
        unit_id = self._wiring.unit_ids().unit_id(entry.unit_kind, uuid)
        if unit_id is None:
            return ActionResult(False, f"{entry.unit_kind} {uuid}: no longer in the database")
        result = self._wiring.processor().process(UnitRef(entry.unit_kind, unit_id), resubmit=True, force=force)
        claims = "; ".join(f"{r.claim_code} {r.kind} {r.state.value}" for r in ledger.claims_of(entry.unit_kind, uuid))
        text = f"{entry.unit_kind} {uuid}: {result.outcome} ({result.reason or '-'})"
        return ActionResult(not _needs_person(result), text + (f"; claims: {claims}" if claims else ""))

    # ------------------------------------------------------------------ refresh
    def refresh(self, claim_code: str, *, by: str) -> ActionResult:
        """Ask openIMIS for the claim's ClaimResponse now; a status that moved is published as a
        reply (the writer updates the iclm rows), exactly as the poller would at its next turn."""
        try:
            result = self._refresh(claim_code)
        except ConfigError:
            raise
        except CdcClaimsError as err:
            result = _not_now(claim_code, err)
        return self._audit(by, "refresh", claim_code, result)

    def _refresh(self, code: str) -> ActionResult:
        ledger = self._wiring.ledger()
        before = ledger.claim(code)
        if before is None:
            return ActionResult(False, f"{code}: no such claim")
        state = before.state.value
        if before.state in FINAL_STATES:
            return ActionResult(True, f"{code}: unchanged ({state}, final in openIMIS)")
        if before.state not in OPEN_STATES:
            return ActionResult(False, f"{code}: {state}, not in openIMIS: re-run or resubmit its encounter")
        moved = self._wiring.refresher().poll_claim(code)
        after = ledger.claim(code) or before
        if moved is None:  # closed meanwhile, or sent before the ledger kept claims as sent
            return ActionResult(after.state in FINAL_STATES, f"{code}: {after.state.value}, not followed by the poller")
        if moved:
            return ActionResult(True, f"{code}: {state} -> {after.state.value}")
        if after.last_error and after.last_error != before.last_error:  # said something not applied
            return ActionResult(False, f"{code}: unchanged ({after.state.value}); {after.last_error}"[:2000])
        return ActionResult(True, f"{code}: unchanged ({after.state.value})")

    # ------------------------------------------------------------------ withdrawals
    def withdrawal_handled(self, claim_code: str, lines: Sequence[str] | None, *, by: str) -> ActionResult:
        """Billing staff withdrew lines (``None``: every flagged one) in openIMIS: clear the flags,
        keep who did it on the claim, and tell the writer (the iclm rows lose WITHDRAWAL NEEDED)."""
        try:
            result = self._withdrawal_handled(claim_code, lines, by=by)
        except ConfigError:
            raise
        except CdcClaimsError as err:
            result = _not_now(claim_code, err)
        return self._audit(by, "withdrawal-handled", claim_code, result)

    def _withdrawal_handled(self, code: str, lines: Sequence[str] | None, *, by: str) -> ActionResult:
        ledger = self._wiring.ledger()
        record = ledger.claim(code)
        if record is None:
            return ActionResult(False, f"{code}: no such claim")
        if not record.withdrawal:
            return ActionResult(True, f"{code}: nothing to withdraw")
        pending: dict[str, Any] = json.loads(record.withdrawal)
        done = set(lines or pending)
        unknown = done - set(pending)
        if unknown:
            return ActionResult(False, f"{code}: not flagged for withdrawal: {', '.join(sorted(unknown))}")
        left = {k: v for k, v in pending.items() if k not in done}
        now = datetime.now(UTC)
        note = f"withdrawal of {', '.join(sorted(done))} handled by {by} at {now:%Y-%m-%dT%H:%M:%SZ}"
        ledger.upsert_claim(
            replace(record, withdrawal=json.dumps(left, sort_keys=True) if left else None, last_error=note[:2000])
        )
        publisher = self._wiring.publisher()
        remaining = tuple(sorted(k for k in left if k != "*"))
        publisher.withdrawal(WithdrawalNotice(code, "handled", note, now, remaining, "*" in left))
        publisher.flush()
        return ActionResult(True, f"{code}: {note}; {len(left)} still to withdraw")

    # ------------------------------------------------------------------ audit
    def _audit(self, by: str, action: str, target: str, result: ActionResult) -> ActionResult:
        return audit(self._wiring.ledger(), by, action, target, result)


def audit(ledger: AuditLog, by: str, action: str, target: str, result: ActionResult) -> ActionResult:
    """Record the action; an audit that cannot be written is said in the answer, never hidden.

    Every audited act goes through here: these actions, and a backfill run (:mod:`cdc_claims.backfill`).
    """
    actor = by.strip() or "unknown"
    log.info("operator_action", actor=actor, action=action, target=target, ok=result.ok)
    try:
        ledger.record_action(actor=actor, action=action, target=target, ok=result.ok, message=result.message)
    except CdcClaimsError as err:
        log.warning("operator_action_not_audited", action=action, target=target, error=str(err)[:200])
        return replace(result, message=f"{result.message} (not audited: {err})"[:2000])
    return result


def _filter(reason: str | None, unit_uuid: str | None) -> str:
    """The audit target of a bulk re-run: what it was restricted to."""
    return f"held:{reason or '*'}" + (f" unit:{unit_uuid}" if unit_uuid else "")
