"""Signing in and out: the local users form and the OIDC redirect and callback.

With OIDC as the only way in, ``/login`` sends the browser straight to the provider (a failed
sign-in comes back to the login page with the reason, so there is no loop). A wrong name and a
wrong password give the same answer (401, "wrong user name or password"),
after the same work. Only the outcome is logged, never the name typed: a clerk who types a
patient's name into the wrong box must not put it in the logs.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from cdc_claims.desk.auth import OidcFailed, Throttle, safe_next, sign_in
from cdc_claims.desk.web import Web, redirect
from cdc_claims.log import get_logger

log = get_logger("cdc_claims.desk")
_NEXT = "login_next"


class Login:
    def __init__(self, web: Web, throttle: Throttle | None = None) -> None:
        self.web = web
        self.throttle = throttle or Throttle()

    def _page(self, request: Request, *, error: str = "", username: str = "", status: int = 200) -> Response:
        auth = self.web.auth
        target = safe_next(request.query_params.get("next") if request.method == "GET" else None)
        context = {
            "title": "Sign in",
            "error": error,
            "username": username,
            "next": target,
            "next_query": urlencode({"next": target}),
            "local": auth.users is not None,
            "oidc_label": auth.oidc.label if auth.oidc is not None else "",
        }
        return self.web.render(request, "login.html", context, status=status)

    async def show(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if self.web.user(request) is not None:
            return redirect(target)
        auth = self.web.auth
        if auth.users is None and auth.oidc is not None:  # one way to sign in: go straight there
            return redirect("/auth/oidc?" + urlencode({"next": target}))
        return self._page(request)

    async def submit(self, request: Request) -> Response:
        form = await self.web.form(request)
        if not self.web.csrf_ok(request, form):
            return self.web.forbidden(request)
        users = self.web.auth.users
        name = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        if users is None:
            return self._page(request, error="Sign in with the button below.", status=400)
        if self.throttle.blocked(name):
            log.warning("desk_login_refused", why="throttled")
            return self._page(request, error="Too many wrong passwords. Wait 15 minutes.", status=429)
        ok = bool(name) and bool(password) and await self.web.blocking(users.check, name, password)
        if not ok:
            self.throttle.failed(name)
            log.info("desk_login_refused", why="wrong name or password")
            return self._page(request, error="Wrong user name or password.", username=name, status=401)
        self.throttle.succeeded(name)
        sign_in(request.session, name, via="local")
        log.info("desk_login", user=name, via="local")
        return redirect(safe_next(str(form.get("next") or "")))

    async def logout(self, request: Request) -> Response:
        form = await self.web.form(request)
        if not self.web.csrf_ok(request, form):
            return self.web.forbidden(request)
        request.session.clear()
        return redirect("/login")

    async def oidc_start(self, request: Request) -> Response:
        oidc = self.web.auth.oidc
        if oidc is None:
            return self.web.error(request, 404, "Not found", "Sign-in with an identity provider is not set up.")
        request.session[_NEXT] = safe_next(request.query_params.get("next"))
        redirect_uri = self.web.auth.oidc_redirect_url or str(request.url_for("auth_callback"))
        try:
            response: Response = await oidc.start(request, redirect_uri)
        except OidcFailed as err:
            log.warning("desk_oidc_failed", step="start", why=str(err))
            return self._page(request, error="The identity provider did not answer. Try again later.", status=503)
        return response

    async def oidc_callback(self, request: Request) -> Response:
        oidc = self.web.auth.oidc
        if oidc is None:
            return self.web.error(request, 404, "Not found", "Sign-in with an identity provider is not set up.")
        target = safe_next(request.session.get(_NEXT))
        try:
            name = await oidc.finish(request)
        except OidcFailed as err:
            log.warning("desk_oidc_failed", step="callback", why=str(err))
            return self._page(request, error="Sign-in with the identity provider failed. Try again.", status=401)
        sign_in(request.session, name, via="oidc")
        log.info("desk_login", user=name, via="oidc")
        return redirect(target)
