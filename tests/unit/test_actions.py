"""The operator actions (cdc_claims.actions) with in-memory adapters: answers, idempotency, audit."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from cdc_claims import commands
from cdc_claims.actions import ActionLedger, LiveActions, Processor, Refresher, UnitIds
from cdc_claims.desk.actions import ActionResult, DeskActions
from cdc_claims.errors import ConfigError, LeaseHeld, SourceUnavailable, WriteBackError
from cdc_claims.ledger.model import ActionRecord, ClaimRecord, Lease, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.pipeline.claim_service import Outcome, UnitResult
from cdc_claims.pipeline.ports import Publisher, UnitRef
from cdc_claims.reply.model import ReplyMessage, WithdrawalNotice
from cdc_claims.settings import Settings, UnitKind

HELD = LedgerEntry("encounter", "enc-held", State.HELD, reason="unmapped_line")
DONE = LedgerEntry("encounter", "enc-done", State.VALUATED, claim_code="C-done")
FAILED = LedgerEntry("visit", "vis-failed", State.FAILED, reason="refused_by_openimis")
IDS = {"enc-held": 1, "enc-done": 2, "vis-failed": 3}


@dataclass
class World:
    """Ledger, claim service, OpenMRS ids, Kafka and the poller, all in memory."""

    entries: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    claims: dict[str, ClaimRecord] = field(default_factory=dict)
    audit: list[ActionRecord] = field(default_factory=list)
    outcomes: dict[int, UnitResult] = field(default_factory=dict)
    processed: list[tuple[UnitRef, bool, bool]] = field(default_factory=list)
    process_error: Exception | None = None
    audit_error: Exception | None = None
    withdrawals: list[WithdrawalNotice] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    poll_to: State | None = None  # the state openIMIS reports at a refresh (None: no change)
    poll_note: str | None = None  # what a refresh records without applying
    unfollowed: set[str] = field(default_factory=set)  # open claims the poller cannot follow
    closed: bool = False

    # -- the ledger (ActionLedger) ---------------------------------------------------------------
    def get(self, unit_kind: UnitKind, unit_uuid: str) -> LedgerEntry | None:
        return self.entries.get((unit_kind, unit_uuid))

    def to_rerun(self, *, reason: str | None = None, unit_uuid: str | None = None) -> list[LedgerEntry]:
        return [
            e
            for e in self.entries.values()
            if e.state in (State.HELD, State.FAILED) and reason in (None, e.reason) and unit_uuid in (None, e.unit_uuid)
        ]

    def claim(self, claim_code: str) -> ClaimRecord | None:
        return self.claims.get(claim_code)

    def claims_of(self, unit_kind: UnitKind, unit_uuid: str) -> list[ClaimRecord]:
        return [c for c in self.claims.values() if (c.unit_kind, c.unit_uuid) == (unit_kind, unit_uuid)]

    def upsert_claim(self, record: ClaimRecord) -> ClaimRecord:
        self.claims[record.claim_code] = record
        return record

    def record_action(self, *, actor: str, action: str, target: str, ok: bool, message: str) -> None:
        if self.audit_error is not None:
            raise self.audit_error
        self.audit.append(ActionRecord(datetime.now(UTC), actor, action, target, ok, message, len(self.audit) + 1))

    def actions_for(self, target: str, *, limit: int = 100) -> list[ActionRecord]:
        return [a for a in reversed(self.audit) if a.target == target][:limit]

    def upsert(self, entry: LedgerEntry, *, history: ClaimRecord | None = None) -> LedgerEntry:
        raise AssertionError("the actions write unit rows only through the claim service")

    def acquire_lease(
        self, unit_kind: UnitKind, unit_uuid: str, owner: str, seconds: float, *, steal_from: str | None = None
    ) -> Lease:
        raise AssertionError("leases are the claim service's")

    def release_lease(self, unit_kind: UnitKind, unit_uuid: str, owner: str) -> None:
        raise AssertionError("leases are the claim service's")

    def get_by_code(self, code: str) -> LedgerEntry | None:
        return next((e for e in self.entries.values() if e.claim_code == code), None)

    def list_by_state(self, states: Iterable[State]) -> list[LedgerEntry]:
        return [e for e in self.entries.values() if e.state in set(states)]

    def open_claims(self, states: Iterable[State]) -> list[ClaimRecord]:
        return [c for c in self.claims.values() if c.state in set(states)]

    # -- the claim service, the reader's ids, the poller -----------------------------------------
    def process(self, unit: UnitRef, *, resubmit: bool = False, force: bool = False) -> UnitResult:
        self.processed.append((unit, resubmit, force))
        if self.process_error is not None:
            raise self.process_error
        return self.outcomes.get(unit.id, UnitResult(unit, "submitted", f"C-{unit.id}", status="checked"))

    def unit_id(self, kind: UnitKind, uuid: str) -> int | None:
        return IDS.get(uuid)

    def poll_claim(self, claim_code: str) -> bool | None:
        self.polled.append(claim_code)
        if claim_code in self.unfollowed:
            return None
        record = self.claims[claim_code]
        if self.poll_note is not None:
            self.claims[claim_code] = replace(record, last_error=self.poll_note)
        if self.poll_to is None:
            return False
        self.claims[claim_code] = replace(record, state=self.poll_to)
        return True


class Wiring:
    """The fake adapters behind :class:`LiveActions` (its ``Wiring`` protocol)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def ledger(self) -> ActionLedger:
        return self.world

    def processor(self) -> Processor:
        return self.world

    def unit_ids(self) -> UnitIds:
        return self.world

    def publisher(self) -> Publisher:
        return _Pub(self.world)

    def refresher(self) -> Refresher:
        return self.world

    def close(self) -> None:
        self.world.closed = True


