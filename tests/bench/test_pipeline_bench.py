"""Data-spine benchmarks: throughput, event → live latency, worker memory, city build.

Run with ``make bench`` (optionally with ``REDIS_URL`` / ``DATABASE_URL``). Every figure
is printed as one ``BENCH {json}`` line; see tests/bench/README.md for what each means.
These tests assert correctness (every event processed, nothing pending) but never a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import psutil
import pytest
import redis
import sqlalchemy

from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex, demo_cache_path
from pipelines.dispatch.flows import flows_for
from pipelines.settings import GeoSettings, Settings, child_environ, load_settings
from pipelines.spine import aggregate as agg
from pipelines.spine import runner, store
from pipelines.spine.runner import FeedWorker, make_worker
from pipelines.spine.streams import ensure_group, publish
from tests.bench._producer import spawn_producer
from tests.bench.conftest import RUNS, bench, dialects, median, with_baseline
from tests.conftest import settings_for, stop_processes

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
N_LOCATIONS = int(os.environ.get("WANGGE_BENCH_LOCATIONS", "300000"))
N_WORKERS = 15_000
N_REPORTS = int(os.environ.get("WANGGE_BENCH_REPORTS", "50000"))
N_VIDEO = int(os.environ.get("WANGGE_BENCH_VIDEO", "30000"))
LATENCY_RATE = 5000.0
LATENCY_WINDOW_S = float(os.environ.get("WANGGE_BENCH_LATENCY_S", "33"))
LATENCY_WARMUP_S = 3.0
SAMPLE_S = 0.02
DAY_MS = 86_400_000
# How the worker is stepped → the figure's name suffix: as a worker process runs it (the
# next batch read and prepared while one is written), and one batch after the other.
MODES = {"ahead": "", "sequential": "_sequential"}


# ---------------------------------------------------------------------------- helpers


def _sub_settings(
    redis_url: str, sub: str, url: str, schema: str | None, tmp: Path, **sections: dict
) -> Settings:
    return settings_for(redis_url, sub, (url, schema), tmp, **sections)


def _unlink_prefix(r: redis.Redis, sub: str) -> None:
    """Free a finished run's keys early (the prefix fixture also cleans up at the end)."""
    keys = list(r.scan_iter(match=f"{sub}:*", count=5000))
    for i in range(0, len(keys), 1000):
        r.unlink(*keys[i : i + 1000])


def _bare_drain(r: redis.Redis, key: str, group: str, count: int, n: int) -> float:
    """Baseline: XREADGROUP (same count) + XACK, nothing else. Returns events/s."""
    ensure_group(r, key, group)
    done = 0
    t = time.perf_counter()
    while done < n:
        got = r.xreadgroup(group, "bare", {key: ">"}, count=count)
        ids = [e for e, _ in got[0][1]] if got else []
        assert ids, "bare consumer found the stream empty before the end"
        r.xack(key, group, *ids)
        done += len(ids)
    rate = n / (time.perf_counter() - t)
    assert done == n
    return rate


class StageTimer:
    """Accumulates wall time per pipeline stage by wrapping the calls the worker makes."""

    AGG = (
        "with_grid",
        "split_outside",
        "with_time_keys",
        "latest_positions",
        "patrolled_grids",
        "first_visits",
        "track_slots",
        "incident_states",
        "report_tickers",
        "report_history",
        "video_history",
        "alert_rows",
    )
    SQL = (
        "persist_patrols",
        "persist_positions",
        "persist_tracks",
        "decide_reports",
        "write_decision",
        "decide_alerts",
    )

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[stage] = self.t.get(stage, 0.0) + time.perf_counter() - t0

        return timed

    @contextlib.contextmanager
    def installed(self, w: FeedWorker) -> Iterator[None]:
        mp = pytest.MonkeyPatch()
        try:
            mp.setattr(runner, "decode_batch", self.wrap("decode", runner.decode_batch))
            for name in self.AGG:
                mp.setattr(agg, name, self.wrap("aggregate", getattr(agg, name)))
            for name in self.SQL:
                mp.setattr(store, name, self.wrap("sql", getattr(store, name)))
            w.consumer.read = self.wrap("read", w.consumer.read)  # type: ignore[method-assign]
            w.consumer.ack = self.wrap("ack", w.consumer.ack)  # type: ignore[method-assign]
            st = w.state
            st.apply_locations = self.wrap("lua", st.apply_locations)  # type: ignore[method-assign]
            st.push_incidents = self.wrap("lua", st.push_incidents)  # type: ignore[method-assign]
            st.set_alerts = self.wrap("lua", st.set_alerts)  # type: ignore[method-assign]
            st.set_meta = self.wrap("meta", st.set_meta)  # type: ignore[method-assign]
            st.dead_letter = self.wrap("lua", st.dead_letter)  # type: ignore[method-assign]
            w.index = _TimedIndex(w.index, self.wrap)  # type: ignore[assignment]
            yield
        finally:
            mp.undo()


