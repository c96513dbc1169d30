"""The other multi-key users of Redis on the cluster: sessions (MULTI/EXEC over a session
and its user's index), the gateway's rate limit (one script over a bucket, its counter and
the credential generation) and the gateway's publisher (duplicate check + XADD in one
script, per partition; sync and asyncio clients) — all keep to one slot."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.access.sessions import Sessions
from pipelines.gateway.publish import AsyncPublisher, Once, Outgoing, SyncPublisher
from pipelines.gateway.ratelimit import SyncLimiter
from pipelines.redis_client import connect_async
from pipelines.spine.partitions import global_prefix, keys_of, partition_of
from tests.conftest import settings_for

pytestmark = [pytest.mark.cluster, pytest.mark.integration]
T = 1_800_000_000_000


def _settings(url: str, prefix: str, tmp: Path) -> Any:
    s = settings_for(url, prefix, (f"sqlite:///{tmp / 'x.db'}", None), tmp)
    return dataclasses.replace(s, streams=dataclasses.replace(s.streams, partitions=3))


def test_sessions_and_rate_limits_on_cluster(cluster, cluster_url, cprefix, tmp_path) -> None:
    s = _settings(cluster_url, cprefix, tmp_path)
    g = global_prefix(s)
    assert "{" in g
    sessions = Sessions(cluster, g, idle_ms=600_000, max_ms=3_600_000)
    made = [
        sessions.start(
            username="u1",
            role="city_leader",
            scope="320100",
            display_name="u1",
            now_ms=T + i,
            stamp="s",
        )
        for i in range(3)
    ]
    assert sessions.of_user("u1") == 3
    sessions.end(made[0])
    assert sessions.of_user("u1") == 2
    assert sessions.end_user("u1") == 2 and sessions.of_user("u1") == 0
    lim = SyncLimiter(cluster, g, f"{g}:gen")
    assert lim.hit("k", 10, T, 6).admitted
    assert not lim.hit("k", 10, T + 1000, 5).admitted
    cluster.incr(f"{g}:gen")
    assert lim.hit("k", 10, T + 1000, 4).generation == 1


def _events(n: int) -> list[Outgoing]:
    return [
        Outgoing.of({"incident_id": f"I{i}", "event_id": f"E{i}"}, Once(f"gwtest:ev:E{i}", 600))
        for i in range(n)
    ]


def test_publisher_writes_each_partition_once(cluster, cluster_url, cprefix, tmp_path) -> None:
    s = _settings(cluster_url, cprefix, tmp_path)
    keys = keys_of(s)
    pub = SyncPublisher(cluster)
    first = pub.publish_feed(keys, "reports", "reports", _events(30))
    assert first.written == 30
    again = pub.publish_feed(keys, "reports", "reports", _events(30))
    assert again.duplicates == 30 and [again.first(i) for i in range(30)] == list(first.ids)
    per = [cluster.xlen(keys.stream("reports", p)) for p in range(3)]
    want = [sum(1 for i in range(30) if partition_of(f"I{i}", 3) == p) for p in range(3)]
    assert per == want and all(per)
    for p in range(3):  # every incident's event in its own partition's stream
        for _, f in cluster.xrange(keys.stream("reports", p)):
            assert partition_of(orjson.loads(f[b"data"])["incident_id"], 3) == p

    async def via_asyncio() -> tuple[int, int]:
        ar = connect_async(cluster_url)
        try:
            apub = AsyncPublisher(ar)
            more = [
                Outgoing.of({"incident_id": f"J{i}"}, Once(f"gwtest:ev:J{i}", 600))
                for i in range(9)
            ]
            a = await apub.publish_feed(keys, "reports", "reports", more)
            b = await apub.publish_feed(keys, "reports", "reports", more)
            return a.written, b.duplicates
        finally:
            await ar.aclose()

    assert asyncio.run(via_asyncio()) == (9, 9)
