"""Expected live state and SQL contents computed from the input events alone.

Deliberately independent of the pipeline code path (no Lua, no runner): plain Polars
over the list of (feed, payload, expected_reason) the simulator produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from pipelines.city.geography import City, GridIndex

CHAIN = ("grid_id", "street_id", "district_id", "city_id")


@dataclass
class Expected:
    reports_by_day: dict[tuple[str, str], int]  # (day, area) → reported events
    closed_by_day: dict[tuple[str, str], int]
    open_by_area: dict[str, int]
    video_by_day: dict[tuple[str, str], int]
    patrolled: dict[str, set[str]]  # day → grids
    positions: dict[str, tuple[int, str]]  # worker → (ts, grid)
    dead_by_reason: dict[str, int]
    n_incident_events: int
    n_incidents: int
    n_video: int
    n_track_slots: int


def _frame(rows: list[dict[str, Any]], city: City, index: GridIndex, tz: str) -> pl.DataFrame:
    df = pl.DataFrame(rows, infer_schema_length=None)
    gi = index.assign(df["lon"].to_numpy(), df["lat"].to_numpy())
    grids = (
        city.grids.select(CHAIN).with_row_index("_gi").with_columns(pl.col("_gi").cast(pl.Int64))
    )
    df = df.with_columns(_gi=pl.Series(gi, dtype=pl.Int64)).join(grids, on="_gi", how="left")
    local = pl.from_epoch("ts", time_unit="ms").dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    return df.with_columns(day=local.dt.strftime("%Y%m%d"))


def _per_area(df: pl.DataFrame, by: tuple[str, ...] = ("day",)) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for level in CHAIN:
        for row in df.group_by(*by, level).len().iter_rows():
            key = (*row[: len(by)], row[len(by)])
            out[key if len(key) > 1 else key[0]] = out.get(key, 0) + row[-1]
    return out


def expected(
    events: list[tuple[str, bytes, str | None]],
    city: City,
    index: GridIndex,
    cameras: dict[str, tuple[float, float]],
    tz: str,
    track_every_s: int = 60,
) -> Expected:
    good: dict[str, list[dict[str, Any]]] = {"reports": [], "locations": [], "video": []}
    dead: dict[str, int] = {}
    for feed, payload, reason in events:
        if reason:
            dead[reason] = dead.get(reason, 0) + 1
            continue
        ev = orjson.loads(payload)
        if feed == "video" and ev.get("lon") is None:
            ev["lon"], ev["lat"] = cameras[ev["camera_id"]]
        good[feed].append(ev)
    rep = _frame(good["reports"], city, index, tz)
    loc = _frame(good["locations"], city, index, tz)
    vid = _frame(good["video"], city, index, tz)
    for df in (rep, loc, vid):
        assert df["grid_id"].null_count() == 0, "a good event fell outside the city"
    closed_ids = rep.filter(pl.col("step") == "closed")["incident_id"].unique()
    first = rep.sort("ts").group_by("incident_id").first()
    still_open = first.filter(~pl.col("incident_id").is_in(closed_ids.implode()))
    latest = loc.sort("ts").group_by("worker_id").last()
    patrolled: dict[str, set[str]] = {}
    for day, grid in loc.select("day", "grid_id").unique().iter_rows():
        patrolled.setdefault(day, set()).add(grid)
    slots = loc.select("worker_id", (pl.col("ts") // (track_every_s * 1000)).alias("s")).unique()
    return Expected(
        reports_by_day=_per_area(rep.filter(pl.col("step") == "reported")),
        closed_by_day=_per_area(rep.filter(pl.col("step") == "closed")),
        open_by_area=_per_area(still_open, by=()),
        video_by_day=_per_area(vid),
        patrolled=patrolled,
        positions={
            w: (t, g) for w, t, g in latest.select("worker_id", "ts", "grid_id").iter_rows()
        },
        dead_by_reason=dead,
        n_incident_events=rep.height,
        n_incidents=rep["incident_id"].n_unique(),
        n_video=vid.height,
        n_track_slots=slots.height,
    )
