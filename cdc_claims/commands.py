"""The one-shot operator commands: what billing staff or an operator run after fixing a cause.

    cdc-claims check-mapping          what the database uses that the mapping lacks
    cdc-claims rerun-held             held and failed units through the claim service again
    cdc-claims resubmit --unit U      corrected lines openIMIS rejected, as a replacement claim
    cdc-claims withdrawal-handled     withdrawals done in openIMIS by billing staff
    cdc-claims desk-user NAME         a line of the claims desk's users file

Each prints one line per unit or claim (progress on long runs) and exits non-zero when
something still needs a person. The adapters come from :mod:`cdc_claims.roles`.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TextIO

from cdc_claims import roles
from cdc_claims.db import reader_connection_factory, writer_connection_factory
from cdc_claims.desk.auth import user_line
from cdc_claims.errors import HELD_REASONS, CdcClaimsError, ConfigError
from cdc_claims.ledger.store import Ledger
from cdc_claims.mapping.check import check_mapping as run_check
from cdc_claims.mapping.check import render_text
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.reply.model import WithdrawalNotice
from cdc_claims.settings import Settings
from cdc_claims.submit.client import OpenImisClient


def _say(text: str) -> None:
    print(text, flush=True)


def check_mapping(settings: Settings) -> int:
    mapping = roles.load(settings)
    conn = reader_connection_factory(settings.db)()
    try:
        report = run_check(conn, mapping)
    finally:
        conn.close()
    print(render_text(report), end="")
    return 0 if report.ok else 1


def rerun_held(settings: Settings, *, reason: str | None = None, unit_uuid: str | None = None) -> int:
    """Run held and failed units through the claim service again (after fixing the cause)."""
    if reason is not None and reason not in HELD_REASONS:
        raise ConfigError(f"unknown reason {reason!r}; one of: {', '.join(HELD_REASONS)}")
    publisher = roles.publisher_for(settings, "cdc-claims-rerun")
    client = OpenImisClient(settings.openhim)
    try:
        claims = roles.build_claims(settings, publisher, client)
        entries = claims.ledger.to_rerun(reason=reason, unit_uuid=unit_uuid)
        _say(f"{len(entries)} held/failed/stranded claim(s) to re-run")
        failures = 0
        for entry in entries:
            unit_id = claims.reader.unit_id(entry.unit_kind, entry.unit_uuid)
            if unit_id is None:
                _say(f"  {entry.unit_kind} {entry.unit_uuid}: no longer in the database")
                failures += 1
                continue
            try:
                result = claims.service.process(UnitRef(entry.unit_kind, unit_id))
            except CdcClaimsError as err:
                _say(f"  {entry.unit_kind} {entry.unit_uuid}: not now ({err.reason}): {err}")
                failures += 1
                continue
            _say(
                f"  {entry.unit_kind} {entry.unit_uuid}: {result.outcome}"
                + (f" ({result.reason})" if result.reason else "")
                + (f" claim {result.claim_code}" if result.claim_code else "")
            )
            failures += result.outcome in ("held", "failed")
        return 1 if failures else 0
    finally:
        client.close()
        publisher.close()


def resubmit(settings: Settings, *, unit_uuid: str, force: bool = False) -> int:
    """Send the corrected rejected lines of one unit as a replacement claim (never accepted ones)."""
    publisher = roles.publisher_for(settings, "cdc-claims-resubmit")
    client = OpenImisClient(settings.openhim)
    try:
        claims = roles.build_claims(settings, publisher, client)
        ledger = claims.ledger
        entry = next((e for kind in ("encounter", "visit") if (e := ledger.get(kind, unit_uuid))), None)
        if entry is None:
            _say(f"{unit_uuid}: no claim for this encounter or visit")
            return 1
        unit_id = claims.reader.unit_id(entry.unit_kind, unit_uuid)
        if unit_id is None:
            _say(f"{entry.unit_kind} {unit_uuid}: no longer in the database")
            return 1
        result = claims.service.process(UnitRef(entry.unit_kind, unit_id), resubmit=True, force=force)
        _say(f"{entry.unit_kind} {unit_uuid}: {result.outcome} ({result.reason or '-'})")
        for record in ledger.claims_of(entry.unit_kind, unit_uuid):
            _say(f"  {record.kind:<11} {record.claim_code}  {record.state.value}")
        return 0 if result.outcome not in ("held", "failed") else 1
    finally:
        client.close()
        publisher.close()


def withdrawal_handled(settings: Settings, *, claim_code: str, lines: Sequence[str] | None, by: str) -> int:
    """Billing staff withdrew lines (or the claim) in openIMIS: clear the flags, keep who did it."""
    ledger = Ledger(writer_connection_factory(settings.db))
    record = ledger.claim(claim_code)
    if record is None or not record.withdrawal:
        _say(f"{claim_code}: nothing to withdraw")
        return 1
    pending: dict[str, Any] = json.loads(record.withdrawal)
    done = set(lines or pending)
    unknown = done - set(pending)
    if unknown:
        _say(f"{claim_code}: not flagged for withdrawal: {', '.join(sorted(unknown))}")
        return 1
    left = {k: v for k, v in pending.items() if k not in done}
    now = datetime.now(UTC)
    note = f"withdrawal of {', '.join(sorted(done))} handled by {by} at {now:%Y-%m-%dT%H:%M:%SZ}"
    ledger.upsert_claim(
        replace(record, withdrawal=json.dumps(left, sort_keys=True) if left else None, last_error=note[:2000])
    )
    publisher = roles.publisher_for(settings, "cdc-claims-withdrawal")
    try:
        remaining = tuple(sorted(k for k in left if k != "*"))
        publisher.withdrawal(WithdrawalNotice(claim_code, "handled", note, now, remaining, "*" in left))
        publisher.flush()
    finally:
        publisher.close()
    _say(f"{claim_code}: {note}; {len(left)} still to withdraw")
    return 0


def desk_user(name: str, *, stdin: TextIO | None = None) -> int:
    """Print ``name:pbkdf2_sha256$...`` for the desk's users file (``CDC_CLAIMS_DESK__USERS_FILE``).

    At a terminal the password is asked twice without echo; otherwise the first line of stdin
    is the password (``printf '%s\\n' "$PW" | cdc-claims desk-user amina``). It is never printed.
    """
    source = stdin if stdin is not None else sys.stdin
    if source.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            print("cdc-claims: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = source.readline().rstrip("\r\n")
    try:
        line = user_line(name, password)
    except ValueError as err:
        print(f"cdc-claims: {err}", file=sys.stderr)
        return 2
    _say(line)
    return 0
