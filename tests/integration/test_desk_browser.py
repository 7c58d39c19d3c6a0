"""The claims desk in a real browser, as a billing clerk uses it (headless Debian Chromium).

An uninsured patient's consultation is held; the clerk signs in, finds the encounter, reads why
it is held, registration adds the insurance number, the clerk clicks Re-run, and the desk shows
the claim checked by openIMIS with its lines. Everything is real: the stack's desk process, the
sidecar, MariaDB, Kafka, openIMIS behind the openHIM emulator.

``CDC_DESK_SCREENSHOTS=<dir>`` also saves the pages as PNG (the README's pictures come from here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CaptureStack, running
from desk_browser import browser, detail_lines, login, open_unit, screenshot, search, text_of, wait_for
from pipeline_support import (
    HYPERTHYROIDISM,
    INSUREES,
    NIFEDIPINE,
    THYROID_FUNCTION,
    claim_rows,
    ledger,
    rows,
    wait_ledger,
)
from pipeline_support import wait_for as wait_until
from selenium.webdriver.common.by import By

from cdc_dev import credentials
from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.desk_component import Desk
from cdc_dev.mariadb import MariaDB
from cdc_dev.sidecar import Sidecar

pytest_plugins = ["pipeline_support"]  # the full_stack and sim fixtures

#: the ExternalId identifier type Bahmni's registration uses for the openIMIS insurance number
INSURANCE_ID_TYPE = "ee8e82c4-1563-43aa-8c73-c3e4e88cb79b"


@pytest.fixture
def desk(full_stack: CaptureStack) -> Iterator[credentials.DeskCredentials]:
    with running(Desk(full_stack.stack)):
        yield credentials.desk(full_stack.stack)


@pytest.fixture
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    with Sidecar(full_stack.stack, settle_seconds=0, poll_seconds=1.0, metrics_base_port=19554) as running_:
        yield running_


def shots(name: str) -> Path | None:
    folder = os.environ.get("CDC_DESK_SCREENSHOTS")
    return Path(folder) / f"{name}.png" if folder else None


def add_insurance_number(db: MariaDB, patient_id: int, number: str) -> None:
    """What registration does when the patient brings the insurance card."""
    conn = db.connect("cdc_admin")
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id,"
                " creator, date_created, voided, uuid) SELECT %s, %s, patient_identifier_type_id, 0, 1, 1, NOW(),"
                " 0, UUID() FROM patient_identifier_type WHERE uuid = %s",
                (patient_id, number, INSURANCE_ID_TYPE),
            )
        conn.commit()
    finally:
        conn.close()


def test_a_clerk_finds_a_held_claim_fixes_it_and_sees_it_checked(
    desk: credentials.DeskCredentials,
    sidecar: Sidecar,
    sim: BahmniSim,
    full_stack: CaptureStack,
) -> None:
    db = full_stack.mariadb
    patient = sim.create_patient(None, gender="F")  # no insurance number yet
    visit = sim.start_visit(patient)
    enc = sim.save_consultation(
        visit, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10)], labs=[THYROID_FUNCTION]
    )
    assert wait_ledger(db, enc.uuid, "held")["reason"] == "uninsured"

    with browser() as driver:
        assert login(driver, desk.base_url, desk.user, desk.password) == desk.user

        found = search(driver, patient.identifier)  # the clerk searches by the patient's number
        assert found.get(enc.uuid) == "held"
        if (path := shots("desk-list")) is not None:
            screenshot(driver, path)

        assert open_unit(driver, enc.uuid) == "held"
        reason = text_of(driver, "held-reason")
        assert "insurance" in reason.lower()
        assert "registration" in reason.lower()  # what to do, in a clerk's words
        if (path := shots("desk-held")) is not None:
            screenshot(driver, path)

        add_insurance_number(db, patient.patient_id, INSUREES[1])
        wait_for(driver, "rerun").click()
        # The consumer also re-runs a held encounter when its patient's identifiers change: the
        # click sends it, finds it sent, or finds it being sent (the lease: never twice).
        flash = text_of(driver, "flash")
        assert any(
            said in flash for said in ("submitted claim", "unchanged (checked", "being submitted", "being sent")
        ), flash

        def shows_checked() -> bool:
            driver.refresh()
            return text_of(driver, "state") == "checked"

        wait_until("the desk showing the claim checked", shows_checked)
        lines = detail_lines(driver)
        assert len(lines) == 3, lines  # the consultation, the drug and the lab test
        assert any("Nifedipine" in line for line in lines), lines
        assert driver.find_element(By.ID, "who").text == desk.user
        if (path := shots("desk-checked")) is not None:
            driver.set_window_size(1280, 1900)  # the whole page: the lines are below the fold
            screenshot(driver, path)

    row = ledger(db, enc.uuid)
    assert row is not None and row["state"] == "checked"
    claim = wait_until("the iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
    assert claim["status"] == "CHECKED"
    audit = rows(db, "SELECT actor, action, ok FROM cdc_claims_action WHERE target LIKE %s", f"%{enc.uuid}%")
    assert [(r["actor"], r["action"]) for r in audit] == [(desk.user, "rerun")]  # who did it, once


def test_staff_sign_in_through_the_hospitals_openid_provider(desk: credentials.DeskCredentials) -> None:
    """As with Bahmni's Keycloak: the desk sends the browser to the provider (code flow, PKCE),
    the provider's form signs the user in, and the desk knows who they are; no anonymous page."""
    with browser() as driver:
        driver.get(desk.base_url + "/summary")
        wait_for(driver, "username")  # not signed in: the sign-in page, not the summary
        assert driver.current_url.startswith(desk.base_url + "/login")
        wait_for(driver, "sign-in-oidc").click()
        assert driver.current_url.startswith(desk.oidc_issuer)  # at the provider now
        wait_for(driver, "username").send_keys(desk.user)
        driver.find_element(By.ID, "password").send_keys(desk.password)
        driver.find_element(By.ID, "sign-in").click()
        assert text_of(driver, "who") == desk.user
        assert driver.current_url.startswith(desk.base_url)
        driver.get(desk.base_url + "/summary")
        assert "<svg" in driver.page_source  # the chart, now that someone is signed in
