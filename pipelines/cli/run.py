"""`wangge run`, `wangge pipelines` and `wangge worker`: the supervisor, the feed workers,
the gateway and the dashboard's web server (child processes, ``pipelines/cli/web.py``)."""

from __future__ import annotations

import argparse
import dataclasses
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
from typing import Any

import redis
from sqlalchemy import Engine

from pipelines.access import demo
from pipelines.city import geography as geo
from pipelines.cli import console
from pipelines.cli.dispatch import checked_flows, seed_demo_units
from pipelines.cli.runtime import FEEDS, Runtime, check_city, load_city, runtime, sync_areas
from pipelines.cli.web import ChildServer, DashboardProcess, PushProcess, shape
from pipelines.dispatch import ontime
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings, child_environ

log = logging.getLogger("wangge")


log = logging.getLogger("wangge")


# ------------------------------------------------------------------ supervisor


@dataclass
class Supervisor:
    """Keeps N worker processes per feed and partition alive; stops them all cleanly."""

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

    def names(self) -> list[tuple[str, int, str]]:
        """(feed, partition, consumer name) of every worker: ``<feed>-<i>`` with one
        partition, ``<feed>-p<k>-<i>`` with several."""
        parts = max(1, self.settings.streams.partitions)
        out = []
        for feed, n in self.counts().items():
            for k in range(parts):
                for i in range(1, n + 1):
                    out.append((feed, k, f"{feed}-{i}" if parts == 1 else f"{feed}-p{k}-{i}"))
        return out

    def start(self) -> None:
        for feed, k, name in self.names():
            self._spawn(feed, name, k)

    def _spawn(self, feed: str, name: str, partition: int = 0) -> None:
        cmd = [sys.executable, "-m", "pipelines.cli", "worker", "--feed", feed, "--name", name]
        cmd += ["--partition", str(partition)]
        # its own session: a terminal's Ctrl-C reaches `wangge run` only, which stops the
        # workers in order (no KeyboardInterrupt in a child)
        self.procs[name] = subprocess.Popen(cmd, env=self.env, start_new_session=True)

    def poll(self) -> None:
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None:
                log.warning("worker %s exited with %s; restarting", name, proc.returncode)
                feed, k = next((f, k) for f, k, n in self.names() if n == name)
                if self.on_restart is not None:
                    with suppress(redis.RedisError, OSError):
                        self.on_restart(feed, name)
                self._spawn(feed, name, k)

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
        w = make_worker(
            args.feed,
            rt.settings,
            city,
            index,
            rt.r,
            rt.engine,
            args.name,
            partition=args.partition,
        )
        w.run(stop)
    return 0


def _start_simulator(
    rt: Runtime,
    city: geo.City,
    stop: threading.Event,
    speed: float | None = None,
    gateway_url: str | None = None,
    sim: Any = None,
) -> threading.Thread:
    """The simulator, writing the streams, or (``gateway_url``) driving the gateway; ``sim``
    (a backfill's simulator) carries on live from where it stopped."""
    from pipelines.city import simulator as simulate
    from pipelines.spine.partitions import publish_feed

    s = rt.settings
    commanded = bool(gateway_url) and s.simulate.command_share > 0
    if sim is None:
        sim = simulate.Simulator(
            city, s.simulate, flows_for(s), start_ms=int(time.time() * 1000), command=commanded
        )
    else:
        sim.resume(s.simulate, command=commanded)
    _store_registries(rt, sim)

    def direct(feed: str, payloads: list[bytes]) -> None:
        publish_feed(rt.r, s, feed, payloads)

    sink = _gateway_sink(s, rt.engine, city, gateway_url) if gateway_url else direct
    after = _command_centre(rt, city, sim, gateway_url, sink) if commanded else None

    def loop() -> None:
        while not stop.is_set():
            try:
                simulate.run_live(sim, sink, speed or s.simulate.speed, stop, after=after)
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


def _command_centre(
    rt: Runtime, city: geo.City, sim: Any, url: str | None, sink: Any
) -> Callable[[int], None]:
    """The simulated street command centres (dispatch core) and the workers' phones
    (the gateway's /tasks with the simulator's fleet key)."""
    from pipelines.city.simulator.command import CommandCentre, HttpTransport
    from pipelines.dispatch.actions import ActionContext

    ctx = ActionContext.of(rt.engine, rt.r, rt.settings, city)
    return CommandCentre(sim, ctx, HttpTransport(str(url)), sink.keys["fleet"]).step


