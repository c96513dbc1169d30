"""The ``wangge`` command: run, pipelines, worker, simulate, geo, rebuild-live, status."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
import redis
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from pipelines.access import accounts, audit, sessions, text
from pipelines.city import binding, boundaries
from pipelines.city import geography as geo
from pipelines.embedded import EmbeddedRedis
from pipelines.settings import Settings, child_environ, load_settings
from pipelines.spine import store

log = logging.getLogger("wangge")
FEEDS = ("reports", "locations", "video")


# ------------------------------------------------------------------ runtime


@dataclass
class Runtime:
    settings: Settings
    r: redis.Redis
    engine: Engine
    embedded: EmbeddedRedis | None = None

    def close(self) -> None:
        self.r.close()
        self.engine.dispose()
        if self.embedded:
            self.embedded.stop()


@contextmanager
def runtime(settings: Settings, embedded_ok: bool = True) -> Iterator[Runtime]:
    """Redis (embedded when no URL is set) and the database with its schema created."""
    embedded = None
    if not settings.redis.url:
        if not embedded_ok:
            raise SystemExit("redis.url is empty: set REDIS_URL (or run `wangge run`)")
        embedded = EmbeddedRedis(settings.path(settings.redis.embedded_dir)).start()
        settings = dataclasses.replace(
            settings, redis=dataclasses.replace(settings.redis, url=embedded.url)
        )
    settings.path(settings.run.var_dir).mkdir(parents=True, exist_ok=True)
    engine = _keyed(
        settings,
        store.make_engine(
            settings.database_url, settings.database.schema or None, settings.database.echo
        ),
    )
    store.create_schema(engine)
    rt = Runtime(settings, redis.Redis.from_url(settings.redis.url), engine, embedded)
    try:
        yield rt
    finally:
        rt.close()


def _keyed(settings: Settings, engine: Engine) -> Engine:
    """The engine with the audit key, resolved when a command first writes or verifies the
    audit log (commands that never do need none)."""
    return audit.keyed(engine, lambda: audit.key_for(settings))


def load_city(settings: Settings) -> geo.City:
    t = time.perf_counter()
    city = geo.load_city(settings.geo)
    log.info("city %s: %d areas in %.1fs", city.city_id, city.areas.height, time.perf_counter() - t)
    return city


def check_city(rt: Runtime, city: geo.City) -> None:
    """Refuse to go on when the database or Redis prefix belongs to another city."""
    check_city_sql(rt.engine, city, rt)


def check_city_sql(engine: Engine, city: geo.City, rt: Runtime | None = None) -> None:
    """The same for a command with only the database (and Redis when ``rt`` is given)."""
    try:
        r, prefix = (rt.r, rt.settings.redis.prefix) if rt else (None, "")
        binding.check(engine, r, prefix, city, int(time.time() * 1000))
    except binding.CityMismatch as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def sync_areas(engine: Engine, city: geo.City) -> None:
    if store.table_count(engine, store.areas) == city.areas.height:
        return
    cols = [c.name for c in store.areas.columns]
    store.replace_table(engine, store.areas, city.areas.select(cols).to_dicts())


# ------------------------------------------------------------------ supervisor


@dataclass
class Supervisor:
    """Keeps N worker processes per feed alive; stops them all cleanly."""

    settings: Settings
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # called as (feed, worker name) for every restart (recorded for status and warnings)
    on_restart: Callable[[str, str], None] | None = None

    def counts(self) -> dict[str, int]:
        p = self.settings.pipelines
        return {
            "reports": p.reports_workers,
            "locations": p.locations_workers,
            "video": p.video_workers,
        }

    def start(self) -> None:
        for feed, n in self.counts().items():
            for i in range(1, n + 1):
                self._spawn(feed, f"{feed}-{i}")

    def _spawn(self, feed: str, name: str) -> None:
        cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed, "--name", name]
        self.procs[name] = subprocess.Popen(cmd, env=self.env)

    def poll(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                log.warning("worker %s exited with %s; restarting", name, proc.returncode)
                feed = name.rsplit("-", 1)[0]
                if self.on_restart is not None:
                    with suppress(redis.RedisError, OSError):
                        self.on_restart(feed, name)
                self._spawn(feed, name)

    def stop(self, timeout_s: float = 15.0) -> None:
        for proc in self.procs.values():
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _thread(target: Callable[[], None], name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------------ commands


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.spine.runner import make_worker

    stop = _stop_event()
    city = load_city(settings)
    index = geo.GridIndex(city)
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        w = make_worker(args.feed, rt.settings, city, index, rt.r, rt.engine, args.name)
        while not stop.is_set():
            try:
                w.step()
            except (redis.ConnectionError, redis.TimeoutError, DBAPIError) as exc:
                # Nothing was acknowledged: the batch is retried from our pending list.
                log.warning("%s: %s; retrying the batch", args.name, str(exc).splitlines()[0])
                w.consumer.retry_pending()
                stop.wait(1.0)
    return 0


def _start_simulator(
    rt: Runtime,
    city: geo.City,
    stop: threading.Event,
    speed: float | None = None,
    gateway_url: str | None = None,
) -> threading.Thread:
    """The simulator, writing the streams, or (``gateway_url``) driving the gateway."""
    from pipelines.city import simulator as simulate
    from pipelines.spine.streams import publish

    s = rt.settings
    sim = simulate.Simulator(city, s.simulate, s.deadlines, start_ms=int(time.time() * 1000))
    _store_registries(rt.engine, sim)
    prefix = s.redis.prefix
    streams = {f: f"{prefix}:{getattr(s.streams, f)}" for f in FEEDS}

    def direct(feed: str, payloads: list[bytes]) -> None:
        publish(rt.r, streams[feed], payloads)

    sink = _gateway_sink(s, rt.engine, city, gateway_url) if gateway_url else direct

    def loop() -> None:
        while not stop.is_set():
            try:
                simulate.run_live(sim, sink, speed or s.simulate.speed, stop)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("simulator: %s", exc)
                stop.wait(1.0)

    return _thread(loop, "simulator")


def _gateway_sink(
    s: Settings, engine: Engine, city: geo.City, url: str
) -> Callable[[str, list[bytes]], None]:
    """Phones over OsmAnd, cameras over Frigate (MQTT when a broker is set), the hotline's
    events over the batch API — with fresh city-wide simulator keys."""
    from pipelines.gateway.feeder import GatewayFeeder, simulator_keys

    keys = simulator_keys(engine, city, int(time.time() * 1000))
    g = s.gateway
    return GatewayFeeder(url, keys, g.mqtt_url, g.frigate_topic_prefix, g.max_batch)


def _store_registries(engine: Engine, sim: Any) -> None:
    cams = sim.cameras.select("camera_id", "lon", "lat", "grid_id")
    store.replace_table(engine, store.cameras, cams.to_dicts())
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())


def _pipelines(rt: Runtime, city: geo.City, stop: threading.Event) -> Supervisor:
    from pipelines.spine.runner import ClockJob, live_state, stream_name
    from pipelines.spine.streams import ensure_group
    from pipelines.warnings import WarningEngine

    s = rt.settings
    for feed in FEEDS:
        ensure_group(rt.r, f"{s.redis.prefix}:{stream_name(s, feed)}", s.streams.group)
    sup = Supervisor(s, child_environ(REDIS_URL=s.redis.url, DATABASE_URL=s.database_url))
    sup.on_restart = restart_recorder(rt.r, s.redis.prefix)
    sup.start()
    clock = ClockJob(s, city, live_state(rt.r, s), rt.r, engine=rt.engine)
    _thread(lambda: clock.run(stop), "clock")
    evaluator = WarningEngine(s, city, rt.r, rt.engine)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    _thread(lambda: evaluator.run(stop, owner), "warnings")
    return sup


def restart_recorder(
    r: redis.Redis, prefix: str, clock: Callable[[], float] = time.time
) -> Callable[[str, str], None]:
    """The supervisor's restart hook: one entry per restart in the feed's restart log."""
    from pipelines.spine.health import record_restart

    def record(feed: str, name: str) -> None:
        record_restart(r, prefix, feed, int(clock() * 1000), name)

    return record


def cmd_pipelines(settings: Settings, args: argparse.Namespace) -> int:
    stop = _stop_event()
    city = load_city(settings)
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        sync_areas(rt.engine, city)
        sup = _pipelines(rt, city, stop)
        try:
            while not stop.wait(1.0):
                sup.poll()
        finally:
            sup.stop()
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    stop = _stop_event()
    print("Wangge 网格 — starting (Ctrl-C stops everything)", flush=True)
    city = load_city(settings)
    with runtime(settings) as rt:
        s = rt.settings
        if rt.embedded:
            print(f"  redis     embedded redis-server at {s.redis.url}", flush=True)
        else:
            print(f"  redis     {s.redis.url}", flush=True)
        print(f"  database  {_safe_url(s.database_url)}", flush=True)
        print(
            f"  city      {city.name}: {len(city.ids('district'))} districts, "
            f"{len(city.ids('street'))} streets, {len(city.ids('grid'))} grids",
            flush=True,
        )
        check_city(rt, city)
        sync_areas(rt.engine, city)
        sup = _pipelines(rt, city, stop)
        gateway = _GatewayProcess.start(rt, args.gateway_port)
        s = gateway.settings
        gw_url = gateway.url
        print(f"  gateway   {gw_url} (OsmAnd · Open311 · Frigate · batch; docs {gw_url}docs)")
        if s.gateway.mqtt_url:
            kind = f"embedded {gateway.broker.kind}" if gateway.broker else "broker"
            print(f"  mqtt      {kind} at {s.gateway.mqtt_url} (Frigate subscriber)", flush=True)
        if s.run.simulate and not args.no_simulate:
            through = s.gateway.simulate_through and gateway.wait_ready()
            rt.settings = s
            _start_simulator(rt, city, stop, gateway_url=gw_url if through else None)
            print(
                f"  simulator {s.simulate.workers} workers, {s.simulate.cameras} cameras, "
                f"speed ×{s.simulate.speed}" + (" → through the gateway" if through else ""),
                flush=True,
            )
        server = _serve_dashboard(s, args.port)
        url = f"http://{s.dashboard.host}:{server.server_port}/"
        _print_demo_accounts(rt.engine, city, url)
        print(f"\n  ➜ Dashboard: {url}\n  ➜ Gateway:   {gw_url}\n", flush=True)
        try:
            while not stop.wait(1.0):
                sup.poll()
                gateway.poll()
        finally:
            print("stopping…", flush=True)
            server.shutdown()
            gateway.stop()
            sup.stop()
    print("stopped.", flush=True)
    return 0


@dataclass
class _GatewayProcess:
    """``wangge gateway`` as a child process of ``wangge run`` (restarted if it dies),
    with an embedded MQTT broker when none is configured."""

    settings: Settings
    env: dict[str, str]
    port: int
    broker: Any = None
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, rt: Runtime, port: int | None) -> _GatewayProcess:
        from pipelines.gateway.broker import EmbeddedBroker
        from pipelines.gateway.server import free_port, port_free

        s = rt.settings
        g = s.gateway
        broker = None
        if not g.mqtt_url and g.mqtt_embedded:
            broker = EmbeddedBroker(s.path(s.run.var_dir) / "mqtt").start()
            g = dataclasses.replace(g, mqtt_url=broker.url)
        want = g.port if port is None else port
        if want == 0 or not port_free(g.host, want):
            want = free_port(g.host)
        s = dataclasses.replace(s, gateway=dataclasses.replace(g, port=want))
        env = child_environ(
            REDIS_URL=s.redis.url, DATABASE_URL=s.database_url, WANGGE_GATEWAY_MQTT_URL=g.mqtt_url
        )
        gp = cls(s, env, want, broker)
        gp._spawn()
        return gp

    @property
    def url(self) -> str:
        host = self.settings.gateway.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{self.port}/"

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "pipelines.cli", "gateway", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, env=self.env)

    def wait_ready(self, timeout_s: float = 60.0) -> bool:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                pass
            if self.proc is None or self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def poll(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log.warning("gateway exited with %s; restarting", self.proc.returncode)
            self._spawn()

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.broker is not None:
            self.broker.stop()


def _print_demo_accounts(engine: Engine, city: geo.City, url: str) -> None:
    """One account per role on the laptop demo (passwords are fresh each start)."""
    rows = accounts.demo_accounts(engine, city, int(time.time() * 1000))
    print("\n  demo accounts (role · scope · sign in):", flush=True)
    for username, role, scope, secret in rows:
        if role == "wall":
            print(f"    {role:18s} {scope:12s} {url}wall?token={secret}", flush=True)
        else:
            print(f"    {role:18s} {scope:12s} {username} / {secret}", flush=True)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def _serve_dashboard(settings: Settings, port: int | None) -> Any:
    from werkzeug.serving import make_server

    from dashboard.app import create_app

    app = create_app(settings)
    server = make_server(
        settings.dashboard.host,
        port if port is not None else settings.dashboard.port,
        app.server,
        threaded=True,
    )
    _thread(server.serve_forever, "dashboard")
    return server


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.city import simulator as simulate

    cfg = settings.simulate
    changes = {
        k: v
        for k, v in (
            ("seed", args.seed),
            ("speed", args.speed),
            ("rate", args.rate),
            ("malformed_share", args.malformed_share),
        )
        if v is not None
    }
    cfg = dataclasses.replace(cfg, **changes)
    settings = dataclasses.replace(settings, simulate=cfg)
    if args.replay:
        with runtime(settings, embedded_ok=False) as rt:
            n = _replay(rt, Path(args.replay))
        print(f"replayed {n} events from {args.replay}")
        return 0
    city = load_city(settings)
    if args.out:
        start = int(args.start * 1000) if args.start else int(time.time() * 1000) - 86_400_000
        events = simulate.generate(city, cfg, settings.deadlines, start, args.events)
        simulate.write_jsonl(Path(args.out), ((f, p) for f, p, _ in events))
        print(f"wrote {len(events)} events to {args.out}")
        return 0
    stop = _stop_event()
    gateway_url = None
    if args.via == "gateway":
        g = settings.gateway
        gateway_url = args.gateway_url or f"http://{g.host}:{g.port}/"
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        t = _start_simulator(rt, city, stop, cfg.speed, gateway_url=gateway_url)
        if args.duration:
            stop.wait(args.duration)
            stop.set()
        t.join()
    return 0


def _replay(rt: Runtime, path: Path) -> int:
    from pipelines.city import simulator as simulate
    from pipelines.spine.streams import publish

    s = rt.settings
    buf: dict[str, list[bytes]] = {f: [] for f in FEEDS}
    n = 0
    for feed, payload in simulate.read_jsonl(path):
        buf[feed].append(payload)
        n += 1
        if len(buf[feed]) >= 5000:
            publish(rt.r, f"{s.redis.prefix}:{getattr(s.streams, feed)}", buf[feed])
            buf[feed] = []
    for feed, rest in buf.items():
        publish(rt.r, f"{s.redis.prefix}:{getattr(s.streams, feed)}", rest)
    return n


def cmd_geo(settings: Settings, args: argparse.Namespace) -> int:
    if args.geo_cmd == "import":
        return _geo_import(settings, args)
    if args.geo_cmd == "rebind":
        return _geo_rebind(settings, args)
    city = load_city(settings)
    if args.geo_cmd == "export":
        fc = geo.level_geojson(city, args.level, args.parent, settings.geo.simplify_m)
        Path(args.out).write_bytes(json.dumps(fc, ensure_ascii=False).encode())
        print(f"wrote {len(fc['features'])} {args.level} features to {args.out}")
        return 0
    summary = city.areas.group_by("level").agg(pl.len(), pl.col("area_km2").sum().round(1))
    print(f"{city.name} ({city.city_id})")
    for level in geo.LEVELS:
        row = summary.filter(pl.col("level") == level)
        if row.height:
            print(f"  {level:9s} {row['len'][0]:6d} areas  {row['area_km2'][0]:9.1f} km²")
    return 0


def _geo_import(settings: Settings, args: argparse.Namespace) -> int:
    out = (
        Path(args.out) if args.out else settings.path(settings.geo.cache_dir) / Path(args.file).stem
    )
    try:
        res = boundaries.import_geojson(
            Path(args.file), settings.geo, out, n_grids=args.grids, name=args.name
        )
    except boundaries.GeoImportError as exc:
        shown = exc.problems[:200]
        print(f"import failed: {len(exc.problems)} problem(s) in {args.file}", file=sys.stderr)
        for problem in shown:
            print(f"  {problem}", file=sys.stderr)
        if len(exc.problems) > len(shown):
            print(f"  … (first {len(shown)} shown)", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 2
    for note in res.notes:
        print(f"note: {note}")
    for repair in res.repairs:
        print(f"repaired: {repair.describe()}")
    city = res.city
    print(
        f"imported {city.name} ({city.city_id}): {len(city.ids('district'))} districts, "
        f"{len(city.ids('street'))} streets, {len(city.ids('grid'))} grids → {out}"
        + (f" ({len(res.repairs)} polygons repaired)" if res.repairs else "")
    )
    print(f"use it with: WANGGE_GEO_SOURCE={out}")
    return 0


def _geo_rebind(settings: Settings, args: argparse.Namespace) -> int:
    """Show whose data the database holds; with a flag, bind it to the configured city.

    Redis is checked and cleared only when ``redis.url`` is set: the embedded Redis of
    ``wangge run`` keeps nothing between starts."""
    city = load_city(settings)
    configured = binding.stamp_of(city)
    mode: Literal["discard", "keep"] | None = (
        "discard" if args.discard_data else "keep" if args.keep_data else None
    )
    prefix = settings.redis.prefix
    now_ms = int(time.time() * 1000)
    r = redis.Redis.from_url(settings.redis.url) if settings.redis.url else None
    try:
        with sql_engine(settings) as engine:
            if mode is None:
                bound = binding.bound_stamp(engine)
                print(f"configured city: {configured.describe()}")
                print(f"database holds:  {bound.describe() if bound else 'no city yet'}")
                try:
                    binding.check(engine, r, prefix, city, now_ms)
                except binding.CityMismatch as exc:
                    print(f"\n{exc}", file=sys.stderr)
                    return 1
                print("they match: nothing to do")
                return 0
            actor = f"cli:{getpass.getuser()}"
            report = binding.rebind(engine, r, prefix, city, mode, now_ms=now_ms, actor=actor)
    except binding.RebindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if r is not None:
            r.close()
    for line in report.lines():
        print(line)
    if mode == "keep":
        print("next: `wangge rebuild-live` (live state in Redis from the kept history)")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive number of grids, got {value}")
    return value


def cmd_rebuild_live(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild the live state aside in bounded steps, then switch to it atomically."""
    from pipelines.spine.runner import rebuild_live

    city = load_city(settings)
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        busy = _active_consumers(rt.r, rt.settings)
        if busy:
            print(
                f"rebuild-live: warning: pipeline workers are running ({', '.join(busy)});"
                " what they apply while the state is rebuilt may be missing from it until"
                " the incident changes again — stop them for an exact rebuild",
                file=sys.stderr,
            )
        last: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if done >= total or now - last.get(stage, 0.0) >= 0.5:
                last[stage] = now
                pct = f" ({100 * done // total}%)" if total else ""
                print(f"rebuild-live: {stage} {done}/{total}{pct}", file=sys.stderr, flush=True)

        t = time.perf_counter()
        counts = rebuild_live(rt.settings, city, rt.r, rt.engine, progress=progress)
    print(f"rebuilt live state in {time.perf_counter() - t:.1f}s: {counts}")
    return 0


