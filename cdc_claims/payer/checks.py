"""The payer's rules, applied to a claim before it is POSTed: pricelist and coverage.

openIMIS would apply them itself and answer with a rejected line (2 NOT IN PRICE LIST) or a
rejected claim (7 FAMILY); a price above the list is accepted at "checked" and silently cut at
processing. Each of those is found out after the claim went out, by someone reading openIMIS.
Checked here first, the claim is *held* with a reason billing staff can act on, and nothing
reaches openIMIS unannounced:

* ``not_in_pricelist``       a line's item or service is not in the facility's pricelist;
* ``price_above_pricelist``  a line asks more than the facility's pricelist pays;
* ``no_active_policy``       no policy of the insuree covers the claim's target date (the last
  day of its period, as openIMIS checks), with the policies' dates in the detail.

Each check has a mode (``PayerSettings``): ``hold`` (the default), ``warn`` (send, and count and
log the finding) or ``off``. Pure: the catalogue and the policies come through two small ports,
:class:`CatalogueSource` (a cached copy refreshed in the background, so the pricelist check costs
no round trip) and :class:`PolicySource` (one cached look-up per insuree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from cdc_claims.assemble.model import ClaimDraft, ClaimLine
from cdc_claims.errors import NotClaimable, SourceUnavailable
from cdc_claims.log import get_logger
from cdc_claims.mapping.model import PricedRef
from cdc_claims.payer.catalogue import Catalogue, Category, Policy, covering

log = get_logger(__name__)

CheckMode = Literal["hold", "warn", "off"]
#: the held reasons these checks give; a fix in openIMIS (a policy renewed, a pricelist line
#: added) leaves no trace in OpenMRS, so the consumer re-runs units held for them by itself
PAYER_REASONS = ("not_in_pricelist", "price_above_pricelist", "no_active_policy")


class CatalogueSource(Protocol):
    def current(self) -> Catalogue | None:
        """The latest catalogue read, or None when none could be read yet."""


class PolicySource(Protocol):
    def policies(self, insurance_number: str) -> Sequence[Policy]:
        """The insuree's policies (empty: openIMIS knows none). Raises a retriable error when
        openIMIS cannot be asked."""


class CheckCounter(Protocol):
    def __call__(self, check: str, outcome: str) -> None: ...


def _no_count(check: str, outcome: str) -> None:
    return None


def pricelist_problem(draft: ClaimDraft, catalogue: Catalogue) -> NotClaimable | None:
    """Lines the facility's pricelists do not hold, else lines priced above them, else None."""
    facility = catalogue.facility(draft.facility_code)
    if facility is None:
        return NotClaimable(
            "not_in_pricelist",
            f"health facility {draft.facility_code} is not in openIMIS (or has been retired there): "
            "fix the facility in the mapping file",
        )
    missing: list[str] = []
    above: list[str] = []
    for line in draft.lines:
        price = facility.pricelist(line.category).get(line.code)
        if price is None:
            missing.append(_line(line))
        elif line.unit_price > price:
            above.append(f"{_line(line)} asks {line.unit_price} > {price}")
    if missing:
        lists = _lists(facility.service_pricelist, facility.item_pricelist)
        return NotClaimable(
            "not_in_pricelist",
            f"{len(missing)} line(s) not in the pricelists of {facility.code} ({lists}): " + "; ".join(missing),
        )
    if above:
        return NotClaimable(
            "price_above_pricelist",
            f"{len(above)} line(s) priced above the pricelist of {facility.code}: " + "; ".join(above),
        )
    return None


def coverage_problem(draft: ClaimDraft, policies: Sequence[Policy]) -> NotClaimable | None:
    """None when a policy covers the claim's target date; else the policies openIMIS has."""
    day = draft.period_end
    if covering(policies, day) is not None:
        return None
    if not policies:
        return NotClaimable("no_active_policy", f"openIMIS has no policy for this insurance number (on {day})")
    held = "; ".join(p.describe() for p in policies)
    return NotClaimable("no_active_policy", f"no policy covers {day}: {held}")


@dataclass
class PayerChecks:
    """The claim service's ``PayerCheck`` port: every enabled check, in a fixed order."""

    catalogue: CatalogueSource | None = None
    policies: PolicySource | None = None
    pricelist: CheckMode = "hold"
    coverage: CheckMode = "hold"
    count: CheckCounter = _no_count

    def check(self, draft: ClaimDraft, insurance_number: str | None) -> NotClaimable | None:
        """The first finding of a check in ``hold`` mode, else None (``warn`` findings are logged)."""
        if self.pricelist != "off" and self.catalogue is not None:
            catalogue = self.catalogue.current()
            if catalogue is None:
                self.count("pricelist", "skipped")
                log.warning("pricelist_check_skipped", claim_code=draft.code, why="no openIMIS catalogue read yet")
            else:
                found = self._decide("pricelist", self.pricelist, pricelist_problem(draft, catalogue), draft)
                if found is not None:
                    return found
        if self.coverage != "off" and self.policies is not None and insurance_number:
            problem = coverage_problem(draft, self.policies.policies(insurance_number))
            return self._decide("coverage", self.coverage, problem, draft)
        return None

    def _decide(
        self, check: str, mode: CheckMode, problem: NotClaimable | None, draft: ClaimDraft
    ) -> NotClaimable | None:
        if problem is None:
            self.count(check, "pass")
            return None
        if mode == "warn":
            self.count(check, "warn")
            log.warning(
                "payer_check_warning", claim_code=draft.code, reason=problem.reason, detail=problem.detail[:300]
            )
            return None
        self.count(check, "hold")
        return problem


def _line(line: ClaimLine) -> str:
    return f"{line.category} {line.code} (line {line.sequence})"


def _lists(service_list: str | None, item_list: str | None) -> str:
    return f"services: {service_list or 'none'}, items: {item_list or 'none'}"


class CatalogueCodeBook:
    """The mapping's ``CodeBook`` (the ``reference_terms`` rule) over the cached catalogue.

    A code is looked up as an item for drug lines and as a service, then an item, otherwise; the
    price is the facility's pricelist price (the catalogue's base price when the facility's list
    lacks it: the pricelist check then holds the claim as ``not_in_pricelist``)."""

    def __init__(self, catalogue: CatalogueSource) -> None:
        self._catalogue = catalogue

    def lookup(self, facility_code: str, category: Category | None, code: str) -> tuple[Category, PricedRef] | None:
        catalogue = self._catalogue.current()
        if catalogue is None:  # openIMIS not read yet: the unit waits rather than being held as unmapped
            raise SourceUnavailable("openIMIS catalogue not read yet (lines mapped by reference term wait for it)")
        for kind in (category,) if category is not None else ("service", "item"):
            medical = catalogue.entry(kind, code)
            if medical is not None:
                price = catalogue.price_at(facility_code, kind, code)
                return kind, PricedRef(
                    code=code, uuid=medical.uuid, price=price if price is not None else medical.price
                )
        return None
