"""What every protocol handler shares: who is sending, may it, and into which stream.

A :class:`Gateway` is built once per process (in the ASGI app's lifespan). State is
explicit: the credential cache, the registries and the Redis scripts live on it, never
in module globals. The clock is passed in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, select
from starlette.concurrency import run_in_threadpool

from pipelines.city.geography import City, GridIndex
from pipelines.gateway import credentials as cr
from pipelines.gateway.errors import GatewayError
from pipelines.gateway.publish import AsyncPublisher, Outgoing, Published
from pipelines.gateway.ratelimit import AsyncLimiter
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.partitions import global_prefix, keys_of

log = logging.getLogger("wangge.gateway")
Clock = Callable[[], float]


@dataclass
class Registry:
    """The roster (worker → own grid) and camera registry (camera → grid), re-read from
    SQL every ``reload_s`` and, at most every few seconds, when asked for an unknown id."""

    engine: Engine
    reload_s: float
    clock: Clock = time.monotonic
    workers: dict[str, str] = field(default_factory=dict)
    cameras: dict[str, str] = field(default_factory=dict)
    loaded: float = -1e18

    def load(self) -> None:
        with self.engine.connect() as conn:
            w, c = store.workers, store.cameras
            self.workers = {a: b for a, b in conn.execute(select(w.c.worker_id, w.c.grid_id))}
            self.cameras = {a: b for a, b in conn.execute(select(c.c.camera_id, c.c.grid_id))}
        self.loaded = self.clock()

    def due(self, missing: bool) -> bool:
        age = self.clock() - self.loaded
        return age > self.reload_s or (missing and age > 5.0)


@dataclass
class Gateway:
    settings: Settings
    r: aioredis.Redis
    engine: Engine
    city: City
    index: GridIndex
    clock: Clock = time.time
    creds: cr.CredentialCache = field(init=False)
    registry: Registry = field(init=False)
    limiter: AsyncLimiter = field(init=False)
    publisher: AsyncPublisher = field(init=False)
    _reloading: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _snapshot_task: asyncio.Task[None] | None = field(init=False, default=None)
    actions: Any = field(init=False, default=None)  # the dispatch core's context (tasks.py)

    def __post_init__(self) -> None:
        gs = self.settings.gateway
        self.creds = cr.CredentialCache(gs.credential_cache_s)
        self.registry = Registry(self.engine, gs.registry_reload_s)
        gen = cr.generation_key(self.gprefix)
        self.limiter = AsyncLimiter(self.r, self.gprefix, gen)
        self.publisher = AsyncPublisher(self.r)

    # ------------------------------------------------------------ names

    @property
    def prefix(self) -> str:
        return self.settings.redis.prefix

    @property
    def gprefix(self) -> str:
        """The prefix of the rate limits and the credential generation (one slot)."""
        return global_prefix(self.settings)

    @property
    def keys(self) -> Any:
        """The key layout (``state.Keys``: partitions, hash tags)."""
        return keys_of(self.settings)

    def stream(self, feed: str, partition: int = 0) -> str:
        return str(self.keys.stream(getattr(self.settings.streams, feed), partition))

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, "gw", *parts))

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------ who is sending

    async def authenticate(self, secret: str | None, client: str) -> cr.Credential:
        """The live credential of ``secret``; 401 if missing, unknown or revoked, 429
        when this client address failed too often."""
        gs = self.settings.gateway
        fail_bucket = f"gwfail:{client}"
        self.refresh_credentials()
        hit, cred = self.creds.get(secret) if secret else (False, None)
        if not hit:  # a look-up in SQL: not for an address that failed too often
            try:
                failed = await self.r.get(f"{self.gprefix}:rl:{fail_bucket}:n")
            except redis.RedisError as exc:
                raise unavailable(exc) from exc
            if failed is not None and int(failed) >= gs.auth_failures_per_minute:
                raise GatewayError(429, "too_many_failures", "too many failed authentications")
            cred = await self.credential(secret) if secret else None
        if cred is None or cred.revoked:
            try:
                v = await self.limiter.hit(
                    fail_bucket, gs.auth_failures_per_minute, self.now_ms(), 1
                )
            except redis.RedisError as exc:
                raise unavailable(exc) from exc
            why = "missing key" if not secret else "unknown or revoked key"
            if not v.admitted:
                raise GatewayError(429, "too_many_failures", "too many failed authentications")
            raise GatewayError(401, "unauthorized", why)
        return cred

    async def credential(self, secret: str) -> cr.Credential | None:
        self.refresh_credentials()
        hit, cred = self.creds.get(secret)
        if hit:
            return cred
        cred = await run_in_threadpool(cr.lookup, self.engine, secret)
        self.creds.put(secret, cred)
        return cred

    def refresh_credentials(self) -> None:
        """Re-read the snapshot of live credentials in the background when it is due
        (requests go on with the previous one, or single look-ups, meanwhile)."""
        if self.creds.snapshot_due() and self._snapshot_task is None:
            self._snapshot_task = asyncio.get_running_loop().create_task(self._load_snapshot())

    async def _load_snapshot(self) -> None:
        taken = self.creds.clock()
        try:
            snap = await run_in_threadpool(cr.load_active, self.engine)
            self.creds.replace_snapshot(snap, taken)
        except Exception as exc:  # SQL down: single look-ups go on; retried when due
            log.warning("credential snapshot: %s", exc)
            self.creds.snapshot_at = taken
        finally:
            self._snapshot_task = None

    async def admit(self, cred: cr.Credential, secret: str, cost: int) -> None:
        """The credential's rate limit (cost = events); re-checks a cached credential when
        a revocation happened meanwhile (the generation counter moved)."""
        gen_before = self.creds.generation
        try:
            v = await self.limiter.hit(
                f"gw:{cred.credential_id}", cred.rate(self.settings.gateway), self.now_ms(), cost
            )
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        if self.creds.seen_generation(v.generation) or v.generation != gen_before:
            fresh = await self.credential(secret)
            if fresh is None or fresh.revoked:
                raise GatewayError(401, "unauthorized", "unknown or revoked key")
        if not v.admitted:
            raise GatewayError(
                429,
                "rate_limited",
                f"over {cred.rate(self.settings.gateway)} events per minute",
                headers={"Retry-After": str(v.retry_after_s)},
            )

    # ------------------------------------------------------------ registries and geography

    async def registry_fresh(self, missing: bool = False) -> Registry:
        reg = self.registry
        if reg.due(missing):
            async with self._reloading:
                if reg.due(missing):
                    await run_in_threadpool(reg.load)
        return reg

    async def worker_grid(self, worker_id: str) -> str | None:
        reg = await self.registry_fresh()
        if worker_id not in reg.workers:
            reg = await self.registry_fresh(missing=True)
        return reg.workers.get(worker_id)

    async def camera_grid(self, camera_id: str) -> str | None:
        reg = await self.registry_fresh()
        if camera_id not in reg.cameras:
            reg = await self.registry_fresh(missing=True)
        return reg.cameras.get(camera_id)

    def in_area(self, area_or_grid: str | None, area_id: str | None) -> bool:
        """Is the area (or grid) inside ``area_id`` (itself included)?"""
        if area_or_grid is None or area_id is None:
            return False
        return area_id in self.city.ancestors(area_or_grid)

    def grids_of(self, lon: Sequence[float], lat: Sequence[float]) -> list[str | None]:
        """The grid of each point (None outside the city)."""
        if not len(lon):
            return []
        idx = self.index.assign(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
        ids = self.city.grids["grid_id"]
        return [ids[int(i)] if i >= 0 else None for i in idx]

    # ------------------------------------------------------------ writing

    async def publish(self, feed: str, events: Sequence[Outgoing]) -> Published:
        try:
            name = getattr(self.settings.streams, feed)
            return await self.publisher.publish_feed(self.keys, feed, name, events)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc


def unavailable(exc: Exception) -> GatewayError:
    log.warning("redis: %s", exc)
    return GatewayError(503, "unavailable", "the stream store is unavailable; retry later")


def scalar_attrs(values: Mapping[str, Any], limit: int = 32, max_len: int = 256) -> dict[str, Any]:
    """Extra protocol values kept with an event: scalars only, bounded in number and size."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if len(out) >= limit:
            break
        number = isinstance(v, bool | int | float) and not (isinstance(v, float) and v != v)
        if number or (isinstance(v, str) and len(v) <= max_len):
            out[str(k)[:64]] = v
    return out
