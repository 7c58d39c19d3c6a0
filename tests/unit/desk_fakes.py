"""In-memory stand-ins for the desk's two ports (reads and actions), and a signed-in client."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.testclient import TestClient

from cdc_claims.desk.actions import ActionResult
from cdc_claims.desk.app import create_app
from cdc_claims.desk.auth import AuthConfig, LocalUsers, OidcLogin, Throttle, hash_password
from cdc_claims.desk.filters import Filters
from cdc_claims.desk.model import (
    Bucket,
    ClaimView,
    DiagnosisView,
    DocumentView,
    EncounterView,
    LineView,
    Option,
    Page,
    PatientView,
    Summary,
    TimelineEvent,
    UnitDetail,
    UnitRow,
    WithdrawalLine,
)
from cdc_claims.errors import SourceUnavailable
from cdc_claims.ledger.model import ClaimRecord, LedgerEntry
from cdc_claims.lifecycle import State
from cdc_claims.settings import DeskSettings, UnitKind

SECRET = "s" * 48
PASSWORD = "correct horse battery staple"
HELD = "467dbc4e-302f-4159-a44b-38cee5c1f7ec"
SENT = "d21f32f5-9844-45e6-91a9-7dd51542256d"
CODE = "RAHOS001-d21f32f5984445e691a97dd51542256d"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def held_detail() -> UnitDetail:
    entry = LedgerEntry(
        unit_kind="encounter",
        unit_uuid=HELD,
        state=State.HELD,
        reason="uninsured",
        detail="patient 4dc3b842-30fe-4757-8b71-b81c6d7f6412 has no insurance number",
        patient_uuid="4dc3b842-30fe-4757-8b71-b81c6d7f6412",
        created_at=datetime(2026, 12, 2, 1, 56, 50),
        updated_at=datetime(2026, 12, 2, 1, 56, 51),
    )
    return UnitDetail(
        entry=entry,
        patient=PatientView(entry.patient_uuid or "", "Asha <Devi>", (("Patient Identifier", "GAN203790"),), "F"),
        visit_type="OPD",
        facility="OPD-1",
        encounters=(EncounterView(HELD, "Consultation", datetime(2026, 12, 2, 1, 56, 48), "OPD-1"),),
        timeline=(TimelineEvent(datetime(2026, 12, 2, 1, 56, 50), "First seen: a Bahmni save touched it"),),
    )


def sent_detail() -> UnitDetail:
    entry = LedgerEntry(
        unit_kind="encounter",
        unit_uuid=SENT,
        state=State.CHECKED,
        claim_code=CODE,
        reason="withdrawal_needed",
        detail=f"withdraw in openIMIS: 0171 x10 (removed) in claim {CODE}, line order-3",
        created_at=datetime(2026, 12, 2, 1, 57, 41),
        updated_at=datetime(2026, 12, 2, 1, 57, 47),
    )
    record = ClaimRecord(
        claim_code=CODE,
        unit_kind="encounter",
        unit_uuid=SENT,
        kind="original",
        state=State.CHECKED,
        rejected_lines=("order-2",),
        withdrawal='{"order-3": {"code": "0171", "quantity": "10", "why": "removed"}}',
    )
    lines = (
        LineView(CODE, "order-1", 1, "consultation", "service", "A1", "Consultation Note", Decimal(1), Decimal(400),
                 Decimal(1), Decimal(400), "PASSED"),
        LineView(CODE, "order-2", 2, "radiology", "service", "G2", "CHEST PA", Decimal(1), Decimal(42000),
                 status="REJECTED", rejection_reason="3 NO PRODUCT FOUND"),
        LineView(CODE, "order-3", 3, "drug", "item", "0171", "Nifedipine 5mg", Decimal(10), Decimal(35),
                 Decimal(10), Decimal(35), "PASSED", withdraw="removed"),
    )  # fmt: skip
    claim = ClaimView(
        record=record,
        lines=lines,
        documents=(DocumentView(CODE, "Discharge <summary>", "application/pdf", date(2026, 12, 1), "obs-9"),),
        withdrawals=(WithdrawalLine("order-3", "0171", "10", "removed"),),
        iclm_status="CHECKED",
        claimed_total=Decimal("42750.00"),
        approved_total=Decimal("750.00"),
    )
    return UnitDetail(
        entry=entry,
        claims=(claim,),
        diagnoses=(DiagnosisView("A09", "Diarrhoea", True),),
        timeline=(TimelineEvent(datetime(2026, 12, 2, 1, 57, 42), f"Claim {CODE} sent to openIMIS"),),
    )


def rows() -> list[UnitRow]:
    return [
        UnitRow(
            "encounter",
            HELD,
            State.HELD,
            reason="uninsured",
            patient_name="Asha <Devi>",
            patient_identifier="GAN203790",
            visit_type="OPD",
            facility="OPD-1",
            updated_at=datetime(2026, 12, 2, 1, 56, 51),
        ),
        UnitRow(
            "encounter",
            SENT,
            State.CHECKED,
            reason="withdrawal_needed",
            claim_code=CODE,
            patient_name="=cmd|' /C calc'!A0",
            patient_identifier="GAN203802",
            claimed=Decimal("42750"),
            approved=Decimal("750"),
            withdrawal=True,
            updated_at=datetime(2026, 12, 2, 1, 57, 47),
        ),
    ]


@dataclass
class FakeStore:
    units_asked: list[tuple[Filters, int]] = field(default_factory=list)
    summary_asked: list[tuple[date, date]] = field(default_factory=list)
    down: bool = False
    total: int | None = None

    def _check(self) -> None:
        if self.down:
            raise SourceUnavailable("desk read: (2003, \"Can't connect to MySQL server on 'db.internal'\")")

    def units(self, filters: Filters, *, page_size: int) -> Page:
        self._check()
        self.units_asked.append((filters, page_size))
        found = rows()
        return Page(tuple(found), self.total if self.total is not None else len(found), filters.page, page_size)

    def unit(self, kind: UnitKind, uuid: str) -> UnitDetail | None:
        self._check()
        return {HELD: held_detail(), SENT: sent_detail()}.get(uuid) if kind == "encounter" else None

    def claim_unit(self, claim_code: str) -> tuple[UnitKind, str] | None:
        self._check()
        return ("encounter", SENT) if claim_code == CODE else None

    def summary(self, date_from: date, date_to: date) -> Summary:
        self._check()
        self.summary_asked.append((date_from, date_to))
        day = Bucket(date_from, date_from.isoformat(), {"checked": 3, "rejected": 1},
                     {"checked": Decimal(1200), "rejected": Decimal(400)}, {"checked": Decimal(1100)})  # fmt: skip
        week = Bucket(date_from, "2026-W49 (2026-11-30)", dict(day.counts), dict(day.claimed), dict(day.approved))
        return Summary(
            date_from,
            date_to,
            ("checked", "rejected"),
            (day,),
            (week,),
            top_rejections=(("7 FAMILY", 5), ("3 NO PRODUCT FOUND", 2)),
            needs_action=(("uninsured", 4),),
        )

    def facilities(self) -> Sequence[Option]:
        self._check()
        return [Option("c58e12ed-3f12-11e4-adec-0800271c1b75", "OPD-1")]

    def visit_types(self) -> Sequence[Option]:
        self._check()
        return [Option("c22a5000-3f10-11e4-adec-0800271c1b75", "OPD")]

    def ping(self) -> None:
        self._check()


@dataclass
class FakeActions:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    result: ActionResult = field(default_factory=lambda: ActionResult(True, "Done: claim built and sent."))

    def rerun(self, kind: UnitKind, uuid: str, *, by: str) -> ActionResult:
        self.calls.append(("rerun", kind, uuid, by))
        return self.result

    def resubmit(self, uuid: str, *, force: bool, by: str) -> ActionResult:
        self.calls.append(("resubmit", uuid, force, by))
        return self.result

    def refresh(self, claim_code: str, *, by: str) -> ActionResult:
        self.calls.append(("refresh", claim_code, by))
        return self.result

    def withdrawal_handled(self, claim_code: str, lines: Sequence[str] | None, *, by: str) -> ActionResult:
        self.calls.append(("withdrawal_handled", claim_code, None if lines is None else list(lines), by))
        return self.result


def users_file(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / "users"
    lines = [f"{name}:{hash_password(PASSWORD, iterations=1000)}" for name in names or ("clerk",)]
    path.write_text("# desk users\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def client(
    tmp_path: Path,
    store: FakeStore | None = None,
    actions: FakeActions | None = None,
    *,
    oidc: OidcLogin | None = None,
    local: bool = True,
    secure: bool = False,
    throttle: Throttle | None = None,
    page_size: int = 50,
) -> TestClient:
    auth = AuthConfig(
        session_secret=SECRET,
        secure_cookies=secure,
        users=LocalUsers(users_file(tmp_path)) if local else None,
        oidc=oidc,
    )
    settings = DeskSettings(session_secret=SecretStr(SECRET), secure_cookies=secure, page_size=page_size)
    app = create_app(store or FakeStore(), actions or FakeActions(), auth, settings, throttle=throttle)
    return TestClient(app, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no csrf_token in the page"
    return found.group(1)


def sign_in(c: TestClient, name: str = "clerk", password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = csrf_of(c.get("/login").text)
    answer = c.post("/login", data={"username": name, "password": password, "csrf_token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return csrf_of(c.get("/").text)
