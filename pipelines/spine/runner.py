"""Wires source → pure transforms → sinks, for one feed per worker process.

One batch: read (claimed, own pending, new) → decode + validate → assign grids →
write live state (Lua, idempotent by event id) → dead-letter rejects → persist to SQL
(idempotent) → XACK. A crash anywhere before XACK means redelivery; every effect
above is keyed by event id (or entry id), so redelivery changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import redis
from sqlalchemy import Engine, select

from pipelines import warnings
from pipelines.city.geography import City, GridIndex
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import decode_batch
from pipelines.spine.state import LiveState
from pipelines.spine.streams import Batch, Consumer, ensure_group, trim_acknowledged

log = logging.getLogger("wangge.runner")

Clock = Callable[[], float]


def live_state(r: redis.Redis, s: Settings) -> LiveState:
    return LiveState(
        r,
        s.redis.prefix,
        ticker_length=s.live.ticker_length,
        day_ttl_s=s.live.day_ttl_days * 86400,
        bucket_ttl_s=s.live.bucket_ttl_hours * 3600,
        closed_ttl_s=s.live.closed_incident_ttl_hours * 3600,
        deadletter=s.streams.deadletter,
    )


@dataclass
class BatchResult:
    applied: int = 0
    updated: int = 0  # video: later revisions of known alerts, applied in place
    redelivered: int = 0
    dead: int = 0
    acked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class WrittenCache:
    """What this worker process already wrote, so certain no-op writes can be skipped.

    Only an optimisation: every write stays idempotent, the cache is empty after a
    restart and is cleared every ``ttl_s`` (so it heals after e.g. a rebuild-live).
    Entries are added only after the Redis and SQL writes succeeded.
    """

    ttl_s: float = 300.0
    visits: set[tuple[str, str]] = field(default_factory=set)  # (day, grid) applied + stored
    slots: dict[str, int] = field(default_factory=dict)  # worker → track slot stored
    born: float = 0.0

    def fresh(self, now: float) -> WrittenCache:
        if now - self.born > self.ttl_s:
            self.visits.clear()
            self.slots.clear()
            self.born = now
        return self

    def new_visits(self, df: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``df`` whose (day, grid_id) is not known to be written."""
        if not self.visits or df.is_empty():
            return df
        pairs = zip(df["day"].to_list(), df["grid_id"].to_list(), strict=True)
        return df.filter(pl.Series([p not in self.visits for p in pairs], dtype=pl.Boolean))

    def new_slots(self, df: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``df`` whose (worker_id, slot) is not the worker's known written slot."""
        if not self.slots or df.is_empty():
            return df
        got = self.slots.get
        pairs = zip(df["worker_id"].to_list(), df["slot"].to_list(), strict=True)
        return df.filter(pl.Series([got(w) != s for w, s in pairs], dtype=pl.Boolean))


@dataclass
class FeedWorker:
    """Processes batches of one feed. State is explicit: nothing module-global."""

    feed: str
    settings: Settings
    city: City
    index: GridIndex
    state: LiveState
    engine: Engine
    consumer: Consumer
    clock: Clock = time.time
    cameras: dict[str, tuple[float, float]] = field(default_factory=dict)
    written: WrittenCache = field(default_factory=WrittenCache)
    # Latest positions not yet in SQL's snapshot table (flushed every few s and when idle;
    # the pings themselves are persisted as track points before every XACK).
    positions: dict[str, tuple[int, str]] = field(default_factory=dict)
    positions_flushed: float = 0.0
    _cameras_loaded_at: float = 0.0
    # One thread for a Redis call that overlaps SQL work of the same batch.
    _background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="wangge-live")
    )

    # ---------------------------------------------------------------- loop

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()

    def step(self) -> BatchResult:
        batch = self.consumer.read()
        if not len(batch):
            self.flush_positions()
            return BatchResult()
        result = self.process(batch)
        if self.clock() - self.positions_flushed >= self.settings.pipelines.positions_flush_s:
            self.flush_positions()
        return result

    def flush_positions(self) -> None:
        if self.positions:
            rows = [(w, ts, p) for w, (ts, p) in self.positions.items()]
            store.persist_positions(self.engine, rows)
            self.positions.clear()
        self.positions_flushed = self.clock()

    # ---------------------------------------------------------------- one batch

    def process(self, batch: Batch) -> BatchResult:
        s = self.settings
        now_ms = int(self.clock() * 1000)
        payloads = dict(batch.entries)
        payloads.update(batch.poison)
        good, dead = decode_batch(
            self.feed,
            batch.entries,
            now_ms=now_ms,
            future_skew_ms=s.streams.future_skew_s * 1000,
            max_age_ms=s.streams.max_age_days * 86_400_000,
            max_payload_bytes=s.streams.max_payload_bytes,
        )
        dead_parts = [dead]
        if batch.poison:
            dead_parts.append(_dead(batch.poison, "max_deliveries", "delivered too often"))
        if self.feed == "video":
            good, unknown = self._camera_locations(good)
            dead_parts.append(_dead_of(unknown, payloads, "unknown_camera", "camera_id"))
        if not good.is_empty():
            gi = self.index.assign(good["lon"].to_numpy(), good["lat"].to_numpy())
            good, outside = agg.split_outside(agg.with_grid(good, gi, self.city.grids))
            dead_parts.append(_dead_of(outside, payloads, "outside_city", "lon/lat"))
            good = agg.with_time_keys(good, s.live.timezone)
        result = BatchResult()
        keep = getattr(self, f"_apply_{self.feed}")(good, payloads, dead_parts, result)
        # Live state written: freshness, and how far this consumer got (before SQL + XACK).
        marks: dict[str, Any] = {f"last_{self.feed}_ms": now_ms}
        if batch.entries:
            marks[f"applied:{self.consumer.name}"] = batch.entries[-1][0]
        self.state.set_meta(**marks)
        dead_parts = [d for d in dead_parts if d.height]
        dead_all = _in_stream_order(pl.concat(dead_parts)) if dead_parts else dead
        self._dead_letter(dead_all, now_ms)
        self._persist(keep)
        ids = [e for e, _ in batch.entries] + [e for e, _ in batch.poison]
        self.consumer.ack(ids)
        result.dead = dead_all.height
        result.acked = len(ids)
        for r in dead_all["reason"].to_list():
            result.reasons[r] = result.reasons.get(r, 0) + 1
        return result

    def _apply_reports(
        self,
        good: pl.DataFrame,
        payloads: dict[str, bytes],
        dead: list[pl.DataFrame],
        result: BatchResult,
    ) -> pl.DataFrame:
        rows = agg.report_rows(good, self.settings.deadlines)
        status = self.state.apply_reports(rows)
        ordered = pl.DataFrame({"entry_id": [r[1] for r in rows], "_st": status})
        good = good.join(ordered, on="entry_id", how="left")
        return self._sort_out(
            good, payloads, dead, result, {"D": "duplicate", "T": "bad_transition"}
        )

    def _apply_video(
        self,
        good: pl.DataFrame,
        payloads: dict[str, bytes],
        dead: list[pl.DataFrame],
        result: BatchResult,
    ) -> pl.DataFrame:
        rows = agg.video_rows(good)
        status = self.state.apply_video(rows)
        good = good.with_columns(_st=pl.Series(status, dtype=pl.String)) if rows else good
        return self._sort_out(good, payloads, dead, result, {"D": "duplicate"})

    def _apply_locations(
        self,
        good: pl.DataFrame,
        payloads: dict[str, bytes],
        dead: list[pl.DataFrame],
        result: BatchResult,
    ) -> pl.DataFrame:
        result.applied = good.height
        if good.is_empty():
            return good
        cache = self.written.fresh(self.clock())
        latest = agg.latest_positions(good)
        visits = cache.new_visits(agg.first_visits(good))
        patrolled = agg.patrolled_grids(visits)
        # Redis runs the live-state script while this thread writes SQL (GIL released in
        # socket and SQLite calls); both are done before the batch is acknowledged.
        live = self._background.submit(self.state.apply_locations, latest, patrolled)
        try:
            every = self.settings.pipelines.persist_tracks_every_s
            points = cache.new_slots(agg.track_slots(good, every))
            store.persist_patrols(self.engine, visits)
            store.persist_tracks(self.engine, points)
        finally:
            live.result()
        cache.visits.update((p[0], p[1]) for p in patrolled)
        cache.slots.update(
            zip(points["worker_id"].to_list(), points["slot"].to_list(), strict=True)
        )
        for w, ts, packed in latest:
            if ts >= self.positions.get(w, (0, ""))[0]:
                self.positions[w] = (ts, packed)
        return good

    def _sort_out(
        self,
        good: pl.DataFrame,
        payloads: dict[str, bytes],
        dead: list[pl.DataFrame],
        result: BatchResult,
        rejects: dict[str, str],
    ) -> pl.DataFrame:
        if good.is_empty():
            return good
        for code, reason in rejects.items():
            dead.append(_dead_of(good.filter(pl.col("_st") == code), payloads, reason, ""))
        result.applied = int((good["_st"] == "A").sum())
        result.updated = int((good["_st"] == "U").sum())
        result.redelivered = int((good["_st"] == "R").sum())
        # S (a stale revision of a known alert) has no effect: acknowledged, not stored.
        return good.filter(pl.col("_st").is_in(["A", "R", "U"])).drop("_st")

    # ---------------------------------------------------------------- sinks

    def _persist(self, good: pl.DataFrame) -> None:
        if good.is_empty():
            return
        if self.feed == "reports":
            store.persist_report_events(self.engine, agg.report_history(good))
        elif self.feed == "video":
            store.persist_video(self.engine, agg.video_history(good))
        # locations: track points and patrols are written with the live state

    def _dead_letter(self, dead: pl.DataFrame, now_ms: int) -> None:
        if dead.is_empty():
            return
        stream = self.feed
        rows = [
            (stream, e, reason, detail or "", payload, str(int(e.split("-")[0]) // 86_400_000))
            for e, payload, reason, detail in dead.iter_rows()
        ]
        self.state.dead_letter(rows)
        store.persist_dead_letters(
            self.engine,
            (
                {
                    "stream": stream,
                    "entry_id": e,
                    "reason": reason,
                    "detail": detail,
                    "payload": payload,
                    "received_ms": now_ms,
                }
                for e, payload, reason, detail in dead.iter_rows()
            ),
        )

    # ---------------------------------------------------------------- cameras

    def _camera_locations(self, good: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Fill missing video lon/lat from the camera registry; unknown cameras split off."""
        missing = good.filter(pl.col("lon").is_null())
        if missing.is_empty():
            return good, good.clear()
        ids = missing["camera_id"].unique().to_list()
        if any(c not in self.cameras for c in ids) and self.clock() - self._cameras_loaded_at > 5:
            self.reload_cameras()
        reg = pl.DataFrame(
            {
                "camera_id": list(self.cameras),
                "_lon": [v[0] for v in self.cameras.values()],
                "_lat": [v[1] for v in self.cameras.values()],
            },
            schema={"camera_id": pl.String, "_lon": pl.Float64, "_lat": pl.Float64},
        )
        good = (
            good.join(reg, on="camera_id", how="left", maintain_order="left")
            .with_columns(lon=pl.coalesce("lon", "_lon"), lat=pl.coalesce("lat", "_lat"))
            .drop("_lon", "_lat")
        )
        known = pl.col("lon").is_not_null()
        return good.filter(known), good.filter(~known)

    def reload_cameras(self) -> None:
        cams = store.cameras_frame(self.engine)
        self.cameras = {
            c: (lon, lat) for c, lon, lat in cams.select("camera_id", "lon", "lat").iter_rows()
        }
        self._cameras_loaded_at = self.clock()


def _dead(entries: list[tuple[str, bytes]], reason: str, detail: str) -> pl.DataFrame:
    from pipelines.spine.events import DEADLETTER_SCHEMA

    return pl.DataFrame(
        {
            "entry_id": [e for e, _ in entries],
            "payload": [p for _, p in entries],
            "reason": [reason] * len(entries),
            "detail": [detail] * len(entries),
        },
        schema=DEADLETTER_SCHEMA,
    )


def _in_stream_order(df: pl.DataFrame) -> pl.DataFrame:
    parts = pl.col("entry_id").str.split_exact("-", 1)
    return df.sort(
        parts.struct.field("field_0").cast(pl.Int64), parts.struct.field("field_1").cast(pl.Int64)
    )


def _dead_of(
    rows: pl.DataFrame, payloads: dict[str, bytes], reason: str, detail: str
) -> pl.DataFrame:
    ids = rows["entry_id"].to_list() if not rows.is_empty() else []
    return _dead([(e, payloads[e]) for e in ids], reason, detail)


# -------------------------------------------------------------------- the clock job


@dataclass
class ClockJob:
    """Periodic, idempotent housekeeping with the clock passed in."""

    settings: Settings
    city: City
    state: LiveState
    r: redis.Redis
    clock: Clock = time.time
    engine: Engine | None = None  # given: the track-retention purge runs here too
    purged_ms: int = 0

    def purge(self, now_ms: int) -> dict[str, int]:
        """Track points past ``privacy.track_retention_days``, every ``purge_every_minutes``."""
        p = self.settings.privacy
        if self.engine is None or now_ms - self.purged_ms < p.purge_every_minutes * 60_000:
            return {}
        from sqlalchemy.exc import SQLAlchemyError

        from pipelines.gridwork.tracks import purge_tracks

        self.purged_ms = now_ms
        try:
            return purge_tracks(self.engine, p.track_retention_days, now_ms)
        except SQLAlchemyError as exc:  # retried at the next period; never stops the clock
            log.warning("track purge: %s", str(exc).splitlines()[0])
            return {}

    def tick(self) -> dict[str, Any]:
        now_ms = int(self.clock() * 1000)
        self.purge(now_ms)
        overdue = self.state.sweep_overdue(now_ms)
        since = now_ms - self.settings.live.online_minutes * 60_000
        online_ids = self.state.workers_seen_since(since)
        grids: list[str] = []
        if online_ids:
            raw: Any = self.r.hmget(self.state.keys.live("pos"), online_ids)
            grids = [v.decode().split(",")[3] for v in raw if v]
        counts = agg.online_counts(grids, self.city.grids)
        self.state.set_online(counts)
        trimmed = 0
        for name in self.feed_streams():
            trimmed += trim_acknowledged(self.r, self.state.keys.stream(name))
        self.state.set_meta(tick_ms=now_ms)
        return {"overdue": overdue, "online": len(grids), "trimmed": trimmed}

    def feed_streams(self) -> tuple[str, ...]:
        st = self.settings.streams
        return (st.reports, st.locations, st.video)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except (redis.RedisError, OSError) as exc:
                log.warning("clock job: %s", exc)
            stop.wait(self.settings.pipelines.tick_s)


def stream_name(settings: Settings, feed: str) -> str:
    return str(getattr(settings.streams, feed))


def make_worker(
    feed: str,
    settings: Settings,
    city: City,
    index: GridIndex,
    r: redis.Redis,
    engine: Engine,
    name: str,
    clock: Clock = time.time,
) -> FeedWorker:
    state = live_state(r, settings)
    key = state.keys.stream(stream_name(settings, feed))
    ensure_group(r, key, settings.streams.group)
    consumer = Consumer(
        r,
        key,
        settings.streams.group,
        name,
        count=settings.streams.batch_size,
        block_ms=settings.streams.block_ms,
        claim_idle_ms=settings.streams.claim_idle_ms,
        max_deliveries=settings.streams.max_deliveries,
    )
    w = FeedWorker(feed, settings, city, index, state, engine, consumer, clock=clock)
    if feed == "video":
        w.reload_cameras()
    return w


# -------------------------------------------------------------------- rebuild-live


def rebuild_live(
    settings: Settings, city: City, r: redis.Redis, engine: Engine, clock: Clock = time.time
) -> dict[str, int]:
    """Rebuild the Redis live state of this prefix from SQL (streams are kept).

    Replays the stored history through the same transforms and Lua scripts the
    pipelines use, in time order, so the result equals what they had built.
    """
    state = live_state(r, settings)
    state.clear(keep_streams=True)
    tz = settings.live.timezone
    counts = {"reports": 0, "video": 0, "positions": 0, "patrols": 0, "dead_letters": 0}
    city_col = pl.lit(city.city_id).alias("city_id")
    for chunk in store.events_in_order(engine, store.incident_events):
        df = agg.with_time_keys(chunk.rename({"ts_ms": "ts"}).with_columns(city_col), tz)
        state.apply_reports(agg.report_rows(df, settings.deadlines))
        counts["reports"] += df.height
    for chunk in store.events_in_order(engine, store.video_alerts):
        df = agg.with_time_keys(chunk.rename({"ts_ms": "ts"}).with_columns(city_col), tz)
        state.apply_video(agg.video_rows(df))
        counts["video"] += df.height
    pos = store.read_frame(engine, select(store.worker_positions))
    rows = list(pos.select("worker_id", "ts_ms", "packed").iter_rows()) if pos.height else []
    for i in range(0, len(rows), 5000):
        state.apply_locations(rows[i : i + 5000], [])
    counts["positions"] = len(rows)
    visits = store.read_frame(engine, select(store.patrols))
    if visits.height:
        chain = visits.join(city.grids.select(agg.CHAIN), on="grid_id", how="inner")
        tuples = list(chain.select("day", *agg.CHAIN).iter_rows())
        for i in range(0, len(tuples), 5000):
            state.apply_locations([], tuples[i : i + 5000])
        counts["patrols"] = len(tuples)
    for chunk in store.events_in_order(engine, store.dead_letters):
        dl = [
            (s, e, reason, detail or "", payload or b"", str(int(e.split("-")[0]) // 86_400_000))
            for s, e, reason, detail, payload in chunk.select(
                "stream", "entry_id", "reason", "detail", "payload"
            ).iter_rows()
        ]
        state.restore_dead_letter_counts(dl)
        counts["dead_letters"] += len(dl)
    counts["warnings"] = warnings.republish(engine, state, city)
    ClockJob(settings, city, state, r, clock=clock).tick()
    return counts
