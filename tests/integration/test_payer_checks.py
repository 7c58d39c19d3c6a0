"""The payer checks on the real stack: openIMIS's own pricelists and policies, read before a POST.

Each test saves in Bahmni (the simulator writes what Bahmni writes) and follows the unit into the
ledger and into openIMIS's own database: a claim held for a payer reason must never be there; a
fix in openIMIS (a renewed policy) must let it go out by itself, once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CaptureStack
from pipeline_support import (
    CHEST_PA,
    HYPERTHYROIDISM,
    INSUREES,
    NIFEDIPINE,
    NOT_COVERED,
    THYROID_FUNCTION,
    UNMAPPED_DRUG,
    claim_code_of,
    claim_rows,
    consultation,
    openimis_claims,
    run_cli,
    wait_for,
    wait_ledger,
)

from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

pytest_plugins = ["pipeline_support"]  # the full_stack and sim fixtures

RECHECK = {"CDC_CLAIMS_PAYER__RECHECK_SECONDS": "2", "CDC_CLAIMS_PAYER__POLICY_TTL_SECONDS": "0"}


def _demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO_MAPPING.read_text())  # type: ignore[no-any-return]


def _write(folder: Path, mapping: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    (folder / "openimis_icd_codes.csv").write_text((DEMO_MAPPING.parent / "openimis_icd_codes.csv").read_text())
    return folder / "mapping.yaml"


@pytest.fixture(scope="module")
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    with Sidecar(full_stack.stack, settle_seconds=0.5, metrics_base_port=19624, extra_env=RECHECK) as running:
        yield running


class PolicyOf:
    """An insuree's policy rows in openIMIS, renewed for a test and put back after it."""

    def __init__(self, openimis: OpenImis, chf_id: str) -> None:
        self.openimis, self.chf_id = openimis, chf_id
        self.saved: list[list[str]] = []

    def _where(self) -> str:
        return (
            f'ip."InsureeID" = i."InsureeID" AND i."CHFID" = \'{self.chf_id}\' AND i."ValidityTo" IS NULL'
            ' AND ip."ValidityTo" IS NULL'
        )

    def renew(self) -> None:
        out = self.openimis.psql(
            'SELECT p."PolicyID", p."PolicyStatus", p."EffectiveDate", p."ExpiryDate", ip."InsureePolicyID",'
            ' ip."EffectiveDate", ip."ExpiryDate" FROM "tblInsureePolicy" ip JOIN "tblInsuree" i ON true'
            ' JOIN "tblPolicy" p ON p."PolicyID" = ip."PolicyId" AND p."ValidityTo" IS NULL WHERE ' + self._where()
        )
        self.saved = [line.split("|") for line in out.strip().splitlines()]
        assert self.saved, f"no policy rows for {self.chf_id}"
        for policy_id, _status, _eff, _exp, insuree_policy_id, _ieff, _iexp in self.saved:
            self.openimis.psql(
                'UPDATE "tblPolicy" SET "PolicyStatus" = 2, "EffectiveDate" = \'2025-01-01\','
                f' "ExpiryDate" = \'2030-12-31\' WHERE "PolicyID" = {int(policy_id)};'
                ' UPDATE "tblInsureePolicy" SET "EffectiveDate" = \'2025-01-01\', "ExpiryDate" = \'2030-12-31\''
                f' WHERE "InsureePolicyID" = {int(insuree_policy_id)}'
            )

    def restore(self) -> None:
        for policy_id, status, eff, exp, insuree_policy_id, ieff, iexp in self.saved:
            self.openimis.psql(
                f'UPDATE "tblPolicy" SET "PolicyStatus" = {int(status)}, "EffectiveDate" = {_day(eff)},'
                f' "ExpiryDate" = {_day(exp)} WHERE "PolicyID" = {int(policy_id)};'
                f' UPDATE "tblInsureePolicy" SET "EffectiveDate" = {_day(ieff)}, "ExpiryDate" = {_day(iexp)}'
                f' WHERE "InsureePolicyID" = {int(insuree_policy_id)}'
            )


def _day(value: str) -> str:
    return "NULL" if not value else "'" + value[:10].replace("'", "") + "'"


