"""Feed partitions: which partition (stream, consumer group, live-state slot) an event is in.

An event goes to the partition of a stable hash of its *entity*: the incident of a
report (every event of an incident in one partition, so one worker sees them in stream
order and SQL decides an incident in one place), the worker of a location ping, the
alert of a video alert (all revisions of one alert together). Entities are many and
small, so a hash spreads them evenly whatever the city's geography; a district hash
would put a busy district's whole load on one partition and still split nothing finer.

``crc32`` is the hash: the same in every process and Python version (``hash()`` is
salted per process). With one partition everything is partition 0.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import orjson

ENTITY = {"reports": "incident_id", "locations": "worker_id", "video": "alert_id"}


def partition_of(entity_id: str, partitions: int) -> int:
    if partitions <= 1:
        return 0
    return zlib.crc32(entity_id.encode()) % partitions


def entity_of(feed: str, event: Any) -> str:
    """The entity id of an event (a dict or its JSON); "" when it has none (such an event
    is dead-lettered by whichever partition reads it)."""
    if isinstance(event, (bytes, bytearray, memoryview, str)):
        try:
            event = orjson.loads(event)
        except orjson.JSONDecodeError:
            return ""
    if not isinstance(event, dict):
        return ""
    v = event.get(ENTITY.get(feed, ""))
    return "" if v is None else str(v)


def split(feed: str, payloads: Sequence[bytes], partitions: int) -> dict[int, list[bytes]]:
    """Payloads grouped by partition, each group in the given order."""
    if partitions <= 1:
        return {0: list(payloads)} if payloads else {}
    out: dict[int, list[bytes]] = {}
    for p in payloads:
        out.setdefault(partition_of(entity_of(feed, p), partitions), []).append(p)
    return out


def publish_feed(r: Any, settings: Any, feed: str, payloads: Sequence[bytes]) -> int:
    """XADD a feed's payloads, each into its partition's stream (``streams.publish``)."""
    from pipelines.spine.streams import publish

    keys = keys_of(settings)
    name = getattr(settings.streams, feed)
    for p, part in split(feed, payloads, keys.partitions).items():
        publish(r, keys.stream(name, p), part)
    return len(payloads)


def feed_stream_keys(settings: Any, feed: str) -> list[str]:
    """Every partition's stream key of a feed."""
    return keys_of(settings).feed_streams(getattr(settings.streams, feed))


def keys_of(settings: Any) -> Any:
    """The key layout (``state.Keys``) of a set of settings."""
    from pipelines.spine.state import Keys

    return Keys(settings.redis.prefix, max(1, settings.streams.partitions), settings.redis.cluster)


def global_prefix(settings: Any) -> str:
    """The prefix of keys that other modules use together in one MULTI/EXEC or script
    (sessions and their index, rate-limit buckets and the credential generation): the
    global keys' base, one hash tag (slot) when tagged; the plain prefix otherwise."""
    return str(keys_of(settings).base)