def _active_consumers(r: redis.Redis, s: Settings, within_ms: int = 10_000) -> list[str]:
    """Consumers of the feed streams that read within the last ``within_ms``."""
    out = []
    for feed in FEEDS:
        key = f"{s.redis.prefix}:{getattr(s.streams, feed)}"
        try:
            consumers: Any = r.xinfo_consumers(key, s.streams.group)
        except redis.ResponseError:  # no stream or no group yet
            continue
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            idle = int(c.get("inactive", c["idle"]))  # Redis ≥ 7.2: -1 = never read
            if 0 <= idle < within_ms:
                out.append(name)
    return out


def cmd_backfill_summaries(settings: Settings, args: argparse.Namespace) -> int:
    """Fill the lifecycle summary of incidents stored before it existed (resumable)."""
    with sql_engine(settings) as engine:
        t = time.perf_counter()
        n = store.backfill_summaries(engine)
    print(f"summarised {n} incidents in {time.perf_counter() - t:.1f}s")
    return 0


def health_lines(r: redis.Redis, s: Settings, now_ms: int) -> list[str]:
    """Per stream: length, group lag, oldest pending age, dead letters by reason, restarts
    in the last hour, newest applied event's age, and STALE with why when it is."""
    from pipelines.spine import health

    th = health.thresholds_of(s)
    out = []
    for feed, h in health.read_health(r, s, now_ms).items():
        age = h.event_age_s(now_ms)
        dead = ",".join(f"{k}={v}" for k, v in sorted(h.dead.items())) or "0"
        why = health.stale_reasons(h, th, now_ms)
        out.append(
            f"{feed:10s} length={h.length} lag={h.lag} pending={h.pending} "
            f"oldest_pending_s={h.pending_age_s(now_ms)} dead={dead} "
            f"restarts_1h={h.restarts_within(now_ms)} "
            f"newest_event_s={'-' if age is None else age} "
            + (f"STALE({','.join(why)})" if why else "ok")
        )
    return out


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.spine.runner import live_state

    with runtime(settings, embedded_ok=False) as rt:
        s = rt.settings
        st = live_state(rt.r, s)
        for line in health_lines(rt.r, s, int(time.time() * 1000)):
            print(line)
        print(f"deadletter length={rt.r.xlen(st.deadletter_key)} {st.deadletter_counts()}")
        print(f"meta {st.meta()}")
    return 0


