"""Drain ratio: how close the sidecar drains a queued backlog to openIMIS's own intake speed.

In one run, back to back, on the local stack (``cdc-dev up``):

1. creates insured patients and one open visit each, then pins a fresh consumer group to the end
   of the data topics without starting a consumer;
2. saves ``--saves`` consultations (one transaction each): the backlog is queued in Kafka;
3. **direct**: builds the same claims (read, mapped, rendered in advance, codes suffixed ``D`` so
   they are new to openIMIS) and POSTs them straight through openHIM with ``--concurrency``
   threads: openIMIS's intake, claims/s from the first POST to the last answer;
4. **sidecar**: starts the consumer role on the pinned group (settle window 0) and measures
   claims/s from its readiness to the last ledger row of the backlog answered by openIMIS.

The last line is ``drain ratio R (sidecar S claims/s, direct D claims/s)`` (issue 11's target: R >= 0.95).

Run: ``.venv/bin/python bench/drain_ratio.py [--saves 200] [--concurrency 4]``
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from backlog_rss import Offsets, generate, setup
from benchlib import fast_factory, sigterm_as_interrupt
from pydantic import SecretStr

from cdc_claims import log
from cdc_claims.assemble.reader import OpenMrsReader
from cdc_claims.claim import FhirRenderer
from cdc_claims.db import placeholders, reader_connection_factory
from cdc_claims.mapping.apply import DraftBuilder
from cdc_claims.mapping.model import load_mapping
from cdc_claims.mapping.reading import reader_config
from cdc_claims.settings import OpenHimSettings
from cdc_claims.submit.client import OpenImisClient
from cdc_dev import credentials
from cdc_dev.bahmni import BahmniSim
from cdc_dev.base import http_ok
from cdc_dev.mariadb import MariaDB
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

SUBMITTED = ("checked", "entered", "processed", "valuated", "rejected")


def encounter_ids(db: MariaDB, visit_ids: list[int]) -> list[tuple[int, str]]:
    conn = fast_factory(db, autocommit=True)()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT encounter_id, uuid FROM encounter WHERE visit_id IN ({placeholders(len(visit_ids))})"
                " AND voided = 0 ORDER BY encounter_id",
                visit_ids,
            )
            return [(int(r[0]), str(r[1])) for r in cur.fetchall()]
    finally:
        conn.close()


def answered(db: MariaDB, uuids: list[str]) -> tuple[int, float | None]:
    """How many of ``uuids`` have a ledger row openIMIS answered, and when the last one changed."""
    conn = fast_factory(db, autocommit=True)()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*), UNIX_TIMESTAMP(MAX(updated_at)) FROM cdc_claims_ledger"
                f" WHERE unit_uuid IN ({placeholders(len(uuids))}) AND state IN ({placeholders(len(SUBMITTED))})",
                [*uuids, *SUBMITTED],
            )
            count, last = cur.fetchone()
    finally:
        conn.close()
    return int(count), float(last) if last is not None else None


def direct_claims(db: MariaDB, encounters: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """The backlog's claims, built as the sidecar builds them, under codes openIMIS has not seen."""
    mapping = load_mapping(DEMO_MAPPING)
    reader = OpenMrsReader(reader_connection_factory(credentials.database(db.stack.ports)), reader_config(mapping))
    reader.resolve()
    build, render = DraftBuilder(mapping), FhirRenderer()
    today = datetime.now(UTC).date()
    claims = []
    for encounter_id, _uuid in encounters:
        draft = build(reader.read("encounter", encounter_id), created=today, revision=0)
        claims.append(render.claim(replace(draft, code=draft.code + "D")))
    return claims


def post_all(claims: list[dict[str, Any]], concurrency: int) -> tuple[float, int]:
    """POST every claim through openHIM with ``concurrency`` threads; (seconds, failures)."""
    env = credentials.sidecar_env()
    settings = OpenHimSettings(
        base_url=env["CDC_CLAIMS_OPENHIM__BASE_URL"],
        username=env["CDC_CLAIMS_OPENHIM__USERNAME"],
        password=SecretStr(env["CDC_CLAIMS_OPENHIM__PASSWORD"]),
    )
    client = OpenImisClient(settings)
    failures = 0
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for future in [pool.submit(client.submit_claim, claim) for claim in claims]:
                try:
                    future.result()
                except Exception as err:
                    failures += 1
                    print(f"  direct POST failed: {type(err).__name__}: {str(err)[:120]}", flush=True)
        return time.monotonic() - start, failures
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--saves", type=int, default=200, help="queued Saves (default 200)")
    ap.add_argument("--concurrency", type=int, default=4, help="threads (direct) and submit_concurrency (sidecar)")
    ap.add_argument("--patients", type=int, default=40)
    ap.add_argument("--metrics-port", type=int, default=19584, help="base metrics port (consumer = base)")
    ap.add_argument("--timeout", type=float, default=600.0, help="longest wait for the sidecar's drain")
    args = ap.parse_args(argv)
    sigterm_as_interrupt()
    log.configure("WARNING")  # the direct client would log every claim

    db = MariaDB()
    sim = BahmniSim(fast_factory(db))
    sc = Sidecar(
        settle_seconds=0,
        metrics_base_port=args.metrics_port,
        roles=("consumer",),
        extra_env={"CDC_CLAIMS_SUBMIT_CONCURRENCY": str(args.concurrency)},
    )
    offsets = Offsets(sc)
    try:
        visits = setup(sim, args.saves, min(args.patients, args.saves), True)
        offsets.wait_quiet(3.0, 300.0)
        sc.prepare()  # pin the group to the end: the backlog starts here
        pinned = offsets.ends()
        count, gen_seconds = generate(sim, visits, 900.0)
        offsets.wait_quiet(3.0, 600.0, encounters=count, pinned=pinned)
        encounters = encounter_ids(db, [v.visit_id for v in visits])
        uuids = [u for _, u in encounters]
        print(f"backlog: {len(encounters)} Saves queued ({gen_seconds:.0f}s to save), group {sc.group}", flush=True)

        claims = direct_claims(db, encounters)
        direct_seconds, failures = post_all(claims, args.concurrency)
        direct_rate = (len(claims) - failures) / direct_seconds
        print(f"direct: {len(claims) - failures}/{len(claims)} claims in {direct_seconds:.1f}s", flush=True)

        port = sc.metrics_ports["consumer"]
        started = time.monotonic()
        sc.start_role("consumer")  # not sc.start(): that would pin the group to the end again
        while not http_ok(f"http://127.0.0.1:{port}/readyz"):
            if time.monotonic() - started > 90:
                raise RuntimeError(f"consumer not ready; see {sc.log('consumer')}")
            time.sleep(0.2)
        ready_wall = time.time()
        ready_after = time.monotonic() - started
        done, last = 0, None
        while time.monotonic() - started < args.timeout:
            time.sleep(1.0)
            done, last = answered(db, uuids)
            if done >= len(uuids):
                break
        if last is None or done < len(uuids):
            print(f"sidecar: only {done}/{len(uuids)} answered within {args.timeout:.0f}s", flush=True)
            return 1
        sidecar_seconds = max(last - ready_wall, 1e-3)
        sidecar_rate = done / sidecar_seconds
        print(f"sidecar: {done} claims in {sidecar_seconds:.1f}s after ready ({ready_after:.1f}s to ready)")
    finally:
        sc.stop()
        offsets.close()
    ratio = sidecar_rate / direct_rate
    print(f"drain ratio {ratio:.2f} (sidecar {sidecar_rate:.1f} claims/s, direct {direct_rate:.1f} claims/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
