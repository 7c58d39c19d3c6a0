"""``cdc-claims``: the one command operators use.

    cdc-claims run consumer|writer|poller   long-running roles (what the Helm chart deploys)
    cdc-claims run desk                     the claims desk: billing staff's web app
    cdc-claims desk-user NAME               a users-file line for NAME (password from stdin)
    cdc-claims check-mapping [--openimis]   what the database uses that the mapping lacks (and openIMIS disagrees with)
    cdc-claims rerun-held [--reason R]      re-run held/failed claims once the cause is fixed
    cdc-claims backfill --since D [--until D] [--facility F] [--dry-run]
                                            claim units of a date range that have no claim yet
    cdc-claims resubmit --unit U [--force]  send corrected lines openIMIS rejected, as a replacement
    cdc-claims refresh --claim C            ask openIMIS about one claim now
    cdc-claims withdrawal-handled --claim C withdrawals done in openIMIS by billing staff

The actions (backfill, re-run, resubmit, refresh, withdrawal handled) are audited in cdc_claims_action
with who asked: ``--by``, else the OS user.

The local stack and the demo are development tooling, outside the product: ``cdc-dev`` (dev/).
Imports are lazy so that a role only loads what it uses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime

from cdc_claims import __version__


def _time(text: str) -> datetime:
    from cdc_claims.backfill import parse_time

    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc-claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"cdc-claims {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a long-running role")
    run.add_argument("role", choices=["consumer", "writer", "poller", "desk"])

    check = sub.add_parser("check-mapping", help="list concepts, drugs, locations and ICD codes the mapping lacks")
    check.add_argument(
        "--openimis",
        action="store_true",
        help="also compare every entry with the live openIMIS: codes, uuids, pricelists, prices (CDC_CLAIMS_PAYER__*)",
    )

    rerun = sub.add_parser("rerun-held", help="re-run held or failed claims")
    rerun.add_argument("--reason", help="only claims held for this reason (see errors.HELD_REASONS)")
    rerun.add_argument("--unit", help="only this encounter/visit uuid")
    rerun.add_argument("--by", help="who asks (audited; default: the OS user)")

    back = sub.add_parser("backfill", help="claim the encounters (or visits) of a date range that have no claim yet")
    back.add_argument("--since", required=True, type=_time, help="from this date/time (YYYY-MM-DD[THH:MM])")
    back.add_argument("--until", type=_time, help="up to, not including, this date/time (default: no end)")
    back.add_argument(
        "--facility", action="append", default=[], help="only visits at this location (uuid or name; repeatable)"
    )
    back.add_argument("--dry-run", action="store_true", help="count and list what would be claimed; change nothing")
    back.add_argument("--by", help="who asks (audited; default: the OS user)")

    resubmit = sub.add_parser("resubmit", help="re-send rejected lines that were corrected, as a replacement claim")
    resubmit.add_argument("--unit", required=True, help="encounter/visit uuid")
    resubmit.add_argument(
        "--force", action="store_true", help="also lines that did not change (the cause was fixed in openIMIS)"
    )
    resubmit.add_argument("--by", help="who asks (audited; default: the OS user)")

    refresh = sub.add_parser("refresh", help="ask openIMIS about one claim now (as the poller would)")
    refresh.add_argument("--claim", required=True, help="claim code")
    refresh.add_argument("--by", help="who asks (audited; default: the OS user)")

    handled = sub.add_parser("withdrawal-handled", help="mark withdrawals of a claim as done in openIMIS")
    handled.add_argument("--claim", required=True, help="claim code")
    handled.add_argument("--line", action="append", help="only this line (source uuid; repeatable)")
    handled.add_argument("--by", required=True, help="who handled it (kept with the claim)")

    user = sub.add_parser("desk-user", help="print a desk users-file line (reads the password from stdin)")
    user.add_argument("name", help="the user name staff sign in with")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "desk-user":  # needs no settings: run it anywhere the package is installed
        from cdc_claims.commands import desk_user

        return desk_user(args.name)
    from cdc_claims import log
    from cdc_claims.errors import ConfigError
    from cdc_claims.settings import Settings

    try:
        settings = Settings()
        log.configure(settings.log_level)
        if args.command == "run":
            from cdc_claims import roles

            if args.role == "desk":  # the desk's buttons are the audited actions the commands run
                from cdc_claims.actions import LiveActions

                with LiveActions(settings) as actions:
                    return roles.run_desk(settings, actions)
            return roles.run_role(args.role, settings)
        from cdc_claims import commands

        if args.command == "check-mapping":
            return commands.check_mapping(settings, openimis=args.openimis)
        if args.command == "rerun-held":
            return commands.rerun_held(settings, reason=args.reason, unit_uuid=args.unit, by=args.by)
        if args.command == "backfill":
            return commands.backfill(
                settings,
                since=args.since,
                until=args.until,
                facilities=args.facility,
                dry_run=args.dry_run,
                by=args.by,
            )
        if args.command == "resubmit":
            return commands.resubmit(settings, unit_uuid=args.unit, force=args.force, by=args.by)
        if args.command == "refresh":
            return commands.refresh(settings, claim_code=args.claim, by=args.by)
        if args.command == "withdrawal-handled":
            return commands.withdrawal_handled(settings, claim_code=args.claim, lines=args.line, by=args.by)
    except ConfigError as err:
        print(f"cdc-claims: configuration error:\n{err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
