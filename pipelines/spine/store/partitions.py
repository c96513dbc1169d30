"""Time-partitioned history tables on PostgreSQL (native range partitioning on ``ts_ms``).

``incident_events``, ``video_alerts`` and ``track_points`` grow without bound; on
PostgreSQL they are range-partitioned on their time column, so a read over a period scans
only that period's partitions (pruning) and retention drops whole partitions instead of
deleting rows. SQLite keeps the plain tables of :mod:`schema` (same code paths).

* Periods are local calendar months or days (the city's timezone, ``live.timezone``), so a
  scorecard month is exactly one monthly partition. :data:`PERIODS` says which (measured:
  README "Production").
* PostgreSQL wants the partition key in every unique constraint: the primary keys become
  (event_id, ts_ms), (alert_id, ts_ms) and (worker_id, slot, ts_ms). The writers keep the
  narrower keys true themselves: ``decide_reports`` decides event ids before inserting,
  ``decide_alerts`` replaces an alert's row (its start can change only when an earlier
  creating entry displaces it) and ``persist_tracks`` keeps the earliest point per slot,
  each under ``lock_keys``.
* Every table has a DEFAULT partition, so an insert into a period without a partition
  never fails; :func:`ensure_partitions` (the clock job, at start then periodically, and
  ``wangge db migrate-partitions``) creates the current and next periods and moves rows
  the default partition holds for a period into its new partition.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Engine,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    text,
)

from pipelines.spine.store import schema

log = logging.getLogger("wangge.store")

# Monthly for the tables read by id without a time bound (an event id, an incident's
# history, an alert id: one index probe per partition), daily for the track points
# (read by time only; retention then drops whole days). Numbers: README "Production".
PERIODS: dict[str, str] = {
    "incident_events": "month",
    "video_alerts": "month",
    "track_points": "day",
}
PARTITIONED = tuple(PERIODS)
AHEAD = 3  # periods created ahead of the current one (months: a quarter, days: 3 days)
DEFAULT_TZ = "Asia/Shanghai"

_pg_metadata = MetaData()


def pg_table(name: str, as_name: str | None = None, meta: MetaData | None = None) -> Table:
    """The PostgreSQL definition: the same columns and indexes, the time column added to
    the primary key, range-partitioned on it (``as_name``: under another name, its index
    names suffixed alike — a migration's copy)."""
    src = schema.metadata.tables[name]
    new = as_name or name
    suffix = new[len(name) :] if new.startswith(name) else f"_{new}"
    keys = [c.name for c in src.primary_key.columns] + ["ts_ms"]
    cols = []
    for c in src.columns:
        col = c._copy()
        col.primary_key = False
        col.index = None  # the indexes are copied below under their own names
        cols.append(col)
    indexes = [Index(f"{ix.name}{suffix}", *[c.name for c in ix.columns]) for ix in src.indexes]
    return Table(
        new,
        meta if meta is not None else _pg_metadata,
        *cols,
        PrimaryKeyConstraint(*keys, name=f"{new}_pkey"),
        *indexes,
        postgresql_partition_by="RANGE (ts_ms)",
    )


PG_TABLES = {name: pg_table(name) for name in PARTITIONED}


# ------------------------------------------------------------------ periods


@dataclass(frozen=True)
class Period:
    label: str  # 202612 or 20261205
    lo_ms: int  # inclusive
    hi_ms: int  # exclusive


def _start(dt: datetime, unit: str) -> datetime:
    if unit == "month":
        return dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return dt.replace(hour=0, minute=0, second=0, microsecond=0)


def _next(dt: datetime, unit: str) -> datetime:
    if unit == "month":
        return (dt.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (dt + timedelta(days=1)).replace(hour=0)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def period_of(ts_ms: int, unit: str, tz: str = DEFAULT_TZ) -> Period:
    """The local month or day holding ``ts_ms``."""
    zone = ZoneInfo(tz)
    lo = _start(datetime.fromtimestamp(ts_ms / 1000, zone), unit)
    hi = _next(lo, unit)
    lo_aware = lo.replace(tzinfo=zone)
    hi_aware = datetime(hi.year, hi.month, hi.day, tzinfo=zone)
    label = lo.strftime("%Y%m" if unit == "month" else "%Y%m%d")
    return Period(label, _ms(lo_aware), _ms(hi_aware))


def periods(
    now_ms: int, unit: str, tz: str = DEFAULT_TZ, ahead: int = AHEAD, back: int = 0
) -> list[Period]:
    """The current period, ``ahead`` after it and ``back`` before it (in order)."""
    cur = period_of(now_ms, unit, tz)
    out = [cur]
    p = cur
    for _ in range(back):
        p = period_of(p.lo_ms - 1, unit, tz)
        out.insert(0, p)
    p = cur
    for _ in range(ahead):
        p = period_of(p.hi_ms, unit, tz)
        out.append(p)
    return out


# ------------------------------------------------------------------ catalogue


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def relkind(conn: Connection, name: str) -> str | None:
    """'p' partitioned, 'r' plain table, None absent (PostgreSQL, current search path)."""
    v = conn.execute(
        text("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(:n)"), {"n": name}
    ).scalar()
    return None if v is None else str(v)


def is_partitioned(bind: Engine | Connection, name: str) -> bool:
    if not is_postgres(bind):
        return False
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return relkind(conn, name) == "p"
    return relkind(bind, name) == "p"


@dataclass(frozen=True)
class Partition:
    name: str
    lo_ms: int | None  # None: the default partition (or MINVALUE)
    hi_ms: int | None  # None: the default partition (or MAXVALUE)
    default: bool


_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)")


def _bound(v: str) -> int | None:
    v = v.strip().strip("'")
    return None if v.upper() in ("MINVALUE", "MAXVALUE") else int(v)


def partitions(conn: Connection, name: str) -> list[Partition]:
    """The table's partitions, the default one last, the others by lower bound."""
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:n)"
        ),
        {"n": name},
    ).all()
    out = []
    for rel, bound in rows:
        m = _BOUND.search(bound or "")
        if m is None:
            out.append(Partition(rel, None, None, True))
        else:
            out.append(Partition(rel, _bound(m.group(1)), _bound(m.group(2)), False))
    out.sort(key=lambda p: (p.default, p.lo_ms if p.lo_ms is not None else -(2**63)))
    return out


