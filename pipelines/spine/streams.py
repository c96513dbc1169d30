"""Redis Streams source: publish, read a batch, claim from dead consumers, acknowledge.

Delivery is at-least-once. A consumer reads, in this order: entries idle in the
group's pending list for longer than ``claim_idle_ms`` (XAUTOCLAIM, taken over from
dead consumers), its own pending entries (after a restart under the same name), then
new entries. Entries delivered more than ``max_deliveries`` times are handed back as
"poison" so the caller dead-letters them instead of looping forever.

A feed split in N partitions has N streams whose entry ids may coincide (each stream
numbers its own entries), yet an entry id is an event's identity downstream (SQL rows,
dead letters, the stream-order rules). A consumer of partition p of N therefore hands
out the id ``<ms>-<seq>`` of its stream as ``<ms>-<seq × N + p>`` and maps it back for
XACK and XRANGE: unique over the partitions, in stream order within one, the same with
N = 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

FIELD = b"data"


@dataclass
class Batch:
    entries: list[tuple[str, bytes]] = field(default_factory=list)
    poison: list[tuple[str, bytes]] = field(default_factory=list)
    claimed: int = 0
    retried: bool = False  # delivered before (own pending or claimed): a retry

    def __len__(self) -> int:
        return len(self.entries) + len(self.poison)


def ensure_group(r: redis.Redis, stream: str, group: str) -> None:
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


# XADDs every ARGV, in order, as the ``data`` field of a new entry of KEYS[1]; returns
# the last entry's id. One call per chunk instead of one command per entry: the same
# entries as a pipeline of XADDs, at a fraction of the client's CPU (redis-py packs,
# sends and parses every command of a pipeline in Python).
_XADD_MANY_LUA = """
local last = false
for i = 1, #ARGV do
  last = redis.call('XADD', KEYS[1], '*', 'data', ARGV[i])
end
return last
"""


def xadd_many(r: Any, stream: str, payloads: Sequence[bytes]) -> bytes | str | None:
    """XADD ``payloads`` (in order) to ``stream`` in one script call; the last id."""
    if not payloads:
        return None
    script = r.register_script(_XADD_MANY_LUA)  # (only hashes the text; loaded once)
    last: bytes | str | None = script(keys=[stream], args=list(payloads))
    return last


def publish(r: redis.Redis, stream: str, payloads: Sequence[bytes], chunk: int = 2000) -> int:
    """XADD payloads in chunks (one script call each); returns the number written."""
    for i in range(0, len(payloads), chunk):
        xadd_many(r, stream, payloads[i : i + chunk])
    return len(payloads)


def _unparsed(r: redis.Redis) -> redis.Redis:
    """A client on ``r``'s connection pool whose stream reads come back as the raw reply.

    redis-py turns every entry's field list into a dict; a batch only needs ``data``.
    """
    from pipelines.redis_client import raw_twin

    raw = raw_twin(r)
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        raw.set_response_callback(command, lambda response, **_: response)
    return raw


def _stream_entries(reply: Any) -> list[Any]:
    """The entries of a raw XREADGROUP reply for one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))
    return list(reply[0][1])


def _entries(raw: Any) -> list[tuple[str, bytes]]:
    """Raw ``[id, [field, value, …]]`` entries → ``(id, data)`` (deleted entries dropped)."""
    out = []
    for entry_id, fields in raw:
        if fields is None:  # deleted while pending (trimmed): nothing to process
            continue
        eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        if isinstance(fields, dict):  # parsed after all (a cluster client's node callbacks)
            out.append((eid, fields.get(FIELD, b"")))
        elif fields and fields[0] == FIELD:
            out.append((eid, fields[1]))
        else:
            out.append((eid, dict(zip(fields[::2], fields[1::2], strict=True)).get(FIELD, b"")))
    return out