def _store_registries(rt: Runtime, sim: Any) -> None:
    from pipelines.cli.backfill import store_registries

    store_registries(rt.engine, rt.r, rt.settings, sim)


def _pipelines(
    rt: Runtime, city: geo.City, stop: threading.Event, *, services: bool = True
) -> Supervisor:
    """The feed workers and the ops server; then (``services``) the clock job and the
    warnings evaluator (``wangge run`` starts those after a first start's backfill)."""
    from pipelines.spine.partitions import feed_stream_keys
    from pipelines.spine.streams import ensure_group

    s = rt.settings
    for feed in FEEDS:
        for key in feed_stream_keys(s, feed):
            ensure_group(rt.r, key, s.streams.group)
    env = child_environ(REDIS_URL=s.redis.url, DATABASE_URL=s.database_url)
    ops_dir = _ops_dir(s, env)
    sup = Supervisor(s, env)
    sup.on_restart = restart_recorder(rt.r, s.redis.prefix)
    sup.start()
    _ops_server(rt, city, ops_dir)
    if services:
        _city_services(rt, city, stop)
    return sup


def _city_services(
    rt: Runtime, city: geo.City, stop: threading.Event, *, warnings: bool = True
) -> None:
    """The clock job (overdue sweep, online counts, freshness), the warnings evaluator (unless
    not ``warnings``: :func:`_warnings_service` starts it later) and the time machine's
    hourly checkpoints."""
    from pipelines.history import keeper
    from pipelines.spine.runner import ClockJob, live_state

    s = rt.settings
    clock = ClockJob(s, city, live_state(rt.r, s), rt.r, engine=rt.engine)
    _thread(lambda: clock.run(stop), "clock")
    if warnings:
        _warnings_service(rt, city, stop)
    _thread(lambda: keeper.run(rt.engine, city, s, stop), "checkpoints")


def _warnings_service(rt: Runtime, city: geo.City, stop: threading.Event) -> None:
    from pipelines.warnings import WarningEngine

    evaluator = WarningEngine(rt.settings, city, rt.r, rt.engine)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    _thread(lambda: evaluator.run(stop, owner), "warnings")


def _ops_dir(s: Settings, env: dict[str, str]) -> str | None:
    """The workers' metrics files (prometheus multiprocess mode), emptied at each start."""
    from pipelines.ops.metrics import MULTIPROC_ENV, fresh_dir

    if not s.metrics.enabled:
        return None
    d = str(fresh_dir(s.path(s.run.var_dir) / "metrics" / "pipelines"))
    env[MULTIPROC_ENV] = d
    return d


def _ops_server(rt: Runtime, city: geo.City, ops_dir: str | None) -> None:
    """/metrics, /healthz and /readyz of the pipelines (``[metrics]``); a taken port is
    reported, never fatal."""
    from pipelines.ops.health import OpsServer

    m = rt.settings.metrics
    if ops_dir is None or not m.pipelines_port:
        return
    try:
        srv = OpsServer(rt.settings, rt.r, rt.engine, city, children_dir=ops_dir).start()
    except OSError as exc:
        log.warning("metrics server on %s:%s: %s", m.pipelines_host, m.pipelines_port, exc)
        return
    log.info("metrics at http://%s:%s/metrics", m.pipelines_host, srv.port)


def restart_recorder(
    r: redis.Redis, prefix: str, clock: Callable[[], float] = time.time
) -> Callable[[str, str], None]:
    """The supervisor's restart hook: one entry per restart in the feed's restart log."""
    from pipelines.spine.health import record_restart

    def record(feed: str, name: str) -> None:
        record_restart(r, prefix, feed, int(clock() * 1000), name)

    return record


