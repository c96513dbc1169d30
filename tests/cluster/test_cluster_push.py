"""Live push on the cluster: the dashboard and two push servers on a real three-node Redis
Cluster (sessions, the per-tick response cache and the pub/sub fan-out between push
processes all there); the push proofs of ``tests/integration/test_push.py``, run here."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pipelines.redis_client import connect
from tests.integration.test_push import (
    World,
    push_world,
    test_a_revoked_session_stream_closes_on_the_next_tick,
    test_a_viewer_without_the_right_is_refused_and_gets_nothing,
    test_two_viewers_get_each_tick_from_one_serialisation,
)

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

__all__ = [
    "test_a_revoked_session_stream_closes_on_the_next_tick",
    "test_a_viewer_without_the_right_is_refused_and_gets_nothing",
    "test_two_viewers_get_each_tick_from_one_serialisation",
]


@pytest.fixture(scope="module")
def world(cluster_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    prefix = f"wgc-{uuid.uuid4().hex[:10]}"
    try:
        yield from push_world(cluster_url, prefix, tmp_path_factory.mktemp("push"))
    finally:
        r = connect(cluster_url)
        for key in list(r.scan_iter(match=f"{prefix}:*", count=5000)):
            r.unlink(key)
        r.close()