class _TimedIndex:
    def __init__(self, index: GridIndex, wrap: Callable[..., Any]) -> None:
        self.assign = wrap("assign", index.assign)


def _drain_worker(
    w: FeedWorker, n: int, timer: StageTimer, ahead: bool = True
) -> tuple[float, float, int, int]:
    """Step the worker until n entries are acknowledged: (events/s, seconds, applied, dead).

    ``ahead``: as a worker process runs, reading and preparing the next batch while one
    is written (``step_ahead``); else one batch after the other (``step``)."""
    acked = applied = dead = 0
    with timer.installed(w):
        t = time.perf_counter()
        while acked < n:
            res = w.step_ahead() if ahead else w.step()
            acked += res.acked
            applied += res.applied
            dead += res.dead
        elapsed = time.perf_counter() - t
        w.drop_ahead()  # (an empty read of the drained stream)
    assert acked == n
    return n / elapsed, elapsed, applied, dead


def _print_stages(feed: str, timer: StageTimer, elapsed: float, n: int) -> None:
    per_k = {k: v * 1000 / (n / 1000) for k, v in timer.t.items()}
    per_k["other"] = max(0.0, elapsed * 1000 / (n / 1000) - sum(per_k.values()))
    for stage in ("read", "decode", "assign", "aggregate", "lua", "sql", "ack", "meta", "other"):
        v = per_k.get(stage, 0.0)
        bench(
            f"{feed}_stage_{stage}",
            v,
            "ms/1k events",
            share=round(v / (elapsed * 1e6 / n), 3),
        )


# ---------------------------------------------------------------------------- context


def test_context(redis_url: str, rclient: redis.Redis) -> None:
    info = rclient.info("server")
    dbs = ["sqlite " + sqlalchemy.__version__]
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        eng = store.make_engine(os.environ["DATABASE_URL"])
        with eng.connect() as c:
            ver = c.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
        eng.dispose()
        dbs.append(f"postgresql {ver}")
    bench(
        "context",
        os.cpu_count() or 0,
        "cpus",
        cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        mem_gb=round(psutil.virtual_memory().total / 2**30, 1),
        redis_version=info.get("redis_version"),
        redis="REDIS_URL" if os.environ.get("REDIS_URL") else "embedded",
        database=", ".join(dbs),
        python=platform.python_version(),
        polars=pl.__version__,
        runs=RUNS,
    )


# ---------------------------------------------------------------------------- 1. locations


