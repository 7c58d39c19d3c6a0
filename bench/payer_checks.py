"""What the payer checks cost: the catalogue read, one policy look-up, and the checks per claim.

    .venv/bin/python bench/payer_checks.py [--insurees 20] [--claims 10000]

Needs the local stack's openIMIS (``cdc-dev up``). Prints the catalogue read time (background,
every ``payer.refresh_seconds``), the policy look-up time per insuree on a cache miss (p50/p95,
the only part on a claim's path, once per ``payer.policy_ttl_seconds`` per insuree) and the
in-process cost of both rules per claim with the catalogue and the policies in memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from datetime import date
from decimal import Decimal

from pydantic import SecretStr

from cdc_claims.assemble.model import ClaimDiagnosis, ClaimDraft, ClaimLine
from cdc_claims.payer.checks import PayerChecks
from cdc_claims.payer.graphql import OpenImisGraphQL
from cdc_claims.settings import PayerSettings
from cdc_dev import credentials

INSUREES = ["070707081", "070707070", "070707055", "111111119", "171000001", "100000001", "104000001"]


class _Fixed:
    def __init__(self, value: object) -> None:
        self.value = value

    def current(self) -> object:
        return self.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--insurees", type=int, default=20, help="policy look-ups to time")
    parser.add_argument("--claims", type=int, default=10_000, help="claims to check in process")
    args = parser.parse_args()
    env = credentials.sidecar_env()
    client = OpenImisGraphQL(
        PayerSettings(
            url=env["CDC_CLAIMS_PAYER__URL"],
            username=env["CDC_CLAIMS_PAYER__USERNAME"],
            password=SecretStr(env["CDC_CLAIMS_PAYER__PASSWORD"]),
        )
    )
    started = time.perf_counter()
    catalogue = client.catalogue()
    read = time.perf_counter() - started
    print(
        f"catalogue read: {read:.2f} s"
        f" ({len(catalogue.facilities)} facilities, {len(catalogue.medical)} items+services)"
    )
    times = []
    for i in range(args.insurees):
        started = time.perf_counter()
        client.policies(INSUREES[i % len(INSUREES)])
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p95 = times[max(0, int(len(times) * 0.95) - 1)]
    print(f"policy look-up (cache miss): p50 {statistics.median(times):.1f} ms, p95 {p95:.1f} ms over {len(times)}")
    policies = client.policies("070707081")
    client.close()

    lines = tuple(
        ClaimLine(i + 1, "service" if i % 2 else "item", "A1" if i % 2 else "0001", "x", Decimal(1),
                  Decimal(400 if i % 2 else 10), f"src-{i}", 1, "drug")
        for i in range(6)
    )  # fmt: skip
    draft = ClaimDraft(
        code="RAHOS001-bench", unit_kind="encounter", unit_uuid="u", visit_uuid="v", encounter_uuids=("u",),
        patient_uuid="p", patient_id=1, insuree="x", facility="RAHOS001", facility_code="RAHOS001",
        enterer="RHOS0011", visit_type="O", period_start=date.today(), period_end=date.today(),
        created=date.today(), diagnoses=(ClaimDiagnosis("A09", 1, True),), lines=lines,
    )  # fmt: skip

    class _Policies:
        def policies(self, insurance_number: str) -> object:
            return policies

    checks = PayerChecks(_Fixed(catalogue), _Policies())  # type: ignore[arg-type]
    started = time.perf_counter()
    for i in range(args.claims):
        assert checks.check(replace(draft, code=f"c{i}"), "070707081") is None
    per = (time.perf_counter() - started) / args.claims * 1e6
    print(f"checks in process (6 lines, catalogue and policies in memory): {per:.1f} us per claim")


if __name__ == "__main__":
    main()
