"""The warnings engine: reads inputs (SQL + Redis, incrementally), runs the due rules,
applies the lifecycle, persists, and writes the live warning list and counts.

One engine runs per key prefix (a Redis lease); state kept between ticks is explicit (the
engine's input caches, rebuilt from SQL after a restart)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import redis
from sqlalchemy import Engine, and_, case, func, or_, select
from sqlalchemy.exc import SQLAlchemyError

from pipelines.city.geography import City
from pipelines.gridwork import tracks as work
from pipelines.ops import metrics
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.clockjob import live_state
from pipelines.spine.events import STEPS
from pipelines.spine.state import LiveState
from pipelines.warnings.lifecycle import Warning, update_open
from pipelines.warnings.model import (
    AWAY_SCHEMA,
    BASELINE_SCHEMA,
    DAY_MS,
    HOUR_MS,
    INCIDENT_OPTIONAL,
    INCIDENTS_SCHEMA,
    MINUTE_MS,
    OPEN_STATUSES,
    REPORTS_SCHEMA,
    SPREAD_SCHEMA,
    STREAMS_SCHEMA,
    VIDEO_BASELINE_SCHEMA,
    VIDEO_SCHEMA,
    VISITS_SCHEMA,
    WORKERS_SCHEMA,
    Areas,
    Finding,
    Rule,
    RuleConfig,
    RuleInputs,
    empty,
)
from pipelines.warnings.rules import RULES, post_process, run_rules
from pipelines.warnings.store import (
    _frame,
    open_warnings,
    persist,
    publish_live,
    quiet_keys,
    warnings_from_frame,
)

Clock = Callable[[], float]


# The runner's input caches (reports, visits) are rebuilt from SQL this often, and the
# track points of this long before the previous read are read again on every tick.
FULL_READ_EVERY_MS = HOUR_MS


LATE_OVERLAP_MS = 10 * MINUTE_MS  # how late a row may land and still be seen next tick


log = logging.getLogger(__name__)


def tick_summary(res: dict[str, Any], ids_shown: int = 5) -> str:
    """One console line for a tick that opened or cleared warnings: the counts and the
    first new ids (a first tick over a week of history opens a hundred at once)."""
    ids = list(res.get("new_ids", []))
    more = f" +{len(ids) - ids_shown} more" if len(ids) > ids_shown else ""
    shown = f" ({', '.join(ids[:ids_shown])}{more})" if ids else ""
    counts = ", ".join(f"{res[k]} {k}" for k in ("new", "updated", "cleared", "open"))
    return f"{counts}; {res['findings']} findings{shown}"


@dataclass
class WarningEngine:
    """Reads inputs (SQL + Redis), evaluates every rule, applies the lifecycle, persists,
    and writes the live warning counts. State kept between ticks is explicit: the cached
    frames below (a performance cache — a restart rebuilds them from SQL)."""

    settings: Settings
    city: City
    r: redis.Redis
    engine: Engine
    clock: Clock = time.time
    cfg: RuleConfig = field(init=False)
    areas: Areas = field(init=False)
    _workers: pl.DataFrame | None = field(default=None, init=False)
    _workers_ms: int = field(default=0, init=False)
    # reports within the horizon as of _reports_hi; last visit per grid as of _visits_hi
    _reports: pl.DataFrame | None = field(default=None, init=False)
    _reports_hi: int = field(default=0, init=False)
    _reports_full: int = field(default=0, init=False)
    _visits: pl.DataFrame | None = field(default=None, init=False)
    _visits_hi: int = field(default=0, init=False)
    _visits_full: int = field(default=0, init=False)
    _work: tuple[int, dict[str, pl.DataFrame]] | None = field(default=None, init=False)
    _incidents: pl.DataFrame | None = field(default=None, init=False)
    _incidents_hi: int = field(default=0, init=False)
    _incidents_full: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.cfg = RuleConfig.of(self.settings)
        self.areas = Areas.of(self.city)
        self.live: LiveState = live_state(self.r, self.settings)
        self._chain: dict[str, list[str]] = {}
        # slow rules' last evaluation: rule → (now_ms, findings), carried between runs
        self._carried: dict[str, tuple[int, list[Finding]]] = {}

    def ancestors(self, area_id: str) -> list[str]:
        got = self._chain.get(area_id)
        if got is None:
            got = self._chain[area_id] = self.areas.ancestors(area_id)
        return got

    # ---------------------------------------------------------------- inputs

    def read_inputs(self, now_ms: int) -> RuleInputs:
        cfg = self.cfg
        va = store.video_alerts
        reports = self.read_reports(now_ms)
        incidents = self.read_incidents(now_ms)
        vsince = now_ms - max(cfg.video_window_min, cfg.fusion_window_min) * MINUTE_MS
        video = _frame(
            self.engine,
            select(
                va.c.alert_id, va.c.camera_id, va.c.label, va.c.ts_ms, va.c.grid_id, va.c.street_id
            ).where(va.c.ts_ms > vsince, va.c.ts_ms <= now_ms),
            VIDEO_SCHEMA,
        )
        baseline, days = self.read_baseline(now_ms)
        vbase, vhours = self.read_video_baseline(now_ms)
        positions = self.read_positions(now_ms)
        return RuleInputs(
            areas=self.areas,
            reports=reports,
            incidents=incidents,
            video=video,
            visits=self.read_visits(now_ms, positions),
            workers=self.read_workers(now_ms, positions),
            baseline=baseline,
            baseline_days=days,
            video_baseline=vbase,
            video_baseline_h=vhours,
            **self.read_work(now_ms),
            streams=self.read_streams(now_ms),
        )

    def read_streams(self, now_ms: int) -> pl.DataFrame:
        """Each feed's pipeline health (lag, oldest pending age, restarts, whether a backfill
        runs) for ``system``."""
        from pipelines.spine.health import BACKFILL, read_health

        backfill = BACKFILL.read(self.r, self.settings.redis.prefix) is not None
        rows = [
            {
                "feed": h.feed,
                "lag": h.lag,
                "pending": h.pending,
                "pending_age_s": h.pending_age_s(now_ms),
                "restarts_1h": h.restarts_within(now_ms),
                "event_ms": h.event_ms,
                "backfill": backfill,
            }
            for h in read_health(self.r, self.settings, now_ms).values()
        ]
        return pl.DataFrame(rows, schema=STREAMS_SCHEMA)

    def _incremental(self, now_ms: int, hi: int, full_ms: int, cached: object) -> bool:
        """Whether this read may extend the cache (else: rebuild it from SQL)."""
        return cached is not None and hi <= now_ms and now_ms - full_ms < FULL_READ_EVERY_MS

    def read_incidents(self, now_ms: int) -> pl.DataFrame:
        """The open incidents reported within the SLA lookback, read incrementally.

        A full read goes through the status index (IN over the open steps). Between full
        reads, each tick re-reads only the incidents with an event since the previous read
        less an overlap (``LATE_OVERLAP_MS`` or the longest short window, as reports), via
        the events' time index, replaces them in the cache and drops the ones now closed.
        An event that arrives later than that overlap is seen at the next full read (every
        ``FULL_READ_EVERY_MS``, and after a restart).
        """
        inc, ev = store.incidents, store.incident_events
        since = now_ms - self.cfg.sla_lookback_days * DAY_MS
        cols = (
            inc.c.incident_id,
            inc.c.status,
            inc.c.category,
            inc.c.severity,
            inc.c.grid_id,
            inc.c.street_id,
            inc.c.reported_ms,
            inc.c.last_ms,
            *[inc.c[k] for k in INCIDENT_OPTIONAL if k in inc.c],
        )
        schema = {**INCIDENTS_SCHEMA, **{k: v for k, v in INCIDENT_OPTIONAL.items() if k in inc.c}}
        cached = self._incidents
        if self._incremental(now_ms, self._incidents_hi, self._incidents_full, cached):
            assert cached is not None
            lo = self._incidents_hi - max(LATE_OVERLAP_MS, self.cfg.recent_ms())
            touched = select(ev.c.incident_id).where(ev.c.ts_ms > lo, ev.c.ts_ms <= now_ms)
            fresh = _frame(
                self.engine,
                select(*cols).where(inc.c.incident_id.in_(touched), inc.c.reported_ms > since),
                schema,
            )
            kept = cached.filter(
                pl.col("reported_ms") > since,
                ~pl.col("incident_id").is_in(fresh["incident_id"].implode()),
            )
            got = pl.concat([kept, fresh.filter(pl.col("status") != "closed")])
        else:
            # IN over the open steps (not != "closed"): the status index reads only the
            # open incidents instead of scanning a month of them
            got = _frame(
                self.engine,
                select(*cols).where(
                    inc.c.reported_ms > since, inc.c.status.in_([x for x in STEPS if x != "closed"])
                ),
                schema,
            )
            self._incidents_full = now_ms
        self._incidents, self._incidents_hi = got, now_ms
        return got

    def read_reports(self, now_ms: int) -> pl.DataFrame:
        """ "reported" events within the horizon, read incrementally.

        Each tick re-reads the rows with ``ts_ms`` above (last read − the longest short
        window) and keeps the cached rows below it, so every short-window rule (threshold,
        surge, fusion) sees exactly what a full read would show, late arrivals included.
        Only a row arriving later than that window is missed by recurrence (7 days) until
        the next full read (every ``FULL_READ_EVERY_MS``, and after a restart).
        """
        ev = store.incident_events
        since = now_ms - self.cfg.horizon_ms()
        cols = (
            ev.c.event_id,
            ev.c.incident_id,
            ev.c.ts_ms,
            ev.c.category,
            ev.c.severity,
            ev.c.grid_id,
            ev.c.street_id,
            ev.c.lon,
            ev.c.lat,
        )
        if self._incremental(now_ms, self._reports_hi, self._reports_full, self._reports):
            assert self._reports is not None
            lo = max(since, self._reports_hi - self.cfg.recent_ms())
            kept = self._reports.filter(pl.col("ts_ms") > since, pl.col("ts_ms") <= lo)
        else:
            lo, kept = since, empty(REPORTS_SCHEMA)
            self._reports_full = now_ms
        fresh = _frame(
            self.engine,
            select(*cols).where(ev.c.ts_ms > lo, ev.c.ts_ms <= now_ms, ev.c.step == "reported"),
            REPORTS_SCHEMA,
        )
        self._reports = pl.concat([kept, fresh]) if kept.height else fresh
        self._reports_hi = now_ms
        return self._reports

    def read_work(self, now_ms: int) -> dict[str, pl.DataFrame]:
        """Per-worker track aggregates for left_grid and idle (tracks are 1/min: cached
        for the current minute)."""
        minute = now_ms // MINUTE_MS
        if self._work is not None and self._work[0] == minute:
            return self._work[1]
        tp, w = store.track_points, store.workers
        since = now_ms - self.cfg.left_grid_minutes * MINUTE_MS
        own = func.sum(case((tp.c.grid_id == w.c.grid_id, 1), else_=0))
        away = _frame(
            self.engine,
            select(
                tp.c.worker_id,
                func.count().label("n_points"),
                own.label("n_own"),
                func.min(tp.c.ts_ms).label("first_ms"),
                func.max(tp.c.ts_ms).label("last_ms"),
            )
            .join(w, w.c.worker_id == tp.c.worker_id)
            .where(tp.c.ts_ms > since, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.worker_id),
            AWAY_SCHEMA,
        )
        since = now_ms - self.cfg.idle_minutes * MINUTE_MS
        spread = _frame(
            self.engine,
            select(
                tp.c.worker_id,
                func.count().label("n_points"),
                func.min(tp.c.ts_ms).label("first_ms"),
                func.max(tp.c.ts_ms).label("last_ms"),
                func.min(tp.c.lon).label("lon_min"),
                func.max(tp.c.lon).label("lon_max"),
                func.min(tp.c.lat).label("lat_min"),
                func.max(tp.c.lat).label("lat_max"),
            )
            .where(tp.c.ts_ms > since, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.worker_id),
            SPREAD_SCHEMA,
        )
        self._work = (minute, {"away": away, "spread": spread})
        return self._work[1]

    def read_baseline(self, now_ms: int) -> tuple[pl.DataFrame, int]:
        """Reports per street × category in the same time-of-day window on past days."""
        cfg = self.cfg
        ev = store.incident_events
        with self.engine.connect() as conn:
            first = conn.execute(
                select(func.min(ev.c.ts_ms)).where(ev.c.step == "reported")
            ).scalar()
        if first is None:
            return empty(BASELINE_SCHEMA), 0
        win = cfg.surge_window_min * MINUTE_MS
        days = [
            k
            for k in range(1, cfg.surge_baseline_days + 1)
            if now_ms - k * DAY_MS - win >= int(first)
        ]
        if not days:
            return empty(BASELINE_SCHEMA), 0
        ranges = [
            and_(ev.c.ts_ms > now_ms - k * DAY_MS - win, ev.c.ts_ms <= now_ms - k * DAY_MS)
            for k in days
        ]
        q = (
            select(ev.c.street_id, ev.c.category, func.count().label("total"))
            .where(ev.c.step == "reported", or_(*ranges))
            .group_by(ev.c.street_id, ev.c.category)
        )
        return _frame(self.engine, q, BASELINE_SCHEMA), len(days)

    def read_video_baseline(self, now_ms: int) -> tuple[pl.DataFrame, float]:
        """Alerts per street × label over the trailing hours before the video window."""
        cfg, va = self.cfg, store.video_alerts
        hi = now_ms - cfg.video_window_min * MINUTE_MS
        lo = hi - cfg.video_baseline_h * HOUR_MS
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(va.c.ts_ms))).scalar()
        if first is None or int(first) > hi:
            return empty(VIDEO_BASELINE_SCHEMA), 0.0
        q = (
            select(va.c.street_id, va.c.label, func.count().label("total"))
            .where(va.c.ts_ms > lo, va.c.ts_ms <= hi)
            .group_by(va.c.street_id, va.c.label)
        )
        hours = (hi - max(lo, int(first))) / HOUR_MS
        return _frame(self.engine, q, VIDEO_BASELINE_SCHEMA), hours

    def read_visits(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        """Last visit per grid within the gap horizon: track points + live positions.

        The track-point part is incremental: each tick reads the points of the last
        ``LATE_OVERLAP_MS`` before the previous read onwards and keeps the newest per
        grid; a full read every ``FULL_READ_EVERY_MS`` (and after a restart) picks up
        points that arrived later than that.
        """
        tp = store.track_points
        since = now_ms - int(self.cfg.patrol_gap_hours * HOUR_MS)
        if self._incremental(now_ms, self._visits_hi, self._visits_full, self._visits):
            assert self._visits is not None
            lo, kept = max(since, self._visits_hi - LATE_OVERLAP_MS), self._visits
        else:
            lo, kept = since, empty(VISITS_SCHEMA)
            self._visits_full = now_ms
        fresh = _frame(
            self.engine,
            select(tp.c.grid_id, func.max(tp.c.ts_ms).label("last_ms"))
            .where(tp.c.ts_ms > lo, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.grid_id),
            VISITS_SCHEMA,
        )
        hist = (
            pl.concat([kept, fresh])
            .group_by("grid_id")
            .agg(pl.col("last_ms").max())
            .filter(pl.col("last_ms") > since)
        )
        self._visits, self._visits_hi = hist, now_ms
        pos = positions.select("grid_id", pl.col("ts_ms").alias("last_ms")).filter(
            pl.col("last_ms") > since, pl.col("last_ms") <= now_ms
        )
        return pl.concat([hist, pos]).group_by("grid_id").agg(pl.col("last_ms").max())

    def read_positions(self, now_ms: int) -> pl.DataFrame:
        """Every worker's latest ping from Redis (worker_id, lon, lat, ts_ms, grid_id). The
        packed position and the "seen" score are written together by one script, so its
        ``ts_ms`` is the worker's last ping."""
        return work.positions_frame(self.live.positions_raw())

    def read_workers(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        """The roster (cached 5 min) with each worker's last ping from Redis."""
        if self._workers is None or now_ms - self._workers_ms > 5 * MINUTE_MS:
            w = store.workers
            roster = store.read_frame(self.engine, select(w.c.worker_id, w.c.grid_id))
            if roster.is_empty():
                roster = empty({"worker_id": pl.String, "grid_id": pl.String})
            self._workers = roster.join(
                self.areas.grids.select("grid_id", "street_id"), on="grid_id", how="inner"
            )
            self._workers_ms = now_ms
        last = positions.select("worker_id", pl.col("ts_ms").alias("last_seen_ms"))
        return self._workers.join(last, on="worker_id", how="left").select(list(WORKERS_SCHEMA))

    # ---------------------------------------------------------------- schedule

    def lead(self, owner: str) -> bool:
        """Hold the evaluation lease (one evaluator per prefix, however many run)."""
        key, ttl = self.live.keys.live("warn_lease"), int(self.cfg.tick_s * 3000)
        if self.r.set(key, owner, nx=True, px=ttl):
            return True
        if self.r.get(key) == owner.encode():
            self.r.pexpire(key, ttl)
            return True
        return False

    def run(self, stop: threading.Event, owner: str) -> None:
        """Evaluate every ``tick_s`` while holding the lease, until ``stop``."""
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                if self.lead(owner):
                    t_tick = time.perf_counter()
                    res = self.tick()
                    metrics.observe_tick(time.perf_counter() - t_tick)
                    if res["new"] or res["cleared"]:
                        log.info("warnings: %s", tick_summary(res))
            except (redis.RedisError, OSError, SQLAlchemyError) as exc:
                log.warning("warnings: %s", str(exc).splitlines()[0])
            stop.wait(max(0.5, self.cfg.tick_s - (time.monotonic() - t0)))

    # ---------------------------------------------------------------- one tick

    def publish(self, warnings: list[Warning]) -> None:
        """The live warning list and per-area counts (every warning the tick knows)."""
        publish_live(self.live, warnings, self.ancestors)

    def due(self, now_ms: int, every_rule: bool = False) -> dict[str, Rule]:
        """The rules to evaluate now: every rule but a slow one evaluated recently."""

        def is_due(name: str) -> bool:
            last = self._carried.get(name)
            every = self.cfg.every_ms(name)
            return every_rule or last is None or not (0 <= now_ms - last[0] < every)

        return {name: rule for name, rule in RULES.items() if is_due(name)}

    def tick(self, every_rule: bool = False) -> dict[str, Any]:
        """One evaluation: read, run the due rules (slow rules' last findings carry over),
        fuse, apply the lifecycle, persist and publish. ``every_rule`` runs them all."""
        t0 = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        inputs = self.read_inputs(now_ms)
        t_read = time.perf_counter() - t0
        found, timings = run_rules(inputs, self.cfg, now_ms, self.due(now_ms, every_rule))
        for name, got in found.items():
            if self.cfg.every_ms(name):
                self._carried[name] = (now_ms, got)
        every_finding = [
            f for n in RULES for f in (found[n] if n in found else self._carried[n][1])
        ]
        findings, post = post_process(every_finding, inputs, self.cfg, now_ms)
        timings |= post
        t1 = time.perf_counter()
        olds = warnings_from_frame(open_warnings(self.engine))
        quiet = quiet_keys(self.engine, now_ms, self.cfg.dismiss_quiet_s)
        new, updated, cleared = update_open(olds, findings, now_ms, self.cfg, self.ancestors, quiet)
        persist(self.engine, new, updated, cleared, now_ms)
        changed = {w.warning_id: w for w in (*updated, *cleared)}
        still = [changed.get(w.warning_id, w) for w in olds] + new
        self.publish(still)
        t_write = time.perf_counter() - t1
        return {
            "now_ms": now_ms,
            "findings": len(findings),
            "new": len(new),
            "updated": len(updated),
            "cleared": len(cleared),
            "open": sum(1 for w in still if w.status in OPEN_STATUSES),
            "new_ids": [w.warning_id for w in new],
            "timings": {"read": t_read, **timings, "lifecycle_persist_live": t_write},
        }
