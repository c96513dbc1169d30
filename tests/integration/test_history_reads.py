"""The time machine's reads (``history.state.read_rows``) on SQLite and PostgreSQL.

An older database gets the indexes those reads lean on from the schema upgrade (on
PostgreSQL on every partition of the partitioned history tables), and each worker's
latest track point by a moment is the one a look at every point gives (within the
lookback), read from the index alone on SQLite.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, event

from pipelines.city.geography import City
from pipelines.history.state import POSITIONS_LOOKBACK_MS, Scope, read_rows
from pipelines.settings import load_settings
from pipelines.spine import store

pytestmark = pytest.mark.integration

# the indexes the time machine's reads lean on: name → (table, columns)
TM_INDEXES = {
    "ix_track_points_ts_worker": ("track_points", "ts_ms, worker_id"),
    "ix_track_points_worker_ts": ("track_points", "worker_id, ts_ms"),
    "ix_incident_events_ts_incident": ("incident_events", "ts_ms, incident_id"),
    "ix_incident_events_street_ts": ("incident_events", "street_id, ts_ms, incident_id"),
}
H = 3_600_000
AT = 1_795_244_400_000  # 2026-11-21 15:00 Asia/Shanghai


def index_names(engine: Engine) -> set[str]:
    with engine.connect() as c:
        if engine.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        return set(c.exec_driver_sql(sql).scalars())


def test_an_older_database_gets_the_time_machine_indexes(engine: Engine) -> None:
    from pipelines.spine.store import partitions as P

    P.ensure_partitions(engine, AT, "Asia/Shanghai")  # PostgreSQL: periods of history
    with engine.begin() as c:  # a database from before them: the same tables without
        for name in TM_INDEXES:
            c.exec_driver_sql(f"DROP INDEX {name}")
    assert not set(TM_INDEXES) & index_names(engine)
    store.create_schema(engine)
    assert set(TM_INDEXES) <= index_names(engine)
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as c:
        defs = c.exec_driver_sql(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
        ).all()
        for table, cols in TM_INDEXES.values():
            parts = [p.name for p in P.partitions(c, table)]
            assert len(parts) > 1  # the history table is partitioned …
            for part in parts:  # … and each of its partitions has the index
                assert any(t == part and f"({cols})" in d for t, d in defs), (part, cols)


def point(worker: str, ts: int, grid: str) -> dict[str, Any]:
    return {
        "worker_id": worker,
        "slot": ts // 60_000,
        "ts_ms": ts,
        "lon": 118.8,
        "lat": 32.0,
        "grid_id": grid,
        "accuracy": 5.0,
        "speed": 1.0,
        "battery": 0.5,
        "mock": False,
    }


def test_each_workers_latest_point_by_a_moment(engine: Engine, city: City) -> None:
    grids = city.grids["grid_id"].to_list()
    # W1: points before and after the moment; W2: only an old one (past the lookback) and
    # one later; W3: a point exactly at the moment; W4: only after it; W5: one just inside
    # the lookback
    offsets = {
        "W1": [-5 * H, -2 * H, -7 * 60_000, 3 * 60_000, 2 * H],
        "W2": [-POSITIONS_LOOKBACK_MS - 60_000, H],
        "W3": [-H, 0],
        "W4": [60_000, 5 * H],
        "W5": [-POSITIONS_LOOKBACK_MS + 60_000],
    }
    pts = [
        point(w, AT + off, grids[(i * 7 + k) % len(grids)])
        for i, (w, offs) in enumerate(offsets.items())
        for k, off in enumerate(offs)
    ]
    with engine.begin() as c:
        store.insert_ignore(c, store.track_points, pts)
    seen: list[str] = []  # the statements SQLite ran on track points, values inlined

    def spy(dbapi_conn: Any, _rec: Any, _proxy: Any) -> None:
        # the large reads go to the driver's cursor, past SQLAlchemy's events: SQLite's
        # own trace sees them
        if engine.dialect.name == "sqlite":
            dbapi_conn.set_trace_callback(
                lambda sql: seen.append(sql) if "track_points" in sql else None
            )

    settings = load_settings(environ={})
    event.listen(engine, "checkout", spy)
    try:
        rows = read_rows(engine, city, settings, AT, 24 * H, Scope.of(city, None))
    finally:
        event.remove(engine, "checkout", spy)
    ran = list(seen)
    got = {r["worker_id"]: (r["ts_ms"], r["grid_id"]) for r in rows.points.iter_rows(named=True)}
    expected: dict[str, tuple[int, str]] = {}
    for p in sorted(pts, key=lambda p: p["ts_ms"]):  # the latest by the moment, in lookback
        if AT - POSITIONS_LOOKBACK_MS <= p["ts_ms"] <= AT:
            expected[p["worker_id"]] = (p["ts_ms"], p["grid_id"])
    assert set(expected) == {"W1", "W3", "W5"}
    assert got == expected
    if engine.dialect.name == "sqlite":  # the latest per worker comes from the index alone
        assert len(ran) == 1
        with engine.connect() as c:
            plan = c.exec_driver_sql(f"EXPLAIN QUERY PLAN {ran[0]}").all()
        steps = " / ".join(str(r[-1]) for r in plan)
        assert "COVERING INDEX ix_track_points_ts_worker" in steps, steps
