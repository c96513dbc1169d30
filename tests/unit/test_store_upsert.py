"""The driver-level upsert: its SQL text, and that it writes what Core ``upsert`` writes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from sqlalchemy import Engine, Table, select

from pipelines.spine import store


def test_upsert_sql_per_dialect() -> None:
    cols = ["worker_id", "slot", "ts_ms"]
    lite = store.upsert_sql(
        "sqlite", store.track_points, cols, ["worker_id", "slot"], None, "ts_ms"
    )
    assert lite == (
        "INSERT INTO track_points (worker_id, slot, ts_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (worker_id, slot) DO UPDATE SET ts_ms = excluded.ts_ms"
        " WHERE track_points.ts_ms > excluded.ts_ms"
    )
    pg = store.upsert_sql(
        "postgresql", store.worker_positions, ["worker_id", "ts_ms"], ["worker_id"], "ts_ms"
    )
    assert pg == (
        "INSERT INTO worker_positions (worker_id, ts_ms) VALUES (%s, %s)"
        " ON CONFLICT (worker_id) DO UPDATE SET ts_ms = excluded.ts_ms"
        " WHERE worker_positions.ts_ms <= excluded.ts_ms"
    )


def _rows(engine: Engine, table: Table) -> list[tuple[object, ...]]:
    return sorted(store.read_frame(engine, select(table)).rows())


def test_upsert_frame_equals_core_upsert(tmp_path: Path) -> None:
    """Same batches through both paths: earliest slot point and newest position win."""
    engines = []
    for name in ("core", "driver"):
        eng = store.make_engine(f"sqlite:///{tmp_path / name}.db")
        store.create_schema(eng)
        engines.append(eng)
    core, driver = engines
    point = dict(lon=118.8, lat=32.0, grid_id="g1", accuracy=None, speed=1.0, battery=50.0)
    batches = [
        [
            dict(worker_id="w1", slot=1, ts_ms=70_000, **point),
            dict(worker_id="w2", slot=1, ts_ms=65_000, **point),
        ],
        [
            dict(worker_id="w1", slot=1, ts_ms=61_000, **point),
            dict(worker_id="w2", slot=1, ts_ms=90_000, **point),
        ],
    ]
    positions = [[("w1", 5, "a"), ("w2", 9, "b")], [("w1", 7, "c"), ("w2", 8, "d")]]
    for rows, latest in zip(batches, positions, strict=True):
        with core.begin() as conn:
            store.upsert(conn, store.track_points, rows, ["worker_id", "slot"], where_older="ts_ms")
            store.upsert(
                conn,
                store.worker_positions,
                [{"worker_id": w, "ts_ms": t, "packed": p} for w, t, p in latest],
                ["worker_id"],
                where_newer="ts_ms",
            )
        with driver.begin() as conn:
            store.upsert_frame(
                conn,
                store.track_points,
                pl.DataFrame(rows),
                ["worker_id", "slot"],
                where_older="ts_ms",
            )
        store.persist_positions(driver, latest)
    for table in (store.track_points, store.worker_positions):
        assert _rows(driver, table) == _rows(core, table)
    assert [r[2] for r in _rows(driver, store.track_points)] == [61_000, 65_000]
    assert [r[2] for r in _rows(driver, store.worker_positions)] == ["c", "b"]
    for eng in engines:
        eng.dispose()
