"""The bounded LRU behind the transaction buffer's memory of finished ids and the settle tracker's
encounter -> visit and visit -> closed memories."""

from __future__ import annotations

import pytest

from cdc_claims.lru import Lru


def test_get_and_put_hold_values_up_to_the_limit() -> None:
    lru: Lru[int, str] = Lru(3)
    for key in (1, 2, 3):
        lru.put(key, f"v{key}")
    assert [lru.get(k) for k in (1, 2, 3)] == ["v1", "v2", "v3"]
    assert len(lru) == 3
    assert lru.get(4) is None
    assert lru.limit == 3


def test_putting_beyond_the_limit_forgets_the_least_recently_used() -> None:
    lru: Lru[int, str] = Lru(2)
    lru.put(1, "a")
    lru.put(2, "b")
    lru.put(3, "c")
    assert 1 not in lru
    assert (2 in lru, 3 in lru, len(lru)) == (True, True, 2)


def test_get_counts_as_a_use() -> None:
    lru: Lru[int, str] = Lru(2)
    lru.put(1, "a")
    lru.put(2, "b")
    assert lru.get(1) == "a"  # 1 is now fresher than 2
    lru.put(3, "c")
    assert (1 in lru, 2 in lru, 3 in lru) == (True, False, True)


def test_put_of_a_held_key_replaces_and_refreshes_it() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.put("a", 10)
    lru.put("c", 3)
    assert lru.get("a") == 10
    assert "b" not in lru
    assert len(lru) == 2


def test_touch_is_a_set_membership_that_counts_as_a_use() -> None:
    seen: Lru[str, None] = Lru(2)
    seen.put("tx1", None)
    seen.put("tx2", None)
    assert seen.touch("tx1") is True
    assert seen.touch("tx9") is False
    assert "tx9" not in seen  # touching a missing key does not add it
    seen.put("tx3", None)
    assert ("tx1" in seen, "tx2" in seen, "tx3" in seen) == (True, False, True)


def test_contains_does_not_refresh() -> None:
    lru: Lru[int, int] = Lru(2)
    lru.put(1, 1)
    lru.put(2, 2)
    assert 1 in lru
    lru.put(3, 3)
    assert 1 not in lru  # `in` looked without using it


def test_falsy_values_are_held_like_any_other() -> None:
    closed: Lru[int, bool] = Lru(2)
    closed.put(7, False)
    assert closed.get(7) is False
    assert 7 in closed


def test_pop_forgets_a_key_and_returns_its_value() -> None:
    lru: Lru[int, str] = Lru(2)
    lru.put(1, "a")
    assert lru.pop(1) == "a"
    assert lru.pop(1) is None
    assert len(lru) == 0
    assert 1 not in lru


def test_limit_zero_remembers_nothing_and_negative_is_refused() -> None:
    nothing: Lru[int, int] = Lru(0)
    nothing.put(1, 1)
    assert len(nothing) == 0
    with pytest.raises(ValueError, match="negative"):
        Lru(-1)