def cmd_pipelines(settings: Settings, args: argparse.Namespace) -> int:
    flows = checked_flows(settings)
    if flows is None:
        return 2
    stop = _stop_event()
    city = load_city(settings)
    with runtime(settings, embedded_ok=False) as rt:
        check_city(rt, city)
        sync_areas(rt.engine, city)
        ontime.refresh_stage_due(rt.engine, flows)  # the flow file may have changed
        sup = _pipelines(rt, city, stop)
        try:
            while not stop.wait(1.0):
                sup.poll()
        finally:
            sup.stop()
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    flows = checked_flows(settings)
    if flows is None:
        return 2
    stop = _stop_event()
    print("Wangge 网格 — starting (Ctrl-C stops everything)", flush=True)
    city = load_city(settings)
    with runtime(settings) as rt:
        s = rt.settings
        if rt.embedded:
            print(f"  redis     embedded {rt.embedded.server} at {s.redis.url}", flush=True)
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
        seeded = seed_demo_units(rt.engine, city, int(time.time() * 1000))
        ontime.refresh_stage_due(rt.engine, flows)  # the flow file may have changed
        print(
            f"  dispatch  {len(flows.flows)} standard flows ({flows.source})"
            + (f"; {seeded} demo units registered" if seeded else ""),
            flush=True,
        )
        simulating = s.run.simulate and not args.no_simulate
        if simulating and not s.simulate.focus_street:
            # the dispute surge in the demo operator's street
            focus = demo.demo_areas(city)[1]
            s = dataclasses.replace(s, simulate=dataclasses.replace(s.simulate, focus_street=focus))
            rt.settings = s
        if rt.embedded is not None:  # a new one, or its files lost: rebuilt from SQL
            restore_live_state(rt.settings, city, rt.r, rt.engine, stop=stop)
            if stop.is_set():  # Ctrl-C while it was rebuilt
                print("stopped.", flush=True)
                return 0
        sup = _pipelines(rt, city, stop, services=not simulating)
        gateway = _GatewayProcess.start(rt, args.gateway_port)
        s = gateway.settings
        gw_url = gateway.url
        print(f"  gateway   {gw_url} (OsmAnd · Open311 · Frigate · batch; docs {gw_url}docs)")
        if s.gateway.mqtt_url:
            kind = f"embedded {gateway.broker.kind}" if gateway.broker else "broker"
            print(f"  mqtt      {kind} at {s.gateway.mqtt_url} (Frigate subscriber)", flush=True)
        log_path = console.request_log(s)
        verbose = bool(getattr(args, "verbose", False))
        push_port = PushProcess.choose_port(s) if s.push.enabled else 0
        # the pages reach the push server on their own host (":PORT") unless push.url says
        push_url = (s.push.url or f":{push_port}") if push_port else ""
        server = DashboardProcess.start(s, args.port, log_path, verbose, push_url=push_url)
        workers, threads = shape(s.dashboard)
        print(
            f"  web       gunicorn, {workers} workers × {threads} threads"
            " (dashboard/gunicorn_conf.py)",
            flush=True,
        )
        push = PushProcess.start(s, push_port, server.url) if push_port else None
        if push is not None:
            print(f"  push      {push.url}push/ (live ticks over SSE; pages poll if it is down)")
        if not server.wait_ready():
            log.warning("the dashboard server is not answering yet (see the lines above)")
        url = server.url
        rows = demo.demo_accounts(rt.engine, city, int(time.time() * 1000))
        text = console.accounts_text(rows, url, gw_url)
        print(text, flush=True)
        print(
            f"  requests are logged to {log_path} (-v: here too)\n"
            "  press Enter to show the accounts and URLs again; `wangge status` prints them too\n",
            flush=True,
        )
        info = {"dashboard": url, "gateway": gw_url, "redis": s.redis.url, "accounts": rows}
        console.write_run_file(s, info)
        if simulating:
            rt.settings = s

            def history_then_live() -> None:
                """A first start's backfill (the dashboard already serves what it has
                written), then the clock job and the live simulator; the warnings evaluator
                once the backfilled past's warnings are evaluated."""
                from pipelines.cli import backfill as bf
                from pipelines.history import spans

                try:
                    sim, past = _backfill_at_start(rt, city, stop, sup.env)
                except Exception:  # the live city still starts; the history stays partial
                    if stop.is_set():  # a stop while it waited for the pipelines, say
                        print("  backfill  stopped; the next start resumes it", flush=True)
                        return
                    log.exception("backfill failed; starting the live feed")
                    sim, past = None, None
                if stop.is_set():
                    return
                if past is None:  # a replay of a backfilled past cut short: resumed
                    past = spans.unreplayed(rt.engine)
                _city_services(rt, city, stop, warnings=past is None)
                through = s.gateway.simulate_through and gateway.wait_ready()
                _start_simulator(rt, city, stop, gateway_url=gw_url if through else None, sim=sim)
                _print_simulator(s, through)
                if past is not None:
                    try:
                        bf.replay_warnings(s, city, rt.r, rt.engine, past, stop=stop.is_set)
                    except Exception:  # the live warnings start anyway
                        log.exception("evaluating the past's warnings failed")
                    if not stop.is_set():
                        _warnings_service(rt, city, stop)

            _thread(history_then_live, "history")
        console.on_enter(lambda: print(text, flush=True), stop)
        try:
            while not stop.wait(1.0):
                sup.poll()
                gateway.poll()
                server.poll()
                if push is not None:
                    push.poll()
        finally:
            print("stopping…", flush=True)
            console.remove_run_file(s)
            if push is not None:
                push.stop()
            server.stop()
            gateway.stop()
            sup.stop()
    print("stopped.", flush=True)
    return 0