@dataclass
class Consumer:
    r: redis.Redis
    stream: str
    group: str
    name: str
    count: int = 2000
    block_ms: int = 500
    claim_idle_ms: int = 30000
    max_deliveries: int = 5
    partitions: int = 1
    partition: int = 0
    _own_pending_done: bool = False
    _pending_cursor: str = "0"  # our pending list is read on from here (real ids)
    _claim_cursor: str = "0-0"
    # how often a scan for entries idle past ``claim_idle_ms`` starts (``claim_interval``)
    claim_every_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    _claim_due: float = 0.0  # (``clock``) when the next claim scan may start
    _raw: redis.Redis = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._raw = _unparsed(self.r)

    def virtual(self, entry_id: str) -> str:
        """A stream entry id → the feed-wide id handed out (``<ms>-<seq × N + p>``)."""
        if self.partitions == 1:
            return entry_id
        ms, seq = id_key(entry_id)
        return f"{ms}-{seq * self.partitions + self.partition}"

    def real(self, entry_id: str) -> str:
        """A feed-wide id of this partition → its stream entry id."""
        if self.partitions == 1:
            return entry_id
        ms, seq = id_key(entry_id)
        if seq % self.partitions != self.partition:
            raise ValueError(f"{entry_id} is not an id of partition {self.partition}")
        return f"{ms}-{seq // self.partitions}"

    def owns(self, entry_id: str) -> bool:
        return self.partitions == 1 or id_key(entry_id)[1] % self.partitions == self.partition

    def _virtual_all(self, entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if self.partitions == 1:
            return entries
        return [(self.virtual(e), d) for e, d in entries]

    def read(self, held: frozenset[str] = frozenset()) -> Batch:
        """The next batch. ``held``: ids (as handed out) of a batch this consumer still
        holds unacknowledged, being processed while this one is read; they are pending
        and ours, so neither claiming nor reading our pending list hands them out again."""
        batch = self._claim(held)
        if batch is not None:
            return batch
        while not self._own_pending_done:
            got: Any = self._raw.xreadgroup(
                self.group, self.name, {self.stream: self._pending_cursor}, count=self.count
            )
            raw = _stream_entries(got)
            if not raw:
                self._own_pending_done = True
                break
            last = raw[-1][0]
            self._pending_cursor = last.decode() if isinstance(last, bytes) else last
            entries = [e for e in self._virtual_all(_entries(raw)) if e[0] not in held]
            if entries:
                return self._split(entries)
        got = self._raw.xreadgroup(
            self.group, self.name, {self.stream: ">"}, count=self.count, block=self.block_ms
        )
        return Batch(entries=self._virtual_all(_entries(_stream_entries(got))))

    def claim_interval(self) -> float:
        """Seconds between the starts of two scans for idle entries: ``claim_every_s``,
        by default a quarter of ``claim_idle_ms``, at most a second (a scan walks the
        pending list, held batches included: once per read it cost a worker 5 %)."""
        if self.claim_every_s is not None:
            return self.claim_every_s
        return min(1.0, self.claim_idle_ms / 4000)

    @property
    def _scan_done(self) -> bool:
        """The last claim scan reached the end of the pending list (or none ran yet)."""
        return self._claim_cursor in ("0-0", "0")

    def _claim(self, held: frozenset[str] = frozenset()) -> Batch | None:
        """Entries idle past ``claim_idle_ms`` (another consumer's, or ours), scanning the
        pending list from the cursor; a new scan starts at most every ``claim_interval``."""
        now = self.clock()
        if self._scan_done and now < self._claim_due:
            return None
        res: Any = self._raw.xautoclaim(
            self.stream,
            self.group,
            self.name,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.count,
        )
        cursor, raw = res[0], res[1]
        self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        if self._scan_done:  # the next scan waits
            self._claim_due = now + self.claim_interval()
        if len(res) > 2 and res[2]:  # ids deleted from the stream while pending
            self.r.xack(self.stream, self.group, *res[2])
        entries = [e for e in self._virtual_all(_entries(raw)) if e[0] not in held]
        if not entries:
            return None
        batch = self._split(entries)
        batch.claimed = len(entries)
        return batch

    def _split(self, entries: list[tuple[str, bytes]]) -> Batch:
        """Separate entries delivered too often (poison) from the rest."""
        lo, hi = self.real(entries[0][0]), self.real(entries[-1][0])
        info: Any = self.r.xpending_range(
            self.stream, self.group, min=lo, max=hi, count=len(entries) + 10, consumername=self.name
        )
        times = {
            self.virtual(
                p["message_id"].decode() if isinstance(p["message_id"], bytes) else p["message_id"]
            ): p["times_delivered"]
            for p in info
        }
        batch = Batch(retried=True)
        for e in entries:
            if times.get(e[0], 1) > self.max_deliveries:
                batch.poison.append(e)
            else:
                batch.entries.append(e)
        return batch

    def retry_pending(self) -> None:
        """After a failed batch: read our own pending entries again before new ones."""
        self._own_pending_done = False
        self._pending_cursor = "0"

    def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge entries by the ids handed out."""
        if ids:
            self.r.xack(self.stream, self.group, *[self.real(i) for i in ids])


def group_info(r: redis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """``XINFO GROUPS``' record of ``group`` on ``stream``; None when the stream or the
    group does not exist (yet)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream
        return None
    return next((g for g in groups if reply_text(g["name"]) == group), None)


def trim_acknowledged(r: redis.Redis, stream: str) -> int:
    """Trim entries every group has delivered and acknowledged (never unprocessed ones)."""
    try:
        groups = r.xinfo_groups(stream)
    except redis.ResponseError:
        return 0
    if not groups:
        return 0
    floor: str | None = None
    for g in groups:
        name = g["name"]
        last = g["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        pend = r.xpending(stream, name)
        low = pend["min"] if pend and pend.get("pending") else None
        if low is not None:
            low = low.decode() if isinstance(low, bytes) else low
        cand = low or _next_id(last)
        if floor is None or id_key(cand) < id_key(floor):
            floor = cand
    if floor is None:
        return 0
    return int(r.xtrim(stream, minid=floor, approximate=False))


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as (ms, seq), ordered as Redis orders ids."""
    ms, _, seq = reply_text(entry_id).partition("-")
    return int(ms), int(seq or 0)


def reply_text(value: Any) -> str:
    """Redis replies are bytes (decode_responses is off); text for our keys and fields."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"