@dataclass
class _Pub:
    """Kafka: only the withdrawal notices matter here."""

    world: World

    def reply(self, message: ReplyMessage) -> None: ...
    def withdrawal(self, notice: WithdrawalNotice) -> None:
        self.world.withdrawals.append(notice)

    def held(self, key: str, payload: Any) -> None: ...
    def audit(self, key: str, bundle: Any) -> None: ...
    def flush(self) -> None: ...


def world(*entries: LedgerEntry, claims: Iterable[ClaimRecord] = ()) -> World:
    return World(entries={(e.unit_kind, e.unit_uuid): e for e in entries}, claims={c.claim_code: c for c in claims})


def actions(w: World, progress: list[str] | None = None) -> LiveActions:
    return LiveActions(Settings(), wiring=Wiring(w), progress=(progress.append if progress is not None else None))


def result(unit_id: int, outcome: Outcome, code: str | None = None, reason: str | None = None) -> UnitResult:
    return UnitResult(UnitRef("encounter", unit_id), outcome, code, reason=reason)


def claim(code: str, state: State, kind: str = "original", **kw: Any) -> ClaimRecord:
    return ClaimRecord(code, "encounter", "enc-done", kind, state, **kw)


def test_live_actions_are_the_desk_port_and_build_nothing_until_asked() -> None:
    live = LiveActions(Settings())  # no password, no mapping: nothing is connected yet
    port: DeskActions = live
    assert port is live
    live.close()


def test_rerun_of_a_held_unit_goes_through_the_claim_service_and_is_audited() -> None:
    w = world(HELD)
    answer = actions(w).rerun("encounter", "enc-held", by="clerk")
    assert answer == ActionResult(True, "encounter enc-held: submitted claim C-1")
    assert [p[0] for p in w.processed] == [UnitRef("encounter", 1)]
    (row,) = w.audit
    assert (row.actor, row.action, row.target, row.ok, row.message) == (
        "clerk",
        "rerun",
        "enc-held",
        True,
        answer.message,
    )


def test_rerun_of_a_submitted_unit_answers_unchanged_and_sends_nothing() -> None:
    w = world(DONE)
    first = actions(w).rerun("encounter", "enc-done", by="clerk")
    again = actions(w).rerun("encounter", "enc-done", by="clerk")
    assert first == again
    assert first.ok and first.message.startswith("encounter enc-done: unchanged (valuated, claim C-done)")
    assert not w.processed
    assert [a.action for a in w.actions_for("enc-done")] == ["rerun", "rerun"]


