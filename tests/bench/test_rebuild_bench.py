"""``rebuild-live`` on a large database: how long it takes, and how long Redis is held.

A database of ``WANGGE_BENCH_REBUILD_INCIDENTS`` (24,000) incidents with whole
lifecycles (≈4 events each) in the full demo city is rebuilt; every script call and the
final switch are timed. ``rebuild_live_s`` is the whole rebuild; ``rebuild_max_call_ms``
the longest single call (a Lua script holds Redis for its duration: other clients wait,
and past ``lua-time-limit`` they get BUSY); ``rebuild_switch_ms`` the switch (SCANs,
then one MULTI/EXEC); ``rebuild_max_stall_ms`` the longest any other client waited: a
second connection PINGs throughout, its slowest round trip is what a dashboard felt.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from pipelines.city.geography import City
from pipelines.spine import store
from pipelines.spine.runner import rebuild_live
from pipelines.spine.state import LiveState
from tests.bench.conftest import bench
from tests.conftest import settings_for

pytestmark = [pytest.mark.bench, pytest.mark.slow]

N = int(os.environ.get("WANGGE_BENCH_REBUILD_INCIDENTS", "24000"))
CHUNK = int(os.environ.get("WANGGE_BENCH_REBUILD_CHUNK", "250"))
STEPS = ["reported", "accepted", "dispatched", "handling", "resolved", "verified", "closed"]


def seed_history(engine: Engine, city: City, n: int, now_ms: int) -> int:
    rnd = random.Random(24)
    grids = city.grids.select("grid_id", "street_id", "district_id", "lon", "lat").rows()
    rows: list[dict[str, Any]] = []
    for k in range(n):
        g, s, d, lon, lat = rnd.choice(grids)
        t0 = now_ms - rnd.randrange(1, 14 * 86_400_000)
        for j, step in enumerate(STEPS[: rnd.randint(1, len(STEPS))]):
            rows.append(
                dict(
                    event_id=f"E{k}-{j}", incident_id=f"I{k}", step=step,
                    ts_ms=t0 + j * 600_000, category="sanitation", severity=2,
                    source="worker", reporter_id=None, handler_id=None, grid_id=g,
                    street_id=s, district_id=d, lon=lon, lat=lat, description=None,
                    level="grid", entry_id=f"{t0}-{j}",
                )
            )  # fmt: skip
    with engine.begin() as c:
        store.insert_ignore(c, store.incident_events, rows)
    return len(rows)


def test_rebuild_live_large(
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, schema, engine = fresh_db("sqlite")
    settings = settings_for(redis_url, prefix, (url, schema), tmp_path)
    now_ms = int(time.time() * 1000)
    events = seed_history(engine, city, N, now_ms)
    calls: list[float] = []
    for name in ("push_incidents", "set_alerts", "apply_locations", "switch_from"):
        original = getattr(LiveState, name)

        def timed(self: LiveState, *a: Any, _f: Any = original, _n: str = name) -> Any:
            t = time.perf_counter()
            try:
                return _f(self, *a)
            finally:
                calls.append((_n, time.perf_counter() - t))  # type: ignore[arg-type]

        monkeypatch.setattr(LiveState, name, timed)
    stalls: list[float] = []
    stop = threading.Event()
    other = redis.Redis.from_url(redis_url)

    def ping() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            other.ping()
            stalls.append(time.perf_counter() - t0)
            time.sleep(0.001)

    pinger = threading.Thread(target=ping)
    pinger.start()
    t = time.perf_counter()
    counts = rebuild_live(settings, city, rclient, engine, clock=lambda: now_ms / 1000, chunk=CHUNK)
    total = time.perf_counter() - t
    stop.set()
    pinger.join()
    other.close()
    scripts = [s for n, s in calls if n != "switch_from"]  # type: ignore[misc]
    switch = [s for n, s in calls if n == "switch_from"]  # type: ignore[misc]
    bench("rebuild_live_s", total, "s", incidents=counts["incidents"], events=events,
          keys=counts["keys"], calls=len(scripts))  # fmt: skip
    bench("rebuild_max_call_ms", max(scripts) * 1000, "ms")
    bench("rebuild_switch_ms", switch[0] * 1000, "ms", keys=counts["keys"])
    bench("rebuild_max_stall_ms", max(stalls) * 1000, "ms", pings=len(stalls))
    assert counts["incidents"] == N
