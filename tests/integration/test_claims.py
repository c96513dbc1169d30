"""Claiming idle entries: a consumer scans the pending list for entries idle past
``claim_idle_ms`` at most every ``claim_interval`` (not on every read: each scan walks
the pending list, the batches workers hold included), and still takes over every entry
a dead consumer left, on the first scan after they went idle. Real Redis; the scan
clock is passed in, the idle time is Redis's own."""

from __future__ import annotations

import time
from typing import Any

import redis

from pipelines.spine.streams import Consumer, ensure_group, group_info, id_key, publish


def _idle_past(ms: int) -> None:
    time.sleep(ms / 1000 + 0.02)  # Redis measures idle time by its own clock


def test_claim_scans_are_spaced_and_each_takes_what_went_idle(
    rclient: redis.Redis, prefix: str
) -> None:
    key, group = f"{prefix}:claims", "g"
    ensure_group(rclient, key, group)
    now = [1000.0]
    dead = Consumer(rclient, key, group, "dead", count=10, block_ms=1)
    live = Consumer(
        rclient, key, group, "live", count=10, block_ms=1, claim_idle_ms=5,
        claim_every_s=0.5, clock=lambda: now[0],
    )  # fmt: skip
    scans: list[int] = []
    xautoclaim = live._raw.xautoclaim

    def counted(*a: Any, **k: Any) -> Any:
        scans.append(1)
        return xautoclaim(*a, **k)

    live._raw.xautoclaim = counted  # type: ignore[method-assign]

    publish(rclient, key, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    first = [e for e, _ in dead.read().entries]  # read, then its consumer dies
    assert len(first) == 3
    _idle_past(5)
    got = live.read()  # the first scan takes all three over
    assert [e for e, _ in got.entries] == first and got.claimed == 3 and len(scans) == 1
    live.ack(first)

    publish(rclient, key, [b'{"n": 4}', b'{"n": 5}'])
    second = [e for e, _ in dead.read().entries]
    _idle_past(5)
    for t in (1000.1, 1000.3, 1000.49):  # idle, but within the interval: no scan
        now[0] = t
        assert not live.read().entries
    assert len(scans) == 1
    now[0] = 1000.5
    got = live.read()
    assert [e for e, _ in got.entries] == second and got.claimed == 2 and len(scans) == 2
    live.ack(second)
    assert rclient.xpending(key, group)["pending"] == 0


def test_the_default_interval_is_a_quarter_of_the_idle_time_at_most_a_second(
    rclient: redis.Redis,
) -> None:
    def interval(idle_ms: int) -> float:
        return Consumer(rclient, "k", "g", "c", claim_idle_ms=idle_ms).claim_interval()

    assert interval(1) == 0.00025
    assert interval(2000) == 0.5
    assert interval(30_000) == 1.0


def test_group_info_tells_no_stream_no_group_and_what_a_group_holds(
    rclient: redis.Redis, prefix: str
) -> None:
    key = f"{prefix}:info"
    assert group_info(rclient, key, "g") is None  # no stream
    publish(rclient, key, [b'{"n": 1}'])
    assert group_info(rclient, key, "g") is None  # a stream, no group
    ensure_group(rclient, key, "g")
    ensure_group(rclient, key, "other")
    publish(rclient, key, [b'{"n": 2}', b'{"n": 3}'])
    got = Consumer(rclient, key, "g", "c", count=2, block_ms=1).read().entries
    info = group_info(rclient, key, "g")
    assert info is not None and int(info["pending"]) == 2
    assert id_key(info["last-delivered-id"]) == id_key(got[-1][0])
    other = group_info(rclient, key, "other")
    assert other is not None and int(other["pending"]) == 0


def test_entry_ids_order_as_redis_orders_them() -> None:
    ids = ["1700000000000-10", b"1700000000000-9", "1699999999999-99", "1700000000001-0"]
    assert sorted(ids, key=id_key) == [ids[2], ids[1], ids[0], ids[3]]
    assert id_key("5") == (5, 0)
