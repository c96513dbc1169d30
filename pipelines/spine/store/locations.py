"""Worker locations in SQL: downsampled track points, patrolled grids per day and each
worker's latest position (each idempotent, whatever the order of arrival)."""

from __future__ import annotations

import polars as pl
from sqlalchemy import (
    Engine,
)

from pipelines.spine.store.schema import patrols, track_points, worker_positions
from pipelines.spine.store.sql import upsert_frame


def persist_tracks(engine: Engine, points: pl.DataFrame) -> None:
    """Downsampled points: per (worker, slot) the earliest point wins, whatever the order."""
    if points.is_empty():
        return
    cols = [c.name for c in track_points.columns]
    with engine.begin() as conn:
        upsert_frame(
            conn, track_points, points.select(cols), ["worker_id", "slot"], where_older="ts_ms"
        )


def persist_patrols(engine: Engine, visits: pl.DataFrame) -> None:
    """Grids visited per day (the earliest visit wins, whatever the order)."""
    if visits.is_empty():
        return
    with engine.begin() as conn:
        frame = visits.select("day", "grid_id", "first_ms")
        upsert_frame(conn, patrols, frame, ["day", "grid_id"], where_older="first_ms")


def persist_positions(engine: Engine, latest: list[tuple[str, int, str]]) -> None:
    """Each worker's latest packed position (the newest wins, whatever the order)."""
    if not latest:
        return
    frame = pl.DataFrame(
        latest,
        schema={"worker_id": pl.String, "ts_ms": pl.Int64, "packed": pl.String},
        orient="row",
    )
    with engine.begin() as conn:
        upsert_frame(conn, worker_positions, frame, ["worker_id"], where_newer="ts_ms")
