"""The worker's cache of what it already wrote: it filters exactly the known rows."""

from __future__ import annotations

import polars as pl

from pipelines.spine.runner import WrittenCache


def test_new_visits_drops_known_day_grid_pairs() -> None:
    cache = WrittenCache()
    df = pl.DataFrame(
        {"day": ["d1", "d1", "d2"], "grid_id": ["g1", "g2", "g1"], "first_ms": [1, 2, 3]}
    )
    assert cache.new_visits(df).equals(df)
    cache.visits.update({("d1", "g1"), ("d2", "g9")})
    assert cache.new_visits(df).equals(df[1:])
    assert cache.new_visits(df.clear()).is_empty()


def test_new_slots_drops_each_workers_known_slot() -> None:
    cache = WrittenCache()
    df = pl.DataFrame({"worker_id": ["w1", "w1", "w2", "w3"], "slot": [4, 5, 4, 1]})
    assert cache.new_slots(df).equals(df)
    cache.slots.update({"w1": 4, "w2": 3})
    assert cache.new_slots(df).rows() == [("w1", 5), ("w2", 4), ("w3", 1)]


def test_fresh_clears_after_ttl() -> None:
    cache = WrittenCache(ttl_s=10, born=100.0)
    cache.visits.add(("d", "g"))
    cache.slots["w"] = 1
    assert cache.fresh(105.0).visits
    assert not cache.fresh(111.0).visits and not cache.slots
