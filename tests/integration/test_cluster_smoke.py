"""A smoke test of the cluster code path inside ``make test`` (the full cluster tier is
``make test-cluster``): a local three-primary Redis Cluster, partitioned feeds published
and consumed per partition, location live state written per slot and read summed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
from redis.cluster import RedisCluster

from pipelines.embedded import EmbeddedCluster
from pipelines.redis_client import connect
from pipelines.settings import load_settings
from pipelines.spine.partitions import partition_of, publish_feed
from pipelines.spine.runner import live_state
from pipelines.spine.streams import Consumer, ensure_group

pytestmark = pytest.mark.integration


def test_cluster_smoke(tmp_path: Path) -> None:
    with EmbeddedCluster(tmp_path / "cluster") as c:
        r = connect(c.url)
        assert isinstance(r, RedisCluster)
        base = load_settings(environ={"REDIS_URL": c.url, "WANGGE_REDIS_PREFIX": "wgs"})
        s = dataclasses.replace(base, streams=dataclasses.replace(base.streams, partitions=3))
        st = live_state(r, s)
        pings = [orjson.dumps({"worker_id": f"W{i}", "ts": 1000 + i}) for i in range(30)]
        publish_feed(r, s, "locations", pings)
        seen: set[str] = set()
        for p in range(3):
            key = st.keys.stream("locations", p)
            ensure_group(r, key, "g")
            con = Consumer(r, key, "g", f"c{p}", block_ms=1, partitions=3, partition=p)
            batch = con.read()
            for eid, data in batch.entries:
                assert con.owns(eid)
                w = orjson.loads(data)["worker_id"]
                assert partition_of(w, 3) == p
                seen.add(w)
            con.ack([e for e, _ in batch.entries])
            assert r.xpending(key, "g")["pending"] == 0
        assert seen == {f"W{i}" for i in range(30)}
        st.apply_locations(
            [(f"W{i}", 1000 + i, f"1,2,{1000 + i},G{i % 7},,,,") for i in range(30)],
            [("20260101", f"G{i}", "S1", "D1", "C1") for i in range(7)],
        )
        assert len(st.positions()) == 30
        assert st.counts("coverage", ["S1", "D1", "C1"], day="20260101") == [7, 7, 7]
        assert st.patrolled("20260101") == {f"G{i}" for i in range(7)}
        slots = {r.keyslot(k) for k in st.live_keys()}
        assert len(slots) >= 3  # the partitions' slots
        st.set_online({"S1": 3})
        assert st.counts("online", ["S1"]) == [3]
        assert st.delete_live() > 0 and not st.live_keys(with_meta=True)
        for key in list(r.scan_iter(match="wgs:*")):
            r.unlink(key)
        r.close()
