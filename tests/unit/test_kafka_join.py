"""The stranded group join of kafka-python 3.0.12 is noticed and redone by the consumer adapter."""

from __future__ import annotations

from typing import Any

from cdc_claims import metrics
from cdc_claims.pipeline.kafka_io import JOIN_POLL_MS, GuardedConsumer, stranded_join


class Coordinator:
    def __init__(self, *, rejoining: bool, rejoin_needed: bool, metadata_changed: bool = False) -> None:
        self.rejoining, self.rejoin_needed, self.metadata_changed = rejoining, rejoin_needed, metadata_changed

    def need_rejoin(self) -> bool:  # kafka-python: the base flag, or a metadata/subscription change
        return self.rejoin_needed or self.metadata_changed


class Raw:
    def __init__(self, coordinator: Any) -> None:
        self._coordinator = coordinator
        self.polls: list[int] = []

    def poll(self, timeout_ms: int) -> dict[Any, list[Any]]:
        self.polls.append(timeout_ms)
        return {}


def joins_stranded() -> float:
    return metrics.KAFKA_ERRORS.labels(op="join_stranded")._value.get()  # type: ignore[no-any-return]


def test_a_join_prepared_that_nobody_needs_any_more_is_stranded_and_redone_with_a_poll_that_waits() -> None:
    # the join task finished between two polls: the assignment snapshot now matches the metadata
    # (need_rejoin False) but the member never became stable (rejoining still True)
    coordinator = Coordinator(rejoining=True, rejoin_needed=False)
    raw = Raw(coordinator)
    before = joins_stranded()
    assert stranded_join(raw)
    GuardedConsumer(raw).poll(timeout_ms=20)
    assert coordinator.rejoin_needed, "the next poll must join again"
    assert raw.polls == [JOIN_POLL_MS], "and wait long enough to receive the assignment itself"
    assert joins_stranded() == before + 1


def test_a_join_in_flight_is_waited_for_but_not_redone() -> None:
    coordinator = Coordinator(rejoining=True, rejoin_needed=False, metadata_changed=True)
    raw = Raw(coordinator)
    assert not stranded_join(raw)
    GuardedConsumer(raw).poll(timeout_ms=20)
    assert raw.polls == [JOIN_POLL_MS] and not coordinator.rejoin_needed


def test_a_stable_member_polls_as_asked_and_an_unknown_client_is_left_alone() -> None:
    stable = Raw(Coordinator(rejoining=False, rejoin_needed=False))
    GuardedConsumer(stable).poll(timeout_ms=20)
    assert stable.polls == [20]
    other = Raw(None)
    assert not stranded_join(other)
    GuardedConsumer(other).poll(timeout_ms=200)
    assert other.polls == [200]

    class Broken(Coordinator):
        def need_rejoin(self) -> bool:
            raise AttributeError("internals changed")

    assert not stranded_join(Raw(Broken(rejoining=True, rejoin_needed=False)))
