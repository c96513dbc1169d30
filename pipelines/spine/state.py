"""The Redis live-state contract: the key layout, the writes and the reads.

Everything live sits under one prefix ``P`` (``wg`` by default; tests use their own):

=============================== ======= =================================================
key                             type    meaning
=============================== ======= =================================================
P:<stream>                      stream  the feeds (reports, locations, video, deadletter)
P:inc:<incident_id>             hash    live incident: status, ts, category, severity, area
                                        chain, lon/lat, open, overdue, steps, e:<event_id>
P:live:open                     hash    area_id → open incidents
P:live:open_cat / open_sev      hash    "area_id|category" / "area_id|severity" → open
P:live:overdue                  hash    area_id → open incidents past their deadline
P:live:deadlines                zset    incident_id → deadline (ms), open and not overdue
P:live:open_inc:<street_id>     set     open incident ids in a street (map markers)
P:d:<YYYYMMDD>:<metric>         hash    per local day: reports, resolved, closed, video,
                                        coverage (area_id → n); reports_cat, video_label,
                                        closed_level ("area_id|x" → n)
P:d:<YYYYMMDD>:patrolled        set     grids visited by a worker that day
P:d:<YYYYMMDD>:vseen            hash    alert_id → stream entry id (video dedupe)
P:d:<YYYYMMDD>:vrev             hash    alert_id → latest applied revision (updates)
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
dashboard reads any area with one HGET/HMGET. Every write that counts goes through a
Lua script that checks and records the event id in the same atomic step, so a
redelivered event changes nothing (effects are idempotent, keyed by event id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from pipelines.spine.events import STEPS, TRANSITIONS

DAY_METRICS = ("reports", "resolved", "closed", "video", "coverage")


def reachable_pairs() -> set[tuple[str, str]]:
    """(a, b) such that some sequence of lifecycle steps leads from a to b.

    Events can arrive out of order (redelivery after a crash), so a gap in an
    incident's history is tolerated; an event is impossible only when *no* path leads
    to it from its predecessor: any step after "closed", or "reported" after anything.
    """
    out: set[tuple[str, str]] = set()
    for start in STEPS:
        seen: set[str] = set()
        todo = list(TRANSITIONS[start])
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            todo.extend(TRANSITIONS[s])
        out.update((start, s) for s in seen)
    return out


def _lua_set(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'["{a}>{b}"]=true' for a, b in sorted(pairs)) + "}"


# Arguments: ARGV[1] prefix, ARGV[2] ticker length, ARGV[3] day ttl (s), ARGV[4] bucket
# ttl (s), ARGV[5] closed-incident ttl (s), then 19 fields per event (see REPORT_FIELDS).
# Returns one status letter per event: A applied, R redelivered (already applied from
# this very entry), D duplicate event id from another entry, T impossible transition.
_REPORTS_LUA = (
    """
