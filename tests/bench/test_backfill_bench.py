"""The first start's backfill of the FULL demo city: `WANGGE_BENCH_BACKFILL_DAYS` (7) days
simulated through the streams and real worker processes (`wangge worker`, one per feed
plus `simulate.backfill_report_workers` − 1 extra report workers), as `wangge run` does.

Figures: ``backfill_<N>d`` (events/s end to end, elapsed, events per feed, CPU seconds of
the driver and of the workers) with its same-run baseline ``bare publish``: the same
simulator generating and XADDing one simulated day into a stream nobody reads. Asserts
what the backfill promises: every event applied (SQL holds every report step and alert),
nothing dead-lettered. Then ``warnings_replay_<N>d``: the past's warnings evaluated over
that history, per moment against the live engine's tick at its end. Never asserts a time.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path
from statistics import median
from typing import Any

import pytest
import redis

from pipelines.city.geography import City, demo_cache_path
from pipelines.city.simulator.backfill import backfill_simulator
from pipelines.cli import backfill as bf
from pipelines.dispatch.flows import flows_for
from pipelines.settings import GeoSettings, child_environ, load_settings
from pipelines.spine import store
from pipelines.spine.streams import publish
from pipelines.warnings import WarningEngine
from tests.bench.conftest import bench, with_baseline

pytestmark = pytest.mark.bench

DAYS = float(os.environ.get("WANGGE_BENCH_BACKFILL_DAYS", "7"))


def _cpu_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def test_backfill_full_city(
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    city: City,
    geo_settings: GeoSettings,
    fresh_db: Any,
    tmp_path: Path,
) -> None:
    base = load_settings(environ={})
    url, schema, engine = fresh_db("sqlite")
    s = dataclasses.replace(
        base,
        redis=dataclasses.replace(base.redis, url=redis_url, prefix=prefix),
        database=dataclasses.replace(base.database, url=url, schema=schema or ""),
        run=dataclasses.replace(base.run, var_dir=str(tmp_path)),
    )
    # the baseline: simulate one day and XADD it into a stream nobody reads
    now = int(time.time() * 1000)
    sim = backfill_simulator(city, s.simulate, flows_for(s), now, 1.0)
    t0, n = time.perf_counter(), 0
    key = f"{prefix}:bare"
    while sim.clock_ms < now:
        batch = sim.advance(min(sim.clock_ms + 600_000, now))
        publish(rclient, key, [p for _, p in batch])
        n += len(batch)
    bare = n / (time.perf_counter() - t0)
    rclient.delete(key)

    env = child_environ(
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_CACHE_DIR=str(demo_cache_path(geo_settings).parent),
        WANGGE_RUN_VAR_DIR=str(tmp_path),
    )
    counts = {"reports": max(s.simulate.backfill_report_workers, 1), "locations": 1, "video": 1}
    cpu_children0, cpu_self0 = _cpu_children(), _cpu_self()
    procs: list[Any] = []  # started once the cameras are in SQL, as `simulate --backfill`
    load0 = os.getloadavg()[0]
    try:
        sim, res = bf.backfill_streams(
            s,
            city,
            rclient,
            engine,
            DAYS,
            wait=bf.watching(procs),
            ready=lambda: procs.extend(bf.spawn_workers(s, env, counts, "bench")),
        )
    finally:
        bf.stop_workers(procs)
    cpu_workers = _cpu_children() - cpu_children0
    cpu_driver = _cpu_self() - cpu_self0
    # everything applied, nothing dead-lettered
    assert store.table_count(engine, store.incident_events) == res.events["reports"]
    assert store.table_count(engine, store.video_alerts) == res.events["video"]
    assert store.table_count(engine, store.dead_letters) == 0
    with_baseline(
        f"backfill_{DAYS:g}d",
        "events/s",
        [res.rate],
        [bare],
        baseline_is="bare publish: simulate + XADD one day, no consumer, same run",
        elapsed_s=round(res.elapsed_s, 1),
        events=res.events,
        cpu_driver_s=round(cpu_driver, 1),
        cpu_workers_s=round(cpu_workers, 1),
        loadavg_1m_at_start=round(load0, 2),
        loadavg_1m_at_end=round(os.getloadavg()[0], 2),
        cpus=os.cpu_count(),
    )
    bench(f"backfill_{DAYS:g}d_elapsed", res.elapsed_s, "s", target=180)

    # the past's warnings (what `wangge run` does next), per evaluated moment, against the
    # live engine's tick over the same history at its end (its baseline, same run)
    t0 = time.perf_counter()
    past = bf.replay_warnings(s, city, rclient, engine, bf.finish_span(engine, sim, res))
    replay_s = time.perf_counter() - t0
    assert past is not None and past.steps > 0
    live = WarningEngine(s, city, rclient, engine, clock=lambda: res.end_ms / 1000)
    ticks = []
    for _ in range(3):
        t0 = time.perf_counter()
        live.tick()
        ticks.append(time.perf_counter() - t0)
    bench(
        f"warnings_replay_{DAYS:g}d",
        replay_s,
        "s",
        moments=past.steps,
        per_moment_ms=round(1000 * past.elapsed_s / past.steps, 1),
        live_tick_ms=round(1000 * median(ticks), 1),
        ratio_to_live_tick=round(past.elapsed_s / past.steps / median(ticks), 2),
        opened=past.opened,
        baseline_is="the live engine's tick over the same history at its end, same run",
    )
