"""The Redis live-state contract: the key layout, the writes and the reads.

Everything live sits under one prefix ``P`` (``wg`` by default; tests use their own):

=============================== ======= =================================================
key                             type    meaning
=============================== ======= =================================================
P:<stream>                      stream  the feeds (reports, locations, video, deadletter)
P:inc:<incident_id>             hash    live incident, a function of its accepted events (SQL):
                                        status, ts, cat, sev, grid/street/district/city,
                                        lon, lat, open, overdue, dl (deadline), acc (the
                                        events' effects: entry,step,ts,day,min,hour,level;)
P:live:open                     hash    area_id → open incidents
P:live:open_cat / open_sev      hash    "area_id|category" / "area_id|severity" → open
P:live:overdue                  hash    area_id → open incidents past their deadline
P:live:deadlines                zset    incident_id → deadline (ms), open and not overdue
P:live:open_inc:<street_id>     set     open incident ids in a street (map markers)
P:d:<YYYYMMDD>:<metric>         hash    per local day: reports, resolved, closed, video,
                                        coverage (area_id → n); reports_cat, video_label,
                                        closed_level ("area_id|x" → n)
P:d:<YYYYMMDD>:patrolled        set     grids visited by a worker that day
P:d:<YYYYMMDD>:vseen            hash    alert_id → its creating (and shown) entry, what it counted
                                        ("entry|grid|street|district|city|label|min|hour")
P:m:<epoch_minute>              hash    "r|area_id" reports, "v|area_id" video alerts
P:h:<epoch_hour>                hash    the same per hour (24-hour trend)
P:live:ticker:<area_id>         list    latest events (JSON), city / district / street
P:live:pos                      hash    worker_id → "lon,lat,ts,grid_id,acc,speed,battery,mock"
P:live:seen                     zset    worker_id → last ping ts (ms)
P:live:online                   hash    area_id → workers online (written by the clock job)
P:live:meta                     hash    freshness: tick_ms, last_<feed>_ms, …
P:live:dl_count                 hash    reason → dead letters; "<stream>|<reason>" → n
P:live:warn_level               hash    area_id → highest open warning level (0 none … 4 red)
P:live:warn_count               hash    "area_id|level" → open warnings (written by warnings)
P:live:warnings                 hash    warning_id → open warning (JSON: level, status, area,
                                        rule, first/last seen, escalated_to, summary)
P:live:warn_lease               string  the early-warning evaluator holding the lease
P:dl:seen:<YYYYMMDD>            set     "<stream>|<entry_id>" already dead-lettered
=============================== ======= =================================================

Area ids are unique across levels, so one hash per metric serves every level; the
dashboard reads any area with one HGET/HMGET. SQL decides which events are accepted
(``aggregate.decide_reports``, ``aggregate.decide_alert_versions``); every write that counts is
a Lua script that sets an incident's state or an alert id's owner and applies the
difference to the counters in the same atomic step, so redelivery changes nothing and
the counters are a function of the accepted events. Counters that reach 0 are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pipelines.spine.scripts import (
    _ALERTS_LUA,
    _DEADLETTER_LUA,
    _INCIDENTS_LUA,
    _LOCATIONS_LUA,
    _OVERDUE_LUA,
    ALERT_FIELDS,
    DAY_METRICS,
    INCIDENT_FIELDS,
)

__all__ = ["ALERT_FIELDS", "DAY_METRICS", "INCIDENT_FIELDS", "Keys", "LiveState"]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; the only place that spells them."""

    prefix: str

    def stream(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def inc(self, incident_id: str) -> str:
        return f"{self.prefix}:inc:{incident_id}"

    def live(self, name: str) -> str:
        return f"{self.prefix}:live:{name}"

    def day(self, day: str, metric: str) -> str:
        return f"{self.prefix}:d:{day}:{metric}"

    def minute(self, epoch_minute: int) -> str:
        return f"{self.prefix}:m:{epoch_minute}"

    def hour(self, epoch_hour: int) -> str:
        return f"{self.prefix}:h:{epoch_hour}"

    def ticker(self, area_id: str) -> str:
        return self.live(f"ticker:{area_id}")

    def open_incidents(self, street_id: str) -> str:
        return self.live(f"open_inc:{street_id}")

    def pattern(self) -> str:
        return f"{self.prefix}:*"


def _s(value: Any) -> str:
    """Redis replies are bytes (decode_responses is off); text for our keys and fields."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _flat(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


class LiveState:
    """Writes and reads of the live state for one Redis client and prefix."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        ticker_length: int = 50,
        day_ttl_s: int = 8 * 86400,
        bucket_ttl_s: int = 26 * 3600,
        closed_ttl_s: int = 72 * 3600,
        deadletter: str = "deadletter",
    ) -> None:
        self.r = client
        self.keys = Keys(prefix)
        self.prefix = prefix
        self.ticker_length = ticker_length
        self.day_ttl_s = day_ttl_s
        self.bucket_ttl_s = bucket_ttl_s
        self.closed_ttl_s = closed_ttl_s
        self.deadletter_key = self.keys.stream(deadletter)
        self._incidents = client.register_script(_INCIDENTS_LUA)
        self._alerts = client.register_script(_ALERTS_LUA)
        self._locations = client.register_script(_LOCATIONS_LUA)
        self._deadletter = client.register_script(_DEADLETTER_LUA)
        self._overdue = client.register_script(_OVERDUE_LUA)

    # ------------------------------------------------------------ writes

    def push_incidents(self, rows: Sequence[Sequence[Any]]) -> int:
        """Set incidents' live state (rows: id, mode, new state, state before, tickers;
        states as INCIDENT_FIELDS tuples; see ``_INCIDENTS_LUA``); returns how many
        changed."""
        if not rows:
            return 0
        rows = [(i, mode, "\x1f".join(new), "\x1f".join(old), tk) for i, mode, new, old, tk in rows]
        head: list[Any] = [
            self.prefix,
            self.ticker_length,
            self.day_ttl_s,
            self.bucket_ttl_s,
            self.closed_ttl_s,
        ]
        return int(self._incidents(args=head + _flat(rows)))

    def set_alerts(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Set the owner of alert ids (rows: alert id, entry, ALERT_FIELDS, losers as
        [(entry, day)]); one letter per alert, A applied now or R already applied."""
        if not rows:
            return []
        args: list[Any] = [self.prefix, self.ticker_length, self.day_ttl_s, self.bucket_ttl_s]
        for alert_id, entry, fields, losers in rows:
            args += [alert_id, entry, *fields, len(losers), *_flat(losers)]
        return [_s(x) for x in self._alerts(args=args)]

    def apply_locations(
        self,
        workers: Sequence[tuple[str, int, str]],
        patrolled: Sequence[tuple[str, str, str, str, str]],
    ) -> None:
        if not workers and not patrolled:
            return
        args = [self.prefix, self.day_ttl_s, len(workers), *_flat(workers), *_flat(patrolled)]
        self._locations(args=args)

    def dead_letter(self, rows: Sequence[tuple[str, str, str, str, bytes, str]]) -> int:
        """(stream, entry_id, reason, detail, payload, day) → newly written count."""
        if not rows:
            return 0
        args = [self.prefix, self.deadletter_key, 9 * 86400, 1_000_000, *_flat(rows)]
        return int(self._deadletter(args=args))

    def restore_dead_letter_counts(
        self, rows: Sequence[tuple[str, str, str, str, bytes, str]]
    ) -> None:
        """Rebuild dead-letter counters and dedupe sets (the stream itself is kept)."""
        pipe = self.r.pipeline(transaction=False)
        for stream, entry, reason, _detail, _payload, day in rows:
            seen = f"{self.prefix}:dl:seen:{day}"
            pipe.sadd(seen, f"{stream}|{entry}")
            pipe.expire(seen, 9 * 86400)
            pipe.hincrby(self.keys.live("dl_count"), reason, 1)
            pipe.hincrby(self.keys.live("dl_count"), f"{stream}|{reason}", 1)
        pipe.execute()

    def sweep_overdue(self, now_ms: int, limit: int = 5000) -> int:
        total = 0
        while True:
            n = int(self._overdue(args=[self.prefix, now_ms, limit]))
            total += n
            if n < limit:
                return total

    def set_online(self, counts: dict[str, int]) -> None:
        key = self.keys.live("online")
        tmp = key + ":tmp"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        if counts:
            pipe.hset(tmp, mapping=dict(counts.items()))
            pipe.rename(tmp, key)
        else:
            pipe.delete(key)
        pipe.execute()

    def set_warnings(
        self, counts: Mapping[str, Mapping[str, int]], items: Mapping[str, bytes] | None = None
    ) -> None:
        """Replace the open warnings: counts area → {level: n} (derives warn_level too) and,
        when given, the list (warning_id → JSON), in one transaction.

        Written by the early-warning engine after each evaluation and after each user
        action; read by the panels and the early-warning page.
        """
        rank = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}
        flat = {f"{a}|{lv}": n for a, by in counts.items() for lv, n in by.items() if n}
        top = {
            a: max((rank[lv] for lv, n in by.items() if n), default=0) for a, by in counts.items()
        }
        top = {a: v for a, v in top.items() if v}
        pipe = self.r.pipeline(transaction=True)
        tables: list[tuple[str, Mapping[str, Any]]] = [("warn_count", flat), ("warn_level", top)]
        if items is not None:
            tables.append(("warnings", items))
        for name, mapping in tables:
            key = self.keys.live(name)
            pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=dict(mapping.items()))
        pipe.execute()

    def set_meta(self, **values: Any) -> None:
        self.r.hset(self.keys.live("meta"), mapping={k: str(v) for k, v in values.items()})

    # ------------------------------------------------------------ reads

    AREA_LIVE = ("open", "overdue", "online", "warn_level")
    AREA_DAY = ("reports", "resolved", "closed", "video", "coverage")

    def read_areas(
        self,
        area_ids: Sequence[str],
        day: str,
        focus: str,
        hours: Sequence[int],
        breakdowns: Mapping[str, tuple[str, Sequence[Any]]],
        ticker_n: int = 20,
    ) -> dict[str, Any]:
        """Everything a panel shows, in one round trip.

        Per-area metrics for ``area_ids`` (live: open, overdue, online, warn_level; today:
        reports, resolved, closed, video, coverage), and for the ``focus`` area its
        breakdowns (name → (hash metric, values)), hourly report/video counts and ticker.
        """
        ids = list(area_ids)
        pipe = self.r.pipeline(transaction=False)
        for m in self.AREA_LIVE:
            pipe.hmget(self.keys.live(m), ids)
        for m in self.AREA_DAY:
            pipe.hmget(self.keys.day(day, m), ids)
        names = list(breakdowns)
        for name in names:
            metric, values = breakdowns[name]
            key = (
                self.keys.live(metric)
                if metric.startswith("open") or metric.startswith("warn")
                else self.keys.day(day, metric)
            )
            pipe.hmget(key, [f"{focus}|{v}" for v in values])
        for kind in ("r", "v"):
            for h in hours:
                pipe.hget(self.keys.hour(h), f"{kind}|{focus}")
        pipe.lrange(self.keys.ticker(focus), 0, ticker_n - 1)
        pipe.hgetall(self.keys.live("meta"))
        res = pipe.execute()
        out: dict[str, Any] = {}
        i = 0
        for m in (*self.AREA_LIVE, *self.AREA_DAY):
            out[m] = [int(v or 0) for v in res[i]]
            i += 1
        out["breakdowns"] = {}
        for name in names:
            values = breakdowns[name][1]
            out["breakdowns"][name] = {v: int(g or 0) for v, g in zip(values, res[i], strict=True)}
            i += 1
        n = len(hours)
        out["hourly_reports"] = [int(v or 0) for v in res[i : i + n]]
        out["hourly_video"] = [int(v or 0) for v in res[i + n : i + 2 * n]]
        i += 2 * n
        out["ticker"] = [orjson.loads(x) for x in res[i]]
        out["meta"] = {_s(k): _s(v) for k, v in res[i + 1].items()}
        return out

    def metric_for(self, metric: str, area_ids: Sequence[str], day: str) -> list[int]:
        """One metric (live or today's) for many areas, e.g. all 12,545 grids."""
        key = self.keys.live(metric) if metric in self.AREA_LIVE else self.keys.day(day, metric)
        return [int(v or 0) for v in self.r.hmget(key, list(area_ids))]

    def positions_of(self, worker_ids: Sequence[str]) -> dict[str, str]:
        if not worker_ids:
            return {}
        got = self.r.hmget(self.keys.live("pos"), list(worker_ids))
        return {w: _s(p) for w, p in zip(worker_ids, got, strict=True) if p}

    def meta(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.live("meta")).items()}

    def counts(self, metric: str, area_ids: Sequence[str], day: str | None = None) -> list[int]:
        """One metric for many areas: live ("open", "overdue", "online") or per-day."""
        if not area_ids:
            return []
        key = self.keys.day(day, metric) if day else self.keys.live(metric)
        return [int(v or 0) for v in self.r.hmget(key, list(area_ids))]

    def counts_all(self, metric: str, day: str | None = None) -> dict[str, int]:
        key = self.keys.day(day, metric) if day else self.keys.live(metric)
        return {_s(k): int(v) for k, v in self.r.hgetall(key).items()}

    def breakdown(
        self, metric: str, area_id: str, values: Sequence[Any], day: str | None = None
    ) -> dict[Any, int]:
        """A "area|x" hash (open_cat, open_sev, reports_cat, video_label, closed_level)."""
        key = self.keys.day(day, metric) if day else self.keys.live(metric)
        got = self.r.hmget(key, [f"{area_id}|{v}" for v in values])
        return {v: int(g or 0) for v, g in zip(values, got, strict=True)}

    def hourly(self, kind: str, area_id: str, hours: Sequence[int]) -> list[int]:
        """Counts per epoch hour for kind "r" (reports) or "v" (video alerts)."""
        pipe = self.r.pipeline(transaction=False)
        for h in hours:
            pipe.hget(self.keys.hour(h), f"{kind}|{area_id}")
        return [int(v or 0) for v in pipe.execute()]

    def ticker(self, area_id: str, n: int = 20) -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in self.r.lrange(self.keys.ticker(area_id), 0, n - 1)]

    def patrolled(self, day: str) -> set[str]:
        return {_s(g) for g in self.r.smembers(self.keys.day(day, "patrolled"))}

    def warnings(self) -> list[dict[str, Any]]:
        """The open warnings, as the engine last wrote them."""
        raw: Any = self.r.hvals(self.keys.live("warnings"))
        return [orjson.loads(v) for v in raw]

    def positions(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.positions_raw().items()}

    def positions_raw(self) -> dict[bytes, bytes]:
        """worker_id → packed position, undecoded (30,000 of them decode faster in bulk)."""
        raw: Any = self.r.hgetall(self.keys.live("pos"))
        return raw

    def workers_seen_since(self, since_ms: int) -> list[str]:
        seen = self.r.zrangebyscore(self.keys.live("seen"), since_ms, "+inf")
        return [_s(w) for w in seen]

    def open_incidents(self, street_id: str) -> list[dict[str, str]]:
        ids = [_s(i) for i in self.r.smembers(self.keys.open_incidents(street_id))]
        pipe = self.r.pipeline(transaction=False)
        fields = ("status", "cat", "sev", "grid", "lon", "lat", "ts", "overdue")
        for i in ids:
            pipe.hmget(self.keys.inc(i), fields)
        out = []
        for i, vals in zip(ids, pipe.execute(), strict=True):
            row = {f: (_s(v) if v else "") for f, v in zip(fields, vals, strict=True)}
            row["incident_id"] = i
            out.append(row)
        return out

    def incident(self, incident_id: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys.inc(incident_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    def deadletter_counts(self) -> dict[str, int]:
        return self.counts_all("dl_count")

    # ------------------------------------------------------------ housekeeping

    # The key families of the live state (everything ``rebuild-live`` rebuilds). Streams,
    # the dashboard's caches, sessions, rate limits and leases live beside them.
    FAMILIES = ("inc:", "d:", "m:", "h:", "dl:seen:", "live:")
    NOT_REBUILT = ("live:meta", "live:warn_lease")

    def live_keys(self, *, with_meta: bool = False) -> list[bytes]:
        """Every key of this prefix's live state (``FAMILIES``), meta only if asked."""
        skip = {f"{self.prefix}:{k}".encode() for k in self.NOT_REBUILT}
        if with_meta:
            skip.discard(self.keys.live("meta").encode())
        out: list[bytes] = []
        for family in self.FAMILIES:
            for key in self.r.scan_iter(match=f"{self.prefix}:{family}*", count=2000):
                if key not in skip:
                    out.append(key)
        return out

    def delete_live(self) -> int:
        """Delete this prefix's live state, meta included (a staging area, or a test)."""
        keys = self.live_keys(with_meta=True)
        n = 0
        for i in range(0, len(keys), 1000):
            n += int(self.r.unlink(*keys[i : i + 1000]))
        return n

    def switch_from(self, staged: LiveState) -> int:
        """Make the live state of ``staged`` (another prefix) this prefix's, atomically.

        One MULTI/EXEC: every staged key is RENAMEd onto its name here (keeping its
        TTL), every live-state key here that the staged state lacks is deleted, and the
        staged meta fields are merged into this meta (its consumer marks are kept).
        Redis runs a transaction as one step, so a reader sees either state, never a
        part of one. Returns the number of keys switched."""
        staged_meta = staged.keys.live("meta").encode()
        keys = staged.live_keys(with_meta=True)
        meta: Any = staged.r.hgetall(staged_meta) if staged_meta in keys else {}
        stale = set(self.live_keys())
        cut = len(staged.prefix)
        pipe = self.r.pipeline(transaction=True)
        for key in keys:
            if key == staged_meta:
                continue
            target = self.prefix.encode() + key[cut:]
            pipe.rename(key, target)
            stale.discard(target)
        for key in stale:
            pipe.unlink(key)
        if meta:
            pipe.hset(self.keys.live("meta"), mapping=meta)
            pipe.unlink(staged_meta)
        pipe.execute()
        return len(keys) - (1 if meta else 0)
