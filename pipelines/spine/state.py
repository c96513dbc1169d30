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

DAY_METRICS = ("reports", "resolved", "closed", "video", "coverage")

INCIDENT_FIELDS = (
    "status",
    "ts",
    "cat",
    "sev",
    "grid",
    "street",
    "district",
    "city",
    "lon",
    "lat",
    "open",
    "dl",
    "acc",
)

# Sets the live state of incidents to states computed from SQL (the system of record),
# applying to every counter the difference between the state Redis holds and the new
# one, so the counters are a function of each incident's set of accepted events.
# ARGV: prefix, ticker length, day ttl (s), bucket ttl (s), closed-incident ttl (s), then
# per incident: id, mode, the new state and the state before (SQL's, for when Redis holds
# none), each its 13 INCIDENT_FIELDS joined by "\x1f" (none of them can hold one), and
# tickers ("entry\tjson" lines; JSON never holds a raw tab or newline). Mode "0":
# unchanged in SQL (only a state Redis holds is corrected); "1": changed; "2": changed,
# and a closed incident keeps no hash (history beyond the live window; rebuild-live).
# "acc" lists the accepted events as "entry,step,ts,day,minute,hour,level;" items.
# Returns the number of incidents whose live state changed.
_INCIDENTS_LUA = """
local P, TL, DTTL, BTTL, CTTL = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local NF = 13
local W = 5
local NAMES = {'status', 'ts', 'cat', 'sev', 'grid', 'street', 'district', 'city', 'lon',
  'lat', 'open', 'dl', 'acc'}
local HELD = {unpack(NAMES)}
HELD[NF + 1] = 'overdue'
local touched, tickers, delta = {}, {}, {}
local function add(key, field, n)
  local t = delta[key]
  if not t then t = {}; delta[key] = t end
  t[field] = (t[field] or 0) + n
end
local function state(joined)
  local s, j = {}, 0
  for v in string.gmatch(joined..'\\31', '([^\\31]*)\\31') do
    j = j + 1
    s[NAMES[j]] = v
  end
  return s
end
local function open_effects(s, sign)
  if s.open ~= '1' then return end
  for _, a in ipairs({s.grid, s.street, s.district, s.city}) do
    add(P..':live:open', a, sign)
    add(P..':live:open_cat', a..'|'..s.cat, sign)
    add(P..':live:open_sev', a..'|'..s.sev, sign)
  end
end
local ITEM = '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$'
local function item_effects(s, it, sign)
  local _, step, _, d, mi, ho, lv = string.match(it, ITEM)
  local chain = {s.grid, s.street, s.district, s.city}
  local dk = P..':d:'..d..':'
  if step == 'reported' then
    local mk, hk = P..':m:'..mi, P..':h:'..ho
    touched[dk..'reports'] = DTTL; touched[dk..'reports_cat'] = DTTL
    touched[mk] = BTTL; touched[hk] = BTTL
    for _, a in ipairs(chain) do
      add(dk..'reports', a, sign)
      add(dk..'reports_cat', a..'|'..s.cat, sign)
      add(mk, 'r|'..a, sign)
      add(hk, 'r|'..a, sign)
    end
  elseif step == 'resolved' then
    touched[dk..'resolved'] = DTTL
    for _, a in ipairs(chain) do add(dk..'resolved', a, sign) end
  elseif step == 'closed' then
    touched[dk..'closed'] = DTTL; touched[dk..'closed_level'] = DTTL
    for _, a in ipairs(chain) do
      add(dk..'closed', a, sign)
      add(dk..'closed_level', a..'|'..lv, sign)
    end
  end
end
local function items(acc)
  local t = {}
  for it in string.gmatch(acc or '', '([^;]+);') do t[it] = true end
  return t
end
local ATTRS = {'cat', 'sev', 'grid', 'street', 'district', 'city'}
-- Counters: take the base state's effects back and add the new state's; when the
-- incident's attributes are the same, only the events that differ (the common case).
local function effects(base, new)
  local same = true
  for _, f in ipairs(ATTRS) do
    if base[f] ~= new[f] then same = false end
  end
  local bi, ni = items(base.acc), items(new.acc)
  for it in pairs(bi) do
    if not (same and ni[it]) then item_effects(base, it, -1) end
  end
  for it in pairs(ni) do
    if not (same and bi[it]) then item_effects(new, it, 1) end
  end
  if not (same and base.open == new.open) then
    open_effects(base, -1)
    open_effects(new, 1)
  end
end
local changed = 0
local n = (#ARGV - 5) / W
for i = 0, n - 1 do
  local b = 5 + i * W
  local inc, mode = ARGV[b + 1], ARGV[b + 2]
  local new, before, tk = state(ARGV[b + 3]), state(ARGV[b + 4]), ARGV[b + 5]
  local k = P..':inc:'..inc
  local cur = redis.call('HMGET', k, unpack(HELD))
  local held = cur[NF] ~= false
  local base = nil
  if held then
    base = {}
    for j = 1, NF do base[NAMES[j]] = cur[j] end
    base.overdue = cur[NF + 1]
  elseif mode ~= '0' then
    base = before
    base.overdue = '0'
  end
  local same = base ~= nil
  if base ~= nil then
    for j = 1, NF do
      if base[NAMES[j]] ~= new[NAMES[j]] then same = false end
    end
  end
  if base ~= nil and not same then
    changed = changed + 1
    effects(base, new)
    local wasover = base.overdue == '1' and base.open == '1'
    local over = wasover and new.open == '1'
    if wasover then
      for _, a in ipairs({base.grid, base.street, base.district, base.city}) do
        add(P..':live:overdue', a, -1)
      end
    end
    if over then
      for _, a in ipairs({new.grid, new.street, new.district, new.city}) do
        add(P..':live:overdue', a, 1)
      end
    end
    if base.open == '1' then redis.call('SREM', P..':live:open_inc:'..base.street, inc) end
    if new.open == '1' then redis.call('SADD', P..':live:open_inc:'..new.street, inc) end
    if new.open == '1' and not over then
      redis.call('ZADD', P..':live:deadlines', new.dl, inc)
    else
      redis.call('ZREM', P..':live:deadlines', inc)
    end
    if not held then redis.call('DEL', k) end
    if new.acc == '' or (mode == '2' and new.open ~= '1') then
      redis.call('DEL', k)
    else
      local args = {}
      for j = 1, NF do args[#args + 1] = NAMES[j]; args[#args + 1] = new[NAMES[j]] end
      args[#args + 1] = 'overdue'; args[#args + 1] = over and '1' or '0'
      redis.call('HSET', k, unpack(args))
      if new.open == '1' then redis.call('PERSIST', k) else redis.call('EXPIRE', k, CTTL) end
    end
    local had = ';'..(base.acc or '')
    for entry, line in string.gmatch(tk, '([^\\t\\n]+)\\t([^\\n]+)') do
      if not string.find(had, ';'..entry..',', 1, true) then
        for _, a in ipairs({new.street, new.district, new.city}) do
          local key = P..':live:ticker:'..a
          redis.call('LPUSH', key, line)
          tickers[key] = true
        end
      end
    end
  end
end
for key, t in pairs(delta) do
  for field, d in pairs(t) do
    if d ~= 0 then
      if redis.call('HINCRBY', key, field, d) == 0 then redis.call('HDEL', key, field) end
    end
  end
end
for key, ttl in pairs(touched) do
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
end
for key, _ in pairs(tickers) do redis.call('LTRIM', key, 0, TL - 1) end
return changed
"""

