"""The payer's rules before a POST, and the mapping compared with openIMIS's catalogue (pure)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs
from test_claim_service import UNIT, World, _ctx, _draft, service

from cdc_claims.assemble.model import ClaimDraft, ClaimLine
from cdc_claims.errors import HELD_REASONS, ConfigError, TransientSubmitError, UpstreamMisconfigured
from cdc_claims.health import DependencyHealth
from cdc_claims.lifecycle import State
from cdc_claims.mapping.model import parse_mapping
from cdc_claims.payer.cache import CatalogueCache, PolicyCache
from cdc_claims.payer.catalogue import Catalogue, Facility, Medical, Policy, covering, parse_policy, parse_pricelist
from cdc_claims.payer.checks import PAYER_REASONS, PayerChecks, coverage_problem, pricelist_problem
from cdc_claims.payer.compare import INSUREE, compare, insuree_findings
from cdc_claims.payer.graphql import OpenImisGraphQL
from cdc_claims.pipeline.claim_service import ClaimService
from cdc_claims.settings import PayerSettings

A1 = "488d8bcb-5b88-438c-9077-f177f6f32626"
ASPIRIN = "71efb78b-64ee-4a68-be29-87daf566eb20"
HOSPITAL = Facility(
    "RAHOS001",
    "d8a25f21-f36a-4d4d-9e58-1db8ffbe7036",
    "Rapta District Hospital",
    "Ultha Govt. Hospital List",
    "Ultha Govt. Hospital List",
    services={"A1": Decimal(400)},
    items={"0001": Decimal(10)},
)
CENTRE = Facility("RAHC001", "c0000000-0000-4000-8000-000000000001", "Rapta HC", "HC List", None, {"A1": Decimal(380)})
CATALOGUE = Catalogue(
    facilities={"RAHOS001": HOSPITAL, "RAHC001": CENTRE},
    medical={
        ("service", "A1"): Medical("service", "A1", A1, Decimal(400), "General Consultation"),
        ("item", "0001"): Medical("item", "0001", ASPIRIN, Decimal(10), "Aspirin"),
    },
    claim_admins={"RHOS0011": "598e43ca-9977-4f4b-a678-992528ce3454"},
    icd_codes=frozenset({"A09", "A499"}),
)


def draft(*lines: ClaimLine, facility: str = "RAHOS001", day: date = date(2026, 11, 25)) -> ClaimDraft:
    base = _draft(_ctx(), 0, "h")
    return replace(base, lines=lines or base.lines, facility_code=facility, period_start=day, period_end=day)


def line(seq: int, category: str, code: str, price: int, qty: int = 1) -> ClaimLine:
    return ClaimLine(seq, category, code, code, Decimal(qty), Decimal(price), f"src-{seq}", 5, "drug")  # type: ignore[arg-type]


ACTIVE = Policy("BCUL0001", 2, date(2025, 1, 1), date(2025, 1, 1), date(2030, 12, 31))
EXPIRED = Policy("BCUL0001", 8, date(2018, 9, 24), date(2018, 9, 24), date(2019, 9, 23))


# ---------------------------------------------------------------------------- the catalogue
def test_a_pricelist_keeps_live_lines_and_the_overrule_price() -> None:
    details: list[dict[str, Any]] = [
        {"service": {"code": "A1", "price": "400.00", "validityTo": None}, "priceOverrule": None, "validityTo": None},
        {
            "service": {"code": "I1", "price": "1300.00", "validityTo": None},
            "priceOverrule": "1000",
            "validityTo": None,
        },
        {"service": {"code": "G2", "price": "42000.00", "validityTo": None}, "validityTo": "2020-01-01T00:00:00"},
        {"service": {"code": "M1", "price": "10.00", "validityTo": "2019-01-01"}, "validityTo": None},
    ]
    assert parse_pricelist(details, "service") == {"A1": Decimal(400), "I1": Decimal(1000)}


def test_an_expired_policy_still_covers_the_days_before_it_expired_but_not_after() -> None:
    assert EXPIRED.covers(date(2019, 1, 1)) and not EXPIRED.covers(date(2026, 11, 25))
    suspended = replace(ACTIVE, status=4)
    assert not suspended.covers(date(2026, 11, 25))
    assert covering([EXPIRED, ACTIVE], date(2026, 11, 25)) is ACTIVE
    node = {"productCode": "X", "status": 2, "startDate": "2025-01-01", "effectiveDate": None, "expiryDate": None}
    assert not parse_policy(node).covers(date(2026, 1, 1))  # no dates: never assumed to cover


# ---------------------------------------------------------------------------- the rules
def test_lines_in_the_facility_pricelist_at_or_below_its_price_pass() -> None:
    assert pricelist_problem(draft(line(1, "service", "A1", 400), line(2, "item", "0001", 9)), CATALOGUE) is None


def test_a_line_the_facility_pricelist_lacks_is_named_with_the_pricelist() -> None:
    problem = pricelist_problem(
        draft(line(1, "service", "A1", 380), line(2, "item", "0001", 10), facility="RAHC001"), CATALOGUE
    )
    assert problem is not None and problem.reason == "not_in_pricelist"
    assert "item 0001 (line 2)" in problem.detail and "items: none" in problem.detail
    assert "A1" not in problem.detail


def test_a_line_priced_above_the_pricelist_says_both_prices() -> None:
    problem = pricelist_problem(draft(line(1, "service", "A1", 450)), CATALOGUE)
    assert problem is not None and problem.reason == "price_above_pricelist"
    assert "asks 450 > 400" in problem.detail


def test_an_unknown_facility_holds_the_claim() -> None:
    problem = pricelist_problem(draft(facility="NOPE001"), CATALOGUE)
    assert problem is not None and problem.reason == "not_in_pricelist" and "NOPE001" in problem.detail


def test_no_policy_on_the_claim_date_names_the_policies_openimis_has() -> None:
    assert coverage_problem(draft(), [ACTIVE]) is None
    lapsed = coverage_problem(draft(), [EXPIRED])
    assert lapsed is not None and lapsed.reason == "no_active_policy"
    assert "2026-11-25" in lapsed.detail and "BCUL0001 expired 2018-09-24..2019-09-23" in lapsed.detail
    unknown = coverage_problem(draft(), [])
    assert unknown is not None and "no policy for this insurance number" in unknown.detail


def test_every_payer_reason_is_a_held_reason() -> None:
    assert set(PAYER_REASONS) <= set(HELD_REASONS)


class Policies:
    def __init__(self, *policies: Policy, error: Exception | None = None) -> None:
        self.found = list(policies)
        self.error = error
        self.asked: list[str] = []

    def policies(self, insurance_number: str) -> list[Policy]:
        self.asked.append(insurance_number)
        if self.error is not None:
            raise self.error
        return self.found


class Fixed:
    def __init__(self, catalogue: Catalogue | None) -> None:
        self.catalogue = catalogue

    def current(self) -> Catalogue | None:
        return self.catalogue


def test_checks_hold_warn_or_stay_off_per_mode_and_count_each_outcome() -> None:
    counted: list[tuple[str, str]] = []
    above = draft(line(1, "service", "A1", 999))

    def checks(pricelist: Any, coverage: Any, *policies: Policy) -> PayerChecks:
        return PayerChecks(
            Fixed(CATALOGUE), Policies(*policies), pricelist, coverage, lambda c, o: counted.append((c, o))
        )

    held = checks("hold", "hold", ACTIVE).check(above, "070707081")
    assert held is not None and held.reason == "price_above_pricelist"
    assert counted == [("pricelist", "hold")]
    counted.clear()
    assert checks("warn", "hold", ACTIVE).check(above, "070707081") is None
    assert counted == [("pricelist", "warn"), ("coverage", "pass")]
    counted.clear()
    lapsed = checks("off", "hold", EXPIRED).check(above, "070707081")
    assert lapsed is not None and lapsed.reason == "no_active_policy" and counted == [("coverage", "hold")]
    assert checks("off", "off", EXPIRED).check(above, "070707081") is None


def test_no_catalogue_yet_skips_the_pricelist_check_visibly_and_still_checks_coverage() -> None:
    counted: list[tuple[str, str]] = []
    checks = PayerChecks(Fixed(None), Policies(EXPIRED), count=lambda c, o: counted.append((c, o)))
    problem = checks.check(draft(line(1, "service", "A1", 999)), "070707081")
    assert problem is not None and problem.reason == "no_active_policy"
    assert counted == [("pricelist", "skipped"), ("coverage", "hold")]


def test_a_policy_lookup_that_fails_propagates_so_the_unit_is_retried() -> None:
    checks = PayerChecks(Fixed(CATALOGUE), Policies(error=TransientSubmitError("openIMIS GraphQL answered 503")))
    with pytest.raises(TransientSubmitError):
        checks.check(draft(), "070707081")


# ---------------------------------------------------------------------------- the GraphQL reader
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]
PAYER = PayerSettings(url="http://openimis.test/api/", password=SecretStr("reader"))


class FakeOpenImis:
    """openIMIS's login, CSRF token and GraphQL endpoint; each query's ``data`` from ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login/"):
            return httpx.Response(200, json={"token": "jwt", "exp": time.time() + 3600})
        body = json.loads(request.content)
        if "getCsrfToken" in body["query"]:
            return httpx.Response(200, json={"data": {"getCsrfToken": {"csrfToken": "csrf"}}})
        self.asked.append((body["query"], body["variables"]))
        return httpx.Response(200, json={"data": self.answer(body["query"], body["variables"])})

    def client(self) -> OpenImisGraphQL:
        return OpenImisGraphQL(PAYER, transport=httpx.MockTransport(self), health=DependencyHealth())


