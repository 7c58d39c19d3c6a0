"""The claim lifecycle: every state and every allowed transition, in one table.

Everything that changes a claim's state goes through :func:`advance`, so this module is the
only place to read to know what can happen to a claim (the habit of h11's ``_state.py``).

States::

    detected --settled--> settled --submit--> submitting --(ClaimResponse)--> entered/checked/rejected
        ^                    |                     |                               |
        |                    +--hold--> held       +--refused--> failed             +--> processed --> valuated
        +----touched---------+--------------+      (both re-runnable)              (later status changes)

openIMIS claim status codes (1/2/4/8/16) map onto the terminal half of the table and onto the
``iclm_claim.status`` enum of openmrs-module-insuranceclaims.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    DETECTED = "detected"  # a committed transaction touched the encounter/visit
    SETTLED = "settled"  # quiet for the settle window; ready to assemble
    HELD = "held"  # not claimable; reason recorded for billing staff
    SUBMITTING = "submitting"  # write-ahead: a POST may have reached openIMIS
    FAILED = "failed"  # openIMIS refused the claim (validation error)
    REJECTED = "rejected"  # openIMIS status 1
    ENTERED = "entered"  # openIMIS status 2
    CHECKED = "checked"  # openIMIS status 4
    PROCESSED = "processed"  # openIMIS status 8
    VALUATED = "valuated"  # openIMIS status 16
    CANCELLED = "cancelled"  # encounter voided before anything was sent


class Event(StrEnum):
    TOUCHED = "touched"
    SETTLE = "settle"
    HOLD = "hold"
    SUBMIT = "submit"
    REFUSED = "refused"
    RERUN = "rerun"
    VOIDED = "voided"
    # ClaimResponse outcomes, one per openIMIS status
    RESP_REJECTED = "resp_rejected"
    RESP_ENTERED = "resp_entered"
    RESP_CHECKED = "resp_checked"
    RESP_PROCESSED = "resp_processed"
    RESP_VALUATED = "resp_valuated"


_RESPONSES = {
    Event.RESP_REJECTED: State.REJECTED,
    Event.RESP_ENTERED: State.ENTERED,
    Event.RESP_CHECKED: State.CHECKED,
    Event.RESP_PROCESSED: State.PROCESSED,
    Event.RESP_VALUATED: State.VALUATED,
}

TRANSITIONS: dict[State, dict[Event, State]] = {
    State.DETECTED: {Event.TOUCHED: State.DETECTED, Event.SETTLE: State.SETTLED, Event.VOIDED: State.CANCELLED},
    State.SETTLED: {
        Event.TOUCHED: State.DETECTED,
        Event.HOLD: State.HELD,
        Event.SUBMIT: State.SUBMITTING,
        Event.VOIDED: State.CANCELLED,
    },
    State.HELD: {
        Event.TOUCHED: State.DETECTED,
        Event.RERUN: State.SETTLED,
        Event.HOLD: State.HELD,
        Event.VOIDED: State.CANCELLED,
    },
    State.SUBMITTING: {Event.SUBMIT: State.SUBMITTING, Event.REFUSED: State.FAILED, **_RESPONSES},
    State.FAILED: {Event.RERUN: State.SETTLED, Event.TOUCHED: State.DETECTED},
    State.ENTERED: dict(_RESPONSES),
    State.CHECKED: dict(_RESPONSES),
    State.PROCESSED: dict(_RESPONSES),
    State.REJECTED: {Event.RESP_REJECTED: State.REJECTED},
    State.VALUATED: {Event.RESP_VALUATED: State.VALUATED},
    State.CANCELLED: {Event.TOUCHED: State.DETECTED},
}

#: States after which openIMIS holds the claim under its code: never POST that code again.
SUBMITTED_STATES = frozenset(
    {State.SUBMITTING, State.ENTERED, State.CHECKED, State.PROCESSED, State.VALUATED, State.REJECTED}
)
#: States whose ClaimResponse may still change inside openIMIS: the poller follows them.
OPEN_STATES = frozenset({State.ENTERED, State.CHECKED, State.PROCESSED})

#: openIMIS claim status code -> (response event, ``iclm_claim.status``).
OPENIMIS_STATUS: dict[int, tuple[Event, str]] = {
    1: (Event.RESP_REJECTED, "REJECTED"),
    2: (Event.RESP_ENTERED, "ENTERED"),
    4: (Event.RESP_CHECKED, "CHECKED"),
    8: (Event.RESP_PROCESSED, "PROCESSED"),
    16: (Event.RESP_VALUATED, "VALUATED"),
}


class IllegalTransition(ValueError):
    """A bug or a stale message: the event is not allowed in this state."""


def advance(state: State, event: Event) -> State:
    """Return the state after ``event``; raise :class:`IllegalTransition` if not allowed."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(f"{event.value} not allowed in state {state.value}") from None


def allowed(state: State, event: Event) -> bool:
    return event in TRANSITIONS[state]


def response_event(openimis_status: int) -> Event:
    """The lifecycle event for an openIMIS claim status (1/2/4/8/16)."""
    return OPENIMIS_STATUS[openimis_status][0]
