"""Feed health: how fresh each feed's applied data is and whether its pipeline keeps up.

Written by the pipelines (per-feed "last applied" record, worker restart times), read
by the dashboard (freshness per feed), the warnings engine (the ``system`` rule) and
``wangge status``. The decisions are pure functions of a :class:`FeedHealth` and the
clock value; the Redis reads and writes are thin.

Redis keys (P = prefix):

    P:live:feeds              hash   <feed>:event_ms (newest applied event time),
                                     <feed>:applied_ms (when a batch was last applied)
    P:live:restarts:<feed>    zset   one member per worker restart, scored by its time
    P:live:backfill           string how far a running backfill is (0..1), expiring
                                     ``PROGRESS_TTL_S`` after its last progress
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from pipelines.spine.streams import group_info, reply_text

FEEDS = ("reports", "locations", "video")
HOUR_MS = 3_600_000
LAG_SCAN_CAP = 10_000  # when Redis cannot tell a group's lag, count at most this many


def feeds_key(prefix: str) -> str:
    return f"{prefix}:live:feeds"


def restarts_key(prefix: str, feed: str) -> str:
    return f"{prefix}:live:restarts:{feed}"


# A long job's progress (backfill, replay) that stops reporting (its process killed) stops
# being shown this long after.
PROGRESS_TTL_S = 30


@dataclass(frozen=True)
class Progress:
    """How far a long job of a first start is (0..1), in Redis for the screens and
    ``wangge status``; the mark expires ``PROGRESS_TTL_S`` after its last update."""

    name: str

    def key(self, prefix: str) -> str:
        return f"{prefix}:live:{self.name}"

    def mark(self, r: redis.Redis, prefix: str, fraction: float) -> None:
        r.set(self.key(prefix), f"{min(max(fraction, 0.0), 1.0):.4f}", ex=PROGRESS_TTL_S)

    def clear(self, r: redis.Redis, prefix: str) -> None:
        r.delete(self.key(prefix))

    def read(self, r: redis.Redis, prefix: str) -> float | None:
        """How far the job is, or None when none runs."""
        raw = r.get(self.key(prefix))
        if raw is None:
            return None
        try:
            return min(max(float(reply_text(raw)), 0.0), 1.0)
        except ValueError:
            return None


# A backfill runs: its backlog in the feeds is expected (the screens say so rather than
# call the feeds stale).
BACKFILL = Progress("backfill")
# The warnings of a backfilled past are being evaluated (the live warnings start after:
# the screens say why none is listed yet).
REPLAY = Progress("replay")


# Keep the newest event time (a redelivered or late batch never moves it back).
_MARK = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
return 1
"""


def mark_applied(r: redis.Redis, prefix: str, feed: str, event_ms: int, applied_ms: int) -> None:
    """Record that a batch of ``feed`` was applied at ``applied_ms``; ``event_ms`` is the
    newest event time in it (0 when the batch applied nothing new)."""
    r.eval(
        _MARK, 1, feeds_key(prefix), f"{feed}:event_ms", event_ms, f"{feed}:applied_ms", applied_ms
    )


def record_restart(r: redis.Redis, prefix: str, feed: str, now_ms: int, name: str = "") -> None:
    """One worker restart of ``feed`` at ``now_ms``; entries older than a day are dropped."""
    key = restarts_key(prefix, feed)
    pipe = r.pipeline()
    pipe.zadd(key, {f"{now_ms}:{name}": now_ms})
    pipe.zremrangebyscore(key, "-inf", now_ms - 24 * HOUR_MS)
    pipe.expire(key, 2 * 24 * 3600)
    pipe.execute()


