"""Property test: every stream survives batches of bad entries of any kind.

A seeded generator (below, independent of the decoder) draws bad payloads — random
bytes, JSON that is not an object, wrong types, deep nesting, huge numbers, NaN and
Infinity, bad UTF-8, lone surrogates, missing fields, a missing ``data`` field, empty
entries, oversized payloads, values out of range, outside the city, unknown categories
and cameras, duplicates and impossible transitions — each labelled with the reason the
README's rules give it. Batches are drawn with and without valid events among them, and
some are made only of bad entries (or only of entries delivered too often).

For every batch: the worker never raises; every bad entry is in the dead-letter stream
under the test's prefix exactly once, with its reason; every valid event is applied
exactly once; the stream's pending list drains.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city.geography import City, GridIndex
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.events import REASONS
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import ensure_group
from tests.conftest import settings_for
from tests.integration.badgen import Entry, Gen

pytestmark = pytest.mark.integration

ROUNDS = 8


# ------------------------------------------------------------------ the property


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    return settings_for(redis_url, prefix, db_url, tmp_path)


def add_camera(engine: Engine, city: City) -> None:
    g = city.grids.row(0, named=True)
    cam = dict(camera_id="CAM1", lon=g["lon"], lat=g["lat"], grid_id=g["grid_id"])
    with engine.begin() as c:
        store.insert_ignore(c, store.cameras, [cam])


def publish_entries(r: redis.Redis, key: str, entries: list[Entry]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for fields, _ in entries:
        pipe.xadd(key, fields)  # type: ignore[arg-type]
    return [i.decode() for i in pipe.execute()]


def draw_batch(gen: Gen, rnd: random.Random, shape: str) -> list[Entry]:
    n = rnd.randrange(1, 60)
    out: list[Entry] = []
    if gen.feed == "reports" and shape != "bad only":
        out += gen.lifecycle_close()
    for _ in range(n):
        p = {"mostly good": 0.8, "mixed": 0.4}.get(shape, 0.0)
        good = rnd.random() < p
        out.append(gen.good() if good else gen.bad())
    return out


def applied_entries(feed: str, engine: Engine, r: redis.Redis, prefix: str) -> dict[str, int]:
    """Entry id → how many times its event is in SQL (and, checked, in Redis)."""
    if feed == "reports":
        rows = store.read_frame(engine, select(store.incident_events.c.entry_id))
        for inc in store.read_frame(engine, select(store.incidents.c.incident_id))["incident_id"]:
            assert r.hget(f"{prefix}:inc:{inc}", "status"), inc
    elif feed == "video":
        rows = store.read_frame(engine, select(store.video_alerts.c.entry_id))
    else:
        return {}
    out: dict[str, int] = {}
    for e in rows["entry_id"]:
        out[e] = out.get(e, 0) + 1
    return out


@pytest.mark.parametrize("feed", ["reports", "locations", "video"])
def test_any_batch_of_bad_entries_is_dead_lettered_and_the_stream_drains(
    feed: str,
    settings: Settings,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
) -> None:
    prefix = settings.redis.prefix
    key = f"{prefix}:{feed}"
    add_camera(engine, city)
    now_ms = int(time.time() * 1000)
    rnd = random.Random(f"poison-{feed}")
    gen = Gen(feed, 17, city, now_ms)
    w = make_worker(feed, settings, city, index, rclient, engine, f"{feed}-prop")
    want: dict[str, str | None] = {}
    valid_pings: dict[str, Any] = {}
    shapes = ["bad only", "mixed", "mostly good"]
    for round_ in range(ROUNDS):
        shape = shapes[round_] if round_ < len(shapes) else rnd.choice(shapes)
        entries = draw_batch(gen, rnd, shape)
        ids = publish_entries(rclient, key, entries)
        want.update((e, reason) for e, (_, reason) in zip(ids, entries, strict=True))
        for (fields, reason), e in zip(entries, ids, strict=True):
            if reason is None and feed == "locations":
                valid_pings[orjson.loads(fields[b"data"])["worker_id"]] = e
        while True:  # never raises, whatever the batch holds
            if not w.step().acked:
                break
        info = rclient.xpending(key, settings.streams.group)
        assert info["pending"] == 0, f"round {round_}: entries left pending"

    dead = {
        f[b"entry_id"].decode(): f[b"reason"].decode()
        for _, f in rclient.xrange(f"{prefix}:{settings.streams.deadletter}")
    }
    assert len(dead) == len(rclient.xrange(f"{prefix}:{settings.streams.deadletter}"))
    assert set(dead.values()) <= set(REASONS)
    bad = {e: r for e, r in want.items() if r is not None}
    assert dead == bad  # every bad entry exactly once, with its reason; no valid one
    kinds = {"locations": 7, "reports": 10, "video": 10}[feed]  # of the reasons possible
    assert len(set(bad.values())) >= kinds, "the draw covers the kinds of bad entry"
    sql_dead = store.read_frame(engine, select(store.dead_letters))
    assert dict(zip(sql_dead["entry_id"], sql_dead["reason"], strict=True)) == bad
    good = {e for e, r in want.items() if r is None}
    assert good, "the draw had valid events"
    if feed == "locations":
        got = store.read_frame(engine, select(store.worker_positions.c.worker_id))
        assert set(got["worker_id"]) == set(valid_pings)
        assert set(rclient.hkeys(f"{prefix}:live:pos")) == {w.encode() for w in valid_pings}
        assert store.table_count(engine, store.track_points) == len(valid_pings)
    else:
        assert applied_entries(feed, engine, rclient, prefix) == dict.fromkeys(good, 1)
    group = {g["name"]: g for g in rclient.xinfo_groups(key)}[settings.streams.group.encode()]
    assert group["last-delivered-id"].decode() == max(
        want, key=lambda e: tuple(map(int, e.split("-")))
    )


@pytest.mark.parametrize("feed", ["reports", "locations", "video"])
def test_a_batch_of_only_entries_delivered_too_often_is_dead_lettered(
    feed: str,
    redis_url: str,
    prefix: str,
    db_url: Any,
    tmp_path: Path,
    city: City,
    index: GridIndex,
    rclient: redis.Redis,
    engine: Engine,
) -> None:
    """Entries whose consumers kept dying (valid ones among them) end as max_deliveries,
    in a batch with nothing else: nothing applied, nothing raised, nothing pending."""
    settings = settings_for(
        redis_url, prefix, db_url, tmp_path, streams={"max_deliveries": 2, "claim_idle_ms": 0}
    )
    key = f"{prefix}:{feed}"
    ensure_group(rclient, key, settings.streams.group)
    add_camera(engine, city)
    gen = Gen(feed, 3, city, int(time.time() * 1000))
    entries = [gen.good() if i % 3 == 0 else gen.bad() for i in range(30)]
    ids = publish_entries(rclient, key, entries)
    rclient.xreadgroup(settings.streams.group, "crashy", {key: ">"}, count=100)
    for _ in range(2):  # redelivered to consumers that die before XACK
        rclient.xautoclaim(key, settings.streams.group, "crashy", min_idle_time=0, start_id="0-0")
    w = make_worker(feed, settings, city, index, rclient, engine, "survivor")
    res = w.step()
    assert res.reasons == {"max_deliveries": len(ids)} and res.acked == len(ids)
    assert rclient.xpending(key, settings.streams.group)["pending"] == 0
    assert store.table_count(engine, store.incident_events) == 0
    assert store.table_count(engine, store.video_alerts) == 0
    assert store.table_count(engine, store.dead_letters) == len(ids)
