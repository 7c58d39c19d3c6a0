"""The claim lifecycle: every state, every event and every allowed transition, in one table.

Nothing else decides where a claim stands. The claim service, the poller, the ledger and the
iclm writer all ask this module (the habit of h11's ``_state.py``): a state changes only
through :func:`advance`, and the order of openIMIS statuses that the iclm writer and the
poller respect is :data:`TRANSITIONS` itself, not a second list somewhere else.

States, and how a unit moves between them::

                 +--HOLD------> held             (fix the cause; re-run or a new Save: SETTLE)
                 +--NOTHING---> nothing_to_claim (registration, lab results...: not "held")
    detected --SETTLE--> settled --VOIDED----> cancelled
                 +--SUBMIT----> submitting --FAIL------> failed     (re-runnable: SETTLE)
                                    |
                                    +--RESP_*--> entered -> checked -> processed -> valuated
                                                 \\_________\\__________\\--> rejected
                                    +--RESP_UNKNOWN--> unknown_status (a fork's own code: followed)

Responses only move forward; a status that would go backwards (CHECKED polled back as ENTERED)
is *recorded* by the caller (ledger ``last_error``) and never applied. ``rejected`` and
``valuated`` are final. Pre-submit terminal states (held, nothing_to_claim, cancelled,
failed) re-enter through ``settled`` when the unit is touched again or re-run.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from cdc_claims.errors import IllegalTransition


class State(StrEnum):
    DETECTED = "detected"  # a committed transaction touched the encounter/visit
    SETTLED = "settled"  # quiet for the settle window; being assembled
    HELD = "held"  # not claimable yet; reason recorded for billing staff
    NOTHING_TO_CLAIM = "nothing_to_claim"  # nothing billable: terminal, not a held claim
    CANCELLED = "cancelled"  # encounter voided before anything was sent
    SUBMITTING = "submitting"  # write-ahead: a POST may have reached openIMIS
    FAILED = "failed"  # openIMIS refused the claim, or the sidecar gave up on it: re-runnable
    REJECTED = "rejected"  # openIMIS status 1
    ENTERED = "entered"  # openIMIS status 2
    CHECKED = "checked"  # openIMIS status 4
    PROCESSED = "processed"  # openIMIS status 8
    VALUATED = "valuated"  # openIMIS status 16
    UNKNOWN_STATUS = "unknown_status"  # openIMIS answered with a code we do not know


class Event(StrEnum):
    SETTLE = "settle"  # the settle window passed, or a re-run / a new Save of a parked unit
    HOLD = "hold"
    NOTHING = "nothing"
    VOIDED = "voided"
    SUBMIT = "submit"
    FAIL = "fail"
    RESP_REJECTED = "resp_rejected"
    RESP_ENTERED = "resp_entered"
    RESP_CHECKED = "resp_checked"
    RESP_PROCESSED = "resp_processed"
    RESP_VALUATED = "resp_valuated"
    RESP_UNKNOWN = "resp_unknown"


#: openIMIS claim status code -> (response event, state, ``iclm_claim.status``).
OPENIMIS_STATUS: dict[int, tuple[Event, State, str]] = {
    1: (Event.RESP_REJECTED, State.REJECTED, "REJECTED"),
    2: (Event.RESP_ENTERED, State.ENTERED, "ENTERED"),
    4: (Event.RESP_CHECKED, State.CHECKED, "CHECKED"),
    8: (Event.RESP_PROCESSED, State.PROCESSED, "PROCESSED"),
    16: (Event.RESP_VALUATED, State.VALUATED, "VALUATED"),
}
_BY_EVENT = {event: state for event, state, _ in OPENIMIS_STATUS.values()}
_FORWARD: dict[State, tuple[Event, ...]] = {
    # every response that moves a claim on from each openIMIS status (a rejection on review
    # can come after checked or processed)
    State.SUBMITTING: (*_BY_EVENT, Event.RESP_UNKNOWN),
    State.UNKNOWN_STATUS: (*_BY_EVENT, Event.RESP_UNKNOWN),
    State.ENTERED: (
        Event.RESP_CHECKED,
        Event.RESP_PROCESSED,
        Event.RESP_VALUATED,
        Event.RESP_REJECTED,
        Event.RESP_UNKNOWN,
    ),
    State.CHECKED: (Event.RESP_PROCESSED, Event.RESP_VALUATED, Event.RESP_REJECTED, Event.RESP_UNKNOWN),
    State.PROCESSED: (Event.RESP_VALUATED, Event.RESP_REJECTED, Event.RESP_UNKNOWN),
}
_RESP_STATE = {**_BY_EVENT, Event.RESP_UNKNOWN: State.UNKNOWN_STATUS}
_PARKED = (State.DETECTED, State.SETTLED, State.HELD, State.NOTHING_TO_CLAIM, State.CANCELLED, State.FAILED)

TRANSITIONS: dict[State, dict[Event, State]] = {
    **{state: {Event.SETTLE: State.SETTLED} for state in _PARKED},
    State.SETTLED: {
        Event.SETTLE: State.SETTLED,
        Event.HOLD: State.HELD,
        Event.NOTHING: State.NOTHING_TO_CLAIM,
        Event.VOIDED: State.CANCELLED,
        Event.SUBMIT: State.SUBMITTING,
    },
    State.SUBMITTING: {
        Event.SUBMIT: State.SUBMITTING,  # a retry or a replay after a crash: same code
        Event.FAIL: State.FAILED,
        **{e: _RESP_STATE[e] for e in _FORWARD[State.SUBMITTING]},
    },
    **{s: {e: _RESP_STATE[e] for e in _FORWARD[s]} for s in _FORWARD if s is not State.SUBMITTING},
    State.REJECTED: {},
    State.VALUATED: {},
}

#: openIMIS holds the claim under its code: never POST that code again.
SUBMITTED_STATES = frozenset(
    {
        State.SUBMITTING,
        State.ENTERED,
        State.CHECKED,
        State.PROCESSED,
        State.VALUATED,
        State.REJECTED,
        State.UNKNOWN_STATUS,
    }
)
#: The ClaimResponse may still change inside openIMIS: the poller follows these.
OPEN_STATES = frozenset({State.ENTERED, State.CHECKED, State.PROCESSED, State.UNKNOWN_STATUS})
#: openIMIS will not change these any more.
FINAL_STATES = frozenset({State.REJECTED, State.VALUATED})
#: The money is decided (either way): provided items PROCESSED, the bill COMPLETED.
MONEY_FINAL_STATES = frozenset({State.PROCESSED, State.VALUATED, State.REJECTED})
#: What billing staff must act on (counted by ``cdc_claims_held_claims``; picked by rerun-held).
NEEDS_ACTION_STATES = frozenset({State.HELD, State.FAILED})

Verdict = Literal["apply", "same", "backward"]


def advance(state: State, event: Event) -> State:
    """Return the state after ``event``; raise :class:`IllegalTransition` if not allowed."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(f"{event.value} not allowed in state {state.value}") from None


