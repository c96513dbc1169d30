"""Early-warning benchmarks: one evaluation over the full city, false warnings on a normal
simulated day, and event → visible warning latency under load.

Run with ``make bench`` (optionally with ``REDIS_URL`` / ``DATABASE_URL``). Every figure
is one ``BENCH {json}`` line (see tests/bench/README.md). Nothing here asserts a time;
the tests assert that the engine saw what it was fed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest
import redis
from sqlalchemy import Engine, select

from pipelines import warnings as W
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex, demo_cache_path
from pipelines.dispatch.flows import flows_for
from pipelines.settings import GeoSettings, Settings, child_environ, load_settings
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, FeedWorker, live_state, make_worker
from pipelines.spine.state import LiveState
from pipelines.spine.streams import ensure_group, publish
from tests.bench._producer import spawn_producer
from tests.bench.conftest import RUNS, bench, dialects, median, with_baseline
from tests.bench.test_pipeline_bench import _spawn_worker
from tests.conftest import settings_for, stop_processes

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
# 2026-03-02 00:00 Asia/Shanghai: day 1 (history) starts at local midnight.
START = int(datetime(2026, 3, 1, 16, 0, tzinfo=UTC).timestamp() * 1000)
HISTORY_H = float(os.environ.get("WANGGE_BENCH_WARN_HISTORY_H", "24"))  # day 1
MEASURE_H = float(os.environ.get("WANGGE_BENCH_WARN_MEASURE_H", "24"))  # day 2
EVAL_MIN = int(os.environ.get("WANGGE_BENCH_WARN_EVAL_MIN", "5"))  # simulated tick period
ANOMALY_RULES = ("threshold", "surge", "video_cluster", "recurrence", "patrol_gap", "fusion")
LATENCY_RATE = 5000.0
LATENCY_WINDOW_S = float(os.environ.get("WANGGE_BENCH_WARN_LATENCY_S", "60"))
LATENCY_TICK_S = float(os.environ.get("WANGGE_BENCH_WARN_TICK_S", "10"))


# ---------------------------------------------------------------------------- a city day


class SimCity:
    """The full city fed by the simulator through the real feed workers and the clock
    job, on a simulated clock (the same wiring as ``make run``, minus the threads)."""

    def __init__(
        self, s: Settings, city: City, index: GridIndex, r: redis.Redis, engine: Engine
    ) -> None:
        self.now = [START]
        clock = self.clock
        # Workers ping every 8-12 min (not 10-30 s): a grid visit every few minutes is
        # all the patrol-gap rule needs, and a day of pings stays ~1 M events.
        cfg = dataclasses.replace(s.simulate, anomalies=False, ping_min_s=480, ping_max_s=720)
        self.sim = simulate.Simulator(city, cfg, flows_for(s), start_ms=START)
        store.replace_table(
            engine,
            store.cameras,
            self.sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts(),
        )
        cols = [c.name for c in store.workers.columns]
        store.replace_table(engine, store.workers, self.sim.roster.select(cols).to_dicts())
        self.feeds: dict[str, FeedWorker] = {
            f: make_worker(f, s, city, index, r, engine, f"{f}-w", clock=clock)
            for f in ("reports", "locations", "video")
        }
        self.job = ClockJob(s, city, live_state(r, s), r, clock=clock)
        self.r = r
        self.events = {"reports": 0, "locations": 0, "video": 0}

    def clock(self) -> float:
        return self.now[0] / 1000

    def advance(self, t: int, locations: bool = True) -> None:
        events = self.sim.advance(t)
        self.now[0] = t
        for f, w in self.feeds.items():
            if f == "locations" and not locations:
                continue
            batch = [p for g, p in events if g == f]
            self.events[f] += len(batch)
            for i in range(0, len(batch), 50_000):
                publish(self.r, w.consumer.stream, batch[i : i + 50_000])
                while w.step().acked:
                    pass
        self.job.tick()


@dataclasses.dataclass(frozen=True)
class DayRun:
    settings: Settings
    engine: Engine
    eng: W.WarningEngine
    sim: SimCity
    t_measure: int  # start of the measured day
    t_end: int
    ticks: list[dict[str, Any]]
    sla_streets_at: dict[str, int]  # local time → streets with an open SLA warning
    build_s: float


@pytest.fixture(scope="module")
def day_run(
    redis_url: str,
    module_prefix: str,
    city: City,
    index: GridIndex,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DayRun]:
    """History day + measured day of a normal city (no scripted anomalies), ticking the
    warning engine every ``EVAL_MIN`` simulated minutes (day 1: every 3 × EVAL_MIN until
    its last 3 h). SQLite (the default sink)."""
    tmp = tmp_path_factory.mktemp("warnday")
    url = f"sqlite:///{tmp / 'warn.db'}"
    base = load_settings(environ={})
    s = settings_for(
        redis_url,
        module_prefix,
        (url, None),
        tmp,
        streams={"block_ms": 1},
    )
    assert s.warnings == base.warnings
    engine = store.make_engine(url)
    store.create_schema(engine)
    r = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    sc = SimCity(s, city, index, r, engine)
    eng = W.WarningEngine(s, city, r, engine, clock=sc.clock)
    t_measure = START + int(HISTORY_H * HOUR)
    t_end = t_measure + int(MEASURE_H * HOUR)
    ticks: list[dict[str, Any]] = []
    sla_at: dict[str, int] = {}
    step = EVAL_MIN * MIN
    t = START
    while t < t_end:
        t += step
        # Day-1 locations matter only for the last hours (visits, who is online).
        sc.advance(t, locations=t > t_measure - 3 * HOUR)
        if t <= t_measure - 3 * HOUR and (t - START) % (3 * step):
            continue  # day 1 is evaluated every third step (its figure is informative only)
        res = eng.tick()
        res.pop("new_ids")
        ticks.append(res)
        local = (t - t_measure) // HOUR
        if t >= t_measure and (t - t_measure) % HOUR == 0 and local in (2, 6, 12, 24):
            open_sla = [w for w in eng.live.warnings() if w["rule"] == "sla"]
            sla_at[f"+{local}h"] = len({w["area_id"] for w in open_sla})
    build_s = time.perf_counter() - t0
    yield DayRun(s, engine, eng, sc, t_measure, t_end, ticks, sla_at, build_s)
    r.close()
    engine.dispose()


def _opened(engine: Engine, t0: int, t1: int) -> pl.DataFrame:
    t = store.warnings
    return store.read_frame(
        engine,
        select(t.c.rule, t.c.level, t.c.area_id, t.c.key, t.c.summary).where(
            t.c.first_seen_ms > t0, t.c.first_seen_ms <= t1
        ),
    )


# ---------------------------------------------------------------------------- false warnings


def test_false_warnings_normal_day(day_run: DayRun, city: City) -> None:
    d = day_run
    streets = city.grids["street_id"].n_unique()
    street_hours = streets * (d.t_end - d.t_measure) / HOUR
    opened = _opened(d.engine, d.t_measure, d.t_end)
    by_rule = {r: int(opened.filter(pl.col("rule") == r).height) for r in W.RULES | W.POST}
    by_level = {
        r: dict(opened.filter(pl.col("rule") == r).group_by("level").len().iter_rows())
        for r in ("sla", *ANOMALY_RULES)
        if by_rule.get(r)
    }
    false = sum(by_rule[r] for r in ANOMALY_RULES)
    # one serious fire report (the severity spec, min_count 1) is a real event, not noise
    serious_fire = opened.filter(
        (pl.col("rule") == "threshold")
        & pl.col("summary").str.contains('"category":"fire"', literal=True)
        & pl.col("summary").str.contains('"min_count":1,', literal=True)
    ).height
    cold = _opened(d.engine, START, d.t_measure)
    cold_false = cold.filter(pl.col("rule").is_in(ANOMALY_RULES)).height
    ev = d.sim.events
    bench(
        "warnings_false_per_1000_street_hours",
        false / street_hours * 1000,
        "warnings/1000 street-h",
        opened=false,
        by_rule={r: by_rule[r] for r in ANOMALY_RULES},
        single_serious_fire=serious_fire,
        excluding_single_serious_fire=round((false - serious_fire) / street_hours * 1000, 2),
        by_level={r: v for r, v in by_level.items() if r != "sla"},
        street_hours=street_hours,
        streets=streets,
        eval_every_min=EVAL_MIN,
        cold_day_eval_every_min=3 * EVAL_MIN,
        cold_day_per_1000_street_hours=round(
            cold_false / (streets * (d.t_measure - START) / HOUR) * 1000, 2
        )
        if d.t_measure > START
        else None,
        note="second simulated day (the first is the surge baseline), anomalies=False",
        events=ev,
        build_s=round(d.build_s, 1),
    )
    bench(
        "warnings_sla_per_1000_street_hours",
        by_rule["sla"] / street_hours * 1000,
        "warnings/1000 street-h",
        opened=by_rule["sla"],
        by_level=by_level.get("sla", {}),
        streets_with_open_sla=d.sla_streets_at,
        note="SLA breaches in the simulator are real (7 % of incidents overrun), not false",
    )
    assert sum(ev.values()) > 0
    assert d.ticks[-1]["findings"] >= 0


# ---------------------------------------------------------------------------- one tick


def test_tick_full_city(day_run: DayRun) -> None:
    """One evaluation over the full city with two days of history: interleaved runs of
    ``read_inputs`` alone (baseline), of a whole ``tick`` with every rule evaluated (the
    headline: a slow rule's tick) and of a typical tick (slow rules carried over)."""
    d = day_run
    n = max(RUNS, 5)
    reads: list[float] = []
    ticks: list[float] = []
    typical: list[float] = []
    per_rule: dict[str, list[float]] = {}
    now_ms = d.t_end
    for _ in range(n):
        t0 = time.perf_counter()
        inputs = d.eng.read_inputs(now_ms)
        reads.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        res = d.eng.tick(every_rule=True)
        ticks.append((time.perf_counter() - t0) * 1000)
        for k, v in res["timings"].items():
            per_rule.setdefault(k, []).append(v * 1000)
        t0 = time.perf_counter()
        d.eng.tick()
        typical.append((time.perf_counter() - t0) * 1000)
    # a restarted engine: the first read rebuilds every cache from SQL
    cold: list[float] = []
    for _ in range(RUNS):
        fresh = W.WarningEngine(d.settings, d.eng.city, d.eng.r, d.engine, clock=d.sim.clock)
        t0 = time.perf_counter()
        fresh.tick()
        cold.append((time.perf_counter() - t0) * 1000)
    with_baseline(
        "warnings_tick_full_city",
        "ms",
        ticks,
        reads,
        target="<= 500 ms",
        baseline_is="WarningEngine.read_inputs alone, same state, interleaved",
        every_rule=True,
        history_h=HISTORY_H + MEASURE_H,
        typical_tick_ms=round(median(typical), 1),
        typical_runs=typical,
        per_stage_ms={k: round(median(v), 1) for k, v in per_rule.items()},
        cold_tick_ms=round(median(cold), 1),
        cold_runs=cold,
        grids=d.eng.areas.grids.height,
        reports=inputs.reports.height,
        open_incidents=inputs.incidents.height,
        video=inputs.video.height,
        workers=inputs.workers.height,
        visited_grids=inputs.visits.height,
        open_warnings=res["open"],
    )
    for k, v in per_rule.items():
        bench(f"warnings_tick_stage_{k}", median(v), "ms", runs=v)
    assert inputs.reports.height > 0 and inputs.incidents.height > 0


# ---------------------------------------------------------------------------- latency


def _fire_report(street: str, city: City, index: GridIndex, n: int, ts_ms: int) -> bytes:
    """A serious fire report (severity 3: one is a warning) inside ``street``."""
    grids = city.grids.filter(pl.col("street_id") == street)
    lon, lat = grids["lon"].to_numpy(), grids["lat"].to_numpy()
    got = np.asarray(index.assign(lon, lat))
    ok = [i for i, g in enumerate(got.tolist()) if g >= 0 and city.grids["street_id"][g] == street]
    assert ok, f"no grid centroid of {street} lies in it"
    i = ok[0]
    return orjson.dumps(
        {
            "event_id": f"EBENCHFIRE{n:06d}",
            "incident_id": f"IBENCHFIRE{n:06d}",
            "ts": ts_ms,
            "step": "reported",
            "category": "fire",
            "severity": 3,
            "source": "hotline",
            "reporter_id": "12345-bench",
            "handler_id": f"H-{street}",
            "lon": float(lon[i]),
            "lat": float(lat[i]),
            "description": "bench fire",
            "level": "grid",
        }
    )


def _fire_visible(items: list[dict[str, Any]], street: str) -> bool:
    for w in items:
        if w["area_id"] != street:
            continue
        summary = w.get("summary") or {}
        if w["rule"] == "threshold" and summary.get("category") == "fire":
            return True
        if w["rule"] == "fusion" and any(k.endswith(":fire") for k in summary.get("parts", {})):
            return True
    return False


def _without_fires(events: list[tuple[str, bytes, str | None]]) -> list[tuple[str, bytes]]:
    """The background load minus every event of a fire incident (the bench's own fire
    reports are then the only ones, each in a street of its own)."""
    fire_ids = set()
    for f, p, _ in events:
        if f == "reports" and b'"fire"' in p:
            with contextlib.suppress(orjson.JSONDecodeError):
                ev = orjson.loads(p)
                if isinstance(ev, dict) and ev.get("category") == "fire":
                    fire_ids.add(ev.get("incident_id"))
    out = []
    for f, p, _ in events:
        if f == "reports" and fire_ids:
            with contextlib.suppress(orjson.JSONDecodeError):
                ev = orjson.loads(p)
                if isinstance(ev, dict) and ev.get("incident_id") in fire_ids:
                    continue
        out.append((f, p))
    return out


def test_event_to_visible_warning_latency(
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    index: GridIndex,
    geo_settings: GeoSettings,
    tmp_path: Path,
) -> None:
    """Real time: three `wangge worker` processes, the paced producer at 5,000 events/s,
    and ``WarningEngine.run`` (``tick_s`` = LATENCY_TICK_S) in a thread; serious fire
    reports XADDed at known times, each in a street of its own. Latency = XADD → the
    warning in the live list (``LiveState.warnings()``, polled every 50 ms)."""
    dialect = dialects()[-1]  # PostgreSQL when configured (production), else SQLite
    url, schema, engine = fresh_db(dialect)
    base = load_settings(environ={})
    s = settings_for(
        redis_url, prefix, (url, schema), tmp_path, warnings={"tick_s": LATENCY_TICK_S}
    )
    per_run = int(LATENCY_RATE * LATENCY_WINDOW_S)
    events = simulate.generate(
        city,
        base.simulate,
        flows_for(base),
        int(time.time() * 1000) - 2 * DAY,
        per_run * RUNS + 1000,
        mix={"locations": 0.85, "reports": 0.12, "video": 0.03},
    )
    events_file = tmp_path / "events.jsonl"
    simulate.write_jsonl(events_file, _without_fires(events))
    sim = simulate.Simulator(city, base.simulate, flows_for(base), start_ms=0)
    store.replace_table(
        engine, store.cameras, sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    feeds = ("locations", "reports", "video")
    keys = {f: f"{prefix}:{f}" for f in feeds}
    for key in keys.values():
        ensure_group(rclient, key, s.streams.group)
    env = child_environ(
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_CACHE_DIR=str(demo_cache_path(geo_settings).parent),
        WANGGE_RUN_VAR_DIR=str(tmp_path),
    )
    procs = {f: _spawn_worker(env, f, f"{f}-bench", tmp_path / f"{f}.log") for f in feeds}
    eng = W.WarningEngine(s, city, rclient, engine)
    tick_ms: list[float] = []
    real_tick = eng.tick

    def timed_tick() -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return real_tick()
        finally:
            tick_ms.append((time.perf_counter() - t0) * 1000)

    eng.tick = timed_tick  # type: ignore[method-assign]
    stop = threading.Event()
    loop = threading.Thread(target=eng.run, args=(stop, "bench"), daemon=True)
    live = LiveState(rclient, prefix)
    streets = sorted(city.grids["street_id"].unique().to_list())
    p50s: list[float] = []
    p95s: list[float] = []
    rates: list[float] = []
    all_lat: list[float] = []
    n = 0
    try:
        t0 = time.perf_counter()
        while not all(
            any(c["name"] == f"{f}-bench".encode() for c in rclient.xinfo_consumers(k, "pipelines"))
            for f, k in keys.items()
        ):
            for f, p in procs.items():
                assert p.poll() is None, (tmp_path / f"{f}.log").read_text()[-3000:]
            assert time.perf_counter() - t0 < 60, "workers did not start"
            time.sleep(0.1)
        loop.start()
        for run in range(RUNS):
            out = tmp_path / f"producer{run}.json"
            prod = spawn_producer(
                redis_url, prefix, events_file, out, per_run, LATENCY_RATE, skip=run * per_run
            )
            pending: dict[str, float] = {}  # street → publish time
            lat: list[float] = []
            t_run = time.perf_counter()
            next_fire = t_run + 5.0  # warm-up
            while prod.poll() is None or pending:
                now = time.perf_counter()
                if prod.poll() is None and now >= next_fire:
                    street = streets[n % len(streets)]
                    payload = _fire_report(street, city, index, n, int(time.time() * 1000))
                    n += 1
                    publish(rclient, keys["reports"], [payload])
                    pending[street] = time.perf_counter()
                    next_fire = now + 6.3  # not a multiple of the tick: phases vary
                if pending:
                    items = live.warnings()
                    for street, t_pub in list(pending.items()):
                        if _fire_visible(items, street):
                            lat.append((time.perf_counter() - t_pub) * 1000)
                            del pending[street]
                        elif time.perf_counter() - t_pub > 10 * LATENCY_TICK_S + 60:
                            raise AssertionError(f"fire in {street} never became visible")
                for f, p in procs.items():
                    assert p.poll() is None, (tmp_path / f"{f}.log").read_text()[-3000:]
                time.sleep(0.05)
            assert prod.returncode == 0
            rates.append(orjson.loads(out.read_bytes())["rate"])
            assert lat, "no fire was injected"
            p50s.append(float(np.percentile(lat, 50)))
            p95s.append(float(np.percentile(lat, 95)))
            all_lat.extend(lat)
    finally:
        stop.set()
        stop_processes(procs.values())
        loop.join(timeout=60)
    bench(
        "warnings_event_to_visible_p95",
        median(p95s),
        "ms",
        runs=p95s,
        p50=median(p50s),
        p50_runs=p50s,
        max=max(all_lat),
        samples=len(all_lat),
        tick_s=LATENCY_TICK_S,
        target=f"<= tick_s + 2 s = {LATENCY_TICK_S * 1000 + 2000:.0f} ms",
        tick_ms_p50=float(np.percentile(tick_ms, 50)) if tick_ms else None,
        tick_ms_max=max(tick_ms) if tick_ms else None,
        ticks=len(tick_ms),
        offered_rate=median(rates),
        measure="XADD of a severity-3 fire report -> the warning in LiveState.warnings() "
        "(50 ms polling), under the latency bench's 5,000 events/s mix",
        database=dialect,
    )
