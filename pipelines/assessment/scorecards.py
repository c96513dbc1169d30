"""Scorecards per district, street, grid or worker: rows of the level, the metrics computed
over the period's inputs, the score and the rank, the change against the previous period.

* **Cohort**: an incident belongs to the period in which it was *reported* and to the
  grid, street and district where it was reported; at worker level to the grid worker
  responsible when it was reported (the ``handler_id`` of its ``reported`` event).
* **As of**: only lifecycle events before ``as_of`` count, so a scorecard is reproducible;
  a deadline counts against an open incident only once it has passed at ``as_of``.
* **Snapshots**: once a period is final (``assessment.snapshot_grace_hours`` after its
  end) its city-wide scorecard per level is written to ``scorecard_snapshots`` with the
  weights used and the standard flows' file and stage hours (every deadline); later
  reads use the snapshot, so boundary or rule changes never rewrite history.
* **Drill-down**: the incidents behind any number, with whether each counts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import Engine, select

from pipelines.assessment.metrics import (
    KEY,
    LEVELS,
    METRIC_IDS,
    METRICS,
    N_COLS,
    incident_flags,
    incident_metrics,
    online_rate,
    patrol_coverage,
    rank_rows,
    rules_of,
    thin_out,
    warning_ack,
    weights,
    with_score,
)
from pipelines.assessment.periods import HOUR_MS, Period, elapsed_days, shift_slots
from pipelines.assessment.sources import (
    Filter,
    read_incidents,
    read_online_slots,
    read_roster,
    read_tracked_since,
    read_visits,
    read_warnings,
    read_worker_visits,
)
from pipelines.city.geography import City
from pipelines.dispatch.flows import flows_for
from pipelines.settings import Settings
from pipelines.spine import store


def area_chain(city: City) -> pl.DataFrame:
    """Every area → its own grid / street / district column (null above its level)."""
    a = city.areas
    return a.select(
        "area_id",
        "level",
        "name",
        grid_id=pl.when(pl.col("level") == "grid").then(pl.col("area_id")),
        street_id=pl.when(pl.col("level") == "street")
        .then(pl.col("area_id"))
        .otherwise(pl.when(pl.col("level") == "grid").then(pl.col("street_id"))),
        district_id=pl.when(pl.col("level") == "district")
        .then(pl.col("area_id"))
        .otherwise(pl.col("district_id")),
    )


def universe(city: City, roster: pl.LazyFrame, level: str, flt: Filter) -> pl.DataFrame:
    """The rows of a scorecard: every area (or rostered worker) at ``level`` in the filter."""
    if level == "worker":
        r = roster.collect()
        if flt.column:
            r = r.filter(pl.col(flt.column) == flt.area_id)
        names = dict(zip(city.areas["area_id"], city.areas["name"], strict=True))
        return r.select(
            row_id=pl.col("worker_id"),
            name=pl.col("name"),
            parent_id=pl.col("grid_id"),
            parent=pl.col("grid_id").replace_strict(names, default=pl.col("grid_id")),
        ).sort("row_id")
    chain = area_chain(city).filter(pl.col("level") == level)
    if flt.column:
        chain = chain.filter(pl.col(flt.column) == flt.area_id)
    parents = dict(zip(city.areas["area_id"], city.areas["name"], strict=True))
    pcol = {"district": None, "street": "district_id", "grid": "street_id"}[level]
    return chain.select(
        row_id=pl.col("area_id"),
        name=pl.col("name"),
        parent_id=pl.col(pcol) if pcol else pl.lit(None, pl.String),
        parent=pl.col(pcol).replace_strict(parents, default=None) if pcol else pl.lit(""),
    ).sort("row_id")


@dataclass(frozen=True)
class Inputs:
    """The already-read sources of one scorecard (lazy frames) — pure from here on."""

    incidents: pl.LazyFrame
    visits: pl.LazyFrame
    online: pl.LazyFrame
    worker_visits: pl.LazyFrame
    warnings: pl.LazyFrame
    roster: pl.LazyFrame
    tracked_since_ms: int | None = None  # the first position: coverage and online count from it


def read_inputs(
    engine: Engine, city: City, settings: Settings, level: str, period: Period,
    as_of_ms: int, flt: Filter,
) -> Inputs:  # fmt: skip
    a, w = settings.assessment, settings.warnings
    return Inputs(
        incidents=read_incidents(engine, period, as_of_ms, flt),
        visits=read_visits(engine, period, as_of_ms),
        online=read_online_slots(
            engine,
            period,
            as_of_ms,
            w.work_start_h,
            w.work_end_h,
            a.online_slot_minutes,
            settings.pipelines.persist_tracks_every_s,
        ),
        worker_visits=read_worker_visits(engine, period, as_of_ms)
        if level == "worker"
        else pl.LazyFrame(schema={"worker_id": pl.String, "v": pl.Int64}),
        warnings=read_warnings(engine, period, as_of_ms),
        roster=read_roster(engine, city),
        tracked_since_ms=read_tracked_since(engine),
    )


def compute(
    inputs: Inputs, city: City, settings: Settings, level: str, period: Period,
    as_of_ms: int, flt: Filter,
) -> pl.DataFrame:  # fmt: skip
    """The scorecard's rows (unranked): row_id, name, parent_id, parent, metrics…, score."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    a, w = settings.assessment, settings.warnings
    key = KEY[level]
    rows = universe(city, inputs.roster, level, flt).lazy()
    flags = incident_flags(inputs.incidents, as_of_ms, flows_for(settings))
    inc = incident_metrics(flags.drop_nulls(key), key).rename({key: "row_id"})
    since = inputs.tracked_since_ms
    n_days = elapsed_days(period, as_of_ms, since)
    slots = shift_slots(
        period, as_of_ms, w.work_start_h, w.work_end_h, a.online_slot_minutes, since
    )
    roster = inputs.roster
    if level == "worker":
        cover = inputs.worker_visits.select(
            row_id="worker_id",
            patrol_coverage=pl.col("v").cast(pl.Float64) / n_days if n_days else pl.lit(None),
        ).with_columns(pl.col("patrol_coverage").cast(pl.Float64))
        online = online_rate(
            inputs.online, roster.select("worker_id", key=pl.col("worker_id")), "key", slots
        ).rename({"key": "row_id"})
        warn = pl.LazyFrame(
            schema={"row_id": pl.String, "warning_ack": pl.Float64, "n_warning_ack": pl.Int64}
        )
    else:
        grids = city.grids.lazy().select("grid_id", pl.col(key).alias("row_id"))
        cover = patrol_coverage(inputs.visits, grids, "row_id", n_days)
        online = online_rate(
            inputs.online, roster.select("worker_id", row_id=pl.col(key)), "row_id", slots
        )
        chain = area_chain(city).lazy().select("area_id", row_id=pl.col(key))
        warns = inputs.warnings.join(chain, on="area_id", how="inner")
        warn = warning_ack(warns, "row_id", as_of_ms, w.escalate_after_s)
    out = (
        rows.join(inc, on="row_id", how="left")
        .join(cover, on="row_id", how="left")
        .join(online, on="row_id", how="left")
        .join(warn, on="row_id", how="left")
        .with_columns(pl.col("reports").fill_null(0), pl.col("overdue").fill_null(0))
    )
    if level == "worker" and n_days:  # no day begun (on the record): no coverage, null
        out = out.with_columns(pl.col("patrol_coverage").fill_null(0.0).cast(pl.Float64))
    out = thin_out(out, a.min_sample)
    out = with_score(out, weights(settings), a.handling_ref_hours, a.min_score_weight)
    cols = ["row_id", "name", "parent_id", "parent", *METRIC_IDS, *N_COLS, "score"]
    return out.select(cols).collect()


