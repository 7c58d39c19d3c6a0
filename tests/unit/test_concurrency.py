"""Adaptive concurrency: grows while the payer keeps up, backs off when it does not."""

from __future__ import annotations

import threading
import time

import pytest
from test_consumer_role import Clock, Lookups, Sink
from test_flow import PartitionedBroker, backlog

from cdc_claims.errors import ClaimRefused, TransientSubmitError
from cdc_claims.pipeline.concurrency import AdaptiveLimit, PacedApi
from cdc_claims.pipeline.consumer_role import ConsumerRole
from cdc_claims.pipeline.ports import JsonDict, UnitRef
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


def test_one_outage_seen_by_every_slot_halves_the_limit_once() -> None:
    limit = AdaptiveLimit(8, initial=8)
    started = limit.epoch  # eight requests in flight, all sent before the outage
    for _ in range(8):
        limit.on_overload(started)
    assert limit.limit == 4
    limit.on_overload(limit.epoch)  # a request sent after the halving fails too: still overloaded
    assert limit.limit == 2


def test_it_never_falls_below_one_and_recovers_by_itself() -> None:
    limit = AdaptiveLimit(4, initial=4)
    for _ in range(50):
        limit.on_overload()
    assert limit.limit == 1, "one claim at a time still probes the payer"
    for _ in range(30):
        limit.on_success(0.3)
    assert limit.limit == 4


def test_a_ceiling_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(0)


# ---------------------------------------------------------------------------- the paced claim API
class _Payer:
    """openIMIS as seen through the claim API, on real threads: records requests at once."""

    def __init__(self, seconds: float, overloaded_calls: int = 0) -> None:
        self.seconds = seconds
        self.overloaded_calls = overloaded_calls
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.answered = 0

    def submit_claim(self, claim: JsonDict) -> JsonDict:
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
                self.answered += 1
            return {"resourceType": "ClaimResponse", "id": claim["id"]}
        finally:
            with self.lock:
                self.running -= 1

    def get_claim_response(self, code_or_uuid: str) -> JsonDict:
        return self.submit_claim({"id": code_or_uuid})


def _hammer(api: PacedApi, threads: int, calls: int) -> list[int]:
    """``threads`` workers POST ``calls`` claims each, retrying 503s; returns the limit over time."""
    seen: list[int] = []

    def work(n: int) -> None:
        for i in range(calls):
            while True:
                try:
                    api.submit_claim({"id": f"{n}-{i}"})
                    break
                except TransientSubmitError:
                    time.sleep(0.005)
            seen.append(api.limit.limit)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    return seen


def test_openimis_never_sees_more_requests_than_the_limit_and_it_grows_to_the_ceiling() -> None:
    payer = _Payer(seconds=0.01)
    api = PacedApi(payer, AdaptiveLimit(6))  # starts at 3
    _hammer(api, threads=12, calls=15)
    assert payer.answered == 180
    assert payer.most <= 6, "12 workers, never more than the ceiling at openIMIS"
    assert payer.most > 3, "grew from half the ceiling while latency stayed flat"
    assert api.limit.limit == 6 and api.in_flight == 0


def test_503s_halve_the_requests_at_once_and_every_claim_still_goes_in() -> None:
    payer = _Payer(seconds=0.01, overloaded_calls=20)
    api = PacedApi(payer, AdaptiveLimit(8, initial=8))
    seen = _hammer(api, threads=8, calls=10)
    assert payer.answered == 80, "retried until openIMIS recovered"
    assert min(seen) <= 2, "the overload halved the limit (from 8), more than once"


def test_a_refusal_is_not_an_overload() -> None:
    class Refusing:
        def submit_claim(self, claim: JsonDict) -> JsonDict:
            raise ClaimRefused("openIMIS refused the claim: no such insuree")

        def get_claim_response(self, code_or_uuid: str) -> JsonDict:
            raise ClaimRefused("no such claim")

    api = PacedApi(Refusing(), AdaptiveLimit(4, initial=4))
    for _ in range(10):
        with pytest.raises(ClaimRefused):
            api.submit_claim({"id": "x"})
    assert api.limit.limit == 4 and api.in_flight == 0


# ---------------------------------------------------------------------------- in the consumer role
class _Service:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.done: list[int] = []

    def process(self, unit: UnitRef) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.005)
        with self.lock:
            self.running -= 1
            self.done.append(unit.id)

    def park(self, unit: UnitRef, reason: str, text: str) -> None:
        raise AssertionError("nothing should be parked")


def test_the_role_hands_out_no_more_units_than_it_has_workers() -> None:
    broker = PartitionedBroker(backlog(40), per_poll=10_000)
    service, clock = _Service(), Clock()
    r = ConsumerRole(
        consumer=broker,
        service=service,
        lookups=Lookups(),
        sink=Sink(),
        settings=Settings(settle=SettleSettings(settle_seconds=0)),
        clock=clock,
        concurrency=3,
        wall_clock=lambda: 0.0,
    )
    most_handed = 0
    for _ in range(2000):
        r.step(timeout_ms=0)
        most_handed = max(most_handed, r.settle.in_flight_count)
        clock.now += 0.05
        time.sleep(0.002)
        if len(service.done) == 40:
            break
    r.close()
    assert sorted(service.done) == [100 + i for i in range(40)]
    assert most_handed <= 3 and service.most <= 3, "the rest waited in the settle tracker, not in a queue"
