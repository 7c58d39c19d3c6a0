"""The lifecycle table: what may happen to a claim, and that nothing else may."""

from __future__ import annotations

import itertools

import pytest

from cdc_claims.errors import IllegalTransition
from cdc_claims.lifecycle import (
    FINAL_STATES,
    MONEY_FINAL_STATES,
    NEEDS_ACTION_STATES,
    OPEN_STATES,
    OPENIMIS_STATUS,
    SUBMITTED_STATES,
    TRANSITIONS,
    Event,
    State,
    advance,
    allowed,
    iclm_status_moves,
    judge_response,
    response_event,
    state_of_iclm,
)
from cdc_claims.writeback.iclm import status_moves

ORDER = [State.ENTERED, State.CHECKED, State.PROCESSED, State.VALUATED]
RESPONSES = [e for e in Event if e.value.startswith("resp_")]


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(TRANSITIONS) == set(State)
    for row in TRANSITIONS.values():
        assert all(isinstance(target, State) for target in row.values())


def test_every_event_is_used_somewhere() -> None:
    used = {event for row in TRANSITIONS.values() for event in row}
    assert used == set(Event)


def test_every_state_is_reachable_from_detected() -> None:
    seen, todo = {State.DETECTED}, [State.DETECTED]
    while todo:
        for target in TRANSITIONS[todo.pop()].values():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(State)


def test_final_states_accept_nothing() -> None:
    for state in FINAL_STATES:
        assert TRANSITIONS[state] == {}


@pytest.mark.parametrize(("earlier", "later"), list(itertools.combinations(ORDER, 2)))
def test_openimis_statuses_only_move_forward(earlier: State, later: State) -> None:
    forward = next(e for e, s, _ in OPENIMIS_STATUS.values() if s is later)
    backward = next(e for e, s, _ in OPENIMIS_STATUS.values() if s is earlier)
    assert judge_response(earlier, forward) == "apply"
    assert advance(earlier, forward) is later
    assert judge_response(later, backward) in ("backward",)
    with pytest.raises(IllegalTransition):
        advance(later, backward)


@pytest.mark.parametrize("state", [State.ENTERED, State.CHECKED, State.PROCESSED])
def test_a_rejection_on_review_is_accepted_from_any_open_status(state: State) -> None:
    assert advance(state, Event.RESP_REJECTED) is State.REJECTED


def test_the_same_status_again_is_no_change() -> None:
    for _event, state, _iclm in OPENIMIS_STATUS.values():
        assert judge_response(state, response_event(next(c for c, v in OPENIMIS_STATUS.items() if v[1] is state))) == (
            "same"
        )


def test_unknown_status_codes_map_to_a_visible_state_that_is_followed() -> None:
    for code in (6, 9, 17, 22, 0, -1):
        assert response_event(code) is Event.RESP_UNKNOWN
    assert advance(State.SUBMITTING, Event.RESP_UNKNOWN) is State.UNKNOWN_STATUS
    assert advance(State.CHECKED, Event.RESP_UNKNOWN) is State.UNKNOWN_STATUS
    assert State.UNKNOWN_STATUS in OPEN_STATES and State.UNKNOWN_STATUS in SUBMITTED_STATES
    for event in RESPONSES:
        if event is not Event.RESP_UNKNOWN:
            assert allowed(State.UNKNOWN_STATUS, event)


def test_submitted_claims_are_never_submitted_again() -> None:
    for state in SUBMITTED_STATES - {State.SUBMITTING}:
        assert not allowed(state, Event.SUBMIT)
        assert not allowed(state, Event.SETTLE)


def test_parked_states_re_enter_through_settled_and_nothing_to_claim_is_not_held() -> None:
    for state in (State.HELD, State.FAILED, State.CANCELLED, State.NOTHING_TO_CLAIM, State.DETECTED):
        assert advance(state, Event.SETTLE) is State.SETTLED
    assert State.NOTHING_TO_CLAIM not in NEEDS_ACTION_STATES
    assert {State.HELD, State.FAILED} == NEEDS_ACTION_STATES


def test_a_write_ahead_row_is_never_left_without_a_way_out() -> None:
    """submitting: a retry, a refusal (failed, re-runnable) or any openIMIS answer."""
    row = TRANSITIONS[State.SUBMITTING]
    assert row[Event.FAIL] is State.FAILED and row[Event.SUBMIT] is State.SUBMITTING
    assert set(RESPONSES) <= set(row)


def test_money_final_states() -> None:
    assert {State.PROCESSED, State.VALUATED, State.REJECTED} == MONEY_FINAL_STATES


def test_the_iclm_writer_follows_the_same_table() -> None:
    names = [iclm for _e, _s, iclm in OPENIMIS_STATUS.values()]
    for current, new in itertools.product([None, *names], names):
        expected = current is None or judge_response(state_of_iclm(current), response_event(_code(new))) == "apply"
        assert iclm_status_moves(current, new) is expected
        assert status_moves(current, new) is expected
    assert status_moves("CHECKED", "ENTERED") is False
    assert status_moves("CHECKED", "REJECTED") is True
    assert status_moves("VALUATED", "REJECTED") is False
    assert status_moves("SOMETHING_ELSE", "CHECKED") is False  # an unknown stored status never moves


def _code(iclm: str) -> int:
    return next(code for code, (_e, _s, name) in OPENIMIS_STATUS.items() if name == iclm)
