"""The one-shot operator commands: what billing staff or an operator run after fixing a cause.

    cdc-claims check-mapping          what the database uses that the mapping lacks
                      --openimis      and what of the mapping disagrees with the live openIMIS
    cdc-claims rerun-held             held and failed units through the claim service again
    cdc-claims backfill --since D     claim what has no claim yet in a date range (history, long outage)
    cdc-claims resubmit --unit U      corrected lines openIMIS rejected, as a replacement claim
    cdc-claims withdrawal-handled     withdrawals done in openIMIS by billing staff
    cdc-claims desk-user NAME         a line of the claims desk's users file

Each prints one line per unit or claim (progress on long runs) and exits non-zero when
something still needs a person. What the actions do lives in :mod:`cdc_claims.actions`, shared
with the desk and audited there (``--by``, else the OS user); this module only prints.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from cdc_claims.actions import LiveActions
from cdc_claims.db import reader_connection_factory
from cdc_claims.desk.actions import ActionResult
from cdc_claims.desk.auth import user_line
from cdc_claims.errors import CdcClaimsError, ConfigError
from cdc_claims.mapping.check import Report, render_text
from cdc_claims.mapping.check import check_mapping as run_check
from cdc_claims.payer.compare import compare, insuree_findings, reference_term_findings
from cdc_claims.settings import Settings


def _say(text: str) -> None:
    print(text, flush=True)


def operator(by: str | None) -> str:
    """Who the audit names: ``--by`` if given, else the OS user (a container may have no name)."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (a container's arbitrary uid)
        return f"uid {os.getuid()}"


def _done(result: ActionResult) -> int:
    _say(result.message)
    return 0 if result.ok else 1


def check_mapping(settings: Settings, *, openimis: bool = False) -> int:
    """What the database uses that the mapping lacks; with ``openimis``, also every entry that
    disagrees with the live openIMIS (codes, uuids, pricelists, prices, insuree uuids). Exit 1
    when something would block claims, 2 when openIMIS could not be read."""
    from cdc_claims import roles  # here, not at the top: roles loads the Kafka client, which this never needs

    mapping = roles.load(settings)
    conn = reader_connection_factory(settings.db)()
    try:
        report = run_check(conn, mapping)
    finally:
        conn.close()
    if openimis:
        if not settings.payer.enabled:
            raise ConfigError(
                "check-mapping --openimis needs openIMIS's API: set CDC_CLAIMS_PAYER__URL (and __PASSWORD)"
            )
        client = roles.payer_client(settings)
        cached = mapping.openimis.insuree_uuids
        try:
            _say(f"reading the catalogue from openIMIS ({settings.payer.url}) ...")
            catalogue = client.catalogue()
            if cached:
                _say(f"looking up the {len(cached)} insuree(s) of openimis.insuree_uuids ...")
            insurees = client.insuree_uuids(cached)
        except CdcClaimsError as err:
            print(f"cdc-claims: cannot read openIMIS: {err}", file=sys.stderr)
            return 2
        finally:
            client.close()
        found = compare(mapping, catalogue) + reference_term_findings(report.findings, catalogue)
        found += insuree_findings(mapping, insurees)
        report = Report(report.findings + tuple(found))
    print(render_text(report), end="")
    return 0 if report.ok else 1


def rerun_held(
    settings: Settings, *, reason: str | None = None, unit_uuid: str | None = None, by: str | None = None
) -> int:
    """Run held and failed units through the claim service again (after fixing the cause)."""
    with LiveActions(settings, progress=_say) as actions:
        return _done(actions.rerun_held(reason=reason, unit_uuid=unit_uuid, by=operator(by)))


def backfill(
    settings: Settings,
    *,
    since: datetime,
    until: datetime | None = None,
    facilities: Sequence[str] = (),
    dry_run: bool = False,
    by: str | None = None,
) -> int:
    """Claim every claimable unit of ``[since, until)`` the ledger does not know (:mod:`cdc_claims.backfill`)."""
    from cdc_claims import backfill as job

    what = job.Range(settings.settle.mode, since, until or job.NO_END, tuple(facilities))
    return job.run(settings, what, dry_run=dry_run, by=operator(by), out=_say)


def resubmit(settings: Settings, *, unit_uuid: str, force: bool = False, by: str | None = None) -> int:
    """Send the corrected rejected lines of one unit as a replacement claim (never accepted ones)."""
    with LiveActions(settings, progress=_say) as actions:
        return _done(actions.resubmit(unit_uuid, force=force, by=operator(by)))


def refresh(settings: Settings, *, claim_code: str, by: str | None = None) -> int:
    """Ask openIMIS about one claim now instead of at the poller's next turn."""
    with LiveActions(settings, progress=_say) as actions:
        return _done(actions.refresh(claim_code, by=operator(by)))


def withdrawal_handled(settings: Settings, *, claim_code: str, lines: Sequence[str] | None, by: str) -> int:
    """Billing staff withdrew lines (or the claim) in openIMIS: clear the flags, keep who did it."""
    with LiveActions(settings, progress=_say) as actions:
        return _done(actions.withdrawal_handled(claim_code, lines, by=by))


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
