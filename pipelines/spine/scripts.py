"""The live state's Lua scripts and the field layouts they take (``state.LiveState``
registers them; ``state`` documents the key layout they write). Each script is one
atomic step that sets a state and applies the difference to the counters.

Every script is called with ARGV[1] = the base of the keys it touches (a partition's or
the global one: ``state.Keys``), so all of them share one hash tag, i.e. one cluster
slot, and KEYS[1] = a key of that slot (``Keys.anchor``), which routes EVALSHA to the
node serving it on a Redis Cluster. The ARGV layouts below count from that base."""

from __future__ import annotations

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
# "acc" lists the accepted events as "entry,step,ts,day,minute,hour,level;" items (the
# minute is not counted, no screen reads per-minute counts; it stays in the layout the
# live states hold); the
# state before may give it as "\x1e<n>": the first n bytes of the new state's (the
# common case, events added after the others, sent without repeating them).
# Returns the number of incidents whose live state changed.
# Shared by the incident and alert scripts, which write in far fewer calls what one call
# per item would. Ticker lines collected per list during a script are pushed at its end:
# one LPUSH of only the newest ``TL`` lines (in the order they came), then LTRIM to
# ``TL``; the list ends exactly as after one LPUSH per line and the LTRIM (the older lines
# are trimmed anyway). Counter differences are applied per key (``apply_deltas``).
_HELPERS = """
local function push_tickers(tickers, TL)
  for key, lines in pairs(tickers) do
    local n = #lines
    local from = 1
    if TL >= 1 and n > TL then from = n - TL + 1 end
    for i = from, n, 1000 do
      redis.call('LPUSH', key, unpack(lines, i, math.min(n, i + 999)))
    end
    redis.call('LTRIM', key, 0, TL - 1)
  end
end
-- Counter differences (key → field → n) applied per key: one HMGET of the fields, then
-- one HSET of the new values and one HDEL of those that end at 0 (counters at 0 are
-- removed), as one HINCRBY per field (and HDEL when it gives 0) would.
local function apply_deltas(delta)
  for key, t in pairs(delta) do
    local fields, ds = {}, {}
    for field, d in pairs(t) do
      if d ~= 0 then fields[#fields + 1] = field; ds[#ds + 1] = d end
    end
    for c = 1, #fields, 1000 do
      local last = math.min(#fields, c + 999)
      local cur = redis.call('HMGET', key, unpack(fields, c, last))
      local set, del = {}, {}
      for j = c, last do
        local v = (tonumber(cur[j - c + 1]) or 0) + ds[j]
        if v == 0 then del[#del + 1] = fields[j]
        else set[#set + 1] = fields[j]; set[#set + 1] = string.format('%d', v) end
      end
      if #set > 0 then redis.call('HSET', key, unpack(set)) end
      if #del > 0 then redis.call('HDEL', key, unpack(del)) end
    end
  end
end
"""

