"""Command and dispatch: how soon an action is seen.

* **read-your-writes**: ``actions.perform`` returns once the pipeline has applied the
  action (the actor's queue reads SQL right after): its latency, median and p95;
* **on the panorama**: a closing action → the live state's closed count of the area (what
  the panorama reads every refresh tick) has moved; compared with the dashboard's refresh
  tick (``[dashboard] refresh_s``);
* **baseline** (same run): a field report published straight to the reports stream →
  visible in SQL, the path every field event takes.

A reports pipeline runs in a background thread on the bench's Redis and a fresh database.
Printed as ``BENCH`` lines; nothing here asserts a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from sqlalchemy import insert

from pipelines.city.geography import City, GridIndex
from pipelines.dispatch import actions as A
from pipelines.dispatch.units import demo_units, units
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.bench.conftest import bench, median
from tests.conftest import private_prefix, settings_for

pytestmark = pytest.mark.bench

N = 60


def _p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


@pytest.fixture
def world(
    redis_url: str, city: City, index: GridIndex, fresh_db: Any, tmp_path: Path
) -> Iterator[tuple[A.ActionContext, Any]]:
    url, schema, engine = fresh_db("sqlite")
    with private_prefix(redis_url) as prefix:
        s = settings_for(redis_url, prefix, (url, schema), tmp_path, streams={"block_ms": 20})
        r = redis.Redis.from_url(redis_url)
        with engine.begin() as conn:
            conn.execute(insert(units), demo_units(city))
        w = make_worker("reports", s, city, index, r, engine, "bench-reports")
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        try:
            yield A.ActionContext.of(engine, r, s, city), city.grids.row(0, named=True)
        finally:
            stop.set()
            t.join(timeout=10)
            r.close()


def _report(ctx: A.ActionContext, g: dict[str, Any], now_ms: int) -> tuple[str, float]:
    inc = f"B-{uuid.uuid4().hex[:12]}"
    ev = {
        "event_id": f"{inc}-r",
        "incident_id": inc,
        "ts": now_ms,
        "step": "reported",
        "category": "sanitation",
        "severity": 2,
        "source": "worker",
        "lon": g["lon"],
        "lat": g["lat"],
    }
    t0 = time.perf_counter()
    publish(ctx.redis, ctx.stream(inc), [encode(ev)])
    while A.load_incident(ctx.engine, inc) is None:
        time.sleep(0.002)
    return inc, time.perf_counter() - t0


def _closed_today(ctx: A.ActionContext, grid: str) -> int:
    total = 0
    for k in ctx.redis.keys(f"{ctx.settings.redis.prefix}:d:*:closed"):
        v = ctx.redis.hget(k, grid)
        total += int(v or 0)
    return total


def test_action_visibility(world: tuple[A.ActionContext, Any]) -> None:
    ctx, g = world
    op = A.Actor("bench-op", "street_operator", g["street_id"])
    unit = next(u["unit_id"] for u in demo_units(ctx.city) if u["area_id"] == g["street_id"])
    rec = {"note": "已处理", "photo_url": "https://media.example.org/b.jpg"}
    field, ryw, panorama = [], [], []
    for _ in range(N):
        now = int(time.time() * 1000)
        inc, lat = _report(ctx, g, now)
        field.append(lat)
        # the on-site check is the grid worker's own (its phone verifies, as on site)
        worker = A.Actor("bench-w", "grid_worker", g["grid_id"])
        steps: list[tuple[A.Actor, str, dict[str, Any]]] = [
            (op, "accept", {}),
            (op, "dispatch", {"unit_id": unit}),
            (op, "handle", {}),
            (op, "resolve", rec),
            (worker, "verify_pass", {}),
        ]
        for actor, action, extra in steps:
            req = A.Request(action, inc, uuid.uuid4().hex, **extra)
            t0 = time.perf_counter()
            out = A.perform(ctx, req, actor, now, wait_s=10)
            ryw.append(time.perf_counter() - t0)
            assert out.status == "applied", (action, out)
        before = _closed_today(ctx, g["grid_id"])
        req = A.Request("close", inc, uuid.uuid4().hex, level="grid")
        t0 = time.perf_counter()
        A.perform(ctx, req, op, now, wait_s=0)
        while _closed_today(ctx, g["grid_id"]) <= before:
            time.sleep(0.002)
        panorama.append(time.perf_counter() - t0)
    tick = ctx.settings.dashboard.refresh_s
    bench(
        "dispatch.read_your_writes",
        median(ryw) * 1000,
        "ms",
        p95=_p95(ryw) * 1000,
        samples=len(ryw),
        baseline=median(field) * 1000,
        baseline_name="field report → SQL (median ms)",
        ratio=round(median(ryw) / median(field), 3),
    )
    bench(
        "dispatch.close_to_panorama",
        median(panorama) * 1000,
        "ms",
        p95=_p95(panorama) * 1000,
        samples=len(panorama),
        refresh_tick_ms=tick * 1000,
        share_of_tick=round(_p95(panorama) / tick, 4),
    )
