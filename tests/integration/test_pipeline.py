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
from sqlalchemy.exc import OperationalError

from pipelines.city.geography import City, GridIndex
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import ClockJob, FeedWorker, live_state, make_worker, rebuild_live
from pipelines.spine.streams import Batch, publish
from tests.clock import clear_of_midnight
from tests.conftest import open_engine, private_database, private_prefix, settings_for

pytestmark = pytest.mark.integration

NOW = clear_of_midnight(int(time.time() * 1000))  # one local day at any hour


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


def test_out_of_order_arrival_gives_the_same_state(
    settings, city, index, rclient, engine, redis_url, tmp_path
) -> None:
    _, lon, lat = grid_point(city, 7)
    evs = []
    for k in range(20):
        steps = FULL if k % 3 else FULL[:5]
        evs += lifecycle(f"J{k}", lon, lat, NOW - 5_000_000 + k * 1000, steps)
    w = workers(settings, city, index, rclient, engine)["reports"]
    for i, e in enumerate(evs):
        w.process(Batch(entries=[(f"{NOW}-{i}", encode(e))]))
    in_order = live_counts(rclient, settings.redis.prefix)
    sql_in_order = incidents_table(engine)
    shuffled = list(enumerate(evs))
    random.Random(4).shuffle(shuffled)
    second = tmp_path / "second"
    second.mkdir()
    with private_prefix(redis_url) as p2, private_database(second) as db2:
        s2 = settings_for(redis_url, p2, db2, tmp_path)
        e2 = open_engine(db2)
        w2 = workers(s2, city, index, rclient, e2)["reports"]
        for i, e in shuffled:
            w2.process(Batch(entries=[(f"{NOW}-{i}", encode(e))]))
        assert live_counts(rclient, p2, prefix_free=True) == live_counts(
            rclient, settings.redis.prefix, prefix_free=True
        )
        assert incidents_table(e2) == sql_in_order
        assert rclient.xlen(f"{p2}:deadletter") == 0
        e2.dispose()
    assert in_order


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
    ClockJob(settings, city, st, rclient, clock=lambda: NOW / 1000).tick()
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
    assert st.counts("video", [city.city_id], day=day) == [1]
    assert st.breakdown("video_label", city.city_id, ["smoke_fire", "fall"], day=day) == {
        "smoke_fire": 1,
        "fall": 0,
    }
    # a camera not in the registry is unknown, whether or not its alert carries lon/lat
    assert sorted(st.deadletter_counts().items()) == sorted(
        {
            "unknown_camera": 2,
            "video|unknown_camera": 2,
            "duplicate": 1,
            "video|duplicate": 1,
        }.items()
    )
    assert store.table_count(engine, store.video_alerts) == 1


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


def incidents_table(engine: Engine) -> list[tuple[Any, ...]]:
    cols = [c for c in store.incidents.c if c.name != "description"]
    return sorted(store.read_frame(engine, select(*cols)).rows())


def live_counts(r: redis.Redis, prefix: str, prefix_free: bool = False) -> dict[str, Any]:
    """The counting state (hashes, sets, zsets) without tickers, meta and incident internals
    (``prefix_free``: keys without the prefix, to compare two prefixes)."""
    snap = snapshot(r, prefix)
    if prefix_free:
        snap = {k[len(prefix) :]: v for k, v in snap.items()}
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


# ------------------------------------------------------------------ stream order decides

ORDERS = ["stream order", "reversed"]


def one_per_batch(settings: Settings) -> Settings:
    """The same settings with batches of one entry (each worker takes one entry)."""
    return settings_for(
        settings.redis.url, settings.redis.prefix, (settings.database.url,
        settings.database.schema or None), Path(settings.run.var_dir), streams={"batch_size": 1},
    )  # fmt: skip


