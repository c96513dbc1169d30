"""Pipeline processes per feed on a local three-primary Redis Cluster: 1 → 2 → 4
partitions, one worker process each, on the location feed (the busiest).

For each N: N worker processes (``wangge worker --feed locations --partition k``) start
and register; then the same pings are published into the N partition streams and the
time until every partition is read and acknowledged gives events/s. Same-run baseline:
a bare XREADGROUP+XACK consumer draining the same number of entries from one stream on
the same cluster. Prints ``os.cpu_count()``: on a 2-core machine 4 processes cannot
scale past 2. Sizes: ``WANGGE_BENCH_CLUSTER_EVENTS`` (60,000). Never asserts a time;
asserts that every ping was applied (every worker's position is live).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.city import simulator as simulate
from pipelines.city.geography import load_city
from pipelines.embedded import EmbeddedCluster
from pipelines.redis_client import connect
from pipelines.settings import GeoSettings, child_environ, load_settings
from pipelines.spine.partitions import publish_feed
from pipelines.spine.runner import live_state
from pipelines.spine.streams import ensure_group, publish
from tests.bench.conftest import bench, median
from tests.conftest import private_database, stop_processes

pytestmark = [pytest.mark.bench, pytest.mark.cluster]

EVENTS = int(os.environ.get("WANGGE_BENCH_CLUSTER_EVENTS", "60000"))
WORKERS = 3000
SCALES = (1, 2, 4)


def _bare(r: Any, key: str, n: int, count: int = 2000) -> float:
    ensure_group(r, key, "bare")
    done, t = 0, time.perf_counter()
    while done < n:
        got = r.xreadgroup("bare", "bare", {key: ">"}, count=count)
        ids = [e for e, _ in got[0][1]] if got else []
        assert ids
        r.xack(key, "bare", *ids)
        done += len(ids)
    return n / (time.perf_counter() - t)


def _drained(r: Any, keys: list[str], group: str) -> bool:
    for key in keys:
        g = next((g for g in r.xinfo_groups(key) if g["name"] == group.encode()), None)
        if g is None or g["pending"] or (g.get("lag") or 0):
            return False
        tail = r.xrevrange(key, count=1)
        if tail and tail[0][0] != g["last-delivered-id"]:
            return False
    return True


def _logs(tmp: Path, n_parts: int) -> str:
    return "a worker died: " + "\n".join(
        f.read_text()[-2000:] for f in sorted(tmp.glob(f"worker-{n_parts}-*.log"))
    )


def _run(url: str, n_parts: int, payloads: list[bytes], tmp: Path, geo: Path) -> float:
    prefix = f"wgb-{n_parts}-{os.getpid()}"
    (tmp / f"db{n_parts}").mkdir()
    with private_database(tmp / f"db{n_parts}") as (db, schema):
        env = child_environ(
            REDIS_URL=url,
            DATABASE_URL=db,
            WANGGE_DATABASE_SCHEMA=schema or "",
            WANGGE_REDIS_PREFIX=prefix,
            WANGGE_GEO_GRIDS="400",
            WANGGE_GEO_CACHE_DIR=str(geo),
            WANGGE_STREAMS_PARTITIONS=str(n_parts),
            WANGGE_STREAMS_MAX_AGE_DAYS="60",
            WANGGE_RUN_VAR_DIR=str(tmp),
        )
        s = load_settings(environ=env)
        r = connect(url)
        st = live_state(r, s)
        keys = st.keys.feed_streams(s.streams.locations)
        for k in keys:
            ensure_group(r, k, s.streams.group)
        procs = []
        for k in range(n_parts):
            cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", "locations"]
            cmd += ["--name", f"loc-p{k}", "--partition", str(k)]
            log = (tmp / f"worker-{n_parts}-{k}.log").open("wb")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
        try:
            t0 = time.perf_counter()
            while not all(
                any(c["name"] == f"loc-p{k}".encode() for c in r.xinfo_consumers(key, "pipelines"))
                for k, key in enumerate(keys)
            ):
                assert all(p.poll() is None for p in procs), _logs(tmp, n_parts)
                assert time.perf_counter() - t0 < 120, "workers did not start"
                time.sleep(0.1)
            t = time.perf_counter()
            publish_feed(r, s, "locations", payloads)
            while not _drained(r, keys, s.streams.group):
                assert all(p.poll() is None for p in procs), _logs(tmp, n_parts)
                time.sleep(0.05)
            rate = len(payloads) / (time.perf_counter() - t)
            assert len(st.positions()) == WORKERS
        finally:
            stop_processes(procs)
            for key in list(r.scan_iter(match=f"{prefix}:*", count=5000)):
                r.unlink(key)
            r.close()
    return rate


def test_cluster_scaling(tmp_path: Path) -> None:
    geo = tmp_path / "geo"
    city = load_city(dataclasses.replace(GeoSettings(), grids=400, cache_dir=str(geo)))
    start = int(time.time() * 1000) - (EVENTS // WORKERS + 1) * 15_000 - 600_000
    payloads = simulate.location_events(city, WORKERS, EVENTS, start, seed=2026)
    with EmbeddedCluster(tmp_path / "cluster") as c:
        r = connect(c.url)
        rates: dict[int, float] = {}
        bare: list[float] = []
        for n in SCALES:
            key = f"wgb-bare-{n}:{{bare}}:s"
            publish(r, key, payloads)
            bare.append(_bare(r, key, len(payloads)))
            r.unlink(key)
            rates[n] = _run(c.url, n, payloads, tmp_path, geo)
        r.close()
    base = median(bare)
    for n in SCALES:
        bench(
            f"cluster_locations_{n}proc",
            rates[n],
            "events/s",
            processes=n,
            partitions=n,
            cpu_count=os.cpu_count(),
            events=len(payloads),
            vs_1proc=round(rates[n] / rates[1], 3),
            baseline=base,
            baseline_runs=bare,
            ratio=round(rates[n] / base, 3),
            baseline_is="bare XREADGROUP+XACK on the same cluster, same run",
        )
