"""The kill -9 crash test (``tests/integration/test_crash.py``) on a real three-node Redis
Cluster with three partitions per feed and one worker process per (feed, partition):
nothing lost, nothing double-counted, Redis == SQL == the oracle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.integration.test_crash import run_crash

pytestmark = [pytest.mark.cluster, pytest.mark.integration, pytest.mark.slow]

EVENTS = int(os.environ.get("WANGGE_CLUSTER_CRASH_EVENTS", "30000"))


def test_kill_9_on_cluster_with_partitions(
    cluster_url: str, cprefix: str, db_url: Any, engine: Engine, tmp_path: Path, artifacts: Path
) -> None:
    summary = run_crash(
        cluster_url,
        cprefix,
        db_url,
        engine,
        tmp_path,
        artifacts,
        n_events=EVENTS,
        kills=5,
        time_limit_s=300,
        partitions=3,
        per_partition=1,
    )
    print(f"cluster crash: {summary}")
    assert summary["dead"].get("duplicate", 0) > 50 and summary["dead"].get("bad_transition")