def test_a_claim_without_an_active_policy_is_held_with_the_dates_then_goes_out_once_the_policy_is_renewed(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    _, enc = consultation(sim, insurance=NOT_COVERED)
    code = claim_code_of(enc.uuid)
    held = wait_ledger(db, enc.uuid, "held")
    assert held["reason"] == "no_active_policy"
    assert "BCUL0001 expired 2018-09-24..2019-09-23" in held["detail"]
    assert openimis_claims(openimis, code) == 0  # never reached openIMIS
    assert claim_rows(db, enc.encounter_id) == []
    policy = PolicyOf(openimis, NOT_COVERED)
    policy.renew()
    try:
        row = wait_ledger(db, enc.uuid, "checked", timeout=60)  # nobody touched Bahmni: the recheck did it
        assert row["claim_code"] == code
        assert openimis_claims(openimis, code) == 1
        claim = wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]
        assert claim["status"] == "CHECKED"
    finally:
        policy.restore()


def test_check_mapping_reports_every_entry_that_disagrees_with_the_live_openimis(
    sidecar: Sidecar, tmp_path: Path
) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "wrong").mkdir()
    agrees = run_cli(sidecar, _demo(), tmp_path / "demo", "check-mapping", "--openimis")
    assert "reading the catalogue from openIMIS" in agrees.stdout
    assert "looking up the" in agrees.stdout and "insuree(s) of openimis.insuree_uuids" in agrees.stdout
    assert "openimis" not in agrees.stdout.rsplit("...", 1)[1]  # the demo mapping matches openIMIS
    wrong = _demo()
    wrong["drugs"][NIFEDIPINE] = {"code": "0171", "price": 99, "uuid": "71efb78b-64ee-4a68-be29-87daf566eb20"}
    wrong["concepts"][CHEST_PA] = {"category": "service", "code": "X999", "price": 1}
    wrong["openimis"]["claim_admin_default"]["uuid"] = "4a3f1a0a-e13c-451a-9511-a4d0fe35d20b"
    right_uuid = wrong["openimis"]["insuree_uuids"][INSUREES[0]]
    wrong["openimis"]["insuree_uuids"][INSUREES[0]] = "0d4c2f5e-7a1b-4c3d-9e8f-1a2b3c4d5e6f"
    wrong["openimis"]["insuree_uuids"]["999999999"] = "5b1f0c2d-3e4a-4b5c-8d6e-7f8091a2b3c4"
    out = run_cli(sidecar, wrong, tmp_path / "wrong", "check-mapping", "--openimis")
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    drug = f"openimis item: drugs.{NIFEDIPINE} '0171'"
    assert f"{drug} - uuid is 71efb78b-64ee-4a68-be29-87daf566eb20: set it to 05620ad6-" in text
    assert f"{drug} - price 99 above RAHOS001's pricelist 35.00: set price: 35.00" in text
    assert f"openimis service: concepts.{CHEST_PA} 'X999' - no such medical service in openIMIS" in text
    insuree = f"openimis insuree: openimis.insuree_uuids.{INSUREES[0]} '{INSUREES[0]}'"
    assert f"{insuree} - uuid is 0d4c2f5e-7a1b-4c3d-9e8f-1a2b3c4d5e6f: set it to {right_uuid}" in text
    assert "openimis.insuree_uuids.999999999 '999999999' - no such insuree in openIMIS" in text
    assert (
        "openimis claim admin: openimis.claim_admin_default 'RHOS0011' - uuid is 4a3f1a0a-e13c-451a-9511-a4d0fe35d20b:"
        " set it to 598e43ca-9977-4f4b-a678-992528ce3454"
    ) in text


