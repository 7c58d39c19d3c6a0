"""Adaptive concurrency: grows while the payer keeps up, backs off when it does not."""

from __future__ import annotations

import threading
import time

import pytest
from test_consumer_role import Clock, Lookups, Sink
from test_flow import PartitionedBroker, backlog

from cdc_claims.errors import TransientSubmitError
from cdc_claims.pipeline.concurrency import AdaptiveLimit
from cdc_claims.pipeline.consumer_role import ConsumerRole
from cdc_claims.pipeline.ports import UnitRef
from cdc_claims.settings import Settings, SettleSettings


def test_it_grows_to_the_ceiling_while_latency_stays_flat() -> None:
    limit = AdaptiveLimit(8, initial=1)
    seen = [limit.limit]
    for _ in range(100):
        limit.on_success(0.2)
        seen.append(limit.limit)
    assert seen == sorted(seen), "never shrinks while the payer keeps up"
    assert limit.limit == 8, "and stops at the ceiling"


def test_rising_latency_takes_slots_back() -> None:
    limit = AdaptiveLimit(8, initial=8)
    for _ in range(20):
        limit.on_success(0.2)
    for _ in range(40):
        limit.on_success(1.0)  # five times the best: queueing at the payer
    assert limit.limit < 8
    assert limit.limit >= 1


def test_an_overload_halves_once_per_round_not_once_per_failing_slot() -> None:
    limit = AdaptiveLimit(8, initial=8)
    for _ in range(8):
        limit.on_success(0.2)
    for _ in range(8):  # the same outage seen by all eight slots
        limit.on_overload()
    assert limit.limit == 4
    for _ in range(4):
        limit.on_other()
    limit.on_overload()
    assert limit.limit == 2


def test_it_never_falls_below_one_and_recovers_by_itself() -> None:
    limit = AdaptiveLimit(4, initial=4)
    for _ in range(50):
        limit.on_other()
        limit.on_overload()
    assert limit.limit == 1, "one claim at a time still probes the payer"
    for _ in range(30):
        limit.on_success(0.3)
    assert limit.limit == 4


def test_a_ceiling_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(0)


# ---------------------------------------------------------------------------- in the consumer role
class _Payer:
    """A claim service on real worker threads that records how many claims run at once."""

    def __init__(self, seconds: float, overloaded_calls: int = 0) -> None:
        self.seconds = seconds
        self.overloaded_calls = overloaded_calls
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.done: list[int] = []

    def process(self, unit: UnitRef) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            overloaded = self.overloaded_calls > 0
            self.overloaded_calls -= 1
        try:
            time.sleep(self.seconds)
            if overloaded:
                raise TransientSubmitError("openIMIS answered 503")
            with self.lock:
                self.done.append(unit.id)
        finally:
            with self.lock:
                self.running -= 1

    def park(self, unit: UnitRef, reason: str, text: str) -> None:
        raise AssertionError("nothing should be parked")


def _run(payer: _Payer, saves: int, ceiling: int) -> tuple[ConsumerRole, list[int]]:
    broker = PartitionedBroker(backlog(saves), per_poll=10_000)
    clock = Clock()
    r = ConsumerRole(
        consumer=broker,
        service=payer,
        lookups=Lookups(),
        sink=Sink(),
        settings=Settings(settle=SettleSettings(settle_seconds=0), retry_max_seconds=2),
        clock=clock,
        concurrency=ceiling,
        rng=lambda: 1.0,
    )
    limits = []
    for _ in range(2000):
        r.step(timeout_ms=0)
        limits.append(r.limit.limit)
        clock.now += 0.05
        time.sleep(0.002)
        if len(payer.done) == saves:
            break
    r.close()
    return r, limits


def test_the_role_runs_no_more_claims_at_once_than_the_ceiling_and_grows_toward_it() -> None:
    payer = _Payer(seconds=0.01)
    r, _limits = _run(payer, saves=60, ceiling=6)
    assert sorted(payer.done) == [100 + i for i in range(60)]
    assert payer.most <= 6
    assert payer.most > 3, "started at half the ceiling and grew while latency stayed flat"
    assert r.limit.limit == 6


def test_an_overloaded_payer_gets_fewer_claims_at_once_and_every_claim_still_goes_in() -> None:
    payer = _Payer(seconds=0.01, overloaded_calls=12)
    _r, limits = _run(payer, saves=30, ceiling=8)
    assert sorted(payer.done) == [100 + i for i in range(30)], "retried until the payer recovered"
    assert min(limits) <= 2, "the 503s halved the limit (from 4)"
