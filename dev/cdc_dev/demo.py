"""``cdc-dev demo``: one Bahmni Save, followed all the way to the billing tables.

1. bring the local stack up (MariaDB + Debezium/Kafka, openIMIS, openHIM emulator);
2. start the three sidecar roles as real processes (settle window 2 s);
3. register an insured patient (openIMIS demo insuree ``070707081``), open an OPD visit and
   save a consultation: a confirmed diagnosis, a drug and a lab test, in ONE transaction, as
   Bahmni does;
4. show the claim openIMIS accepted, the reply on Kafka, and the ``iclm_*`` rows;
5. process the claim inside openIMIS (as a medical officer would) and show the later status
   flowing back into ``iclm_claim`` through the poller: the encounter reads "reimbursed";
6. print the claims desk's address for that encounter and how to sign in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from cdc_claims.writeback.iclm import encounter_billing_state
from cdc_dev import credentials
from cdc_dev import stack as dev
from cdc_dev.bahmni import BahmniSim, Drug, Dx
from cdc_dev.base import Stack, StackError
from cdc_dev.mariadb import MariaDB
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import Sidecar

HYPERTHYROIDISM = "de617543-4e14-11e4-8a57-0800271c1b75"  # demo mapping -> openIMIS ICD A09
NIFEDIPINE = "6f0242cf-1cf2-4c0d-a522-e8628f0cd988"  # -> item 0171
THYROID_FUNCTION = "f2af3cd5-634f-4b17-97c5-d5cd52ee2867"  # lab -> service I125
DEMO_INSUREE = "070707081"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 90.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise StackError(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def _query(db: MariaDB, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    conn = db.connect("cdc_reader", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def run_demo(*, bring_up: bool = True) -> int:
    stack = Stack.from_env()
    if bring_up:
        dev.up()
    db = MariaDB(stack)
    print("\n==> starting the sidecar: consumer, writer, poller (settle window 2 s)", flush=True)
    with Sidecar(stack, settle_seconds=2, poll_seconds=2, metrics_base_port=19474):
        sim = BahmniSim(lambda: db.connect("cdc_admin"))
        patient = sim.create_patient(DEMO_INSUREE, gender="F")
        visit = sim.start_visit(patient)
        encounter = sim.save_consultation(
            visit,
            diagnoses=[Dx(HYPERTHYROIDISM)],
            drugs=[Drug(NIFEDIPINE, 10)],
            labs=[THYROID_FUNCTION],
        )
        print(
            f"==> Bahmni Save committed: encounter {encounter.uuid} (patient {patient.uuid}): "
            "diagnosis Hyperthyroidism (confirmed, primary), Nifedipine x10, Thyroid Function test",
            flush=True,
        )
        claim = wait_for(
            "the claim row in iclm_claim",
            lambda: _query(
                db,
                "SELECT claim_code, status, claimed_total, approved_total FROM iclm_claim WHERE encounter = %s",
                (encounter.encounter_id,),
            ),
        )[0]
        elapsed = time.time() - encounter.committed_at
        print(f"==> claim {claim['claim_code']} in openIMIS and in iclm_claim {elapsed:.1f}s after the commit")
        print(
            f"    iclm_claim: status {claim['status']}, claimed {claim['claimed_total']}, "
            f"approved {claim['approved_total']}"
        )
        items = _query(
            db,
            "SELECT pi.price, ci.quantity_provided, ci.status, ci.price_approved FROM iclm_claim_item ci "
            "JOIN iclm_provided_item pi ON pi.iclm_provided_item_id = ci.item "
            "JOIN iclm_claim c ON c.iclm_claim_id = ci.claim WHERE c.claim_code = %s ORDER BY pi.price",
            (claim["claim_code"],),
        )
        for item in items:
            print(f"    iclm_claim_item: {item['quantity_provided']} x {item['price']} -> {item['status']}")
        ledger = _query(db, "SELECT state FROM cdc_claims_ledger WHERE claim_code = %s", (claim["claim_code"],))
        print(f"    cdc_claims_ledger: {ledger[0]['state'] if ledger else '?'}")

        print("==> openIMIS reviews and processes the claim (GraphQL processClaims) ...", flush=True)
        print("    " + OpenImis(stack).process_claim(claim["claim_code"]).strip().replace("\n", "\n    "))
        final = wait_for(
            "the processed status in iclm_claim (poller)",
            lambda: [
                r
                for r in _query(
                    db,
                    "SELECT status, approved_total FROM iclm_claim WHERE claim_code = %s",
                    (claim["claim_code"],),
                )
                if r["status"] in ("PROCESSED", "VALUATED")
            ],
        )[0]
        conn = db.connect("cdc_reader", autocommit=True)
        try:
            state = encounter_billing_state(conn, encounter.uuid)
        finally:
            conn.close()
        print(f"==> iclm_claim now {final['status']}, approved {final['approved_total']}: the encounter reads {state}")
    print("\nDEMO OK: Bahmni Save -> Debezium -> Kafka -> claim in openIMIS -> reply -> iclm_* billing rows")
    desk = credentials.desk(stack)
    print(
        f"\n==> the claims desk: {desk.base_url}/units/encounter/{encounter.uuid}\n"
        f"    sign in as {desk.user} / {desk.password} (local user), or 'Sign in with' the dev OpenID provider\n"
        "    (the stack stays up: .venv/bin/cdc-dev down stops it)"
    )
    return 0
