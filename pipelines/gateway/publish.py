"""Into the feeds' streams, once: XADD with the duplicate check in the same atomic step.

Every event the gateway writes carries a deterministic identity, and one Lua call per
request both checks it and XADDs (Redis runs a script atomically), so a retried request
never becomes a second stream entry and a crash can never leave a "seen" mark without
its entry (nor the reverse). Two kinds of identity:

* ``Once(key, ttl_s)`` — a key set when the event is written and kept ``ttl_s``
  (Open311 requests, batch events, Frigate revisions). The stored value is the entry id.
* ``Fix(device_key, ts_ms, keep, ttl_s)`` — a phone's fix: its timestamp in the device's
  sorted set of recent fixes (the newest ``keep`` are kept, for ``ttl_s`` after the last).
  A re-sent buffered fix is a duplicate; a re-send older than every kept fix still carries
  the same event id, and the location feed's effects are idempotent.

The wire format is the feeds' own (``pipelines.spine.events``): one field ``data``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pipelines.spine.partitions import entity_of
from pipelines.spine.streams import FIELD

# ARGV: stream key, then 6 per event: mode ('k' once, 'z' fix, '-' none), key, a, b, c,
# payload. 'k': a = ttl s, b = the value to remember ('' = the entry id). 'z': a = fix ts
# (score and member), b = keep, c = ttl s. Returns per event the new entry id, or for a
# duplicate '~' followed by the value remembered of the first one ('k'; else nothing).
LUA = """
local stream = ARGV[1]
local out = {}
local n = (#ARGV - 1) / 6
for i = 0, n - 1 do
  local b = 1 + i * 6
  local mode, key, x, y, z, payload = ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5],
    ARGV[b+6]
  local fresh, first = true, ''
  if mode == 'k' then
    first = redis.call('GET', key)
    fresh = not first
  elseif mode == 'z' then
    fresh = redis.call('ZADD', key, 'NX', x, x) == 1
    if fresh then
      redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(y) + 1))
      redis.call('EXPIRE', key, z)
    end
  end
  if fresh then
    local id = redis.call('XADD', stream, '*', '__FIELD__', payload)
    if mode == 'k' then
      if y == '' then y = id end
      redis.call('SET', key, y, 'EX', x)
    end
    out[#out+1] = id
  else
    out[#out+1] = '~'..(first or '')
  end
end
return out
""".replace("__FIELD__", FIELD.decode())


@dataclass(frozen=True)
class Once:
    key: str
    ttl_s: int
    value: str = ""  # remembered for duplicates ("" = the entry id)


@dataclass(frozen=True)
class Fix:
    device_key: str
    ts_ms: int
    keep: int
    ttl_s: int


@dataclass(frozen=True)
class Outgoing:
    payload: bytes
    identity: Once | Fix | None = None

    @classmethod
    def of(cls, event: dict[str, Any], identity: Once | Fix | None = None) -> Outgoing:
        return cls(orjson.dumps(event), identity)


def script_args(stream: str, events: Sequence[Outgoing]) -> list[Any]:
    args: list[Any] = [stream]
    for e in events:
        ident = e.identity
        if isinstance(ident, Once):
            args += ["k", ident.key, ident.ttl_s, ident.value, "", e.payload]
        elif isinstance(ident, Fix):
            args += ["z", ident.device_key, ident.ts_ms, ident.keep, ident.ttl_s, e.payload]
        else:
            args += ["-", "", "", "", "", e.payload]
    return args


@dataclass(frozen=True)
class Published:
    """Per event in order: its new entry id, or for a duplicate ``~`` + what was
    remembered of the first one (``Once``: its value or entry id)."""

    ids: tuple[str, ...]

    @property
    def written(self) -> int:
        return sum(1 for i in self.ids if not i.startswith("~"))

    @property
    def duplicates(self) -> int:
        return sum(1 for i in self.ids if i.startswith("~"))

    def first(self, i: int) -> str:
        """The remembered value of event ``i`` if a duplicate, else its new entry id."""
        return self.ids[i][1:] if self.ids[i].startswith("~") else self.ids[i]

    @classmethod
    def of(cls, res: Any) -> Published:
        return cls(tuple(x.decode() if isinstance(x, bytes) else str(x) for x in res))


def _in_slot(base: str, e: Outgoing) -> Outgoing:
    """The event with its identity key in the slot of ``base`` (a tagged layout)."""
    ident = e.identity
    if isinstance(ident, Once):
        ident = Once(f"{base}:{ident.key}", ident.ttl_s, ident.value)
    elif isinstance(ident, Fix):
        ident = Fix(f"{base}:{ident.device_key}", ident.ts_ms, ident.keep, ident.ttl_s)
    return Outgoing(e.payload, ident)


def by_partition(
    keys: Any, feed: str, name: str, events: Sequence[Outgoing]
) -> list[tuple[str, list[int], list[Outgoing]]]:
    """A request's events grouped by partition (``state.Keys``): per partition its stream,
    the events' positions in the request and the events. In a tagged layout (partitions,
    cluster) an identity key moves into its partition's slot (``<base>:<key>``), so the
    check and the XADD stay one single-slot script; untagged, keys are as given."""
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(events):
        groups.setdefault(keys.partition(entity_of(feed, e.payload)), []).append(i)
    out = []
    for p, idx in groups.items():
        base = keys.part_base(p)
        evs = [_in_slot(base, events[i]) if keys.is_tagged else events[i] for i in idx]
        out.append((keys.stream(name, p), idx, evs))
    return out


def _merged(n: int, parts: list[tuple[list[int], Published]]) -> Published:
    ids = [""] * n
    for idx, got in parts:
        for i, x in zip(idx, got.ids, strict=True):
            ids[i] = x
    return Published(tuple(ids))


class SyncPublisher:
    def __init__(self, client: Any) -> None:
        self._script = client.register_script(LUA)

    def publish(self, stream: str, events: Sequence[Outgoing]) -> Published:
        """All of a request's events in one atomic call: all written, or none."""
        if not events:
            return Published(())
        return Published.of(self._script(keys=[stream], args=script_args(stream, events)))

    def publish_feed(
        self, keys: Any, feed: str, name: str, events: Sequence[Outgoing]
    ) -> Published:
        """Into each event's partition stream: one atomic call per partition."""
        parts = [
            (idx, self.publish(stream, evs))
            for stream, idx, evs in by_partition(keys, feed, name, events)
        ]
        return _merged(len(events), parts)


class AsyncPublisher:
    def __init__(self, client: Any) -> None:
        self._script = client.register_script(LUA)

    async def publish(self, stream: str, events: Sequence[Outgoing]) -> Published:
        """All of a request's events in one atomic call: all written, or none."""
        if not events:
            return Published(())
        return Published.of(await self._script(keys=[stream], args=script_args(stream, events)))

    async def publish_feed(
        self, keys: Any, feed: str, name: str, events: Sequence[Outgoing]
    ) -> Published:
        """Into each event's partition stream: one atomic call per partition (a request
        spanning partitions is written per partition: each part all or nothing)."""
        parts = []
        for stream, idx, evs in by_partition(keys, feed, name, events):
            parts.append((idx, await self.publish(stream, evs)))
        return _merged(len(events), parts)
