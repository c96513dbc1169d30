"""What the dashboard reads through: one ``Backend`` per server process.

It holds the city, the live-state reader (``pipelines.spine.state``), the SQL engine
(``pipelines.spine.store``) and a tick-aligned cache shared by every viewer and every gunicorn
worker (in Redis), so a panel is computed once per refresh tick, not once per viewer.
Callbacks reach it with ``current()`` (stored on the Flask app, not in a module global).

The cache is reached only through :meth:`Backend.cached`, which takes the viewer's granted
:class:`dashboard.auth.Decision`: the permission is decided first, on every request, and
the cache holds data keyed by what it is (name, area, the decision's data class, the other
inputs, the tick), never a viewer, a permission decision or a refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import polars as pl
import redis
from flask import current_app
from sqlalchemy import Engine, select

from dashboard.auth import Decision
from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import live_state
from pipelines.spine.state import LiveState

Clock = Callable[[], float]
T = TypeVar("T")
EXTENSION = "wangge"
log = logging.getLogger("wangge.dashboard")


@dataclass
class SharedCache:
    """Values computed once per key and shared: in-process first, then Redis."""

    r: redis.Redis
    prefix: str
    local: dict[str, tuple[float, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    computed: int = 0

    def local_only(self, key: str, ttl_s: float, compute: Callable[[], Any]) -> Any:
        """In-process memo (for values that are cheap to recompute per worker)."""
        now = time.monotonic()
        with self.lock:
            hit = self.local.get(key)
            if hit and hit[0] > now:
                return hit[1]
        value = compute()
        with self.lock:
            self.local[key] = (now + ttl_s, value)
        return value

    def get(self, key: str, ttl_s: float, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self.lock:
            hit = self.local.get(key)
            if hit and hit[0] > now:
                return hit[1]
        rkey = f"{self.prefix}:dash:{key}"
        raw = self.r.get(rkey)
        if raw is None and not self.r.set(rkey + ":lock", 1, nx=True, px=3000):
            for _ in range(30):  # someone else is computing it: wait briefly
                time.sleep(0.02)
                raw = self.r.get(rkey)
                if raw is not None:
                    break
        if raw is not None:
            value = orjson.loads(raw)  # type: ignore[arg-type,unused-ignore]
        else:
            try:
                value = compute()
            except BaseException:  # nothing cached; the next viewer computes at once
                self.r.delete(rkey + ":lock")
                raise
            self.computed += 1
            self.r.set(rkey, orjson.dumps(value), px=max(1, int(ttl_s * 1000)))
            self.r.delete(rkey + ":lock")
        with self.lock:
            if len(self.local) > 2000:
                self.local = {k: v for k, v in self.local.items() if v[0] > now}
            self.local[key] = (now + ttl_s, value)
        return value


PAST_KEPT = 16  # past pictures kept per process (each holds a window of history rows)
PAST_TTL_S = 300.0


@dataclass
class Backend:
    settings: Settings
    city: City
    r: redis.Redis
    engine: Engine
    clock: Clock = time.time
    _roster: pl.DataFrame | None = None
    _roster_at: float = 0.0
    _warm: dict[str, tuple[float, Callable[[], Any]]] = field(default_factory=dict)
    _warm_lock: threading.Lock = field(default_factory=threading.Lock)
    # the last few past moments' pictures (a played day asks for a new one each second)
    _past: OrderedDict[str, tuple[float, Any]] = field(default_factory=OrderedDict)
    _past_lock: threading.Lock = field(default_factory=threading.Lock)
    _warmer: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.live: LiveState = live_state(self.r, self.settings)
        self.cache = SharedCache(self.r, self.settings.redis.prefix)
        grids = self.city.grids
        counts: dict[str, int] = {}
        for col in ("grid_id", "street_id", "district_id", "city_id"):
            for area, n in grids.group_by(col).len().iter_rows():
                counts[area] = counts.get(area, 0) + n
        self.grid_counts = counts
        self.grid_street = dict(
            zip(grids["grid_id"].to_list(), grids["street_id"].to_list(), strict=True)
        )
        areas = self.city.areas
        self.area_names: dict[str, str] = dict(
            zip(areas["area_id"].to_list(), areas["name"].to_list(), strict=True)
        )
        self.area_centres: dict[str, tuple[float, float]] = {
            a: (float(x), float(y)) for a, x, y in areas.select("area_id", "lon", "lat").iter_rows()
        }

    @property
    def refresh_s(self) -> float:
        return self.settings.dashboard.refresh_s

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def tick(self) -> int:
        """The current refresh tick: viewers within one tick share computed values."""
        return int(self.clock() // self.refresh_s)

    def cached(
        self,
        grant: Decision,
        name: str,
        compute: Callable[[], T],
        *parts: object,
        shared: bool = False,
        warm: bool = False,
        period_s: float | None = None,
    ) -> T:
        """``compute()`` for this period, computed once and reused by every viewer whose
        decision grants the same area and data class.

        ``grant`` must be granted (:func:`dashboard.auth.authorize`, made for this request):
        a refusal is never looked up nor stored. The key is what the data is: ``name``, the
        granted area, the data class, ``parts`` (the other inputs ``compute`` depends on)
        and the period (the refresh tick, or ``period_s``). ``compute`` must depend on
        nothing else (never on the session). ``shared``: through Redis for every gunicorn
        worker (JSON values), else in this process. ``warm``: the prewarmer recomputes it
        at each tick boundary while viewers keep asking. An exception from ``compute``
        (a backend error) propagates and nothing is cached."""
        key = self.cache_key(grant, name, *parts)
        period = period_s or self.refresh_s

        def lookup() -> T:
            slot = f"{key}:{int(self.clock() // period)}"
            if shared:
                value: T = self.cache.get(slot, period, compute)
            else:
                value = self.cache.local_only(slot, period, compute)
            return value

        if warm:
            self._keep_warm(key, lookup)
        return lookup()

    def cache_key(self, grant: Decision, name: str, *parts: object) -> str:
        """What a shared value is (never who asked): name, the granted area, the data class
        and the other inputs. Only for a granted decision."""
        if not grant.granted:
            raise PermissionError(f"{name}: no cached read without a granted decision")
        return ":".join([name, grant.area_id, grant.data_class, *map(str, parts)])

    def tick_input(self, name: str, compute: Callable[[], T]) -> T:
        """A city-wide input of this tick (e.g. every worker's parsed position), memoised
        per process for the computations of :meth:`cached`; never itself sent to a viewer."""
        value: T = self.cache.local_only(f"in:{name}:{self.tick()}", self.refresh_s, compute)
        return value

    def _keep_warm(self, key: str, compute: Callable[[], Any]) -> None:
        """Ask the prewarmer to recompute ``compute`` at the start of every tick while
        viewers keep asking for it (so no viewer request pays for a computation)."""
        with self._warm_lock:
            self._warm[key] = (self.clock(), compute)
            if self._warmer is None:
                self._warmer = threading.Thread(target=self._prewarm, name="prewarm", daemon=True)
                self._warmer.start()

    def _prewarm(self) -> None:
        while True:
            now = self.clock()  # align with the app's ticks, just after each boundary
            time.sleep(self.refresh_s - (now % self.refresh_s) + 0.02)
            with self._warm_lock:
                cutoff = self.clock() - 120
                self._warm = {k: v for k, v in self._warm.items() if v[0] >= cutoff}
                jobs = [fn for _, fn in self._warm.values()]
            for fn in jobs:
                try:
                    fn()
                except Exception:  # a backend blip: the viewer's own call reports it
                    log.debug("prewarm failed", exc_info=True)

    def online_ms(self, at_ms: int | None = None) -> int:
        """How recently a worker must have been seen to count as online, live or at the
        moment ``at_ms`` (widened inside a simulated past: ``pipelines.history.spans``)."""
        from pipelines.history import spans

        base = self.settings.live.online_minutes
        if at_ms is None:
            return base * 60_000
        return spans.online_minutes_at(self.engine, base, at_ms) * 60_000

    def past(self, at_ms: int, area_id: str | None = None) -> Any:
        """The city at a past moment (``pipelines.history.HistoricState``: the live
        state's reads, rebuilt from SQL), of one area and what is inside it (the whole
        city when None), built once per moment, area and process and kept a few minutes
        (the last ``PAST_KEPT``). Only for an area the viewer was granted (the caller
        decides first)."""
        from pipelines.history.state import HistoricState

        def build() -> HistoricState:
            return HistoricState(
                self.engine,
                self.city,
                self.settings,
                at_ms,
                now_ms=self.now_ms(),
                area_id=area_id,
            )

        key = f"{int(at_ms)}:{area_id or ''}"
        with self._past_lock:
            got = self._past.get(key)
            if got is not None and got[0] > self.clock():
                self._past.move_to_end(key)
                return got[1]
        value = build()  # outside the lock: SQL reads (two viewers may both build once)
        with self._past_lock:
            self._past[key] = (self.clock() + PAST_TTL_S, value)
            while len(self._past) > PAST_KEPT:
                self._past.popitem(last=False)
        return value

    def roster(self) -> pl.DataFrame:
        """Workers (id, name, type, grid, street, district); reloaded every 5 minutes."""
        if self._roster is None or self.clock() - self._roster_at > 300:
            frame = store.read_frame(self.engine, select(store.workers))
            if frame.is_empty():
                frame = pl.DataFrame(schema={c.name: pl.String for c in store.workers.columns})
            chain = self.city.grids.select("grid_id", "street_id", "district_id", "city_id")
            self._roster = frame.join(chain, on="grid_id", how="left")
            self._roster_at = self.clock()
        return self._roster

    def on_duty(self) -> dict[str, int]:
        """Rostered workers per area (every level)."""
        roster = self.roster()
        out: dict[str, int] = {}
        for col in ("grid_id", "street_id", "district_id", "city_id"):
            for area, n in roster.drop_nulls(col).group_by(col).len().iter_rows():
                out[area] = out.get(area, 0) + n
        return out


def current() -> Backend:
    backend: Backend = current_app.extensions[EXTENSION]
    return backend
