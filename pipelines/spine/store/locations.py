"""Worker locations in SQL: downsampled track points, patrolled grids per day and each
worker's latest position (each idempotent, whatever the order of arrival)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    text,
)

from pipelines.spine.store.schema import patrols, track_points, worker_positions
from pipelines.spine.store.sql import insert_ignore, lock_keys, upsert_frame


@contextmanager
def _tx(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection in a transaction: the caller's (its transaction), or a new one."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.begin() as conn:
        yield conn


def persist_tracks(
    engine: Engine | Connection, points: pl.DataFrame, slot_ms: int | None = None
) -> None:
    """Downsampled points: per (worker, slot) the earliest point wins, whatever the order.
    ``engine``: an engine (one transaction of its own) or a connection in a transaction.

    ``slot_ms``: the slot length (``ts_ms // slot_ms`` is the slot), which bounds the
    PostgreSQL path's reads and deletes in time (partition pruning); None reads unbounded.
    """
    if points.is_empty():
        return
    cols = [c.name for c in track_points.columns]
    with _tx(engine) as conn:
        if conn.dialect.name == "postgresql":
            _earliest_per_slot(conn, points.select(cols), slot_ms)
            return
        upsert_frame(
            conn, track_points, points.select(cols), ["worker_id", "slot"], where_older="ts_ms"
        )


TRACK_LOCKS = 256


def _earliest_per_slot(conn: Connection, points: pl.DataFrame, slot_ms: int | None) -> None:
    """PostgreSQL: the earliest point per (worker, slot), decided here rather than by an
    upsert on (worker_id, slot): a partitioned ``track_points`` has the key (worker_id,
    slot, ts_ms) (the partition key belongs to every unique key). Locks the workers, reads
    the stored points of the batch's slots, deletes those a batch point precedes and
    inserts the batch's winners (any table layout)."""
    # one lock per bucket of workers (at most TRACK_LOCKS), not per worker: advisory
    # locks share the server's lock table with every other transaction's
    buckets = {zlib.crc32(w.encode()) % TRACK_LOCKS for w in points["worker_id"].unique()}
    lock_keys(conn, [f"track:{b}" for b in buckets])
    best = points.sort("ts_ms").unique(["worker_id", "slot"], keep="first", maintain_order=True)
    when = ""
    if slot_ms is not None:  # a stored point of a batch point's slot is within one slot
        lo, hi = int(best["ts_ms"].min()) - slot_ms, int(best["ts_ms"].max()) + slot_ms  # type: ignore[arg-type]
        when = f" AND t.ts_ms >= {lo} AND t.ts_ms <= {hi}"
    args = {"w": best["worker_id"].to_list(), "s": best["slot"].to_list()}
    stored = conn.execute(
        text(
            "SELECT t.worker_id, t.slot, t.ts_ms FROM track_points t JOIN"
            " unnest(CAST(:w AS text[]), CAST(:s AS bigint[])) AS b(w, s)"
            f" ON t.worker_id = b.w AND t.slot = b.s WHERE true{when}"
        ),
        args,
    ).all()
    old = {(w, s): ts for w, s, ts in stored}
    win = [
        r
        for r in best.iter_rows(named=True)
        if old.get((r["worker_id"], r["slot"]), 2**63) > r["ts_ms"]
    ]
    gone = [
        (r["worker_id"], r["slot"], old[(r["worker_id"], r["slot"])])
        for r in win
        if (r["worker_id"], r["slot"]) in old
    ]
    if gone:
        w, s, ts = (list(x) for x in zip(*gone, strict=True))
        conn.execute(
            text(
                "DELETE FROM track_points t USING unnest(CAST(:w AS text[]),"
                " CAST(:s AS bigint[]), CAST(:ts AS bigint[])) AS b(w, s, ts)"
                f" WHERE t.worker_id = b.w AND t.slot = b.s AND t.ts_ms = b.ts{when}"
            ),
            {"w": w, "s": s, "ts": ts},
        )
    insert_ignore(conn, track_points, win)


def persist_patrols(engine: Engine | Connection, visits: pl.DataFrame) -> None:
    """Grids visited per day (the earliest visit wins, whatever the order)."""
    if visits.is_empty():
        return
    with _tx(engine) as conn:
        frame = visits.select("day", "grid_id", "first_ms")
        upsert_frame(conn, patrols, frame, ["day", "grid_id"], where_older="first_ms")


def persist_positions(engine: Engine | Connection, latest: list[tuple[str, int, str]]) -> None:
    """Each worker's latest packed position (the newest wins, whatever the order)."""
    if not latest:
        return
    frame = pl.DataFrame(
        latest,
        schema={"worker_id": pl.String, "ts_ms": pl.Int64, "packed": pl.String},
        orient="row",
    )
    with _tx(engine) as conn:
        upsert_frame(conn, worker_positions, frame, ["worker_id"], where_newer="ts_ms")
