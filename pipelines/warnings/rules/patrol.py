"""Rules over patrols and workers (working hours only): grids unvisited for N working hours,
workers offline on shift, workers outside their own grid (``left_grid``) and idle workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from pipelines.warnings.model import (
    HOUR_MS,
    M_PER_DEG_LAT,
    M_PER_DEG_LON_EQ,
    MAX_EVIDENCE,
    MINUTE_MS,
    WORKERS_SCHEMA,
    Finding,
    RuleConfig,
    RuleInputs,
    _findings,
    empty,
    summaries,
)


def local_hour(now_ms: int, tz: str) -> float:
    t = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    return t.hour + t.minute / 60 + t.second / 3600


def rule_patrol_gap(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Staffed grids unvisited for N working hours (blue); a street's workers all offline
    (yellow). Only evaluated during working time, and only once N hours of it have passed.

    A grid is staffed when one of its workers has been seen since today's working time
    began: a grid whose only worker is on the night shift or off today is a rota matter,
    not a patrol gap (the all-offline check still covers a street nobody turned up in).
    """
    h = local_hour(now_ms, cfg.timezone)
    if not (cfg.work_start_h <= h < cfg.work_end_h):
        return []
    workers = inputs.workers
    if workers.is_empty():
        return []
    gap_ms = int(cfg.patrol_gap_hours * HOUR_MS)
    day_start = now_ms - int((h - cfg.work_start_h) * HOUR_MS)
    staffed = (
        workers.filter(pl.col("last_seen_ms").fill_null(0) >= day_start)
        .select("grid_id", "street_id")
        .unique()
    )
    gaps = empty({"street_id": pl.String, "grids": pl.List(pl.String), "n_gap": pl.UInt32})
    if h - cfg.work_start_h >= cfg.patrol_gap_hours:
        gaps = (
            staffed.join(inputs.visits, on="grid_id", how="left")
            .filter(pl.col("last_ms").is_null() | (pl.col("last_ms") < now_ms - gap_ms))
            .sort("grid_id")
            .group_by("street_id")
            .agg(grids=pl.col("grid_id"), n_gap=pl.len())
        )
    since = now_ms - cfg.online_minutes * MINUTE_MS
    online = workers.group_by("street_id").agg(
        n_workers=pl.len(),
        n_online=(pl.col("last_seen_ms").fill_null(0) >= since).sum(),
        offline=pl.col("worker_id").sort().head(MAX_EVIDENCE),
    )
    df = (
        online.join(gaps, on="street_id", how="full", coalesce=True)
        .with_columns(
            n_gap=pl.col("n_gap").fill_null(0),
            grids=pl.col("grids").fill_null(pl.lit([], pl.List(pl.String))),
            all_offline=(pl.col("n_online") == 0) & (pl.col("n_workers") > 0),
        )
        .filter(pl.col("all_offline") | (pl.col("n_gap") > 0))
        .with_columns(
            level=pl.when(pl.col("all_offline")).then(pl.lit("yellow")).otherwise(pl.lit("blue")),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("patrol_gap:"), "street_id"]),
            evidence=pl.when(pl.col("all_offline"))
            .then(pl.concat_list("offline", "grids"))
            .otherwise(pl.col("grids"))
            .list.head(MAX_EVIDENCE),
            gap_hours=pl.lit(cfg.patrol_gap_hours),
        )
        .sort("key")
    )
    cols = ["n_gap", "n_workers", "n_online", "all_offline", "gap_hours"]
    return _findings(summaries(df, cols), "patrol_gap")


def _online_on_shift(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> pl.DataFrame:
    """Rostered workers seen within ``online_minutes``, during working time only."""
    h = local_hour(now_ms, cfg.timezone)
    if not (cfg.work_start_h <= h < cfg.work_end_h) or inputs.workers.is_empty():
        return empty(WORKERS_SCHEMA)
    since = now_ms - cfg.online_minutes * MINUTE_MS
    return inputs.workers.filter(pl.col("last_seen_ms").fill_null(0) >= since)


def _per_street(
    df: pl.DataFrame, rule: str, min_workers: int, cols: dict[str, Any]
) -> list[Finding]:
    """One finding per street of the flagged workers' own grids (evidence: worker ids)."""
    out = (
        df.sort("worker_id")
        .group_by("street_id")
        .agg(workers=pl.col("worker_id"), n_workers=pl.len())
        .filter(pl.col("n_workers") >= min_workers)
        .with_columns(
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit(f"{rule}:"), "street_id"]),
            level=pl.when(pl.col("n_workers") >= 5)
            .then(pl.lit("yellow"))
            .otherwise(pl.lit("blue")),
            evidence=pl.col("workers").list.head(MAX_EVIDENCE),
            **{k: pl.lit(v) for k, v in cols.items()},
        )
        .sort("key")
    )
    return _findings(summaries(out, ["n_workers", *cols]), rule)


def rule_left_grid(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Online workers whose every track point of the last ``left_grid_minutes`` lies
    outside their own grid (the track must span most of the window)."""
    online = _online_on_shift(inputs, cfg, now_ms)
    win = cfg.left_grid_minutes * MINUTE_MS
    away = inputs.away.filter(
        pl.col("n_points") >= 2,
        pl.col("n_own") == 0,
        pl.col("last_ms") - pl.col("first_ms") >= int(win * 0.75),
        pl.col("first_ms") > now_ms - win - MINUTE_MS,
    )
    df = online.join(away, on="worker_id", how="semi")
    return _per_street(
        df, "left_grid", cfg.left_grid_min_workers, {"minutes": cfg.left_grid_minutes}
    )


def rule_idle(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Online workers whose track points of the last ``idle_minutes`` all fit in a box of
    diagonal ``2 × idle_radius_m`` (the track must span most of the window)."""
    online = _online_on_shift(inputs, cfg, now_ms)
    win = cfg.idle_minutes * MINUTE_MS
    mid_lat = ((pl.col("lat_min") + pl.col("lat_max")) / 2).radians()
    dx = (pl.col("lon_max") - pl.col("lon_min")) * M_PER_DEG_LON_EQ * mid_lat.cos()
    dy = (pl.col("lat_max") - pl.col("lat_min")) * M_PER_DEG_LAT
    still = inputs.spread.filter(
        pl.col("n_points") >= 3,
        pl.col("last_ms") - pl.col("first_ms") >= int(win * 0.9),
        (dx.pow(2) + dy.pow(2)).sqrt() <= 2 * cfg.idle_radius_m,
    )
    df = online.join(still, on="worker_id", how="semi")
    return _per_street(df, "idle", 1, {"minutes": cfg.idle_minutes})