@dataclass(frozen=True)
class FeedHealth:
    """What is known about one feed at one moment (all times epoch ms; 0 = never)."""

    feed: str
    length: int = 0  # entries in the stream
    lag: int = 0  # entries the group has not yet read
    pending: int = 0  # read but not acknowledged
    oldest_pending_ms: int = 0  # entry time of the oldest pending entry (0 = none)
    event_ms: int = 0  # newest applied event
    applied_ms: int = 0  # last batch applied
    restarts: tuple[int, ...] = ()  # worker restart times
    dead: dict[str, int] = field(default_factory=dict)  # dead letters by reason

    def pending_age_s(self, now_ms: int) -> int:
        return max(0, (now_ms - self.oldest_pending_ms) // 1000) if self.oldest_pending_ms else 0

    def event_age_s(self, now_ms: int) -> int | None:
        return max(0, (now_ms - self.event_ms) // 1000) if self.event_ms else None

    def restarts_within(self, now_ms: int, window_ms: int = HOUR_MS) -> int:
        return sum(1 for t in self.restarts if now_ms - window_ms < t <= now_ms)


@dataclass(frozen=True)
class Thresholds:
    """When a feed counts as stale (``[live]``) and when restarts mean a crash loop."""

    max_lag: int = 1000
    max_pending_s: int = 60
    max_restarts_hour: int = 3


def stalled(
    lag: int, pending: int, pending_age_s: int, restarts_1h: int, th: Thresholds, backfill: bool
) -> list[str]:
    """The one test of whether a feed's pipeline keeps up (the screens' freshness line,
    `wangge status`, the system warning): why it does not (``lag``, ``pending``,
    ``restarts``; empty: it does). While a backfill runs (``backfill``), a backlog is
    its own, not a stall; a stuck batch or a crash loop still is."""
    out = []
    if lag > th.max_lag and not backfill:
        out.append("lag")
    if pending and pending_age_s > th.max_pending_s:
        out.append("pending")
    if restarts_1h >= th.max_restarts_hour:
        out.append("restarts")
    return out


def stale_reasons(h: FeedHealth, th: Thresholds, now_ms: int, backfill: bool = False) -> list[str]:
    """Why ``h`` is stale (empty: it keeps up): ``lag``, ``pending``, ``restarts``."""
    return stalled(
        h.lag, h.pending, h.pending_age_s(now_ms), h.restarts_within(now_ms), th, backfill
    )


def thresholds_of(settings: Any) -> Thresholds:
    live = settings.live
    return Thresholds(
        max_lag=live.stale_lag,
        max_pending_s=live.stale_pending_s,
        max_restarts_hour=live.stale_restarts_hour,
    )


# -------------------------------------------------------------------- reads


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-")[0])


def _group_state(r: redis.Redis, key: str, group: str) -> tuple[int, int, int]:
    """(lag, pending, oldest pending entry ms) of ``group`` on stream ``key``."""
    g = group_info(r, key, group)
    if g is None:  # no group yet (or no stream): nothing has been read
        return int(r.xlen(key)), 0, 0
    lag_v = g.get("lag")
    if lag_v is None:  # Redis cannot tell after trims: count what follows last-delivered
        last = reply_text(g["last-delivered-id"])
        after: Any = r.xrange(key, min=f"({last}", max="+", count=LAG_SCAN_CAP)
        lag_v = len(after)
    pending = int(g["pending"])
    oldest = 0
    if pending:
        summary = r.xpending(key, group)
        low = summary.get("min") if summary else None
        oldest = _id_ms(reply_text(low)) if low else 0
    return int(lag_v), pending, oldest


def feed_state(r: redis.Redis, settings: Any, feed: str) -> tuple[int, int, int, int]:
    """(lag, pending, oldest pending entry ms, length) of a feed over its partitions."""
    from pipelines.spine.clockjob import live_state

    keys = live_state(r, settings).keys
    lag = pending = oldest = length = 0
    for key in keys.feed_streams(getattr(settings.streams, feed)):
        lg, pd, old = _group_state(r, key, settings.streams.group)
        lag, pending, length = lag + lg, pending + pd, length + int(r.xlen(key))
        oldest = min(oldest, old) if oldest and old else (oldest or old)
    return lag, pending, oldest, length


def read_health(r: redis.Redis, settings: Any, now_ms: int) -> dict[str, FeedHealth]:
    """Every feed's health (a handful of Redis calls per partition)."""
    from pipelines.spine.clockjob import live_state

    prefix = settings.redis.prefix
    marks = {reply_text(k): int(reply_text(v)) for k, v in r.hgetall(feeds_key(prefix)).items()}
    dead = _dead_by_reason(live_state(r, settings).deadletter_counts())
    out = {}
    for feed in FEEDS:
        lag, pending, oldest, length = feed_state(r, settings, feed)
        restarts = r.zrangebyscore(restarts_key(prefix, feed), now_ms - 24 * HOUR_MS, now_ms)
        out[feed] = FeedHealth(
            feed=feed,
            length=length,
            lag=lag,
            pending=pending,
            oldest_pending_ms=oldest,
            event_ms=marks.get(f"{feed}:event_ms", 0),
            applied_ms=marks.get(f"{feed}:applied_ms", 0),
            restarts=tuple(int(reply_text(m).split(":")[0]) for m in restarts),
            dead=dead.get(feed, {}),
        )
    return out


def _dead_by_reason(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """feed → reason → dead letters (from the live ``dl_count`` counters)."""
    out: dict[str, dict[str, int]] = {}
    for k, v in counts.items():
        stream, sep, reason = k.partition("|")
        if sep:  # the other fields are totals per reason over every stream
            out.setdefault(stream, {})[reason] = v
    return out


def freshness_rows(
    feeds: dict[str, FeedHealth], th: Thresholds, now_ms: int, backfill: bool = False
) -> list[dict[str, Any]]:
    """Per feed, in ``FEEDS`` order: the newest applied event's age (None: never) and why
    the feed is stale (empty: it keeps up; ``backfill``: one runs, see ``stalled``).
    JSON-ready (shared between viewers)."""
    return [
        {
            "feed": f,
            "age_s": feeds[f].event_age_s(now_ms),
            "why": stale_reasons(feeds[f], th, now_ms, backfill),
        }
        for f in FEEDS
        if f in feeds
    ]