def _overlaps(p: Partition, lo: int, hi: int) -> bool:
    a = p.lo_ms if p.lo_ms is not None else -(2**63)
    b = p.hi_ms if p.hi_ms is not None else 2**63
    return a < hi and lo < b


# ------------------------------------------------------------------ creation


def create_partitioned(engine: Engine) -> list[str]:
    """PostgreSQL: create the partitioned tables that do not exist yet, each with its
    default partition (called by ``create_schema`` before the plain tables; an existing
    table, partitioned or not, is left as it is). Returns the tables created."""
    if not is_postgres(engine):
        return []
    made = []
    for name, table in PG_TABLES.items():
        with engine.begin() as conn:
            _xact_lock(conn, f"partitions:{name}")
            if relkind(conn, name) is None:
                table.create(conn)
                made.append(name)
            if relkind(conn, name) == "p":
                conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {name}_default PARTITION OF {name} DEFAULT"
                )
    return made


def _xact_lock(conn: Connection, key: str) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def create_partition(conn: Connection, name: str, period: Period) -> str | None:
    """Create one period's partition unless a partition overlaps it; rows the default
    partition holds for the period move into it. Returns its name, or None."""
    _xact_lock(conn, f"partitions:{name}")
    parts = [p for p in partitions(conn, name) if not p.default]
    if any(_overlaps(p, period.lo_ms, period.hi_ms) for p in parts):
        return None
    child, lo, hi = f"{name}_p{period.label}", period.lo_ms, period.hi_ms
    conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
    default = f"{name}_default"
    stray = (
        relkind(conn, default) is not None
        and conn.exec_driver_sql(
            f"SELECT 1 FROM {default} WHERE ts_ms >= {lo} AND ts_ms < {hi} LIMIT 1"
        ).first()
    )
    if not stray:
        conn.exec_driver_sql(
            f"CREATE TABLE {child} PARTITION OF {name} FOR VALUES FROM ({lo}) TO ({hi})"
        )
        return child
    # The default partition holds rows of this period: move them, then attach.
    conn.exec_driver_sql(f"CREATE TABLE {child} (LIKE {name} INCLUDING DEFAULTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {default} WHERE ts_ms >= {lo} AND ts_ms < {hi}"
        f" RETURNING *) INSERT INTO {child} SELECT * FROM moved"
    )
    conn.exec_driver_sql(
        f"ALTER TABLE {name} ATTACH PARTITION {child} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    return child


def ensure_partitions(
    engine: Engine,
    now_ms: int,
    tz: str = DEFAULT_TZ,
    ahead: int = AHEAD,
    back: int = 0,
    tables: tuple[str, ...] = PARTITIONED,
) -> list[str]:
    """Create the partitions of the current period and ``ahead`` next ones (and ``back``
    past ones) of every partitioned table; idempotent. Returns the partitions created.
    Nothing on SQLite or on a table that is not partitioned."""
    if not is_postgres(engine):
        return []
    made: list[str] = []
    for name in tables:
        if not is_partitioned(engine, name):
            continue
        for period in periods(now_ms, PERIODS[name], tz, ahead=ahead, back=back):
            with engine.begin() as conn:
                child = create_partition(conn, name, period)
            if child:
                made.append(child)
    return made


# ------------------------------------------------------------------ retention


def drop_before(conn: Connection, name: str, cutoff_ms: int) -> int:
    """Remove the rows with ``ts_ms < cutoff_ms`` of a partitioned table: whole partitions
    entirely before the cutoff are dropped, the rest (the boundary partition, the default
    one) deleted row by row. Returns the rows removed."""
    removed = 0
    for p in partitions(conn, name):
        if not p.default and p.hi_ms is not None and p.hi_ms <= cutoff_ms:
            removed += int(conn.exec_driver_sql(f"SELECT count(*) FROM {p.name}").scalar_one())
            conn.exec_driver_sql(f"DROP TABLE {p.name}")
    res = conn.exec_driver_sql(f"DELETE FROM {name} WHERE ts_ms < %(c)s", {"c": int(cutoff_ms)})
    return removed + int(res.rowcount or 0)


# ------------------------------------------------------------------ status


def layout(engine: Engine) -> dict[str, Any]:
    """Per history table: "partitioned" (with its partitions), "plain" (a PostgreSQL
    table from before partitioning: ``wangge db migrate-partitions`` converts it) or
    "sqlite"."""
    out: dict[str, Any] = {}
    if not is_postgres(engine):
        return {name: {"layout": "sqlite"} for name in PARTITIONED}
    with engine.connect() as conn:
        for name in PARTITIONED:
            kind = relkind(conn, name)
            if kind == "p":
                parts = partitions(conn, name)
                out[name] = {
                    "layout": "partitioned",
                    "partitions": len(parts),
                    "period": PERIODS[name],
                    "names": [p.name for p in parts],
                }
            else:
                out[name] = {"layout": "plain" if kind else "absent"}
    return out
