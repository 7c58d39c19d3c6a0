"""Edits after the claim reached openIMIS, on the real stack (issue 7): only the difference travels.

Each test saves a consultation, waits for its claim in openIMIS, edits the encounter the way Bahmni
does (a later Save into the same encounter), and then checks openIMIS itself: across the
encounter's live claims (the original and any supplement) every code is claimed exactly as often
as Bahmni now says, or, for a removed line, flagged for withdrawal on the claim that holds it;
plus one iclm_claim per openIMIS claim and one history row per claim sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import CaptureStack
from pipeline_support import (
    CHEST_PA,
    DIABETES_II,
    HYPERTHYROIDISM,
    INSUREES,
    METFORMIN,
    NIFEDIPINE,
    THYROID_FUNCTION,
    claim_code_of,
    ledger,
    rows,
    run_cli,
    wait_for,
)

from cdc_dev.bahmni import BahmniSim, Drug, Dx, EncounterRef
from cdc_dev.mariadb import MariaDB
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]


@pytest.fixture(scope="module")
def sidecar(full_stack: CaptureStack) -> Iterator[Sidecar]:
    running = Sidecar(full_stack.stack, settle_seconds=0, metrics_base_port=19524)
    running.start()
    yield running
    running.stop()


def in_openimis(openimis: OpenImis, encounter_uuid: str) -> Counter[str]:
    """Quantity claimed per item/service code across every live claim of the encounter."""
    prefix = claim_code_of(encounter_uuid).replace("'", "")
    out = openimis.psql(
        f'SELECT i."ItemCode", ci."QtyProvided" FROM "tblClaim" c JOIN "tblClaimItems" ci ON ci."ClaimID" = c."ClaimID"'
        f' JOIN "tblItems" i ON i."ItemID" = ci."ItemID" WHERE c."ClaimCode" LIKE \'{prefix}%\''
        ' AND c."ValidityTo" IS NULL AND ci."ValidityTo" IS NULL'
        ' UNION ALL SELECT s."ServCode", cs."QtyProvided" FROM "tblClaim" c'
        ' JOIN "tblClaimServices" cs ON cs."ClaimID" = c."ClaimID"'
        ' JOIN "tblServices" s ON s."ServiceID" = cs."ServiceID"'
        f' WHERE c."ClaimCode" LIKE \'{prefix}%\' AND c."ValidityTo" IS NULL AND cs."ValidityTo" IS NULL'
    )
    claimed: Counter[str] = Counter()
    for line in out.strip().splitlines():
        code, qty = line.split("|")
        claimed[code] += int(Decimal(qty))
    return claimed


def openimis_codes(openimis: OpenImis, encounter_uuid: str) -> list[str]:
    prefix = claim_code_of(encounter_uuid)
    out = openimis.psql(
        f'SELECT "ClaimCode" FROM "tblClaim" WHERE "ClaimCode" LIKE \'{prefix}%\' AND "ValidityTo" IS NULL'
        ' ORDER BY "ClaimCode"'
    )
    return out.split()


def history(db: MariaDB, unit_uuid: str) -> list[dict[str, object]]:
    return rows(db, "SELECT * FROM cdc_claims_claim WHERE unit_uuid = %s ORDER BY kind <> 'original', seq", unit_uuid)


def iclm_claims(db: MariaDB, encounter_id: int) -> list[dict[str, object]]:
    return rows(db, "SELECT * FROM iclm_claim WHERE encounter = %s AND voided = 0 ORDER BY iclm_claim_id", encounter_id)


def submitted(sim: BahmniSim, db: MariaDB, openimis: OpenImis, **kw: object) -> EncounterRef:
    patient = sim.create_patient(INSUREES[2], gender="F")
    enc = sim.save_consultation(sim.start_visit(patient), **kw)  # type: ignore[arg-type]
    wait_for(
        "the first claim in openIMIS and iclm",
        lambda: openimis_codes(openimis, enc.uuid) and iclm_claims(db, enc.encounter_id),
    )
    wait_for("ledger checked", lambda: (ledger(db, enc.uuid) or {}).get("state") == "checked")
    return enc


def settled_reason(db: MariaDB, enc: EncounterRef, *reasons: str) -> dict[str, object]:
    row = wait_for(
        f"ledger reason in {reasons}", lambda: (r := ledger(db, enc.uuid)) is not None and r["reason"] in reasons and r
    )
    return row  # type: ignore[no-any-return]


def test_a_test_added_after_submission_goes_out_in_a_supplement_with_only_that_line(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10)])
    assert in_openimis(openimis, enc.uuid) == Counter({"A1": 1, "0171": 10})
    sim.save_consultation(enc.visit, encounter=enc, labs=[THYROID_FUNCTION])

    wait_for("supplement in openIMIS", lambda: len(openimis_codes(openimis, enc.uuid)) == 2)
    code = claim_code_of(enc.uuid)
    assert openimis_codes(openimis, enc.uuid) == [code, f"{code}-S1"]
    assert in_openimis(openimis, enc.uuid) == Counter({"A1": 1, "0171": 10, "I125": 1})  # nothing twice
    claims = wait_for(
        "both iclm claims", lambda: len(iclm_claims(db, enc.encounter_id)) == 2 and iclm_claims(db, enc.encounter_id)
    )
    assert [c["claim_code"] for c in claims] == [code, f"{code}-S1"] and all(c["status"] == "CHECKED" for c in claims)
    assert [(h["kind"], h["claim_code"], h["related_code"]) for h in history(db, enc.uuid)] == [
        ("original", code, None),
        ("supplement", f"{code}-S1", code),
    ]
    row = settled_reason(db, enc, "supplemented")
    assert row["claim_code"] == code and "I125" in str(row["detail"])
    explanation = openimis.psql(f'SELECT "Explanation" FROM "tblClaim" WHERE "ClaimCode" = \'{code}-S1\'')
    assert f"Supplement to claim {code}" in explanation


def test_a_drug_stopped_after_submission_is_flagged_for_withdrawal_never_billed_again(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    enc = submitted(
        sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10), Drug(METFORMIN, 5)]
    )
    nifedipine = enc.orders[0]
    sim.discontinue_order(nifedipine)

    row = settled_reason(db, enc, "withdrawal_needed")
    assert "0171 x10 (removed)" in str(row["detail"])
    assert openimis_codes(openimis, enc.uuid) == [claim_code_of(enc.uuid)]  # nothing re-sent
    flagged = wait_for(
        "withdrawal flag on the iclm line",
        lambda: rows(
            db,
            "SELECT ci.explanation FROM iclm_claim_item ci JOIN iclm_claim c ON c.iclm_claim_id = ci.claim"
            " WHERE c.encounter = %s AND ci.explanation LIKE 'WITHDRAWAL NEEDED%%'",
            enc.encounter_id,
        ),
    )
    assert len(flagged) == 1 and "0171" in str(flagged[0]["explanation"])
    original = history(db, enc.uuid)[0]
    assert nifedipine.uuid in str(original["withdrawal"])


def test_a_quantity_raised_after_submission_sends_only_the_extra_and_a_lowered_one_is_flagged(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(METFORMIN, 10)])
    with sim.save(enc) as edit:  # Bahmni REVISEs the order: a new order uuid, the same line
        revised = edit.revise_drug(enc.orders[0], 14)
    wait_for("supplement", lambda: len(openimis_codes(openimis, enc.uuid)) == 2)
    assert in_openimis(openimis, enc.uuid) == Counter({"A1": 1, "0158": 14})
    with sim.save(enc) as edit:
        edit.revise_drug(revised, 8)
    row = settled_reason(db, enc, "withdrawal_needed")
    assert "(removed)" in str(row["detail"]) or "(reduced)" in str(row["detail"])
    assert len(openimis_codes(openimis, enc.uuid)) == 2  # the reduction sent nothing


def test_a_diagnosis_change_alone_sends_no_claim_and_is_reported(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10)])
    sim.save_consultation(enc.visit, encounter=enc, diagnoses=[Dx(DIABETES_II)])
    row = settled_reason(db, enc, "diagnosis_changed_after_submit")
    assert "diagnoses changed" in str(row["detail"])
    assert openimis_codes(openimis, enc.uuid) == [claim_code_of(enc.uuid)]


def test_with_supplements_off_an_added_line_is_reported_not_sent(
    sim: BahmniSim, full_stack: CaptureStack, sidecar: Sidecar
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    sidecar.stop()
    off = Sidecar(
        full_stack.stack, settle_seconds=0, metrics_base_port=19534, extra_env={"CDC_CLAIMS_SUPPLEMENTS": "false"}
    )
    off.start()
    try:
        enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10)])
        sim.save_consultation(enc.visit, encounter=enc, radiology=[CHEST_PA])
        row = settled_reason(db, enc, "changed_after_submit")
        assert "I42" in str(row["detail"]) and "not sent" in str(row["detail"])
        assert openimis_codes(openimis, enc.uuid) == [claim_code_of(enc.uuid)]
    finally:
        off.stop()
        sidecar.start()


#: an openIMIS service the insuree's product does not cover: openIMIS rejects that line
#: (reason 3), the rest of the claim passes (samples/case_partial_item_rejected.json)
NOT_IN_PRODUCT = {"category": "service", "code": "G2", "price": 42000, "uuid": "639fd0f9-d860-487b-8ec0-c7be0d2e2b94"}


def test_a_rejected_line_corrected_in_the_mapping_is_resubmitted_alone_as_a_replacement(
    sim: BahmniSim, full_stack: CaptureStack, sidecar: Sidecar, tmp_path: Path
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    wrong = yaml.safe_load(DEMO_MAPPING.read_text())
    wrong["concepts"][CHEST_PA] = NOT_IN_PRODUCT
    folder = tmp_path / "wrong"
    folder.mkdir()
    (folder / "mapping.yaml").write_text(yaml.safe_dump(wrong))
    (folder / "openimis_icd_codes.csv").write_text((DEMO_MAPPING.parent / "openimis_icd_codes.csv").read_text())
    sidecar.stop()
    bad = Sidecar(
        full_stack.stack,
        settle_seconds=0,
        metrics_base_port=19544,
        extra_env={"CDC_CLAIMS_MAPPING_FILE": str(folder / "mapping.yaml")},
    )
    bad.start()
    try:
        enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], radiology=[CHEST_PA])
        code = claim_code_of(enc.uuid)
        rejected = wait_for(
            "the X-ray line rejected",
            lambda: rows(db, "SELECT * FROM cdc_claims_claim WHERE claim_code = %s AND rejected_lines <> ''", code),
        )
        assert enc.orders[0].uuid in str(rejected[0]["rejected_lines"])

        fixed = yaml.safe_load(DEMO_MAPPING.read_text())  # billing staff fix the mapping
        out = run_cli(bad, fixed, tmp_path, "resubmit", "--unit", enc.uuid)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{code}-R1 replacement" in out.stdout

        assert openimis_codes(openimis, enc.uuid) == [code, f"{code}-R1"]
        replacement = openimis.psql(
            'SELECT s."ServCode" FROM "tblClaim" c JOIN "tblClaimServices" cs ON cs."ClaimID" = c."ClaimID"'
            ' JOIN "tblServices" s ON s."ServiceID" = cs."ServiceID"'
            f' WHERE c."ClaimCode" = \'{code}-R1\' AND c."ValidityTo" IS NULL'
        ).split()
        assert replacement == ["I42"]  # only the corrected line, never the accepted consultation
        wait_for("replacement in iclm", lambda: len(iclm_claims(db, enc.encounter_id)) == 2)
        out = run_cli(bad, fixed, tmp_path, "resubmit", "--unit", enc.uuid)  # again: nothing more
        assert out.returncode == 0 and openimis_codes(openimis, enc.uuid) == [code, f"{code}-R1"]
    finally:
        bad.stop()
        sidecar.start()


def test_a_withdrawal_marked_handled_clears_the_flags(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, tmp_path: Path
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    enc = submitted(sim, db, openimis, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 10)])
    sim.discontinue_order(enc.orders[0])
    settled_reason(db, enc, "withdrawal_needed")
    code = claim_code_of(enc.uuid)
    flagged = "SELECT count(*) AS n FROM iclm_claim_item ci JOIN iclm_claim c ON c.iclm_claim_id = ci.claim"
    flagged += " WHERE c.claim_code = %s AND ci.explanation LIKE 'WITHDRAWAL NEEDED%%'"
    wait_for("line flagged", lambda: rows(db, flagged, code)[0]["n"] == 1)

    out = run_cli(sidecar, yaml.safe_load(DEMO_MAPPING.read_text()), tmp_path, "withdrawal-handled", "--claim", code,
                  "--by", "billing clerk 7")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for("flag cleared", lambda: rows(db, flagged, code)[0]["n"] == 0)
    row = history(db, enc.uuid)[0]
    assert row["withdrawal"] is None and "handled by billing clerk 7" in str(row["last_error"])
