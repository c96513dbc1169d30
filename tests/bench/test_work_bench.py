"""Grid work (网格工作) benchmarks: measure and print, never assert a time.

* ``work_sustained_*`` — 30,000 workers pinging every 10 s (3,000 location events/s)
  for ``WANGGE_BENCH_WORK_S`` seconds (default 300) through one real ``wangge worker``
  process (live state + track points + patrols in SQL). The producer is a separate
  process; the bench samples the consumer group's backlog (undelivered + pending) every
  second and prints its trend: a worker that keeps up has a flat, small backlog.
* ``work_refresh_server_ms_<level>`` — the grid-work refresh callback via the Flask
  test client with 30,000 live positions and a 30,000-worker roster, p95 over a mix where
  one call in ten starts a new refresh tick (computes), with the same-run do-nothing
  callback as baseline; ``work_refresh_bytes_<level>`` — response bytes (raw and gzip).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import psutil
import pytest
import redis
from dash import Input, Output

from dashboard import auth, ids
from dashboard.app import create_app
from dashboard.backend import EXTENSION, Backend
from dashboard.pages.panorama.queries import local_day
from pipelines.access import accounts, audit
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, demo_cache_path
from pipelines.settings import GeoSettings, child_environ
from pipelines.spine import store
from pipelines.spine.streams import ensure_group
from tests.bench._producer import spawn_producer
from tests.bench.test_dashboard_bench import Clock, _key_for, callback_body, pct
from tests.conftest import TEST_AUDIT_KEY, settings_for, sign_in_client

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parents[2]
N_WORKERS = int(os.environ.get("WANGGE_BENCH_WORK_WORKERS", "30000"))
PING_S = 10.0
DURATION_S = float(os.environ.get("WANGGE_BENCH_WORK_S", "300"))
N_CALLS = int(os.environ.get("WANGGE_BENCH_WORK_CALLS", "300"))
DISTRICT_ID = "320102"


def bench(name: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": name, "value": _r(value), "unit": unit}
    obj.update({k: _r(v) for k, v in extra.items()})
    print("BENCH " + json.dumps(obj, ensure_ascii=False), flush=True)
    return obj


def _r(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 3) if abs(v) < 100 else round(v, 1)
    if isinstance(v, list):
        return [_r(x) for x in v]
    return v


def roster(city: City, n: int, seed: int = 11) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    grids = city.grids["grid_id"].to_numpy()
    types = simulate.WORKER_TYPES
    return pl.DataFrame(
        {
            "worker_id": [f"W{i + 1:06d}" for i in range(n)],
            "name": [f"网格员{i + 1}" for i in range(n)],
            "type": [types[k] for k in rng.integers(0, len(types), n)],
            "grid_id": grids[rng.integers(0, len(grids), n)].tolist(),
            "phone_masked": [f"138****{k:04d}" for k in rng.integers(0, 10_000, n)],
        }
    )


# ------------------------------------------------------------------ sustained ingest


def _payloads(city: City, n_workers: int, n_events: int, start_ms: int) -> list[bytes]:
    """Location pings; worker k % n pings at start + k / rate (every PING_S seconds)."""
    raw = simulate.location_events(city, n_workers, n_events, start_ms, seed=5)
    step = PING_S * 1000 / n_workers  # ms between consecutive events
    out = []
    for k, p in enumerate(raw):
        d = orjson.loads(p)
        d["ts"] = start_ms + int(k * step)
        out.append(orjson.dumps(d))
    return out


def _backlog(r: redis.Redis, key: str, group: str) -> tuple[int, int]:
    """(undelivered, pending) of the consumer group."""
    for g in r.xinfo_groups(key):
        if g["name"] == group.encode():
            return int(g.get("lag") or 0), int(g["pending"])
    return 0, 0


def test_sustained_3000_pings_per_second(
    redis_url: str, city: City, tmp_path: Path, geo_settings: GeoSettings
) -> None:
    rate = N_WORKERS / PING_S
    n_events = int(rate * DURATION_S)
    prefix = f"wgbench-work-{uuid.uuid4().hex[:8]}"
    db = f"sqlite:///{tmp_path / 'wangge.db'}"
    settings = settings_for(redis_url, prefix, (db, None), tmp_path)
    engine = audit.keyed(store.make_engine(db), TEST_AUDIT_KEY)
    store.create_schema(engine)
    store.replace_table(engine, store.workers, roster(city, N_WORKERS).to_dicts())
    r = redis.Redis.from_url(redis_url)
    key = f"{prefix}:{settings.streams.locations}"
    ensure_group(r, key, settings.streams.group)
    t0 = time.perf_counter()
    payloads = _payloads(city, N_WORKERS, n_events, int(time.time() * 1000) + 5000)
    events_file = tmp_path / "events.jsonl"
    simulate.write_jsonl(events_file, (("locations", p) for p in payloads))
    gen_s = time.perf_counter() - t0
    del payloads
    env = child_environ(
        REDIS_URL=redis_url,
        DATABASE_URL=db,
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_CACHE_DIR=str(demo_cache_path(geo_settings).parent),
        WANGGE_RUN_VAR_DIR=str(tmp_path),
    )
    log = (tmp_path / "worker.log").open("wb")
    cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", "locations"]
    worker = subprocess.Popen(
        [*cmd, "--name", "loc-work"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    proc = psutil.Process(worker.pid)
    samples: list[tuple[float, int, int]] = []
    rss: list[float] = []
    try:
        while not any(c["name"] == b"loc-work" for c in r.xinfo_consumers(key, "pipelines")):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.1)
        out = tmp_path / "producer.json"
        prod = spawn_producer(redis_url, prefix, events_file, out, n_events, rate, tick=0.05)
        start = time.perf_counter()
        while prod.poll() is None:
            undelivered, pending = _backlog(r, key, settings.streams.group)
            samples.append((time.perf_counter() - start, undelivered, pending))
            rss.append(proc.memory_info().rss / 2**20)
            time.sleep(1.0)
        assert prod.returncode == 0
        sent = json.loads(out.read_text())
        t_end = time.perf_counter()
        while sum(_backlog(r, key, settings.streams.group)) and time.perf_counter() - t_end < 120:
            time.sleep(0.2)
        drain_s = time.perf_counter() - t_end
        assert sum(_backlog(r, key, settings.streams.group)) == 0, "worker did not drain"
        live = r.hlen(f"{prefix}:live:pos")
        assert live == N_WORKERS  # every worker's position is live
        points = store.table_count(engine, store.track_points)
    finally:
        worker.terminate()
        worker.wait(30)
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            r.unlink(*keys[i : i + 1000])
        r.close()
        engine.dispose()
    t = np.array([s[0] for s in samples])
    backlog = np.array([s[1] + s[2] for s in samples], dtype=float)
    steady = t >= 10  # after a 10 s warm-up
    slope = float(np.polyfit(t[steady], backlog[steady], 1)[0]) if steady.sum() > 2 else 0.0
    n = len(backlog)
    first, last = backlog[: max(1, n // 5)], backlog[-max(1, n // 5) :]
    bench(
        "work_sustained_backlog_slope",
        slope * 60,
        "entries/min",
        what="linear trend of the consumer backlog (undelivered + pending) after 10 s",
        workers=N_WORKERS,
        offered_rate=rate,
        achieved_rate=sent["rate"],
        duration_s=DURATION_S,
        sent=sent["sent"],
        generate_s=gen_s,
    )
    bench(
        "work_sustained_backlog",
        float(np.median(backlog[steady])) if steady.any() else float(np.median(backlog)),
        "entries",
        stat="median over the run",
        p95=pct(list(backlog), 95),
        max=float(backlog.max()),
        first_fifth_mean=float(first.mean()),
        last_fifth_mean=float(last.mean()),
        drain_s=drain_s,
        samples=n,
    )
    bench(
        "work_sustained_worker_rss",
        max(rss),
        "MB",
        first=rss[0],
        last=rss[-1],
        track_points=points,
    )


# ------------------------------------------------------------------ refresh at city level


@dataclasses.dataclass
class WorkEnv:
    app: Any
    clock: Clock
    street: str

    @property
    def backend(self) -> Backend:
        b: Backend = self.app.server.extensions[EXTENSION]
        return b


@pytest.fixture(scope="module")
def work_env(
    redis_url: str, city: City, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkEnv]:
    tmp = tmp_path_factory.mktemp("workbench")
    prefix = f"wgbench-workdash-{uuid.uuid4().hex[:8]}"
    db = f"sqlite:///{tmp / 'wangge.db'}"
    settings = settings_for(redis_url, prefix, (db, None), tmp)
    engine = audit.keyed(store.make_engine(db), TEST_AUDIT_KEY)
    store.create_schema(engine)
    team = roster(city, N_WORKERS)
    store.replace_table(engine, store.workers, team.to_dicts())
    r = redis.Redis.from_url(redis_url)
    rng = np.random.default_rng(3)
    now = int(time.time() * 1000)
    chain = team.join(city.grids.select("grid_id", "lon", "lat"), on="grid_id")
    # 30,000 live positions near each worker's grid; ~4 % last seen an hour ago (offline)
    ages = np.where(
        rng.random(chain.height) < 0.04, 3_600_000, rng.integers(0, 60_000, chain.height)
    )
    pos = {}
    seen = {}
    for (w, g, lon, lat), age in zip(
        chain.select("worker_id", "grid_id", "lon", "lat").iter_rows(), ages.tolist(), strict=True
    ):
        ts = now - int(age)
        pos[w] = f"{lon:.5f},{lat:.5f},{ts},{g},8,0.9,77"
        seen[w] = ts
    items = list(pos.items())
    for i in range(0, len(items), 5000):
        r.hset(f"{prefix}:live:pos", mapping=dict(items[i : i + 5000]))
        r.zadd(f"{prefix}:live:seen", dict(list(seen.items())[i : i + 5000]))
    day = local_day(now, settings.live.timezone)
    grids = city.grids["grid_id"].to_list()
    r.sadd(f"{prefix}:d:{day}:patrolled", *[g for g in grids if rng.random() < 0.85])
    clock = Clock(0.0)
    app = create_app(settings, city=city, r=r, clock=clock)
    auth.CALLBACK_POLICIES.setdefault("bench-", auth.Policy())
    app.callback(Output("bench-noop", "children"), Input("bench-noop-in", "n_clicks"))(lambda n: n)
    for name, role, scope in (
        ("bench", "city_leader", city.city_id),
        ("benchcmd", "district_commander", DISTRICT_ID),
    ):
        accounts.create_user(
            engine, city, name, role, scope, password="bench-password-1", now_ms=now
        )
    app.server.test_client().get("/_dash-dependencies")
    try:
        yield WorkEnv(app, clock, city.children(DISTRICT_ID)[0])
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            r.unlink(*keys[i : i + 1000])
        r.close()
        engine.dispose()


def _client(app: Any, username: str, role: str, scope: str) -> Any:
    return sign_in_client(app.server.test_client(), role, scope, username)


def _timed(env: WorkEnv, client: Any, make_body: Any, n: int, step_s: float) -> dict[str, Any]:
    """n calls; like a browser, each sends back the digests of what it already has."""
    b = env.backend
    warm: list[float] = []
    cold: list[float] = []
    sizes: list[int] = []
    sent: Any = None
    for i in range(n):
        body = orjson.dumps(make_body(i, sent))
        before = b.cache.computed
        t = time.perf_counter()
        resp = client.post("/_dash-update-component", data=body, content_type="application/json")
        dt = (time.perf_counter() - t) * 1000
        assert resp.status_code == 200, resp.data[:300]
        sizes.append(len(resp.data))
        got = orjson.loads(resp.data).get("response", {})
        sent = got.get(ids.WK_SENT, {}).get("data", sent)
        (cold if b.cache.computed > before else warm).append(dt)
        env.clock.offset += step_s
    return {"warm": warm, "cold": cold, "sizes": sizes, "last": resp.data}


def test_work_refresh_city_level(work_env: WorkEnv, city: City) -> None:
    env, app = work_env, work_env.app
    step = env.backend.refresh_s / 10
    leader = _client(app, "bench", "city_leader", city.city_id)
    noop = _timed(
        env, leader, lambda i, _s: callback_body(app, "bench-noop.children", [i], []), N_CALLS, step
    )
    base = noop["warm"] + noop["cold"]
    base_p95 = pct(base, 95)
    bench("work_refresh_server_ms_noop", base_p95, "ms", p50=pct(base, 50), n=len(base))
    key = _key_for(app, f"{ids.WK_GEO}.hideout")
    cases = (
        ("city", leader, city.city_id),
        ("district", leader, DISTRICT_ID),
        ("street_people", _client(app, "benchcmd", "district_commander", DISTRICT_ID), env.street),
    )
    for level, client, area in cases:

        def body(i: int, sent: Any, a: str = area) -> dict[str, Any]:
            return callback_body(app, key, [i], [a, None, sent, "zh-CN", None])

        _timed(env, client, body, 1, env.backend.refresh_s)  # per-process caches
        got = _timed(env, client, body, N_CALLS, step)
        first = _timed(env, client, body, 1, 0.0)  # a new viewer: everything
        resp = orjson.loads(first["last"])["response"]
        assert resp[ids.WK_STALE]["children"] == "" and resp[ids.WK_KPIS]["children"]
        feats = resp[ids.WK_MARKERS]["data"]["features"]
        mixed = got["warm"] + got["cold"]
        p95 = pct(mixed, 95)
        bench(
            f"work_refresh_server_ms_{level}",
            p95,
            "ms",
            stat="p95 over a mix (1 call in 10 starts a new refresh tick → computes)",
            p50=pct(mixed, 50),
            warm_p95=pct(got["warm"], 95),
            cold_p50=pct(got["cold"], 50),
            cold_p95=pct(got["cold"], 95),
            n=len(mixed),
            n_cold=len(got["cold"]),
            live_positions=N_WORKERS,
            markers=len(feats),
            baseline=base_p95,
            ratio=round(p95 / base_p95, 2),
        )
        bench(
            f"work_refresh_bytes_{level}",
            float(np.median(got["sizes"])),
            "bytes",
            stat="median per refresh of a viewer that already has the page (unchanged parts "
            "are not resent); first = a new viewer's first refresh",
            p95=pct([float(x) for x in got["sizes"]], 95),
            first=len(first["last"]),
            first_gzip=len(gzip.compress(first["last"], 6)),
            markers=len(feats),
        )
