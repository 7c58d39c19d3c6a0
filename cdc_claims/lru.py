"""A bounded map that forgets its least recently used entries: the sidecar's one LRU.

Two places need a memory that must not grow with the stream: the transaction buffer remembers
the ids of transactions it finished (so a redelivered record is recognised as a replay), and the
settle tracker remembers which visit an encounter belongs to and whether a visit is closed. Each
used to hand-write the same ``OrderedDict`` dance; this is it once, typed, and tested on its own.

Only :meth:`Lru.get`, :meth:`Lru.put` and :meth:`Lru.touch` count as a use; ``key in lru``,
``len(lru)`` and :meth:`Lru.pop` do not reorder anything. Not thread-safe: each owner is
single-threaded. None of the runtime dependencies offers a bounded map, and this is too small
to be worth a new one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most ``limit`` entries; putting one more forgets the least recently used."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("an LRU limit cannot be negative")
        self._items: OrderedDict[K, V] = OrderedDict()
        self._limit = limit

    @property
    def limit(self) -> int:
        return self._limit

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or ``None`` when not held."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> None:
        """Hold ``key`` -> ``value`` as the most recently used entry; forget beyond ``limit``."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def touch(self, key: K) -> bool:
        """True if ``key`` is held, which makes it the most recently used (a set's "seen it")."""
        if key not in self._items:
            return False
        self._items.move_to_end(key)
        return True

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, or ``None`` when it was not held."""
        return self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
