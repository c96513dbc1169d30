"""The Redis live-state contract: the key layout, the writes and the reads.

Everything live sits under one prefix ``P`` (``wg`` by default; tests use their own).
With one partition on one Redis ``P`` below is the plain prefix. With ``[streams]
partitions`` > 1 or on a Redis Cluster, ``P`` is a tagged base (``Keys``): the feed
streams and the per-entity keys (inc, open*, overdue, deadlines, open_inc, d:, m:, h:,
ticker, pos, seen) exist once per partition under ``P:{P.p<k>}`` (one cluster slot each),
the rest (meta, online, warn_*, warnings, dl_count, dl:seen, the dead-letter stream) once
under ``P:{P}``; readers sum, unite or merge the partitions.

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
P:live:gone:<incident_id>       string  an incident the script dropped (no accepted event
                                        left): it counts from nothing, whatever SQL held
                                        before (a batch whose commit failed); day TTL
P:d:<YYYYMMDD>:<metric>         hash    per local day: reports, resolved, closed, video,
                                        coverage (area_id → n); reports_cat, video_label,
                                        closed_level ("area_id|x" → n)
P:d:<YYYYMMDD>:patrolled        set     grids visited by a worker that day
P:d:<YYYYMMDD>:vseen            hash    alert_id → its creating (and shown) entry, what it counted
                                        ("entry|grid|street|district|city|label|min|hour")
P:h:<epoch_hour>                hash    "r|area_id" reports, "v|area_id" video alerts in
                                        that hour (the 24-hour trend)
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

from pipelines.spine.partitions import partition_of
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
from pipelines.spine.streams import reply_text

__all__ = ["ALERT_FIELDS", "DAY_METRICS", "INCIDENT_FIELDS", "Keys", "LiveState"]


# Live keys outside the partitions (one slot on a cluster: MULTI/EXEC over them works).
GLOBAL_LIVE = frozenset(
    ("meta", "online", "warn_level", "warn_count", "warnings", "warn_lease", "dl_count")
)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix; the only place that spells them.

    ``partitions`` > 1 or ``tagged`` (a Redis Cluster) puts a hash tag in every key: the
    keys of partition ``p`` are ``P:{P.p<p>}:…`` (one slot: a Lua script of a partition
    touches only them), the global ones (meta, warnings, dead letters, online counts)
    ``P:{P}:…``. Untagged (one partition on one Redis, the default) both are plain ``P:…``.
    ``stage`` names a staging area beside the live keys (rebuild-live): ``<base>:<stage>``,
    in the same slots, so the switch renames within a slot.
    """

    prefix: str
    partitions: int = 1
    tagged: bool = False
    stage: str = ""

    @property
    def is_tagged(self) -> bool:
        return self.tagged or self.partitions > 1

    def _base(self, tag: str) -> str:
        b = f"{self.prefix}:{{{tag}}}" if self.is_tagged else self.prefix
        return f"{b}:{self.stage}" if self.stage else b

    @property
    def base(self) -> str:
        """The base of the global keys."""
        return self._base(self.prefix)

    def part_base(self, p: int) -> str:
        """The base of partition ``p``'s keys (its streams and live state)."""
        return self._base(f"{self.prefix}.p{p}")

    def bases(self) -> list[str]:
        """Every distinct base: the global one first, then the partitions'."""
        out = [self.base]
        for p in range(self.partitions):
            b = self.part_base(p)
            if b not in out:
                out.append(b)
        return out

    def staged(self, stage: str) -> Keys:
        return Keys(self.prefix, self.partitions, self.tagged, stage)

    def anchor(self, base: str) -> str:
        """A key of ``base``'s slot, given to a script as its key (so a cluster client
        routes EVALSHA to the node serving that slot)."""
        return f"{base}:live:anchor"

    def registries(self) -> str:
        """How often the camera and worker registries were written to SQL (not live state:
        a video worker that meets a camera it does not know reloads its registry when this
        moved since it last read it)."""
        return f"{self.base}:registries"

    def stream(self, name: str, p: int | None = None) -> str:
        """A global stream (``p`` None: the dead letters) or partition ``p``'s feed stream."""
        return f"{self.base if p is None else self.part_base(p)}:{name}"

    def feed_streams(self, name: str) -> list[str]:
        return [self.stream(name, p) for p in range(self.partitions)]

    def inc(self, incident_id: str) -> str:
        return f"{self.part_base(self.partition(incident_id))}:inc:{incident_id}"

    def partition(self, entity_id: str) -> int:
        return partition_of(entity_id, self.partitions)

    def live(self, name: str, p: int = 0) -> str:
        """A live key: global (``GLOBAL_LIVE``) or of partition ``p``."""
        base = self.base if name in GLOBAL_LIVE else self.part_base(p)
        return f"{base}:live:{name}"

    def day(self, day: str, metric: str, p: int = 0) -> str:
        return f"{self.part_base(p)}:d:{day}:{metric}"

    def hour(self, epoch_hour: int, p: int = 0) -> str:
        return f"{self.part_base(p)}:h:{epoch_hour}"

    def ticker(self, area_id: str, p: int = 0) -> str:
        return self.live(f"ticker:{area_id}", p)

    def open_incidents(self, street_id: str, p: int = 0) -> str:
        return self.live(f"open_inc:{street_id}", p)

    def dl_seen(self, day: str) -> str:
        return f"{self.base}:dl:seen:{day}"

    def pattern(self) -> str:
        return f"{self.prefix}:*"


