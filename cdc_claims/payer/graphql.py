"""Read openIMIS's master data and policies over its GraphQL API (httpx, sync).

Why GraphQL and not FHIR: openIMIS 1.10's FHIR API has no pricelists at all, its Medication read
fails for an API user ("Converter init need a valid user"), Practitioner is the enrolment
officer, not the claim admin, ``Coverage?patient=`` ignores the patient, and
CoverageEligibilityRequest answers 500 (``openimis/CONTRACT.md`` §7). GraphQL has all of it:
``healthFacilities`` (with each facility's two pricelists), ``servicesPricelists`` /
``itemsPricelists`` with their lines, ``medicalServices`` / ``medicalItems``, ``claimAdmins``,
``diagnoses``, ``policiesByInsuree`` and, for ``check-mapping --openimis``, ``insurees``.

Authentication, as openIMIS's own web app does it: a JWT from the FHIR login
(``POST api_fhir_r4/login/``, re-done on expiry or a 401) and, because some queries check it
unless the server runs in ``dev`` mode, a CSRF token bound to the session cookie
(``mutation { getCsrfToken }``, sent back as ``X-CSRFToken``). This is a read-only account of
openIMIS (``PayerSettings.username``): no claim ever goes this way, claims go through openHIM.

Errors: network errors, timeouts and 5xx are :class:`TransientSubmitError`, refused credentials
:class:`AuthenticationFailed`, a GraphQL ``errors`` answer :class:`UpstreamMisconfigured` (all
retriable: an operator fixes them and the next try works). Each failure marks the
``openimis-graphql`` dependency failing (``/readyz``, ``cdc_claims_upstream_failing``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from cdc_claims.errors import AuthenticationFailed, ConfigError, TransientSubmitError, UpstreamMisconfigured
from cdc_claims.health import HEALTH, DependencyHealth
from cdc_claims.log import get_logger
from cdc_claims.metrics import PAYER_LOOKUP_LATENCY
from cdc_claims.payer.catalogue import (
    Catalogue,
    Category,
    Facility,
    Medical,
    Policy,
    parse_medical,
    parse_policy,
    parse_pricelist,
)
from cdc_claims.settings import PayerSettings
from cdc_claims.tls import server_verification

log = get_logger(__name__)

DEPENDENCY = "openimis-graphql"
PAGE = 100
#: re-login this long before the JWT's own expiry
EXPIRY_MARGIN = 60.0

_FACILITIES = """query($after: String) { healthFacilities(first: %d, after: $after) {
  pageInfo { hasNextPage endCursor }
  edges { node { uuid code name validityTo servicesPricelist { uuid name } itemsPricelist { uuid name } } } } }"""
_PRICELIST = """query($uuid: String, $after: String) { %s(uuid: $uuid) { edges { node { uuid name
  details(first: %d, after: $after) { pageInfo { hasNextPage endCursor }
    edges { node { %s { code uuid price validityTo } priceOverrule validityTo } } } } } } }"""
_MEDICAL = """query($after: String) { %s(first: %d, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { code uuid name price validityTo } } } }"""
_CLAIM_ADMINS = """query($after: String) { claimAdmins(first: %d, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { code uuid validityTo } } } }"""
_DIAGNOSES = """query($after: String) { diagnoses(first: %d, after: $after) {
  pageInfo { hasNextPage endCursor } edges { node { code validityTo } } } }"""
_POLICIES = """query($chfId: String!) { policiesByInsuree(chfId: $chfId) {
  edges { node { productCode status startDate effectiveDate expiryDate } } } }"""
#: ``ignoreLocation``: a reader account bound to some districts would see no insuree outside them
_INSUREES = """query($chfId: String!) { insurees(chfId: $chfId, ignoreLocation: true) {
  edges { node { uuid chfId } } } }"""


class OpenImisGraphQL:
    """One logged-in session with openIMIS's GraphQL API; thread-safe (one request at a time)."""

    def __init__(
        self,
        settings: PayerSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        health: DependencyHealth = HEALTH,
    ) -> None:
        if not settings.url:
            raise ConfigError(
                "payer.url is not set (CDC_CLAIMS_PAYER__URL): openIMIS's API root, e.g. https://openimis/api/"
            )
        if settings.password is None or not settings.password.get_secret_value():
            raise ConfigError("payer.url is set but CDC_CLAIMS_PAYER__PASSWORD is not (no default)")
        root = settings.url if settings.url.endswith("/") else settings.url + "/"
        self._graphql_url = root + "graphql"
        self._login_url = root + "api_fhir_r4/login/"
        self._credentials = {"username": settings.username, "password": settings.password.get_secret_value()}
        verify = server_verification(settings.verify_tls, settings.ca_bundle, "payer")
        self._http = httpx.Client(timeout=settings.timeout_seconds, verify=verify, transport=transport)
        self._health = health
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._csrf: str | None = None

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ what the sidecar reads
    def catalogue(self, facility_codes: Iterable[str] | None = None) -> Catalogue:
        """Facilities (all, or those named) with their pricelists, items, services, admins, ICD codes."""
        wanted = set(facility_codes) if facility_codes is not None else None
        started = time.perf_counter()
        medical: dict[tuple[Category, str], Medical] = {}
        for category, field in (("service", "medicalServices"), ("item", "medicalItems")):
            for node in self._pages(_MEDICAL % (field, PAGE), (field,)):
                if not node.get("validityTo"):
                    entry = parse_medical(category, node)  # type: ignore[arg-type]
                    medical[(entry.category, entry.code)] = entry
        lists: dict[tuple[str, str], dict[str, Any]] = {}
        facilities: dict[str, Facility] = {}
        for node in self._pages(_FACILITIES % PAGE, ("healthFacilities",)):
            code = str(node["code"])
            if node.get("validityTo") or (wanted is not None and code not in wanted):
                continue
            services = self._pricelist(node.get("servicesPricelist"), "service", lists)
            items = self._pricelist(node.get("itemsPricelist"), "item", lists)
            facilities[code] = Facility(
                code=code,
                uuid=str(node["uuid"]),
                name=str(node.get("name") or ""),
                service_pricelist=(node.get("servicesPricelist") or {}).get("name"),
                item_pricelist=(node.get("itemsPricelist") or {}).get("name"),
                services=services,
                items=items,
            )
        admins = {
            str(n["code"]): str(n["uuid"])
            for n in self._pages(_CLAIM_ADMINS % PAGE, ("claimAdmins",))
            if not n.get("validityTo")
        }
        icd = frozenset(
            str(n["code"]) for n in self._pages(_DIAGNOSES % PAGE, ("diagnoses",)) if not n.get("validityTo")
        )
        PAYER_LOOKUP_LATENCY.labels(what="catalogue").observe(time.perf_counter() - started)
        return Catalogue(facilities, medical, admins, icd, read_at=time.time())

    def policies(self, insurance_number: str) -> list[Policy]:
        """The insuree's policies, as ``policiesByInsuree`` lists them (empty: unknown insuree)."""
        started = time.perf_counter()
        data = self.query(_POLICIES, {"chfId": insurance_number})
        PAYER_LOOKUP_LATENCY.labels(what="policies").observe(time.perf_counter() - started)
        edges = ((data.get("policiesByInsuree") or {}).get("edges")) or []
        return [parse_policy(edge["node"]) for edge in edges]

    def insuree_uuids(self, chf_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Each CHF id's current insuree uuid(s) in openIMIS (empty: no such insuree), one
        ``insurees(chfId:)`` query per CHF id; for ``check-mapping --openimis``, never on a
        claim's path.

        Only nodes whose ``chfId`` is the one asked count: a server that ignored the filter
        would answer with the first page of all insurees, which must not read as a match. An
        error answer names the CHF id: openIMIS refuses a number its own rules reject (length,
        check digit) with an error, not with an empty list.
        """
        out: dict[str, tuple[str, ...]] = {}
        for chf_id in chf_ids:
            try:
                data = self.query(_INSUREES, {"chfId": chf_id})
            except UpstreamMisconfigured as err:
                raise UpstreamMisconfigured(f"insuree {chf_id}: {err}") from err
            edges = (data.get("insurees") or {}).get("edges") or []
            nodes = [edge.get("node") or {} for edge in edges]
            out[chf_id] = tuple(str(n["uuid"]) for n in nodes if n.get("chfId") == chf_id and n.get("uuid"))
        return out

    # ------------------------------------------------------------------ plumbing
    def _pricelist(
        self, ref: dict[str, Any] | None, category: Category, seen: dict[tuple[str, str], dict[str, Any]]
    ) -> dict[str, Any]:
        if not ref or not ref.get("uuid"):
            return {}
        key = (category, str(ref["uuid"]))
        if key not in seen:
            field = "itemsPricelists" if category == "item" else "servicesPricelists"
            where = (field, "edges", 0, "node", "details")
            details = list(self._pages(_PRICELIST % (field, PAGE, category), where, {"uuid": key[1]}))
            seen[key] = parse_pricelist(details, category)
        return seen[key]

    def _pages(
        self, query: str, where: tuple[str | int, ...], variables: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every node of the connection at ``where`` in each answer, page after page.

        One loop for all the paged reads: a top-level list (``("claimAdmins",)``) and a
        pricelist's ``details``, which sit inside the one pricelist the query names
        (``("itemsPricelists", "edges", 0, "node", "details")``).
        """
        after: str | None = None
        while True:
            conn = _at(self.query(query, {**(variables or {}), "after": after}), where)
            for edge in conn.get("edges") or []:
                yield edge["node"]
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            after = info.get("endCursor")

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one GraphQL query; its ``data``. Logs in again once on a 401 or an expired token."""
        with self._lock:
            for attempt in (1, 2):
                headers = self._session_headers()
                try:
                    response = self._http.post(
                        self._graphql_url, json={"query": query, "variables": variables or {}}, headers=headers
                    )
                except httpx.HTTPError as err:
                    raise self._failed(
                        "network", TransientSubmitError(f"openIMIS GraphQL: {type(err).__name__}")
                    ) from err
                if response.status_code == 401 and attempt == 1:
                    self._token = None
                    continue
                doc = self._answer(response)
                errors = doc.get("errors")
                if errors:
                    text = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict))[:300]
                    if attempt == 1 and ("csrf" in text.lower() or "unauthorized" in text.lower()):
                        self._token, self._csrf = None, None  # a stale session: start it again, once
                        continue
                    raise self._failed("graphql", UpstreamMisconfigured(f"openIMIS GraphQL refused a query: {text}"))
                self._health.succeeded(DEPENDENCY)
                data = doc.get("data")
                return data if isinstance(data, dict) else {}
        raise self._failed("auth", AuthenticationFailed("openIMIS GraphQL refused the session twice"))

    def _session_headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._expires_at - EXPIRY_MARGIN:
            self._login()
        headers = {"Authorization": f"Bearer {self._token}"}
        if self._csrf is None:
            self._http.cookies.clear()
            response = self._http.post(
                self._graphql_url, json={"query": "mutation { getCsrfToken { csrfToken } }"}, headers=headers
            )
            doc = self._answer(response)
            token = ((doc.get("data") or {}).get("getCsrfToken") or {}).get("csrfToken")
            if not token:
                raise self._failed("auth", AuthenticationFailed("openIMIS GraphQL gave no CSRF token"))
            self._csrf = str(token)
        headers["X-CSRFToken"] = self._csrf
        return headers

    def _login(self) -> None:
        try:
            response = self._http.post(self._login_url, json=self._credentials)
        except httpx.HTTPError as err:
            raise self._failed("network", TransientSubmitError(f"openIMIS login: {type(err).__name__}")) from err
        if response.status_code in (400, 401, 403):
            raise self._failed(
                "auth", AuthenticationFailed(f"openIMIS refused the payer account ({response.status_code})")
            )
        doc = self._answer(response)
        token = doc.get("token")
        if not token:
            raise self._failed("auth", AuthenticationFailed("openIMIS login answered without a token"))
        exp = doc.get("exp")
        lifetime = float(exp) - time.time() if isinstance(exp, int | float) else 3600.0
        self._token, self._csrf = str(token), None
        self._expires_at = time.monotonic() + max(lifetime, 0.0)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 500:
            raise self._failed("5xx", TransientSubmitError(f"openIMIS GraphQL answered {response.status_code}"))
        if response.status_code in (401, 403):
            raise self._failed("auth", AuthenticationFailed(f"openIMIS GraphQL answered {response.status_code}"))
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise self._failed(
                "not_json", UpstreamMisconfigured(f"openIMIS GraphQL answered {response.status_code} without JSON")
            )
        return doc

    def _failed(self, cause: str, err: Exception) -> Exception:
        self._health.failed(DEPENDENCY, cause)
        log.warning("openimis_graphql_failed", cause=cause, error=str(err)[:300])
        return err


def _at(data: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
    """The object at ``path`` (keys and list indexes) in a GraphQL answer; empty where anything
    on the way is missing or null (no such pricelist, a null connection)."""
    for step in path:
        if isinstance(step, int):
            data = data[step] if isinstance(data, list) and len(data) > step else None
        else:
            data = data.get(step) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}