local P, TL, DTTL, BTTL, CTTL = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local OK = __PAIRS__
local touched, tickers = {}, {}
local function day(d, m) local k = P..':d:'..d..':'..m; touched[k] = DTTL; return k end
local out = {}
local n = (#ARGV - 5) / 19
for i = 0, n - 1 do
  local b = 5 + i * 19
  local eid, entry, inc, step = ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4]
  local ts, cat, sev = tonumber(ARGV[b+5]), ARGV[b+6], ARGV[b+7]
  local chain = {ARGV[b+8], ARGV[b+9], ARGV[b+10], ARGV[b+11]}
  local lon, lat, d, minute, hour = ARGV[b+12], ARGV[b+13], ARGV[b+14], ARGV[b+15], ARGV[b+16]
  local dlms, level, tick = tonumber(ARGV[b+17]), ARGV[b+18], ARGV[b+19]
  local k = P..':inc:'..inc
  local got = redis.call('HMGET', k, 'e:'..eid, 'steps', 'rts', 'ts')
  local prev = got[1]
  if prev then
    if prev == entry then out[#out+1] = 'R' else out[#out+1] = 'D' end
  else
    local steps = got[2] or ''
    local pts, pstep = -1, nil
    for t, s in string.gmatch(steps, '(%d+):(%a+);') do
      t = tonumber(t)
      if t <= ts and t >= pts then pts, pstep = t, s end
    end
    local fresh = (steps == '')
    local bad = false
    if step == 'reported' then
      bad = (pstep ~= nil) or (got[3] ~= false)
    elseif pstep ~= nil then
      bad = not OK[pstep..'>'..step]
    end
    if bad then
      out[#out+1] = 'T'
    else
      out[#out+1] = 'A'
      redis.call('HSET', k, 'e:'..eid, entry, 'steps', steps..ts..':'..step..';')
      local st = chain[1]
      if fresh then
        redis.call('HSET', k, 'cat', cat, 'sev', sev, 'grid', chain[1], 'street', chain[2],
          'district', chain[3], 'city', chain[4], 'lon', lon, 'lat', lat,
          'status', step, 'ts', ts, 'open', 0, 'overdue', 0)
        if step ~= 'closed' then
          redis.call('HSET', k, 'open', 1)
          for _, a in ipairs(chain) do
            redis.call('HINCRBY', P..':live:open', a, 1)
            redis.call('HINCRBY', P..':live:open_cat', a..'|'..cat, 1)
            redis.call('HINCRBY', P..':live:open_sev', a..'|'..sev, 1)
          end
          redis.call('SADD', P..':live:open_inc:'..chain[2], inc)
        end
      elseif ts >= tonumber(got[4]) then
        redis.call('HSET', k, 'status', step, 'ts', ts)
      end
      local f = redis.call('HMGET', k, 'cat', 'sev', 'grid', 'street', 'district', 'city',
        'open', 'overdue')
      cat, sev = f[1], f[2]
      chain = {f[3], f[4], f[5], f[6]}
      local open = f[7] == '1'
      local overdue = f[8] == '1'
      if step == 'reported' then
        redis.call('HSET', k, 'rts', ts)
        for _, a in ipairs(chain) do
          redis.call('HINCRBY', day(d, 'reports'), a, 1)
          redis.call('HINCRBY', day(d, 'reports_cat'), a..'|'..cat, 1)
          redis.call('HINCRBY', P..':m:'..minute, 'r|'..a, 1)
          redis.call('HINCRBY', P..':h:'..hour, 'r|'..a, 1)
        end
        touched[P..':m:'..minute] = BTTL; touched[P..':h:'..hour] = BTTL
      elseif step == 'resolved' then
        for _, a in ipairs(chain) do redis.call('HINCRBY', day(d, 'resolved'), a, 1) end
      elseif step == 'closed' then
        for _, a in ipairs(chain) do
          redis.call('HINCRBY', day(d, 'closed'), a, 1)
          redis.call('HINCRBY', day(d, 'closed_level'), a..'|'..level, 1)
        end
        if open then
          open = false
          redis.call('HSET', k, 'open', 0)
          for _, a in ipairs(chain) do
            redis.call('HINCRBY', P..':live:open', a, -1)
            redis.call('HINCRBY', P..':live:open_cat', a..'|'..cat, -1)
            redis.call('HINCRBY', P..':live:open_sev', a..'|'..sev, -1)
          end
          redis.call('SREM', P..':live:open_inc:'..chain[2], inc)
          if overdue then
            redis.call('HSET', k, 'overdue', 0)
            for _, a in ipairs(chain) do redis.call('HINCRBY', P..':live:overdue', a, -1) end
          end
        end
        redis.call('ZREM', P..':live:deadlines', inc)
        redis.call('EXPIRE', k, CTTL)
      end
      if open and not overdue then
        local due = ts + dlms
        local cur = redis.call('ZSCORE', P..':live:deadlines', inc)
        if (not cur) or due < tonumber(cur) then
          redis.call('ZADD', P..':live:deadlines', due, inc)
        end
      end
      for j = 2, 4 do
        local tk = P..':live:ticker:'..chain[j]
        redis.call('LPUSH', tk, tick)
        tickers[tk] = true
      end
    end
  end
end
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for key, _ in pairs(tickers) do redis.call('LTRIM', key, 0, TL - 1) end
return out
"""
).replace("__PAIRS__", _lua_set(reachable_pairs()))

REPORT_FIELDS = (
    "event_id",
    "entry_id",
    "incident_id",
    "step",
    "ts",
    "category",
    "severity",
    "grid_id",
    "street_id",
    "district_id",
    "city_id",
    "lon",
    "lat",
    "day",
    "minute",
    "hour",
    "deadline_ms",
    "level",
    "ticker",
)

# ARGV: prefix, ticker length, day ttl, bucket ttl, then 12 fields per alert.
# Returns A applied, R redelivered, D duplicate alert id, U update of a known alert (a
# higher revision: counted once already, nothing counted again), S stale update (a
# revision at or below one already applied arriving late: no effect).
_VIDEO_LUA = """
local P, TL, DTTL, BTTL = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local touched, tickers = {}, {}
local out = {}
local n = (#ARGV - 4) / 12
for i = 0, n - 1 do
  local b = 4 + i * 12
  local aid, entry, label = ARGV[b+1], ARGV[b+2], ARGV[b+3]
  local chain = {ARGV[b+4], ARGV[b+5], ARGV[b+6], ARGV[b+7]}
  local d, minute, hour, tick = ARGV[b+8], ARGV[b+9], ARGV[b+10], ARGV[b+11]
  local rev = ARGV[b+12]
  local seen, vrev = P..':d:'..d..':vseen', P..':d:'..d..':vrev'
  local prev = redis.call('HGET', seen, aid)
  if prev then
    if prev == entry then out[#out+1] = 'R'
    elseif rev == '' then out[#out+1] = 'D'
    else
      local last = tonumber(redis.call('HGET', vrev, aid) or '-1')
      local r = tonumber(rev)
      if r > last then
        out[#out+1] = 'U'
        redis.call('HSET', seen, aid, entry)
        redis.call('HSET', vrev, aid, rev)
        touched[vrev] = DTTL
      elseif r == last then out[#out+1] = 'D'
      else out[#out+1] = 'S' end
    end
  else
    out[#out+1] = 'A'
    redis.call('HSET', seen, aid, entry)
    if rev ~= '' then redis.call('HSET', vrev, aid, rev); touched[vrev] = DTTL end
    local dv, dl = P..':d:'..d..':video', P..':d:'..d..':video_label'
    touched[seen] = DTTL; touched[dv] = DTTL; touched[dl] = DTTL
    touched[P..':m:'..minute] = BTTL; touched[P..':h:'..hour] = BTTL
    for _, a in ipairs(chain) do
      redis.call('HINCRBY', dv, a, 1)
      redis.call('HINCRBY', dl, a..'|'..label, 1)
      redis.call('HINCRBY', P..':m:'..minute, 'v|'..a, 1)
      redis.call('HINCRBY', P..':h:'..hour, 'v|'..a, 1)
    end
    for j = 2, 4 do
      local tk = P..':live:ticker:'..chain[j]
      redis.call('LPUSH', tk, tick)
      tickers[tk] = true
    end
  end
end
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
for key, _ in pairs(tickers) do redis.call('LTRIM', key, 0, TL - 1) end
return out
"""
VIDEO_FIELDS = (
    "alert_id",
    "entry_id",
    "label",
    "grid_id",
    "street_id",
    "district_id",
    "city_id",
    "day",
    "minute",
    "hour",
    "ticker",
    "revision",  # "" when the producer sends none (then a reused alert id is a duplicate)
)

# ARGV: prefix, day ttl, n_workers, then 3 per worker (id, ts, packed position),
# then 5 per patrolled grid (day, grid, street, district, city).
_LOCATIONS_LUA = """
local P, DTTL, nw = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seen, pos = P..':live:seen', P..':live:pos'
for i = 0, nw - 1 do
  local b = 3 + i * 3
  -- GT: only a newer ping moves the worker (out-of-order pings never go back in time)
  if redis.call('ZADD', seen, 'GT', 'CH', ARGV[b+2], ARGV[b+1]) == 1 then
    redis.call('HSET', pos, ARGV[b+1], ARGV[b+3])
  end
end
local touched = {}
local base = 3 + nw * 3
local ng = (#ARGV - base) / 5
for i = 0, ng - 1 do
  local b = base + i * 5
  local d = ARGV[b+1]
  local pk, ck = P..':d:'..d..':patrolled', P..':d:'..d..':coverage'
  if redis.call('SADD', pk, ARGV[b+2]) == 1 then
    for j = 2, 5 do redis.call('HINCRBY', ck, ARGV[b+j], 1) end
  end
  touched[pk] = DTTL; touched[ck] = DTTL
end
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
return nw
"""

# ARGV: prefix, deadletter stream key, ttl, maxlen, then 6 per dead letter
# (stream, entry, reason, detail, payload, day). Returns the number newly written.
_DEADLETTER_LUA = """
local P, DLK, TTL, MAXLEN = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n, written = (#ARGV - 4) / 6, 0
for i = 0, n - 1 do
  local b = 4 + i * 6
  local s, e, r = ARGV[b+1], ARGV[b+2], ARGV[b+3]
  local sk = P..':dl:seen:'..ARGV[b+6]
  if redis.call('SADD', sk, s..'|'..e) == 1 then
    redis.call('EXPIRE', sk, TTL)
    redis.call('XADD', DLK, 'MAXLEN', '~', MAXLEN, '*', 'stream', s, 'entry_id', e,
      'reason', r, 'detail', ARGV[b+4], 'payload', ARGV[b+5])
    redis.call('HINCRBY', P..':live:dl_count', r, 1)
    redis.call('HINCRBY', P..':live:dl_count', s..'|'..r, 1)
    written = written + 1
  end
end
return written
"""

# ARGV: prefix, now (ms), max incidents per call. Marks due incidents overdue.
_OVERDUE_LUA = """
local P, now, lim = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', P..':live:deadlines', '-inf', now, 'LIMIT', 0, lim)
for _, inc in ipairs(due) do
  local k = P..':inc:'..inc
  if redis.call('HGET', k, 'open') == '1' and redis.call('HGET', k, 'overdue') == '0' then
    redis.call('HSET', k, 'overdue', 1)
    for _, f in ipairs({'grid', 'street', 'district', 'city'}) do
      redis.call('HINCRBY', P..':live:overdue', redis.call('HGET', k, f), 1)
    end
  end
  redis.call('ZREM', P..':live:deadlines', inc)
end
return #due
"""


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
        self._reports = client.register_script(_REPORTS_LUA)
        self._video = client.register_script(_VIDEO_LUA)
        self._locations = client.register_script(_LOCATIONS_LUA)
        self._deadletter = client.register_script(_DEADLETTER_LUA)
        self._overdue = client.register_script(_OVERDUE_LUA)

    # ------------------------------------------------------------ writes

    def apply_reports(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Apply report events (tuples in REPORT_FIELDS order); one status per row."""
        if not rows:
            return []
        head: list[Any] = [
            self.prefix,
            self.ticker_length,
            self.day_ttl_s,
            self.bucket_ttl_s,
            self.closed_ttl_s,
        ]
        res = self._reports(args=head + _flat(rows))
        return [_s(x) for x in res]

    def apply_video(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        if not rows:
            return []
        head: list[Any] = [self.prefix, self.ticker_length, self.day_ttl_s, self.bucket_ttl_s]
        res = self._video(args=head + _flat(rows))
        return [_s(x) for x in res]

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

    def clear(self, keep_streams: bool = True) -> int:
        """Delete this prefix's live state (for rebuild-live); streams are kept."""
        streams = {self.keys.stream(n) for n in ("reports", "locations", "video", "deadletter")}
        n = 0
        batch: list[bytes] = []
        for key in self.r.scan_iter(match=self.keys.pattern(), count=2000):
            if keep_streams and key.decode() in streams:
                continue
            batch.append(key)
            if len(batch) >= 1000:
                n += self.r.unlink(*batch)
                batch = []
        if batch:
            n += self.r.unlink(*batch)
        return n