def racing(
    settings: Settings, city: City, index: GridIndex, r: redis.Redis, engine: Engine, feed: str,
    events: list[Any], order: str,
) -> tuple[list[str], dict[str, FeedWorker]]:  # fmt: skip
    """Publish ``events`` and hand one entry each to as many workers, which then process
    them in stream order or in reverse (the later entry's worker ran first)."""
    one = one_per_batch(settings)
    key = f"{settings.redis.prefix}:{getattr(settings.streams, feed)}"
    ws = [make_worker(feed, one, city, index, r, engine, f"{feed}-{i}") for i in range(len(events))]
    publish_events(r, settings, feed, events)
    batches = [w.consumer.read() for w in ws]
    assert all(len(b.entries) == 1 for b in batches)
    pairs = list(zip(ws, batches, strict=True))
    for w, b in pairs if order == "stream order" else reversed(pairs):
        w.process(b)
    ids = [e.decode() for e, _ in r.xrange(key)]
    return ids, {f: make_worker(f, one, city, index, r, engine, f"{f}-x") for f in FEEDS3}


FEEDS3 = ("reports", "locations", "video")


def dead_letters(r: redis.Redis, s: Settings) -> dict[str, str]:
    dl = r.xrange(f"{s.redis.prefix}:{s.streams.deadletter}")
    return {f[b"entry_id"].decode(): f[b"reason"].decode() for _, f in dl}


def assert_redis_agrees_with_sql(r: redis.Redis, prefix: str, engine: Engine) -> dict[str, Any]:
    """Every incident's live hash says what its SQL row says (and no hash lacks a row)."""
    rows = store.read_frame(engine, select(store.incidents))
    sql = {row["incident_id"]: row for row in rows.iter_rows(named=True)}
    live = {
        k.decode().split(":inc:")[1]: {a.decode(): b.decode() for a, b in r.hgetall(k).items()}
        for k in r.scan_iter(match=f"{prefix}:inc:*")
    }
    assert set(live) == set(sql)
    for inc, row in sql.items():
        h = live[inc]
        got = (h["status"], int(h["ts"]), h["cat"], int(h["sev"]), h["grid"], h["open"] == "1")
        want = (row["status"], row["last_ms"], row["category"], row["severity"], row["grid_id"],
                row["closed_ms"] is None)  # fmt: skip
        assert got == want, inc
    return sql


@pytest.mark.parametrize("order", ORDERS)
def test_event_id_reused_in_another_incident_is_a_duplicate(
    order, settings, city, index, rclient, engine
) -> None:
    g1, lon1, lat1 = grid_point(city, 30)
    g2, lon2, lat2 = grid_point(city, 31)
    first = lifecycle("I1", lon1, lat1, NOW - 600_000, ["reported"])[0]
    reuse = {**lifecycle("I2", lon2, lat2, NOW - 500_000, ["reported"])[0], "event_id": "I1-0"}
    ids, _ = racing(settings, city, index, rclient, engine, "reports", [first, reuse], order)
    sql = assert_redis_agrees_with_sql(rclient, settings.redis.prefix, engine)
    assert set(sql) == {"I1"}  # never under the other incident
    ev = store.read_frame(engine, select(store.incident_events))
    assert ev.select("event_id", "incident_id", "entry_id").rows() == [("I1-0", "I1", ids[0])]
    assert dead_letters(rclient, settings) == {ids[1]: "duplicate"}
    day = agg.local_day(NOW, settings.live.timezone)
    st = live_state(rclient, settings)
    assert st.counts("reports", [g1, g2], day=day) == [1, 0] or g1 == g2


