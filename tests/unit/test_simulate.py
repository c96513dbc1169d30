"""Tests of the feed simulator (pipelines.city.simulator) on a small demo city."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
import shapely

from pipelines.city import geography as geo
from pipelines.city import simulator as simulate
from pipelines.dispatch.flows import STAGE_OF_STEP, load_flows, parse_flows
from pipelines.settings import SimulateSettings
from pipelines.spine import events
from tests import flowfile

START = 1_772_406_000_000  # 2026-03-01 23:00 UTC = 2026-03-02 07:00 Asia/Shanghai
H = simulate.HOUR_MS
DECODE = dict(future_skew_ms=300_000, max_age_ms=30 * simulate.DAY_MS, max_payload_bytes=16384)
DECODABLE = {
    "malformed",
    "missing_field",
    "bad_type",
    "out_of_range",
    "unknown_category",
    "future_timestamp",
    "too_large",
}


@pytest.fixture(scope="module")
def city() -> geo.City:
    return geo.demo_city(2026, n_grids=300)


@pytest.fixture(scope="module")
def index(city: geo.City) -> geo.GridIndex:
    return geo.GridIndex(city)


@pytest.fixture(scope="module")
def cfg() -> SimulateSettings:
    return dataclasses.replace(
        SimulateSettings(),
        seed=11,
        workers=400,
        cameras=60,
        incidents_per_day=3000,
        video_alerts_per_day=4000,
        malformed_share=0.004,
    )


@pytest.fixture(scope="module")
def live(city: geo.City, cfg: SimulateSettings) -> tuple[simulate.Simulator, list[Any]]:
    """Six natural hours from 07:00 local (covers every scripted anomaly)."""
    sim = simulate.Simulator(city, cfg, load_flows(), START)
    return sim, sim.advance_labelled(START + 6 * H)


@pytest.fixture(scope="module")
def two_days(city: geo.City, cfg: SimulateSettings) -> list[Any]:
    """Two simulated days with location pings thinned by the rate cap."""
    sim = simulate.Simulator(city, dataclasses.replace(cfg, rate=2.0), load_flows(), START)
    return sim.advance_labelled(START + 48 * H)


def _frame(feed: str, labelled: list[Any]) -> pl.DataFrame:
    rows = [orjson.loads(p) for f, p, r in labelled if f == feed and r is None]
    return pl.DataFrame(rows, schema=events.schema_of(feed))


def _decode(feed: str, payloads: list[bytes], now_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    entries = [(str(i), p) for i, p in enumerate(payloads)]
    return events.decode_batch(feed, entries, now_ms=now_ms, **DECODE)  # type: ignore[arg-type]


def _latest_good_ts(labelled: list[Any]) -> int:
    return max(orjson.loads(p)["ts"] for f, p, r in labelled[-2000:] if r is None)


# ---------------------------------------------------------------- pure helpers


def test_plan_lifecycle_follows_transitions() -> None:
    rng = np.random.default_rng(1)
    levels = Counter()
    flow = parse_flows(flowfile.doc()).select("other", 1)
    for i in range(3000):
        plan = simulate.plan_lifecycle(rng, flow, ("worker", "hotline")[i % 2])
        steps = [s for _, s, _ in plan]
        offsets = [o for o, _, _ in plan]
        assert steps[0] == "reported" and steps[-1] == "closed"
        assert offsets == sorted(set(offsets))
        for a, b in itertools.pairwise(steps):
            assert b in events.TRANSITIONS[a], (a, b)
        levels[plan[-1][2]] += 1
    assert levels["grid"] / 3000 > 0.65
    assert set(levels) == set(events.LEVELS)


def test_plan_lifecycle_keeps_the_flow() -> None:
    """~7 % of incidents close after their flow's deadline (its stages' hours, 20 h here);
    the time is shared out by stage hours, so each stage mostly keeps its own deadline."""
    stage_h = (1.0, 2.0, 10.0, 4.0, 3.0)
    hours = dict(zip(flowfile.STAGES, stage_h, strict=True))
    flow_o = parse_flows(flowfile.doc(flowfile.flow("o", "other", stage_h))).select("other", 1)
    rng = np.random.default_rng(7)
    n, late = 4000, 0
    spent: dict[str, list[float]] = {s: [] for s in hours}
    for i in range(n):
        plan = simulate.plan_lifecycle(rng, flow_o, ("worker", "hotline")[i % 2])
        late += plan[-1][0] / H > sum(hours.values())
        per: dict[str, float] = {}
        for (t0, step, _), (t1, _, _) in itertools.pairwise(plan):
            stage = STAGE_OF_STEP[step] or "close"
            per[stage] = per.get(stage, 0.0) + (t1 - t0) / H
        for stage, h in per.items():
            spent[stage].append(h)
    assert 0.04 < late / n < 0.10
    for stage, times in spent.items():
        over = sum(t > hours[stage] for t in times) / len(times)
        assert over < 0.15, (stage, over)
        assert np.median(times) < hours[stage] / 2, stage


def test_hourly_profile_peaks_by_day() -> None:
    morning = START + 3 * H  # 10:00 local
    night = START - 4 * H  # 03:00 local
    assert simulate.local_hour(morning) == pytest.approx(10.0)
    rate = simulate.hourly_rate(simulate.HOURLY_INCIDENTS, np.array([morning, night]))
    assert rate[0] > 5 * rate[1]
    assert simulate.HOURLY_INCIDENTS.mean() == pytest.approx(1.0)


# ---------------------------------------------------------------- roster / registry


def test_roster_and_cameras(
    live: tuple[simulate.Simulator, list[Any]], city: geo.City, index: geo.GridIndex
) -> None:
    sim, _ = live
    r = sim.roster
    assert r.height == 400 and r["worker_id"].n_unique() == 400
    assert r.columns == ["worker_id", "name", "type", "grid_id", "phone_masked"]
    assert set(city.grids["grid_id"].to_list()) <= set(r["grid_id"].to_list())
    types = Counter(r["type"].to_list())
    assert types.most_common(1)[0][0] == "full_time" and set(types) <= set(simulate.WORKER_TYPES)
    assert all(len(n) in (2, 3) for n in r["name"].to_list())
    assert r["phone_masked"].str.contains(r"^1\d\d\*{4}\d{4}$").all()
    c = sim.cameras
    assert c.height == 60 and c["camera_id"].n_unique() == 60
    got = index.assign(c["lon"].to_numpy(), c["lat"].to_numpy())
    ids = city.grids["grid_id"].to_numpy()
    assert (got >= 0).all() and (ids[got] == c["grid_id"].to_numpy()).all()


# ---------------------------------------------------------------- determinism


def test_same_seed_same_bytes_regardless_of_steps(city: geo.City, cfg: SimulateSettings) -> None:
    a = simulate.Simulator(city, cfg, load_flows(), START)
    b = simulate.Simulator(city, cfg, load_flows(), START)
    one = a.advance(START + 40 * 60_000)
    many: list[tuple[str, bytes]] = []
    for k in range(1, 41):
        many += b.advance(START + k * 60_000 - 17_000)
    many += b.advance(START + 40 * 60_000)
    assert one == many and len(one) > 10_000
    other = simulate.Simulator(city, dataclasses.replace(cfg, seed=12), load_flows(), START)
    assert other.advance(START + 40 * 60_000) != one


# ---------------------------------------------------------------- validity


@pytest.mark.parametrize("feed", events.FEEDS)
def test_good_events_decode_and_lie_in_city(
    feed: str, live: tuple[simulate.Simulator, list[Any]], index: geo.GridIndex
) -> None:
    _, labelled = live
    now = _latest_good_ts(labelled) + 1
    payloads = [p for f, p, r in labelled if f == feed and r is None]
    good, dead = _decode(feed, payloads, now)
    assert dead.height == 0, dead.head(3)
    assert good.height == len(payloads) > 100
    assert good["ts"].is_between(START + 1, START + 6 * H).all()
    assert good["ts"].is_sorted()
    located = good.filter(pl.col("lon").is_not_null())
    assert (index.assign(located["lon"].to_numpy(), located["lat"].to_numpy()) >= 0).all()
    if feed == "video":
        share = 1 - located.height / good.height
        assert 0.2 < share < 0.4
    ids = {"reports": "event_id", "video": "alert_id"}.get(feed)
    if ids:
        assert good[ids].n_unique() == good.height


def test_bad_events_carry_the_reason_decode_gives(
    live: tuple[simulate.Simulator, list[Any]],
) -> None:
    sim, labelled = live
    now = _latest_good_ts(labelled) + 1
    bad = [(f, p, r) for f, p, r in labelled if r is not None]
    assert Counter(r for _, _, r in bad).keys() == {k[1] for k in simulate.BAD_KINDS}
    assert list(sim.injected) == bad
    for feed in events.FEEDS:
        judged = [(p, r) for f, p, r in bad if f == feed and r in DECODABLE]
        good, dead = _decode(feed, [p for p, _ in judged], now)
        assert good.height == 0
        assert dead["reason"].to_list() == [r for _, r in judged]
        rest = [p for f, p, r in bad if f == feed and r not in DECODABLE]
        good, dead = _decode(feed, rest, now)
        assert dead.height == 0  # outside_city / duplicate / bad_transition come later
    first: dict[bytes, int] = {}
    closed: dict[str, int] = {}
    for i, (feed, payload, reason) in enumerate(labelled):
        if reason == "duplicate":
            assert first[payload] < i
        elif reason == "bad_transition":
            assert closed[orjson.loads(payload)["incident_id"]] < i
        elif reason is None and feed != "locations":
            first.setdefault(payload, i)
            if b'"step":"closed"' in payload:
                closed[orjson.loads(payload)["incident_id"]] = i
    outside = [orjson.loads(p) for _, p, r in bad if r == "outside_city"]
    assert all((o["lon"], o["lat"]) == (116.4, 39.9) for o in outside)


# ---------------------------------------------------------------- incidents


def test_incident_lifecycles_and_mix(two_days: list[Any]) -> None:
    assert len(two_days) / (48 * 3600) <= 2.0  # the rate cap thins location pings
    rep = _frame("reports", two_days).sort("ts", maintain_order=True)
    by_inc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rep.iter_rows(named=True):
        by_inc[row["incident_id"]].append(row)
    flows = load_flows()
    closed_levels: Counter[str] = Counter()
    overdue, short = 0, 0  # among short-deadline incidents that all closed in the window
    for rows in by_inc.values():
        steps = [r["step"] for r in rows]
        assert steps[0] == "reported"
        for a, b in itertools.pairwise(steps):
            assert b in events.TRANSITIONS[a], (a, b)
        if steps[-1] == "closed":
            closed_levels[rows[-1]["level"]] += 1
        deadline_h = flows.select(rows[0]["category"], rows[0]["severity"]).total_hours
        if deadline_h <= 12 and rows[0]["ts"] < START + 24 * H:
            assert steps[-1] == "closed"
            short += 1
            overdue += (rows[-1]["ts"] - rows[0]["ts"]) / H > deadline_h
    n_closed = sum(closed_levels.values())
    assert n_closed > 1000
    assert closed_levels["grid"] / n_closed >= 0.6
    assert short > 100 and 0.02 < overdue / short < 0.15
    reported = rep.filter(pl.col("step") == "reported")
    cats = Counter(reported["category"].to_list())
    top2 = {c for c, _ in cats.most_common(2)}
    assert top2 == {"sanitation", "city_management"}
    assert cats["fire"] / reported.height < 0.05
    assert Counter(reported["source"].to_list()).most_common(1)[0][0] == "worker"
    assert (reported["severity"] <= 2).mean() > 0.7  # type: ignore[operator]
    hours = simulate.local_hour(reported["ts"].to_numpy())
    assert ((hours >= 9) & (hours < 11)).sum() > 3 * ((hours >= 2) & (hours < 4)).sum()
    assert reported["description"].str.len_chars().min() > 0  # type: ignore[operator]


# ---------------------------------------------------------------- workers


def test_workers_patrol_their_grids(
    live: tuple[simulate.Simulator, list[Any]], index: geo.GridIndex, city: geo.City
) -> None:
    sim, labelled = live
    loc = _frame("locations", labelled)
    home = dict(zip(sim.roster["worker_id"], sim.roster["grid_id"], strict=True))
    grid_ids = city.grids["grid_id"].to_numpy()
    got = index.assign(loc["lon"].to_numpy(), loc["lat"].to_numpy())
    assert (got >= 0).all()
    expected = np.array([home[w] for w in loc["worker_id"].to_list()])
    inside = (grid_ids[got] == expected).mean()
    assert 0.8 <= inside < 1.0  # mostly at home, sometimes straying
    assert loc["speed"].is_between(0, 2).all() and loc["accuracy"].is_between(3, 50).all()
    gaps = (
        loc.sort("worker_id", "ts")
        .with_columns(gap=pl.col("ts").diff().over("worker_id"))
        .drop_nulls("gap")["gap"]
    )
    assert gaps.min() >= 10_000  # type: ignore[operator]
    assert 10_000 <= gaps.median() <= 30_000  # type: ignore[operator]
    # Offline phones: silences of 5+ minutes in the middle of working hours.
    assert (gaps > 5 * 60_000).sum() > 10
    drained = loc.group_by("worker_id").agg(pl.col("battery").first() - pl.col("battery").last())
    assert drained["battery"].median() > 5  # type: ignore[operator]


# ---------------------------------------------------------------- anomalies


def test_scripted_anomalies_show_in_data(
    live: tuple[simulate.Simulator, list[Any]], index: geo.GridIndex, city: geo.City
) -> None:
    sim, labelled = live
    kinds = {a["kind"]: a for a in sim.anomalies}
    assert set(kinds) == {"dispute_surge", "fire_cluster", "patrol_gap"}
    streets = city.grids["street_id"].to_numpy()

    surge = kinds["dispute_surge"]
    rep = _frame("reports", labelled).filter(pl.col("step") == "reported")
    rep = rep.with_columns(street=pl.Series(streets[index.assign(rep["lon"], rep["lat"])]))
    disputes = rep.filter(
        (pl.col("street") == surge["area_id"]) & (pl.col("category") == "dispute")
    )
    in_win = disputes["ts"].is_between(surge["start_ms"], surge["end_ms"], closed="left")
    assert in_win.sum() >= 10 and in_win.sum() > 8 * max(1, (~in_win).sum() / 5)

    fire = kinds["fire_cluster"]
    vid = _frame("video", labelled)
    cams = dict(zip(sim.cameras["camera_id"], sim.cameras["grid_id"], strict=True))
    street_of = dict(zip(city.grids["grid_id"], city.grids["street_id"], strict=True))
    smoke = vid.filter(
        (pl.col("label") == "smoke_fire")
        & pl.col("ts").is_between(fire["start_ms"], fire["end_ms"])
    )
    in_street = {c for c in smoke["camera_id"].to_list() if street_of[cams[c]] == fire["area_id"]}
    assert len(in_street) >= 4
    fire_rep = rep.filter(pl.col("incident_id") == fire["incident_id"])
    assert fire_rep["category"].to_list() == ["fire"] and fire_rep["street"][0] == fire["area_id"]

    gap = kinds["patrol_gap"]
    members = {
        w
        for w, g in zip(sim.roster["worker_id"], sim.roster["grid_id"], strict=True)
        if street_of[g] == gap["area_id"]
    }
    loc = _frame("locations", labelled).filter(pl.col("worker_id").is_in(list(members)))
    silent = loc["ts"].is_between(gap["start_ms"], gap["end_ms"], closed="left")
    assert silent.sum() == 0 and loc.height > 100


# ---------------------------------------------------------------- generate / jsonl / live


def test_generate_batch(city: geo.City, cfg: SimulateSettings) -> None:
    mix = {"locations": 0.7, "reports": 0.22, "video": 0.08}
    batch = simulate.generate(city, cfg, load_flows(), START, 60_000, mix=mix, malformed_share=0.01)
    assert len(batch) == 60_000
    good = [(f, p) for f, p, r in batch if r is None]
    share = Counter(f for f, _ in good)
    for feed, want in mix.items():
        assert share[feed] / len(good) == pytest.approx(want, abs=0.01)
    labels = Counter(r for _, _, r in batch if r)
    assert labels.keys() == {k[1] for k in simulate.BAD_KINDS}
    first_seen: dict[bytes, int] = {}
    closed_at: dict[str, int] = {}
    for i, (feed, payload, reason) in enumerate(batch):
        if reason == "duplicate":
            assert i - first_seen[payload] >= 20_000
        elif reason == "bad_transition":
            assert i - closed_at[orjson.loads(payload)["incident_id"]] >= 20_000
        elif reason is None:
            first_seen.setdefault(payload, i)
            if feed == "reports" and b'"step":"closed"' in payload:
                closed_at[orjson.loads(payload)["incident_id"]] = i
    again = simulate.generate(city, cfg, load_flows(), START, 60_000, mix=mix, malformed_share=0.01)
    assert again == batch


def test_location_events_fast_and_valid(city: geo.City, index: geo.GridIndex) -> None:
    payloads = simulate.location_events(city, 500, 20_000, START, seed=3)
    assert len(payloads) == 20_000
    good, dead = _decode("locations", payloads, START + 10 * H)
    assert dead.height == 0
    assert (index.assign(good["lon"].to_numpy(), good["lat"].to_numpy()) >= 0).all()
    assert payloads == simulate.location_events(city, 500, 20_000, START, seed=3)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    items = [
        ("reports", '{"description":"垃圾桶满溢"}'.encode()),
        ("video", b'{"a":1}\n{"b":2}'),
        ("locations", b'{"worker_id":"W1","ts":1' + b"\xff\xfe"),
        ("reports", b""),
    ]
    path = tmp_path / "feed.jsonl"
    assert simulate.write_jsonl(path, items) == 4
    assert list(simulate.read_jsonl(path)) == items
    assert len(path.read_bytes().splitlines()) == 4


def test_run_live_with_fake_clock(city: geo.City, cfg: SimulateSettings) -> None:
    quiet = dataclasses.replace(cfg, malformed_share=0.0)
    sim = simulate.Simulator(city, quiet, load_flows(), START)
    stop = threading.Event()
    now = [1000.0]

    def clock() -> float:
        now[0] += 30.0  # each call: 30 s of wall time
        return now[0]

    got: list[tuple[str, bytes]] = []
    calls: list[str] = []

    def sink(feed: str, payloads: list[bytes]) -> None:
        assert payloads and feed in events.FEEDS
        calls.append(feed)
        got.extend((feed, p) for p in payloads)
        if len(calls) >= 9:
            stop.set()

    simulate.run_live(sim, sink, speed=2.0, stop=stop, clock=clock, tick_s=0.0)
    assert stop.is_set() and set(calls) == set(events.FEEDS)
    ref = simulate.Simulator(city, quiet, load_flows(), START).advance(sim.clock_ms)
    assert Counter(got) == Counter(ref) and sim.clock_ms > START


def test_quiet_minutes_never_block_later_events() -> None:
    """A simulated minute without events must not hold back the minutes after it."""
    city = geo.demo_city(2026, n_grids=120)
    cfg = dataclasses.replace(
        SimulateSettings(),
        workers=0,
        cameras=5,
        incidents_per_day=300,
        video_alerts_per_day=0,
        anomalies=False,
        malformed_share=0.0,
    )
    midnight = 1_795_708_800_000 - 8 * 3_600_000  # 00:00 Asia/Shanghai: quiet hours first
    sim = simulate.Simulator(city, cfg, load_flows(), start_ms=midnight)
    events = sim.advance(midnight + 12 * 3_600_000)
    assert len(events) > 20  # the day's reports arrive although night minutes are empty


def test_points_are_sampled_at_published_precision_inside_their_grid(
    city: geo.City, index: geo.GridIndex
) -> None:
    geoms = np.asarray(city.grid_geoms)
    idx = np.repeat(np.arange(len(geoms)), 200)
    rng = np.random.default_rng(5)
    x, y = simulate.sample_in_grids(geoms, shapely.bounds(geoms), idx, rng)
    assert (np.round(x, simulate.COORD_DECIMALS) == x).all()
    assert (np.round(y, simulate.COORD_DECIMALS) == y).all()
    assert (index.assign(x, y) == idx).all()


def test_a_walk_never_leaves_the_city(
    city: geo.City, cfg: SimulateSettings, index: geo.GridIndex
) -> None:
    """Whatever the waypoint (here: Beijing), a published position stays inside the city."""
    sim = simulate.Simulator(city, cfg, load_flows(), START)
    w = sim._w
    e = np.arange(50)
    w.tx[e], w.ty[e] = simulate.OUTSIDE_LON, simulate.OUTSIDE_LAT
    for k in range(1, 4):
        sim._move(e, w.last_ping[e] + k * 600_000)
        w.last_ping[e] += k * 600_000
        assert (index.assign(w.x[e], w.y[e]) >= 0).all()
