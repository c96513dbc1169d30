"""Faults while events flow, with real processes: Redis paused (SIGSTOP … SIGCONT) and
killed and restarted on the same port and data directory, PostgreSQL cut off behind a TCP
proxy and restored. Afterwards the oracle of the crash test (computed from the published
input and the README's rules alone) equals Redis and SQL — nothing lost, nothing counted
twice — and the same worker processes carried on by themselves (none was restarted).
The dashboard shows the fault (stale mark, freshness line, /readyz 503) and recovers
within 10 s of the end of the fault.

Fault lengths are short by default; ``WANGGE_TEST_FAULT_S`` sets them (seconds)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis
from dash import no_update
from flask import session
from sqlalchemy import Engine, create_engine, text

from dashboard.app import create_app, page_module
from pipelines.access import accounts
from pipelines.city import simulator as simulate
from pipelines.city.geography import GridIndex, load_city
from pipelines.dispatch.flows import flows_for
from pipelines.embedded import redis_server_binary
from pipelines.ops.health import OpsServer
from pipelines.settings import GeoSettings, Settings, load_settings
from pipelines.spine import health, store
from pipelines.spine.streams import ensure_group
from tests.clock import MOMENTS, Clock
from tests.conftest import (
    TEST_AUDIT_KEY,
    open_engine,
    private_database,
    start_session,
    stop_processes,
)
from tests.integration.oracle import Entry, expected
from tests.integration.test_crash import _drained, _env, _spawn, adversarial, check
from tests.netproxy import Proxy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.system]

FAULT_S = float(os.environ.get("WANGGE_TEST_FAULT_S", "3"))
RECOVER_S = 10.0  # the dashboard is fresh again within this long after a fault ends
N_EVENTS = 6000
FEEDS = ("reports", "locations", "video")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


# ------------------------------------------------------------------ a private Redis


class PrivateRedis:
    """A redis-server of the test's own, durable (AOF, fsync on every write: a kill -9
    loses nothing acknowledged), that can be paused, killed and started again on the same
    port and data directory."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c = redis.Redis.from_url(self.url, socket_timeout=2)
        deadline = time.monotonic() + 15
        while True:
            try:
                if c.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError):
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)
        c.close()
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.kill()


@dataclasses.dataclass
class Feeds:
    streams: dict[str, list[Entry]]
    ids: dict[str, list[str]]  # the entry id each entry gets (explicit: retries are safe)
    city: Any
    cams: dict[str, tuple[float, float]]


def make_input(settings: Settings, tmp: Path, seed: int = 7) -> Feeds:
    city = load_city(dataclasses.replace(GeoSettings(), grids=400, cache_dir=str(tmp / "geo")))
    cfg = dataclasses.replace(settings.simulate, workers=300, cameras=60, seed=seed)
    probe = simulate.Simulator(city, cfg, flows_for(settings), start_ms=0)
    now_ms = int(time.time() * 1000)
    events = simulate.generate(
        # 20 days back: the adversarial input moves alert ids up to 3 days later, never
        # into the future
        city, cfg, flows_for(settings), now_ms - 20 * 86_400_000, N_EVENTS,
        mix={"locations": 0.5, "reports": 0.4, "video": 0.1},
    )  # fmt: skip
    streams = adversarial(events, city, now_ms, seed, garbage_run=60)
    base = now_ms - 60_000
    ids = {f: [f"{base}-{k + 1}" for k in range(len(e))] for f, e in streams.items()}
    cams = {c: (lon, lat) for c, lon, lat in probe.cameras.select("camera_id", "lon", "lat").rows()}
    return Feeds(streams, ids, city, cams)