@pytest.mark.parametrize("ending", ["set back at once", "killed before setting back"])
def test_sql_failing_after_the_script_ran_leaves_no_count_behind(
    ending, settings, city, index, rclient, engine
) -> None:
    """A batch whose SQL fails after its live-state script ran (here while dead-lettering,
    before the commit) is retried; Redis must end as if the failed attempt never ran. The
    case that needs care: the batch turns down every event of an incident (its event id
    belongs to an earlier entry of another incident), so the script dropped the incident
    and took its counts back; SQL still holds it. Counted again from SQL's state on the
    retry, its grid ended at -1 report. The worker sets the script's incidents back at
    once; a worker killed before it could (``kill -9`` right after the script) leaves
    them for the retry, which must count the dropped incident from nothing."""
    g1, lon1, lat1 = grid_point(city, 30)
    g2, lon2, lat2 = grid_point(city, 200)
    assert g1 != g2
    first = lifecycle("I1", lon1, lat1, NOW - 600_000, ["reported"])[0]
    reuse = {**lifecycle("I2", lon2, lat2, NOW - 500_000, ["reported"])[0], "event_id": "I1-0"}
    one = one_per_batch(settings)
    ws = [make_worker("reports", one, city, index, rclient, engine, f"reports-{i}") for i in (0, 1)]
    publish_events(rclient, settings, "reports", [first, reuse])
    b0, b1 = ws[0].consumer.read(), ws[1].consumer.read()
    ws[1].process(b1)  # the later entry first: I2 holds event I1-0, its grid counts 1
    day = agg.local_day(NOW, settings.live.timezone)
    st = live_state(rclient, settings)
    assert st.counts("reports", [g1, g2], day=day) == [0, 1]

    def disk_error(*_: Any) -> None:
        raise OperationalError("INSERT INTO dead_letters", {}, Exception("disk I/O error"))

    ws[0]._dead_letter_sql = disk_error  # type: ignore[method-assign]
    killed = ending.startswith("killed")
    if killed:
        ws[0]._undo_pushes = lambda rows: None  # type: ignore[method-assign]
    with pytest.raises(OperationalError):
        ws[0].process(b0)  # turns I2's event down, runs the script, then SQL fails
    # as SQL says; or as the script left it: I1 counted, I2 dropped
    assert st.counts("reports", [g1, g2], day=day) == ([1, 0] if killed else [0, 1])
    del ws[0]._dead_letter_sql
    ws[0].consumer.retry_pending()
    assert ws[0].step().acked == 1
    sql = assert_redis_agrees_with_sql(rclient, settings.redis.prefix, engine)
    assert set(sql) == {"I1"}
    assert st.counts("reports", [g1, g2], day=day) == [1, 0]
    assert st.counts("open", [g1, g2]) == [1, 0]


@pytest.mark.parametrize("order", ORDERS)
def test_alert_id_reused_on_another_day_counts_once(
    order, settings, city, index, rclient, engine
) -> None:
    _, lon, lat = grid_point(city, 40)
    tz = settings.live.timezone
    a = dict(alert_id="A7", camera_id="C1", label="fall", score=0.9, lon=lon, lat=lat)
    days = [NOW - 3 * 86_400_000, NOW - 1000]
    with engine.begin() as c:
        store.insert_ignore(c, store.cameras, [dict(camera_id="C1", lon=lon, lat=lat, grid_id="")])
    evs = [{**a, "ts": days[0]}, {**a, "ts": days[1], "label": "smoke_fire"}]
    ids, _ = racing(settings, city, index, rclient, engine, "video", evs, order)
    st = live_state(rclient, settings)
    d0, d1 = (agg.local_day(t, tz) for t in days)
    assert st.counts("video", [city.city_id], day=d0) == [1]
    assert st.counts("video", [city.city_id], day=d1) == [0]
    assert st.breakdown("video_label", city.city_id, ["fall", "smoke_fire"], day=d0) == {
        "fall": 1,
        "smoke_fire": 0,
    }
    rows = store.read_frame(engine, select(store.video_alerts))
    assert rows.select("alert_id", "entry_id", "ts_ms").rows() == [("A7", ids[0], days[0])]
    assert dead_letters(rclient, settings) == {ids[1]: "duplicate"}


@pytest.mark.parametrize("order", ORDERS)
def test_a_step_after_closed_that_arrives_first_is_a_bad_transition(
    order, settings, city, index, rclient, engine
) -> None:
    _, lon, lat = grid_point(city, 50)
    evs = lifecycle("I5", lon, lat, NOW - 900_000, ["reported", "resolved", "closed", "returned"])
    publish_events(rclient, settings, "reports", evs[:2])
    drain(workers(settings, city, index, rclient, engine))
    ids, _ = racing(settings, city, index, rclient, engine, "reports", evs[2:], order)
    sql = assert_redis_agrees_with_sql(rclient, settings.redis.prefix, engine)
    assert sql["I5"]["status"] == "closed" and sql["I5"]["n_events"] == 3
    assert dead_letters(rclient, settings) == {ids[-1]: "bad_transition"}
    assert live_state(rclient, settings).counts("open", [city.city_id]) == [0]


