"""The scorecard's SQL sources, with the period, the as-of time and the area filter pushed
down into the SQL: incidents with their lifecycle facts (from the lifecycle summary the
pipeline keeps on ``incidents``, or — for an as-of in the past — aggregated from the events
in the database, so a month at city scale moves ~600k rows, not millions), visits, online
slots, warnings and the roster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
from sqlalchemy import Engine, and_, case, func, select

from pipelines.assessment.metrics import KEY
from pipelines.assessment.periods import DAY_MS, HOUR_MS, Period, local_day, tz_offset_ms
from pipelines.city.geography import City
from pipelines.spine import store


@dataclass(frozen=True)
class Filter:
    """Rows inside ``area_id`` (its own column ``column``); None = the whole city."""

    column: str | None
    area_id: str | None

    @classmethod
    def of(cls, city: City, area_id: str | None) -> Filter:
        level = city.level_of(area_id) if area_id else None
        if level is None or level == "city":
            return cls(None, None)
        return cls(KEY[level], area_id)


def _since_until(period: Period, as_of_ms: int) -> tuple[int, int]:
    return period.start_ms, min(period.end_ms, as_of_ms)


def read_incidents(
    engine: Engine, period: Period, as_of_ms: int, flt: Filter, summary: bool = True
) -> pl.LazyFrame:
    """Per incident reported in the period (and area): its lifecycle facts as of ``as_of``.

    An incident whose events all lie in [period start, ``as_of``) — every incident when
    ``as_of`` is now — is read from its lifecycle summary in ``incidents`` (one range
    scan on ``reported_ms``). The others (an as-of in the past, an event stamped before
    the period, or no summary yet) have their events aggregated in SQL, restricted to
    that window. Both give the same facts; ``summary=False`` aggregates every incident."""
    i = store.incidents
    s, u = _since_until(period, as_of_ms)
    where = [i.c.reported_ms >= s, i.c.reported_ms < u]
    if flt.column is not None:
        where.append(i.c[flt.column] == flt.area_id)
    if not summary:
        return _aggregated(engine, and_(*where), s, as_of_ms)
    q = select(
        *[i.c[c] for c in COHORT_COLUMNS],
        *[i.c[c] for c in OPTIONAL_COLUMNS if c in i.c],
        *[
            i.c.report_handler_id.label(c) if c == "worker_id" else i.c[c]
            for c in LIFECYCLE_COLUMNS
        ],
        i.c.first_ms,
        i.c.last_ms,
    ).where(*where)
    read = _typed(engine, q, SUMMARY_READ_SCHEMA).collect()
    # summarised before the stage columns existed: accepted, yet no time it left accepting
    stale = pl.col("accepted_ms").is_not_null() & pl.col("left_accept_ms").is_null()
    whole = ((pl.col("first_ms") >= s) & (pl.col("last_ms") < as_of_ms) & ~stale).fill_null(False)
    summarised = read.filter(whole).drop("first_ms", "last_ms")  # null: no summary yet
    if summarised.height == read.height:
        return summarised.lazy()
    # the others by id, from this read (not a second scan of the period's incidents)
    rest = read.filter(~whole)["incident_id"].to_list()
    parts = [
        _aggregated(engine, i.c.incident_id.in_(rest[k : k + ID_CHUNK]), s, as_of_ms)
        for k in range(0, len(rest), ID_CHUNK)
    ]
    return pl.concat([summarised.lazy(), *parts])


ID_CHUNK = 5000  # ids bound in one IN (…) (SQLite allows 32,766 parameters)


def _aggregated(engine: Engine, cohort: Any, since_ms: int, as_of_ms: int) -> pl.LazyFrame:
    """The cohort's lifecycle facts from its events in [since, as_of): one GROUP BY in SQL
    (the same aggregates as ``store.lifecycle_summary``)."""
    return _typed(engine, aggregated_query(cohort, since_ms, as_of_ms), INCIDENT_SCHEMA)


def aggregated_query(cohort: Any, since_ms: int, as_of_ms: int) -> Any:
    """The query of ``_aggregated`` (its events' time window prunes a partitioned
    ``incident_events`` to the window's partitions: tests/integration/test_partitions.py)."""
    e, i = store.incident_events, store.incidents

    def first(step: str, col: Any = None) -> Any:
        return func.min(case((e.c.step == step, col if col is not None else e.c.ts_ms)))

    def count(step: str) -> Any:
        return func.sum(case((e.c.step == step, 1), else_=0))

    ids = select(i.c.incident_id).where(cohort)
    life = (
        select(
            e.c.incident_id,
            func.min(case((e.c.step != "reported", e.c.ts_ms))).label("first_action_ms"),
            first("accepted").label("accepted_ms"),
            first("dispatched").label("dispatched_ms"),
            first("resolved").label("first_resolved_ms"),
            func.max(case((e.c.step == "returned", e.c.ts_ms))).label("last_returned_ms"),
            count("returned").label("n_returned"),
            count("verified").label("n_verified"),
            first("closed").label("closed_ms"),
            func.max(case((e.c.step == "closed", e.c.level))).label("closed_level"),
            first("reported", e.c.handler_id).label("worker_id"),
            *[
                func.min(case((e.c.step.in_(steps), e.c.ts_ms))).label(col)
                for col, steps in store.LEFT_STEPS.items()
            ],
        )
        .where(e.c.incident_id.in_(ids), e.c.ts_ms >= since_ms, e.c.ts_ms < as_of_ms)
        .group_by(e.c.incident_id)
        .subquery()
    )
    q = select(
        *[i.c[c] for c in COHORT_COLUMNS],
        *[i.c[c] for c in OPTIONAL_COLUMNS if c in i.c],
        *[life.c[c] for c in LIFECYCLE_COLUMNS],
    ).join_from(i, life, and_(i.c.incident_id == life.c.incident_id))
    return q


COHORT_COLUMNS = [
    "incident_id",
    "category",
    "source",
    "grid_id",
    "street_id",
    "district_id",
    "reported_ms",
    "severity",
]


# Read too when the incidents table has them (the dispatch core's columns): the incident
# it duplicates (merged ones count in no on-time rate), a deadline its dispatch set.
OPTIONAL_COLUMNS = {"duplicate_of": pl.String, "due_ms": pl.Int64}


LIFECYCLE_COLUMNS = [
    "first_action_ms",
    "accepted_ms",
    "dispatched_ms",
    "first_resolved_ms",
    "last_returned_ms",
    "n_returned",
    "n_verified",
    "closed_ms",
    "closed_level",
    "worker_id",
    *store.LEFT_STEPS,
]


INCIDENT_SCHEMA = pl.Schema(
    {
        "incident_id": pl.String,
        "category": pl.String,
        "source": pl.String,
        "grid_id": pl.String,
        "street_id": pl.String,
        "district_id": pl.String,
        "reported_ms": pl.Int64,
        "severity": pl.Int64,
        **{c: t for c, t in OPTIONAL_COLUMNS.items() if c in store.incidents.c},
        "first_action_ms": pl.Int64,
        "accepted_ms": pl.Int64,
        "dispatched_ms": pl.Int64,
        "first_resolved_ms": pl.Int64,
        "last_returned_ms": pl.Int64,
        "n_returned": pl.Int64,
        "n_verified": pl.Int64,
        "closed_ms": pl.Int64,
        "closed_level": pl.String,
        "worker_id": pl.String,
        **dict.fromkeys(store.LEFT_STEPS, pl.Int64),
    }
)


SUMMARY_READ_SCHEMA = pl.Schema(
    [*INCIDENT_SCHEMA.items(), ("first_ms", pl.Int64()), ("last_ms", pl.Int64())]
)


def _empty_incidents() -> pl.LazyFrame:
    return pl.LazyFrame(schema=INCIDENT_SCHEMA)


def _typed(engine: Engine, query: Any, schema: pl.Schema) -> pl.LazyFrame:
    """Read a query into a lazy frame of exactly ``schema`` (typed even when empty).

    Straight through the DB-API cursor into Polars (3× faster than SQLAlchemy rows for the
    hundreds of thousands of rows of a city-scale month); the query is still SQLAlchemy
    Core, compiled for the engine's dialect with bound parameters."""
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positiontup is not None:  # qmark / format paramstyles (SQLite)
        params = tuple(compiled.params[k] for k in compiled.positiontup)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(str(compiled), params)
        rows = cur.fetchall()
        cur.close()
    finally:
        raw.close()
    if not rows:
        return pl.LazyFrame(schema=schema)
    return pl.DataFrame(rows, schema=schema, orient="row").lazy()


def read_visits(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    p = store.patrols
    last = min(period.last, local_day(as_of_ms - 1, period.tz))
    q = select(p.c.day, p.c.grid_id).where(
        p.c.day >= period.first.strftime("%Y%m%d"), p.c.day <= last.strftime("%Y%m%d")
    )
    return _typed(engine, q, pl.Schema({"day": pl.String, "grid_id": pl.String}))


def read_tracked_since(engine: Engine) -> int | None:
    """When the platform received its first position (the earliest track point kept)."""
    t = store.track_points
    with engine.connect() as conn:
        got = conn.execute(select(func.min(t.c.ts_ms))).scalar()
    return int(got) if got is not None else None


def read_online_slots(
    engine: Engine,
    period: Period,
    as_of_ms: int,
    start_h: int,
    end_h: int,
    slot_min: int,
    track_every_s: int = 60,
) -> pl.LazyFrame:
    """Per worker: shift slots with at least one track point, counted in SQL over the
    downsampled ``slot`` (``ts_ms // track_every``, the primary key's second column, so
    the scan reads only the key index): a point counts at its slot's start."""
    t = store.track_points
    s, u = _since_until(period, as_of_ms)
    every = track_every_s * 1000
    off, slot = tz_offset_ms(period), slot_min * 60_000
    local = t.c.slot * every + off
    tod = local % DAY_MS
    first, end = s // every + (s % every > 0), -(-u // every)  # slots starting in [s, u)
    q = (
        select(t.c.worker_id, func.count(func.distinct(local // slot)).label("online_slots"))
        .where(t.c.slot >= first, t.c.slot < end, tod >= start_h * HOUR_MS, tod < end_h * HOUR_MS)
        .group_by(t.c.worker_id)
    )
    return _typed(engine, q, pl.Schema({"worker_id": pl.String, "online_slots": pl.Int64}))


def read_worker_visits(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    """Per worker: local days with a track point inside their own grid."""
    t, w = store.track_points, store.workers
    s, u = _since_until(period, as_of_ms)
    off = tz_offset_ms(period)
    q = (
        select(t.c.worker_id, func.count(func.distinct((t.c.ts_ms + off) // DAY_MS)).label("v"))
        .join_from(t, w, and_(w.c.worker_id == t.c.worker_id, w.c.grid_id == t.c.grid_id))
        .where(t.c.ts_ms >= s, t.c.ts_ms < u)
        .group_by(t.c.worker_id)
    )
    return _typed(engine, q, pl.Schema({"worker_id": pl.String, "v": pl.Int64}))


def read_warnings(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    w = store.warnings
    s, u = _since_until(period, as_of_ms)
    q = select(w.c.area_id, w.c.first_seen_ms, w.c.acked_ms, w.c.closed_ms).where(
        w.c.first_seen_ms >= s, w.c.first_seen_ms < u
    )
    schema = {"area_id": pl.String, "first_seen_ms": pl.Int64, "acked_ms": pl.Int64}
    return _typed(engine, q, pl.Schema({**schema, "closed_ms": pl.Int64}))


def read_roster(engine: Engine, city: City) -> pl.LazyFrame:
    f = store.read_frame(engine, select(store.workers))
    schema = pl.Schema({c.name: pl.String for c in store.workers.columns})
    f = f.cast(schema) if f.width else pl.DataFrame(schema=schema)
    chain = city.grids.select("grid_id", "street_id", "district_id")
    return f.lazy().join(chain.lazy(), on="grid_id", how="inner")
