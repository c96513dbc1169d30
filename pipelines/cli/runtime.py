"""Shared plumbing of the commands: Redis and the database (`runtime`), the city, the
SQL-only engine and the dashboard's session store."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine

from pipelines.access import audit, sessions
from pipelines.city import binding
from pipelines.city import geography as geo
from pipelines.embedded import DirectoryInUse, EmbeddedRedis
from pipelines.redis_client import connect
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.partitions import global_prefix

log = logging.getLogger("wangge")


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
        embedded = _start_embedded(settings)
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
    rt = Runtime(settings, pipeline_client(settings), engine, embedded)
    try:
        yield rt
    finally:
        rt.close()


def _start_embedded(settings: Settings, wait_s: float = 15.0) -> EmbeddedRedis:
    """The embedded server on its data directory; one that is still in use (a server
    finishing its last write, or a rewrite) is waited for, a running `wangge run`'s
    is refused with the way to share it."""
    where = settings.path(settings.redis.embedded_dir)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            rs = settings.redis
            return EmbeddedRedis(
                where, persist=rs.embedded_persist, binary=rs.embedded_server
            ).start()
        except DirectoryInUse as exc:
            from pipelines.cli.console import read_run_file

            if time.monotonic() > deadline or read_run_file(settings) is not None:
                raise SystemExit(
                    f"error: {exc}. To work beside it, set REDIS_URL to its Redis"
                    " (`wangge status` shows it)."
                ) from None
            time.sleep(0.5)


@contextmanager
def installation_redis(settings: Settings) -> Iterator[redis.Redis | None]:
    """The Redis holding this installation's data, for a command run beside (or
    instead of) `wangge run`: ``redis.url``; else the running `wangge run`'s embedded
    server (its run file); else the embedded server's kept data, started on its
    directory for the command (``redis.embedded_persist``); else None (nothing kept)."""
    from pipelines.cli.console import read_run_file

    running = read_run_file(settings)
    url = settings.redis.url or (running or {}).get("redis") or ""
    where = settings.path(settings.redis.embedded_dir)
    kept = settings.redis.embedded_persist and any(where.glob("appendonly*"))
    embedded = None
    if not url and kept:
        embedded = _start_embedded(settings)
        url = embedded.url
    r = connect(url) if url else None
    try:
        yield r
    finally:
        if r is not None:
            r.close()
        if embedded is not None:
            embedded.stop()


def pipeline_client(settings: Settings) -> Any:
    """The pipelines' Redis client: a reply overdue by ``redis.socket_timeout_s`` raises
    (the worker exits, its supervisor restarts it) instead of hanging on a dead peer; TCP
    keep-alive and a health check before reusing an idle connection."""
    return connect(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
    )


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


@contextmanager
def session_store(settings: Settings) -> Iterator[sessions.Sessions | None]:
    """The dashboard's session store (to end a user's sessions at once), or None when no
    Redis is configured (the embedded one of `wangge run` is private): the sessions then
    end at their next re-check of the account, within ``sessions.RECHECK_MS``."""
    if not settings.redis.url:
        yield None
        return
    r = connect(settings.redis.url, socket_timeout=5, socket_connect_timeout=3)
    a = settings.auth
    try:
        yield sessions.Sessions(
            r,
            global_prefix(settings),
            idle_ms=int(a.idle_minutes * 60_000),
            max_ms=int(a.session_max_hours * 3_600_000),
        )
    finally:
        r.close()
