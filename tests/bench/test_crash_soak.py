"""The crash test at soak size: more events, more kills, several seeds (each a different
input and kill schedule). Checks what the crash test checks; prints each run's figures.

Sizes: ``WANGGE_SOAK_EVENTS`` (360,000), ``WANGGE_SOAK_KILLS`` (20), ``WANGGE_SOAK_SEEDS``
(comma-separated, "1,2,3"). Runs on SQLite, or on PostgreSQL when ``DATABASE_URL`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.bench.conftest import bench
from tests.integration.test_crash import run_crash

pytestmark = [pytest.mark.bench, pytest.mark.slow]

EVENTS = int(os.environ.get("WANGGE_SOAK_EVENTS", "360000"))
KILLS = int(os.environ.get("WANGGE_SOAK_KILLS", "20"))
SEEDS = [int(s) for s in os.environ.get("WANGGE_SOAK_SEEDS", "1,2,3").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_crash_soak(
    seed: int,
    redis_url: str,
    prefix: str,
    db_url: Any,
    engine: Engine,
    tmp_path: Path,
    artifacts: Path,
) -> None:
    summary = run_crash(
        redis_url,
        prefix,
        db_url,
        engine,
        tmp_path,
        artifacts,
        n_events=EVENTS,
        kills=KILLS,
        time_limit_s=max(420.0, EVENTS / 300),
        seed=seed,
    )
    entries = sum(summary["entries"].values())
    bench(
        "crash_soak_drain_s",
        summary["drain_s"],
        "s",
        seed=seed,
        entries=entries,
        kills=summary["kills"],
        mid_stream=summary["mid_stream"],
        incidents=summary["incidents"],
        ambiguous=summary["ambiguous"],
    )
