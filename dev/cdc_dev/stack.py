"""``cdc-dev up|down|status|reset``: the whole local stack, in dependency order.

    mariadb -> kafka -> connect (Debezium connector RUNNING) -> openimis -> openhim (emulator)
    -> desk (the claims desk, with the dev OpenID provider it signs in through)

Everything lives under one state directory (``$CDC_STACK_DIR``, default ``<repo>/.stack``);
``down`` stops only processes whose pid files we wrote, in reverse order. ``reset`` restores
the databases for test isolation: openIMIS back to its pristine demo database, the sidecar's
``iclm_*``/``cdc_claims_*`` tables emptied, the emulator's transaction log cleared (Kafka and
the connector keep streaming: tests read from the offsets they saw first).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from cdc_dev.base import Component, Stack, StackError, step
from cdc_dev.desk_component import Desk
from cdc_dev.kafka import KafkaBroker, KafkaConnect
from cdc_dev.mariadb import MariaDB
from cdc_dev.openhim_component import OpenHimEmulator
from cdc_dev.openimis import OpenImis

ORDER = ("mariadb", "kafka", "connect", "openimis", "openhim", "desk")


def components(stack: Stack | None = None) -> dict[str, Component]:
    stack = stack or Stack.from_env()
    mariadb = MariaDB(stack)
    return {
        "mariadb": mariadb,
        "kafka": KafkaBroker(stack),
        "connect": KafkaConnect(stack, mariadb),
        "openimis": OpenImis(stack),
        "openhim": OpenHimEmulator(stack),
        "desk": Desk(stack),
    }


def _selected(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(ORDER)
    unknown = sorted(set(only) - set(ORDER))
    if unknown:
        raise StackError(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    return [name for name in ORDER if name in only]


def up(only: Sequence[str] | None = None, stack: Stack | None = None) -> None:
    parts = components(stack)
    started = time.monotonic()
    for name in _selected(only):
        done = step(f"{name} up")
        parts[name].up()
        done()
    print(f"==> stack up in {time.monotonic() - started:.1f}s", flush=True)
    status(only, stack)


def down(only: Sequence[str] | None = None, stack: Stack | None = None) -> None:
    parts = components(stack)
    for name in reversed(_selected(only)):
        done = step(f"{name} down")
        parts[name].down()
        done()


def status(only: Sequence[str] | None = None, stack: Stack | None = None) -> bool:
    parts = components(stack)
    healthy = True
    for name in _selected(only):
        state = parts[name].status()
        healthy &= state.startswith("running")
        print(f"{name:9} {state}", flush=True)
    return healthy


def reset(only: Sequence[str] | None = None, stack: Stack | None = None) -> None:
    parts = components(stack)
    for name in _selected(only):
        done = step(f"{name} reset")
        parts[name].reset()
        done()


def main(action: str, only: Sequence[str] | None) -> int:
    try:
        if action == "up":
            up(only)
        elif action == "down":
            down(only)
        elif action == "status":
            return 0 if status(only) else 3
        elif action == "reset":
            reset(only)
    except StackError as err:
        print(f"cdc-dev {action}: {err}", file=sys.stderr)
        return 1
    return 0