@pytest.mark.parametrize("order", ORDERS)
def test_a_replay_racing_its_original_loses_to_stream_order(
    order, settings, city, index, rclient, engine
) -> None:
    _, lon, lat = grid_point(city, 60)
    ev = lifecycle("I6", lon, lat, NOW - 900_000, ["reported"])[0]
    ids, _ = racing(settings, city, index, rclient, engine, "reports", [ev, ev], order)
    assert_redis_agrees_with_sql(rclient, settings.redis.prefix, engine)
    rows = store.read_frame(engine, select(store.incident_events))
    assert rows.select("event_id", "entry_id").rows() == [("I6-0", ids[0])]  # the original
    assert live_state(rclient, settings).incident("I6")["acc"].startswith(f"{ids[0]},")
    assert dead_letters(rclient, settings) == {ids[1]: "duplicate"}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("later_ts", [0, -60_000])
def test_two_reported_racing_are_decided_by_time_then_stream_order(
    order, later_ts, settings, city, index, rclient, engine
) -> None:
    _, lon, lat = grid_point(city, 70)
    t = NOW - 900_000
    a = lifecycle("I7", lon, lat, t, ["reported"])[0]
    b = {**a, "event_id": "I7-b", "ts": t + later_ts, "severity": 4}
    ids, _ = racing(settings, city, index, rclient, engine, "reports", [a, b], order)
    sql = assert_redis_agrees_with_sql(rclient, settings.redis.prefix, engine)
    # the earlier in time wins; at the same time, the earlier in the stream
    winner, loser = (0, 1) if later_ts == 0 else (1, 0)
    rows = store.read_frame(engine, select(store.incident_events))
    assert rows["entry_id"].to_list() == [ids[winner]]
    assert sql["I7"]["severity"] == (2, 4)[winner]
    assert dead_letters(rclient, settings) == {ids[loser]: "bad_transition"}


def test_strict_types_change_nothing(settings, city, index, rclient, engine) -> None:
    _, lon, lat = grid_point(city, 80)
    ev = lifecycle("I8", lon, lat, NOW - 900_000, ["reported"])[0]
    reports = [{**ev, "lon": str(lon)}, {**ev, "ts": str(ev["ts"])}, {**ev, "ts": ev["ts"] + 0.5},
               {**ev, "severity": True}, {**ev, "ts": float(ev["ts"])}]  # fmt: skip
    ping = dict(worker_id="W9", ts=NOW - 5000, lon=lon, lat=lat)
    pings = [{**ping, "lon": str(lon)}, {**ping, "ts": str(ping["ts"])}, {**ping, "lat": True}]
    alert = dict(alert_id="A9", camera_id="C1", label="fall", ts=NOW - 5000, lon=lon, lat=lat)
    alerts = [{**alert, "score": "0.9"}, {**alert, "score": True}]
    publish_events(rclient, settings, "reports", reports)
    publish_events(rclient, settings, "locations", pings)
    publish_events(rclient, settings, "video", alerts)
    drain(workers(settings, city, index, rclient, engine))
    st = live_state(rclient, settings)
    assert set(dead_letters(rclient, settings).values()) == {"bad_type"}
    n_dead = rclient.xlen(f"{settings.redis.prefix}:{settings.streams.deadletter}")
    assert n_dead == len(reports) + len(pings) + len(alerts)
    assert st.positions() == {} and st.incident("I8") == {}
    assert st.patrolled(agg.local_day(NOW, settings.live.timezone)) == set()
    for t in (store.incident_events, store.track_points, store.video_alerts, store.patrols):
        assert store.table_count(engine, t) == 0


def test_latest_positions_are_in_sql_once_their_batch_is_acknowledged(
    settings, city, index, rclient, engine
) -> None:
    w = workers(settings, city, index, rclient, engine)["locations"]
    latest: dict[str, int] = {}
    for batch in range(3):  # a worker that has run a while, not only its first batch
        pings = []
        for k in range(12):
            _, lon, lat = grid_point(city, k + batch)
            ts = NOW - 60_000 + batch * 12_000 + k * 1000
            pings.append(dict(worker_id=f"W{k % 4}", ts=ts, lon=lon, lat=lat))
            latest[f"W{k % 4}"] = ts
        publish_events(rclient, settings, "locations", pings)
        assert w.step().acked == len(pings)
    del w  # kill -9 right after XACK: nothing else runs
    got = store.read_frame(engine, select(store.worker_positions))
    assert dict(zip(got["worker_id"], got["ts_ms"], strict=True)) == latest
