"""Video alerts in SQL: the decision of a batch of alerts (``decide_alerts``) and the
camera registry."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    select,
)

from pipelines.spine.store.schema import cameras, video_alerts
from pipelines.spine.store.sql import (
    _rows_in,
    frame_schema,
    insert_ignore_frame,
    lock_keys,
    read_frame,
    write_lock,
)

VIDEO_COLUMNS = [c.name for c in video_alerts.columns]


@dataclass
class AlertDecision:
    statuses: dict[str, str]  # batch entry → A created, U updated, R applied, S superseded,
    # D duplicate, M moved (``aggregate.decide_alert_versions``)
    current: pl.DataFrame  # the ``video_alerts`` row of every alert id of the batch, now
    displaced: pl.DataFrame  # stored rows whose creating entry lost to an earlier entry
    # (dead-lettered as duplicates when they never had a revision)
    stored: pl.DataFrame | None = None  # the rows read (``write_alerts`` replaces …)
    written: pl.DataFrame | None = None  # … with these, the rows that changed


def decide_alerts(conn: Connection, batch: pl.DataFrame, *, write: bool = True) -> AlertDecision:
    """Decide a batch of valid, located video alerts (``video_alerts`` columns) against the
    stored ones and write the outcome (``write_alerts``; unless ``write`` is false, when the
    caller writes it later in the same transaction): one row per alert id, created by the
    first entry in stream order and updated in place by newer revisions
    (``aggregate.decide_alert_versions``). Locks the alert ids first, so concurrent batches
    are decided one after the other."""
    from pipelines.spine import aggregate as agg

    write_lock(conn)
    ids = batch["alert_id"].unique().to_list()
    lock_keys(conn, [f"alert:{a}" for a in ids])
    old = _rows_in(conn, video_alerts, "alert_id", ids, VIDEO_COLUMNS)
    schema = frame_schema(video_alerts)
    rows = batch.select(VIDEO_COLUMNS).cast(pl.Schema(schema))
    # The common case, decided without the rule's per-row work: an alert id neither stored
    # nor named twice in the batch is created by its one entry, as it is (A).
    new = ~pl.col("alert_id").is_duplicated() & ~pl.col("alert_id").is_in(old["alert_id"].implode())
    fresh, rest = rows.filter(new), rows.filter(~new)
    changed, statuses, displaced = agg.decide_alert_versions(old.to_dicts(), rest.to_dicts())
    statuses.update(dict.fromkeys(fresh["entry_id"].to_list(), "A"))
    written = pl.concat([fresh, pl.DataFrame(changed, schema=schema)]) if changed else fresh
    kept = old.filter(~pl.col("alert_id").is_in(written["alert_id"].implode()))
    d = AlertDecision(
        statuses=statuses,
        current=pl.concat([kept, written.select(old.columns)]),
        displaced=pl.DataFrame(displaced, schema=schema) if displaced else old.clear(),
        stored=old,
        written=written,
    )
    if write:
        write_alerts(conn, d)
    return d


def write_alerts(conn: Connection, d: AlertDecision) -> None:
    """Write what ``decide_alerts`` decided, in the transaction (and under the locks) it
    decided in."""
    if d.stored is not None and d.written is not None:
        _replace(conn, d.stored, d.written)


def _replace(conn: Connection, old: pl.DataFrame, write: pl.DataFrame) -> None:
    """Write the decided rows, one per alert id: a stored row of the same id is replaced.

    The key is ``alert_id`` on SQLite and (alert_id, ts_ms) on a partitioned PostgreSQL
    table (the partition key belongs to every unique key there); an alert's start
    changes only when an earlier creating entry displaces its creator, so the stored rows
    of the written ids are deleted first (by id and their own start: pruned to their
    partitions) and the rows inserted. The ids are locked (``decide_alerts``)."""
    if write.is_empty():
        return
    stale = old.filter(pl.col("alert_id").is_in(write["alert_id"].implode()))
    va = video_alerts
    for i in range(0, stale.height, 5000):
        part = stale.slice(i, 5000)
        ts = sorted(set(part["ts_ms"].to_list()))
        conn.execute(
            va.delete().where(va.c.alert_id.in_(part["alert_id"].to_list()), va.c.ts_ms.in_(ts))
        )
    insert_ignore_frame(conn, va, write)


def cameras_frame(engine: Engine) -> pl.DataFrame:
    return read_frame(engine, select(cameras))
