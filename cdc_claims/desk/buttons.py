"""What the detail page's buttons do: each POST checks the session and its CSRF token, calls one
method of the :class:`~cdc_claims.desk.actions.DeskActions` port as the signed-in user, and
redirects (303) back to the detail page, where the result's message is shown once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from cdc_claims.desk.actions import ActionResult, DeskActions
from cdc_claims.desk.model import DeskReads
from cdc_claims.desk.web import Web, redirect
from cdc_claims.errors import CdcClaimsError
from cdc_claims.log import get_logger
from cdc_claims.settings import UnitKind

log = get_logger("cdc_claims.desk")
_KINDS = ("encounter", "visit")


class Buttons:
    def __init__(self, web: Web, store: DeskReads, actions: DeskActions) -> None:
        self.web = web
        self.store = store
        self.actions = actions

    async def _guarded(self, request: Request) -> tuple[str, dict[str, Any]] | Response:
        """(user, form) of a signed-in POST with a valid CSRF token, else the refusal to send."""
        user = self.web.user(request)
        if user is None:
            return self.web.to_login(request)
        form = await self.web.form(request)
        if not self.web.csrf_ok(request, form):
            return self.web.forbidden(request)
        return user, form

    async def _act(
        self, request: Request, name: str, target: str, back: str, call: Callable[[], ActionResult]
    ) -> Response:
        try:
            result = await self.web.blocking(call)
        except CdcClaimsError as err:
            result = ActionResult(False, f"Not done: {err.reason.replace('_', ' ')}. Try again in a minute.")
        log.info("desk_action", action=name, target=target, ok=result.ok)
        self.web.flash(request, result)
        return redirect(back)

    async def rerun(self, request: Request) -> Response:
        guarded = await self._guarded(request)
        if isinstance(guarded, Response):
            return guarded
        user, _ = guarded
        kind, uuid = request.path_params["kind"], request.path_params["uuid"]
        if kind not in _KINDS:
            return self.web.error(request, 404, "Not found", "There is no such page.")
        unit_kind = cast(UnitKind, kind)
        return await self._act(
            request, "rerun", uuid, f"/units/{kind}/{uuid}", lambda: self.actions.rerun(unit_kind, uuid, by=user)
        )

    async def resubmit(self, request: Request) -> Response:
        guarded = await self._guarded(request)
        if isinstance(guarded, Response):
            return guarded
        user, form = guarded
        kind, uuid = request.path_params["kind"], request.path_params["uuid"]
        if kind not in _KINDS:
            return self.web.error(request, 404, "Not found", "There is no such page.")
        force = form.get("force") == "1"
        return await self._act(
            request,
            "resubmit",
            uuid,
            f"/units/{kind}/{uuid}",
            lambda: self.actions.resubmit(uuid, force=force, by=user),
        )

    async def _back_to(self, code: str) -> str:
        try:
            unit = await self.web.blocking(self.store.claim_unit, code)
        except CdcClaimsError:
            unit = None
        return f"/units/{unit[0]}/{unit[1]}" if unit else "/"

    async def refresh(self, request: Request) -> Response:
        guarded = await self._guarded(request)
        if isinstance(guarded, Response):
            return guarded
        user, _ = guarded
        code = request.path_params["code"]
        back = await self._back_to(code)
        return await self._act(request, "refresh", code, back, lambda: self.actions.refresh(code, by=user))

    async def withdrawal_handled(self, request: Request) -> Response:
        guarded = await self._guarded(request)
        if isinstance(guarded, Response):
            return guarded
        user, form = guarded
        code = request.path_params["code"]
        back = await self._back_to(code)
        ticked = [str(v) for v in form.get("line") or [] if v]
        if not ticked:
            self.web.flash(request, ActionResult(False, "Tick at least one line that was withdrawn in openIMIS."))
            return redirect(back)
        # exactly the lines ticked, never None ("every flagged line"): a line flagged after the
        # page was shown must not be marked handled by a clerk who never saw it
        return await self._act(
            request, "withdrawal_handled", code, back, lambda: self.actions.withdrawal_handled(code, ticked, by=user)
        )
