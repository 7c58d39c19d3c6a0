"""Offsets are committed only after the effect of every record below them is durable.

Auto-commit would acknowledge a record the moment it is polled; a crash before its claim was
submitted (or held, or its reply published) would then lose the change. Instead every
consumed record is *pending* here until the caller says its effect is durable:

* directly with :meth:`OffsetTracker.done`: dead-lettered, irrelevant (tombstone, snapshot
  row, replayed record), or a transaction that touched nothing claimable;
* through an *owner* with :meth:`OffsetTracker.assign` / :meth:`OffsetTracker.release`:
  the records of a transaction are assigned to its id, and released once every unit it
  touched is durable (the settle tracker says when: ``SettleTracker.done`` returns the tags).

Per (topic, partition) the committable offset is the lowest still-pending offset, or the last
seen + 1 when nothing is pending (Kafka commits the *next* offset to read). Offsets need not be
contiguous (transaction markers and compaction leave gaps). A record at or below the last
offset seen is a redelivery (a seek, a retried fetch): :meth:`OffsetTracker.track` returns
False and the caller drops it, because the first delivery is already accounted for.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from cdc_claims.capture.envelope import Position, TopicPartition


@dataclass
class _Partition:
    last_seen: int
    #: offset -> who still holds it: None (not assigned yet), one owner, or an ``_Owners`` set.
    #: One owner is the common case; a set per record would double the memory of a backlog.
    pending: dict[int, object] = field(default_factory=dict)
    committed: int | None = None

    def committable(self) -> int:
        return min(self.pending) if self.pending else self.last_seen + 1


class _Owners(set[Hashable]):
    """Several owners of one record (a transaction touching two units, say)."""


_MISSING = object()


def _owners(value: object) -> tuple[Hashable, ...]:
    if value is None or value is _MISSING:
        return ()
    if isinstance(value, _Owners):
        return tuple(value)
    return (value,) if isinstance(value, Hashable) else ()


class OffsetTracker:
    """Pending record positions and the offsets that are safe to commit."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._owned: dict[Hashable, set[Position]] = {}

    # -- consuming ------------------------------------------------------------------------
    def track(self, position: Position) -> bool:
        """Register a consumed record as pending. False: already seen, drop the record."""
        part = self._partitions.get(position.topic_partition)
        if part is None:
            part = self._partitions[position.topic_partition] = _Partition(last_seen=position.offset)
        elif position.offset <= part.last_seen:
            return False
        part.last_seen = position.offset
        part.pending[position.offset] = None
        return True

    def is_pending(self, position: Position) -> bool:
        part = self._partitions.get(position.topic_partition)
        return part is not None and position.offset in part.pending

    # -- settling -------------------------------------------------------------------------
    def done(self, positions: Iterable[Position]) -> None:
        """These records' effects are durable (or they never had one)."""
        for position in positions:
            part = self._partitions.get(position.topic_partition)
            owners = part.pending.pop(position.offset, _MISSING) if part else _MISSING
            for owner in _owners(owners):
                held = self._owned.get(owner)
                if held is not None:
                    held.discard(position)
                    if not held:
                        del self._owned[owner]

    def assign(self, positions: Iterable[Position], owner: Hashable) -> None:
        """Keep these records pending until ``owner`` is released (positions no longer
        pending are skipped). A record assigned to several owners waits for all of them."""
        for position in positions:
            part = self._partitions.get(position.topic_partition)
            if part is None or position.offset not in part.pending:
                continue
            current = part.pending[position.offset]
            if current is None:
                part.pending[position.offset] = owner
            elif isinstance(current, _Owners):
                current.add(owner)
            elif current != owner:
                part.pending[position.offset] = _Owners((current, owner))
            self._owned.setdefault(owner, set()).add(position)

    def release(self, owner: Hashable) -> tuple[Position, ...]:
        """``owner``'s effect is durable. Returns the records that became done."""
        finished: list[Position] = []
        for position in sorted(self._owned.pop(owner, ())):
            part = self._partitions.get(position.topic_partition)
            current = part.pending.get(position.offset, _MISSING) if part else _MISSING
            if part is None or current is _MISSING or current is None:
                continue
            if isinstance(current, _Owners):
                current.discard(owner)
                if current:
                    continue
            elif current != owner:
                continue
            del part.pending[position.offset]
            finished.append(position)
        return tuple(finished)

    # -- committing -----------------------------------------------------------------------
    def committable(self) -> dict[TopicPartition, int]:
        """Per partition, the next offset to read that is safe to commit now."""
        return {tp: part.committable() for tp, part in self._partitions.items()}

    def to_commit(self) -> dict[TopicPartition, int]:
        """Only the partitions whose committable offset moved past the last commit."""
        result: dict[TopicPartition, int] = {}
        for tp, part in self._partitions.items():
            offset = part.committable()
            if part.committed is None or offset > part.committed:
                result[tp] = offset
        return result

    def mark_committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record a successful commit (so :meth:`to_commit` does not repeat it)."""
        for tp, offset in offsets.items():
            part = self._partitions.get(tp)
            if part is not None:
                part.committed = offset if part.committed is None else max(part.committed, offset)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: drop its state (another consumer resumes from the last
        commit). Owners keep no reference to its records any more."""
        part = self._partitions.pop((topic, partition), None)
        if part is None:
            return
        for offset, owners in part.pending.items():
            for owner in _owners(owners):
                held = self._owned.get(owner)
                if held is not None:
                    held.discard(Position(topic, partition, offset))
                    if not held:
                        del self._owned[owner]

    # -- counts ---------------------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return sum(len(part.pending) for part in self._partitions.values())

    def pending_in(self, topic: str, partition: int) -> tuple[int, ...]:
        part = self._partitions.get((topic, partition))
        return tuple(sorted(part.pending)) if part else ()
