"""Video alerts in SQL: the decision of a batch of alerts (``decide_alerts``) and the
camera registry."""

from dataclasses import dataclass

import polars as pl
from sqlalchemy import (
    Connection,
    Engine,
    select,
)

from pipelines.spine.store.schema import cameras, video_alerts
from pipelines.spine.store.sql import _rows_in, insert_ignore, lock_keys, read_frame, write_lock

VIDEO_COLUMNS = [c.name for c in video_alerts.columns]


@dataclass
class AlertDecision:
    statuses: dict[str, str]  # batch entry → A (owns its alert id now), R (owned it), D
    owners: pl.DataFrame  # the owning ``video_alerts`` row of every alert id of the batch
    losers: pl.DataFrame  # entries that do not own their alert id: alert_id, entry_id, ts_ms
    displaced: pl.DataFrame  # ``video_alerts`` rows of earlier batches that lost their id


def decide_alerts(conn: Connection, batch: pl.DataFrame) -> AlertDecision:
    """Decide a batch of valid, located video alerts (``video_alerts`` columns): an alert
    id belongs to the first entry in stream order carrying it, on any day. Writes the
    owners; a row of an earlier batch that loses its id to an earlier entry is replaced."""
    from pipelines.spine import aggregate as agg

    write_lock(conn)
    ids = batch["alert_id"].unique().to_list()
    lock_keys(conn, [f"alert:{a}" for a in ids])
    old = _rows_in(conn, video_alerts, "alert_id", ids, VIDEO_COLUMNS)
    fresh = batch.select(VIDEO_COLUMNS).filter(~pl.col("entry_id").is_in(old["entry_id"].to_list()))
    cands = pl.concat(
        [old.with_columns(stored=pl.lit(True)), fresh.with_columns(stored=pl.lit(False))]
    )
    won = agg.alert_winners(cands)
    owners = won.filter("winner")
    new_owners = owners.filter(~pl.col("stored"))
    displaced = old.filter(pl.col("alert_id").is_in(new_owners["alert_id"].implode()))
    if displaced.height:
        conn.execute(
            video_alerts.delete().where(
                video_alerts.c.alert_id.in_(displaced["alert_id"].to_list())
            )
        )
    insert_ignore(conn, video_alerts, new_owners.select(VIDEO_COLUMNS).to_dicts())
    owner_of = dict(zip(owners["alert_id"], owners["entry_id"], strict=True))
    stored = set(old["entry_id"])
    statuses = {
        e: ("D" if owner_of[a] != e else "R" if e in stored else "A")
        for a, e in batch.select("alert_id", "entry_id").iter_rows()
    }
    return AlertDecision(
        statuses=statuses,
        owners=owners.select(VIDEO_COLUMNS),
        losers=won.filter(~pl.col("winner")).select("alert_id", "entry_id", "ts_ms"),
        displaced=displaced,
    )


def cameras_frame(engine: Engine) -> pl.DataFrame:
    return read_frame(engine, select(cameras))
