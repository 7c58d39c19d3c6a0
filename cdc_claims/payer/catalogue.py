"""The payer's master data as values: facilities and their pricelists, items, services, policies.

openIMIS decides a claim line's fate by the health facility's pricelists (a line whose item or
service is not in the facility's list is rejected with reason 2, NOT IN PRICE LIST; a price
asked above the list is cut to it at processing) and an insuree's cover by the policies whose
effective..expiry period holds the claim's date (else every line is rejected, reason 7 FAMILY).
These values hold exactly what those rules need, parsed from openIMIS's GraphQL answers by
:func:`parse_facility` and friends, so the rules (:mod:`cdc_claims.payer.checks`) and the mapping
comparison (:mod:`cdc_claims.payer.compare`) run without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Category = Literal["item", "service"]

#: openIMIS policy statuses (``tblPolicy.PolicyStatus``)
POLICY_IDLE, POLICY_ACTIVE, POLICY_SUSPENDED, POLICY_EXPIRED = 1, 2, 4, 8
#: an expired policy still covers the days before it expired (a claim for last month)
COVERING_STATUSES = frozenset({POLICY_ACTIVE, POLICY_EXPIRED})
POLICY_STATUS_WORDS = {1: "idle", 2: "active", 4: "suspended", 8: "expired"}


@dataclass(frozen=True)
class Medical:
    """One openIMIS medical item or service: what a mapping entry names."""

    category: Category
    code: str
    uuid: str
    price: Decimal
    name: str = ""


@dataclass(frozen=True)
class Facility:
    """A health facility with what its two pricelists allow, at what price (code -> price)."""

    code: str
    uuid: str
    name: str
    service_pricelist: str | None  # pricelist name, None when the facility has none
    item_pricelist: str | None
    services: Mapping[str, Decimal] = field(default_factory=dict)
    items: Mapping[str, Decimal] = field(default_factory=dict)

    def pricelist(self, category: Category) -> Mapping[str, Decimal]:
        return self.items if category == "item" else self.services

    def pricelist_name(self, category: Category) -> str | None:
        return self.item_pricelist if category == "item" else self.service_pricelist


@dataclass(frozen=True)
class Catalogue:
    """Everything the checks and ``check-mapping --openimis`` compare against, read at one time."""

    facilities: Mapping[str, Facility]  # by code
    medical: Mapping[tuple[Category, str], Medical]  # by (category, code)
    claim_admins: Mapping[str, str]  # code -> uuid
    icd_codes: frozenset[str]
    read_at: float = 0.0  # time.time() when it was read

    def facility(self, code: str) -> Facility | None:
        return self.facilities.get(code)

    def entry(self, category: Category, code: str) -> Medical | None:
        return self.medical.get((category, code))

    def price_at(self, facility_code: str, category: Category, code: str) -> Decimal | None:
        """What ``facility_code`` is paid for ``code``: its pricelist's price, None when not listed."""
        facility = self.facilities.get(facility_code)
        return None if facility is None else facility.pricelist(category).get(code)


@dataclass(frozen=True)
class Policy:
    """One policy an insuree is covered by (``policiesByInsuree``)."""

    product_code: str
    status: int
    start: date | None
    effective: date | None
    expiry: date | None

    def covers(self, day: date) -> bool:
        if self.status not in COVERING_STATUSES or self.effective is None or self.expiry is None:
            return False
        return self.effective <= day <= self.expiry

    def describe(self) -> str:
        status = POLICY_STATUS_WORDS.get(self.status, str(self.status))
        return f"{self.product_code} {status} {_day(self.effective)}..{_day(self.expiry)}"


def covering(policies: Iterable[Policy], day: date) -> Policy | None:
    """The policy that covers ``day``, if any."""
    return next((p for p in policies if p.covers(day)), None)


# ---------------------------------------------------------------------------- parsing
def money(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError) as err:
        raise ValueError(f"not a price: {value!r}") from err


def parse_medical(category: Category, node: Mapping[str, Any]) -> Medical:
    return Medical(category, str(node["code"]), str(node["uuid"]), money(node["price"]), str(node.get("name") or ""))


def parse_pricelist(details: Iterable[Mapping[str, Any]], category: Category) -> dict[str, Decimal]:
    """A pricelist's live lines, code -> price (the overrule when the list sets one)."""
    key = "item" if category == "item" else "service"
    out: dict[str, Decimal] = {}
    for node in details:
        target = node.get(key) or {}
        if node.get("validityTo") or target.get("validityTo") or not target.get("code"):
            continue  # a historical row: openIMIS keeps them, they price nothing
        overrule = node.get("priceOverrule")
        out[str(target["code"])] = money(overrule if overrule not in (None, "") else target["price"])
    return out


def parse_policy(node: Mapping[str, Any]) -> Policy:
    return Policy(
        product_code=str(node.get("productCode") or ""),
        status=int(node.get("status") or 0),
        start=_date(node.get("startDate")),
        effective=_date(node.get("effectiveDate")),
        expiry=_date(node.get("expiryDate")),
    )


def _date(value: Any) -> date | None:
    if not value:
        return None
    return date.fromisoformat(str(value)[:10])


def _day(value: date | None) -> str:
    return value.isoformat() if value is not None else "?"
