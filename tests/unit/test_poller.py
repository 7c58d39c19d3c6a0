"""The poller: status changes become replies; unchanged claims are asked about less and less often."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.errors import UnknownClaimStatus
from cdc_claims.ledger.model import ClaimRecord
from cdc_claims.lifecycle import State
from cdc_claims.pipeline.open_claims import LedgerOpenClaims
from cdc_claims.pipeline.poller import Poller
from cdc_claims.pipeline.ports import OpenClaim
from cdc_claims.reply.model import NormalizedResponse, ReplyMessage, encode_draft

LINE = ClaimLine(1, "service", "A1", "A1", Decimal(1), Decimal(400), "l1", 5, "consultation")
DRAFT = ClaimDraft(
    code="C1",
    unit_kind="encounter",
    unit_uuid="u",
    visit_uuid="v",
    encounter_uuids=("u",),
    patient_uuid="p",
    patient_id=1,
    insuree="i",
    facility="f",
    facility_code="F",
    enterer="e",
    visit_type="O",
    period_start=date(2026, 11, 25),
    period_end=date(2026, 11, 25),
    created=date(2026, 11, 25),
    diagnoses=(ClaimDiagnosis("A09", 1, True),),
    lines=(LINE,),
)


class World:
    def __init__(self) -> None:
        self.claims = {
            "C1": OpenClaim("C1", State.CHECKED, DRAFT),
            "C2": OpenClaim("C2", State.CHECKED, replace(DRAFT, code="C2")),
        }
        self.status = {"C1": 4, "C2": 4}
        self.asked: list[str] = []
        self.replies: list[ReplyMessage] = []
        self.notes: dict[str, str] = {}
        self.reasons: dict[str, str | None] = {}
        self.now = 0.0

    def open_claims(self) -> list[OpenClaim]:
        return list(self.claims.values())

    def open_claim(self, code: str) -> OpenClaim | None:
        claim = self.claims.get(code)
        return claim if claim is not None and claim.state is not State.VALUATED else None

    def set_state(
        self,
        code: str,
        state: State,
        *,
        openimis_claim_uuid: str | None,
        reason: str | None = None,
        rejected: tuple[str, ...] | None = None,
    ) -> tuple[str, ...] | None:
        self.claims[code] = replace(self.claims[code], state=state)
        self.reasons[code] = reason
        return None

    def note(self, code: str, text: str) -> bool:
        new = self.notes.get(code) != text
        self.notes[code] = text
        return new

    def get_claim_response(self, code: str) -> dict[str, Any]:
        self.asked.append(code)
        return {"code": code}

    def submit_claim(self, claim: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the poller never submits")

    def normalize(self, response: dict[str, Any], draft: ClaimDraft, *, received_at: datetime) -> NormalizedResponse:
        status = self.status[draft.code]
        if status not in (1, 2, 4, 8, 16):
            raise UnknownClaimStatus(f"status {status}", code=status)
        iclm = {2: "ENTERED", 4: "CHECKED", 8: "PROCESSED", 16: "VALUATED", 1: "REJECTED"}[status]
        return NormalizedResponse(draft.code, "uuid", status, iclm, "partial", None, None, None, (), received_at)  # type: ignore[arg-type]

    def reply(self, message: ReplyMessage) -> None:
        self.replies.append(message)

    def withdrawal(self, notice: Any) -> None: ...
    def held(self, key: str, payload: Any) -> None: ...
    def audit(self, key: str, bundle: Any) -> None: ...
    def flush(self) -> None: ...


def poller(w: World) -> Poller:
    return Poller(
        w,
        w,
        w.normalize,
        w,
        interval=10,
        max_interval=80,
        batch=10,
        now=lambda: datetime(2026, 11, 25, tzinfo=UTC),
        clock=lambda: w.now,
    )


def test_a_status_change_is_published_once_and_recorded() -> None:
    w = World()
    p = poller(w)
    assert p.poll_once() == 0 and not w.replies
    w.status["C1"] = 16
    w.now = 10
    assert p.poll_once() == 1
    assert [(r.claim.code, r.response.iclm_status) for r in w.replies] == [("C1", "VALUATED")]
    assert w.claims["C1"].state is State.VALUATED


def test_unchanged_claims_are_asked_less_often_and_batches_are_bounded() -> None:
    w = World()
    p = poller(w)
    asked_at = []
    for t in range(0, 200, 5):
        w.now = float(t)
        before = len(w.asked)
        p.poll_once()
        if len(w.asked) > before:
            asked_at.append(t)
    assert asked_at[:4] == [0, 10, 30, 70]  # intervals 10, 20, 40, then capped at 80
    assert asked_at[4] == 150
    w2 = World()
    w2.claims.update({f"X{i}": OpenClaim(f"X{i}", State.CHECKED, replace(DRAFT, code=f"X{i}")) for i in range(30)})
    w2.status.update({f"X{i}": 4 for i in range(30)})
    poller(w2).poll_once()
    assert len(w2.asked) == 10


def test_a_backward_status_is_recorded_never_applied() -> None:
    """A claim at CHECKED polled back as ENTERED: the ledger stays CHECKED and says what was seen."""
    w = World()
    w.status["C1"] = 2
    assert poller(w).poll_once() == 0
    assert w.claims["C1"].state is State.CHECKED
    assert not w.replies
    assert "ENTERED after checked" in w.notes["C1"]


def test_an_unknown_status_code_moves_to_a_visible_state_and_is_still_followed() -> None:
    w = World()
    w.status["C1"] = 17
    p = poller(w)
    assert p.poll_once() == 1
    assert w.claims["C1"].state is State.UNKNOWN_STATUS and w.reasons["C1"] == "unknown_status"
    assert "17" in w.notes["C1"]
    assert not w.replies  # nothing the writer could apply to iclm
    w.status["C1"] = 16  # openIMIS settles it with a known status later
    w.now += 11
    assert p.poll_once() == 1
    settled = w.claims["C1"]  # a new name: mypy keeps the narrowing of w.claims["C1"] across poll_once()
    assert settled.state is State.VALUATED
    assert [r.claim.code for r in w.replies] == ["C1"]


def test_one_claim_is_asked_about_now_out_of_turn() -> None:
    """An operator's refresh: one claim, at once, through the same rules as the poller's turn."""
    w = World()
    p = poller(w)
    assert p.poll_claim("C1") is False and w.asked == ["C1"]  # asked now, nothing moved
    w.status["C1"] = 16
    assert p.poll_claim("C1") is True
    assert [(r.claim.code, r.response.iclm_status) for r in w.replies] == [("C1", "VALUATED")]
    assert p.poll_claim("C1") is None  # valuated: no longer open, nobody is asked
    assert p.poll_claim("nope") is None
    assert w.asked == ["C1", "C1"]


BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def backlog(old: int) -> World:
    """A ledger holding ``old`` open claims nobody has touched for three days (naive UTC times,
    as the ledger returns them)."""
    w = World()
    w.claims = {
        f"OLD{i}": OpenClaim(
            f"OLD{i}",
            State.CHECKED,
            replace(DRAFT, code=f"OLD{i}"),
            changed_at=(BASE - timedelta(days=3)).replace(tzinfo=None),
        )
        for i in range(old)
    }
    w.status = dict.fromkeys(w.claims, 4)
    return w


def submit(w: World, code: str) -> None:
    """A claim the consumer has just sent (last in the ledger's oldest-change-first order)."""
    w.claims[code] = OpenClaim(
        code, State.ENTERED, replace(DRAFT, code=code), changed_at=BASE + timedelta(seconds=w.now)
    )
    w.status[code] = 2


def clocked(w: World) -> Poller:
    return Poller(
        w,
        w,
        w.normalize,
        w,
        interval=10,
        max_interval=80,
        batch=10,
        now=lambda: BASE + timedelta(seconds=w.now),
        clock=lambda: w.now,
    )


def test_a_new_claim_is_asked_about_before_the_backlog_and_so_is_its_next_change() -> None:
    """50 old claims all due, 10 a cycle: a claim sent meanwhile is asked about in the very next
    cycle, and again one interval later, ahead of the old claims still waiting for their turn."""
    w = backlog(50)
    p = clocked(w)
    p.poll_once()
    assert len(w.asked) == 10 and all(c.startswith("OLD") for c in w.asked)
    w.now = 5
    submit(w, "NEW")
    p.poll_once()
    assert w.asked[10] == "NEW"  # first of its cycle, 40 old claims still never asked
    w.status["NEW"] = 4  # a reviewer checks it
    w.now = 15
    assert p.poll_once() == 1
    assert w.asked[20] == "NEW"
    assert [(r.claim.code, r.response.iclm_status) for r in w.replies] == [("NEW", "CHECKED")]
    for t in range(20, 60, 5):  # the backlog still gets through
        w.now = t
        p.poll_once()
    assert {c for c in w.claims if c.startswith("OLD")} <= set(w.asked)


def test_after_a_restart_the_newest_claim_goes_first_and_old_ones_stay_backed_off() -> None:
    """The schedule is in memory: a new process starts each claim on the back-off its age
    earned (capped), so a three-day-old claim is asked once, then after ``max_interval``; a
    claim sent 20 s ago after 20 s."""
    w = backlog(30)
    w.now = -20
    submit(w, "RECENT")
    w.now = 0
    submit(w, "NEW")
    p = clocked(w)
    p.poll_once()
    assert w.asked[:2] == ["NEW", "RECENT"]
    asked_at: dict[str, list[int]] = {}
    for t in range(0, 200, 5):
        w.now = t
        before = len(w.asked)
        if t:
            p.poll_once()
        for code in w.asked[before if t else 0 :]:
            asked_at.setdefault(code, []).append(t)
    assert asked_at["NEW"][:4] == [0, 10, 30, 70]  # 10, 20, 40, 80
    assert asked_at["RECENT"][:3] == [0, 20, 60]  # 20 (its age), 40
    assert asked_at["OLD0"][:2] == [0, 80]  # on the 80 s cap at once
    assert all(len(times) >= 2 for times in asked_at.values())


def test_the_ledger_view_says_when_each_claim_last_changed() -> None:
    """What the poller's first back-off is computed from: the claim history row's ``updated_at``."""
    changed = datetime(2026, 11, 22, 8, 0)  # naive UTC, as the ledger returns it
    record = ClaimRecord(
        "C1", "encounter", "u", "original", State.CHECKED, draft_json=encode_draft(DRAFT), updated_at=changed
    )

    class Ledger:
        def open_claims(self, states: Any) -> list[ClaimRecord]:
            return [record]

        def claim(self, code: str) -> ClaimRecord | None:
            return record if code == "C1" else None

    store = LedgerOpenClaims(Ledger())  # type: ignore[arg-type]
    (claim,) = store.open_claims()
    assert claim.changed_at == changed
    assert store.open_claim("C1") == claim
