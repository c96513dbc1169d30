"""Serving benchmarks (issue "Serve a thousand screens"): the production serving path
(gunicorn gthread, ``dashboard/gunicorn_conf.py``, per-tick responses built once, static
files compressed once) against the old one (werkzeug's threaded server, one process) and
against gunicorn's sync workers, in the same run on the same data.

Run with ``.venv/bin/python -m pytest -q -s tests/bench/test_serving_bench.py
-p no:cacheprovider``. Every figure is one ``BENCH {json}`` line with its same-run
baseline and ratio; nothing here asserts a time (only correctness: status 200, panels not
stale, no errors in the load).

Setup (once per module): the full demo city, ``WANGGE_BENCH_SERVE_EVENTS`` simulated
events processed by the real feed workers into a private Redis prefix and a SQLite file,
one clock tick; then both servers as subprocesses on that data (``wangge run``'s gunicorn
command with a free port, and ``tests/bench/_werkzeug_server.py``). Request bodies are
built from the server's own ``/_dash-dependencies``.

Figures:

* ``serve_cost_ms_per_request_{gunicorn,werkzeug}``: server CPU (every process of the
  server) per request of the city panorama's refresh, ``baseline`` the same for
  ``/healthz`` in the same run, ``ratio`` refresh / healthz (target ≤ 2 on gunicorn);
* ``serve_saturation_rps_{gunicorn,gunicorn_sync,werkzeug}`` and
  ``serve_saturation_ratio``: city panorama refreshes answered per second by 32 clients
  without pause (closed loop; the clients run on the same CPUs), ``viewers_at_3s`` the
  viewers that rate serves at a 3 s refresh;
* ``viewers_city_panorama_{werkzeug,gunicorn_sync,gunicorn}`` and
  ``viewers_city_panorama_ratio_vs_{werkzeug,gunicorn_sync}``:
  ``WANGGE_BENCH_SERVE_VIEWERS`` viewers each polling the city panorama every 3 s for
  ``WANGGE_BENCH_SERVE_S`` seconds: latency p50/p95, errors, achieved rate, server CPU
  per request; the ratio lines are gunicorn (gthread) over the old path and over the same
  configuration with sync workers (``-k sync``: no keep-alive);
* ``first_load_bytes``: every GET the panorama's first load makes (the list from a real
  Chromium load when one is installed, else the page's scripts and CSS plus Dash's layout
  and dependencies), fetched again as a browser would with ``Accept-Encoding: gzip, br``
  (and ``gzip`` alone): bytes on the wire. ``baseline``: the same requests as the old
  server answered them (the full ``plotly.min.js`` instead of the basic bundle; scripts
  and CSS compressed per request with Flask-Compress's defaults, brotli quality 4 / gzip
  level 6), computed from the same raw bytes. Target ≤ 800 KB.
"""

from __future__ import annotations

import gzip
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import brotli
import orjson
import psutil
import pytest
import redis
import requests

