"""The pipeline end to end on a real Redis and real SQL: counts, lifecycle, dead letters,
redelivery, out-of-order arrival and rebuild-live."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import ClockJob, FeedWorker, make_worker, rebuild_live
from pipelines.spine.streams import Batch, publish
from tests.conftest import settings_for

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


@pytest.fixture(scope="module")
def index(city: City) -> GridIndex:
    return GridIndex(city)


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    return settings_for(redis_url, prefix, db_url, tmp_path, streams={"claim_idle_ms": 200})


def workers(
    settings: Settings, city: City, index: GridIndex, r: redis.Redis, engine: Engine
) -> dict[str, FeedWorker]:
    return {
        f: make_worker(f, settings, city, index, r, engine, f"{f}-t")
        for f in ("reports", "locations", "video")
    }


def drain(ws: dict[str, FeedWorker]) -> None:
    for w in ws.values():
        while w.step().acked:
            pass


def grid_point(city: City, i: int) -> tuple[str, float, float]:
    g = city.grids.row(i, named=True)
    return g["grid_id"], g["lon"], g["lat"]


def lifecycle(
    inc: str,
    lon: float,
    lat: float,
    t0: int,
    steps: list[str],
    cat: str = "sanitation",
    level: str = "grid",
) -> list[dict[str, Any]]:
    return [
        dict(
            event_id=f"{inc}-{i}",
            incident_id=inc,
            ts=t0 + i * 60_000,
            step=s,
            category=cat,
            severity=2,
            source="worker",
            lon=lon,
            lat=lat,
            level=level,
            reporter_id="W1",
            description="测试",
        )
        for i, s in enumerate(steps)
    ]


FULL = ["reported", "accepted", "dispatched", "handling", "resolved", "verified", "closed"]


def publish_events(r: redis.Redis, s: Settings, feed: str, events: list[Any]) -> None:
    key = f"{s.redis.prefix}:{getattr(s.streams, feed)}"
    publish(r, key, [e if isinstance(e, bytes) else encode(e) for e in events])


def test_reports_lifecycle_counts_and_sql(settings, city, index, rclient, engine) -> None:
    ws = workers(settings, city, index, rclient, engine)
    g0, lon, lat = grid_point(city, 0)
    t0 = NOW - 3_600_000
    evs = lifecycle("I1", lon, lat, t0, FULL) + lifecycle("I2", lon, lat, t0, FULL[:4], cat="fire")
    publish_events(rclient, settings, "reports", evs)
    drain(ws)
    st = ws["reports"].state
    chain = city.ancestors(g0)
    day = agg.local_day(t0, settings.live.timezone)
    assert st.counts("open", chain) == [1] * 4  # I2 open at every level
    assert st.counts("reports", chain, day=day) == [2] * 4
    assert st.counts("closed", chain, day=day) == [1] * 4
    assert st.breakdown("closed_level", g0, ["grid"], day=day) == {"grid": 1}
    assert st.breakdown("open_cat", chain[-1], ["fire", "sanitation"]) == {
        "fire": 1,
        "sanitation": 0,
    }
    # fire deadline is 2 h, report was 1 h ago: not overdue yet; 2 h later it is
    assert st.sweep_overdue(NOW) == 0 and st.counts("overdue", [g0]) == [0]
    assert st.sweep_overdue(t0 + 3 * 3_600_000) == 1
    assert st.counts("overdue", chain) == [1] * 4
    incs = store.read_frame(engine, select(store.incidents)).sort("incident_id")
    assert incs["status"].to_list() == ["closed", "handling"]
    assert incs["resolution_level"].to_list() == ["grid", None]
    assert store.table_count(engine, store.incident_events) == len(evs)
    ticker = st.ticker(chain[1])
    assert len(ticker) == len(evs) and ticker[0]["what"].startswith("fire")


def test_dead_letters_carry_reasons_and_payloads(settings, city, index, rclient, engine) -> None:
    ws = workers(settings, city, index, rclient, engine)
    _, lon, lat = grid_point(city, 3)
    good = lifecycle("I9", lon, lat, NOW - 600_000, ["reported", "accepted", "closed"])
    bad = [
        b"{not json",
        encode({**good[0], "event_id": "X1", "incident_id": "I10", "lon": 116.4, "lat": 39.9}),
        encode({**good[0], "event_id": "X2", "incident_id": "I9", "ts": NOW - 60_000}),
        encode({**good[1], "event_id": "X3", "ts": NOW - 30_000, "step": "dispatched"}),
        encode(good[0]),  # same event id again, from another entry
    ]
    publish_events(rclient, settings, "reports", good)
    drain(ws)
    publish_events(rclient, settings, "reports", bad)
    drain(ws)
    dl = rclient.xrange(f"{settings.redis.prefix}:{settings.streams.deadletter}")
    reasons = [f[b"reason"].decode() for _, f in dl]
    assert reasons == ["malformed", "outside_city", "bad_transition", "bad_transition", "duplicate"]
    assert [f[b"payload"] for _, f in dl] == bad
    rows = store.read_frame(engine, select(store.dead_letters))
    assert sorted(rows["reason"].to_list()) == sorted(reasons)
    assert ws["reports"].state.deadletter_counts()["bad_transition"] == 2


def test_redelivery_changes_nothing(settings, city, index, rclient, engine) -> None:
    ws = workers(settings, city, index, rclient, engine)
    _, lon, lat = grid_point(city, 5)
    evs = [encode(e) for e in lifecycle("I3", lon, lat, NOW - 900_000, FULL)] + [b"junk"]
    batch = Batch(entries=[(f"{NOW - 10}-{i}", p) for i, p in enumerate(evs)])
    w = ws["reports"]
    first = w.process(batch)
    snap = snapshot(rclient, settings.redis.prefix)
    again = w.process(batch)  # as if the worker died before XACK
    assert (first.applied, again.applied, again.redelivered) == (7, 0, 7)
    assert snapshot(rclient, settings.redis.prefix) == snap
    assert store.table_count(engine, store.incident_events) == 7
    assert store.table_count(engine, store.dead_letters) == 1


def test_out_of_order_arrival_gives_the_same_state(settings, city, index, rclient, engine) -> None:
    _, lon, lat = grid_point(city, 7)
    evs = []
    for k in range(20):
        steps = FULL if k % 3 else FULL[:5]
        evs += lifecycle(f"J{k}", lon, lat, NOW - 5_000_000 + k * 1000, steps)
    w = workers(settings, city, index, rclient, engine)["reports"]
    for e in evs:
        w.process(Batch(entries=[(f"{NOW}-{evs.index(e)}", encode(e))]))
    in_order = live_counts(rclient, settings.redis.prefix)
    w.state.clear()
    shuffled = list(enumerate(evs))
    random.Random(4).shuffle(shuffled)
    for i, e in shuffled:
        w.process(Batch(entries=[(f"{NOW}-{i}", encode(e))]))
    assert live_counts(rclient, settings.redis.prefix) == in_order
    assert rclient.xlen(f"{settings.redis.prefix}:deadletter") == 0


def test_locations_positions_coverage_online(settings, city, index, rclient, engine) -> None:
    ws = workers(settings, city, index, rclient, engine)
    g0, lon, lat = grid_point(city, 10)
    g1, lon1, lat1 = grid_point(city, 11)
    pings = [
        dict(
            worker_id="W1", ts=NOW - 50_000, lon=lon, lat=lat, accuracy=5.0, speed=1.0, battery=90.0
        ),
        dict(
            worker_id="W1",
            ts=NOW - 10_000,
            lon=lon1,
            lat=lat1,
            accuracy=5.0,
            speed=1.0,
            battery=89.0,
        ),
        dict(worker_id="W2", ts=NOW - 20_000, lon=lon, lat=lat),
        dict(
            worker_id="W1", ts=NOW - 40_000, lon=lon, lat=lat
        ),  # late, older: ignored for position
    ]
    publish_events(rclient, settings, "locations", pings)
    drain(ws)
    st = ws["locations"].state
    pos = {w: agg.unpack_position(p) for w, p in st.positions().items()}
    assert pos["W1"]["grid_id"] == g1 and pos["W2"]["grid_id"] == g0
    day = agg.local_day(NOW, settings.live.timezone)
    assert st.patrolled(day) == {g0, g1}
    street = city.ancestors(g0)[1]
    expected = 2 if city.ancestors(g1)[1] == street else 1
    assert st.counts("coverage", [street], day=day) == [expected]
    slots = {(p["worker_id"], p["ts"] // 60_000) for p in pings}  # one point per worker-minute
    assert store.table_count(engine, store.track_points) == len(slots)
    ClockJob(settings, city, st, rclient).tick()
    assert st.counts("online", [city.city_id]) == [2]


def test_video_uses_camera_registry(settings, city, index, rclient, engine) -> None:
    _, lon, lat = grid_point(city, 20)
    with engine.begin() as c:
        c.execute(
            store.cameras.insert(), [{"camera_id": "C1", "lon": lon, "lat": lat, "grid_id": "x"}]
        )
    ws = workers(settings, city, index, rclient, engine)
    alerts = [
        dict(alert_id="A1", camera_id="C1", label="smoke_fire", score=0.9, ts=NOW - 1000),
        dict(alert_id="A2", camera_id="C404", label="fall", score=0.9, ts=NOW - 1000),
        dict(
            alert_id="A3", camera_id="C2", label="fall", score=0.8, ts=NOW - 900, lon=lon, lat=lat
        ),
        dict(alert_id="A1", camera_id="C1", label="smoke_fire", score=0.9, ts=NOW - 1000),
    ]
    publish_events(rclient, settings, "video", alerts)
    drain(ws)
    st = ws["video"].state
    day = agg.local_day(NOW, settings.live.timezone)
    assert st.counts("video", [city.city_id], day=day) == [2]
    assert st.breakdown("video_label", city.city_id, ["smoke_fire", "fall"], day=day) == {
        "smoke_fire": 1,
        "fall": 1,
    }
    assert sorted(st.deadletter_counts().items()) == sorted(
        {
            "unknown_camera": 1,
            "video|unknown_camera": 1,
            "duplicate": 1,
            "video|duplicate": 1,
        }.items()
    )
    assert store.table_count(engine, store.video_alerts) == 2


def test_rebuild_live_equals_what_pipelines_built(settings, city, index, rclient, engine) -> None:
    ws = workers(settings, city, index, rclient, engine)
    rnd = random.Random(1)
    reports, locs, vids = [], [], []
    for k in range(40):
        _, lon, lat = grid_point(city, rnd.randrange(city.grids.height))
        steps = FULL[: rnd.randint(1, len(FULL))]
        reports += lifecycle(
            f"K{k}",
            lon,
            lat,
            NOW - 7_000_000 + k * 7000,
            steps,
            cat=rnd.choice(["fire", "dispute", "sanitation"]),
        )
        locs.append(dict(worker_id=f"W{k % 9}", ts=NOW - k * 1000, lon=lon, lat=lat))
        vids.append(
            dict(
                alert_id=f"V{k}",
                camera_id="C9",
                label="fall",
                score=0.7,
                ts=NOW - k,
                lon=lon,
                lat=lat,
            )
        )
    publish_events(rclient, settings, "reports", [*reports, b"bad"])
    publish_events(rclient, settings, "locations", locs)
    publish_events(rclient, settings, "video", vids)
    drain(ws)
    ClockJob(settings, city, ws["reports"].state, rclient, clock=lambda: NOW / 1000).tick()
    before = live_counts(rclient, settings.redis.prefix)
    rebuild_live(settings, city, rclient, engine, clock=lambda: NOW / 1000)
    after = live_counts(rclient, settings.redis.prefix)
    assert after == before
    assert before  # not vacuous


# ------------------------------------------------------------------ helpers


def snapshot(r: redis.Redis, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in r.scan_iter(match=f"{prefix}:*"):
        if k.endswith((b":live:meta", b":live:feeds")):  # freshness: when, not what
            continue
        t = r.type(k).decode()
        if t == "hash":
            out[k.decode()] = r.hgetall(k)
        elif t == "set":
            out[k.decode()] = r.smembers(k)
        elif t == "zset":
            out[k.decode()] = r.zrange(k, 0, -1, withscores=True)
        elif t == "list":
            out[k.decode()] = r.lrange(k, 0, -1)
        elif t == "stream":
            out[k.decode()] = r.xlen(k)
    return out


def live_counts(r: redis.Redis, prefix: str) -> dict[str, Any]:
    """The counting state (hashes, sets, zsets) without tickers, meta and incident internals."""
    snap = snapshot(r, prefix)
    drop = (
        ":live:ticker:",
        ":live:meta",
        ":inc:",
        ":deadletter",
        ":reports",
        ":locations",
        ":video",
        ":dl:seen:",
    )
    keep = {}
    for k, v in snap.items():
        if any(d in k for d in drop) and not k.endswith(":video_label") and ":d:" not in k:
            continue
        if isinstance(v, dict):
            v = {f: x for f, x in v.items() if x != b"0"}
            if not v:
                continue
        keep[k] = v
    return keep