def _connection(nodes: list[dict[str, Any]], after: str | None = None) -> dict[str, Any]:
    """One page of a connection: more to come when ``after`` (its end cursor) is given."""
    return {
        "pageInfo": {"hasNextPage": after is not None, "endCursor": after},
        "edges": [{"node": n} for n in nodes],
    }


def _medical(code: str, uuid: str, price: str) -> dict[str, Any]:
    return {"code": code, "uuid": uuid, "name": code, "price": price, "validityTo": None}


def _line(category: str, code: str, price: str) -> dict[str, Any]:
    return {category: {"code": code, "uuid": code, "price": price, "validityTo": None}, "validityTo": None}


def _openimis(query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """A small openIMIS whose items and whose item pricelist's details each come in two pages."""
    after = variables.get("after")
    if "medicalServices(" in query:
        return {"medicalServices": _connection([_medical("A1", A1, "400")])}
    if "medicalItems(" in query:
        page = [_medical("0002", "u-0002", "5")] if after == "i1" else [_medical("0001", ASPIRIN, "10")]
        return {"medicalItems": _connection(page, None if after == "i1" else "i1")}
    if "healthFacilities(" in query:
        node = {
            "uuid": HOSPITAL.uuid,
            "code": "RAHOS001",
            "name": "Rapta District Hospital",
            "validityTo": None,
            "servicesPricelist": {"uuid": "sp-1", "name": "Services"},
            "itemsPricelist": {"uuid": "ip-1", "name": "Items"},
        }
        return {"healthFacilities": _connection([node])}
    if "servicesPricelists(" in query:
        pricelist = {"uuid": "sp-1", "name": "Services", "details": _connection([_line("service", "A1", "400")])}
        return {"servicesPricelists": {"edges": [{"node": pricelist}]}}
    if "itemsPricelists(" in query:
        assert variables["uuid"] == "ip-1"
        if after == "d1":
            details = _connection([_line("item", "0002", "4")])
        else:
            details = _connection([_line("item", "0001", "10")], "d1")
        return {"itemsPricelists": {"edges": [{"node": {"uuid": "ip-1", "name": "Items", "details": details}}]}}
    if "claimAdmins(" in query:
        return {"claimAdmins": _connection([{"code": "RHOS0011", "uuid": "598e43ca", "validityTo": None}])}
    if "diagnoses(" in query:
        return {"diagnoses": _connection([{"code": "A09", "validityTo": None}])}
    raise AssertionError(f"unexpected query {query}")


def test_the_catalogue_reads_every_page_of_a_list_and_of_a_pricelists_details() -> None:
    openimis = FakeOpenImis(_openimis)
    client = openimis.client()
    catalogue = client.catalogue()
    client.close()
    assert {code for _, code in catalogue.medical} == {"A1", "0001", "0002"}
    hospital = catalogue.facilities["RAHOS001"]
    assert hospital.items == {"0001": Decimal(10), "0002": Decimal(4)}
    assert hospital.services == {"A1": Decimal(400)}
    details = [v for q, v in openimis.asked if "itemsPricelists(" in q]
    assert details == [{"uuid": "ip-1", "after": None}, {"uuid": "ip-1", "after": "d1"}]


def test_an_unknown_pricelist_has_no_lines() -> None:
    def answer(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if "itemsPricelists(" in query:
            return {"itemsPricelists": {"edges": []}}
        return _openimis(query, variables)

    client = FakeOpenImis(answer).client()
    assert client.catalogue().facilities["RAHOS001"].items == {}
    client.close()


#: a self-signed CA of no use but to be told apart from the system CAs
PRIVATE_CA = """-----BEGIN CERTIFICATE-----
MIIBTzCB9aADAgECAhQyIOR6/oN7/oeuF3ii7iQASPTV4DAKBggqhkjOPQQDAjAd
MRswGQYDVQQDDBJjZGMtY2xhaW1zIHRlc3QgQ0EwHhcNMjYwMTAxMDAwMDAwWhcN
NDYwMTAxMDAwMDAwWjAdMRswGQYDVQQDDBJjZGMtY2xhaW1zIHRlc3QgQ0EwWTAT
BgcqhkjOPQIBBggqhkjOPQMBBwNCAASWVVVXuRr5Rh0CFF1oqaDoujd1qbymAWFa
d8sXCum0cq4Wck/cwjVvpkXrQMMg/4+FktFmspuDFyJUW5Mm1afooxMwETAPBgNV
HRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQCA1/OosZXvj6MaxLDk0Zal
Eie7fPhdkn/anU2sYaMJGgIhAPXzuPxbjFG8p+Cq1pXNsKYZPmFnaR2K7Jh0bFcQ
//oS
-----END CERTIFICATE-----
"""


def _verify_of(settings: PayerSettings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``verify`` the payer client gives httpx."""
    made: list[Any] = []
    real = httpx.Client

    def client(**kwargs: Any) -> httpx.Client:
        made.append(kwargs["verify"])
        return real(**kwargs)

    monkeypatch.setattr(httpx, "Client", client)
    OpenImisGraphQL(settings, health=DependencyHealth()).close()
    return made[0]


def test_a_payer_ca_bundle_is_trusted_besides_the_system_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(PRIVATE_CA)
    context = _verify_of(PAYER.model_copy(update={"ca_bundle": bundle}), monkeypatch)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    subjects = [cert["subject"] for cert in context.get_ca_certs()]
    assert ((("commonName", "cdc-claims test CA"),),) in subjects
    assert len(subjects) > 1  # the system CAs are still there: a public certificate is still trusted


def test_an_unreadable_payer_ca_bundle_stops_the_client_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"payer\.ca_bundle"):
        OpenImisGraphQL(PAYER.model_copy(update={"ca_bundle": tmp_path / "missing.pem"}))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"payer\.ca_bundle"):
        OpenImisGraphQL(PAYER.model_copy(update={"ca_bundle": tmp_path / "junk.pem"}))


def test_payer_tls_verification_off_is_off_even_with_a_bundle_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text(PRIVATE_CA)
    with capture_logs() as logs:
        verify = _verify_of(PAYER.model_copy(update={"verify_tls": False, "ca_bundle": bundle}), monkeypatch)
    assert verify is False
    assert {"event": "tls_verification_disabled", "log_level": "warning", "setting": "payer.verify_tls"} in logs


# ---------------------------------------------------------------------------- caches
def test_policies_are_remembered_for_the_ttl_and_a_failure_is_not() -> None:
    now = [0.0]
    source = Policies(ACTIVE)
    cache = PolicyCache(source.policies, ttl=300, clock=lambda: now[0])
    assert cache.policies("A") == (ACTIVE,) and cache.policies("A") == (ACTIVE,)
    assert source.asked == ["A"]
    now[0] = 301.0
    source.found = [EXPIRED]
    assert cache.policies("A") == (EXPIRED,) and source.asked == ["A", "A"]
    source.error = TransientSubmitError("down")
    now[0] = 602.0  # past the ttl of what was read at 301
    with pytest.raises(TransientSubmitError):
        cache.policies("A")
    source.error = None
    assert cache.policies("A") == (EXPIRED,)
    assert source.asked == ["A", "A", "A", "A"]  # the failure left nothing behind: asked again


def test_a_failed_catalogue_read_keeps_the_last_good_copy() -> None:
    reads: list[Catalogue | Exception] = [CATALOGUE, TransientSubmitError("down")]

    def read() -> Catalogue:
        item = reads.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    cache = CatalogueCache(read, refresh_seconds=900)
    assert cache.current() is None
    assert cache.refresh() and cache.current() is CATALOGUE
    assert not cache.refresh() and cache.current() is CATALOGUE


# ---------------------------------------------------------------------------- the service
class Holding:
    def __init__(self, reason: str | None) -> None:
        self.reason = reason
        self.seen: list[tuple[str, str | None]] = []

    def check(self, d: ClaimDraft, insurance_number: str | None) -> Any:
        from cdc_claims.errors import NotClaimable

        self.seen.append((d.code, insurance_number))
        return NotClaimable(self.reason, "policy BCUL0001 expired") if self.reason else None


def test_a_claim_the_payer_would_refuse_is_held_and_never_posted_then_goes_out_once_fixed() -> None:
    w = World()
    payer = Holding("no_active_policy")
    result = service(w, payer=payer).process(UNIT)
    assert result.outcome == "held" and result.reason == "no_active_policy"
    assert w.posts == [] and payer.seen == [("RAHOS001-enc-1", "070707081")]
    row = w.ledger[("encounter", "enc-1")]
    assert row.state is State.HELD and row.detail == "policy BCUL0001 expired"
    assert w.held[-1]["reason"] == "no_active_policy"
    payer.reason = None  # the policy was renewed in openIMIS
    assert service(w, payer=payer).process(UNIT).outcome == "submitted"
    assert len(w.posts) == 1


def test_a_post_in_doubt_is_completed_whatever_the_payer_says_now() -> None:
    from cdc_claims.ledger.model import LedgerEntry

    w = World()
    w.in_openimis.add("RAHOS001-enc-1")
    w.ledger[("encounter", "enc-1")] = LedgerEntry("encounter", "enc-1", State.SUBMITTING, "RAHOS001-enc-1", 0, "h1")
    payer = Holding("no_active_policy")
    result = service(w, payer=payer).process(UNIT)
    assert result.outcome == "replayed" and payer.seen == []
    assert w.ledger[("encounter", "enc-1")].state is State.CHECKED


def test_a_supplement_off_the_pricelist_is_held_in_the_history_and_not_sent() -> None:
    from test_claim_service import CONSULT, _line

    w = World(lines=(CONSULT,))
    payer = Holding(None)
    service(w, payer=payer).process(UNIT)
    w.lines, w.content = (CONSULT, _line("lab-1", "I999", 1, 650)), "h2"
    payer.reason = "not_in_pricelist"
    service(w, payer=payer).process(UNIT)
    assert [p["code"] for p in w.posts] == ["RAHOS001-enc-1"]
    supplement = w.claims["RAHOS001-enc-1-S1"]
    assert supplement.state is State.HELD and supplement.reason == "not_in_pricelist"


def test_the_service_takes_no_payer_by_default() -> None:
    w = World()
    assert isinstance(service(w), ClaimService) and service(w).process(UNIT).outcome == "submitted"


# ---------------------------------------------------------------------------- check-mapping --openimis
def _mapping(tmp_path: Path, **overrides: Any) -> Any:
    doc: dict[str, Any] = {
        "openimis": {"claim_admin_default": {"code": "RHOS0011", "uuid": "598e43ca-9977-4f4b-a678-992528ce3454"}},
        "insurance_number": {"patient_identifier_type": "ExternalId"},
        "facilities": {"8d6c993e-c2cc-11de-8d13-0010c6dffd0f": {"code": "RAHOS001"}},
        "drugs": {"6f0242cf-1cf2-4c0d-a522-e8628f0cd988": {"code": "0001", "price": 10, "uuid": ASPIRIN}},
        "concepts": {"f2af3cd5-634f-4b17-97c5-d5cd52ee2867": {"category": "service", "code": "A1", "price": 400}},
    }
    doc.update(overrides)
    return parse_mapping(doc, base_dir=tmp_path)


def test_a_mapping_that_agrees_with_openimis_has_no_finding(tmp_path: Path) -> None:
    assert compare(_mapping(tmp_path), CATALOGUE) == []


def test_every_disagreement_is_reported_with_its_fix(tmp_path: Path) -> None:
    mapping = _mapping(
        tmp_path,
        facilities={
            "8d6c993e-c2cc-11de-8d13-0010c6dffd0f": {
                "code": "RAHOS001",
                "uuid": "d8a25f21-f36a-4d4d-9e58-000000000000",
            },
            "c1e42932-3f10-11e4-adec-0800271c1b75": {"code": "GONE001"},
        },
        claim_admins={"c1e42932-3f10-11e4-adec-0800271c1b75": {"code": "NOBODY"}},
        drugs={
            "6f0242cf-1cf2-4c0d-a522-e8628f0cd988": {"code": "0001", "price": 12, "uuid": A1},
            "5d3aa389-a44e-410d-9525-30af971b096c": {"code": "A1", "price": 400},
        },
        concepts={"f2af3cd5-634f-4b17-97c5-d5cd52ee2867": {"category": "service", "code": "A1", "price": 300}},
        icd10={"overrides": {"de617543-4e14-11e4-8a57-0800271c1b75": "E059"}},
    )
    found = {(f.severity, f.uuid, f.detail) for f in compare(mapping, CATALOGUE)}
    assert (
        "blocking",
        "facilities.8d6c993e-c2cc-11de-8d13-0010c6dffd0f",
        f"uuid is d8a25f21-f36a-4d4d-9e58-000000000000: set it to {HOSPITAL.uuid}",
    ) in found
    assert (
        "blocking",
        "facilities.c1e42932-3f10-11e4-adec-0800271c1b75",
        "no such health facility in openIMIS",
    ) in found
    assert ("blocking", "claim_admins.c1e42932-3f10-11e4-adec-0800271c1b75", "no such claim admin in openIMIS") in found
    drug = "drugs.6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
    assert ("blocking", drug, f"uuid is {A1}: set it to {ASPIRIN}") in found
    assert ("blocking", drug, "price 12 above RAHOS001's pricelist 10: set price: 10") in found
    hint = "no such medical item in openIMIS: it is an openIMIS service, set category: service"
    assert ("blocking", "drugs.5d3aa389-a44e-410d-9525-30af971b096c", hint) in found
    concept = "concepts.f2af3cd5-634f-4b17-97c5-d5cd52ee2867"
    assert ("info", concept, "price 300 below RAHOS001's pricelist 400: openIMIS pays what is asked") in found
    assert ("blocking", "icd10.overrides.de617543-4e14-11e4-8a57-0800271c1b75", "not in openIMIS's ICD list") in found
    assert len(found) == 8


def test_an_entry_off_one_mapped_facility_pricelist_is_named_for_that_facility(tmp_path: Path) -> None:
    mapping = _mapping(tmp_path, facilities={"8d6c993e-c2cc-11de-8d13-0010c6dffd0f": {"code": "RAHC001"}})
    details = sorted(f.detail for f in compare(mapping, CATALOGUE))
    assert details == [
        "not in RAHC001's item pricelist (no pricelist)",
        "price 400 above RAHC001's pricelist 380: set price: 380",
    ]


# ---------------------------------------------------------------------------- the insuree uuid cache
INSUREE_070707081 = "7b00e6ec-e0f5-4d07-a8e0-ec00a4160e73"
INSUREE_070707055 = "4d908777-50ff-44c3-81f2-48f27517c798"
#: what openIMIS's ``insurees(chfId:)`` answers, CHF id -> uuids of its current insurees
OPENIMIS_INSUREES = {"070707081": (INSUREE_070707081,), "070707055": (INSUREE_070707055,), "999999999": ()}


def test_an_insuree_cache_that_agrees_with_openimis_has_no_finding(tmp_path: Path) -> None:
    mapping = _mapping(
        tmp_path,
        openimis={
            "claim_admin_default": {"code": "RHOS0011"},
            "insuree_uuids": {"070707081": INSUREE_070707081, "070707055": INSUREE_070707055},
        },
    )
    assert insuree_findings(mapping, OPENIMIS_INSUREES) == []
    assert insuree_findings(_mapping(tmp_path), {}) == []  # no cache, nothing to compare


def test_an_unknown_chf_id_and_a_wrong_insuree_uuid_block_with_their_fix(tmp_path: Path) -> None:
    mapping = _mapping(
        tmp_path,
        openimis={
            "claim_admin_default": {"code": "RHOS0011"},
            "insuree_uuids": {"070707081": INSUREE_070707055, "999999999": INSUREE_070707081},
        },
    )
    found = {(f.severity, f.topic, f.uuid, f.name, f.detail) for f in insuree_findings(mapping, OPENIMIS_INSUREES)}
    assert found == {
        (
            "blocking",
            INSUREE,
            "openimis.insuree_uuids.070707081",
            "070707081",
            f"uuid is {INSUREE_070707055}: set it to {INSUREE_070707081}",
        ),
        (
            "blocking",
            INSUREE,
            "openimis.insuree_uuids.999999999",
            "999999999",
            "no such insuree in openIMIS: remove the entry or enrol the insuree",
        ),
    }


def test_the_insuree_look_up_asks_openimis_by_chf_id_in_every_district() -> None:
    def answer(query: str, variables: dict[str, Any]) -> dict[str, Any]:
        assert "insurees(chfId: $chfId, ignoreLocation: true)" in query
        chf_id = variables["chfId"]
        nodes = [{"uuid": INSUREE_070707081, "chfId": "070707081"}] if chf_id == "070707081" else []
        if chf_id == "ignored":  # a filter the server did not apply: all insurees, none of them this one
            nodes = [{"uuid": INSUREE_070707055, "chfId": "070707055"}]
        return {"insurees": {"edges": [{"node": n} for n in nodes]}}

    openimis = FakeOpenImis(answer)
    client = openimis.client()
    found = client.insuree_uuids(["070707081", "999999999", "ignored"])
    client.close()
    assert found == {"070707081": (INSUREE_070707081,), "999999999": (), "ignored": ()}
    assert [v for _, v in openimis.asked] == [{"chfId": "070707081"}, {"chfId": "999999999"}, {"chfId": "ignored"}]


def test_an_error_answer_for_an_insuree_names_its_chf_id() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/login/"):
            return httpx.Response(200, json={"token": "jwt", "exp": time.time() + 3600})
        if "getCsrfToken" in json.loads(request.content)["query"]:
            return httpx.Response(200, json={"data": {"getCsrfToken": {"csrfToken": "csrf"}}})
        return httpx.Response(200, json={"errors": [{"message": "Invalid insuree number length 13"}]})

    client = OpenImisGraphQL(PAYER, transport=httpx.MockTransport(refuse), health=DependencyHealth())
    with pytest.raises(UpstreamMisconfigured, match=r"insuree 0707070810000: .*Invalid insuree number"):
        client.insuree_uuids(["0707070810000"])
    client.close()
