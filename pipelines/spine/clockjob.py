"""The clock job (periodic, idempotent housekeeping: overdue sweep, online counts, stream
trimming, track retention) and the live state of a set of settings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import Engine

from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine.state import LiveState
from pipelines.spine.streams import trim_acknowledged

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
        partitions=s.streams.partitions,
        tagged=s.redis.cluster,
    )


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
        """Track points past ``privacy.track_retention_days``, every ``purge_every_minutes``
        (and at the first tick); the history tables' partitions ahead are created first."""
        p = self.settings.privacy
        if self.engine is None or now_ms - self.purged_ms < p.purge_every_minutes * 60_000:
            return {}
        from sqlalchemy.exc import SQLAlchemyError

        from pipelines.gridwork.tracks import purge_tracks
        from pipelines.spine.store.partitions import ensure_partitions

        self.purged_ms = now_ms
        try:  # partitions of the current and next periods first (PostgreSQL; at start too)
            ensure_partitions(self.engine, now_ms, self.settings.live.timezone)
        except SQLAlchemyError as exc:  # the default partition takes the rows meanwhile
            log.warning("partitions: %s", str(exc).splitlines()[0])
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
            grids = [v.split(",")[3] for v in self.state.positions_of(online_ids).values()]
        counts = agg.online_counts(grids, self.city.grids)
        self.state.set_online(counts)
        trimmed = 0
        for name in self.feed_streams():
            for key in self.state.keys.feed_streams(name):
                trimmed += trim_acknowledged(self.r, key)
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
