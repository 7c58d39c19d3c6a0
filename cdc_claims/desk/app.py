"""The claims desk as a Starlette application: routes, sessions, static files, probes.

==========================================  ===================================================
``GET  /login``, ``POST /login``            local users form (CSRF-protected, throttled)
``GET  /auth/oidc``, ``GET /auth/callback``  OIDC sign-in (when an issuer is configured)
``POST /logout``
``GET  /``                                  the list, with filters and pages
``GET  /export.csv``                        the list (same filters) as CSV
``GET  /units/{kind}/{uuid}``               one encounter or visit: claims, lines, what to do
``POST /units/{kind}/{uuid}/rerun``         re-run a held or failed unit
``POST /units/{kind}/{uuid}/resubmit``      rejected lines as a replacement claim
``POST /claims/{code}/refresh``             ask openIMIS now
``POST /claims/{code}/withdrawal-handled``  withdrawals done in openIMIS
``GET  /summary``                           per day / week by status, rejection reasons, chart
``GET  /healthz``, ``GET /readyz``          liveness; readiness = the database answers
``/static/desk.css``                        the only static file
==========================================  ===================================================

Everything but ``/login``, ``/auth/*``, the probes and the stylesheet needs a session.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cdc_claims.desk.actions import DeskActions
from cdc_claims.desk.auth import AuthConfig, Throttle
from cdc_claims.desk.buttons import Buttons
from cdc_claims.desk.http import DeskHttp
from cdc_claims.desk.login import Login
from cdc_claims.desk.model import DeskReads
from cdc_claims.desk.pages import Pages
from cdc_claims.desk.web import Web
from cdc_claims.errors import CdcClaimsError
from cdc_claims.settings import DeskSettings

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "cdc_desk"


def readiness(store: DeskReads) -> bool | str:
    """True when the database answers ``SELECT 1``; else a short reason (never the error text)."""
    try:
        store.ping()
    except CdcClaimsError:
        return "database"
    return True


def create_app(
    store: DeskReads,
    actions: DeskActions,
    auth_config: AuthConfig,
    settings: DeskSettings,
    *,
    throttle: Throttle | None = None,
) -> Starlette:
    web = Web(auth_config)
    pages = Pages(web, store, page_size=settings.page_size)
    buttons = Buttons(web, store, actions)
    login = Login(web, throttle)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ready = await web.blocking(readiness, store)
        if ready is True:
            return PlainTextResponse("ready\n")
        return PlainTextResponse(f"not ready: {ready}\n", status_code=503)

    async def not_found(request: Request, exc: Exception) -> Response:
        return web.error(request, 404, "Not found", "There is no such page.")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("method not allowed\n", status_code=405)

    routes = [
        Route("/login", login.show, methods=["GET"]),
        Route("/login", login.submit, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/auth/oidc", login.oidc_start, methods=["GET"]),
        Route("/auth/callback", login.oidc_callback, methods=["GET"], name="auth_callback"),
        Route("/", pages.units, methods=["GET"]),
        Route("/export.csv", pages.export, methods=["GET"]),
        Route("/units/{kind}/{uuid}", pages.unit, methods=["GET"]),
        Route("/units/{kind}/{uuid}/rerun", buttons.rerun, methods=["POST"]),
        Route("/units/{kind}/{uuid}/resubmit", buttons.resubmit, methods=["POST"]),
        Route("/claims/{code}/refresh", buttons.refresh, methods=["POST"]),
        Route("/claims/{code}/withdrawal-handled", buttons.withdrawal_handled, methods=["POST"]),
        Route("/summary", pages.summary, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(DeskHttp),
        Middleware(
            SessionMiddleware,
            secret_key=auth_config.session_secret,
            session_cookie=SESSION_COOKIE,
            max_age=auth_config.session_seconds,
            same_site="lax",
            https_only=auth_config.secure_cookies,
        ),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: not_found, 405: not_allowed},
    )