def allowed(state: State, event: Event) -> bool:
    return event in TRANSITIONS[state]


def response_event(openimis_status: int) -> Event:
    """The lifecycle event for an openIMIS claim status; unknown codes give ``RESP_UNKNOWN``."""
    known = OPENIMIS_STATUS.get(openimis_status)
    return known[0] if known is not None else Event.RESP_UNKNOWN


def judge_response(state: State, event: Event) -> Verdict:
    """What to do with a ClaimResponse event for a claim in ``state``.

    ``apply``: move on; ``same``: nothing changed (the poller's common case); ``backward``: the
    response would move the claim back, or out of a final state: record it, never apply it.
    """
    if _RESP_STATE.get(event) is state:
        return "same"
    return "apply" if allowed(state, event) else "backward"


def state_of_iclm(status: str) -> State:
    """The lifecycle state an ``iclm_claim.status`` stands for (ENTERED, CHECKED...)."""
    for _event, state, iclm in OPENIMIS_STATUS.values():
        if iclm == status:
            return state
    raise IllegalTransition(f"iclm status {status!r} is not an openIMIS claim status")


def event_of_iclm(status: str) -> Event:
    for event, _state, iclm in OPENIMIS_STATUS.values():
        if iclm == status:
            return event
    raise IllegalTransition(f"iclm status {status!r} is not an openIMIS claim status")


def iclm_status_moves(current: str | None, new: str) -> bool:
    """True when a response with ``iclm_claim.status`` ``new`` may overwrite ``current``.

    Derived from :data:`TRANSITIONS`: the iclm rows follow exactly the ledger's order.
    """
    if current is None:
        return True
    return judge_response(state_of_iclm(current), event_of_iclm(new)) == "apply"
