"""Ingest gateway benchmarks: OsmAnd throughput with batching clients, request latency at
2,000 phones pinging every 5 s, Frigate messages per second, memory per gateway process.

The gateway runs as ``wangge gateway`` in its own process (uvicorn); the clients run in
this process. Same-run baselines: a bare ``XADD`` loop of the same payloads from one
process (no HTTP, no parsing, no checks). Prints BENCH lines; never asserts a time (it
asserts that everything sent was written, once).
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
import pytest
import redis

from pipelines.city import simulator as simulate
from pipelines.city.geography import City
from pipelines.gateway import credentials as cr
from pipelines.gateway.broker import EmbeddedBroker
from pipelines.gateway.feeder import osmand_fix
from pipelines.gateway.mqtt import FrigateSubscriber
from pipelines.gateway.server import free_port
from pipelines.settings import child_environ
from pipelines.spine import store
from tests.bench.conftest import RUNS, bench, with_baseline
from tests.conftest import settings_for, stop_processes

pytestmark = pytest.mark.bench

N_FIXES = int(os.environ.get("WANGGE_BENCH_GATEWAY_FIXES", "60000"))
BATCH = 200  # fixes per request (a phone's buffer, or an MDM relay)
CLIENTS = 8  # concurrent batching clients
PHONES = 2000
PING_S = 5.0
LATENCY_S = float(os.environ.get("WANGGE_BENCH_GATEWAY_LATENCY_S", "35"))
N_FRIGATE = int(os.environ.get("WANGGE_BENCH_FRIGATE", "5000"))
NOW = int(time.time() * 1000)


def _env(settings: Any, workers: int) -> dict[str, str]:
    return child_environ(
        REDIS_URL=settings.redis.url,
        DATABASE_URL=settings.database_url,
        WANGGE_REDIS_PREFIX=settings.redis.prefix,
        WANGGE_GATEWAY_WORKERS=str(workers),
        WANGGE_GATEWAY_MQTT_URL="",
        WANGGE_GATEWAY_PHONE_RATE_PER_MINUTE="100000",
    )


class Gateway:
    """``wangge gateway`` in a child process."""

    def __init__(self, settings: Any, workers: int = 1) -> None:
        self.port = free_port("127.0.0.1")
        cmd = [sys.executable, "-m", "pipelines.cli", "gateway", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=_env(settings, workers))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the gateway did not start")

    def rss_mb(self) -> float:
        procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        return sum(p.memory_info().rss for p in procs) / 1e6

    def stop(self) -> None:
        stop_processes([self.proc])


@pytest.fixture
def setup(
    redis_url: str, prefix: str, tmp_path: Path, city: City, fresh_db: Any
) -> Iterator[dict[str, Any]]:
    url, schema, engine = fresh_db("sqlite")
    s = settings_for(redis_url, prefix, (url, schema), tmp_path)
    ids = [f"W{i + 1:06d}" for i in range(15_000)]
    grids = city.grids["grid_id"].to_list()
    store.replace_table(
        engine,
        store.workers,
        [
            {"worker_id": w, "name": w, "type": "full_time", "grid_id": grids[i % len(grids)]}
            for i, w in enumerate(ids)
        ],
    )
    yield {"s": s, "engine": engine, "r": redis.Redis.from_url(redis_url)}


def _post_all(port: int, path: str, bodies: list[bytes]) -> int:
    """One keep-alive client posting its share of the bodies; returns 200s."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ok = 0
    for b in bodies:
        c.request("POST", path, b, {"Content-Type": "application/json"})
        resp = c.getresponse()
        resp.read()
        ok += resp.status == 200
    c.close()
    return ok


def _client(port: int, path: str, bodies: list[bytes], oks: list[int]) -> None:
    oks.append(_post_all(port, path, bodies))