def _print_simulator(s: Settings, through: bool) -> None:
    print(
        f"  simulator {s.simulate.workers} workers, {s.simulate.cameras} cameras, "
        f"speed ×{s.simulate.speed}" + (" → through the gateway" if through else ""),
        flush=True,
    )
    if s.simulate.anomalies:
        a, sp = s.simulate.anomaly_start_min, max(s.simulate.speed, 1e-9)
        print(
            f"  anomalies dispute surge in {s.simulate.focus_street} after {a / sp:g} min,"
            f" fire after {(a + 30) / sp:g} min, patrol gap after {(a + 60) / sp:g} min"
            " (WANGGE_SIMULATE_ANOMALY_START_MIN brings them forward)",
            flush=True,
        )


class _Stopped(Exception):
    """Ctrl-C while the live state is rebuilt."""


# a live-state key (rebuilt away) set while a backfill writes no append-only file
BACKFILLING = "backfilling"


def restore_live_state(
    s: Settings,
    city: geo.City,
    r: Any,
    engine: Engine,
    *,
    clock: Callable[[], float] = time.time,
    out: Any = None,
    stop: threading.Event | None = None,
) -> dict[str, int] | None:
    """The embedded Redis's live state, made to agree with the database before the
    pipelines start. It keeps its data across restarts (``redis.embedded_persist``), so
    a restart normally finds the live state as it was, and the streams' entries not yet
    applied: nothing to do. Else (a new, empty server: persistence off or its files gone)
    on a database with history the live state (today's counts, open incidents, positions,
    patrols, warnings) is rebuilt from SQL, as ``wangge rebuild-live`` does, so a restarted
    `wangge run` shows the city it showed before. On a database without history (a first
    start, or the database removed) a live state the server still holds is dropped: it
    was derived from a history that is gone (the streams stay: what they hold unapplied
    is applied to this database). Returns the rebuilt counts; None when nothing was
    rebuilt, when ``stop`` is set meanwhile (Ctrl-C: the half-built state is dropped) or
    when it fails (logged; the pipelines then start on what Redis has). A Redis of one's
    own keeps its state (after losing it: `wangge rebuild-live`)."""
    from pipelines.cli.backfill import history_tables
    from pipelines.spine.clockjob import live_state
    from pipelines.spine.rebuild import rebuild_live

    say = out or sys.stdout
    live = live_state(r, s)
    if not history_tables(engine):
        dropped = live.delete_live()
        if dropped:
            print(
                f"  live      a live state of {dropped:,} keys without its history in the"
                " database was dropped",
                file=say,
                flush=True,
            )
        return None
    if r.exists(live.keys.live("meta")) and not r.exists(live.keys.live(BACKFILLING)):
        print("  live      the embedded Redis kept the live state", file=say, flush=True)
        return None
    print("  live      rebuilding the live state from the database", file=say, flush=True)
    shown: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stop is not None and stop.is_set():
            raise _Stopped
        now = time.perf_counter()
        if total and (done >= total or now - shown.get(stage, 0.0) >= 5.0):
            shown[stage] = now
            print(f"  live      {stage} {done:,}/{total:,}", file=say, flush=True)

    t0 = time.perf_counter()
    try:
        counts = rebuild_live(s, city, r, engine, clock, progress=progress)
    except _Stopped:
        return None
    except Exception:  # the city still starts; what arrives from now on is shown
        log.exception("rebuilding the live state failed (`wangge rebuild-live` tries again)")
        return None
    print(
        f"  live      {counts.get('incidents', 0):,} incidents, {counts.get('video', 0):,} video"
        f" alerts, {counts.get('positions', 0):,} workers in {time.perf_counter() - t0:.0f} s",
        file=say,
        flush=True,
    )
    return counts