class Publisher(threading.Thread):
    """Publishes every stream's entries in small chunks, round robin, with explicit ids:
    a chunk retried after a connection error re-adds only what Redis does not hold yet."""

    def __init__(self, url: str, prefix: str, feeds: Feeds, chunk: int = 40) -> None:
        super().__init__(daemon=True)
        self.r = redis.Redis.from_url(url, socket_connect_timeout=1)
        self.prefix, self.feeds, self.chunk = prefix, feeds, chunk
        self.sent = {f: 0 for f in feeds.streams}
        self.error: BaseException | None = None

    def share(self) -> float:
        total = sum(len(e) for e in self.feeds.streams.values())
        return sum(self.sent.values()) / total

    def run(self) -> None:
        try:
            while any(self.sent[f] < len(e) for f, e in self.feeds.streams.items()):
                for feed, entries in self.feeds.streams.items():
                    i = self.sent[feed]
                    if i < len(entries):
                        self._send(feed, i, min(len(entries), i + self.chunk))
                        self.sent[feed] = min(len(entries), i + self.chunk)
                time.sleep(0.1)
        except BaseException as exc:
            self.error = exc

    def _send(self, feed: str, lo: int, hi: int) -> None:
        key = f"{self.prefix}:{feed}"
        while True:
            try:
                pipe = self.r.pipeline(transaction=False)
                for k in range(lo, hi):
                    fields, _ = self.feeds.streams[feed][k]
                    pipe.xadd(key, fields, id=self.feeds.ids[feed][k])  # type: ignore[arg-type]
                for res in pipe.execute(raise_on_error=False):
                    if isinstance(res, redis.ResponseError) and "equal or smaller" not in str(res):
                        raise res
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.2)  # Redis away: the same chunk again (explicit ids)


# ------------------------------------------------------------------ the run