def test_osmand_throughput_with_batching_clients(setup: dict[str, Any], city: City) -> None:
    s, engine, r = setup["s"], setup["engine"], setup["r"]
    _, key = cr.create(
        engine, city, "fleet", "bench", now_ms=NOW, actor="bench", rate_per_minute=10**9
    )
    events = [
        orjson.loads(p) for p in simulate.location_events(city, 15_000, N_FIXES, NOW - 3_600_000, 7)
    ]
    fixes = [osmand_fix(e) for e in events]
    bodies = [orjson.dumps(fixes[i : i + BATCH]) for i in range(0, len(fixes), BATCH)]
    # the same payloads the gateway writes, for the bare XADD loop
    from pipelines.gateway.osmand import location_event, parse

    payloads = [
        orjson.dumps(location_event(f, f.device_id))
        for b in bodies
        for f in parse([], "application/json", b, NOW, "Asia/Shanghai").fixes
    ]
    stream = f"{s.redis.prefix}:{s.streams.locations}"
    for workers in (1, 2):
        gw = Gateway(s, workers)
        runs, base = [], []
        try:
            for run in range(RUNS):
                r.delete(stream)
                for k in r.scan_iter(match=f"{s.redis.prefix}:gw:fx:*", count=5000):
                    r.unlink(k)
                t = time.perf_counter()
                bare = f"{stream}:bare"
                for p in payloads:
                    r.xadd(bare, {b"data": p})
                base.append(len(payloads) / (time.perf_counter() - t))
                r.delete(bare)
                share = [bodies[i::CLIENTS] for i in range(CLIENTS)]
                t = time.perf_counter()
                oks: list[int] = []
                threads = [
                    threading.Thread(target=_client, args=(gw.port, f"/?key={key}", part, oks))
                    for part in share
                ]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                runs.append(len(payloads) / (time.perf_counter() - t))
                assert sum(oks) == len(bodies), f"run {run}: {sum(oks)} of {len(bodies)} accepted"
                assert r.xlen(stream) == len(payloads)  # every fix written, once
            with_baseline(
                f"gateway_osmand_fixes_per_s_{workers}w",
                "fixes/s",
                runs,
                base,
                batch=BATCH,
                clients=CLIENTS,
                baseline_is="bare XADD loop, one process, same payloads",
            )
            bench(
                f"gateway_rss_{workers}w", gw.rss_mb(), "MB", workers=workers, note="all processes"
            )
        finally:
            gw.stop()