def is_final(period: Period, now_ms: int, settings: Settings) -> bool:
    return period.end_ms + settings.assessment.snapshot_grace_hours * HOUR_MS <= now_ms


def read_snapshot(engine: Engine, period: Period, level: str) -> pl.DataFrame | None:
    t = store.scorecard_snapshots
    q = select(t.c.row_id, t.c.name, t.c.parent_id, t.c.parent, t.c.metrics, t.c.score).where(
        t.c.period_key == period.key, t.c.level == level
    )
    f = store.read_frame(engine, q)
    if f.is_empty():
        return None
    values = [json.loads(m) for m in f["metrics"].to_list()]
    mf = pl.DataFrame(
        {m: [v.get(m) for v in values] for m in [*METRIC_IDS, *N_COLS]},
        schema={
            **{m: pl.Int64 if METRICS[m].unit == "count" else pl.Float64 for m in METRIC_IDS},
            **dict.fromkeys(N_COLS, pl.Int64),
        },
    )
    return pl.concat(
        [f.select("row_id", "name", "parent_id", "parent"), mf, f.select("score")],
        how="horizontal",
    ).cast({"score": pl.Float64})


def write_snapshot(
    engine: Engine, period: Period, level: str, frame: pl.DataFrame, rules: dict[str, Any],
    now_ms: int,
) -> None:  # fmt: skip
    """Idempotent: the first snapshot of a period and level wins."""
    rules_json = json.dumps(rules, sort_keys=True, ensure_ascii=False)
    rows = [
        {
            "period_key": period.key,
            "level": level,
            "row_id": r["row_id"],
            "name": r["name"],
            "parent_id": r["parent_id"],
            "parent": r["parent"],
            "metrics": json.dumps({m: r[m] for m in [*METRIC_IDS, *N_COLS]}, allow_nan=False),
            "score": r["score"],
            "rules": rules_json,
            "computed_ms": now_ms,
        }
        for r in frame.iter_rows(named=True)
    ]
    with engine.begin() as conn:
        store.insert_ignore(conn, store.scorecard_snapshots, rows)