@contextmanager
def sql_engine(settings: Settings) -> Iterator[Engine]:
    """Just the database (schema created): for commands that need no Redis."""
    settings.path(settings.run.var_dir).mkdir(parents=True, exist_ok=True)
    engine = _keyed(
        settings,
        store.make_engine(
            settings.database_url, settings.database.schema or None, settings.database.echo
        ),
    )
    try:
        store.create_schema(engine)
        yield engine
    finally:
        engine.dispose()


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    try:
        first = getpass.getpass(f"password for {args.username}: ")
        again = getpass.getpass("again: ")
    except (EOFError, KeyboardInterrupt):
        raise accounts.AccountError("no password given") from None
    if again != first:
        raise accounts.AccountError("the two passwords differ")
    return first


@contextmanager
def session_store(settings: Settings) -> Iterator[sessions.Sessions | None]:
    """The dashboard's session store (to end a user's sessions at once), or None when no
    Redis is configured (the embedded one of `wangge run` is private): the sessions then
    end at their next re-check of the account, within ``sessions.RECHECK_MS``."""
    if not settings.redis.url:
        yield None
        return
    r = redis.Redis.from_url(settings.redis.url, socket_timeout=5, socket_connect_timeout=3)
    a = settings.auth
    try:
        yield sessions.Sessions(
            r,
            settings.redis.prefix,
            idle_ms=int(a.idle_minutes * 60_000),
            max_ms=int(a.session_max_hours * 3_600_000),
        )
    finally:
        r.close()


