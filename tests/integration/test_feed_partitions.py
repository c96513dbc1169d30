"""Feed partitions on one Redis (the tagged key layout of ``[streams] partitions`` > 1):
events go to their entity's partition, one worker per (feed, partition) builds the live
state whose reads sum over the partitions, and entry ids stay unique over partitions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city.geography import City, GridIndex
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.partitions import publish_feed
from pipelines.spine.runner import FeedWorker, live_state, make_worker, rebuild_live
from tests.clock import clear_of_midnight
from tests.conftest import settings_for

pytestmark = pytest.mark.integration

NOW = clear_of_midnight(int(time.time() * 1000))  # one local day at any hour
N = 3
FEEDS = ("reports", "locations", "video")


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    streams = {"partitions": N, "block_ms": 20}
    return settings_for(redis_url, prefix, db_url, tmp_path, streams=streams)


def _workers(
    s: Settings, city: City, r: redis.Redis, engine: Engine, feeds: tuple[str, ...] = FEEDS
) -> list[FeedWorker]:
    index = GridIndex(city)
    return [
        make_worker(f, s, city, index, r, engine, f"{f}-p{p}", partition=p)
        for f in feeds
        for p in range(N)
    ]


def _drain(ws: list[FeedWorker]) -> None:
    while sum(w.step().acked for w in ws):
        pass


def _report(inc: str, i: int, step: str, g: dict[str, Any], ts: int) -> dict[str, Any]:
    return dict(
        event_id=f"{inc}-{i}", incident_id=inc, ts=ts, step=step, category="sanitation",
        severity=2, source="worker", lon=g["lon"], lat=g["lat"], level="grid",
    )  # fmt: skip


def test_partitioned_feeds_sum_to_the_input(settings, city, rclient, engine) -> None:
    """40 incidents (every 4th closed), 30 workers' pings: each incident's events in one
    partition stream, every partition used; counters read back as the input implies."""
    grids = city.grids.head(40).to_dicts()
    t0 = NOW - 3_600_000
    reports, n_closed = [], 0
    for k, g in enumerate(grids):
        steps = ["reported", "accepted", "closed"] if k % 4 == 0 else ["reported", "accepted"]
        n_closed += steps[-1] == "closed"
        reports += [_report(f"P{k}", i, st, g, t0 + k * 1000 + i) for i, st in enumerate(steps)]
    pings = [
        dict(event_id=f"L{w}", worker_id=f"W{w}", ts=t0 + w, lon=g["lon"], lat=g["lat"])
        for w, g in enumerate(grids[:30])
    ]
    publish_feed(rclient, settings, "reports", [encode(e) for e in reports])
    publish_feed(rclient, settings, "locations", [encode(e) for e in pings])
    st = live_state(rclient, settings)
    streams = st.keys.feed_streams("reports")
    assert len(set(streams)) == N
    by_stream = {k: {orjson_inc(f[b"data"]) for _, f in rclient.xrange(k)} for k in streams}
    assert all(by_stream.values()), "every partition holds some incidents"
    assert sum(len(v) for v in by_stream.values()) == len(grids)  # each incident in one
    _drain(_workers(settings, city, rclient, engine))

    day = agg.local_day(t0, settings.live.timezone)
    city_id = city.city_id
    assert st.counts("reports", [city_id], day=day) == [len(grids)]
    assert st.counts("closed", [city_id], day=day) == [n_closed]
    assert st.counts("open", [city_id]) == [len(grids) - n_closed]
    for g in grids[:5]:
        assert st.counts("reports", [g["grid_id"]], day=day) == [1]
    assert st.patrolled(day) == {g["grid_id"] for g in grids[:30]}
    assert st.counts("coverage", [city_id], day=day) == [30]
    assert set(st.positions()) == {f"W{w}" for w in range(30)}
    assert len(st.ticker(city_id, n=200)) == len(reports)
    ts = [e["ts"] for e in st.ticker(city_id, n=10)]
    assert ts == sorted(ts, reverse=True)  # merged over partitions, newest first
    # every live-state key and stream carries a hash tag: a partition's or the global one
    keys = (
        st.live_keys(with_meta=True)
        + [k.encode() for f in FEEDS for k in st.keys.feed_streams(f)]
        + [st.deadletter_key.encode()]
    )
    tags = {k.split(b"{")[1].split(b"}")[0] for k in keys}
    assert tags == {f"{st.prefix}.p{p}".encode() for p in range(N)} | {st.prefix.encode()}
    # rebuild-live (per-base switch) gives back the same counters
    before = (st.counts_all("open"), st.counts_all("reports", day), st.patrolled(day))
    rebuild_live(settings, city, rclient, engine, clock=lambda: NOW / 1000)
    assert (st.counts_all("open"), st.counts_all("reports", day), st.patrolled(day)) == before


def test_same_stream_ids_in_two_partitions_stay_two_events(settings, city, rclient, engine):
    """Each partition stream numbers its own entries, so two streams can hold the same id;
    the consumers hand out ``<ms>-<seq × N + p>``, so both entries are processed and
    dead-lettered separately (an id clash would drop one as already seen)."""
    st = live_state(rclient, settings)
    ws = _workers(settings, city, rclient, engine, ("reports",))
    for p in range(N):
        rclient.xadd(st.keys.stream("reports", p), {b"data": b"{not json"}, id=f"{NOW}-1")
    _drain(ws)
    rows = store.read_frame(engine, select(store.dead_letters))
    assert sorted(rows["entry_id"].to_list()) == sorted(f"{NOW}-{1 * N + p}" for p in range(N))
    assert st.deadletter_counts()["malformed"] == N
    assert rclient.xlen(st.deadletter_key) == N


def orjson_inc(data: bytes) -> str:
    import orjson

    return str(orjson.loads(data)["incident_id"])