_INCIDENTS_LUA = (
    _HELPERS
    + """
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
  local _, step, _, d, _, ho, lv = string.match(it, ITEM)
  local chain = {s.grid, s.street, s.district, s.city}
  local dk = P..':d:'..d..':'
  if step == 'reported' then
    local hk = P..':h:'..ho
    touched[dk..'reports'] = DTTL; touched[dk..'reports_cat'] = DTTL; touched[hk] = BTTL
    for _, a in ipairs(chain) do
      add(dk..'reports', a, sign)
      add(dk..'reports_cat', a..'|'..s.cat, sign)
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
  elseif mode ~= '0' and redis.call('EXISTS', P..':live:gone:'..inc) == 1 then
    -- dropped by this script since the state before was read (an attempt whose SQL did
    -- not commit): its counts were taken back, it counts from nothing
    base = {overdue = '0'}
    for j = 1, NF do base[NAMES[j]] = '' end
  elseif mode ~= '0' then
    base = before
    base.overdue = '0'
    if string.byte(base.acc, 1) == 30 then  -- "\30<n>": the new acc's first n bytes
      base.acc = string.sub(new.acc, 1, tonumber(string.sub(base.acc, 2)))
    end
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
    -- A held open incident that stays open is in its street's set, has no TTL and, when
    -- not overdue, its deadline in the zset (this script keeps all three, and the overdue
    -- script marks it overdue where it takes the deadline out): only changes are written.
    local stay = held and base.open == '1' and new.open == '1'
    if not (stay and base.street == new.street) then
      if base.open == '1' then redis.call('SREM', P..':live:open_inc:'..base.street, inc) end
      if new.open == '1' then redis.call('SADD', P..':live:open_inc:'..new.street, inc) end
    end
    if new.open == '1' and not over then
      if not (stay and base.overdue == '0' and base.dl == new.dl) then
        redis.call('ZADD', P..':live:deadlines', new.dl, inc)
      end
    else
      redis.call('ZREM', P..':live:deadlines', inc)
    end
    if not held then redis.call('DEL', k) end
    if new.acc == '' or (mode == '2' and new.open ~= '1') then
      redis.call('DEL', k)
      if new.acc == '' then redis.call('SET', P..':live:gone:'..inc, '1', 'EX', DTTL) end
    else
      if not held then redis.call('DEL', P..':live:gone:'..inc) end
      local args = {}
      for j = 1, NF do args[#args + 1] = NAMES[j]; args[#args + 1] = new[NAMES[j]] end
      args[#args + 1] = 'overdue'; args[#args + 1] = over and '1' or '0'
      redis.call('HSET', k, unpack(args))
      if new.open ~= '1' then
        redis.call('EXPIRE', k, CTTL)
      elseif not stay then
        redis.call('PERSIST', k)
      end
    end
    local had = ';'..(base.acc or '')
    for entry, line in string.gmatch(tk, '([^\\t\\n]+)\\t([^\\n]+)') do
      if not string.find(had, ';'..entry..',', 1, true) then
        for _, a in ipairs({new.street, new.district, new.city}) do
          local key = P..':live:ticker:'..a
          local t = tickers[key]
          if not t then t = {}; tickers[key] = t end
          t[#t + 1] = line
        end
      end
    end
  end
end
apply_deltas(delta)
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
push_tickers(tickers, TL)
return changed
"""
)

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
# have created it; an alert is counted once whatever its updates. (The minute is carried
# and registered but not counted, as for incidents.)
# ARGV: prefix, ticker length, day ttl, bucket ttl, then the alerts in one string (one
# argument, not a dozen per alert: the client packs each argument on its own), joined by
# "\x1e": per alert its alert id, the owner's entry, ALERT_FIELDS (day … ticker) and its
# losing entries (entry and day of each, joined by "\x1d"), joined by "\x1f" (ids hold no
# control character, ticker JSON escapes them). An empty owner entry: only losers are
# taken back. Returns one letter per alert: A applied now, R already applied (or nothing
# to apply).
_ALERTS_LUA = (
    _HELPERS
    + """
local P, TL, DTTL, BTTL = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local touched, tickers, delta = {}, {}, {}
-- The counter tables of a day and an hour (found once per script call), and each area's
-- hour-bucket field ("v|area").
local KD, KH, VF = {}, {}, {}
local function bump(tv, tl, th, a, lab, sign)
  local va = VF[a]
  if not va then va = 'v|'..a; VF[a] = va end
  local al = a..'|'..lab
  tv[a] = (tv[a] or 0) + sign; tl[al] = (tl[al] or 0) + sign
  th[va] = (th[va] or 0) + sign
end
local function count_parts(d, g, s, dist, c, lab, ho, sign)
  local kd = KD[d]
  if not kd then
    local dv, dl = P..':d:'..d..':video', P..':d:'..d..':video_label'
    touched[dv] = DTTL; touched[dl] = DTTL
    delta[dv] = delta[dv] or {}; delta[dl] = delta[dl] or {}
    kd = {delta[dv], delta[dl]}; KD[d] = kd
  end
  local th = KH[ho]
  if not th then
    local hk = P..':h:'..ho
    touched[hk] = BTTL
    delta[hk] = delta[hk] or {}
    th = delta[hk]; KH[ho] = th
  end
  local tv, tl = kd[1], kd[2]
  bump(tv, tl, th, g, lab, sign); bump(tv, tl, th, s, lab, sign)
  bump(tv, tl, th, dist, lab, sign); bump(tv, tl, th, c, lab, sign)
end
local function count(d, v, sign)
  local e, g, s, dist, c, lab, _, ho = string.match(v,
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if not e then return end
  count_parts(d, g, s, dist, c, lab, ho, sign)
end
local function owner(v) return v and string.match(v, '^([^|]*)') end
local function creator(v) return v and string.match(v, '^([^|/]*)') end
-- The vseen fields the batch reads are read up front (one HMGET per key), the rules
-- below run on that copy and its changes are written back at the end (one HSET and one
-- HDEL per key): the same end state as one HGET / HSET / HDEL per step (every step
-- reads the copy, which holds every earlier step's writes).
local alerts, need = {}, {}
local function want(key, field)
  local t = need[key]
  if not t then t = {}; need[key] = t end
  t[field] = true
end
local ALERT = '^'..string.rep('([^\\31]*)\\31', 11)..'(.*)$'
for rec in string.gmatch(ARGV[5], '[^\\30]+') do
  local f = {string.match(rec, ALERT)}
  local a = {aid = f[1], entry = f[2], f = f, losers = {}}
  if f[12] ~= '' then
    local l = {}
    for v in string.gmatch(f[12]..'\\29', '([^\\29]*)\\29') do l[#l + 1] = v end
    for j = 1, #l - 1, 2 do
      local lk = P..':d:'..l[j + 1]..':vseen'
      a.losers[#a.losers + 1] = {l[j], l[j + 1], lk}
      want(lk, a.aid)
    end
  end
  if a.entry ~= '' then want(P..':d:'..f[3]..':vseen', a.aid) end
  alerts[#alerts + 1] = a
end
local copy, dirty = {}, {}
for key, t in pairs(need) do
  local fields = {}
  for f in pairs(t) do fields[#fields + 1] = f end
  local c = {}
  for j = 1, #fields, 1000 do
    local last = math.min(#fields, j + 999)
    local got = redis.call('HMGET', key, unpack(fields, j, last))
    for k = j, last do c[fields[k]] = got[k - j + 1] end
  end
  copy[key] = c
  dirty[key] = {}
end
local function hget(key, f) return copy[key][f] end
local function hput(key, f, v) copy[key][f] = v; dirty[key][f] = true end
local out = {}
for _, a in ipairs(alerts) do
  local aid, entry = a.aid, a.entry
  local d, g, s, dist, c, lab, mi, ho, tick = unpack(a.f, 3, 11)
  for _, l in ipairs(a.losers) do
    local le, ld, lk = l[1], l[2], l[3]
    local v = hget(lk, aid)
    if v and creator(v) == le then
      count(ld, v, -1)
      hput(lk, aid, false)
    end
  end
  local seen = P..':d:'..d..':vseen'
  local v = entry ~= '' and hget(seen, aid)
  if entry == '' or (v and owner(v) == entry) then
    out[#out + 1] = 'R'
  else
    local fresh = not v or creator(v) ~= creator(entry)
    if v then count(d, v, -1) end
    local reg = table.concat({entry, g, s, dist, c, lab, mi, ho}, '|')
    hput(seen, aid, reg)
    touched[seen] = DTTL
    count_parts(d, g, s, dist, c, lab, ho, 1)  -- (count(d, reg, 1) without parsing reg)
    if fresh then  -- an update in place moves its counts; only a new alert is news
      for _, a2 in ipairs({s, dist, c}) do
        local tk = P..':live:ticker:'..a2
        local t = tickers[tk]
        if not t then t = {}; tickers[tk] = t end
        t[#t + 1] = tick
      end
    end
    out[#out + 1] = 'A'
  end
end
for key, t in pairs(dirty) do
  local set, del = {}, {}
  for f in pairs(t) do
    local v = copy[key][f]
    if v then set[#set + 1] = f; set[#set + 1] = v else del[#del + 1] = f end
  end
  for j = 1, #set, 1000 do redis.call('HSET', key, unpack(set, j, math.min(#set, j + 999))) end
  for j = 1, #del, 1000 do redis.call('HDEL', key, unpack(del, j, math.min(#del, j + 999))) end
end
-- Counter differences summed per field over the batch, then applied (a field that ends
-- at 0 is removed, as with one HINCRBY per change).
apply_deltas(delta)
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
push_tickers(tickers, TL)
return out
"""
)

