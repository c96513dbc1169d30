"""Every node of the tier's cluster runs the configured server binary
(``redis.embedded_server``): `make test-valkey` runs this tier on Valkey, not silently on
redis-server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import redis

from pipelines.embedded import redis_server_binary


def test_every_node_runs_the_configured_server(cluster: Any) -> None:
    if os.environ.get("CLUSTER_URL"):
        pytest.skip("a cluster given by CLUSTER_URL, not started by the tests")
    want = Path(redis_server_binary()).resolve()
    nodes = cluster.get_primaries()
    assert len(nodes) == 3
    for node in nodes:
        r = redis.Redis(host=node.host, port=node.port)
        try:
            info = r.info("server")
        finally:
            r.close()
        assert Path(str(info["executable"])).resolve() == want, (node.name, info["executable"])