def _flat(rows: Iterable[Sequence[Any]]) -> list[Any]:
    return [v for row in rows for v in row]


def _joined(records: Sequence[str], width: int) -> str:
    """Records of ``width`` fields joined by "\\x1f" as one script argument, joined by
    "\\x1e" (see the scripts). Raises when a field holds either separator."""
    text = "\x1e".join(records)
    if text.count("\x1f") != len(records) * (width - 1) or text.count("\x1e") != max(
        0, len(records) - 1
    ):
        raise ValueError("a live-state field holds a control character")
    return text


class LiveState:
    """Writes and reads of the live state for one Redis client and prefix.

    With several partitions every write goes to the partition of its entity (incident,
    alert, worker; a patrolled grid to the grid's), one script call per partition, and
    every read sums (counters), unites (sets, hashes) or merges (tickers, by time) the
    partitions' keys in one pipeline (on a cluster: one round trip per node).
    """

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
        partitions: int = 1,
        tagged: bool = False,
        stage: str = "",
    ) -> None:
        self.r = client
        self.keys = Keys(prefix, max(1, partitions), tagged, stage)
        self.prefix = prefix
        self.partitions = self.keys.partitions
        self.ticker_length = ticker_length
        self.day_ttl_s = day_ttl_s
        self.bucket_ttl_s = bucket_ttl_s
        self.closed_ttl_s = closed_ttl_s
        self.deadletter = deadletter
        self.deadletter_key = self.keys.stream(deadletter)
        self._incidents = client.register_script(_INCIDENTS_LUA)
        self._alerts = client.register_script(_ALERTS_LUA)
        self._locations = client.register_script(_LOCATIONS_LUA)
        self._deadletter = client.register_script(_DEADLETTER_LUA)
        self._overdue = client.register_script(_OVERDUE_LUA)

    def staged(self, stage: str) -> LiveState:
        """The same layout in a staging area beside this one (same slots)."""
        return LiveState(
            self.r,
            self.prefix,
            ticker_length=self.ticker_length,
            day_ttl_s=self.day_ttl_s,
            bucket_ttl_s=self.bucket_ttl_s,
            closed_ttl_s=self.closed_ttl_s,
            deadletter=self.deadletter,
            partitions=self.partitions,
            tagged=self.keys.tagged,
            stage=stage,
        )

    def _run(self, script: Any, base: str, args: list[Any]) -> Any:
        """A script on the slot of ``base`` (its keys all start with it)."""
        return script(keys=[self.keys.anchor(base)], args=[base, *args])

    def _by_partition(self, rows: Iterable[Any], entity: Any) -> dict[int, list[Any]]:
        if self.partitions == 1:
            rows = list(rows)
            return {0: rows} if rows else {}
        out: dict[int, list[Any]] = {}
        for row in rows:
            out.setdefault(self.keys.partition(entity(row)), []).append(row)
        return out

    # ------------------------------------------------------------ writes

    def push_incidents(self, rows: Sequence[Sequence[Any]]) -> int:
        """Set incidents' live state (rows: id, mode, new state, state before, tickers;
        states as INCIDENT_FIELDS tuples; see ``_INCIDENTS_LUA``); returns how many
        changed."""
        if not rows:
            return 0
        joined = [
            (i, mode, "\x1f".join(new), "\x1f".join(_before(new, old)), tk)
            for i, mode, new, old, tk in rows
        ]
        head: list[Any] = [
            self.ticker_length,
            self.day_ttl_s,
            self.bucket_ttl_s,
            self.closed_ttl_s,
        ]
        changed = 0
        for p, part in self._by_partition(joined, lambda row: str(row[0])).items():
            changed += int(self._run(self._incidents, self.keys.part_base(p), head + _flat(part)))
        return changed

    def set_alerts(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Set the owner of alert ids (rows: alert id, entry, ALERT_FIELDS, losers as
        [(entry, day)]); one letter per alert, A applied now or R already applied."""
        if not rows:
            return []
        letters: dict[int, str] = {}
        order = {id(row): i for i, row in enumerate(rows)}
        for p, part in self._by_partition(rows, lambda row: str(row[0])).items():
            items = [
                "\x1f".join(
                    (
                        alert_id,
                        entry,
                        *map(reply_text, fields),
                        "\x1d".join(map(str, _flat(losers))),
                    )
                )
                for alert_id, entry, fields, losers in part
            ]
            head: list[Any] = [self.ticker_length, self.day_ttl_s, self.bucket_ttl_s]
            args = [*head, _joined(items, len(ALERT_FIELDS) + 3)]
            got = self._run(self._alerts, self.keys.part_base(p), args)
            for row, x in zip(part, got, strict=True):
                letters[order[id(row)]] = reply_text(x)
        return [letters[i] for i in range(len(rows))]

    def apply_locations(
        self,
        workers: Sequence[tuple[str, int, str]],
        patrolled: Sequence[tuple[str, str, str, str, str]],
    ) -> None:
        """Latest positions (in the worker's partition) and patrolled grids (in the grid's
        partition: a grid counts once in coverage whichever workers visited it)."""
        if not workers and not patrolled:
            return
        ws = self._by_partition(workers, lambda w: str(w[0]))
        gs = self._by_partition(patrolled, lambda g: str(g[1]))
        for p in sorted(set(ws) | set(gs)):
            w, g = ws.get(p, []), gs.get(p, [])
            pings = [f"{reply_text(i)}\x1f{ts}\x1f{reply_text(pk)}" for i, ts, pk in w]
            grids = ["\x1f".join(map(reply_text, row)) for row in g]
            args = [self.day_ttl_s, _joined(pings, 3), _joined(grids, 5)]
            self._run(self._locations, self.keys.part_base(p), args)

    def dead_letter(self, rows: Sequence[tuple[str, str, str, str, bytes, str]]) -> int:
        """(stream, entry_id, reason, detail, payload, day) → newly written count."""
        if not rows:
            return 0
        args = [self.deadletter_key, 9 * 86400, 1_000_000, *_flat(rows)]
        return int(self._run(self._deadletter, self.keys.base, args))

    def restore_dead_letter_counts(
        self, rows: Sequence[tuple[str, str, str, str, bytes, str]]
    ) -> None:
        """Rebuild dead-letter counters and dedupe sets (the stream itself is kept)."""
        pipe = self.r.pipeline(transaction=False)
        for stream, entry, reason, _detail, _payload, day in rows:
            seen = self.keys.dl_seen(day)
            pipe.sadd(seen, f"{stream}|{entry}")
            pipe.expire(seen, 9 * 86400)
            pipe.hincrby(self.keys.live("dl_count"), reason, 1)
            pipe.hincrby(self.keys.live("dl_count"), f"{stream}|{reason}", 1)
        pipe.execute()

    def sweep_overdue(self, now_ms: int, limit: int = 5000) -> int:
        total = 0
        for p in range(self.partitions):
            while True:
                n = int(self._run(self._overdue, self.keys.part_base(p), [now_ms, limit]))
                total += n
                if n < limit:
                    break
        return total

    def set_online(self, counts: dict[str, int]) -> None:
        key = self.keys.live("online")
        tmp = key + ":tmp"
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(tmp)
        if counts:
            pipe.hset(tmp, mapping=dict(counts.items()))
            pipe.execute_command("RENAME", tmp, key)
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

    def _key(self, metric: str, day: str | None, p: int) -> str:
        """A metric's hash: live (``day`` None) or that day's, of partition ``p``."""
        return self.keys.live(metric, p) if day is None else self.keys.day(day, metric, p)

    def _parts(self, metric: str, day: str | None) -> range:
        """The partitions holding a metric: one for a global live key, else all."""
        return range(1) if day is None and metric in GLOBAL_LIVE else range(self.partitions)

    def _hmget_sum(self, pipe: Any, metric: str, day: str | None, fields: list[str]) -> int:
        """Queue an HMGET of ``fields`` in every partition of the metric; how many queued."""
        parts = self._parts(metric, day)
        for p in parts:
            pipe.hmget(self._key(metric, day, p), fields)
        return len(parts)

    @staticmethod
    def _sum(replies: Sequence[Sequence[Any]], n: int) -> list[int]:
        out = [0] * n
        for got in replies:
            for j, v in enumerate(got):
                if v:
                    out[j] += int(v)
        return out

    def _tickers(self, replies: Sequence[Sequence[bytes]], n: int) -> list[dict[str, Any]]:
        """The partitions' ticker lists merged, newest first (each list is newest first)."""
        rows = [orjson.loads(x) for got in replies for x in got]
        if len(replies) > 1:
            rows.sort(key=lambda e: -int(e.get("ts") or 0))
        return rows[:n]

    def read_areas(
        self,
        area_ids: Sequence[str],
        day: str,
        focus: str,
        hours: Sequence[int],
        breakdowns: Mapping[str, tuple[str, Sequence[Any]]],
        ticker_n: int = 20,
    ) -> dict[str, Any]:
        """Everything a panel shows, in one pipeline (one round trip per cluster node).

        Per-area metrics for ``area_ids`` (live: open, overdue, online, warn_level; today:
        reports, resolved, closed, video, coverage), and for the ``focus`` area its
        breakdowns (name → (hash metric, values)), hourly report/video counts and ticker.
        """
        ids = list(area_ids)
        pipe = self.r.pipeline(transaction=False)
        plan: list[tuple[bool, str, int, int]] = []  # (breakdown?, name, replies, width)
        for m in self.AREA_LIVE:
            plan.append((False, m, self._hmget_sum(pipe, m, None, ids), len(ids)))
        for m in self.AREA_DAY:
            plan.append((False, m, self._hmget_sum(pipe, m, day, ids), len(ids)))
        names = list(breakdowns)
        for name in names:
            metric, values = breakdowns[name]
            live = metric.startswith("open") or metric.startswith("warn")
            fields = [f"{focus}|{v}" for v in values]
            n = self._hmget_sum(pipe, metric, None if live else day, fields)
            plan.append((True, name, n, len(values)))
        hour_fields = {kind: [f"{kind}|{focus}"] for kind in ("r", "v")}
        for kind in ("r", "v"):
            for h in hours:
                for p in range(self.partitions):
                    pipe.hmget(self.keys.hour(h, p), hour_fields[kind])
        for p in range(self.partitions):
            pipe.lrange(self.keys.ticker(focus, p), 0, ticker_n - 1)
        pipe.hgetall(self.keys.live("meta"))
        res = pipe.execute()
        out: dict[str, Any] = {"breakdowns": {}}
        i = 0
        for is_breakdown, what, n, width in plan:
            if is_breakdown:
                got = self._sum(res[i : i + n], width)
                out["breakdowns"][what] = dict(zip(breakdowns[what][1], got, strict=True))
            else:
                out[what] = self._sum(res[i : i + n], width)
            i += n
        n = self.partitions
        for name in ("hourly_reports", "hourly_video"):
            out[name] = [
                self._sum(res[i + k * n : i + (k + 1) * n], 1)[0] for k in range(len(hours))
            ]
            i += len(hours) * n
        out["ticker"] = self._tickers(res[i : i + n], ticker_n)
        i += n
        out["meta"] = {reply_text(k): reply_text(v) for k, v in res[i].items()}
        return out

    def _sum_of(self, metric: str, day: str | None, fields: list[str]) -> list[int]:
        pipe = self.r.pipeline(transaction=False)
        n = self._hmget_sum(pipe, metric, day, fields)
        return self._sum(pipe.execute()[:n], len(fields))

    def metric_for(self, metric: str, area_ids: Sequence[str], day: str) -> list[int]:
        """One metric (live or today's) for many areas, e.g. all 12,545 grids."""
        return self._sum_of(metric, None if metric in self.AREA_LIVE else day, list(area_ids))

    def positions_of(self, worker_ids: Sequence[str]) -> dict[str, str]:
        if not worker_ids:
            return {}
        by = self._by_partition(worker_ids, str)
        pipe = self.r.pipeline(transaction=False)
        for p, ids in by.items():
            pipe.hmget(self.keys.live("pos", p), ids)
        out: dict[str, str] = {}
        for ids, got in zip(by.values(), pipe.execute(), strict=True):
            out.update({w: reply_text(v) for w, v in zip(ids, got, strict=True) if v})
        return out

    def meta(self) -> dict[str, str]:
        return {
            reply_text(k): reply_text(v) for k, v in self.r.hgetall(self.keys.live("meta")).items()
        }

    def counts(self, metric: str, area_ids: Sequence[str], day: str | None = None) -> list[int]:
        """One metric for many areas: live ("open", "overdue", "online") or per-day."""
        if not area_ids:
            return []
        return self._sum_of(metric, day or None, list(area_ids))

    def counts_all(self, metric: str, day: str | None = None) -> dict[str, int]:
        day = day or None
        pipe = self.r.pipeline(transaction=False)
        for p in self._parts(metric, day):
            pipe.hgetall(self._key(metric, day, p))
        out: dict[str, int] = {}
        for got in pipe.execute():
            for k, v in got.items():
                out[reply_text(k)] = out.get(reply_text(k), 0) + int(v)
        return out

    def breakdown(
        self, metric: str, area_id: str, values: Sequence[Any], day: str | None = None
    ) -> dict[Any, int]:
        """A "area|x" hash (open_cat, open_sev, reports_cat, video_label, closed_level)."""
        got = self._sum_of(metric, day or None, [f"{area_id}|{v}" for v in values])
        return dict(zip(values, got, strict=True))

    def hourly(self, kind: str, area_id: str, hours: Sequence[int]) -> list[int]:
        """Counts per epoch hour for kind "r" (reports) or "v" (video alerts)."""
        pipe = self.r.pipeline(transaction=False)
        n = self.partitions
        for h in hours:
            for p in range(n):
                pipe.hget(self.keys.hour(h, p), f"{kind}|{area_id}")
        res = pipe.execute()
        return [sum(int(v or 0) for v in res[k * n : (k + 1) * n]) for k in range(len(hours))]

    def ticker(self, area_id: str, n: int = 20) -> list[dict[str, Any]]:
        pipe = self.r.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.lrange(self.keys.ticker(area_id, p), 0, n - 1)
        return self._tickers(pipe.execute(), n)

    def patrolled(self, day: str) -> set[str]:
        pipe = self.r.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.smembers(self.keys.day(day, "patrolled", p))
        return {reply_text(g) for got in pipe.execute() for g in got}

    def warnings(self) -> list[dict[str, Any]]:
        """The open warnings, as the engine last wrote them."""
        raw: Any = self.r.hvals(self.keys.live("warnings"))
        return [orjson.loads(v) for v in raw]

    def positions(self) -> dict[str, str]:
        return {reply_text(k): reply_text(v) for k, v in self.positions_raw().items()}

    def positions_raw(self) -> dict[bytes, bytes]:
        """worker_id → packed position, undecoded (30,000 of them decode faster in bulk)."""
        if self.partitions == 1:
            raw: Any = self.r.hgetall(self.keys.live("pos"))
            return raw
        pipe = self.r.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.hgetall(self.keys.live("pos", p))
        out: dict[bytes, bytes] = {}
        for got in pipe.execute():
            out.update(got)
        return out

    def workers_seen_since(self, since_ms: int) -> list[str]:
        pipe = self.r.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.zrangebyscore(self.keys.live("seen", p), since_ms, "+inf")
        return [reply_text(w) for got in pipe.execute() for w in got]

    def open_incidents(self, street_id: str) -> list[dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.smembers(self.keys.open_incidents(street_id, p))
        ids = [reply_text(i) for got in pipe.execute() for i in got]
        pipe = self.r.pipeline(transaction=False)
        fields = ("status", "cat", "sev", "grid", "lon", "lat", "ts", "overdue")
        for i in ids:
            pipe.hmget(self.keys.inc(i), fields)
        out = []
        for i, vals in zip(ids, pipe.execute(), strict=True):
            row = {f: (reply_text(v) if v else "") for f, v in zip(fields, vals, strict=True)}
            row["incident_id"] = i
            out.append(row)
        return out

    def incident(self, incident_id: str) -> dict[str, str]:
        raw = self.r.hgetall(self.keys.inc(incident_id))
        return {reply_text(k): reply_text(v) for k, v in raw.items()}

    def deadletter_counts(self) -> dict[str, int]:
        return self.counts_all("dl_count")

    # ------------------------------------------------------------ housekeeping

    # The key families of the live state (everything ``rebuild-live`` rebuilds), under
    # every base (global, partitions). Streams, the dashboard's caches, sessions, rate
    # limits and leases live beside them.
    FAMILIES = ("inc:", "d:", "m:", "h:", "dl:seen:", "live:")
    NOT_REBUILT = ("live:meta", "live:warn_lease", "live:anchor")

    def _live_keys_of(self, base: str, skip: set[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for family in self.FAMILIES:
            # a cluster client scans every primary
            for key in self.r.scan_iter(match=f"{_glob(base)}:{family}*", count=2000):
                if key not in skip:
                    out.append(key)
        return out

    def _skip(self, with_meta: bool) -> set[bytes]:
        skip = {f"{b}:{k}".encode() for b in self.keys.bases() for k in self.NOT_REBUILT}
        if with_meta:
            skip.discard(self.keys.live("meta").encode())
        return skip

    def live_keys(self, *, with_meta: bool = False) -> list[bytes]:
        """Every key of this prefix's live state (``FAMILIES``), meta only if asked."""
        skip = self._skip(with_meta)
        return [k for b in self.keys.bases() for k in self._live_keys_of(b, skip)]

    def delete_live(self) -> int:
        """Delete this prefix's live state, meta included (a staging area, or a test)."""
        keys = self.live_keys(with_meta=True)
        n = 0
        for i in range(0, len(keys), 1000):  # (a cluster client splits it by slot)
            n += int(self.r.unlink(*keys[i : i + 1000]))
        return n

    def switch_from(self, staged: LiveState) -> int:
        """Make the live state of ``staged`` (a staging area) this one's, at once per slot.

        Per base (global, each partition: one slot each on a cluster) one MULTI/EXEC:
        every staged key is RENAMEd onto its name here (keeping its TTL), every live-state
        key here that the staged state lacks is deleted, and (global base) the staged
        meta fields are merged into this meta (its consumer marks are kept). Redis runs
        a transaction as one step, so a reader sees either state of a partition, never a
        part of one (untagged, one partition: the whole state in one step). Returns the
        number of keys switched."""
        staged_meta = staged.keys.live("meta").encode()
        skip_staged, skip_here = staged._skip(True), self._skip(False)
        switched = 0
        for sbase, base in zip(staged.keys.bases(), self.keys.bases(), strict=True):
            keys = staged._live_keys_of(sbase, skip_staged)
            meta: Any = staged.r.hgetall(staged_meta) if staged_meta in keys else {}
            stale = set(self._live_keys_of(base, skip_here))
            cut = len(sbase)
            pipe = self.r.pipeline(transaction=True)
            for key in keys:
                if key == staged_meta:
                    continue
                target = base.encode() + key[cut:]
                pipe.execute_command(
                    "RENAME", key, target
                )  # (a method blocked in cluster pipelines)
                stale.discard(target)
            for key in stale:
                pipe.unlink(key)
            if meta:
                pipe.hset(self.keys.live("meta"), mapping=meta)
                pipe.unlink(staged_meta)
            pipe.execute()
            switched += len(keys) - (1 if meta else 0)
        return switched


def _glob(text: str) -> str:
    """``text`` matched literally in a SCAN pattern (a tag's braces are literal already)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _before(new: Sequence[str], old: Sequence[str]) -> Sequence[str]:
    """An incident's state before, its ``acc`` given as ``"\\x1e<n>"`` when that is the
    first n bytes of the new state's (see ``_INCIDENTS_LUA``): no event sent twice."""
    acc, was = new[-1], old[-1]
    if was and acc.startswith(was):
        return (*old[:-1], f"\x1e{len(was)}")
    return old
