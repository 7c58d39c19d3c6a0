"""The list's filters: what a clerk can ask for, read from the query string and checked here.

The state select offers groups a clerk thinks in ("needs action", "held: no insurance number",
"waiting for openIMIS", "withdrawal needed") rather than the thirteen lifecycle states; each
group is a set of states, optionally narrowed to one reason. Anything malformed in the query
string is dropped (a filter a clerk did not ask for must never narrow what they see by
accident, and a filter value never reaches SQL unchecked). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from cdc_claims.desk.words import REASON_WORDS
from cdc_claims.lifecycle import State


@dataclass(frozen=True)
class StateGroup:
    label: str
    states: tuple[State, ...]


#: group key -> what it selects, in the order of the select box. ``withdrawal`` is not a state:
#: claims with lines flagged for withdrawal (see :mod:`cdc_claims.desk.queries`).
STATE_GROUPS: Mapping[str, StateGroup] = {
    "needs_action": StateGroup("Needs action (held or failed)", (State.HELD, State.FAILED)),
    "held": StateGroup("Held", (State.HELD,)),
    "failed": StateGroup("Failed", (State.FAILED,)),
    "withdrawal": StateGroup("Withdrawal needed in openIMIS", ()),
    "in_progress": StateGroup("Waiting to be built", (State.DETECTED, State.SETTLED)),
    "submitted": StateGroup("Sent, no decision yet", (State.SUBMITTING, State.ENTERED)),
    "checked": StateGroup("Checked", (State.CHECKED,)),
    "processed": StateGroup("Processed", (State.PROCESSED,)),
    "valuated": StateGroup("Valuated", (State.VALUATED,)),
    "rejected": StateGroup("Rejected", (State.REJECTED,)),
    "unknown_status": StateGroup("Unknown openIMIS status", (State.UNKNOWN_STATUS,)),
    "nothing_to_claim": StateGroup("Nothing to claim", (State.NOTHING_TO_CLAIM,)),
    "cancelled": StateGroup("Cancelled", (State.CANCELLED,)),
}
#: reasons a unit is held for before anything is sent: each is a group of its own ("held:<reason>")
HELD_GROUP_REASONS = (
    "uninsured",
    "no_active_policy",
    "no_diagnosis",
    "unmapped_line",
    "not_in_pricelist",
    "price_above_pricelist",
    "unmapped_facility",
    "attachment_missing",
    "attachment_too_large",
    "attachment_unsupported",
    "invalid_claim",
)
#: reasons a unit fails for: "failed:<reason>"
FAILED_GROUP_REASONS = ("refused_by_openimis", "unreadable_response", "internal_error")

DateField = Literal["updated", "created"]
_UUIDISH = re.compile(r"^[0-9A-Za-z-]{1,38}$")
_QUERY_MAX = 64
PAGE_MAX = 10_000


@dataclass(frozen=True)
class Filters:
    """What the list shows: every field empty or None means "no restriction"."""

    group: str = ""  # a STATE_GROUPS key, or "held:<reason>" / "failed:<reason>"
    date_from: date | None = None  # inclusive, UTC day
    date_to: date | None = None  # inclusive, UTC day
    date_field: DateField = "updated"  # which ledger time the dates apply to
    facility: str = ""  # location uuid (the encounter's or the visit's)
    visit_type: str = ""  # visit type uuid
    q: str = ""  # claim code (or part of it), patient identifier, or unit uuid
    page: int = 1

    def to_query(self, **override: str | int) -> dict[str, str]:
        """The query string parameters that give these filters back (empty ones left out)."""
        raw = {
            "state": self.group,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "on": self.date_field if self.date_field != "updated" else "",
            "facility": self.facility,
            "visit_type": self.visit_type,
            "q": self.q,
            "page": str(self.page) if self.page != 1 else "",
        }
        raw.update({k: str(v) for k, v in override.items()})
        return {k: v for k, v in raw.items() if v and not (k == "page" and v == "1")}

    def first_page(self) -> Filters:
        return replace(self, page=1)


def group_options() -> list[tuple[str, str]]:
    """(value, label) of the state select, "all" first."""
    options = [("", "All claims")]
    for key, group in STATE_GROUPS.items():
        options.append((key, group.label))
        if key == "held":
            options += [(f"held:{r}", f"Held: {REASON_WORDS[r][0].lower()}") for r in HELD_GROUP_REASONS]
        if key == "failed":
            options += [(f"failed:{r}", f"Failed: {REASON_WORDS[r][0].lower()}") for r in FAILED_GROUP_REASONS]
    return options


def split_group(group: str) -> tuple[StateGroup, str | None] | None:
    """The states and the reason (or None) of a group value; None when it is not a known group."""
    key, _, reason = group.partition(":")
    found = STATE_GROUPS.get(key)
    if found is None:
        return None
    if not reason:
        return found, None
    allowed = {"held": HELD_GROUP_REASONS, "failed": FAILED_GROUP_REASONS}.get(key, ())
    return (found, reason) if reason in allowed else None


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def from_query(params: Mapping[str, str]) -> Filters:
    """Filters from a query string; malformed values are dropped, never passed on."""
    group = params.get("state", "")
    if split_group(group) is None:
        group = ""
    date_from, date_to = _day(params.get("from")), _day(params.get("to"))
    if date_from and date_to and date_from > date_to:
        date_from, date_to = date_to, date_from
    facility = params.get("facility", "")
    visit_type = params.get("visit_type", "")
    try:
        page = min(max(int(params.get("page", "1")), 1), PAGE_MAX)
    except ValueError:
        page = 1
    date_field: DateField = "created" if params.get("on") == "created" else "updated"
    return Filters(
        group=group,
        date_from=date_from,
        date_to=date_to,
        date_field=date_field,
        facility=facility if _UUIDISH.match(facility) else "",
        visit_type=visit_type if _UUIDISH.match(visit_type) else "",
        q=" ".join(params.get("q", "").split())[:_QUERY_MAX],
        page=page,
    )