@contextmanager
def pipelines(
    env: dict[str, str], r: redis.Redis, prefix: str, group: str
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """One worker process per feed, yielded once each reads its stream (a fault before
    that would test the start-up, not the recovery)."""
    procs = {f"{f}-1": _spawn(env, f, f"{f}-1") for f in FEEDS}
    try:

        def up() -> bool:
            for name, p in procs.items():
                assert p.poll() is None, f"{name} did not start"
                key = f"{prefix}:{name.rsplit('-', 1)[0]}"
                if name.encode() not in {c["name"] for c in r.xinfo_consumers(key, group)}:
                    return False
            return True

        wait_for(up, 40, "the workers did not start")
        yield procs
    finally:
        stop_processes(procs.values())


def wait_drained(
    r: redis.Redis, prefix: str, group: str, procs: dict[str, Any], pub: Publisher, limit_s: float
) -> None:
    t0 = time.monotonic()
    while pub.is_alive() or not _drained(r, prefix, group):
        assert pub.error is None, pub.error
        assert time.monotonic() - t0 < limit_s, "the pipelines did not drain in time"
        for n, p in procs.items():  # recovered by itself: the same process, never restarted
            if p.poll() is not None:
                err = p.stderr.read().decode() if p.stderr else ""
                i = err.find("Traceback")
                raise AssertionError(f"{n} died: {err[i : i + 1500]} … {err[-600:]}")
        time.sleep(0.3)
    assert pub.error is None, pub.error


def retried(procs: dict[str, subprocess.Popen[bytes]]) -> int:
    """Batches the (stopped) workers logged as failed and retried: the fault reached them."""
    return sum(
        (p.stderr.read().decode() if p.stderr else "").count("retrying the batch")
        for p in procs.values()
    )


def wait_for(cond: Callable[[], bool], limit_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < limit_s, what
        time.sleep(0.1)
    return time.monotonic() - t0


def verify(url: str, prefix: str, settings: Settings, engine: Engine, feeds: Feeds) -> None:
    """Redis == SQL == the oracle of the published input (the crash test's check)."""
    exp = expected(
        feeds.streams, feeds.ids, feeds.city, GridIndex(feeds.city), feeds.cams,
        settings.live.timezone, settings.pipelines.persist_tracks_every_s,
    )  # fmt: skip
    r = redis.Redis.from_url(url)
    try:
        check(r, prefix, settings, engine, exp)
        for feed, entries in feeds.streams.items():  # every published entry is in its stream
            assert r.xlen(f"{prefix}:{feed}") == len(entries)
    finally:
        r.close()


def seed_cameras(engine: Engine, feeds: Feeds) -> None:
    rows = [
        {"camera_id": k, "lon": v[0], "lat": v[1], "grid_id": ""} for k, v in feeds.cams.items()
    ]
    with engine.begin() as c:
        store.insert_ignore(c, store.cameras, rows)


def test_redis_paused_and_restarted_while_events_flow(
    db_url: Any, engine: Engine, tmp_path: Path
) -> None:
    server = PrivateRedis(tmp_path / "redis").start()
    prefix = "wgfault"
    try:
        env = _env(server.url, prefix, db_url, tmp_path / "geo")
        env["WANGGE_AUTH_AUDIT_KEY"] = TEST_AUDIT_KEY
        settings = load_settings(environ=env)
        feeds = make_input(settings, tmp_path)
        seed_cameras(engine, feeds)
        r = redis.Redis.from_url(server.url)
        for feed in FEEDS:
            ensure_group(r, f"{prefix}:{feed}", settings.streams.group)
        # the dashboard on the same Redis (its client times out after 1 s)
        clock = Clock(MOMENTS[0].ms)
        r_dash = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        app = create_app(settings, city=feeds.city, r=r_dash, clock=clock)
        web = app.server.test_client()
        refresh = page_module("panorama").refresh
        city_id = feeds.city.city_id

        accounts.create_user(
            engine, feeds.city, "tester", "city_leader", city_id, "pw-unused-1", now_ms=clock.now_ms
        )
        sid = start_session(app.server, "city_leader", city_id, "tester")

        def panel(last_ok: Any) -> Any:
            """One viewer's refresh of the city panel, at a later tick (nothing cached)."""
            clock.advance(60_000)
            app.server.extensions["wangge"].cache.local.clear()
            with app.server.test_request_context("/"):
                session["sid"] = sid
                return refresh(0, "open", [], city_id, last_ok, "en")

        ok = panel(None)
        assert ok[9] == "" and web.get("/readyz").status_code == 200
        last_ok = ok[11]
        with pipelines(env, r, prefix, settings.streams.group) as procs:
            pub = Publisher(server.url, prefix, feeds)
            pub.start()
            wait_for(lambda: pub.share() > 0.3, 30, "publishing stalled")
            assert pub.share() < 1.0  # mid-stream: events still being published
            # 1. paused: every client blocks; the dashboard shows stale, /readyz says why
            server.signal(signal.SIGSTOP)
            t_end = time.monotonic() + FAULT_S
            stale = panel(last_ok)
            assert stale[0] is no_update and "stale since" in str(stale[9])
            down = web.get("/readyz")
            assert down.status_code == 503
            assert down.json["checks"]["redis"].startswith("unreachable"), down.json
            time.sleep(max(0.0, t_end - time.monotonic()))
            server.signal(signal.SIGCONT)
            took = wait_for(lambda: panel(last_ok)[9] == "", RECOVER_S, "dashboard still stale")
            assert web.get("/readyz").status_code == 200 and took < RECOVER_S
            # 2. killed (kill -9) and started again on the same port and data directory
            wait_for(lambda: pub.share() > 0.6, 30, "publishing stalled after the pause")
            # mid-stream again: events still being published (the workers may well be
            # keeping up with them, so the streams can be momentarily drained)
            assert pub.share() < 1.0
            server.kill()
            assert web.get("/readyz").status_code == 503
            time.sleep(FAULT_S / 2)
            server.start()
            wait_for(lambda: web.get("/readyz").status_code == 200, RECOVER_S, "not ready again")
            wait_drained(r, prefix, settings.streams.group, procs, pub, limit_s=45)
        assert retried(procs) >= 1  # the restart broke their connections; they carried on
        r.close()
        r_dash.close()
        verify(server.url, prefix, settings, engine, feeds)
    finally:
        server.stop()


def _pg_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else PG_URL


def _pg_reachable(url: str) -> bool:
    from tests.conftest import _pg_url as driver_url

    try:
        eng = create_engine(driver_url(url), connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("SELECT 1"))
        eng.dispose()
        return True
    except Exception:
        return False


def test_postgres_cut_off_while_events_flow(
    redis_url: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg = _pg_url()
    if not _pg_reachable(pg):
        pytest.skip(f"no PostgreSQL at {pg.split('@')[-1]}")
    monkeypatch.setenv("DATABASE_URL", pg)
    rest, hostport_db = pg.rsplit("@", 1)
    hostport, db_name = hostport_db.split("/", 1)
    host, _, port = hostport.partition(":")
    proxy = Proxy((host, int(port or 5432)))
    try:
        with private_database(tmp_path) as (url, schema):
            direct = open_engine((url, schema))  # the test's own view, not through the proxy
            via = f"{rest}@127.0.0.1:{proxy.port}/{db_name}"
            env = _env(redis_url, prefix, (via, schema), tmp_path / "geo")
            env |= {
                "WANGGE_AUTH_AUDIT_KEY": TEST_AUDIT_KEY,
                "WANGGE_LIVE_STALE_PENDING_S": "2",  # stale quickly, for a short test
                "WANGGE_LIVE_STALE_LAG": "300",
            }
            settings = load_settings(environ=env)
            feeds = make_input(settings, tmp_path, seed=11)
            seed_cameras(direct, feeds)
            r = redis.Redis.from_url(redis_url)
            for feed in FEEDS:
                ensure_group(r, f"{prefix}:{feed}", settings.streams.group)
            # the pipelines' readiness, on an engine through the proxy
            through = open_engine((via, schema))
            ops_settings = dataclasses.replace(
                settings, metrics=dataclasses.replace(settings.metrics, pipelines_port=0)
            )
            ops = OpsServer(ops_settings, r, through, feeds.city).start()

            def ready() -> int:
                import urllib.error
                import urllib.request

                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ops.port}/readyz", timeout=10):
                        return 200
                except urllib.error.HTTPError as exc:
                    return exc.code

            def stale_feeds() -> set[str]:
                now = int(time.time() * 1000)
                rows = health.freshness_rows(
                    health.read_health(r, settings, now), health.thresholds_of(settings), now
                )
                return {row["feed"] for row in rows if row["why"]}

            try:
                with pipelines(env, r, prefix, settings.streams.group) as procs:
                    pub = Publisher(redis_url, prefix, feeds)
                    pub.start()
                    wait_for(lambda: pub.share() > 0.4, 30, "publishing stalled")
                    assert pub.share() < 1.0  # mid-stream: events still being published
                    proxy.cut()
                    assert ready() == 503
                    # the pipelines cannot commit: the feeds turn stale on the dashboard
                    wait_for(lambda: bool(stale_feeds()), FAULT_S + 10, "never shown stale")
                    time.sleep(FAULT_S)
                    proxy.restore()
                    t0 = time.monotonic()
                    wait_for(lambda: ready() == 200, RECOVER_S, "not ready again")
                    wait_drained(r, prefix, settings.streams.group, procs, pub, limit_s=45)
                    left = RECOVER_S - (time.monotonic() - t0)
                    wait_for(lambda: not stale_feeds(), max(left, 0.5), "still stale")
                assert retried(procs) >= 1  # the cut reached them; they carried on
            finally:
                ops.stop()
                through.dispose()
            r.close()
            verify(redis_url, prefix, settings, direct, feeds)
            direct.dispose()
    finally:
        proxy.close()


def test_proxy_cut_refuses_and_restore_serves() -> None:
    """The test's own tool: a cut proxy drops and refuses, a restored one serves again."""
    echo = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                c, _ = echo.accept()
            except OSError:
                return
            threading.Thread(
                target=lambda c=c: [c.sendall(d) for d in iter(lambda: c.recv(99), b"")],
                daemon=True,
            ).start()

    threading.Thread(target=serve, daemon=True).start()
    proxy = Proxy(echo.getsockname()[:2])
    try:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        c.sendall(b"ping")
        assert c.recv(99) == b"ping"
        proxy.cut()
        assert c.recv(99) == b""  # dropped
        c2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        assert c2.recv(99) == b""  # refused: accepted and closed
        proxy.restore()
        c3 = socket.create_connection(("127.0.0.1", proxy.port), timeout=3)
        c3.sendall(b"back")
        assert c3.recv(99) == b"back"
        for s in (c, c2, c3):
            s.close()
    finally:
        proxy.close()
        echo.close()
