"""Pure Polars transforms: a decoded batch → rows the sinks write.

No Redis, no SQL, no clock: every function is ``DataFrame → DataFrame`` (or the tuples
a Lua script takes), chained with ``.pipe`` in the runner and unit-tested directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import polars as pl

from pipelines.settings import DeadlineSettings
from pipelines.spine.events import CATEGORIES
from pipelines.spine.state import REPORT_FIELDS, VIDEO_FIELDS

CHAIN = ("grid_id", "street_id", "district_id", "city_id")


def with_time_keys(df: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Add local ``day`` (YYYYMMDD), epoch ``minute`` and ``hour`` from ``ts`` (ms, UTC).

    The time-zone conversion runs once per distinct minute of the batch (UTC offsets
    are whole minutes), not once per row.
    """
    minute = df["ts"] // 60_000
    minutes = minute.unique()
    local = pl.from_epoch(minutes * 60_000, time_unit="ms").dt.replace_time_zone("UTC")
    days = local.dt.convert_time_zone(tz).dt.strftime("%Y%m%d")
    return df.with_columns(
        minute=minute,
        hour=df["ts"] // 3_600_000,
        day=minute.replace_strict(minutes, days).cast(pl.String),  # (String when empty too)
    )


def local_day(ts_ms: int, tz: str) -> str:
    return with_time_keys(pl.DataFrame({"ts": [ts_ms]}), tz)["day"][0]


def with_grid(df: pl.DataFrame, grid_index: np.ndarray, grids: pl.DataFrame) -> pl.DataFrame:
    """Attach the area chain of each row's grid index (``-1`` rows get nulls)."""
    idx = pl.Series(grid_index, dtype=pl.Int64)
    idx = idx.set(idx < 0, None)  # a null index gathers nulls
    return df.hstack(grids.select(pl.col(CHAIN).gather(idx)).get_columns())