@pytest.fixture(scope="module")
def location_payloads(city: City, index: GridIndex) -> tuple[list[bytes], int, int, int]:
    """≥300,000 valid pings of 15,000 workers, ending a few minutes ago; with what the
    pipeline must make of them: track slots, pings outside every grid (the simulator
    lets a few stray out at some start times: dead-lettered ``outside_city``) and
    workers with a position."""
    span_ms = (N_LOCATIONS // N_WORKERS + 1) * 15_000
    start = int(time.time() * 1000) - span_ms - 600_000
    payloads = simulate.location_events(city, N_WORKERS, N_LOCATIONS, start, seed=2026)
    every = load_settings(environ={}).pipelines.persist_tracks_every_s * 1000
    df = pl.read_ndjson(b"\n".join(payloads))
    assert df["worker_id"].n_unique() == N_WORKERS
    inside = df.filter(pl.Series(index.assign(df["lon"].to_numpy(), df["lat"].to_numpy()) >= 0))
    full = inside.select("worker_id", slot=pl.col("ts") // every)
    return payloads, full.unique().height, df.height - inside.height, inside["worker_id"].n_unique()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dialect", dialects())
def test_locations_throughput(
    mode: str,
    dialect: str,
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    index: GridIndex,
    location_payloads: tuple[list[bytes], int, int, int],
    tmp_path: Path,
) -> None:
    payloads, n_slots, n_outside, n_workers = location_payloads
    n = len(payloads)
    suffix = ("" if dialect == "sqlite" else f"_{dialect}") + MODES[mode]
    worker_runs: list[float] = []
    bare_runs: list[float] = []
    timers: list[tuple[StageTimer, float]] = []
    for i in range(RUNS):
        url, schema, engine = fresh_db(dialect)
        sub = f"{prefix}:loc{i}"
        s = _sub_settings(redis_url, sub, url, schema, tmp_path)
        group = s.streams.group
        bare_key = f"{sub}:bare"
        publish(rclient, bare_key, payloads)
        w = make_worker("locations", s, city, index, rclient, engine, "bench-loc")
        publish(rclient, w.consumer.stream, payloads)
        bare_runs.append(_bare_drain(rclient, bare_key, group, s.streams.batch_size, n))
        timer = StageTimer()
        rate, elapsed, applied, dead = _drain_worker(w, n, timer, ahead=mode == "ahead")
        worker_runs.append(rate)
        timers.append((timer, elapsed))
        # correctness: every ping applied, every worker's position live, every slot in SQL
        assert dead == n_outside and applied == n - n_outside
        assert rclient.hlen(f"{sub}:live:pos") == n_workers
        assert store.table_count(engine, store.track_points) == n_slots
        assert store.table_count(engine, store.worker_positions) == n_workers
        _unlink_prefix(rclient, sub)
    with_baseline(
        f"locations_throughput{suffix}",
        "events/s",
        worker_runs,
        bare_runs,
        events=n,
        outside_city=n_outside,
        batch=load_settings(environ={}).streams.batch_size,
        baseline_is="bare XREADGROUP+XACK, same Redis, same run",
    )
    # stage breakdown of the median run
    k = sorted(range(len(worker_runs)), key=lambda j: worker_runs[j])[len(worker_runs) // 2]
    timer, elapsed = timers[k]
    _print_stages(f"locations{suffix}", timer, elapsed, n)


# ---------------------------------------------------------------------------- 2. reports


@pytest.fixture(scope="module")
def report_payloads(city: City) -> list[bytes]:
    """≥50,000 valid report events (whole lifecycles, in order), starting two days ago.

    Generated in a half-locations mix and filtered: a reports-only ``generate`` stalls
    whenever a simulated minute has no event at all (see tests/bench/README.md).
    """
    s = load_settings(environ={})
    start = int(time.time() * 1000) - 2 * DAY_MS
    events = simulate.generate(
        city,
        s.simulate,
        flows_for(s),
        start,
        2 * N_REPORTS + 2000,
        mix={"reports": 0.5, "locations": 0.5},
        malformed_share=0.0,
    )
    payloads = [p for f, p, reason in events if f == "reports" and reason is None]
    assert len(payloads) >= N_REPORTS
    assert max(orjson.loads(p)["ts"] for p in payloads) < time.time() * 1000
    return payloads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dialect", dialects())
def test_reports_throughput(
    mode: str,
    dialect: str,
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    index: GridIndex,
    report_payloads: list[bytes],
    tmp_path: Path,
) -> None:
    n = len(report_payloads)
    suffix = ("" if dialect == "sqlite" else f"_{dialect}") + MODES[mode]
    worker_runs: list[float] = []
    bare_runs: list[float] = []
    timers: list[tuple[StageTimer, float]] = []
    for i in range(RUNS):
        url, schema, engine = fresh_db(dialect)
        sub = f"{prefix}:rep{i}"
        s = _sub_settings(redis_url, sub, url, schema, tmp_path)
        bare_key = f"{sub}:bare"
        publish(rclient, bare_key, report_payloads)
        w = make_worker("reports", s, city, index, rclient, engine, "bench-rep")
        publish(rclient, w.consumer.stream, report_payloads)
        bare_runs.append(_bare_drain(rclient, bare_key, s.streams.group, s.streams.batch_size, n))
        timer = StageTimer()
        rate, elapsed, applied, dead = _drain_worker(w, n, timer, ahead=mode == "ahead")
        worker_runs.append(rate)
        timers.append((timer, elapsed))
        assert dead == 0 and applied == n, f"dead={dead} applied={applied} of {n}"
        assert store.table_count(engine, store.incident_events) == n
        _unlink_prefix(rclient, sub)
    with_baseline(
        f"reports_throughput{suffix}",
        "events/s",
        worker_runs,
        bare_runs,
        events=n,
        baseline_is="bare XREADGROUP+XACK, same Redis, same run",
    )
    k = sorted(range(len(worker_runs)), key=lambda j: worker_runs[j])[len(worker_runs) // 2]
    timer, elapsed = timers[k]
    _print_stages(f"reports{suffix}", timer, elapsed, n)


# ---------------------------------------------------------------------------- 2b. video


@pytest.fixture(scope="module")
def video_payloads(city: City) -> tuple[list[bytes], pl.DataFrame]:
    """≥30,000 valid video alerts of the simulator's cameras (and the camera registry),
    generated in a half-locations mix like the reports."""
    s = load_settings(environ={})
    start = int(time.time() * 1000) - 2 * DAY_MS
    events = simulate.generate(
        city,
        s.simulate,
        flows_for(s),
        start,
        2 * N_VIDEO + 2000,
        mix={"video": 0.5, "locations": 0.5},
        malformed_share=0.0,
    )
    payloads = [p for f, p, reason in events if f == "video" and reason is None]
    assert len(payloads) >= N_VIDEO
    cams = simulate.Simulator(city, s.simulate, flows_for(s), start_ms=0).cameras
    return payloads, cams.select("camera_id", "lon", "lat", "grid_id")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dialect", dialects())
def test_video_throughput(
    mode: str,
    dialect: str,
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    index: GridIndex,
    video_payloads: tuple[list[bytes], pl.DataFrame],
    tmp_path: Path,
) -> None:
    payloads, cams = video_payloads
    n = len(payloads)
    alert_ids = {orjson.loads(p)["alert_id"] for p in payloads}
    suffix = ("" if dialect == "sqlite" else f"_{dialect}") + MODES[mode]
    worker_runs: list[float] = []
    bare_runs: list[float] = []
    timers: list[tuple[StageTimer, float]] = []
    deads: list[int] = []
    for i in range(RUNS):
        url, schema, engine = fresh_db(dialect)
        store.replace_table(engine, store.cameras, cams.to_dicts())
        sub = f"{prefix}:vid{i}"
        s = _sub_settings(redis_url, sub, url, schema, tmp_path)
        bare_key = f"{sub}:bare"
        publish(rclient, bare_key, payloads)
        w = make_worker("video", s, city, index, rclient, engine, "bench-vid")
        publish(rclient, w.consumer.stream, payloads)
        bare_runs.append(_bare_drain(rclient, bare_key, s.streams.group, s.streams.batch_size, n))
        timer = StageTimer()
        rate, elapsed, applied, dead = _drain_worker(w, n, timer, ahead=mode == "ahead")
        worker_runs.append(rate)
        timers.append((timer, elapsed))
        # correctness: one alert per alert id; every entry created, updated or superseded
        # one, or was a duplicate of one (dead-lettered)
        assert store.table_count(engine, store.video_alerts) == len(alert_ids)
        assert applied == len(alert_ids), f"applied={applied} of {len(alert_ids)} alert ids"
        assert applied + dead <= n
        deads.append(dead)
        _unlink_prefix(rclient, sub)
    with_baseline(
        f"video_throughput{suffix}",
        "events/s",
        worker_runs,
        bare_runs,
        events=n,
        alerts=len(alert_ids),
        dead_lettered=deads,
        baseline_is="bare XREADGROUP+XACK, same Redis, same run",
    )
    k = sorted(range(len(worker_runs)), key=lambda j: worker_runs[j])[len(worker_runs) // 2]
    timer, elapsed = timers[k]
    _print_stages(f"video{suffix}", timer, elapsed, n)


# ---------------------------------------------------------------------------- 3+4. latency, RSS


def _id_code(entry_id: bytes | str) -> int:
    s = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = s.partition("-")
    return (int(ms) << 20) | int(seq or 0)


class AckObserver:
    """Samples, atomically per sample, each stream's acknowledged frontier and server time.

    With one consumer per stream and XACK after every batch, the pending list is the
    batch in flight: entries below the oldest pending id (or, with nothing pending, up
    to last-delivered-id) are acknowledged — their live-state write and SQL are done.
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: dict[str, str],
        group: str,
        meta_key: str | None = None,
        consumers: dict[str, str] | None = None,
    ) -> None:
        self.r, self.keys, self.group = r, keys, group
        self.meta_key, self.consumers = meta_key, consumers or {}
        self.times: list[float] = []  # server time, ms
        self.front: dict[str, list[int]] = {f: [] for f in keys}
        self.live: dict[str, list[int]] = {f: [] for f in keys}  # applied-to-live frontier

    def sample(self) -> dict[str, dict[str, int]]:
        """One atomic snapshot; returns per feed pending count and ``behind`` (0 when
        every entry of the stream has been delivered, else 1; Redis 6 has no ``lag``)."""
        pipe = self.r.pipeline(transaction=True)
        for key in self.keys.values():
            pipe.xinfo_groups(key)
            pipe.xpending(key, self.group)
            pipe.xrevrange(key, count=1)
        if self.meta_key:
            pipe.hgetall(self.meta_key)
        pipe.time()
        res = pipe.execute()
        sec, usec = res[-1]
        meta = res[-2] if self.meta_key else {}
        for feed, consumer in self.consumers.items():
            applied = meta.get(f"applied:{consumer}".encode())
            prev = self.live[feed][-1] if self.live[feed] else 0
            self.live[feed].append(max(prev, _id_code(applied) + 1 if applied else 0))
        self.times.append(sec * 1000 + usec / 1000)
        out = {}
        for j, feed in enumerate(self.keys):
            groups, pend, tail = res[3 * j : 3 * j + 3]
            g = next(x for x in groups if x["name"] in (self.group, self.group.encode()))
            last = _id_code(g["last-delivered-id"])
            # exclusive bound: the oldest pending entry, else just past last-delivered
            front = _id_code(pend["min"]) if pend["pending"] else last + 1
            self.front[feed].append(front)
            behind = int(bool(tail) and _id_code(tail[0][0]) > last)
            out[feed] = {"pending": int(pend["pending"]), "behind": behind}
        return out

    def unacked_at(self, feed: str, sample: int, ids: np.ndarray) -> int:
        """Entries (of ``ids``) not yet acknowledged at sample number ``sample``."""
        return int((ids >= self.front[feed][sample]).sum())

    def latencies(self, feed: str, ids: np.ndarray, live: bool = False) -> np.ndarray:
        """ms from XADD (entry id) to the first sample that saw the entry acknowledged
        (or, with ``live``, applied to the Redis live state: before SQL and XACK)."""
        series = self.live[feed] if live else self.front[feed]
        front = np.maximum.accumulate(np.asarray(series, dtype=np.int64))
        i = np.searchsorted(front, ids, side="right")
        seen = i < len(front)
        t = np.asarray(self.times)
        out = np.full(ids.shape[0], np.nan)
        out[seen] = t[i[seen]] - (ids[seen] >> 20).astype(np.float64)
        return out


def _entry_ids(r: redis.Redis, key: str) -> np.ndarray:
    out: list[int] = []
    start = "-"
    while True:
        got = r.xrange(key, min=start, max="+", count=20_000)
        if not got:
            break
        out.extend(_id_code(e) for e, _ in got)
        last = got[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"
    return np.asarray(out, dtype=np.int64)


def _spawn_worker(env: dict[str, str], feed: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed, "--name", name]
    fh = log.open("wb")
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)


class RssWatch:
    def __init__(self, pid: int) -> None:
        self.p = psutil.Process(pid)
        self.peak = 0

    def poll(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.p.memory_info().rss)

    def hwm_mb(self) -> float | None:
        """VmHWM: the kernel's own peak-RSS record for the process (Linux)."""
        try:
            for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None


def _wait_drained(
    obs: AckObserver, rss: RssWatch, timeout_s: float, procs: dict[str, Any]
) -> tuple[float, dict[str, dict[str, int]]]:
    t0 = time.perf_counter()
    last: dict[str, dict[str, int]] = {}
    while time.perf_counter() - t0 < timeout_s:
        last = obs.sample()
        rss.poll()
        if all(v["pending"] == 0 and v["behind"] == 0 for v in last.values()):
            return time.perf_counter() - t0, last
        for name, p in procs.items():
            assert p.poll() is None, f"worker {name} died"
        time.sleep(SAMPLE_S)
    raise AssertionError(f"pipelines did not drain within {timeout_s}s: {last}")


def test_event_to_live_latency_and_worker_rss(
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    fresh_db: Any,
    city: City,
    geo_settings: GeoSettings,
    tmp_path: Path,
) -> None:
    dialect = dialects()[-1]  # PostgreSQL when configured (production), else SQLite
    url, schema, engine = fresh_db(dialect)
    s = load_settings(environ={})
    per_run = int(LATENCY_RATE * LATENCY_WINDOW_S)
    # mixed feed ~85% locations / 12% reports / 3% video (plus the simulator's bad events)
    events = simulate.generate(
        city,
        s.simulate,
        flows_for(s),
        int(time.time() * 1000) - 2 * DAY_MS,
        per_run * RUNS + 1000,
        mix={"locations": 0.85, "reports": 0.12, "video": 0.03},
    )
    events_file = tmp_path / "events.jsonl"
    simulate.write_jsonl(events_file, ((f, p) for f, p, _ in events))
    mix = {
        f: sum(1 for e in events if e[0] == f) / len(events)
        for f in ("locations", "reports", "video")
    }
    cams = simulate.Simulator(city, s.simulate, flows_for(s), start_ms=0).cameras
    store.replace_table(
        engine, store.cameras, cams.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    feeds = ("locations", "reports", "video")
    keys = {f: f"{prefix}:{f}" for f in feeds}
    for key in keys.values():
        ensure_group(rclient, key, s.streams.group)
    cache_dir = demo_cache_path(geo_settings).parent
    env = child_environ(
        REDIS_URL=redis_url,
        DATABASE_URL=url,
        WANGGE_DATABASE_SCHEMA=schema or "",
        WANGGE_REDIS_PREFIX=prefix,
        WANGGE_GEO_CACHE_DIR=str(cache_dir),
        WANGGE_RUN_VAR_DIR=str(tmp_path),
    )
    procs = {f: _spawn_worker(env, f, f"{f}-bench", tmp_path / f"{f}.log") for f in feeds}
    obs = AckObserver(
        rclient,
        keys,
        s.streams.group,
        meta_key=f"{prefix}:live:meta",
        consumers={f: f"{f}-bench" for f in feeds},
    )
    rss = RssWatch(procs["locations"].pid)
    try:
        # ready = each worker has registered as a consumer (its first XREADGROUP)
        t0 = time.perf_counter()
        while True:
            ready = all(
                any(
                    c["name"] == f"{f}-bench".encode()
                    for c in rclient.xinfo_consumers(k, "pipelines")
                )
                for f, k in keys.items()
            )
            if ready:
                break
            for f, p in procs.items():
                assert p.poll() is None, (tmp_path / f"{f}.log").read_text()[-3000:]
            assert time.perf_counter() - t0 < 60, "workers did not start"
            time.sleep(0.1)

        p50s: list[float] = []
        p95s: list[float] = []
        p99s: list[float] = []
        live_p50s: list[float] = []
        live_p95s: list[float] = []
        rates: list[float] = []
        lags_end: list[int] = []
        drains: list[float] = []
        per_feed_p95: dict[str, list[float]] = {f: [] for f in feeds}
        samples = 0
        for run in range(RUNS):
            out = tmp_path / f"producer{run}.json"
            t_start = rclient.time()
            start_ms = t_start[0] * 1000 + t_start[1] / 1000
            prod = spawn_producer(
                redis_url, prefix, events_file, out, per_run, LATENCY_RATE, skip=run * per_run
            )
            k = 0
            while prod.poll() is None:
                obs.sample()
                k += 1
                if k % 5 == 0:
                    rss.poll()
                time.sleep(SAMPLE_S)
            assert prod.returncode == 0
            obs.sample()
            end_sample = len(obs.times) - 1
            drain_s, _ = _wait_drained(obs, rss, 120, procs)
            drains.append(drain_s)
            stats = json.loads(out.read_text())
            rates.append(stats["rate"])
            lat_all = []
            live_all = []
            unacked = 0
            for f, key in keys.items():
                ids = _entry_ids(rclient, key)
                unacked += obs.unacked_at(f, end_sample, ids)
                ids = ids[(ids >> 20) >= int(start_ms + LATENCY_WARMUP_S * 1000)]
                lat = obs.latencies(f, ids)
                assert not np.isnan(lat).any(), f"{f}: entries never seen acknowledged"
                if lat.size:
                    per_feed_p95[f].append(float(np.percentile(lat, 95)))
                lat_all.append(lat)
                live_all.append(obs.latencies(f, ids, live=True))
            lags_end.append(unacked)
            live = np.concatenate(live_all)
            live = live[~np.isnan(live)]
            live_p95s.append(float(np.percentile(live, 95)) if live.size else float("nan"))
            live_p50s.append(float(np.percentile(live, 50)) if live.size else float("nan"))
            lat = np.concatenate(lat_all)
            samples += lat.size
            p50s.append(float(np.percentile(lat, 50)))
            p95s.append(float(np.percentile(lat, 95)))
            p99s.append(float(np.percentile(lat, 99)))

        # 4. a full-batch backlog through the same locations worker process (peak RSS)
        backlog = simulate.location_events(
            city, N_WORKERS, N_LOCATIONS, int(time.time() * 1000) - 3_600_000, seed=99
        )
        publish(rclient, keys["locations"], backlog)
        backlog_s, _ = _wait_drained(obs, rss, 300, procs)
        hwm = rss.hwm_mb()
    finally:
        stop_processes(procs.values())

    bench(
        "event_to_redis_live_p95",
        median(live_p95s),
        "ms",
        runs=live_p95s,
        p50=median(live_p50s),
        measure="XADD (entry id ms) -> the worker's applied-to-live marker (written right "
        "after the Lua live-state write, before SQL and XACK) seen by a 20 ms sampler",
        offered_rate=LATENCY_RATE,
        target="<= 250 ms",
        database=dialect,
    )
    bench("event_to_acked_p50", median(p50s), "ms", runs=p50s, database=dialect)
    bench(
        "event_to_acked_p95",
        median(p95s),
        "ms",
        runs=p95s,
        p50=median(p50s),
        p99=median(p99s),
        per_feed_p95={f: round(median(v), 1) for f, v in per_feed_p95.items() if v},
        samples=samples,
        window_s=LATENCY_WINDOW_S - LATENCY_WARMUP_S,
        offered_rate=LATENCY_RATE,
        measure="XADD (entry id ms) -> XACK seen by a 20 ms sampler (after SQL too)",
        database=dialect,
    )
    bench("event_to_acked_p99", median(p99s), "ms", runs=p99s, database=dialect)
    bench(
        "offered_rate",
        median(rates),
        "events/s",
        runs=rates,
        target=LATENCY_RATE,
        mix={k: round(v, 3) for k, v in mix.items()},
    )
    bench("consumer_lag_end", median(lags_end), "entries", runs=lags_end, drain_s=drains)
    bench(
        "locations_worker_backlog_throughput",
        len(backlog) / backlog_s,
        "events/s",
        events=len(backlog),
        note="real `wangge worker` process, 20 ms drain sampling, single run",
        database=dialect,
    )
    bench(
        "worker_rss",
        hwm if hwm is not None else rss.peak / 2**20,
        "MB",
        sampled_peak_mb=round(rss.peak / 2**20, 1),
        source="VmHWM" if hwm is not None else "psutil samples",
        load=f"latency runs + {len(backlog)} pings backlog, 15,000 workers, full city",
    )


# ---------------------------------------------------------------------------- 5. demo city

_CITY_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from pipelines.city.geography import GridIndex, load_city
from pipelines.settings import GeoSettings
t1 = time.perf_counter()
city = load_city(GeoSettings(cache_dir=sys.argv[1]))
index = GridIndex(city)
gi = index.assign(city.grids["lon"].to_numpy(), city.grids["lat"].to_numpy())
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "grids": city.grids.height,
                  "assigned": int((gi >= 0).sum())}))
"""


def _city_subprocess(cache_dir: Path) -> dict[str, Any]:
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _CITY_SCRIPT, str(cache_dir)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    )
    res = json.loads(out.stdout.decode().strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t
    assert res["grids"] == GeoSettings().grids
    return res


def test_demo_city_cold_and_cached(tmp_path: Path) -> None:
    cold: list[dict[str, Any]] = []
    cached: list[dict[str, Any]] = []
    for i in range(RUNS):
        d = tmp_path / f"geo{i}"
        d.mkdir()
        cold.append(_city_subprocess(d))
        assert list(d.glob("*.parquet")), "the cold run wrote no cache"
        cached.append(_city_subprocess(d))
    for name, rows in (("demo_city_cold", cold), ("demo_city_cached", cached)):
        runs = [r["build_s"] for r in rows]
        bench(
            name,
            median(runs),
            "s",
            runs=runs,
            wall_s=median([r["wall_s"] for r in rows]),
            import_s=median([r["import_s"] for r in rows]),
            what="load_city (generate+write / read cache) + GridIndex + assign every centroid",
        )
