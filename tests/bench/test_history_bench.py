"""The time machine at city scale: 30 days of history (incidents with their lifecycle
events, workers' track points, patrols, warnings, video alerts) in SQL, then

* the hourly checkpoints the running product keeps (``history.keeper``), built for the
  days back to the moment: seconds and megabytes per hour;
* one city-level reconstruction at a past moment (``HistoricState`` + the city panel's
  reads: the city with its districts, every grid's metric) from the checkpoint before it,
  against the bare SQL reads it needs (``history.state.read_rows``: the same rows into
  Polars, nothing computed), and the same without checkpoints;
* a street stepped through a day at 60× (one frame per simulated minute: the moment's
  state and the street panel's reads, its markers' open incidents and positions), frame
  time median and p95, against the same bare reads per frame.

Prints BENCH lines; asserts only that the pictures are not empty."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from sqlalchemy import select

from dashboard.pages.panorama import queries as q
from pipelines.city.geography import City
from pipelines.history import keeper
from pipelines.history.state import HistoricState, Scope, read_rows
from pipelines.settings import load_settings
from pipelines.spine import store
from tests.bench.conftest import RUNS, bench, median, with_baseline
from tests.history import load, make_history

pytestmark = [pytest.mark.bench, pytest.mark.slow]

INCIDENTS = int(os.environ.get("WANGGE_BENCH_TM_INCIDENTS", "300000"))
WORKERS = int(os.environ.get("WANGGE_BENCH_TM_WORKERS", "5000"))
FRAMES = int(os.environ.get("WANGGE_BENCH_TM_FRAMES", "120"))
TZ = ZoneInfo("Asia/Shanghai")
START = int(datetime(2026, 11, 1, tzinfo=TZ).timestamp() * 1000)
DAYS = 30
AT = int(datetime(2026, 11, 21, 15, 37, 12, tzinfo=TZ).timestamp() * 1000)  # day 21, 15:37
NOW = START + DAYS * 86_400_000


def video(city: City, n: int, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    g = city.grids.select("grid_id", "street_id", "district_id", "lon", "lat")
    pick = g[rng.integers(0, g.height, n).tolist()]
    ts = START + rng.integers(0, DAYS * 86_400_000, n)
    labels = np.array(["fall", "smoke_fire", "illegal_parking", "crowd"], dtype=object)
    return pick.with_columns(
        alert_id=pl.Series([f"V{i:08d}" for i in range(n)]),
        camera_id=pl.Series([f"C{i % 3000:05d}" for i in range(n)]),
        label=pl.Series(labels[rng.integers(0, 4, n)]),
        score=pl.lit(0.8),
        ts_ms=pl.Series(ts),
        entry_id=pl.Series([f"{t}-0" for t in ts.tolist()]),
    )


@pytest.fixture(scope="module")
def history(city: City, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("tm")
    base = load_settings(environ={})
    settings = dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, url=f"sqlite:///{tmp / 'tm.db'}"),
        live=dataclasses.replace(base.live, checkpoint_days=DAYS - 19),  # back to day 20
    )
    engine = store.make_engine(settings.database.url)
    store.create_schema(engine)
    t0 = time.perf_counter()
    h = make_history(city, START, DAYS, INCIDENTS, WORKERS, track_every_min=15)
    load(engine, h)
    alerts = video(city, 60_000)
    cols = [c.name for c in store.video_alerts.columns if c.name in alerts.columns]
    with engine.begin() as conn:
        conn.execute(store.video_alerts.insert(), alerts.select(cols).to_dicts())
    bench("tm.history_rows", float(h.events.height), "events", load_s=time.perf_counter() - t0)
    kept = keeper.keep(engine, city, settings, NOW)  # as the running product keeps them
    n = len(kept.built)
    bench(
        "tm.checkpoint_build",
        kept.seconds / n,
        "s",
        hours=n,
        stepped=kept.stepped,
        total_s=round(kept.seconds, 1),
        mb_per_hour=round(kept.bytes / n / 1e6, 2),
    )
    yield settings, engine
    engine.dispose()


def city_frame(engine: Any, city: City, settings: Any, at: int, checkpoint: bool = True) -> int:
    st = HistoricState(engine, city, settings, at, now_ms=NOW, use_checkpoint=checkpoint)
    assert (st.rows.base is not None) == checkpoint
    view = q.view_of(city, city.city_id)
    assert view is not None
    day = q.local_day(at, settings.live.timezone)
    raw = st.read_areas(
        [view.area_id, *view.children], day, view.area_id, q.hours_back(at), q.breakdown_spec()
    )
    grids = st.metric_for("open", city.grids["grid_id"].to_list(), day)
    return int(raw["open"][0]) + len(grids)


def street_frame(engine: Any, city: City, settings: Any, street: str, at: int) -> int:
    st = HistoricState(engine, city, settings, at, now_ms=NOW, area_id=street)
    view = q.view_of(city, street)
    assert view is not None
    day = q.local_day(at, settings.live.timezone)
    raw = st.read_areas(
        [view.area_id, *view.children], day, view.area_id, q.hours_back(at), q.breakdown_spec()
    )
    incs = st.open_incidents(street)
    return int(raw["open"][0]) + len(incs) + len(st.positions())


def bare(engine: Any, city: City, settings: Any, at: int, area: str | None = None) -> int:
    bucket = settings.live.bucket_ttl_hours * 3_600_000
    rows = read_rows(engine, city, settings, at, bucket, Scope.of(city, area))
    return rows.events.height + rows.points.height


def test_city_reconstruction_at_a_past_moment(city: City, history: Any) -> None:
    settings, engine = history
    runs, base, plain = [], [], []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        assert bare(engine, city, settings, AT) > 0
        base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert city_frame(engine, city, settings, AT) > 0
        runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert city_frame(engine, city, settings, AT, checkpoint=False) > 0
        plain.append(time.perf_counter() - t0)
    with_baseline(
        "tm.city_reconstruction",
        "s",
        runs,
        base,
        target_s=0.5,
        without_checkpoints_s=median(plain),
        vs_without=round(median(runs) / median(plain), 3),
    )


def test_street_steps_through_a_day_at_60x(city: City, history: Any) -> None:
    settings, engine = history
    with engine.connect() as conn:  # a street with rostered workers (and their tracks)
        grid = conn.execute(select(store.workers.c.grid_id).limit(1)).scalar_one()
    street = city.grids.filter(pl.col("grid_id") == grid)["street_id"][0]
    day0 = int(datetime(2026, 11, 21, 8, 0, tzinfo=TZ).timestamp() * 1000)
    frames, base = [], []
    for i in range(FRAMES):
        at = day0 + i * 60_000  # 60×: a simulated minute per second of play
        t0 = time.perf_counter()
        street_frame(engine, city, settings, street, at)
        frames.append(time.perf_counter() - t0)
        if i % 10 == 0:
            t0 = time.perf_counter()
            bare(engine, city, settings, at, street)
            base.append(time.perf_counter() - t0)
    p95 = float(np.percentile(frames, 95))
    bench(
        "tm.street_frame_p95",
        p95,
        "s",
        median=median(frames),
        frames=len(frames),
        baseline=median(base),
        ratio=round(p95 / median(base), 3),
        target_s=0.2,
    )
