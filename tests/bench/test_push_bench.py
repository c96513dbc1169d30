"""Live push benchmarks (issue 15): 1,000 viewers of the city panorama on this machine.

Run with ``.venv/bin/python -m pytest -q -s tests/bench/test_push_bench.py
-p no:cacheprovider``. Every figure is one ``BENCH {json}`` line with its same-run
baseline; nothing here asserts a time (only correctness: streams open, ticks arrive).

Setup (once per module): the full demo city, ``WANGGE_BENCH_PUSH_EVENTS`` simulated events
through the real feed workers, 1,000 real sessions (``WANGGE_BENCH_PUSH_VIEWERS``) of
city leaders in Redis; then the production servers as subprocesses on that data: gunicorn
(``dashboard/gunicorn_conf.py``, 2 workers) and the push server (``python -m
dashboard.push``). The viewers are asyncio clients in this process (the same 2 CPUs).

Figures:

* ``push_tick_to_screen_ms``: for every viewer and tick, from the tick's start (the
  refresh boundary, wall clock) to the tick's event arriving at the viewer: p50/p95
  (target p95 ≤ 300 ms), ticks missed and errors (target 0);
* ``push_cpu_s_per_1000_viewers_min``: CPU seconds of the serving processes (gunicorn's
  and the push server's) per 1,000 viewers per minute; ``baseline`` the same processes'
  CPU for ``/healthz`` requests at the polling rate of the same viewers (what the
  cheapest possible poll would cost), ``ratio`` push / that;
* ``poll_fallback_latency_ms``: the same viewers polling the refresh every tick (the
  fallback when push is down): request latency p50/p95 (target p95 ≤ 1 s), errors;
  ``cpu_s_per_1000_viewers_min`` beside it;
* ``healthz_cpu_ms_per_request``: the baseline request cost;
* ``workers_refresh_rps_{1,2,4}``: city panorama refreshes per second, closed loop, with
  1, 2 and 4 gunicorn workers (ratios to 1 worker; ``cpu_count`` printed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import redis
import requests
from flask import Flask
from flask.sessions import SecureCookieSessionInterface

from dashboard.guard import secret_key
from pipelines.access import accounts, audit
from pipelines.access import sessions as S
from pipelines.city.geography import demo_cache_path, load_city
from pipelines.cli.web import gunicorn_command
from pipelines.settings import GeoSettings, child_environ
from pipelines.spine import store
from tests.bench.conftest import median
from tests.bench.test_dashboard_bench import _fill_live_state, bench, pct
from tests.bench.test_serving_bench import _drive, _free_port, refresh_body, refresh_spec
from tests.conftest import TEST_AUDIT_KEY, settings_for
from tests.push_client import open_receiver

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = int(os.environ.get("WANGGE_BENCH_PUSH_EVENTS", "30000"))
VIEWERS = int(os.environ.get("WANGGE_BENCH_PUSH_VIEWERS", "1000"))
TICKS = int(os.environ.get("WANGGE_BENCH_PUSH_TICKS", "6"))
REFRESH_S = float(os.environ.get("WANGGE_BENCH_PUSH_REFRESH_S", "5"))
CITY_ID = "320100"


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]

    def cpu_s(self) -> float:
        total = 0.0
        try:
            me = psutil.Process(self.proc.pid)
            for p in [me, *me.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _start(cmd: list[str], env: dict[str, str], port: int, ready: str, log: Path) -> Proc:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(url + ready, timeout=5).status_code == 200:
                return Proc(url, proc)
        except requests.RequestException:
            pass
        assert time.monotonic() - t0 < 180, f"{cmd} did not start"
        time.sleep(0.3)


@dataclass
class PushEnv:
    env: dict[str, str]
    web: Proc
    push: Proc
    cookies: list[str]  # one signed session cookie per viewer
    tmp: Path


@pytest.fixture(scope="module")
def push_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushEnv]:
    city = load_city(GeoSettings())
    prefix = f"wgbench-push-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("pushbench")
    db_url = f"sqlite:///{tmp / 'wangge.db'}"
    settings = settings_for(redis_url, prefix, (db_url, None), tmp)
    engine = audit.keyed(store.make_engine(db_url), TEST_AUDIT_KEY)
    store.create_schema(engine)
    r = redis.Redis.from_url(redis_url)
    procs: list[Proc] = []
    try:
        _fill_live_state(settings, city, r, engine, N_EVENTS)
        now_ms = int(time.time() * 1000)
        user = accounts.create_user(
            engine, city, "pushbench", "city_leader", city.city_id, "not-used-1", now_ms=now_ms
        )
        store_ = S.Sessions(r, prefix, idle_ms=3_600_000, max_ms=3_600_000)
        flask = Flask("bench")
        flask.secret_key = secret_key(settings)  # the servers read the same var dir's key
        signer = SecureCookieSessionInterface().get_signing_serializer(flask)
        assert signer is not None
        cookies = []
        for _ in range(VIEWERS):
            s = store_.start(
                username="pushbench",
                role="city_leader",
                scope=city.city_id,
                display_name="bench",
                now_ms=now_ms,
                stamp=user.stamp,
            )
            cookies.append(f"wg_session={signer.dumps({'sid': s.sid})}")
        web_port, push_port = _free_port(), _free_port()
        env = child_environ(
            REDIS_URL=redis_url,
            DATABASE_URL=db_url,
            WANGGE_DATABASE_SCHEMA="",
            WANGGE_REDIS_PREFIX=prefix,
            WANGGE_GEO_CACHE_DIR=str(demo_cache_path(GeoSettings()).parent),
            WANGGE_RUN_VAR_DIR=str(tmp),
            WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
            WANGGE_DASHBOARD_ACCESS_LOG="",
            WANGGE_DASHBOARD_WORKERS="2",
            WANGGE_DASHBOARD_REFRESH_S=str(REFRESH_S),
            WANGGE_PUSH_PORT=str(push_port),
            WANGGE_PUSH_DASHBOARD_URL=f"http://127.0.0.1:{web_port}",
        )
        web = _start(
            gunicorn_command("127.0.0.1", web_port), env, web_port, "/healthz", tmp / "web.log"
        )
        procs.append(web)
        push = _start(
            [sys.executable, "-m", "dashboard.push"],
            env,
            push_port,
            "/push/readyz",
            tmp / "push.log",
        )
        procs.append(push)
        yield PushEnv(env, web, push, cookies, tmp)
    finally:
        for p in procs:
            p.stop()
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            r.unlink(*keys[i : i + 1000])
        r.close()
        engine.dispose()


def _cpu(e: PushEnv) -> float:
    return e.web.cpu_s() + e.push.cpu_s()


async def _push_run(e: PushEnv) -> dict[str, Any]:
    """Every viewer opens its stream; ``TICKS`` ticks are measured after all are open.

    Tick-to-screen is taken as tick-to-receipt: ``time.time()`` when a tick's event has
    wholly arrived in this process (:class:`TickReceiver`: timed in ``data_received``,
    before any parsing; no task or await per event) minus the tick's boundary (tick ×
    refresh, the wall clock the servers use). The clients share the 2 CPUs with the
    servers, so they are kept as light as can be (the event loop is uvloop when
    installed, as the push server's)."""
    port = int(e.push.url.rsplit(":", 1)[1])
    gate = asyncio.Semaphore(64)
    path = f"/push/pan?area={CITY_ID}&metric=open&lang=zh-CN"
    first = last = -1  # the measured ticks, set once every stream is open
    lat: list[float] = []
    by_tick: dict[int, list[float]] = {}
    sizes: list[int] = []
    firsts: dict[int, float] = {}  # per tick: its first viewer (≈ the build and publish)
    got: list[set[int]] = [set() for _ in e.cookies]
    errors = 0
    done = asyncio.get_running_loop().create_future()
    left = [len(e.cookies)]

    def on_event(i: int, event: str, ident: str, size: int, arrived: float) -> None:
        nonlocal errors
        if event == "close":  # the server ended the stream: an error here
            errors += 1
            return
        if event != "tick" or first < 0:
            return
        tick = int(ident)
        if first <= tick <= last and tick not in got[i]:
            ms = (arrived - tick * REFRESH_S) * 1000
            lat.append(ms)
            by_tick.setdefault(tick, []).append(ms)
            firsts[tick] = min(firsts.get(tick, ms), ms)
            sizes.append(size)
            got[i].add(tick)
            if tick == last:
                left[0] -= 1
                if left[0] == 0 and not done.done():
                    done.set_result(None)

    async def one(i: int, cookie: str) -> Any:
        async with gate:
            try:
                return await open_receiver(
                    "127.0.0.1", port, path, cookie, functools.partial(on_event, i)
                )
            except OSError as exc:
                return exc

    streams = await asyncio.gather(*(one(i, c) for i, c in enumerate(e.cookies)))
    opened = [i for i, s in enumerate(streams) if not isinstance(s, BaseException)]
    ok = [i for i in opened if streams[i].status == 200]
    good = [streams[i] for i in ok]
    errors += len(streams) - len(good)
    failed = collections.Counter(
        type(s).__name__ if isinstance(s, BaseException) else str(s.status)
        for s in streams
        if isinstance(s, BaseException) or s.status != 200
    )
    left[0] = len(good)
    # measure from the next tick boundary after everyone is connected
    first = int(time.time() // REFRESH_S) + 1
    last = first + TICKS - 1
    cpu0, t0, own0 = _cpu(e), time.time(), time.process_time()
    push0 = e.push.cpu_s()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, (last + 2) * REFRESH_S - time.time())
    cpu, dur, own = _cpu(e) - cpu0, time.time() - t0, time.process_time() - own0
    push_cpu = e.push.cpu_s() - push0
    errors += sum(1 for s in good if s.ended)  # a stream the server ended or dropped
    for s in good:
        s.close()
    missed = sum(TICKS - len(got[i]) for i in ok)
    return {
        "lat": lat,
        "errors": errors,
        "missed": missed,
        "cpu": cpu,
        "client_cpu": own,
        "push_cpu": push_cpu,
        "dur": dur,
        "open": len(good),
        "failed": dict(failed),
        "bytes": max(sizes, default=0),
        "first": sorted(firsts.values()),
        "per_tick": [
            (round(firsts[t]), round(pct(by_tick[t], 50)), round(max(by_tick[t])))
            for t in sorted(by_tick)
        ],
    }


def _run(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed (the clients' own overhead down)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _server_steps(e: PushEnv) -> dict[str, Any]:
    """The push server's own per-tick step times (its /metrics), mean ms per step."""
    try:
        resp = requests.get(e.push.url + "/metrics", timeout=10)
    except requests.RequestException:
        return {}
    if resp.status_code != 200:
        return {}
    sums: dict[str, float] = {}
    for line in resp.text.splitlines():
        if line.startswith("wangge_push_") and ("_sum" in line or "_count" in line):
            name, value = line.rsplit(" ", 1)
            sums[name] = sums.get(name, 0.0) + float(value)
    out: dict[str, Any] = {}
    for step in ("tick_build", "recheck", "fanout"):
        total = sum(v for k, v in sums.items() if k.startswith(f"wangge_push_{step}_seconds_sum"))
        n = sum(v for k, v in sums.items() if k.startswith(f"wangge_push_{step}_seconds_count"))
        if n:
            out[f"{step}_ms_mean"] = total / n * 1000
            out[f"{step}_n"] = int(n)
    return out


async def _poll_run(e: PushEnv, body: bytes, seconds: float) -> dict[str, Any]:
    """Every viewer POSTs the refresh once per tick on its own keep-alive connection."""
    host, port = "127.0.0.1", int(e.web.url.rsplit(":", 1)[1])
    lat: list[float] = []
    errors = 0
    end = time.time() + seconds
    cpu0, t0 = _cpu(e), time.time()

    async def viewer(i: int, cookie: str) -> None:
        nonlocal errors
        await asyncio.sleep((i / len(e.cookies)) * REFRESH_S)  # spread like real tabs
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors += 1
            return
        head = (
            f"POST /_dash-update-component HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Cookie: {cookie}\r\nContent-Type: application/json\r\n"
            f"Origin: http://{host}:{port}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        while time.time() < end:
            t = time.perf_counter()
            try:
                writer.write(head + body)
                status = int((await reader.readline()).split()[1])
                n = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                await reader.readexactly(n)
                ok = status == 200
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                ok = False
            lat.append((time.perf_counter() - t) * 1000)
            if not ok:
                errors += 1
                break
            await asyncio.sleep(max(0.0, REFRESH_S - (time.perf_counter() - t)))
        writer.close()

    await asyncio.gather(*(viewer(i, c) for i, c in enumerate(e.cookies)))
    return {"lat": lat, "errors": errors, "cpu": _cpu(e) - cpu0, "dur": time.time() - t0}


def _healthz_cost(e: PushEnv, n: int = 400) -> float:
    """CPU ms of the serving processes per /healthz request."""
    cpu0 = _cpu(e)
    _lat, errors = _drive(n, 8, lambda s, _i: s.get(e.web.url + "/healthz", timeout=30).ok)
    assert errors == 0
    return (_cpu(e) - cpu0) * 1000 / n


def test_thousand_viewers_push_then_polling(push_env: PushEnv) -> None:
    e = push_env
    per_min = lambda cpu, dur, n: cpu / (n / 1000) / (dur / 60)  # noqa: E731
    healthz_ms = _healthz_cost(e)
    bench("healthz_cpu_ms_per_request", healthz_ms, "ms", cpu_count=os.cpu_count())
    # what the cheapest poll costs at the viewers' rate: one /healthz per viewer per tick
    healthz_per_min = healthz_ms / 1000 * (60 / REFRESH_S) * 1000

    pushed = _run(_push_run(e))
    assert pushed["open"] > 0 and pushed["lat"], "no stream delivered"
    push_cpu = per_min(pushed["cpu"], pushed["dur"], pushed["open"])
    bench(
        "push_tick_to_screen_ms",
        pct(pushed["lat"], 50),
        "ms",
        p95=pct(pushed["lat"], 95),
        max=max(pushed["lat"]),
        viewers=pushed["open"],
        ticks=TICKS,
        missed=pushed["missed"],
        errors=pushed["errors"],
        open_failures=pushed["failed"],
        refresh_s=REFRESH_S,
        payload_bytes=pushed["bytes"],
        first_viewer_ms_median=median(pushed["first"]) if pushed["first"] else None,
        per_tick_first_p50_max_ms=pushed["per_tick"],
        client_cpu_s_per_tick=pushed["client_cpu"] / TICKS,
        push_server_cpu_s_per_tick=pushed["push_cpu"] / TICKS,
        web_server_cpu_s_per_tick=(pushed["cpu"] - pushed["push_cpu"]) / TICKS,
        cpu_count=os.cpu_count(),
        loadavg_1m=os.getloadavg()[0],  # other work on the machine shows here
        note="tick-to-receipt; the clients run in the bench process, on the same 2 CPUs",
    )
    steps = _server_steps(e)
    if steps:
        bench("push_server_steps", steps.get("fanout_ms_mean", 0.0), "ms", **steps)
    bench(
        "push_cpu_s_per_1000_viewers_min",
        push_cpu,
        "cpu_s",
        baseline=healthz_per_min,
        ratio=round(push_cpu / healthz_per_min, 3) if healthz_per_min else None,
        note="baseline: /healthz once per viewer per tick on the same servers",
    )

    cookie = {"wg_session": e.cookies[0].split("=", 1)[1]}
    spec = refresh_spec(e.web.url, cookie)
    body = refresh_body(spec, CITY_ID, 1)
    polled = _run(_poll_run(e, body, TICKS * REFRESH_S))
    poll_cpu = per_min(polled["cpu"], polled["dur"], len(e.cookies))
    bench(
        "poll_fallback_latency_ms",
        pct(polled["lat"], 50),
        "ms",
        p95=pct(polled["lat"], 95),
        requests=len(polled["lat"]),
        errors=polled["errors"],
        viewers=len(e.cookies),
        cpu_s_per_1000_viewers_min=poll_cpu,
        baseline_push_cpu_s=push_cpu,
        ratio_poll_to_push_cpu=round(poll_cpu / push_cpu, 3) if push_cpu else None,
    )


def test_refresh_throughput_by_web_workers(push_env: PushEnv) -> None:
    """1 → 2 → 4 gunicorn workers: closed-loop refreshes of the city panorama."""
    e = push_env
    n = int(os.environ.get("WANGGE_BENCH_PUSH_WORKERS_N", "1500"))
    cookie = {"wg_session": e.cookies[0].split("=", 1)[1]}
    rates: dict[int, float] = {}
    for workers in (1, 2, 4):
        port = _free_port()
        env = {**e.env, "WANGGE_DASHBOARD_WORKERS": str(workers)}
        log = e.tmp / f"workers-{workers}.log"
        p = _start(gunicorn_command("127.0.0.1", port), env, port, "/healthz", log)
        try:
            spec = refresh_spec(p.url, cookie)
            headers = {"Content-Type": "application/json", "Origin": p.url}

            def call(
                s: requests.Session, i: int, p: Proc = p, spec: Any = spec, headers: Any = headers
            ) -> bool:
                r = s.post(
                    p.url + "/_dash-update-component",
                    data=refresh_body(spec, CITY_ID, i),
                    headers=headers,
                    cookies=cookie,
                    timeout=60,
                )
                return r.status_code == 200 and "response" in orjson.loads(r.content)

            _drive(200, 16, call)  # warm: every worker has built its app
            t = time.perf_counter()
            lat, errors = _drive(n, 32, call)
            rates[workers] = n / (time.perf_counter() - t)
            bench(
                f"workers_refresh_rps_{workers}",
                rates[workers],
                "req/s",
                p50_ms=pct(lat, 50),
                p95_ms=pct(lat, 95),
                errors=errors,
                baseline=rates[1],
                ratio=round(rates[workers] / rates[1], 3),
                cpu_count=os.cpu_count(),
            )
        finally:
            p.stop()
