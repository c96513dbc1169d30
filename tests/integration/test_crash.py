"""Crash test: ≥100,000 mixed events through several worker processes, kill -9 at random
points, restart; afterwards every counter and table equals the oracle computed from the
input alone — nothing lost, nothing double-counted, nothing pending, every bad event
dead-lettered with its reason."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select

from pipelines.city import simulator as simulate
from pipelines.city.geography import GridIndex, load_city
from pipelines.settings import GeoSettings, child_environ, load_settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.streams import ensure_group, publish
from tests.conftest import stop_processes
from tests.integration.oracle import expected

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 100_000
TIME_LIMIT_S = 420


def _env(redis_url: str, prefix: str, db: tuple[str, str | None], geo_dir: Path) -> dict[str, str]:
    url, schema = db
    return child_environ(
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_GRIDS="400",
        WANGGE_GEO_CACHE_DIR=str(geo_dir),
        WANGGE_STREAMS_BATCH_SIZE="500",
        WANGGE_STREAMS_CLAIM_IDLE_MS="1500",
        WANGGE_STREAMS_BLOCK_MS="200",
        WANGGE_STREAMS_MAX_AGE_DAYS="60",
    )


def _spawn(env: dict[str, str], feed: str, name: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed, "--name", name]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _drained(r: redis.Redis, prefix: str, group: str) -> bool:
    for feed in ("reports", "locations", "video"):
        key = f"{prefix}:{feed}"
        info = {g["name"].decode(): g for g in r.xinfo_groups(key)}
        g = info.get(group)
        if g is None or g["pending"] > 0:
            return False
        last = g["last-delivered-id"].decode()
        tail = r.xrevrange(key, count=1)
        if tail and tail[0][0].decode() != last:
            return False
    return True


def test_kill_9_loses_nothing_and_double_counts_nothing(
    redis_url: str, prefix: str, db_url: Any, engine: Engine, tmp_path: Path, artifacts: Path
) -> None:
    env = _env(redis_url, prefix, db_url, tmp_path / "geo")
    settings = load_settings(environ=env)
    city = load_city(dataclasses.replace(GeoSettings(), grids=400, cache_dir=str(tmp_path / "geo")))
    index = GridIndex(city)
    cfg = dataclasses.replace(
        settings.simulate, workers=800, cameras=120, seed=11, malformed_share=0.01
    )
    probe = simulate.Simulator(city, cfg, settings.deadlines, start_ms=0)
    start = int(time.time() * 1000) - 20 * 86_400_000
    events = simulate.generate(
        city,
        cfg,
        settings.deadlines,
        start,
        N_EVENTS,
        mix={"locations": 0.6, "reports": 0.3, "video": 0.1},
    )
    assert len(events) >= N_EVENTS
    assert max(orjson_ts(p) for _, p, r in events if r is None) < time.time() * 1000
    cams = {
        c: (lon, lat) for c, lon, lat in probe.cameras.select("camera_id", "lon", "lat").iter_rows()
    }
    with engine.begin() as c:
        rows = [{"camera_id": k, "lon": v[0], "lat": v[1], "grid_id": ""} for k, v in cams.items()]
        store.insert_ignore(c, store.cameras, rows)
    r = redis.Redis.from_url(redis_url)
    group = settings.streams.group
    for feed in ("reports", "locations", "video"):
        ensure_group(r, f"{prefix}:{feed}", group)
    by_feed: dict[str, list[bytes]] = {"reports": [], "locations": [], "video": []}
    for feed, payload, _ in events:
        by_feed[feed].append(payload)
    for feed, payloads in by_feed.items():
        publish(r, f"{prefix}:{feed}", payloads)

    names = {
        "reports-1": "reports",
        "reports-2": "reports",
        "locations-1": "locations",
        "locations-2": "locations",
        "video-1": "video",
        "video-2": "video",
    }
    procs = {n: _spawn(env, f, n) for n, f in names.items()}
    rnd = random.Random(2026)
    kills = mid_stream = 0
    t0 = time.monotonic()
    try:
        while kills < 6 and time.monotonic() - t0 < TIME_LIMIT_S / 2:
            time.sleep(rnd.uniform(0.4, 1.5))
            victim = rnd.choice(sorted(names))
            mid_stream += not _drained(r, prefix, group)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            # Half the time the worker comes back under its own name (re-reads its pending
            # entries); otherwise under a new name, and XAUTOCLAIM rescues the orphans.
            new_name = victim if kills % 2 else f"{victim}-r{kills}"
            procs[new_name] = _spawn(env, names[victim], new_name)
            if new_name != victim:
                del procs[victim]
                names[new_name] = names.pop(victim)
        while not _drained(r, prefix, group):
            assert time.monotonic() - t0 < TIME_LIMIT_S, "pipelines did not drain in time"
            for n, p in procs.items():
                assert p.poll() is None, (
                    f"{n} died: {p.stderr.read().decode()[-2000:] if p.stderr else ''}"
                )
            time.sleep(0.5)
    finally:
        stop_processes(procs.values())
    assert kills >= 5
    assert mid_stream >= 4, "the kills must land while entries are still unprocessed"

    exp = expected(
        events, city, index, cams, settings.live.timezone, settings.pipelines.persist_tracks_every_s
    )
    (artifacts / "summary.txt").write_text(
        f"events={len(events)} kills={kills} mid_stream={mid_stream} dead={exp.dead_by_reason} "
        f"incident_events={exp.n_incident_events} video={exp.n_video}\n"
    )
    from pipelines.spine.runner import live_state

    st = live_state(r, settings)
    # live counters, every level
    got_reports = {k: v for k, v in _day_hash(r, prefix, "reports", exp.reports_by_day).items()}
    assert got_reports == exp.reports_by_day
    assert _day_hash(r, prefix, "closed", exp.closed_by_day) == exp.closed_by_day
    assert _day_hash(r, prefix, "video", exp.video_by_day) == exp.video_by_day
    open_now = {k: v for k, v in st.counts_all("open").items() if v}
    assert open_now == exp.open_by_area
    for day, grids in exp.patrolled.items():
        assert st.patrolled(day) == grids
    pos = {w: agg.unpack_position(p) for w, p in st.positions().items()}
    assert {w: (p["ts"], p["grid_id"]) for w, p in pos.items()} == exp.positions
    # dead letters: each exactly once, with its reason
    dl = r.xrange(st.deadletter_key)
    got_dead: dict[str, int] = {}
    for _, f in dl:
        reason = f[b"reason"].decode()
        got_dead[reason] = got_dead.get(reason, 0) + 1
    assert got_dead == exp.dead_by_reason
    assert len({(f[b"stream"], f[b"entry_id"]) for _, f in dl}) == len(dl)
    # SQL history
    assert store.table_count(engine, store.incident_events) == exp.n_incident_events
    assert store.table_count(engine, store.incidents) == exp.n_incidents
    # every incident's row, its lifecycle summary included, is that of its full history
    cols = ["incident_id", "status", "last_ms", "closed_ms", *store.SUMMARY_COLUMNS]
    got = store.read_frame(engine, select(*[store.incidents.c[c] for c in cols]))
    hist = store.read_frame(engine, select(store.incident_events))
    want = [{c: r[c] for c in cols} for r in store.incident_rows(hist)]
    assert sorted(got.rows()) == sorted(tuple(r.values()) for r in want)
    assert store.table_count(engine, store.video_alerts) == exp.n_video
    assert store.table_count(engine, store.track_points) == exp.n_track_slots
    assert store.table_count(engine, store.dead_letters) == sum(exp.dead_by_reason.values())
    reasons = store.read_frame(engine, select(store.dead_letters.c.reason))["reason"].value_counts()
    assert dict(reasons.iter_rows()) == exp.dead_by_reason
    r.close()


def orjson_ts(payload: bytes) -> int:
    import orjson

    return int(orjson.loads(payload)["ts"])


def _day_hash(
    r: redis.Redis, prefix: str, metric: str, like: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    days = {d for d, _ in like}
    for k in r.scan_iter(match=f"{prefix}:d:*:{metric}"):
        days.add(k.decode().split(":")[-2])
    out: dict[tuple[str, str], int] = {}
    for day in days:
        for area, n in r.hgetall(f"{prefix}:d:{day}:{metric}").items():
            if int(n):
                out[(day, area.decode())] = int(n)
    return out