def raw_scorecard(
    engine: Engine, city: City, settings: Settings, level: str, period: Period, now_ms: int,
    scope: str | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Unranked rows for the period within ``scope`` — from the snapshot when final."""
    flt = Filter.of(city, scope)
    if is_final(period, now_ms, settings):
        snap = read_snapshot(engine, period, level)
        if snap is None:
            whole = Filter(None, None)
            inputs = read_inputs(engine, city, settings, level, period, now_ms, whole)
            snap = compute(inputs, city, settings, level, period, now_ms, whole)
            write_snapshot(engine, period, level, snap, rules_of(settings), now_ms)
        return _within(snap, city, level, flt, engine)
    as_of = min(now_ms, period.end_ms + int(settings.assessment.snapshot_grace_hours * HOUR_MS))
    inputs = read_inputs(engine, city, settings, level, period, as_of, flt)
    return compute(inputs, city, settings, level, period, as_of, flt)


def _within(
    frame: pl.DataFrame, city: City, level: str, flt: Filter, engine: Engine
) -> pl.DataFrame:
    if flt.column is None:
        return frame
    if level == "worker":
        ids = universe(city, read_roster(engine, city), level, flt)["row_id"]
    else:
        ids = universe(city, pl.LazyFrame(), level, flt)["row_id"]
    return frame.filter(pl.col("row_id").is_in(ids.implode()))


@dataclass(frozen=True)
class Scorecard:
    level: str
    period: Period
    scope: str
    rows: pl.DataFrame  # ranked: rank, row_id, name, parent…, metrics, score, change, trend
    periods: list[Period]  # of the trend, oldest first
    final: bool
    generated_ms: int


def scorecard(
    engine: Engine, city: City, settings: Settings, level: str, period: Period, now_ms: int,
    scope: str | None = None,
) -> Scorecard:  # fmt: skip
    """Ranked rows with the change against the previous period and the recent trend."""
    scope = scope or city.city_id
    n = max(2, settings.assessment.sparkline_periods)
    periods = period.recent(n)
    frames = {
        p.key: raw_scorecard(engine, city, settings, level, p, now_ms, scope)
        for p in periods
        if p.start_ms < now_ms or p.key == period.key
    }
    cur = rank_rows(frames[period.key])
    prev = frames.get(period.previous().key)
    if prev is not None:
        cur = cur.join(
            prev.select("row_id", prev_score="score"), on="row_id", how="left"
        ).with_columns(change=pl.col("score").round(1) - pl.col("prev_score").round(1))
        cur = cur.drop("prev_score")
    else:
        cur = cur.with_columns(change=pl.lit(None, pl.Float64))
    trend = [
        frames[p.key].select("row_id", pl.col("score").alias(p.key))
        for p in periods
        if p.key in frames
    ]
    hist = trend[0]
    for f in trend[1:]:
        hist = hist.join(f, on="row_id", how="full", coalesce=True)
    keys = [p.key for p in periods if p.key in frames]
    hist = hist.select("row_id", trend=pl.concat_list([pl.col(k).round(1) for k in keys]))
    cur = cur.join(hist, on="row_id", how="left")
    return Scorecard(
        level, period, scope, cur, [p for p in periods if p.key in frames],
        is_final(period, now_ms, settings), now_ms,
    )  # fmt: skip


def incidents_behind(
    engine: Engine, city: City, settings: Settings, level: str, period: Period,
    row_id: str, metric_id: str, now_ms: int, limit: int = 500,
) -> pl.DataFrame:  # fmt: skip
    """The incidents a number is made of: those in the metric's denominator, with whether
    each counts in its numerator (``counts``). Empty for non-incident metrics."""
    m = METRICS.get(metric_id)
    if m is None or m.flag is None or level not in LEVELS:
        return pl.DataFrame()
    as_of = min(now_ms, period.end_ms + int(settings.assessment.snapshot_grace_hours * HOUR_MS))
    flt = Filter(KEY[level], row_id) if level != "worker" else Filter(None, None)
    inc = read_incidents(engine, period, as_of, flt)
    if level == "worker":
        inc = inc.filter(pl.col("worker_id") == row_id)
    flags = incident_flags(inc, as_of, flows_for(settings))
    if m.basis:
        flags = flags.filter(pl.col(m.basis))
    return (
        flags.select(
            "incident_id",
            "category",
            "source",
            "grid_id",
            "reported_ms",
            "closed_ms",
            "closed_level",
            "handling_h",
            counts=pl.col(m.flag),
        )
        .sort(["counts", "reported_ms"], descending=[metric_id != "mean_hours", False])
        .head(limit)
        .collect()
    )
