"""The claim service's crash-safety rules, with in-memory ports (no services)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cdc_claims.assemble.model import (
    ClaimContext,
    ClaimDiagnosis,
    ClaimDraft,
    ClaimLine,
    Encounter,
    Patient,
    Visit,
)
from cdc_claims.errors import (
    AuthenticationFailed,
    ClaimRefused,
    DuplicateClaimCode,
    LeaseHeld,
    NotClaimable,
    TransientSubmitError,
    UnknownClaimStatus,
)
from cdc_claims.ledger.model import ClaimRecord, Lease, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.metrics import claim_metrics
from cdc_claims.pipeline.claim_service import ClaimService
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.reply.model import LineOutcome, NormalizedResponse, ReplyMessage, WithdrawalNotice, encode_draft
from cdc_claims.reply.normalize import IclmStatus, StatusCode
from cdc_claims.settings import UnitKind

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _ctx(uuid: str = "enc-1") -> ClaimContext:
    visit = Visit(1, "visit-1", "vt", "OPD", NOW, None, False, None)
    enc = Encounter(7, uuid, "et", "Consultation", NOW, False, None)
    return ClaimContext("encounter", uuid, Patient(3, "pat-1", "F", None, "070707081"), visit, (enc,))


def _draft(ctx: ClaimContext, revision: int, content: str) -> ClaimDraft:
    code = f"RAHOS001-{ctx.unit_uuid}" + (f"-R{revision}" if revision else "")
    line = ClaimLine(1, "service", "A1", "A1", Decimal(1), Decimal(400), "line-1", 5, "consultation")
    return ClaimDraft(
        code=code,
        unit_kind="encounter",
        unit_uuid=ctx.unit_uuid,
        visit_uuid="visit-1",
        encounter_uuids=(ctx.unit_uuid,),
        patient_uuid="pat-1",
        patient_id=3,
        insuree="070707081",
        facility="RAHOS001",
        facility_code="RAHOS001",
        enterer="RHOS0011",
        visit_type="O",
        period_start=date(2026, 11, 25),
        period_end=date(2026, 11, 25),
        created=date(2026, 11, 25),
        diagnoses=(ClaimDiagnosis("A09", 9, True),),
        lines=(line,),
        content_hash=content,
    )


@dataclass
class World:
    content: str = "h1"
    held_reason: str | None = None
    submit_error: Exception | None = None
    ledger: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    history: list[tuple[str, str]] = field(default_factory=list)  # (event, state/code) in order
    posts: list[dict[str, Any]] = field(default_factory=list)
    replies: list[ReplyMessage] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    withdrawals: list[WithdrawalNotice] = field(default_factory=list)
    in_openimis: set[str] = field(default_factory=set)
    leases: dict[tuple[str, str], str] = field(default_factory=dict)
    claims: dict[str, ClaimRecord] = field(default_factory=dict)
    lines: tuple[ClaimLine, ...] | None = None  # the encounter's lines now (default: the consultation)
    rejected: tuple[str, ...] = ()  # source uuids openIMIS rejects
    status: int = 4

    # ports -------------------------------------------------------------------------------
    def read(self, kind: UnitKind, unit_id: int) -> ClaimContext:
        return _ctx()

    def build(self, ctx: ClaimContext, *, created: date, revision: int) -> ClaimDraft:
        if self.held_reason:
            raise NotClaimable(self.held_reason, "detail")
        draft = _draft(ctx, revision, self.content)
        if self.lines is not None:
            draft = replace(draft, lines=self.lines, content_hash=self.content + str(self.lines))
        return draft

    def claim(self, draft: ClaimDraft) -> dict[str, Any]:
        return {"resourceType": "Claim", "code": draft.code}

    def audit_bundle(self, ctx: ClaimContext, draft: ClaimDraft, claim: dict[str, Any]) -> dict[str, Any]:
        return {"resourceType": "Bundle"}

    def submit_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        self.history.append(("post", claim["code"]))
        self.posts.append(claim)
        if self.submit_error is not None:
            raise self.submit_error
        if claim["code"] in self.in_openimis:
            raise DuplicateClaimCode(f"Claim with code '{claim['code']}' already exists.")
        self.in_openimis.add(claim["code"])
        return {"code": claim["code"]}

    def get_claim_response(self, code: str) -> dict[str, Any]:
        self.history.append(("get", code))
        if code not in self.in_openimis:
            raise ClaimRefused(f"Claim matching query does not exist ({code})")
        return {"code": code}

    def normalize(self, response: dict[str, Any], draft: ClaimDraft, *, received_at: datetime) -> NormalizedResponse:
        known: dict[int, tuple[StatusCode, IclmStatus]] = {
            1: (1, "REJECTED"),
            2: (2, "ENTERED"),
            4: (4, "CHECKED"),
            8: (8, "PROCESSED"),
            16: (16, "VALUATED"),
        }
        if self.status not in known:
            raise UnknownClaimStatus(f"status {self.status}", code=self.status, claim_uuid="uuid-x")
        status, iclm = known[self.status]
        outcomes = tuple(
            LineOutcome(
                ln.source_uuid, ln.code, ln.category,
                "REJECTED" if ln.source_uuid in self.rejected else "PASSED",
                2 if ln.source_uuid in self.rejected else 0, "x", ln.quantity, ln.unit_price,
            )
            for ln in draft.lines
        )  # fmt: skip
        return NormalizedResponse(
            draft.code, "uuid-x", status, iclm, "partial", Decimal(400), Decimal(400), None, outcomes, received_at
        )

    def reply(self, message: ReplyMessage) -> None:
        self.history.append(("reply", message.claim.code))
        self.replies.append(message)

    def withdrawal(self, notice: WithdrawalNotice) -> None:
        self.history.append(("withdrawal", notice.claim_code))
        self.withdrawals.append(notice)

    def held_(self, key: str, payload: Any) -> None:
        self.held.append(dict(payload))

    def audit(self, key: str, bundle: dict[str, Any]) -> None:
        self.history.append(("audit", key))

    def flush(self) -> None:
        self.history.append(("flush", ""))

    def get(self, unit_kind: str, unit_uuid: str) -> LedgerEntry | None:
        return self.ledger.get((unit_kind, unit_uuid))

    def upsert(self, entry: LedgerEntry, *, history: ClaimRecord | None = None) -> LedgerEntry:
        if history is not None:
            self.upsert_claim(history)
        self.ledger[(entry.unit_kind, entry.unit_uuid)] = entry
        self.history.append(("ledger", entry.state.value))
        return entry

    def acquire_lease(
        self, unit_kind: str, unit_uuid: str, owner: str, seconds: float, *, steal_from: str | None = None
    ) -> Lease:
        key = (unit_kind, unit_uuid)
        if steal_from is not None and self.leases.get(key) == steal_from:
            self.leases[key] = owner
        return Lease(self.leases.setdefault(key, owner), self.ledger.get(key))

    def release_lease(self, unit_kind: str, unit_uuid: str, owner: str) -> None:
        if self.leases.get((unit_kind, unit_uuid)) == owner:
            del self.leases[(unit_kind, unit_uuid)]

    def claims_of(self, unit_kind: str, unit_uuid: str) -> list[ClaimRecord]:
        found = [c for c in self.claims.values() if (c.unit_kind, c.unit_uuid) == (unit_kind, unit_uuid)]
        return sorted(found, key=lambda c: (c.kind != "original", c.seq))

    def upsert_claim(self, record: ClaimRecord) -> ClaimRecord:
        self.claims[record.claim_code] = record
        return record


class FixedClock:
    """Wall time stands at NOW; each monotonic reading is a tenth of a second later."""

    def __init__(self) -> None:
        self.ticks = 0

    def now(self) -> datetime:
        return NOW

    def monotonic(self) -> float:
        self.ticks += 1
        return self.ticks / 10


class _Pub:
    def __init__(self, w: World) -> None:
        self.reply, self.held, self.audit, self.flush = w.reply, w.held_, w.audit, w.flush
        self.withdrawal = w.withdrawal


def service(w: World, **kw: Any) -> ClaimService:
    return ClaimService(
        reader=w,
        build_draft=w.build,
        renderer=w,
        api=w,
        normalize=w.normalize,
        publisher=_Pub(w),
        ledger=w,
        clock=kw.pop("clock", FixedClock()),
        **kw,
    )


UNIT = UnitRef("encounter", 7, source_committed_ms=1)


def test_write_ahead_then_post_then_reply_then_ledger() -> None:
    w = World()
    result = service(w).process(UNIT)
    assert result.outcome == "submitted" and result.status == "checked"
    events = [e for e, _ in w.history if e != "flush"]
    assert events == ["ledger", "post", "reply", "audit", "ledger"]
    assert not w.leases
    assert [s for e, s in w.history if e == "ledger"] == ["submitting", "checked"]
    assert w.replies[0].source_committed_ms == 1


def test_replay_after_checked_with_same_content_sends_nothing() -> None:
    w = World()
    service(w).process(UNIT)
    result = service(w).process(UNIT)
    assert result.outcome == "unchanged"
    assert len(w.posts) == 1 and len(w.replies) == 1


def test_crash_after_post_before_reply_recovers_without_duplicate() -> None:
    """Ledger says submitting (the POST went through, the process died before the reply)."""
    w = World()
    w.in_openimis.add("RAHOS001-enc-1")
    w.ledger[("encounter", "enc-1")] = LedgerEntry(
        "encounter", "enc-1", State.SUBMITTING, "RAHOS001-enc-1", 0, "h1", attempts=1
    )
    result = service(w).process(UNIT)
    assert result.outcome == "replayed"
    assert len(w.in_openimis) == 1  # no second claim in openIMIS
    assert w.replies[0].claim.code == "RAHOS001-enc-1"
    assert w.ledger[("encounter", "enc-1")].state is State.CHECKED


def _line(uuid: str, code: str, qty: int, price: int = 35, *, identity: str = "") -> ClaimLine:
    return ClaimLine(1, "item", code, code, Decimal(qty), Decimal(price), uuid, 9, "drug", line_id=identity)


CONSULT = ClaimLine(1, "service", "A1", "A1", Decimal(1), Decimal(400), "line-1", 5, "consultation")


def test_a_line_added_after_submit_goes_out_alone_in_a_supplement() -> None:
    w = World(lines=(CONSULT,))
    service(w).process(UNIT)
    w.lines = (CONSULT, _line("lab-1", "I125", 1, 650))
    w.content = "h2"
    result = service(w).process(UNIT)
    assert result.outcome == "supplemented"
    assert [p["code"] for p in w.posts] == ["RAHOS001-enc-1", "RAHOS001-enc-1-S1"]
    supplement = w.claims["RAHOS001-enc-1-S1"]
    assert (supplement.kind, supplement.related_code, supplement.state) == (
        "supplement",
        "RAHOS001-enc-1",
        State.CHECKED,
    )
    assert [r.claim.code for r in w.replies] == ["RAHOS001-enc-1", "RAHOS001-enc-1-S1"]
    assert [ln.code for ln in w.replies[1].claim.lines] == ["I125"]  # never the consultation again
    row = w.ledger[("encounter", "enc-1")]
    assert row.claim_code == "RAHOS001-enc-1" and row.reason == "supplemented" and "I125" in (row.detail or "")
    assert service(w).process(UNIT).outcome == "unchanged"  # a replay sends nothing more


def test_a_line_removed_after_submit_is_flagged_for_withdrawal_never_resent() -> None:
    w = World(lines=(CONSULT, _line("drug-1", "0171", 10)))
    service(w).process(UNIT)
    w.lines = (CONSULT,)
    w.content = "h2"
    result = service(w).process(UNIT)
    assert result.outcome == "withdrawal_needed"
    assert len(w.posts) == 1
    assert [(n.claim_code, n.source_uuids) for n in w.withdrawals] == [("RAHOS001-enc-1", ("drug-1",))]
    flagged = json.loads(w.claims["RAHOS001-enc-1"].withdrawal or "{}")
    assert flagged == {"drug-1": {"code": "0171", "quantity": "10", "why": "removed"}}
    assert "0171 x10 (removed)" in (w.ledger[("encounter", "enc-1")].detail or "")
    w.lines = (CONSULT, _line("drug-1", "0171", 10))  # the clinician puts it back
    w.content = "h3"
    service(w).process(UNIT)
    assert w.withdrawals[-1].source_uuids == () and w.claims["RAHOS001-enc-1"].withdrawal is None
    assert len(w.posts) == 1


def test_a_quantity_raised_by_a_revised_order_sends_only_the_difference() -> None:
    w = World(lines=(CONSULT, _line("drug-1", "0171", 10)))
    service(w).process(UNIT)
    w.lines = (CONSULT, _line("drug-1b", "0171", 14, identity="drug-1"))  # Bahmni REVISE: new order uuid
    w.content = "h2"
    service(w).process(UNIT)
    assert [(ln.code, ln.quantity) for ln in w.replies[-1].claim.lines] == [("0171", Decimal(4))]
    assert not w.withdrawals


def test_supplements_off_reports_the_added_lines_without_sending() -> None:
    w = World(lines=(CONSULT,))
    service(w, supplements=False).process(UNIT)
    w.lines = (CONSULT, _line("lab-1", "I125", 1, 650))
    w.content = "h2"
    result = service(w, supplements=False).process(UNIT)
    assert result.outcome == "changed_after_submit" and len(w.posts) == 1
    assert w.held[-1]["reason"] == "changed_after_submit" and w.held[-1]["lines"]["added"][0]["code"] == "I125"
    assert w.ledger[("encounter", "enc-1")].reason == "changed_after_submit"


def test_a_rejected_line_is_replaced_only_once_it_was_corrected() -> None:
    w = World(lines=(CONSULT, _line("drug-1", "0171", 10, 999)), rejected=("drug-1",))
    service(w).process(UNIT)
    w.rejected = ()
    w.content = "h2"  # touched, but the drug line is the same as when it was rejected
    service(w).process(UNIT)
    assert len(w.posts) == 1
    w.lines = (CONSULT, _line("drug-1", "0171", 10, 35))  # the price fixed in the mapping
    w.content = "h3"
    service(w).process(UNIT)
    assert [p["code"] for p in w.posts][-1] == "RAHOS001-enc-1-R1"
    replacement = w.claims["RAHOS001-enc-1-R1"]
    assert replacement.kind == "replacement" and replacement.related_code == "RAHOS001-enc-1"
    assert [ln.code for ln in w.replies[-1].claim.lines] == ["0171"]  # never the accepted consultation


@pytest.mark.parametrize(
    ("reason", "state", "outcome"), [("uninsured", "held", "held"), ("voided", "cancelled", "cancelled")]
)
def test_not_claimable_is_recorded_and_published(reason: str, state: str, outcome: str) -> None:
    w = World(held_reason=reason)
    result = service(w).process(UNIT)
    assert result.outcome == outcome and result.reason == reason
    row = w.ledger[("encounter", "enc-1")]
    assert (row.state.value, row.reason) == (state, reason)
    assert w.held[0]["reason"] == reason and w.held[0]["unit_uuid"] == "enc-1"
    assert not w.posts


def test_held_then_fixed_is_submitted() -> None:
    w = World(held_reason="unmapped_line")
    service(w).process(UNIT)
    w.held_reason = None
    assert service(w).process(UNIT).outcome == "submitted"


def test_refused_claim_is_failed_with_the_openimis_text() -> None:
    w = World(submit_error=ClaimRefused("Diagnosis matching query does not exist."))
    result = service(w).process(UNIT)
    assert result.outcome == "failed"
    row = w.ledger[("encounter", "enc-1")]
    assert row.state is State.FAILED and "Diagnosis matching" in (row.detail or "")
    assert w.held[0]["kind"] == "failed"


def test_transient_error_propagates_and_leaves_the_write_ahead_row() -> None:
    w = World(submit_error=TransientSubmitError("openHIM 500"))
    with pytest.raises(TransientSubmitError):
        service(w).process(UNIT)
    assert w.ledger[("encounter", "enc-1")].state is State.SUBMITTING
    assert not w.replies
    w.submit_error = None
    assert service(w).process(UNIT).outcome == "submitted"
    assert w.ledger[("encounter", "enc-1")].attempts == 2


def test_voided_after_submit_flags_a_withdrawal_everywhere_once() -> None:
    w = World()
    service(w).process(UNIT)
    w.held_reason = "voided"
    result = service(w).process(UNIT)
    assert result.outcome == "withdrawal_needed"
    row = w.ledger[("encounter", "enc-1")]
    assert row.state is State.CHECKED  # still followed: openIMIS holds the claim
    assert row.reason == "voided_after_submit" and "withdraw" in (row.detail or "")
    assert [n.claim_code for n in w.withdrawals] == ["RAHOS001-enc-1"]
    assert w.held[-1]["kind"] == "withdrawal"
    service(w).process(UNIT)  # a replay: flagged once
    assert len(w.withdrawals) == 1


def test_nothing_billable_is_terminal_and_not_held() -> None:
    w = World(held_reason="no_billable_lines")
    result = service(w).process(UNIT)
    assert result.outcome == "nothing_to_claim"
    assert w.ledger[("encounter", "enc-1")].state is State.NOTHING_TO_CLAIM
    assert not w.held  # no "held" record billing staff would chase
    w.held_reason = None  # an order added later: it is claimed
    assert service(w).process(UNIT).outcome == "submitted"


def test_credentials_refused_leave_the_unit_retriable_then_it_goes_out_once_fixed() -> None:
    w = World(submit_error=AuthenticationFailed("HTTP 401: credentials refused"))
    with pytest.raises(AuthenticationFailed) as caught:
        service(w).process(UNIT)
    assert caught.value.retriable  # the consumer tries again later, forever
    assert w.ledger[("encounter", "enc-1")].state is State.SUBMITTING
    assert not w.leases  # the lease is given back
    w.submit_error = None  # the password was fixed
    assert service(w).process(UNIT).outcome == "submitted"
    assert w.in_openimis == {"RAHOS001-enc-1"}


def test_a_unit_leased_by_another_sidecar_is_not_posted() -> None:
    w = World()
    w.leases[("encounter", "enc-1")] = "other-pod"
    with pytest.raises(LeaseHeld):
        service(w).process(UNIT)
    assert not w.posts
    del w.leases[("encounter", "enc-1")]
    assert service(w).process(UNIT).outcome == "submitted"


def test_a_lease_left_by_a_crashed_process_of_this_host_is_taken_over_at_once() -> None:
    w = World()
    w.leases[("encounter", "enc-1")] = "host:41"
    result = service(w, holder_dead=lambda holder: holder == "host:41").process(UNIT)
    assert result.outcome == "submitted"


def test_an_unknown_openimis_status_is_recorded_and_followed_not_resent() -> None:
    w = World(status=17)
    result = service(w).process(UNIT)
    assert result.outcome == "unknown_status"
    row = w.ledger[("encounter", "enc-1")]
    assert row.state is State.UNKNOWN_STATUS and "17" in (row.detail or "")
    assert not w.replies  # nothing the writer could apply
    w.status = 4
    assert service(w).process(UNIT).outcome == "unchanged"  # never POSTed again
    assert len(w.posts) == 1


def test_changed_while_in_doubt_asks_openimis_first() -> None:
    """A crash after the POST, then an edit: openIMIS has the first claim, so the edit is a change
    after submission (never a second POST of the same code, never a stranded row)."""
    w = World()
    w.in_openimis.add("RAHOS001-enc-1")
    draft = _draft(_ctx(), 0, "h1")
    w.ledger[("encounter", "enc-1")] = LedgerEntry(
        "encounter", "enc-1", State.SUBMITTING, draft.code, 0, "h1", attempts=1, draft_json=encode_draft(draft)
    )
    w.content = "h2"
    result = service(w).process(UNIT)
    assert ("get", "RAHOS001-enc-1") in w.history
    assert result.outcome == "changed_after_submit"
    assert w.ledger[("encounter", "enc-1")].state is State.CHECKED
    assert [r.claim.code for r in w.replies] == ["RAHOS001-enc-1"]
    assert not w.posts


def test_changed_while_in_doubt_and_never_arrived_is_sent_fresh() -> None:
    w = World()
    draft = _draft(_ctx(), 0, "h1")
    w.ledger[("encounter", "enc-1")] = LedgerEntry(
        "encounter", "enc-1", State.SUBMITTING, draft.code, 0, "h1", attempts=1, draft_json=encode_draft(draft)
    )
    w.content = "h2"
    assert service(w).process(UNIT).outcome == "submitted"
    assert w.ledger[("encounter", "enc-1")].content_hash == "h2"


def test_park_marks_a_stranded_unit_failed_for_rerun() -> None:
    w = World(submit_error=TransientSubmitError("openHIM 500"))
    with pytest.raises(TransientSubmitError):
        service(w).process(UNIT)
    service(w).park(UNIT, "internal_error", "KeyError: 'x'")
    row = w.ledger[("encounter", "enc-1")]
    assert (row.state, row.reason) == (State.FAILED, "internal_error")


def test_replace_keeps_hash_out_of_equality() -> None:
    d = _draft(_ctx(), 0, "h1")
    assert replace(d, content_hash="other") == d


def test_the_service_counts_on_the_counters_it_is_given() -> None:
    registry = CollectorRegistry()
    counters = claim_metrics(registry)
    service(World(), counters=counters).process(UNIT)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("cdc_claims_claims_built_total", unit="encounter") == 1
    assert value("cdc_claims_claims_submitted_total") == 1
    assert value("cdc_claims_claims_accepted_total", status="CHECKED") == 1
    assert value("cdc_claims_claims_held_total", reason="unmapped_line") is None


def test_the_service_reaches_the_failpoints_it_is_given_in_submit_order() -> None:
    w, reached = World(), list[str]()
    service(w, failpoint=reached.append).process(UNIT)
    assert reached == ["after_submit", "after_reply"]
    assert len(w.posts) == 1