def split_outside(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    inside = pl.col("grid_id").is_not_null()
    return df.filter(inside), df.filter(~inside)


def deadline_ms(deadlines: DeadlineSettings) -> pl.Expr:
    """Milliseconds from an incident's report to its closure deadline, by category."""
    mapping = {c: int(deadlines.hours(c) * 3_600_000) for c in CATEGORIES}
    return pl.col("category").replace_strict(mapping, default=int(deadlines.other * 3_600_000))


def _ticker(df: pl.DataFrame, kind: str, label_col: str) -> list[bytes]:
    cols = df.select("ts", label_col, "grid_id", "district_id", "street_id", "lon", "lat")
    return [
        orjson.dumps({"k": kind, "ts": ts, "what": what, "grid": g, "lon": lon, "lat": lat})
        for ts, what, g, _d, _s, lon, lat in cols.iter_rows()
    ]


def report_rows(df: pl.DataFrame, deadlines: DeadlineSettings) -> list[tuple[Any, ...]]:
    """Rows for ``LiveState.apply_reports``, ordered by (incident, ts)."""
    if df.is_empty():
        return []
    df = df.sort(["incident_id", "ts"], maintain_order=True).with_columns(
        deadline_ms=deadline_ms(deadlines),
        level=pl.col("level").fill_null("grid"),
        what=pl.concat_str([pl.col("category"), pl.col("step")], separator=":"),
    )
    tick = [
        orjson.dumps({"k": "report", "ts": ts, "what": w, "id": i, "grid": g, "sev": s})
        for ts, w, i, g, s in df.select(
            "ts", "what", "incident_id", "grid_id", "severity"
        ).iter_rows()
    ]
    df = df.with_columns(ticker=pl.Series(tick, dtype=pl.Binary))
    return list(df.select(REPORT_FIELDS).iter_rows())


def video_rows(df: pl.DataFrame) -> list[tuple[Any, ...]]:
    if df.is_empty():
        return []
    tick = [
        orjson.dumps({"k": "video", "ts": ts, "what": lab, "id": a, "grid": g, "cam": c})
        for ts, lab, a, g, c in df.select(
            "ts", "label", "alert_id", "grid_id", "camera_id"
        ).iter_rows()
    ]
    df = df.with_columns(ticker=pl.Series(tick, dtype=pl.Binary))
    rev = pl.col("revision").cast(pl.String) if "revision" in df.columns else pl.lit(None)
    df = df.with_columns(revision=rev.fill_null(""))
    return list(df.select(VIDEO_FIELDS).iter_rows())


def _mock(df: pl.DataFrame) -> pl.Expr:
    """The ``mock`` flag of location rows (null when the frame has none)."""
    return pl.col("mock") if "mock" in df.columns else pl.lit(None, dtype=pl.Boolean)


def latest_positions(df: pl.DataFrame) -> list[tuple[str, int, str]]:
    """Latest ping per worker in the batch: (worker_id, ts, packed position)."""
    if df.is_empty():
        return []
    packed = pl.concat_str(
        [
            pl.col("lon").round(6).cast(pl.String),
            pl.col("lat").round(6).cast(pl.String),
            pl.col("ts").cast(pl.String),
            pl.col("grid_id"),
            pl.col("accuracy").round(1).cast(pl.String).fill_null(""),
            pl.col("speed").round(2).cast(pl.String).fill_null(""),
            pl.col("battery").round(0).cast(pl.String).fill_null(""),
            pl.when(_mock(df)).then(pl.lit("1")).otherwise(pl.lit("")),
        ],
        separator=",",
    )
    return (
        df.lazy()
        .select("worker_id", "ts", packed.alias("p"))
        .sort("ts", maintain_order=True)
        .unique("worker_id", keep="last", maintain_order=True)
        .collect()
        .rows()
    )


def unpack_position(packed: str) -> dict[str, Any]:
    """A packed position; ``mock`` (8th field, "1") is absent in positions packed before it."""
    lon, lat, ts, grid, acc, speed, battery, *rest = packed.split(",")
    num = lambda v: float(v) if v else None  # noqa: E731
    return {
        "lon": float(lon),
        "lat": float(lat),
        "ts": int(ts),
        "grid_id": grid,
        "accuracy": num(acc),
        "speed": num(speed),
        "battery": num(battery),
        "mock": bool(rest) and rest[0] == "1",
    }


def first_visits(df: pl.DataFrame) -> pl.DataFrame:
    """Earliest visit of each (day, grid) in the batch, with the grid's area chain.

    Columns ``day``, ``grid_id``, ``street_id``, ``district_id``, ``city_id``, ``first_ms``
    (the ``patrols`` table takes ``day``, ``grid_id`` and ``first_ms``).
    """
    return df.group_by("day", *CHAIN, maintain_order=True).agg(first_ms=pl.col("ts").min())


def patrolled_grids(df: pl.DataFrame) -> list[tuple[str, str, str, str, str]]:
    """Distinct (day, grid, street, district, city) visited in the batch."""
    if df.is_empty():
        return []
    return df.lazy().select("day", *CHAIN).unique(maintain_order=True).collect().rows()


def track_slots(df: pl.DataFrame, every_s: int) -> pl.DataFrame:
    """Downsample pings to the earliest one per worker per ``every_s`` slot."""
    return (
        df.lazy()
        .select(
            "worker_id",
            slot=pl.col("ts") // (every_s * 1000),
            ts_ms="ts",
            lon="lon",
            lat="lat",
            grid_id="grid_id",
            accuracy="accuracy",
            speed="speed",
            battery="battery",
            mock=_mock(df),
        )
        .sort("ts_ms", maintain_order=True)
        .unique(["worker_id", "slot"], keep="first", maintain_order=True)
        .collect()
    )


def report_history(df: pl.DataFrame) -> pl.DataFrame:
    """Decoded report rows → ``incident_events`` rows."""
    return df.rename({"ts": "ts_ms"})


def video_history(df: pl.DataFrame) -> pl.DataFrame:
    return df.rename({"ts": "ts_ms", "end_ts": "end_ms"}, strict=False)


def online_counts(grid_ids: list[str], grids: pl.DataFrame) -> dict[str, int]:
    """Workers per area (every level) from the grids their latest pings fall in."""
    if not grid_ids:
        return {}
    g = pl.DataFrame({"grid_id": grid_ids}).join(grids.select(CHAIN), on="grid_id", how="inner")
    parts = [g.group_by(c).len().rename({c: "area_id"}) for c in CHAIN]
    out = pl.concat(parts)
    return dict(zip(out["area_id"].to_list(), out["len"].to_list(), strict=True))
