"""What every desk response gets: security headers, and one log line without the query string.

URLs of the desk carry patient identifiers (``/?q=GAN200123``) and patient pages, so neither
may reach a log or another site: the request log (uvicorn's access log stays off) records the
method, the route *template* (``/units/{kind}/{uuid}``), the status and the duration, and
``Referrer-Policy: no-referrer`` keeps the address from leaving with a click. The
Content-Security-Policy allows nothing but this site's own stylesheet and forms: the desk runs
no script at all, so an injected one could not run either.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdc_claims.log import get_logger

log = get_logger("cdc_claims.desk")

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def route_template(scope: MutableMapping[str, Any]) -> str:
    """The matched route's path template, never the concrete path (it may hold an identifier)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "(no route)"


class DeskHttp:
    """Pure ASGI middleware: headers on every response, a ``desk_request`` event per request.

    ``no_store`` paths (everything but the stylesheet) are marked ``Cache-Control: no-store``:
    a shared hospital computer must not keep patient pages in its browser cache.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not str(scope.get("path", "")).startswith("/static/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                "desk_request",
                method=scope.get("method"),
                route=route_template(scope),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
