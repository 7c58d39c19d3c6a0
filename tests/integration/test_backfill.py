"""``cdc-claims backfill`` on the real stack, racing the live sidecar: one claim per encounter, ever.

Encounters dated in the past (a hospital that used Bahmni before the sidecar) are saved while no
consumer runs, so only a backfill can claim them; more are saved once the live sidecar runs, and two
backfills are started at once over the same range, so all three go for those (and the two backfills
for every one). The submit lease and the ledger must make that one claim each in openIMIS; a third
backfill finds everything known.
"""

from __future__ import annotations

import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import CaptureStack
from pipeline_support import (
    INSUREES,
    claim_code_of,
    claim_rows,
    consultation,
    openimis_claims,
    rows,
    run_cli,
    wait_for,
    wait_ledger,
)

from cdc_dev.bahmni import BahmniSim, EncounterRef
from cdc_dev.openimis import OpenImis
from cdc_dev.sidecar import DEMO_MAPPING, Sidecar

pytestmark = pytest.mark.integration
pytest_plugins = ["pipeline_support"]  # the full_stack fixture

SENT = ("entered", "checked", "processed", "valuated", "rejected")


def test_backfill_beside_the_live_sidecar_claims_each_past_encounter_once_and_a_rerun_claims_nothing(
    full_stack: CaptureStack, tmp_path: Path
) -> None:
    started = time.monotonic()
    db = full_stack.mariadb
    # a past hour of its own (policies run 2025-2030), so no other test's encounters fall in it
    base = datetime(2026, 2, 1, 8, 0) + timedelta(minutes=random.randrange(0, 200 * 24 * 60))
    clock = [base]
    sim = BahmniSim(lambda: db.connect("cdc_admin"), clock=lambda: clock[0])

    def past_consultation(minute: int) -> EncounterRef:
        clock[0] = base + timedelta(minutes=minute)
        return consultation(sim, INSUREES[minute % len(INSUREES)])[1]

    before = [past_consultation(m) for m in (30, 31, 32)]  # no consumer runs: only the backfill sees these
    facility = rows(db, "SELECT name FROM location WHERE location_id = %s", before[0].visit.location_id)[0]["name"]
    since, until = f"{base:%Y-%m-%dT%H:%M}", f"{base + timedelta(hours=1):%Y-%m-%dT%H:%M}"
    args = ("backfill", "--since", since, "--until", until, "--facility", facility, "--by", "backfill-test")
    mapping = yaml.safe_load(DEMO_MAPPING.read_text())

    sidecar = Sidecar(full_stack.stack, settle_seconds=0.0, roles=("consumer", "writer"), metrics_base_port=19564)
    dry = run_cli(sidecar, mapping, tmp_path, *args, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "3 unit(s), 0 already known, 3 would be claimed" in dry.stdout
    assert all(e.uuid in dry.stdout for e in before)
    assert rows(db, "SELECT 1 FROM cdc_claims_ledger WHERE unit_uuid = %s", before[0].uuid) == []  # untouched

    with sidecar:
        during = [past_consultation(m) for m in (0, 1, 2)]  # the live stream sees these: a race
        for i in range(2):
            (tmp_path / f"b{i}").mkdir()
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # and two backfills at once: they race each other too
            outs = list(pool.map(lambda _i: run_cli(sidecar, mapping, tmp_path / f"b{_i}", *args), range(2)))
        backfill_seconds = time.monotonic() - t0
        claimed = 0
        for out in outs:
            assert out.returncode == 0, out.stdout + out.stderr
            summary = out.stdout.strip().splitlines()[-1]
            assert "6 unit(s)" in summary and "0 held" in summary and "0 failed, 0 not now" in summary, summary
            claimed += int(re.search(r"(\d+) claimed", summary).group(1))  # type: ignore[union-attr]
        assert 3 <= claimed <= 6, [o.stdout for o in outs]  # the three before: the backfills' alone, once

        openimis = OpenImis(full_stack.stack)
        for enc in before + during:
            assert wait_ledger(db, enc.uuid, *SENT)["claim_code"] == claim_code_of(enc.uuid)
            assert openimis_claims(openimis, claim_code_of(enc.uuid)) == 1
            assert len(rows(db, "SELECT 1 FROM cdc_claims_ledger WHERE unit_uuid = %s", enc.uuid)) == 1
            assert len(rows(db, "SELECT 1 FROM cdc_claims_claim WHERE unit_uuid = %s", enc.uuid)) == 1
            wait_for("iclm_claim row", lambda enc=enc: claim_rows(db, enc.encounter_id))  # type: ignore[misc]
            assert len(claim_rows(db, enc.encounter_id)) == 1

        again = run_cli(sidecar, mapping, tmp_path, *args)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 claimed" in again.stdout and "6 skipped (already known)" in again.stdout

    audit = rows(
        db,
        "SELECT ok, message FROM cdc_claims_action WHERE actor = 'backfill-test' AND target LIKE %s ORDER BY id",
        f"%{since[:10]}%",
    )
    assert [a["ok"] for a in audit][-2:] == [1, 1] and "6 skipped" in audit[-1]["message"]
    print(
        f"\nbackfill: 6 units in {backfill_seconds:.1f}s ({6 / backfill_seconds:.1f}/s, {claimed} claimed by them);"
        f" test {time.monotonic() - started:.1f}s\n" + "\n".join(o.stdout.strip().splitlines()[-1] for o in outs)
    )
