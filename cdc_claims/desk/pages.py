"""The desk's pages: the list, its CSV export, one unit, and the summary. All read-only.

Each handler asks the store off the event loop and renders a template; a store that cannot
answer (the database is down) gives a 503 page that says to try again, never a stack trace.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import cast
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from cdc_claims.desk.chart import stacked_bars
from cdc_claims.desk.export import to_csv
from cdc_claims.desk.filters import from_query, group_options
from cdc_claims.desk.model import DeskReads, Summary, UnitDetail
from cdc_claims.desk.summary import clamp_range
from cdc_claims.desk.web import Web
from cdc_claims.desk.words import held_words, state_words
from cdc_claims.errors import CdcClaimsError
from cdc_claims.lifecycle import NEEDS_ACTION_STATES
from cdc_claims.settings import UnitKind

#: the most rows one CSV export holds (a month of a busy hospital's encounters)
EXPORT_LIMIT = 20_000
#: a summary of at most this many days is charted per day, a longer one per week
CHART_DAYS = 62
SUMMARY_DEFAULT_DAYS = 30
_KINDS = ("encounter", "visit")


class Pages:
    def __init__(self, web: Web, store: DeskReads, *, page_size: int) -> None:
        self.web = web
        self.store = store
        self.page_size = page_size

    def _unavailable(self, request: Request) -> Response:
        why = "The database did not answer. Try again in a minute."
        return self.web.error(request, 503, "Database not answering", why)

    async def units(self, request: Request) -> Response:
        if self.web.user(request) is None:
            return self.web.to_login(request)
        filters = from_query(request.query_params)
        try:
            page = await self.web.blocking(self.store.units, filters, page_size=self.page_size)
            facilities = await self.web.blocking(self.store.facilities)
            visit_types = await self.web.blocking(self.store.visit_types)
        except CdcClaimsError:
            return self._unavailable(request)
        context = {
            "title": "Claims",
            "filters": filters,
            "page": page,
            "groups": group_options(),
            "facilities": facilities,
            "visit_types": visit_types,
            "export_query": urlencode(filters.to_query(page=1)),
            "previous_query": urlencode(filters.to_query(page=page.page - 1)),
            "next_query": urlencode(filters.to_query(page=page.page + 1)),
        }
        return self.web.render(request, "list.html", context, nav="list")

    async def export(self, request: Request) -> Response:
        if self.web.user(request) is None:
            return self.web.to_login(request)
        filters = from_query(request.query_params).first_page()
        try:
            page = await self.web.blocking(self.store.units, filters, page_size=EXPORT_LIMIT)
        except CdcClaimsError:
            return self._unavailable(request)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M")
        return Response(
            to_csv(page.rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="claims-{stamp}.csv"'},
        )

    async def unit(self, request: Request) -> Response:
        if self.web.user(request) is None:
            return self.web.to_login(request)
        kind, uuid = request.path_params["kind"], request.path_params["uuid"]
        if kind not in _KINDS:
            return self.web.error(request, 404, "Not found", "There is no such page.")
        try:
            detail = await self.web.blocking(self.store.unit, cast(UnitKind, kind), uuid)
        except CdcClaimsError:
            return self._unavailable(request)
        if detail is None:
            return self.web.error(request, 404, "Not found", f"No claim is known for {kind} {uuid}.")
        return self.web.render(request, "detail.html", detail_context(detail), nav="list")

    async def summary(self, request: Request) -> Response:
        if self.web.user(request) is None:
            return self.web.to_login(request)
        today = datetime.now(UTC).date()
        date_from, date_to = clamp_range(
            _day(request.query_params.get("from")) or today - timedelta(days=SUMMARY_DEFAULT_DAYS - 1),
            _day(request.query_params.get("to")) or today,
        )
        try:
            summary = await self.web.blocking(self.store.summary, date_from, date_to)
        except CdcClaimsError:
            return self._unavailable(request)
        per_day = len(summary.days) <= CHART_DAYS
        context = {
            "title": "Summary",
            "s": summary,
            "chart": chart_of(summary, per_day=per_day),
            "chart_unit": "day" if per_day else "week",
        }
        return self.web.render(request, "summary.html", context, nav="summary")


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def chart_of(summary: Summary, *, per_day: bool) -> Markup:
    """The summary's chart; :func:`stacked_bars` escapes every text it draws."""
    buckets = summary.days if per_day else summary.weeks
    svg = stacked_bars(
        f"Claims sent per {'day' if per_day else 'week'}, {summary.date_from} to {summary.date_to}",
        [b.label if per_day else b.start.isoformat() for b in buckets],
        [b.counts for b in buckets],
        summary.statuses,
        element_id="claims-chart",
    )
    return Markup(svg)  # noqa: S704 - built from escaped parts only (cdc_claims.desk.chart)


def detail_context(detail: UnitDetail) -> dict[str, object]:
    entry = detail.entry
    return {
        "title": f"{entry.unit_kind.capitalize()} {entry.unit_uuid[:8]}",
        "d": detail,
        "state_text": state_words(entry.state),
        "held": held_words(entry.reason, entry.detail, detail.names),
        "can_rerun": entry.state in NEEDS_ACTION_STATES,
        "open_claims": [c for c in detail.claims if c.open],
        "withdrawals": [c for c in detail.claims if c.withdrawals],
    }