def test_rerun_of_a_unit_being_sent_right_now_says_so_and_sends_nothing() -> None:
    """The consumer holds its submit lease (not expired, so not stranded): a clerk's click must
    not send it a second time, and the answer says to look again rather than "unchanged"."""
    w = world(LedgerEntry("encounter", "enc-busy", State.SUBMITTING, claim_code="C-busy"))
    result = actions(w).rerun("encounter", "enc-busy", by="clerk")
    assert result.ok and "being sent to openIMIS right now as claim C-busy" in result.message
    assert not w.processed


def test_rerun_that_stays_held_says_why_in_words_and_needs_a_person() -> None:
    w = world(HELD)
    w.outcomes[1] = result(1, "held", reason="unmapped_line")
    answer = actions(w).rerun("encounter", "enc-held", by="clerk")
    assert not answer.ok
    assert "held (unmapped_line)" in answer.message and "has no openIMIS code in the mapping" in answer.message


def test_rerun_of_what_the_ledger_does_not_know_or_the_database_lost() -> None:
    w = world(replace(HELD, unit_uuid="enc-gone"))
    assert actions(w).rerun("encounter", "enc-nope", by="c") == ActionResult(
        False, "encounter enc-nope: no claim in the ledger"
    )
    assert actions(w).rerun("encounter", "enc-gone", by="c") == ActionResult(
        False, "encounter enc-gone: no longer in the database"
    )
    assert [a.ok for a in w.audit] == [False, False]


@pytest.mark.parametrize("error", [LeaseHeld("someone else is on it"), SourceUnavailable("db down")])
def test_rerun_when_a_cause_time_fixes_is_there_answers_not_now(error: Exception) -> None:
    w = world(HELD)
    w.process_error = error
    answer = actions(w).rerun("encounter", "enc-held", by="clerk")
    assert not answer.ok and answer.message.startswith("encounter enc-held: not now (")
    assert w.audit[0].message == answer.message


def test_rerun_held_runs_each_unit_prints_progress_and_audits_each_and_the_run() -> None:
    w = world(HELD, DONE, FAILED)
    w.outcomes[3] = result(3, "failed", "C-3", reason="refused_by_openimis")
    lines: list[str] = []
    summary = actions(w, lines).rerun_held(by="ops")
    assert lines[0] == "2 held/failed/stranded claim(s) to re-run"
    assert lines[1:] == ["  encounter enc-held: submitted claim C-1", lines[2]]
    assert lines[2].startswith("  visit vis-failed: failed (refused_by_openimis) claim C-3: openIMIS refused")
    assert summary == ActionResult(False, "2 re-run, 1 still need a person")
    assert [(a.action, a.target, a.ok) for a in w.audit] == [
        ("rerun", "enc-held", True),
        ("rerun", "vis-failed", False),
        ("rerun-held", "held:*", False),
    ]


def test_rerun_held_refuses_an_unknown_reason_like_a_bad_argument() -> None:
    with pytest.raises(ConfigError, match="unknown reason"):
        actions(world()).rerun_held(reason="bored", by="ops")


def test_resubmit_asks_for_a_replacement_and_lists_the_claims() -> None:
    w = world(DONE, claims=[claim("C-done", State.VALUATED), claim("C-done-R1", State.CHECKED, kind="replacement")])
    w.outcomes[2] = result(2, "supplemented", "C-done", reason="supplemented")
    answer = actions(w).resubmit("enc-done", force=True, by="clerk")
    assert w.processed == [(UnitRef("encounter", 2), True, True)]
    assert answer == ActionResult(
        True,
        "encounter enc-done: supplemented (supplemented); claims: C-done original valuated;"
        " C-done-R1 replacement checked",
    )
    assert actions(w).resubmit("nope", force=False, by="clerk") == ActionResult(
        False, "nope: no claim for this encounter or visit"
    )
    assert [a.action for a in w.audit] == ["resubmit", "resubmit"]


