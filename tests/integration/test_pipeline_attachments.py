"""Documents sent with the claim, on the real stack: a Bahmni upload reaches openIMIS and is read back there.

The simulator writes what Bahmni's document upload writes (an encounter of type "Patient Document"
with a ``Discharge Summary`` obs group whose ``Document`` member holds the file's path); the file
sits in a document store directory the sidecar reads. openIMIS's GraphQL API gives the attachment
back. A required document that is missing, or one above the size limit, holds the claim: it never
reaches openIMIS, and the first case heals by itself once the document is uploaded.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CaptureStack
from pipeline_support import (
    INSUREES,
    Tail,
    claim_code_of,
    claim_rows,
    ledger,
    openimis_claims,
    wait_for,
    wait_ledger,
)

from cdc_claims.db import reader_connection_factory
from cdc_claims.desk.store import DeskStore
from cdc_claims.payer.graphql import OpenImisGraphQL
from cdc_claims.settings import PayerSettings
from cdc_dev import credentials
from cdc_dev import openimis as dev_openimis
from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

pytest_plugins = ["pipeline_support"]  # the full_stack and sim fixtures

HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"
NIFEDIPINE = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"
MAX_BYTES = 64 * 1024
#: a small valid PDF (what a scanned discharge summary is, minus the scan)
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj"
    b" 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 100]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
_ATTACHMENTS = """query($code: String) { claimAttachments(claim_Code: $code) {
  edges { node { title mime date document } } } }"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("document_images")


@pytest.fixture(scope="module")
def sidecar(full_stack: CaptureStack, store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    mapping: dict[str, Any] = yaml.safe_load(DEMO_MAPPING.read_text())
    mapping["attachments"] = {
        "max_bytes": MAX_BYTES,
        "documents": [{"concept": "Discharge Summary", "title": "Discharge summary", "required": True}],
    }
    folder = tmp_path_factory.mktemp("attachments-mapping")
    (folder / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    (folder / "openimis_icd_codes.csv").write_text((DEMO_MAPPING.parent / "openimis_icd_codes.csv").read_text())
    env = {
        "CDC_CLAIMS_MAPPING_FILE": str(folder / "mapping.yaml"),
        "CDC_CLAIMS_DOCUMENTS__DIR": str(store),
        "CDC_CLAIMS_PAYER__RECHECK_SECONDS": "2",
    }
    with Sidecar(full_stack.stack, settle_seconds=0.5, metrics_base_port=19654, extra_env=env) as running:
        yield running


def attachments_in_openimis(openimis: OpenImis, code: str) -> list[dict[str, Any]]:
    api = f"http://127.0.0.1:{openimis.port}/api/"
    client = OpenImisGraphQL(PayerSettings(url=api, username=dev_openimis.USER, password=dev_openimis.PASSWORD))
    try:
        data = client.query(_ATTACHMENTS, {"code": code})
    finally:
        client.close()
    return [edge["node"] for edge in data["claimAttachments"]["edges"]]


def document_bytes(stored: str) -> bytes:
    """openIMIS 1.10 keeps the base64 as the text of a Python bytes literal (``b'JVBER...'``)."""
    text = stored[2:-1] if stored.startswith(("b'", 'b"')) else stored
    return base64.b64decode(text)


def test_a_discharge_summary_uploaded_after_the_consultation_goes_with_the_claim_and_is_read_back_in_openimis(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, store: Path
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    tail = Tail(full_stack.bootstrap, ["cdc-claims.claims"])
    try:
        patient = sim.create_patient(INSUREES[0], gender="F")
        visit = sim.start_visit(patient)
        enc = sim.save_consultation(visit, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 2)])
        code = claim_code_of(enc.uuid)
        held = wait_ledger(db, enc.uuid, "held")
        assert held["reason"] == "attachment_missing", held["detail"]
        assert "'Discharge summary'" in held["detail"] and visit.uuid in held["detail"]
        assert openimis_claims(openimis, code) == 0

        path = f"{patient.patient_id // 100 * 100}/{visit.visit_id}-Patient Document-{enc.uuid}.pdf"
        (store / path).parent.mkdir(parents=True, exist_ok=True)
        (store / path).write_bytes(PDF)
        sim.upload_document(visit, "Discharge Summary", path)
        # the upload is an encounter of its own: the held consultation is re-run by the recheck timer
        row = wait_ledger(db, enc.uuid, "checked", timeout=60)
        assert row["claim_code"] == code and openimis_claims(openimis, code) == 1
        (attachment,) = attachments_in_openimis(openimis, code)
        assert attachment["title"] == "Discharge summary" and attachment["mime"] == "application/pdf"
        assert document_bytes(attachment["document"]) == PDF
        assert wait_for("iclm_claim row", lambda: claim_rows(db, enc.encounter_id))[0]["status"] == "CHECKED"

        # the audit Bundle says which document went (size, SHA-1), the ledger where it is: neither holds it
        pdf_b64 = base64.b64encode(PDF).decode()
        bundles = tail.wait("audit Bundle", lambda seen: any(m.key == code for m in seen))
        audit = next(m.value for m in bundles if m.key == code)
        claim = next(e["resource"] for e in audit["entry"] if e["resource"]["resourceType"] == "Claim")
        (info,) = [i for i in claim["supportingInfo"] if "valueAttachment" in i]
        assert info["valueAttachment"]["size"] == len(PDF) and "data" not in info["valueAttachment"]
        assert pdf_b64 not in str(audit)
        entry = ledger(db, enc.uuid)
        assert entry is not None and pdf_b64 not in str(entry)
        # and the claims desk lists it under "Documents sent"
        detail = DeskStore(reader_connection_factory(credentials.database())).unit("encounter", enc.uuid)
        assert detail is not None
        assert [(d.title, d.content_type) for d in detail.documents] == [("Discharge summary", "application/pdf")]
    finally:
        tail.close()


def test_a_document_above_the_size_limit_holds_the_claim_and_never_reaches_openimis(
    sidecar: Sidecar, sim: BahmniSim, full_stack: CaptureStack, store: Path
) -> None:
    db, openimis = full_stack.mariadb, OpenImis(full_stack.stack)
    patient = sim.create_patient(INSUREES[1], gender="M")
    visit = sim.start_visit(patient)
    path = f"big/{visit.uuid}.pdf"
    (store / "big").mkdir(exist_ok=True)
    (store / path).write_bytes(PDF + b"0" * MAX_BYTES)
    sim.upload_document(visit, "Discharge Summary", path)
    enc = sim.save_consultation(visit, diagnoses=[Dx(HYPERTHYROIDISM)], drugs=[Drug(NIFEDIPINE, 1)])
    held = wait_ledger(db, enc.uuid, "held")
    assert held["reason"] == "attachment_too_large", held["detail"]
    assert "the limit is 0.1 MiB" in held["detail"]
    assert openimis_claims(openimis, claim_code_of(enc.uuid)) == 0
    assert claim_rows(db, enc.encounter_id) == []
