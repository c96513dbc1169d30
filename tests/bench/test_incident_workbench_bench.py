"""The incident workbench's queue: how much a filtered, sorted page costs, and how soon an
action shows in the actor's own queue.

* **filter + page** (``dashboard/pages/incidents/queries.queue_page``: ``COUNT`` + one
  ``WHERE … ORDER BY … LIMIT/OFFSET`` in SQL, the stage deadline being the indexed
  ``stage_due_ms`` column the pipeline keeps; the SLA clock in Polars) on 50,000 open
  incidents in SQLite over the full demo city, for a few filter combinations; p50 / p95
  per combination. **Baseline** (same run, interleaved): the same page of the same rows
  read by a plain select (scope only, ordered by report time, no deadline, no count);
  ``ratio`` = p50 / baseline p50.
* **action → visible in the actor's queue**: with a reports pipeline running, an accept
  performed through ``actions.perform`` until the incident is on the actor's
  "accepted" page (median / p95).

Printed as ``BENCH`` lines; nothing here asserts a time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from sqlalchemy import Engine, insert

from dashboard.pages.incidents import queries as Q
from pipelines.city.geography import City, GridIndex
from pipelines.dispatch import actions as A
from pipelines.dispatch import ontime
from pipelines.dispatch.flows import load_flows
from pipelines.dispatch.units import demo_units, units
from pipelines.spine import store
from pipelines.spine.events import CATEGORIES, SOURCES, encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.bench.conftest import bench, median
from tests.conftest import private_prefix, settings_for

pytestmark = pytest.mark.bench

N_OPEN = 50_000
REPEAT = 30
H = 3_600_000
NOW = 1_793_000_000_000


def _p95(xs: list[float]) -> float:
    return float(np.percentile(xs, 95))


def fill(engine: Engine, city: City, n: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    grids = city.grids.select("grid_id", "street_id", "district_id", "lon", "lat")
    pick = rng.integers(0, grids.height, n)
    open_steps = [s for s in Q.OPEN_STATUSES]
    entered = NOW - rng.integers(0, 72 * H, n)
    frame = grids[pick].with_columns(
        pl.Series("incident_id", [f"BQ{i:07d}" for i in range(n)]),
        pl.Series("status", rng.choice(open_steps, n)),
        pl.Series("category", rng.choice(list(CATEGORIES), n)),
        pl.Series("severity", rng.integers(1, 5, n)),
        pl.Series("source", rng.choice(list(SOURCES), n)),
        pl.Series("reported_ms", entered - rng.integers(0, 24 * H, n)),
        pl.Series("last_ms", entered),
        pl.Series("n_events", rng.integers(1, 6, n)),
    )
    if Q.has("stage_ms"):
        frame = frame.with_columns(pl.col("last_ms").alias("stage_ms"))
    rows = frame.to_dicts()
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(store.incidents), rows[i : i + 5000])


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def test_queue_filter_and_page(city: City, fresh_db: Any) -> None:
    _url, _schema, engine = fresh_db("sqlite")
    t0 = time.perf_counter()
    fill(engine, city, N_OPEN)
    bench("incidents.queue_fill", time.perf_counter() - t0, "s", rows=N_OPEN)
    flows = load_flows()
    ontime.refresh_stage_due(engine, flows)  # as the pipelines' start does
    district = city.ids("district")[0]
    street = city.children(district)[0]
    combos: dict[str, tuple[str, Q.Filters]] = {
        "city_by_deadline": (city.city_id, Q.Filters()),
        "district_overdue_p3": (district, Q.Filters(due="overdue", page=3)),
        "street_category_newest": (
            street,
            Q.Filters(categories=("dispute", "sanitation"), sort="reported_ms", desc=True),
        ),
        "city_due_soon_serious_p10": (
            city.city_id,
            Q.Filters(due="soon", soon_hours=2, severities=(3, 4), page=10),
        ),
    }
    for name, (scope, f) in combos.items():
        modes = ["auto"]
        runs: dict[str, list[float]] = {m: [] for m in modes}
        base: list[float] = []
        got = Q.queue_page(engine, flows, city, scope, f, NOW)  # warm, and a sanity check
        assert got.rows.height <= f.page_size and got.total >= got.rows.height
        for _ in range(REPEAT):  # interleaved with the baseline
            for m in modes:
                runs[m].append(
                    timed(lambda s=scope, f=f: Q.queue_page(engine, flows, city, s, f, NOW))
                )
            base.append(timed(lambda s=scope, f=f: Q.plain_rows(engine, city, s, f)))
        for m in modes:
            bench(
                f"incidents.queue.{name}" + ("" if m == "auto" else f".deadline_in_{m}"),
                median(runs[m]),
                "ms",
                p95=_p95(runs[m]),
                matching=got.total,
                baseline=median(base),
                baseline_p95=_p95(base),
                baseline_name="the same page, plain select (p50 ms)",
                ratio=round(median(runs[m]) / median(base), 3),
            )


def test_action_visible_in_the_actors_queue(
    redis_url: str, city: City, index: GridIndex, fresh_db: Any, tmp_path: Path
) -> None:
    url, schema, engine = fresh_db("sqlite")
    g = city.grids.row(0, named=True)
    with private_prefix(redis_url) as prefix:
        s = settings_for(redis_url, prefix, (url, schema), tmp_path, streams={"block_ms": 20})
        r = redis.Redis.from_url(redis_url)
        with engine.begin() as conn:
            conn.execute(insert(units), demo_units(city))
        w = make_worker("reports", s, city, index, r, engine, "bench-wb")
        stop = threading.Event()
        t = threading.Thread(target=w.run, args=(stop,), daemon=True)
        t.start()
        try:
            ctx = A.ActionContext.of(engine, r, s, city)
            op = A.Actor("bench-op", "street_operator", g["street_id"])
            accepted = Q.Filters(statuses=("accepted",), sort="reported_ms", desc=True)
            lat = []
            for _ in range(30):
                now = int(time.time() * 1000)
                inc = f"BW-{uuid.uuid4().hex[:12]}"
                ev = {
                    "event_id": f"{inc}-r",
                    "incident_id": inc,
                    "ts": now,
                    "step": "reported",
                    "category": "sanitation",
                    "severity": 2,
                    "source": "worker",
                    "lon": g["lon"],
                    "lat": g["lat"],
                }
                publish(r, ctx.stream(inc), [encode(ev)])
                while A.load_incident(engine, inc) is None:
                    time.sleep(0.002)
                t0 = time.perf_counter()
                out = A.perform(ctx, A.Request("accept", inc, uuid.uuid4().hex), op, now)
                while True:  # the actor's queue, read as the page reads it
                    page = Q.queue_page(ctx.engine, ctx.flows, city, op.scope, accepted, now)
                    if inc in page.rows["incident_id"].to_list():
                        break
                    time.sleep(0.002)
                lat.append((time.perf_counter() - t0) * 1000)
                assert out.status in ("applied", "pending")
            bench(
                "incidents.action_to_queue",
                median(lat),
                "ms",
                p95=_p95(lat),
                samples=len(lat),
                refresh_tick_ms=s.dashboard.refresh_s * 1000,
            )
        finally:
            stop.set()
            t.join(timeout=10)
            r.close()
