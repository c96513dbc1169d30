"""What the ingest gateway needs of the feeds, end to end on a real Redis and SQL.

* One video alert updated in place: later revisions of an alert id change the stored
  alert (score, end) without counting it again; an equal revision from another entry is
  a duplicate, a lower one arriving late has no effect; rebuild-live restores the same.
* A phone's mock (simulated) location is recorded as such, live and in SQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pipelines.settings import Settings
from pipelines.spine import aggregate as agg
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.clock import clear_of_midnight
from tests.conftest import settings_for

pytestmark = pytest.mark.integration

NOW = clear_of_midnight(int(time.time() * 1000))  # one local day at any hour


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    return settings_for(redis_url, prefix, db_url, tmp_path)


def alert(rev: int | None, score: float, **kw: Any) -> bytes:
    g = kw.pop("grid")
    ev: dict[str, Any] = dict(
        alert_id="F1",
        camera_id="C1",
        label="intrusion",
        score=score,
        ts=NOW - 60_000,
        lon=g[0],
        lat=g[1],
    )
    if rev is not None:
        ev["revision"] = rev
    ev.update(kw)
    return encode(ev)


def test_mock_location_is_recorded_live_and_in_sql(settings, city, index, rclient, engine) -> None:
    """A phone's mock (simulated) fix: kept as the worker's position, marked mock."""
    from pipelines.gridwork.tracks import positions_frame

    g = (city.grids["lon"][3], city.grids["lat"][3])
    w = make_worker("locations", settings, city, index, rclient, engine, "loc-t")
    key = f"{settings.redis.prefix}:{settings.streams.locations}"
    pings = [
        dict(worker_id="W1", ts=NOW - 5000, lon=g[0], lat=g[1], mock=True),
        dict(worker_id="W2", ts=NOW - 5000, lon=g[0], lat=g[1]),
    ]
    publish(rclient, key, [encode(p) for p in pings])
    w.step()
    pos = {k: agg.unpack_position(v) for k, v in w.state.positions().items()}
    assert (pos["W1"]["mock"], pos["W2"]["mock"]) == (True, False)
    frame = positions_frame(w.state.positions_raw()).sort("worker_id")
    assert frame["mock"].to_list() == [True, False]
    points = store.read_frame(engine, select(store.track_points)).sort("worker_id")
    assert points["mock"].to_list() == [True, None]