from dashboard import ids
from pipelines.access import accounts, audit
from pipelines.city.geography import demo_cache_path, load_city
from pipelines.cli.web import gunicorn_command
from pipelines.settings import GeoSettings, child_environ
from pipelines.spine import store
from tests.bench.test_dashboard_bench import (
    BENCH_PASSWORD,
    BENCH_USER,
    CHROMIUM,
    PAN_PROBE,
    _fill_live_state,
    bench,
    browser_login,
    chromium,
    http_login,
    pct,
    wait_rendered,
)
from tests.conftest import TEST_AUDIT_KEY, settings_for

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = int(os.environ.get("WANGGE_BENCH_SERVE_EVENTS", "60000"))
VIEWERS = int(os.environ.get("WANGGE_BENCH_SERVE_VIEWERS", "300"))
VIEWERS_S = float(os.environ.get("WANGGE_BENCH_SERVE_S", "30"))
COST_N = int(os.environ.get("WANGGE_BENCH_SERVE_COST_N", "400"))
SAT_N = int(os.environ.get("WANGGE_BENCH_SERVE_SAT_N", "3000"))
SAT_CLIENTS = 32
PERIOD_S = 3.0
CITY_ID = "320100"
BROWSER = {"Accept-Encoding": "gzip, deflate, br", "Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    kind: str
    url: str
    proc: subprocess.Popen[bytes]

    def cpu_s(self) -> float:
        """CPU seconds of the server's every process so far (children that ended are not
        counted: none end during a figure)."""
        total = 0.0
        try:
            me = psutil.Process(self.proc.pid)
            for p in [me, *me.children(recursive=True)]:
                with_times = p.cpu_times()
                total += with_times.user + with_times.system
        except psutil.NoSuchProcess:
            pass
        return total


@dataclass
class ServeEnv:
    servers: dict[str, Server]
    loaded: dict[str, Any]
    tmp: Path


def _start(kind: str, cmd: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() - t0 < 120, f"{kind} did not start"
        time.sleep(0.3)
    return Server(kind, url, proc)


@pytest.fixture(scope="module")
def serve_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeEnv]:
    city = load_city(GeoSettings())
    prefix = f"wgbench-serve-{uuid.uuid4().hex[:8]}"
    tmp = tmp_path_factory.mktemp("servebench")
    db_url = f"sqlite:///{tmp / 'wangge.db'}"
    settings = settings_for(redis_url, prefix, (db_url, None), tmp)
    engine = audit.keyed(store.make_engine(db_url), TEST_AUDIT_KEY)
    store.create_schema(engine)
    r = redis.Redis.from_url(redis_url)
    servers: dict[str, Server] = {}
    try:
        loaded, clock = _fill_live_state(settings, city, r, engine, N_EVENTS)
        accounts.create_user(
            engine,
            city,
            BENCH_USER,
            "city_leader",
            city.city_id,
            password=BENCH_PASSWORD,
            now_ms=int(clock() * 1000),
        )
        env = child_environ(
            REDIS_URL=redis_url,
            DATABASE_URL=db_url,
            WANGGE_DATABASE_SCHEMA="",
            WANGGE_REDIS_PREFIX=prefix,
            WANGGE_GEO_CACHE_DIR=str(demo_cache_path(GeoSettings()).parent),
            WANGGE_RUN_VAR_DIR=str(tmp),
            WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
            WANGGE_DASHBOARD_ACCESS_LOG="",
        )
        port = _free_port()
        servers["gunicorn"] = _start(
            "gunicorn", gunicorn_command("127.0.0.1", port), env, port, tmp / "gunicorn.log"
        )
        port = _free_port()  # the same configuration with sync workers (no keep-alive)
        cmd = [*gunicorn_command("127.0.0.1", port), "-k", "sync"]
        servers["gunicorn_sync"] = _start("gunicorn_sync", cmd, env, port, tmp / "sync.log")
        port = _free_port()
        cmd = [sys.executable, "-m", "tests.bench._werkzeug_server", str(port)]
        servers["werkzeug"] = _start("werkzeug", cmd, env, port, tmp / "werkzeug.log")
        yield ServeEnv(servers, loaded, tmp)
    finally:
        for s in servers.values():
            s.proc.terminate()
        for s in servers.values():
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(5)
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for i in range(0, len(keys), 1000):
            r.unlink(*keys[i : i + 1000])
        r.close()
        engine.dispose()


# ---------------------------------------------------------------------------- requests


def refresh_spec(base: str, cookies: Any) -> dict[str, Any]:
    """The panorama refresh's entry in the server's own ``/_dash-dependencies``."""
    deps = requests.get(base + "/_dash-dependencies", cookies=cookies, timeout=60).json()
    return next(d for d in deps if d["output"].startswith(f"..{ids.P_GEO}.hideout..."))


def refresh_body(spec: dict[str, Any], area: str, n: int) -> bytes:
    """What dash-renderer POSTs for the city panorama's refresh (metric "open")."""
    values_in: list[Any] = [n, "open", []]
    values_st: list[Any] = [area, None, "zh-CN", None]  # the last: live (no ?at=)
    ins = [{**i, "value": v} for i, v in zip(spec["inputs"], values_in, strict=True)]
    sts = [{**s, "value": v} for s, v in zip(spec["state"], values_st, strict=True)]
    outs = [
        {"id": o.split(".")[0], "property": o.split(".")[1]}
        for o in spec["output"][2:-2].split("...")
    ]
    body = {
        "output": spec["output"],
        "outputs": outs,
        "inputs": ins,
        "state": sts,
        "changedPropIds": [f"{ins[0]['id']}.{ins[0]['property']}"],
    }
    return orjson.dumps(body)


def _ok_refresh(resp: requests.Response) -> bool:
    return resp.status_code == 200 and resp.json()["response"][ids.P_STALE]["children"] == ""


def _drive(
    n: int, workers: int, call: Callable[[requests.Session, int], bool]
) -> tuple[list[float], int]:
    """``n`` calls from ``workers`` threads, each with its own keep-alive session."""
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(n))

    def run() -> None:
        nonlocal errors
        with requests.Session() as s:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t = time.perf_counter()
                try:
                    ok = call(s, i)
                except (requests.RequestException, ValueError, KeyError):
                    ok = False
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt)
                    errors += 0 if ok else 1

    threads = [threading.Thread(target=run, daemon=True) for _ in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return lat, errors


# ---------------------------------------------------------------------------- figures


def test_serve_cost_per_request_vs_healthz(serve_env: ServeEnv) -> None:
    saturation: dict[str, float] = {}
    for kind, server in serve_env.servers.items():
        base = server.url
        cookies = http_login(base)
        spec = refresh_spec(base, cookies)
        endpoint = base + "/_dash-update-component"

        def refresh(
            s: requests.Session, i: int, e: str = endpoint, sp: Any = spec, c: Any = cookies
        ) -> bool:
            s.cookies.update(c)
            resp = s.post(e, data=refresh_body(sp, CITY_ID, i), headers=BROWSER, timeout=30)
            return _ok_refresh(resp)

        def health(s: requests.Session, _i: int, b: str = base) -> bool:
            return s.get(b + "/healthz", headers=BROWSER, timeout=30).status_code == 200

        _drive(40, 4, refresh)  # warm-up: every worker built its caches
        _drive(40, 4, health)
        cpu0 = server.cpu_s()
        h_lat, h_err = _drive(COST_N, 4, health)
        cpu1 = server.cpu_s()
        r_lat, r_err = _drive(COST_N, 4, refresh)
        cpu2 = server.cpu_s()
        health_ms = (cpu1 - cpu0) * 1000 / COST_N
        refresh_ms = (cpu2 - cpu1) * 1000 / COST_N
        bench(
            f"serve_cost_ms_per_request_{kind}",
            refresh_ms,
            "ms cpu",
            what="server CPU per city panorama refresh (4 keep-alive clients)",
            baseline=health_ms,
            baseline_what="server CPU per /healthz, same clients, same run",
            ratio=round(refresh_ms / health_ms, 2) if health_ms else None,
            latency_p50_ms=pct(r_lat, 50),
            latency_p95_ms=pct(r_lat, 95),
            healthz_p50_ms=pct(h_lat, 50),
            n=COST_N,
            errors=r_err + h_err,
            target="ratio <= 2 (gunicorn)",
        )
        assert r_err == 0 and h_err == 0
        # closed loop: as many refreshes as SAT_CLIENTS keep-alive clients get answered
        t0 = time.perf_counter()
        s_lat, s_err = _drive(SAT_N, SAT_CLIENTS, refresh)
        saturation[kind] = SAT_N / (time.perf_counter() - t0)
        bench(
            f"serve_saturation_rps_{kind}",
            saturation[kind],
            "refreshes/s",
            what=f"city panorama refreshes answered per second, {SAT_CLIENTS} clients "
            "without pause (the clients share the machine's CPUs)",
            p50_ms=pct(s_lat, 50),
            p95_ms=pct(s_lat, 95),
            n=SAT_N,
            errors=s_err,
            viewers_at_3s=round(saturation[kind] * PERIOD_S),
        )
    old = saturation["werkzeug"]
    bench(
        "serve_saturation_ratio",
        saturation["gunicorn"] / old,
        "gunicorn/werkzeug",
        baseline=old,
        gunicorn_sync=round(saturation["gunicorn_sync"] / old, 3),
    )


def _viewers(server: Server) -> dict[str, Any]:
    base = server.url
    cookies = http_login(base)
    spec = refresh_spec(base, cookies)
    endpoint = base + "/_dash-update-component"
    results: list[tuple[float, bool]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.monotonic() + 1.0
    end = start + VIEWERS_S

    def viewer(i: int) -> None:
        s = requests.Session()
        s.cookies.update(cookies)
        t_next = start + (i % 100) * PERIOD_S / 100
        n = 0
        mine: list[tuple[float, bool]] = []
        while True:
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= end:
                break
            n += 1
            t = time.monotonic()
            ok = False
            try:
                resp = s.post(
                    endpoint, data=refresh_body(spec, CITY_ID, n), headers=BROWSER, timeout=20
                )
                ok = _ok_refresh(resp)
                if not ok:
                    with lock:
                        errors.append(f"{resp.status_code} {resp.text[:100]}")
            except (requests.RequestException, ValueError, KeyError) as exc:
                with lock:
                    errors.append(repr(exc)[:100])
            mine.append(((time.monotonic() - t) * 1000, ok))
            t_next += PERIOD_S
        s.close()
        with lock:
            results.extend(mine)

    cpu0 = server.cpu_s()
    threads = [threading.Thread(target=viewer, args=(i,), daemon=True) for i in range(VIEWERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(VIEWERS_S + 60)
    elapsed = time.monotonic() - start
    cpu = server.cpu_s() - cpu0
    lat = [r[0] for r in results]
    return {
        "p50": pct(lat, 50),
        "p95": pct(lat, 95),
        "p99": pct(lat, 99),
        "n": len(lat),
        "errors": len(errors),
        "first_errors": errors[:3],
        "offered_rps": VIEWERS / PERIOD_S,
        "achieved_rps": len(lat) / elapsed,
        "server_cpu_ms_per_request": cpu * 1000 / max(len(lat), 1),
        "server_cpu_cores": cpu / elapsed,
    }


def test_viewers_city_panorama_old_vs_new(serve_env: ServeEnv) -> None:
    got = {}
    for kind in ("werkzeug", "gunicorn_sync", "gunicorn"):
        got[kind] = _viewers(serve_env.servers[kind])
        bench(
            f"viewers_city_panorama_{kind}",
            got[kind]["p95"],
            "ms",
            viewers=VIEWERS,
            period_s=PERIOD_S,
            duration_s=VIEWERS_S,
            machine_load_1m=os.getloadavg()[0],
            cpus=os.cpu_count(),
            **got[kind],
        )
    new = got["gunicorn"]
    for base in ("werkzeug", "gunicorn_sync"):
        old = got[base]

        def ratio(k: str, old: dict[str, Any] = old) -> float | None:
            return round(new[k] / old[k], 3) if old[k] else None

        bench(
            f"viewers_city_panorama_ratio_vs_{base}",
            ratio("p95") or 0.0,
            f"gunicorn/{base}",
            what="the serving path (gthread) over another, same viewers, same run",
            p50=ratio("p50"),
            p95=ratio("p95"),
            server_cpu_ms_per_request=ratio("server_cpu_ms_per_request"),
            achieved_rps=ratio("achieved_rps"),
            errors_new=new["errors"],
            errors_old=old["errors"],
        )
    assert new["errors"] == 0, new["first_errors"]


# ---------------------------------------------------------------------------- first load


STATIC = ("/_dash-component-suites/", "/assets/")


def _plotly_full() -> bytes:
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()


def _page_urls(base: str, cookies: Any) -> list[str]:
    """Without a browser: the page's scripts and stylesheets, Dash's layout, dependencies
    and the lazily loaded chunks of the components the panorama draws."""
    html = requests.get(base + "/", cookies=cookies, timeout=30).text
    found = re.findall(r'<script[^>]+src="([^"]+)"', html)
    found += re.findall(r'<link[^>]+href="([^"]+\.css[^"]*)"', html)
    found += ["/_dash-layout", "/_dash-dependencies"]
    return [base + "/"] + [urljoin(base + "/", u) for u in found]


def _browser_urls(base: str) -> tuple[list[str], dict[str, str]]:
    """The GETs of a real first load of the panorama (Chromium), and its cookies."""
    driver = chromium(probe=PAN_PROBE)
    try:
        browser_login(driver, base)
        driver.get(base + "/")
        wait_rendered(driver)
        time.sleep(0.5)
        entries = driver.execute_script(
            "return performance.getEntriesByType('navigation')"
            ".concat(performance.getEntriesByType('resource'))"
            ".map(function (e) { return [e.name, e.initiatorType || 'navigation']; });"
        )
        cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
    finally:
        driver.quit()
    urls = [u for u, _kind in entries if "_dash-update-component" not in u]
    return urls, cookies


def _wire(url: str, cookies: Any, accept: str) -> tuple[int, bytes, str, str]:
    """(bytes on the wire, decoded body, content type, encoding) of one GET."""
    resp = requests.get(
        url, cookies=cookies, headers={"Accept-Encoding": accept}, timeout=60, stream=True
    )
    wire = resp.raw.read(decode_content=False)
    resp.close()
    assert resp.status_code == 200, (url, resp.status_code)
    enc = resp.headers.get("Content-Encoding", "")
    if enc == "gzip":
        raw = gzip.decompress(wire)
    elif enc == "br":
        raw = brotli.decompress(wire)
    else:
        raw = wire
    return len(wire), raw, resp.headers.get("Content-Type", ""), enc


def _old(path: str, raw: bytes, ctype: str, accept: str, wire: int) -> int:
    """What the old server sent for this GET: static files compressed per request with
    Flask-Compress's defaults, the full plotly.js instead of the basic bundle."""
    if not path.startswith(STATIC):
        return wire  # the same route as before (pages, layout, geometry)
    if "plotly-basic" in path:
        raw = _plotly_full()
    compressible = any(k in ctype for k in ("javascript", "css", "json"))
    if not compressible or len(raw) < 500:
        return len(raw)
    if "br" in accept:
        return len(brotli.compress(raw, quality=4))
    return len(gzip.compress(raw, compresslevel=6))


def test_first_load_bytes_compressed(serve_env: ServeEnv) -> None:
    base = serve_env.servers["gunicorn"].url
    source = "chromium"
    if Path(CHROMIUM).exists():
        urls, cookies = _browser_urls(base)
    else:
        source = "html"
        cookies = http_login(base)
        urls = _page_urls(base, cookies)
    for accept, name in (("gzip, deflate, br", "first_load_bytes"), ("gzip", "first_load_gz")):
        for _ in range(3):  # every worker compressed each file once (best brotli: on disk)
            for u in urls:
                _wire(u, cookies, accept)
            time.sleep(3.0)
        rows = []
        for u in urls:
            wire, raw, ctype, enc = _wire(u, cookies, accept)
            path = "/" + u.split("/", 3)[-1] if u.count("/") >= 3 else "/"
            rows.append((path, wire, len(raw), _old(path, raw, ctype, accept, wire), enc))
        new = sum(r[1] for r in rows)
        old = sum(r[3] for r in rows)
        top = sorted(rows, key=lambda r: -r[1])[:12]
        bench(
            name,
            new,
            "bytes",
            accept_encoding=accept,
            baseline=old,
            baseline_what="the same GETs as the old server sent them (full plotly.js, "
            "Flask-Compress per request)",
            ratio=round(new / old, 3) if old else None,
            decoded_bytes=sum(r[2] for r in rows),
            requests=len(rows),
            urls_from=source,
            largest=[{"path": r[0][:70], "wire": r[1], "old": r[3], "enc": r[4]} for r in top],
            target="<= 800 KB (gzip, br)",
        )
