"""The pipelines with three partitions on a real three-node Redis Cluster: the live state
spreads over several slots and nodes, every Lua script and MULTI stays in one slot, and
the live counters, incidents, dead letters and positions equal what the oracle derives
from the input alone (``tests/integration/oracle.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster
from sqlalchemy import Engine

from pipelines.spine.runner import ClockJob, live_state, make_worker, rebuild_live
from tests.conftest import settings_for
from tests.integration.oracle import expected
from tests.integration.test_crash import check, crash_input, publish_entries

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

PARTITIONS = 3


def test_partitioned_pipeline_on_cluster_equals_oracle(
    cluster: Any, cluster_url: str, cprefix: str, db_url: Any, engine: Engine, tmp_path: Path
) -> None:
    assert isinstance(cluster, RedisCluster)
    s = settings_for(
        cluster_url,
        cprefix,
        db_url,
        tmp_path,
        streams={"partitions": PARTITIONS, "batch_size": 500, "max_age_days": 60},
    )
    city, index, streams, cams = crash_input(s, engine, tmp_path, 6000, seed=5, garbage_run=120)
    streams, ids = publish_entries(cluster, s, streams)
    ws = [
        make_worker(f, s, city, index, cluster, engine, f"{f}-p{p}", partition=p)
        for f in ("reports", "locations", "video")
        for p in range(PARTITIONS)
    ]
    while sum(w.step().acked for w in ws):  # round-robin until a round reads nothing
        pass
    exp = expected(
        streams, ids, city, index, cams, s.live.timezone, s.pipelines.persist_tracks_every_s
    )
    check(cluster, cprefix, s, engine, exp)

    st = live_state(cluster, s)
    keys = st.live_keys(with_meta=True)
    slots = {cluster.keyslot(k) for k in keys}
    # one slot per partition and one for the global keys, nothing else
    assert len(slots) == PARTITIONS + 1
    assert slots == {cluster.keyslot(f"{b}:x") for b in st.keys.bases()}
    holders = {cluster.get_node_from_key(k).name for k in keys}
    assert len(holders) >= 2, "the partitions' slots should not all sit on one node"
    # every feed partition was used
    for feed in ("reports", "locations", "video"):
        lengths = [cluster.xlen(k) for k in st.keys.feed_streams(feed)]
        assert all(n > 0 for n in lengths), (feed, lengths)

    # the housekeeping and rebuild-live work on the cluster too (per-slot transactions),
    # and the rebuilt state is the one the pipelines built
    clock = lambda: max(int(i.split("-")[0]) for v in ids.values() for i in v) / 1000  # noqa: E731
    ClockJob(s, city, st, cluster, clock=clock).tick()
    before = _counters(st, exp)
    rebuild_live(s, city, cluster, engine, clock=clock)
    assert _counters(st, exp) == before
    assert before["open"] and before["dl"]  # not vacuous


def _counters(st: Any, exp: Any) -> dict[str, Any]:
    days = sorted({d for d, _ in exp.reports_by_day} | {d for d, _ in exp.video_by_day})
    out: dict[str, Any] = {"open": st.counts_all("open"), "dl": st.deadletter_counts()}
    for d in days:
        for m in ("reports", "closed", "video", "coverage", "reports_cat"):
            out[f"{d}:{m}"] = st.counts_all(m, d)
        out[f"{d}:patrolled"] = st.patrolled(d)
    out["positions"] = st.positions()
    return out
