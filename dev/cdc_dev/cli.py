"""``cdc-dev``: the local stack and the demo, for a checkout of the repository.

    cdc-dev up|down|status|reset [--only NAME]   MariaDB, Kafka, Connect, openIMIS, openHIM emulator
    cdc-dev demo [--no-up]                       a Bahmni Save -> claim in openIMIS -> row in iclm_*

This is development tooling: it reads ``kafka/``, ``tests/data/`` and ``examples/`` from the
checkout and is never part of the product's wheel or image (``cdc-claims`` is the product).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cdc_dev.stack import ORDER


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cdc-dev", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for action in ("up", "down", "status", "reset"):
        cmd = sub.add_parser(action, help=f"{action} the local stack")
        cmd.add_argument("--only", action="append", choices=ORDER, help="limit to these components (repeatable)")
    demo = sub.add_parser("demo", help="end-to-end demo on the local stack")
    demo.add_argument("--no-up", action="store_true", help="assume the stack is already up")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from cdc_dev.demo import run_demo

        return run_demo(bring_up=not args.no_up)
    from cdc_dev.stack import main as stack_main

    return stack_main(args.command, args.only)


if __name__ == "__main__":
    sys.exit(main())
