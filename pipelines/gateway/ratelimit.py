"""A sliding-window rate limit shared through Redis, weighted by cost.

Each admitted request adds one member ``<ms>:<nonce>:<cost>`` scored by its time to a
sorted set; a running total of the costs in the window sits in a second key. One Lua
call expires members older than the window (subtracting their costs), and admits the
request if the total plus its cost stays within the limit. Refused requests are not
recorded (a client that backs off is admitted again as the window slides). The same
call returns the credential-revocation generation, so a gateway learns of a revocation
with the round trip it makes anyway. Usable from sync (``redis.Redis``) and async
(``redis.asyncio.Redis``) clients alike.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

# KEYS: window zset, total counter, generation counter.
# ARGV: now ms, window ms, limit, cost, nonce. Returns {admitted 0/1, total, generation,
# retry_after_ms}.
LUA = """
local zk, tk, gk = KEYS[1], KEYS[2], KEYS[3]
local now, win, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local function cost_of(m) return tonumber(string.match(m, ':(%d+)$')) end
local total = redis.call('GET', tk)
if total then
  total = tonumber(total)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', zk, '-inf', now - win)) do
    total = total - cost_of(m)
  end
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now - win)
else  -- no counter (expired with the window, or evicted): the set is the truth
  redis.call('ZREMRANGEBYSCORE', zk, '-inf', now - win)
  total = 0
  for _, m in ipairs(redis.call('ZRANGE', zk, 0, -1)) do total = total + cost_of(m) end
end
if total < 0 then total = 0 end
local gen = tonumber(redis.call('GET', gk) or '0')
if total + cost > limit then
  local retry = win
  local first = redis.call('ZRANGE', zk, 0, 0, 'WITHSCORES')
  if first[2] then retry = tonumber(first[2]) + win - now end
  local pt = redis.call('PTTL', zk)  -- the counter never outlives the window's set
  if pt > 0 then redis.call('SET', tk, total, 'PX', pt) end
  return {0, total, gen, retry}
end
total = total + cost
redis.call('ZADD', zk, now, ARGV[1]..':'..ARGV[5]..':'..ARGV[4])
redis.call('SET', tk, total, 'PX', win)
redis.call('PEXPIRE', zk, win)
return {1, total, gen, 0}
"""


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    total: int  # cost counted in the window (after admitting this one)
    generation: int  # the credential-revocation generation
    retry_after_s: int  # when refused: seconds until enough of the window has slid

    @classmethod
    def of(cls, res: Any) -> Verdict:
        ok, total, gen, retry = (int(x) for x in res)
        return cls(bool(ok), total, gen, max(1, -(-retry // 1000)) if not ok else 0)


def keys(prefix: str, bucket: str, generation_key: str) -> list[str]:
    return [f"{prefix}:rl:{bucket}", f"{prefix}:rl:{bucket}:n", generation_key]


def args(now_ms: int, limit: int, cost: int, window_ms: int = 60_000) -> list[Any]:
    return [now_ms, window_ms, limit, cost, secrets.token_hex(4)]


class SyncLimiter:
    """For synchronous callers (the MQTT subscriber, scripts)."""

    def __init__(self, client: Any, prefix: str, generation_key: str) -> None:
        self.prefix = prefix
        self.generation_key = generation_key
        self._script = client.register_script(LUA)

    def hit(self, bucket: str, limit: int, now_ms: int, cost: int = 1) -> Verdict:
        res = self._script(
            keys=keys(self.prefix, bucket, self.generation_key), args=args(now_ms, limit, cost)
        )
        return Verdict.of(res)


class AsyncLimiter:
    """For the ASGI app (``redis.asyncio``)."""

    def __init__(self, client: Any, prefix: str, generation_key: str) -> None:
        self.prefix = prefix
        self.generation_key = generation_key
        self._script = client.register_script(LUA)

    async def hit(self, bucket: str, limit: int, now_ms: int, cost: int = 1) -> Verdict:
        res = await self._script(
            keys=keys(self.prefix, bucket, self.generation_key), args=args(now_ms, limit, cost)
        )
        return Verdict.of(res)