def test_a_drug_mapped_only_by_its_reference_term_is_claimed_with_openimis_price_and_uuid(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, tmp_path: Path
) -> None:
    """No YAML entry for the drug: its ExternalCode term (drug_reference_map) is openIMIS item 0001."""
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    sidecar.stop()  # one sidecar at a time on the stack: this one has another mapping
    by_terms = _demo()
    by_terms["reference_terms"] = {"source": "ExternalCode"}
    path = _write(tmp_path / "terms", by_terms)
    conn = db.connect("cdc_admin", autocommit=True)
    term_uuid, map_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO concept_reference_term (concept_source_id, code, name, creator, date_created, uuid)"
                " SELECT concept_source_id, '0001', 'Aspirin 300 mg (openIMIS item)', 1, NOW(), %s"
                " FROM concept_reference_source WHERE name = 'ExternalCode'",
                (term_uuid,),
            )
            cur.execute(
                "INSERT INTO drug_reference_map (drug_id, term_id, concept_map_type, creator, date_created, uuid)"
                " SELECT d.drug_id, t.concept_reference_term_id, mt.concept_map_type_id, 1, NOW(), %s"
                " FROM drug d, concept_reference_term t, concept_map_type mt"
                " WHERE d.uuid = %s AND t.uuid = %s AND mt.name = 'SAME-AS'",
                (map_uuid, UNMAPPED_DRUG, term_uuid),
            )
            assert cur.rowcount == 1
        with Sidecar(
            full_stack.stack,
            settle_seconds=0.5,
            metrics_base_port=19644,
            extra_env={"CDC_CLAIMS_MAPPING_FILE": str(path)},
        ):
            patient = sim.create_patient(INSUREES[0], gender="F")
            enc = sim.save_consultation(
                sim.start_visit(patient), diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(UNMAPPED_DRUG, 3)]
            )
            row = wait_ledger(db, enc.uuid, "checked", "held")
            assert row["state"] == "checked", row["detail"]
            items = openimis.psql(
                'SELECT i."ItemCode", i."ItemUUID", ci."QtyProvided", ci."PriceAsked" FROM "tblClaimItems" ci'
                ' JOIN "tblItems" i ON i."ItemID" = ci."ItemID" JOIN "tblClaim" c ON c."ClaimID" = ci."ClaimID"'
                f' WHERE c."ClaimCode" = \'{claim_code_of(enc.uuid)}\' AND c."ValidityTo" IS NULL'
                ' AND ci."ValidityTo" IS NULL'
            )
            assert items.strip() == "0001|71efb78b-64ee-4a68-be29-87daf566eb20|3.00|10.00"
    finally:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM drug_reference_map WHERE uuid = %s", (map_uuid,))
            cur.execute("DELETE FROM concept_reference_term WHERE uuid = %s", (term_uuid,))
        conn.close()


def test_lines_off_the_facility_pricelist_or_above_its_price_are_held_and_never_sent(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, tmp_path: Path
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    sidecar.stop()  # one sidecar at a time on the stack: this one bills for another facility (the last test)
    centre = _demo()
    # every location bills as Rapta's health centre: its pricelists hold no chest X-ray (I42), and
    # nifedipine (item 0171) at 35: asking 50 is above the list
    centre["facilities"] = {key: {"code": "RAHC001"} for key in centre["facilities"]}
    centre["drugs"][NIFEDIPINE]["price"] = 50
    path = _write(tmp_path / "centre", centre)
    with Sidecar(
        full_stack.stack,
        settle_seconds=0.5,
        metrics_base_port=19634,
        extra_env={**RECHECK, "CDC_CLAIMS_MAPPING_FILE": str(path)},
    ):
        patient = sim.create_patient(INSUREES[0], gender="F")
        xray = sim.save_consultation(
            sim.start_visit(patient), diagnoses=[Dx(HYPERTHYROIDISM)], labs=[THYROID_FUNCTION], radiology=[CHEST_PA]
        )
        dear = sim.save_consultation(
            sim.start_visit(patient), diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 4)]
        )
        off = wait_ledger(db, xray.uuid, "held")
        assert off["reason"] == "not_in_pricelist"
        assert "service I42" in off["detail"] and "RAHC001" in off["detail"] and "I125" not in off["detail"]
        above = wait_ledger(db, dear.uuid, "held")
        assert above["reason"] == "price_above_pricelist"
        assert "item 0171" in above["detail"] and "asks 50 > 35" in above["detail"]
        for enc in (xray, dear):
            assert openimis_claims(openimis, "RAHC001-" + enc.uuid.replace("-", "")) == 0