@contextmanager
def _unlogged(rt: Runtime) -> Iterator[None]:
    """A persistent embedded Redis writes no append-only file while a first start's
    backfill runs (simulated history, kept in SQL: millions of writes, and the file
    rewrites they would cause); after it, one rewrite of what it holds, then every write
    again. The file says a backfill was under way (``live:backfilling``, written before
    it stops) until the rewrite holds what came after: a crash meanwhile restarts on a
    state that is not the database's, which ``restore_live_state`` then rebuilds."""
    from pipelines.spine.partitions import keys_of

    persist = rt.embedded is not None and rt.embedded.persist
    marker = keys_of(rt.settings).live(BACKFILLING)
    if persist:
        rt.r.set(marker, "1")
        rt.r.config_set("appendonly", "no")
    try:
        yield
    finally:
        if persist:
            rt.r.config_set("appendonly", "yes")  # a rewrite, then this file again
            rt.r.delete(marker)  # (in the rewrite: written after it started)


def _backfill_at_start(
    rt: Runtime,
    city: geo.City,
    stop: threading.Event,
    env: dict[str, str],
    clock: Callable[[], float] = time.time,
) -> tuple[Any, Any]:
    """A lived-in first start: on an empty database of the demo city, the last
    ``simulate.backfill_days`` simulated through the streams and the running workers
    (plus ``backfill_report_workers`` − ``reports_workers`` extra report workers for the
    while); the simulator to carry on live and the span recorded (``history.spans``), or
    (None, None)."""
    from pipelines.cli import backfill as bf
    from pipelines.history import spans

    s = rt.settings
    days = s.simulate.backfill_days
    resume = spans.unfinished(rt.engine)
    if resume is not None:  # a backfill cut short (Ctrl-C, a crash): resumed
        now = int(clock() * 1000)
        why = bf.resume_refusal(s, city, resume, now)
        if why is not None:
            spans.give_up(rt.engine)
            print(f"  backfill  the one cut short stays partial: {why}", flush=True)
            return None, None
        left = bf.describe_span(now - (resume.resume_ms or resume.start_ms))
        print(
            f"  backfill  resuming the one cut short: {left} of history to simulate from "
            "the last moment all of whose events are in SQL (reports wait there up to "
            f"{bf.describe_span(bf.GROUP_MS)} to be grouped), once what it left in the pipelines "
            "is applied",
            flush=True,
        )
        bf.wait_drained(rt.r, s, stop.is_set, lambda: stop.wait(0.2))
    elif days <= 0 or bf.history_tables(rt.engine):  # off, or not a first start: quietly
        return None, None
    else:
        why = bf.refusal(s, rt.engine, days, explicit=False)
        if why is not None:
            print(f"  backfill  none: {why}", flush=True)
            return None, None
        print(
            f"  backfill  simulating the last {days:g} days through the pipelines "
            "(a first start; the dashboard shows it as it lands)",
            flush=True,
        )
    extra = s.simulate.backfill_report_workers - s.pipelines.reports_workers
    procs = bf.spawn_workers(s, env, {"reports": extra}, "bf") if extra > 0 else []
    bar = bf.ProgressBar()
    try:

        def wait() -> None:  # a dead worker is restarted by the main loop (an extra
            time.sleep(0.05)  # one's entries are claimed by the others after claim_idle_ms)

        with _unlogged(rt):
            sim, res = bf.backfill_streams(
                s,
                city,
                rt.r,
                rt.engine,
                days,
                stop=stop.is_set,
                progress=bar,
                wait=wait,
                clock=clock,
                resume=resume,
            )
    except Exception:
        if not stop.is_set():  # (else the stop cut it short: Redis may be gone already)
            raise
    finally:
        bf.stop_workers(procs)
    if stop.is_set():
        bar.stopped()
        return None, None
    bar.done(res)
    return sim, bf.finish_span(rt.engine, sim, res)


@dataclass
class _GatewayProcess(ChildServer):
    """``wangge gateway`` as a child process of ``wangge run`` (restarted if it dies),
    with an embedded MQTT broker when none is configured."""

    broker: Any = None

    name = "gateway"
    ready_path = "readyz"

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
        cmd = [sys.executable, "-m", "pipelines.cli", "gateway", "--port", str(want)]
        gp = cls(s, env, want, g.host, cmd, broker=broker)
        gp._spawn()
        return gp

    def stop(self, timeout_s: float = 15.0) -> None:
        super().stop(timeout_s)
        if self.broker is not None:
            self.broker.stop()


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
