"""What every desk page shares: the templates, who is signed in, CSRF, flash messages.

Templates are Jinja2 with autoescaping on for everything (``select_autoescape`` would leave a
template named otherwise unescaped) and ``StrictUndefined`` (a misspelt variable is an error in
the tests, not an empty cell on a clerk's screen). The only markup a template receives
unescaped is the chart, which :mod:`cdc_claims.desk.chart` escapes itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cdc_claims.desk.actions import ActionResult
from cdc_claims.desk.auth import AuthConfig, csrf_ok, csrf_token, signed_in
from cdc_claims.desk.filters import FAILED_GROUP_REASONS, HELD_GROUP_REASONS
from cdc_claims.desk.words import REASON_WORDS, rejection_words, state_words

T = TypeVar("T")
_FLASH = "flash"
_SUFFIX = re.compile(r"-([SR]\d+)$")


def money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def qty(value: Decimal | str | None) -> str:
    """``10.0`` -> ``10``, ``2.50`` -> ``2.5``: quantities as a clerk writes them (text kept as is)."""
    if value is None:
        return ""
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except ArithmeticError:
        return str(value)
    return f"{number.normalize():f}"


def when(value: datetime | None, *, seconds: bool = False) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def short(uuid: str | None) -> str:
    return (uuid or "")[:8]


def claim_suffix(code: str) -> str:
    """``…-S1`` -> ``S1`` (a supplement), ``…-R1`` -> ``R1`` (a replacement), else ``original``."""
    found = _SUFFIX.search(code)
    return found.group(1) if found else "original"


def reason_words(reason: str | None) -> str:
    return REASON_WORDS[reason][0] if reason is not None and reason in REASON_WORDS else ""


def group_of(reason: str) -> str:
    """The list filter that shows the units held or failed for ``reason``."""
    if reason in HELD_GROUP_REASONS:
        return f"held:{reason}"
    if reason in FAILED_GROUP_REASONS:
        return f"failed:{reason}"
    return "needs_action"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cdc_claims.desk", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, qty=qty, when=when, short=short, claim_suffix=claim_suffix)
    env.globals.update(
        state_words=state_words,
        reason_words=reason_words,
        rejection_words=rejection_words,
        group_of=group_of,
    )
    return env


class Web:
    """Rendering and the session rules, shared by the page, login and button handlers."""

    def __init__(self, auth: AuthConfig, env: jinja2.Environment | None = None) -> None:
        self.auth = auth
        self.env = env or environment()

    def user(self, request: Request) -> str | None:
        return signed_in(request.session, max_age=self.auth.session_seconds)

    def render(
        self, request: Request, template: str, context: Mapping[str, Any], *, status: int = 200, nav: str = ""
    ) -> HTMLResponse:
        base = {
            "user": self.user(request),
            "csrf": csrf_token(request.session),
            "flash": request.session.pop(_FLASH, None),
            "nav": nav,
            "title": "Claims desk",
        }
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status_code=status)

    def error(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        return self.render(request, "error.html", {"title": title, "message": message}, status=status)

    @staticmethod
    def to_login(request: Request) -> RedirectResponse:
        target = request.url.path if request.method == "GET" else "/"
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    @staticmethod
    async def form(request: Request) -> dict[str, Any]:
        async with request.form(max_files=0, max_fields=500) as form:
            return {key: form.getlist(key) if key == "line" else form.get(key) for key in form}

    def forbidden(self, request: Request) -> HTMLResponse:
        why = "This form has expired or did not come from the desk. Go back, reload the page and try again."
        return self.error(request, 403, "Refused", why)

    @staticmethod
    def csrf_ok(request: Request, form: Mapping[str, Any]) -> bool:
        return csrf_ok(request.session, form.get("csrf_token"))

    @staticmethod
    def flash(request: Request, result: ActionResult) -> None:
        request.session[_FLASH] = {"ok": result.ok, "message": result.message[:500]}

    @staticmethod
    async def blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store or action call (pymysql, httpx: blocking) off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


def redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303)
