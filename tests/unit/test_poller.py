"""The poller: status changes become replies; unchanged claims are asked about less and less often."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.errors import UnknownClaimStatus
from cdc_claims.lifecycle import State
from cdc_claims.pipeline.poller import Poller
from cdc_claims.pipeline.ports import OpenClaim
from cdc_claims.reply.model import NormalizedResponse, ReplyMessage

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
