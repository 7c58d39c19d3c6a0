"""What a document costs a claim: reading it, base64, FHIR validation, and the memory it takes.

    .venv/bin/python bench/attachments.py [--sizes 0.1,1,5,10] [--runs 5]

Pure, no services: a random file of each size (MiB) in a temporary document store, then the
renderer the consumer uses (``FhirRenderer`` with ``LocalDocumentFiles``) renders the Claim for
its POST and the audit Bundle (which keeps the size and hash, not the content). Prints the
median time of each step and the peak Python memory of one claim (tracemalloc), against a claim
without a document. The POST itself (openIMIS storing the base64) is not in these figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from cdc_claims.assemble.documents import LocalDocumentFiles
from cdc_claims.assemble.model import (
    ClaimAttachment,
    ClaimContext,
    ClaimDiagnosis,
    ClaimDraft,
    ClaimLine,
    Encounter,
    Patient,
    Visit,
)
from cdc_claims.claim.render import FhirRenderer

MIB = 1024 * 1024


def _draft(attachments: tuple[ClaimAttachment, ...]) -> ClaimDraft:
    item = "05620ad6-e902-4147-a69b-f329edec3068"
    line = ClaimLine(1, "item", "0171", item, Decimal(2), Decimal(35), "o-1", 1, "drug")
    return ClaimDraft(
        code="RAHOS001-bench", unit_kind="encounter", unit_uuid="enc-1", visit_uuid="v-1", encounter_uuids=("enc-1",),
        patient_uuid="p-1", patient_id=1, insuree="070707081", facility="RAHOS001", facility_code="RAHOS001",
        enterer="RHOS0011", visit_type="O", period_start=date(2026, 12, 1), period_end=date(2026, 12, 1),
        created=date(2026, 12, 2), diagnoses=(ClaimDiagnosis("A09", 1, True),), lines=(line,), attachments=attachments,
    )  # fmt: skip


def _ctx() -> ClaimContext:
    at = datetime(2026, 12, 1, 9)
    enc = Encounter(1, "enc-1", "t", "Consultation", at, False, None)
    visit = Visit(1, "v-1", "t", "OPD", at, None, False, None)
    return ClaimContext("encounter", "enc-1", Patient(1, "p-1", "F", None, "070707081"), visit, (enc,))


def _measure(renderer: FhirRenderer, draft: ClaimDraft, runs: int) -> tuple[float, float, float]:
    ctx = _ctx()
    claim_ms, audit_ms = [], []
    for _ in range(runs):
        started = time.perf_counter()
        claim = renderer.claim(draft)
        rendered = time.perf_counter()
        renderer.audit_bundle(ctx, draft, claim)
        claim_ms.append((rendered - started) * 1000)
        audit_ms.append((time.perf_counter() - rendered) * 1000)
    tracemalloc.start()
    renderer.audit_bundle(ctx, draft, renderer.claim(draft))
    peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    return statistics.median(claim_ms), statistics.median(audit_ms), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.1,1,5,10", help="document sizes in MiB, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        limit = int(max(sizes) * MIB) + 1
        renderer = FhirRenderer(LocalDocumentFiles(store, None, max_bytes=limit, max_total_bytes=limit))
        base_claim, base_audit, base_peak = _measure(renderer, _draft(()), args.runs)
        print(f"{'document':>10} {'Claim (read+base64+validate)':>30} {'audit Bundle':>14} {'peak memory':>12}")
        print(f"{'none':>10} {base_claim:>27.1f} ms {base_audit:>11.1f} ms {base_peak:>8.1f} MiB")
        for size in sizes:
            name = f"doc-{size}.pdf"
            (store / name).write_bytes(b"%PDF-1.4\n" + os.urandom(int(size * MIB) - 9))
            doc = ClaimAttachment("o-doc", "Discharge summary", "application/pdf", "documents", name, date.today())
            claim_ms, audit_ms, peak = _measure(renderer, _draft((doc,)), args.runs)
            print(f"{size:>6.1f} MiB {claim_ms:>27.1f} ms {audit_ms:>11.1f} ms {peak:>8.1f} MiB")


if __name__ == "__main__":
    main()