ALERT_FIELDS = (
    "day",
    "grid_id",
    "street_id",
    "district_id",
    "city_id",
    "label",
    "minute",
    "hour",
    "ticker",
)

# Sets each alert id to the alert SQL decided (created by the first entry in stream
# order, updated in place by newer revisions) and keeps the counters equal to the alerts'
# effects. It is registered in P:d:<day>:vseen as
# "token|grid|street|district|city|label|minute|hour" (token: the creating entry, plus
# "/<entry>" of the revision shown when that is another), so whatever it counted can be
# taken back when it changes (a new label moves its count) or another entry turns out to
# have created it; an alert is counted once whatever its updates.
# ARGV: prefix, ticker length, day ttl, bucket ttl, then per alert: alert id, the owner's
# entry and ALERT_FIELDS (day … ticker), the number of losing entries, and per loser its
# entry and day (an empty owner entry: only losers are taken back). Returns one letter
# per alert: A applied now, R already applied (or nothing to apply).
_ALERTS_LUA = """
local P, TL, DTTL, BTTL = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local touched, tickers = {}, {}
local function count(d, v, sign)
  local e, g, s, dist, c, lab, mi, ho = string.match(v,
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if not e then return end
  local dv, dl = P..':d:'..d..':video', P..':d:'..d..':video_label'
  local mk, hk = P..':m:'..mi, P..':h:'..ho
  touched[dv] = DTTL; touched[dl] = DTTL; touched[mk] = BTTL; touched[hk] = BTTL
  for _, a in ipairs({g, s, dist, c}) do
    for _, kf in ipairs({{dv, a}, {dl, a..'|'..lab}, {mk, 'v|'..a}, {hk, 'v|'..a}}) do
      if redis.call('HINCRBY', kf[1], kf[2], sign) == 0 then redis.call('HDEL', kf[1], kf[2]) end
    end
  end
end
local function owner(v) return v and string.match(v, '^([^|]*)') end
local function creator(v) return v and string.match(v, '^([^|/]*)') end
local out = {}
local i = 4
while i < #ARGV do
  local aid, entry = ARGV[i + 1], ARGV[i + 2]
  local d, g, s, dist, c, lab, mi, ho, tick = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10], ARGV[i + 11]
  local nl = tonumber(ARGV[i + 12])
  i = i + 12
  for _ = 1, nl do
    local le, ld = ARGV[i + 1], ARGV[i + 2]
    i = i + 2
    local lk = P..':d:'..ld..':vseen'
    local v = redis.call('HGET', lk, aid)
    if v and creator(v) == le then
      count(ld, v, -1)
      redis.call('HDEL', lk, aid)
    end
  end
  local seen = P..':d:'..d..':vseen'
  local v = entry ~= '' and redis.call('HGET', seen, aid)
  if entry == '' or (v and owner(v) == entry) then
    out[#out + 1] = 'R'
  else
    local fresh = not v or creator(v) ~= creator(entry)
    if v then count(d, v, -1) end
    local reg = table.concat({entry, g, s, dist, c, lab, mi, ho}, '|')
    redis.call('HSET', seen, aid, reg)
    touched[seen] = DTTL
    count(d, reg, 1)
    if fresh then  -- an update in place moves its counts; only a new alert is news
      for _, a in ipairs({s, dist, c}) do
        local tk = P..':live:ticker:'..a
        redis.call('LPUSH', tk, tick)
        tickers[tk] = true
      end
    end
    out[#out + 1] = 'A'
  end
end
for key, ttl in pairs(touched) do
  if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
end
for key, _ in pairs(tickers) do redis.call('LTRIM', key, 0, TL - 1) end
return out
"""

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