def test_refresh_publishes_a_status_that_moved_and_answers_unchanged_otherwise() -> None:
    w = world(DONE, claims=[claim("C-1", State.CHECKED)])
    assert actions(w).refresh("C-1", by="clerk") == ActionResult(True, "C-1: unchanged (checked)")
    w.poll_to = State.VALUATED
    assert actions(w).refresh("C-1", by="clerk") == ActionResult(True, "C-1: checked -> valuated")
    assert actions(w).refresh("C-1", by="clerk") == ActionResult(True, "C-1: unchanged (valuated, final in openIMIS)")
    assert w.polled == ["C-1", "C-1"]  # a final claim is not asked about
    assert [a.action for a in w.actions_for("C-1")] == ["refresh"] * 3


def test_refresh_says_what_openimis_answered_that_was_not_applied() -> None:
    w = world(claims=[claim("C-1", State.CHECKED), claim("C-2", State.FAILED)])
    w.poll_note = "openIMIS reports ENTERED after checked: recorded, not applied"
    assert actions(w).refresh("C-1", by="c") == ActionResult(False, f"C-1: unchanged (checked); {w.poll_note}")
    assert not actions(w).refresh("C-2", by="c").ok  # never reached openIMIS: nothing to ask
    assert actions(w).refresh("C-3", by="c") == ActionResult(False, "C-3: no such claim")
    w.claims["C-4"] = claim("C-4", State.CHECKED)
    w.unfollowed.add("C-4")  # no claim as sent in the ledger: the poller cannot read its answers
    assert actions(w).refresh("C-4", by="c") == ActionResult(False, "C-4: checked, not followed by the poller")


def test_withdrawal_handled_clears_the_flags_once_and_tells_the_writer() -> None:
    pending = {"l1": {"quantity": "1", "why": "removed"}, "l2": {"quantity": "2", "why": "removed"}}
    w = world(claims=[claim("C-1", State.CHECKED, withdrawal=json.dumps(pending))])
    first = actions(w).withdrawal_handled("C-1", ["l1"], by="clerk 7")
    assert (
        first.ok
        and "withdrawal of l1 handled by clerk 7" in first.message
        and first.message.endswith("1 still to withdraw")
    )
    assert json.loads(w.claims["C-1"].withdrawal or "{}") == {"l2": pending["l2"]}
    assert [(n.claim_code, n.source_uuids) for n in w.withdrawals] == [("C-1", ("l2",))]
    refused = actions(w).withdrawal_handled("C-1", ["l1"], by="clerk 7")  # l1 is no longer flagged
    assert refused == ActionResult(False, "C-1: not flagged for withdrawal: l1")
    assert actions(w).withdrawal_handled("C-1", None, by="clerk 7").ok
    again = actions(w).withdrawal_handled("C-1", None, by="clerk 7")
    assert again == ActionResult(True, "C-1: nothing to withdraw")
    assert w.claims["C-1"].withdrawal is None and len(w.withdrawals) == 2
    assert [a.ok for a in w.actions_for("C-1")] == [True, True, False, True]


def test_an_audit_that_cannot_be_written_is_said_not_hidden() -> None:
    w = world(DONE)
    w.audit_error = WriteBackError("table cdc_claims_action missing")
    answer = actions(w).rerun("encounter", "enc-done", by="clerk")
    assert answer.ok and answer.message.endswith("(not audited: table cdc_claims_action missing)")


def test_the_cli_names_the_os_user_when_no_by_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert commands.operator("billing clerk 7") == "billing clerk 7"
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    assert commands.operator(None) == "alice"

    def no_name() -> str:
        raise KeyError("getpwuid(): uid not found: 10001")

    monkeypatch.setattr(getpass, "getuser", no_name)
    assert commands.operator(None).startswith("uid ")


def test_close_closes_the_adapters() -> None:
    w = world()
    with actions(w):
        pass
    assert w.closed


def test_a_unit_the_consumer_sent_first_answers_unchanged_with_where_its_claim_stands() -> None:
    from cdc_claims.actions import _describe
    from cdc_claims.pipeline.claim_service import UnitResult
    from cdc_claims.pipeline.ports import UnitRef

    result = UnitResult(UnitRef("encounter", 7), "unchanged", "C-1", status="checked")
    assert _describe("encounter", "enc-1", result) == "encounter enc-1: unchanged (checked) claim C-1"
