"""The desk's web app on in-memory ports: sign-in, CSRF, the list, the detail, the buttons."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from pathlib import Path

import pytest
from desk_fakes import CODE, HELD, PASSWORD, SENT, FakeActions, FakeStore, client, csrf_of, sign_in
from structlog.testing import capture_logs

from cdc_claims.desk.actions import ActionResult
from cdc_claims.desk.auth import Throttle
from cdc_claims.desk.export import HEADER
from cdc_claims.desk.filters import Filters
from cdc_claims.desk.pages import EXPORT_LIMIT
from cdc_claims.errors import SourceUnavailable
from cdc_claims.settings import UnitKind


def _id(html: str, element_id: str) -> str:
    """The text inside the element with ``id`` (tags stripped, whitespace collapsed)."""
    found = re.search(rf'<(\w+)[^>]*\bid="{re.escape(element_id)}"[^>]*>(.*?)</\1>', html, re.S)
    assert found is not None, f"no element id={element_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(2)).split())


# ---------------------------------------------------------------------- no anonymous access
@pytest.mark.parametrize("path", ["/", f"/units/encounter/{HELD}", "/export.csv", "/summary", "/?q=GAN203790"])
def test_every_page_needs_a_session(tmp_path: Path, path: str) -> None:
    answer = client(tmp_path).get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_a_button_without_a_session_does_nothing(tmp_path: Path) -> None:
    actions = FakeActions()
    answer = client(tmp_path, actions=actions).post(f"/units/encounter/{HELD}/rerun", data={"csrf_token": "x"})
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login")
    assert actions.calls == []


def test_probes_and_the_stylesheet_need_no_session(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store)
    assert (c.get("/healthz").status_code, c.get("/healthz").text) == (200, "ok\n")
    assert c.get("/readyz").text == "ready\n"
    css = c.get("/static/desk.css")
    assert css.status_code == 200
    assert ":focus-visible" in css.text
    store.down = True
    down = c.get("/readyz")
    assert (down.status_code, down.text) == (503, "not ready: database\n")  # never the error's text


def test_the_login_page_keeps_the_ui_contract_and_security_headers(tmp_path: Path) -> None:
    page = client(tmp_path).get("/login")
    assert page.status_code == 200
    for element in ('id="username"', 'id="password"', 'id="sign-in"', 'name="csrf_token"', 'lang="en"'):
        assert element in page.text
    assert '<label for="username">' in page.text and '<label for="password">' in page.text
    assert 'href="#main"' in page.text  # the skip link
    assert "<script" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------- signing in
def test_the_right_password_signs_in_and_every_page_names_the_user(tmp_path: Path) -> None:
    c = client(tmp_path)
    token = csrf_of(c.get("/login?next=/summary").text)
    answer = c.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": token, "next": "/summary"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/summary")
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert f"max-age={8 * 3600}" in cookie
    assert "secure" not in cookie  # this client was built with secure_cookies off
    for path in ("/", f"/units/encounter/{HELD}", "/summary"):
        assert _id(c.get(path).text, "who") == "clerk"


def test_cookies_are_secure_by_default(tmp_path: Path) -> None:
    c = client(tmp_path, secure=True)
    assert "secure" in c.get("/login").headers["set-cookie"].lower()


@pytest.mark.parametrize(("name", "password"), [("clerk", "wrong"), ("nobody", PASSWORD), ("clerk", "")])
def test_a_wrong_name_or_password_is_refused_the_same_way(tmp_path: Path, name: str, password: str) -> None:
    c = client(tmp_path)
    token = csrf_of(c.get("/login").text)
    with capture_logs() as logs:
        answer = c.post("/login", data={"username": name, "password": password, "csrf_token": token})
    assert answer.status_code == 401
    assert _id(answer.text, "login-error") == "Wrong user name or password."
    assert c.get("/").status_code == 303  # still not signed in
    assert name not in str([e for e in logs if e["event"] != "desk_request"])  # the name typed is not logged


def test_the_login_form_is_csrf_protected(tmp_path: Path) -> None:
    c = client(tmp_path)
    c.get("/login")
    assert c.post("/login", data={"username": "clerk", "password": PASSWORD}).status_code == 403
    wrong = {"username": "clerk", "password": PASSWORD, "csrf_token": "x" * 43}
    assert c.post("/login", data=wrong).status_code == 403
    assert c.get("/").status_code == 303


def test_repeated_wrong_passwords_lock_the_name_for_a_while(tmp_path: Path) -> None:
    c = client(tmp_path, throttle=Throttle(limit=2, window=900))
    token = csrf_of(c.get("/login").text)
    for _ in range(2):
        assert c.post("/login", data={"username": "clerk", "password": "no", "csrf_token": token}).status_code == 401
    locked = c.post("/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": token})
    assert locked.status_code == 429


def test_an_outside_next_is_ignored(tmp_path: Path) -> None:
    c = client(tmp_path)
    token = csrf_of(c.get("/login").text)
    data = {"username": "clerk", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"}
    assert c.post("/login", data=data).headers["location"] == "/"


def test_sign_out_ends_the_session(tmp_path: Path) -> None:
    c = client(tmp_path)
    token = sign_in(c)
    assert c.post("/logout", data={}).status_code == 403
    out = c.post("/logout", data={"csrf_token": token})
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert c.get("/").status_code == 303


# ---------------------------------------------------------------------- the list
def test_the_list_shows_one_row_per_unit_linking_to_its_detail(tmp_path: Path) -> None:
    c = client(tmp_path)
    sign_in(c)
    html = c.get("/").text
    table = re.search(r'<table id="units">.*?</table>', html, re.S)
    assert table is not None
    rows = re.findall(r'<tr data-unit-uuid="([^"]+)" data-state="([^"]+)">\s*<td><a href="([^"]+)"', table.group(0))
    assert rows == [
        (HELD, "held", f"/units/encounter/{HELD}"),
        (SENT, "checked", f"/units/encounter/{SENT}"),
    ]
    assert "Asha &lt;Devi&gt;" in html and "Asha <Devi>" not in html  # escaped
    assert "No insurance number" in html
    assert 'id="q"' in html and 'id="filter"' in html
    assert '<th scope="col">State</th>' in html
    assert re.search(r'<label for="f-state">', html) and re.search(r'<label for="q">', html)


def test_filters_pass_through_to_the_store(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store, page_size=20)
    sign_in(c)
    query = {
        "state": "held:uninsured",
        "from": "2026-12-01",
        "to": "2026-12-02",
        "facility": "c58e12ed-3f12-11e4-adec-0800271c1b75",
        "visit_type": "c22a5000-3f10-11e4-adec-0800271c1b75",
        "q": "GAN203790",
        "page": "2",
    }
    html = c.get("/", params=query).text
    assert store.units_asked[-1] == (
        Filters(
            group="held:uninsured",
            date_from=date(2026, 12, 1),
            date_to=date(2026, 12, 2),
            facility="c58e12ed-3f12-11e4-adec-0800271c1b75",
            visit_type="c22a5000-3f10-11e4-adec-0800271c1b75",
            q="GAN203790",
            page=2,
        ),
        20,
    )
    assert '<option value="held:uninsured" selected>' in html  # the form shows what was asked
    assert 'value="GAN203790"' in html


def test_pages_link_forward_and_back_keeping_the_filters(tmp_path: Path) -> None:
    store = FakeStore(total=120)
    c = client(tmp_path, store)
    sign_in(c)
    html = c.get("/", params={"state": "checked", "page": "2"}).text
    assert "page 2 of 3" in html
    assert 'href="/?state=checked"' in html  # previous: page 1 needs no parameter
    assert 'href="/?state=checked&amp;page=3"' in html


def test_the_list_says_so_when_the_database_is_down(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store)
    sign_in(c)
    store.down = True
    answer = c.get("/")
    assert answer.status_code == 503
    assert "Try again in a minute" in answer.text
    assert "db.internal" not in answer.text


def test_csv_export_has_a_header_rows_and_no_formulas(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store)
    sign_in(c)
    answer = c.get("/export.csv", params={"state": "checked", "q": "RAHOS", "page": "4"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith('attachment; filename="claims-')
    parsed = list(csv.reader(io.StringIO(answer.text)))
    assert parsed[0] == list(HEADER)
    assert [r[1] for r in parsed[1:]] == [HELD, SENT]
    assert parsed[2][HEADER.index("patient_name")] == "'=cmd|' /C calc'!A0"
    assert store.units_asked[-1] == (Filters(group="checked", q="RAHOS"), EXPORT_LIMIT)  # every page, same filters


# ---------------------------------------------------------------------- the detail
def test_a_held_unit_says_what_holds_it_and_offers_re_run(tmp_path: Path) -> None:
    c = client(tmp_path)
    sign_in(c)
    html = c.get(f"/units/encounter/{HELD}").text
    assert _id(html, "state") == "held"
    held = _id(html, "held-reason")
    assert held.startswith("No insurance number")
    assert "Registration (patient identifier)" in held
    assert 'id="rerun"' in html
    assert 'id="resubmit"' not in html
    assert "GAN203790" in html  # identifiers are shown to staff
    assert "<script" not in html


def test_a_sent_unit_shows_lines_rejections_and_its_buttons(tmp_path: Path) -> None:
    c = client(tmp_path)
    sign_in(c)
    html = c.get(f"/units/encounter/{SENT}").text
    assert _id(html, "state") == "checked"
    lines = re.search(r'<table id="lines">.*?</table>', html, re.S)
    assert lines is not None
    assert lines.group(0).count('<tr class="line"') == 3
    assert "Not covered by the patient&#39;s insurance product" in lines.group(0)
    assert "42,000.00" in lines.group(0)
    assert 'id="rerun"' not in html  # checked: nothing to re-run
    assert 'id="resubmit"' in html and 'id="force"' in html and '<label for="force">' in html
    assert f'action="/claims/{CODE}/refresh"' in html
    assert f'action="/claims/{CODE}/withdrawal-handled"' in html
    assert 'value="order-3" checked' in html
    assert "A09" in html and "Diarrhoea" in html
    assert f"Claim {CODE} sent to openIMIS" in html
    documents = re.search(r'<ul id="documents">.*?</ul>', html, re.S)
    assert documents is not None and "Discharge &lt;summary&gt;" in documents.group(0)
    assert "application/pdf, filed 2026-12-01" in documents.group(0)
    held = c.get(f"/units/encounter/{HELD}").text
    assert 'id="documents"' not in held  # nothing sent, no section


def test_unknown_units_are_not_found(tmp_path: Path) -> None:
    c = client(tmp_path)
    sign_in(c)
    assert c.get("/units/encounter/00000000-0000-0000-0000-000000000000").status_code == 404
    assert c.get(f"/units/patient/{HELD}").status_code == 404
    assert c.get("/no/such/page").status_code == 404


# ---------------------------------------------------------------------- the buttons
def test_re_run_calls_the_port_as_the_user_and_flashes_its_message_once(tmp_path: Path) -> None:
    actions = FakeActions(result=ActionResult(True, "Re-run: claim RAHOS001-x sent."))
    c = client(tmp_path, actions=actions)
    token = sign_in(c)
    answer = c.post(f"/units/encounter/{HELD}/rerun", data={"csrf_token": token})
    assert (answer.status_code, answer.headers["location"]) == (303, f"/units/encounter/{HELD}")
    assert actions.calls == [("rerun", "encounter", HELD, "clerk")]
    page = c.get(answer.headers["location"]).text
    assert _id(page, "flash") == "Re-run: claim RAHOS001-x sent."
    assert 'id="flash"' not in c.get(f"/units/encounter/{HELD}").text


def test_a_button_without_or_with_a_wrong_csrf_token_is_forbidden(tmp_path: Path) -> None:
    actions = FakeActions()
    c = client(tmp_path, actions=actions)
    sign_in(c)
    assert c.post(f"/units/encounter/{HELD}/rerun", data={}).status_code == 403
    assert c.post(f"/units/encounter/{HELD}/rerun", data={"csrf_token": "forged"}).status_code == 403
    assert c.post(f"/claims/{CODE}/refresh", data={}).status_code == 403
    assert actions.calls == []


def test_resubmit_passes_force(tmp_path: Path) -> None:
    actions = FakeActions()
    c = client(tmp_path, actions=actions)
    token = sign_in(c)
    c.post(f"/units/encounter/{SENT}/resubmit", data={"csrf_token": token, "force": "1"})
    c.post(f"/units/encounter/{SENT}/resubmit", data={"csrf_token": token})
    assert actions.calls == [("resubmit", SENT, True, "clerk"), ("resubmit", SENT, False, "clerk")]


def test_refresh_goes_back_to_the_unit_of_the_claim(tmp_path: Path) -> None:
    actions = FakeActions()
    c = client(tmp_path, actions=actions)
    token = sign_in(c)
    answer = c.post(f"/claims/{CODE}/refresh", data={"csrf_token": token})
    assert answer.headers["location"] == f"/units/encounter/{SENT}"
    assert actions.calls == [("refresh", CODE, "clerk")]


def test_withdrawal_handled_passes_exactly_the_lines_ticked(tmp_path: Path) -> None:
    actions = FakeActions()
    c = client(tmp_path, actions=actions)
    token = sign_in(c)
    c.post(f"/claims/{CODE}/withdrawal-handled", data={"csrf_token": token, "line": ["order-3", "order-9"]})
    assert actions.calls == [("withdrawal_handled", CODE, ["order-3", "order-9"], "clerk")]
    none = c.post(f"/claims/{CODE}/withdrawal-handled", data={"csrf_token": token})
    assert len(actions.calls) == 1
    assert (
        _id(c.get(none.headers["location"]).text, "flash") == "Tick at least one line that was withdrawn in openIMIS."
    )


def test_an_action_that_cannot_run_now_says_so(tmp_path: Path) -> None:
    class Down(FakeActions):
        def rerun(self, kind: UnitKind, uuid: str, *, by: str) -> ActionResult:
            raise SourceUnavailable("no database")

    c = client(tmp_path, actions=Down())
    token = sign_in(c)
    answer = c.post(f"/units/encounter/{HELD}/rerun", data={"csrf_token": token})
    flash = c.get(answer.headers["location"]).text
    assert _id(flash, "flash") == "Not done: source unavailable. Try again in a minute."
    assert 'class="flash bad"' in flash


# ---------------------------------------------------------------------- the summary
def test_the_summary_draws_the_chart_and_the_tables(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store)
    sign_in(c)
    html = c.get("/summary", params={"from": "2026-12-01", "to": "2026-12-07"}).text
    assert store.summary_asked == [(date(2026, 12, 1), date(2026, 12, 7))]
    svg = re.search(r"<svg .*?</svg>", html, re.S)
    assert svg is not None
    assert 'role="img"' in svg.group(0) and "<title" in svg.group(0)
    assert "Claims sent per day, 2026-12-01 to 2026-12-07" in svg.group(0)
    assert 'id="per-day"' in html and 'id="per-week"' in html
    assert "1,200.00" in html
    assert "The patient has no valid insurance policy" in html  # reason 7 in words
    assert 'href="/?state=held:uninsured"' in html


def test_the_summary_defaults_to_the_last_30_days(tmp_path: Path) -> None:
    store = FakeStore()
    c = client(tmp_path, store)
    sign_in(c)
    c.get("/summary", params={"from": "garbage"})
    (asked,) = store.summary_asked
    assert (asked[1] - asked[0]).days == 29


# ---------------------------------------------------------------------- the request log
def test_requests_are_logged_by_route_template_without_identifiers(tmp_path: Path) -> None:
    c = client(tmp_path)
    sign_in(c)
    with capture_logs() as logs:
        c.get("/", params={"q": "GAN203790"})
        c.get(f"/units/encounter/{HELD}")
    requests = [e for e in logs if e["event"] == "desk_request"]
    assert [(e["method"], e["route"], e["status"]) for e in requests] == [
        ("GET", "/", 200),
        ("GET", "/units/{kind}/{uuid}", 200),
    ]
    assert "GAN203790" not in str(logs)
    assert HELD not in str(logs)