async def _phone_load(
    port: int, keys: list[tuple[str, str]], lonlat: list[tuple[float, float]]
) -> list[float]:
    """Open loop: phone i pings at i·(5 s/2000) + k·5 s; latency from its scheduled time."""
    conns: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        conns.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.5

    async def ping(i: int, k: int) -> None:
        due = t0 + i * PING_S / len(keys) + k * PING_S
        await asyncio.sleep(max(0.0, due - loop.time()))
        key, dev = keys[i]
        lon, lat_ = lonlat[i]
        ts = NOW // 1000 + k * 5 - 600
        query = f"key={key}&id={dev}&lat={lat_}&lon={lon}&timestamp={ts}&speed=1.2&batt=80"
        req = f"GET /?{query} HTTP/1.1\r\nHost: gw\r\n\r\n"
        reader, writer = await conns.get()
        try:
            writer.write(req.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            n = (
                int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                if b"content-length: " in head
                else 0
            )
            if n:
                await reader.readexactly(n)
            assert head.startswith(b"HTTP/1.1 200"), head[:60]
            lat.append((k, loop.time() - due))
        finally:
            conns.put_nowait((reader, writer))

    rounds = int(LATENCY_S / PING_S)
    tasks = []
    for k in range(rounds):  # start each ping just before it is due (few live tasks)
        for i in range(len(keys)):
            due = t0 + i * PING_S / len(keys) + k * PING_S
            if due - loop.time() > 0.05:
                await asyncio.sleep(due - loop.time() - 0.05)
            tasks.append(asyncio.ensure_future(ping(i, k)))
    await asyncio.gather(*tasks)
    while not conns.empty():
        _, w = conns.get_nowait()
        w.close()
    return lat


def test_latency_of_2000_phones_every_5_s(setup: dict[str, Any], city: City) -> None:
    s, engine, r = setup["s"], setup["engine"], setup["r"]
    keys = []
    for i in range(PHONES):
        w = f"W{i + 1:06d}"
        _, k = cr.create(
            engine,
            city,
            "phone",
            f"phone {w}",
            now_ms=NOW,
            actor="bench",
            worker_id=w,
            device_id=f"dev{i}",
        )
        keys.append((k, f"dev{i}"))
    grids = city.grids
    lonlat = [
        (float(grids["lon"][i % grids.height]), float(grids["lat"][i % grids.height]))
        for i in range(PHONES)
    ]
    gw = Gateway(s, 1)
    try:
        proc = psutil.Process(gw.proc.pid)
        cpu0, t0 = proc.cpu_times(), time.perf_counter()
        gc.collect()
        gc.disable()  # the load generator's own pauses are not the gateway's latency
        try:
            got = asyncio.run(_phone_load(gw.port, keys, lonlat))
        finally:
            gc.enable()
        cpu1, elapsed = proc.cpu_times(), time.perf_counter() - t0
        rss = gw.rss_mb()
    finally:
        gw.stop()
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed * 100
    warm = sorted(x for k, x in got if k > 0)  # after every phone's first ping
    cold = sorted(x for k, x in got if k == 0)  # first pings: every key looked up in SQL

    def p(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000

    bench(
        "gateway_osmand_latency_p95",
        p(warm, 0.95),
        "ms",
        p50=p(warm, 0.50),
        p99=p(warm, 0.99),
        max=warm[-1] * 1000,
        first_round_p95=p(cold, 0.95),
        requests=len(got),
        rate_per_s=PHONES / PING_S,
        phones=PHONES,
        gateway_cpu_pct=cpu,
        rss_mb=rss,
        load_avg=os.getloadavg()[0],
    )
    lat = got
    assert r.xlen(f"{s.redis.prefix}:{s.streams.locations}") == len(lat)


def test_frigate_messages_per_second(setup: dict[str, Any], city: City, tmp_path: Path) -> None:
    import dataclasses

    s0, engine, r = setup["s"], setup["engine"], setup["r"]
    cams = city.grids.head(50)
    store.replace_table(
        engine,
        store.cameras,
        [
            {"camera_id": f"C{i:05d}", "lon": lo, "lat": la, "grid_id": g}
            for i, (g, lo, la) in enumerate(cams.select("grid_id", "lon", "lat").iter_rows())
        ],
    )
    t0 = NOW / 1000 - 600

    def messages(run: int) -> list[bytes]:
        """Objects of their own per run (a run's revisions are not the next run's)."""
        out = []
        for i in range(N_FRIGATE):
            kind = ("new", "update", "end")[i % 3]
            after = {
                "id": f"{t0:.6f}-r{run}o{i // 3}",
                "camera": f"C{(i // 3) % 50:05d}",
                "label": "fall",
                "top_score": 0.8,
                "false_positive": False,
                "start_time": t0,
                "frame_time": t0 + i % 3,
                "end_time": t0 + 9 if kind == "end" else None,
            }
            out.append(orjson.dumps({"type": kind, "before": None, "after": after}))
        return out

    runs, base = [], []
    with EmbeddedBroker(tmp_path / "mqtt") as broker:
        for run in range(RUNS):
            s = dataclasses.replace(
                s0,
                gateway=dataclasses.replace(
                    s0.gateway,
                    mqtt_url=broker.url,
                    mqtt_client_id=f"bench-{run}",
                    frigate_topic_prefix=f"bench{run}/frigate",
                ),
            )
            stream = f"{s.redis.prefix}:{s.streams.video}"
            r.delete(stream)
            msgs = messages(run)
            sub = FrigateSubscriber(s, r, engine)
            sub.start()
            assert sub.connected.wait(10)
            pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
            pub.max_inflight_messages_set(200)
            pub.connect("127.0.0.1", broker.port)
            pub.loop_start()
            t = time.perf_counter()
            for m in msgs:
                pub.publish(f"bench{run}/frigate/events", m, qos=1)
            deadline = time.monotonic() + 300
            while sum(sub.counts.values()) < len(msgs) and time.monotonic() < deadline:
                time.sleep(0.01)
            runs.append(len(msgs) / (time.perf_counter() - t))
            pub.loop_stop()
            pub.disconnect()
            sub.stop()
            assert sub.counts.get("written") == len(msgs), sub.counts
            t = time.perf_counter()
            for m in msgs:
                r.xadd(f"{stream}:bare", {b"data": m})
            base.append(len(msgs) / (time.perf_counter() - t))
            r.delete(f"{stream}:bare")
        with_baseline(
            "gateway_frigate_messages_per_s",
            "messages/s",
            runs,
            base,
            broker=broker.kind,
            baseline_is="bare XADD loop of the same payloads",
        )