# ARGV: prefix, day ttl, the workers' pings (id, ts, packed position) and the patrolled
# grids (day, grid, street, district, city): each list in one string (one argument, not
# 3 or 5 per item: the client packs each argument on its own), items joined by "\x1e",
# their fields by "\x1f" (ids and packed positions hold no control character).
_LOCATIONS_LUA = (
    _HELPERS
    + """
local P, DTTL = ARGV[1], ARGV[2]
local seen, pos = P..':live:seen', P..':live:pos'
local W, TS, PK = {}, {}, {}
for rec in string.gmatch(ARGV[3], '[^\\30]+') do
  local w, ts, pk = string.match(rec, '^([^\\31]*)\\31([^\\31]*)\\31(.*)$')
  W[#W + 1] = w; TS[#TS + 1] = ts; PK[#PK + 1] = pk
end
local nw = #W
-- Only a newer ping moves the worker (out-of-order pings never go back in time): per
-- chunk of workers, their last ping times are read at once (ZMSCORE) and the pings newer
-- than them (and than any earlier one of this call) written with one ZADD and one HSET,
-- as one ZADD GT CH, then HSET when changed, per ping would.
local best = {}
for c = 0, nw - 1, 500 do
  local last = math.min(nw, c + 500) - 1
  local ids = {}
  for i = c + 1, last + 1 do ids[#ids + 1] = W[i] end
  local cur = redis.call('ZMSCORE', seen, unpack(ids))
  local zargs, hargs = {}, {}
  for i = c, last do
    local w, ts = W[i + 1], tonumber(TS[i + 1])
    local prev = best[w]
    if prev == nil and cur[i - c + 1] then prev = tonumber(cur[i - c + 1]) end
    if prev == nil or ts > prev then
      best[w] = ts
      zargs[#zargs + 1] = TS[i + 1]; zargs[#zargs + 1] = w
      hargs[#hargs + 1] = w; hargs[#hargs + 1] = PK[i + 1]
    end
  end
  if #zargs > 0 then
    redis.call('ZADD', seen, 'GT', unpack(zargs))
    redis.call('HSET', pos, unpack(hargs))
  end
end
-- A grid new to its day's patrolled set counts once in coverage (grid and its area
-- chain): per day, the grids' membership is read at once (SMISMEMBER), the new ones
-- added with one SADD and the coverage increments summed per field and applied at once,
-- as one SADD, then four HINCRBY when it added, per grid would.
local touched, days, delta = {}, {}, {}
for rec in string.gmatch(ARGV[4], '[^\\30]+') do
  local g = {string.match(rec, '^([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31([^\\31]*)\\31(.*)$')}
  local t = days[g[1]]
  if not t then t = {}; days[g[1]] = t end
  t[#t + 1] = g
end
for d, rows in pairs(days) do
  local pk, ck = P..':d:'..d..':patrolled', P..':d:'..d..':coverage'
  local added, new, inc = {}, {}, {}
  for c = 1, #rows, 1000 do
    local last = math.min(#rows, c + 999)
    local grids = {}
    for j = c, last do grids[#grids + 1] = rows[j][2] end
    local member = redis.call('SMISMEMBER', pk, unpack(grids))
    for j = c, last do
      local b, g = rows[j], rows[j][2]
      if member[j - c + 1] == 0 and not added[g] then
        added[g] = true
        new[#new + 1] = g
        for k = 2, 5 do inc[b[k]] = (inc[b[k]] or 0) + 1 end
      end
    end
  end
  for c = 1, #new, 1000 do redis.call('SADD', pk, unpack(new, c, math.min(#new, c + 999))) end
  delta[ck] = inc
  touched[pk] = DTTL; touched[ck] = DTTL
end
apply_deltas(delta)
for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
return nw
"""
)

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