def _sessions_note(store_: sessions.Sessions | None, username: str) -> str:
    if store_ is None:
        left = sessions.RECHECK_MS // 1000
        return f"; open sessions of {username} end at their next check (within {left} s)"
    return f"; every session of {username} ended"


def cmd_users(settings: Settings, args: argparse.Namespace) -> int:
    actor = f"cli:{getpass.getuser()}"
    now_ms = int(time.time() * 1000)
    sub = args.users_cmd
    try:
        for what in ("username", "scope"):  # no control or bidi characters in ids
            text.check_id(str(getattr(args, what, "") or ""), what)
        city = load_city(settings) if sub in ("add", "set-role") else None
        with sql_engine(settings) as engine, session_store(settings) as ends:
            if city is not None:
                check_city_sql(engine, city)
            if sub == "list":
                users = accounts.list_users(engine)
                print(f"{'username':16s} {'role':19s} {'scope':14s} {'disabled':8s} name")
                for u in users:
                    flag = "yes" if u.disabled else "no"
                    print(
                        f"{u.username:16s} {u.role:19s} {u.scope_area_id:14s} {flag:8s} "
                        f"{u.display_name}"
                    )
                print(f"{len(users)} users")
            elif sub == "add":
                assert city is not None
                accounts.validate_role_scope(city, args.role, args.scope)
                if args.role == "wall" and args.password_stdin:
                    raise accounts.AccountError("wall users have no password: omit it")
                if accounts.get_user(engine, args.username) is not None:
                    raise accounts.DuplicateUser(f"user {args.username} already exists")
                password = None if args.role == "wall" else _read_password(args)
                u = accounts.create_user(
                    engine,
                    city,
                    args.username,
                    args.role,
                    args.scope,
                    password,
                    args.name,
                    now_ms=now_ms,
                    actor=actor,
                )
                print(f"created {u.username} ({u.role}, scope {u.scope_area_id})")
                if u.role == "wall":
                    print(f"next: wangge users issue-wall-token {u.username}")
            elif sub == "set-role":
                assert city is not None
                u = accounts.set_role(
                    engine,
                    city,
                    args.username,
                    args.role,
                    args.scope,
                    now_ms=now_ms,
                    actor=actor,
                    sessions=ends,
                )
                note = _sessions_note(ends, u.username)
                print(f"{u.username} is now {u.role} with scope {u.scope_area_id}{note}")
            elif sub == "disable":
                u = accounts.disable_user(
                    engine, args.username, now_ms=now_ms, actor=actor, sessions=ends
                )
                print(f"disabled {u.username}{_sessions_note(ends, u.username)}")
            elif sub == "set-password":
                password = _read_password(args)
                u = accounts.set_password(
                    engine, args.username, password, now_ms=now_ms, actor=actor, sessions=ends
                )
                print(f"new password for {u.username}{_sessions_note(ends, u.username)}")
            elif sub == "revoke-wall-tokens":
                n = accounts.revoke_wall_tokens(
                    engine, args.username, now_ms, actor=actor, sessions=ends
                )
                note = _sessions_note(ends, args.username)
                print(f"revoked {n} wall tokens of {args.username}{note}")
            elif sub == "issue-wall-token":
                days = args.days if args.days is not None else settings.auth.wall_token_days
                token = accounts.issue_wall_token(engine, args.username, days, now_ms, actor=actor)
                d = settings.dashboard
                print(f"wall token for {args.username} (valid {days} days; shown only once):")
                print(token)
                print(f"open: http://{d.host}:{d.port}/wall?token={token}")
    except (accounts.AccountError, text.BadText, audit.AuditKeyMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        with sql_engine(settings) as engine:
            if args.audit_cmd in ("verify", "anchor"):
                result = audit.verify(engine, anchor=getattr(args, "anchor", None))
                if args.audit_cmd == "anchor" and result.ok:
                    print(result.anchor)  # SEQ:HASH — keep it outside the database
                    return 0
                print(result.describe())
                if not result.ok and result.bad_seq is not None:
                    row = audit.row(engine, result.bad_seq)
                    print(f"  row: {row}" if row else f"  (no row with seq {result.bad_seq})")
                return 0 if result.ok else 1
            days = args.days if args.days is not None else settings.auth.audit_retention_days
            actor = f"cli:{getpass.getuser()}"
            n = audit.purge(engine, days, int(time.time() * 1000), actor=actor)
            print(f"purged {n} audit rows older than {days} days")
    except audit.AuditKeyMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """``wangge export scorecard``: the same file the assessment page exports."""
    from pipelines import assessment as scorecard
    from pipelines.assessment import exports
    from pipelines.assessment.pdf_font import PdfFontError

    try:
        period = scorecard.parse_period(args.period, settings.live.timezone)
    except scorecard.PeriodError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    city = load_city(settings)
    scope = args.scope or city.city_id
    level = city.level_of(scope)
    if level is None:
        print(f"error: unknown area {scope!r} for --scope", file=sys.stderr)
        return 2
    order = ("city", "district", "street", "grid", "worker")
    if order.index(args.level) < order.index(level):
        print(f"error: --level {args.level} is above the scope's level ({level})", file=sys.stderr)
        return 2
    now_ms = int(time.time() * 1000)
    with sql_engine(settings) as engine:
        check_city_sql(engine, city)
        card = scorecard.scorecard(engine, city, settings, args.level, period, now_ms, scope)
        report = _progress_lines() if args.progress else exports.no_progress
        shown = scorecard.Shown.of(card)
        try:
            f = exports.export_shown(shown, city, settings, args.format, args.lang, report)
        except PdfFontError as exc:  # no CJK font to embed: what to install, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(f.data)
        tmp.replace(out)
        audit.record(
            engine,
            actor=f"cli:{getpass.getuser()}",
            role="cli",
            scope=scope,
            action="export",
            target=exports.audit_target(shown),
            detail=exports.audit_detail(shown, f, args.format, "cli"),
            now_ms=now_ms,
        )
    state = "final" if card.final else "in progress"
    print(f"wrote {out} ({f.rows} rows, {len(f.data)} bytes, {state}) sha256 {f.sha256}")
    return 0


def _progress_lines() -> Callable[[str, int, int], None]:
    """An export's progress as stderr lines: each new stage, every 10 % and 100 %."""
    from pipelines.assessment import exports

    last = ("", -10)

    def report(stage: str, done: int, total: int) -> None:
        nonlocal last
        pct = exports.percent(stage, done, total)
        if stage != last[0] or pct >= min(last[1] + 10, 100) > last[1]:
            print(f"{pct:3d}% {stage} {done}/{total}", file=sys.stderr, flush=True)
            last = (stage, pct)

    return report


def cmd_workers(settings: Settings, args: argparse.Namespace) -> int:
    """``workers import FILE``: validate every row (errors by line), then all or nothing."""
    from pipelines.gridwork import tracks as work

    city = load_city(settings)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    rows, errors = work.parse_roster_csv(text, set(city.grids["grid_id"].to_list()))
    if errors:
        for e in errors[:200]:
            print(f"{args.file}: {e}", file=sys.stderr)
        more = " (first 200 shown)" if len(errors) > 200 else ""
        print(f"{len(errors)} bad rows{more}; nothing imported", file=sys.stderr)
        return 1
    with sql_engine(settings) as engine:
        check_city_sql(engine, city)
        n = work.import_roster(
            engine,
            rows,
            replace=args.replace,
            actor=f"cli:{getpass.getuser()}",
            now_ms=int(time.time() * 1000),
        )
    print(f"imported {n} workers" + (" (roster replaced)" if args.replace else ""))
    return 0


def cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway``: serve; ``gateway credentials add|list|revoke``: who may send."""
    if args.gateway_cmd is None:
        from pipelines.gateway.server import serve

        return serve(settings, args.port)
    from pipelines.gateway import credentials as cr

    actor = f"cli:{getpass.getuser()}"
    now_ms = int(time.time() * 1000)
    sub = args.credentials_cmd
    try:
        with sql_engine(settings) as engine:
            if sub == "list":
                rows = cr.list_all(engine, include_revoked=not args.active)
                print(f"{'credential':16s} {'kind':8s} {'state':8s} {'name':24s} may send")
                for c in rows:
                    state = "revoked" if c.revoked else "active"
                    print(
                        f"{c.credential_id:16s} {c.kind:8s} {state:8s} {c.name[:24]:24s} "
                        f"{c.describe()}"
                    )
                print(f"{len(rows)} credentials")
            elif sub == "revoke":
                c = cr.revoke(engine, args.credential_id, now_ms=now_ms, actor=actor)
                _bump_revocations(settings)
                print(f"revoked {c.credential_id} ({c.kind}, {c.name})")
            else:
                city = load_city(settings)
                cams = [x for x in (args.cameras or "").split(",") if x.strip()]
                c, secret = cr.create(
                    engine,
                    city,
                    args.kind,
                    args.name,
                    now_ms=now_ms,
                    actor=actor,
                    area_id=args.area,
                    worker_id=args.worker,
                    device_id=args.device_id,
                    cameras=cams,
                    rate_per_minute=args.rate,
                )
                print(f"created {c.credential_id} ({c.kind}: {c.describe()})")
                print(f"key (shown only once): {secret}")
                _print_usage(settings, c, secret)
    except cr.CredentialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _bump_revocations(settings: Settings) -> None:
    """Tell running gateways at once (they re-check within gateway.credential_cache_s
    anyway when Redis cannot be reached from here)."""
    from pipelines.gateway.credentials import generation_key

    if not settings.redis.url:
        return
    try:
        r = redis.Redis.from_url(settings.redis.url, socket_timeout=3)
        r.incr(generation_key(settings.redis.prefix))
        r.close()
    except redis.RedisError as exc:
        print(
            f"note: Redis not reachable ({exc}); gateways stop the key within "
            f"{settings.gateway.credential_cache_s:g} s",
            file=sys.stderr,
        )


def _print_usage(settings: Settings, c: Any, secret: str) -> None:
    g = settings.gateway
    base = f"http://{g.host}:{g.port}"
    if c.kind in ("phone", "fleet"):
        dev = c.device_id if c.kind == "phone" else "<the worker's id>"
        print(f"Traccar Client: Server URL {base}/?key={secret}  Device identifier {dev}")
    elif c.kind == "camera":
        print(f"Frigate push: POST {base}/frigate/events  Authorization: Bearer {secret}")
    else:
        print(f"Open311: endpoint {base}/open311/v2/  api_key={secret}")
        if c.kind == "hotline":
            print(f"batch: POST {base}/batch/reports  Authorization: Bearer {secret}")


# ------------------------------------------------------------------ parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wangge", description="Wangge 网格 — grid governance platform")
    p.add_argument("--config", help="path of config.toml (default: the project's)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser(
        "run", help="start everything (embedded Redis, pipelines, simulator, dashboard)"
    )
    run.add_argument("--port", type=int, help="dashboard port (0 = any free port)")
    run.add_argument("--no-simulate", action="store_true", help="do not start the simulator")
    run.add_argument(
        "--gateway-port", type=int, help="ingest gateway port (0 or taken = any free port)"
    )
    sub.add_parser("pipelines", help="run the pipeline workers and the clock job")
    w = sub.add_parser("worker", help="one pipeline worker process (used by `pipelines`)")
    w.add_argument("--feed", choices=FEEDS, required=True)
    w.add_argument("--name", required=True, help="consumer name (stable across restarts)")
    sim = sub.add_parser("simulate", help="live simulated feeds into Redis, or a JSONL file")
    sim.add_argument("--seed", type=int)
    sim.add_argument("--speed", type=float, help="simulated seconds per real second")
    sim.add_argument("--rate", type=float, help="cap on events per second (0 = natural)")
    sim.add_argument("--malformed-share", type=float, dest="malformed_share")
    sim.add_argument("--duration", type=float, help="stop after this many seconds")
    sim.add_argument("--out", help="write a JSONL file instead of publishing")
    sim.add_argument("--events", type=int, default=100_000, help="events to write with --out")
    sim.add_argument("--start", type=float, help="simulation start (epoch seconds) for --out")
    sim.add_argument("--replay", help="publish the events of a JSONL file")
    sim.add_argument(
        "--via",
        choices=("redis", "gateway"),
        default="redis",
        help="write the streams directly, or drive the ingest gateway as real senders do",
    )
    sim.add_argument("--gateway-url", help="the gateway (default http://gateway.host:port/)")
    g = sub.add_parser("geo", help="geography: info, import, export")
    gs = g.add_subparsers(dest="geo_cmd", required=True)
    gs.add_parser("info", help="summary of the configured city (builds the demo city cache)")
    gi = gs.add_parser("import", help="import a GeoJSON city (grids, or district outlines)")
    gi.add_argument("file")
    gi.add_argument("--out", help="output directory (default var/geo/<file stem>)")
    gi.add_argument(
        "--grids",
        type=_positive_int,
        help="grids to generate inside district outlines (a positive number; default geo.grids)",
    )
    gi.add_argument("--name", help="the city's name (e.g. 杭州市) when the file does not give it")
    gr = gs.add_parser(
        "rebind",
        help="whose city the database holds; bind it to the configured city",
        description="Without a flag: show the database's city and the configured one. "
        "A database serves one city; to switch it to the configured city choose what "
        "happens to the data it holds.",
    )
    grm = gr.add_mutually_exclusive_group()
    grm.add_argument(
        "--discard-data",
        action="store_true",
        help="delete the previous city's data (not accounts nor the audit log) and Redis keys",
    )
    grm.add_argument(
        "--keep-data",
        action="store_true",
        help="the same city with new areas: keep the history (then run rebuild-live)",
    )
    ge = gs.add_parser("export", help="write one level's simplified GeoJSON")
    ge.add_argument("--level", choices=geo.LEVELS, default="district")
    ge.add_argument("--parent")
    ge.add_argument("--out", required=True)
    sub.add_parser("rebuild-live", help="rebuild the Redis live state from SQL")
    sub.add_parser(
        "backfill-summaries",
        help="compute the lifecycle summary of incidents stored before it existed",
    )
    sub.add_parser("status", help="stream lengths, consumer lag, dead letters")
    roles = "city_leader, district_commander, street_operator, supervisor, admin, wall"
    u = sub.add_parser("users", help="accounts: add, list, disable, set-role, wall tokens")
    us = u.add_subparsers(dest="users_cmd", required=True)
    ua = us.add_parser("add", help="create an account (prompts for the password)")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, help=roles)
    ua.add_argument("--scope", required=True, help="area id the role is bound to")
    ua.add_argument("--name", help="display name")
    ua.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    us.add_parser("list", help="all accounts with role, scope and state")
    ud = us.add_parser("disable", help="disable an account (and revoke its wall tokens)")
    ud.add_argument("username")
    up = us.add_parser("set-password", help="set a new password (every session ends)")
    up.add_argument("username")
    up.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    uv = us.add_parser("revoke-wall-tokens", help="revoke a wall's tokens (its screens sign out)")
    uv.add_argument("username")
    ur = us.add_parser("set-role", help="change an account's role and scope")
    ur.add_argument("username")
    ur.add_argument("--role", required=True, help=roles)
    ur.add_argument("--scope", required=True, help="area id the role is bound to")
    uw = us.add_parser("issue-wall-token", help="a token for a wall user (printed once)")
    uw.add_argument("username")
    uw.add_argument("--days", type=int, help="validity (default auth.wall_token_days)")
    a = sub.add_parser("audit", help="audit log: verify the hash chain, purge old rows")
    aus = a.add_subparsers(dest="audit_cmd", required=True)
    av = aus.add_parser("verify", help="check the chain (exit 1 and the first bad row if tampered)")
    av.add_argument("--anchor", help="SEQ:HASH printed by `audit anchor` earlier: must still hold")
    aus.add_parser("anchor", help="verify, then print the head (SEQ:HASH) to keep elsewhere")
    ap = aus.add_parser("purge", help="delete rows older than the retention")
    ap.add_argument("--days", type=int, help="retention (default auth.audit_retention_days)")
    ex = sub.add_parser("export", help="exports: scorecards (监督考核) as XLSX, CSV or PDF")
    exs = ex.add_subparsers(dest="export_cmd", required=True)
    es = exs.add_parser("scorecard", help="a ranked scorecard, exactly as the page shows it")
    es.add_argument("--period", required=True, help="2026-10, 2026-W44, 2026-10-05 or A..B")
    es.add_argument("--level", choices=("district", "street", "grid", "worker"), required=True)
    es.add_argument("--format", choices=("xlsx", "csv", "pdf"), default="xlsx")
    es.add_argument("--out", required=True, help="file to write")
    es.add_argument("--scope", help="area id whose rows to export (default: the whole city)")
    es.add_argument("--lang", choices=("zh-CN", "en"), default="zh-CN")
    es.add_argument("--progress", action="store_true", help="print progress to stderr")
    gw = sub.add_parser(
        "gateway", help="the ingest gateway (OsmAnd, Open311, Frigate, batch API); credentials"
    )
    gw.add_argument("--port", type=int, help="port (default gateway.port)")
    gws = gw.add_subparsers(dest="gateway_cmd")
    gc = gws.add_parser("credentials", help="who may send: add, list, revoke")
    gcs = gc.add_subparsers(dest="credentials_cmd", required=True)
    ga = gcs.add_parser("add", help="a new credential; its key is printed once")
    ga.add_argument("kind", choices=("phone", "fleet", "camera", "hotline", "app"))
    ga.add_argument("--name", required=True, help="who it is for (shown in lists and audit)")
    ga.add_argument("--area", help="fleet / camera / hotline / app: area id (default: city)")
    ga.add_argument("--worker", help="phone: the roster worker id it sends as")
    ga.add_argument("--device-id", dest="device_id", help="phone: its device identifier")
    ga.add_argument("--cameras", help="camera: registered camera ids, comma-separated")
    ga.add_argument("--rate", type=int, help="events per minute (default: the kind's)")
    gl = gcs.add_parser("list", help="every credential (revoked ones marked)")
    gl.add_argument("--active", action="store_true", help="only those not revoked")
    gr = gcs.add_parser("revoke", help="revoke a credential at once")
    gr.add_argument("credential_id")
    wk = sub.add_parser("workers", help="the worker roster: import a CSV")
    wks = wk.add_subparsers(dest="workers_cmd", required=True)
    wi = wks.add_parser("import", help="CSV: worker_id,name,type,grid_id[,phone]; all or nothing")
    wi.add_argument("file")
    wi.add_argument("--replace", action="store_true", help="the file is the whole roster")
    return p


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "run": cmd_run,
    "pipelines": cmd_pipelines,
    "worker": cmd_worker,
    "simulate": cmd_simulate,
    "geo": cmd_geo,
    "rebuild-live": cmd_rebuild_live,
    "backfill-summaries": cmd_backfill_summaries,
    "status": cmd_status,
    "users": cmd_users,
    "audit": cmd_audit,
    "export": cmd_export,
    "workers": cmd_workers,
    "gateway": cmd_gateway,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = load_settings(args.config)
    try:
        return COMMANDS[args.cmd](settings, args)
    except audit.AuditKeyMissing as exc:  # a command that writes the audit log, no key
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
