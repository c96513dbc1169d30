"""Convert a PostgreSQL database's plain history tables into partitioned ones
(``wangge db migrate-partitions``).

Per table still plain (``partitions.layout``): create the partitioned copy
``<table>__part`` with the partitions of every period its rows cover (plus the current
and next ones), copy the rows in primary-key chunks (one transaction each), then in one
transaction: lock the old table against writes, check that the copy holds exactly its
rows (count and a checksum over every column), swap the names (table, indexes,
partitions) and drop the old table. A copy that differs — something wrote meanwhile —
is refused and dropped, the old table untouched: stop the pipelines and the gateway,
then run it again. Safe to rerun: a leftover copy of an interrupted run is dropped first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, text

from pipelines.spine.store import partitions as P
from pipelines.spine.store import schema

log = logging.getLogger("wangge.store")

COPY = "__part"


class MigrationRefused(RuntimeError):
    """The database cannot be converted as it is (the message says what to do)."""


@dataclass
class Migrated:
    table: str
    rows: int
    partitions: int


def _cols(name: str) -> list[str]:
    return [c.name for c in schema.metadata.tables[name].columns]


def _keys(name: str) -> list[str]:
    return [c.name for c in schema.metadata.tables[name].primary_key.columns]


def _fingerprint(conn: Connection, table: str, cols: list[str]) -> tuple[int, int]:
    row = ", ".join(cols)
    got = conn.exec_driver_sql(
        f"SELECT count(*), coalesce(sum(hashtextextended(ROW({row})::text, 0)::numeric), 0)"
        f" FROM {table}"
    ).one()
    return int(got[0]), int(got[1])


def _indexes(conn: Connection, table: str) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(:t)"
            ),
            {"t": table},
        ).scalars()
    )


def migrate_table(
    engine: Engine,
    name: str,
    now_ms: int,
    tz: str = P.DEFAULT_TZ,
    chunk: int = 50_000,
    progress: Callable[[str], None] = log.info,
) -> Migrated:
    """Convert one plain table (see the module docstring). Raises ``MigrationRefused``."""
    copy, cols, keys = f"{name}{COPY}", _cols(name), _keys(name)
    unit = P.PERIODS[name]
    with engine.begin() as conn:
        if P.relkind(conn, name) != "r":
            raise MigrationRefused(f"{name} is not a plain table")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {copy} CASCADE")  # an interrupted run
        P.pg_table(name, copy, MetaData()).create(conn)
        conn.exec_driver_sql(f"CREATE TABLE {copy}_default PARTITION OF {copy} DEFAULT")
        lo = conn.exec_driver_sql(f"SELECT min(ts_ms) FROM {name}").scalar()
    first = P.period_of(int(lo) if lo is not None else now_ms, unit, tz)
    span = P.periods(now_ms, unit, tz)
    n_parts = 0
    p = first
    while p.lo_ms <= span[-1].lo_ms:
        with engine.begin() as conn:
            if P.create_partition(conn, copy, p):
                n_parts += 1
        p = P.period_of(p.hi_ms, unit, tz)
    progress(f"{name}: {n_parts} partitions ({unit}) from {first.label}")
    col_list, key_list = ", ".join(cols), ", ".join(keys)
    copied, after = 0, None
    while True:
        with engine.begin() as conn:
            where = "" if after is None else f" WHERE ({key_list}) > ({_ph(len(keys))})"
            args: dict[str, Any] = (
                {} if after is None else {f"k{i}": v for i, v in enumerate(after)}
            )
            last = conn.execute(
                text(
                    f"SELECT {key_list} FROM {name}{where} ORDER BY {key_list}"
                    f" OFFSET {chunk - 1} LIMIT 1"
                ),
                args,
            ).first()
            upto = "" if last is None else f" ({key_list}) <= ({_ph(len(keys), 'u')})"
            if last is not None:
                args |= {f"u{i}": v for i, v in enumerate(last)}
            cond = " AND ".join(x for x in (where.replace(" WHERE ", ""), upto) if x)
            res = conn.execute(
                text(
                    f"INSERT INTO {copy} ({col_list}) SELECT {col_list} FROM {name}"
                    + (f" WHERE {cond}" if cond else "")
                ),
                args,
            )
            copied += int(res.rowcount or 0)
        progress(f"{name}: {copied:,} rows copied")
        if last is None:
            break
        after = tuple(last)
    try:
        with engine.begin() as conn:
            _swap(conn, name, cols)
    except MigrationRefused:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {copy} CASCADE")
        raise
    progress(f"{name}: partitioned ({copied:,} rows)")
    return Migrated(name, copied, n_parts + 1)


def _swap(conn: Connection, name: str, cols: list[str]) -> None:
    """One transaction: lock the old table against writes, check the copy, swap names."""
    copy = f"{name}{COPY}"
    conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
    conn.exec_driver_sql(f"LOCK TABLE {name} IN EXCLUSIVE MODE")  # reads go on
    if _fingerprint(conn, name, cols) != _fingerprint(conn, copy, cols):
        raise MigrationRefused(
            f"{name} changed while it was copied (something writes to it): stop the "
            "pipelines and the gateway (`wangge run`, `wangge pipelines`), then run "
            "`wangge db migrate-partitions` again"
        )
    old = f"{name}__plain"
    conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {old}")
    for ix in _indexes(conn, old):
        conn.exec_driver_sql(f"ALTER INDEX {ix} RENAME TO {_bare(ix)}__plain")
    conn.exec_driver_sql(f"ALTER TABLE {copy} RENAME TO {name}")
    for ix in _indexes(conn, name):
        bare = _bare(ix)
        if COPY in bare:
            conn.exec_driver_sql(f"ALTER INDEX {ix} RENAME TO {bare.replace(COPY, '')}")
    for part in P.partitions(conn, name):
        conn.exec_driver_sql(
            f"ALTER TABLE {part.name} RENAME TO {part.name.replace(copy, name, 1)}"
        )
    conn.exec_driver_sql(f"DROP TABLE {old}")


def _ph(n: int, prefix: str = "k") -> str:
    return ", ".join(f":{prefix}{i}" for i in range(n))


def _bare(index: str) -> str:
    """An index name without its schema (``regclass::text`` qualifies it when the schema
    is not on the search path)."""
    return index.rsplit(".", 1)[-1].strip('"')


def migrate(
    engine: Engine,
    now_ms: int,
    tz: str = P.DEFAULT_TZ,
    chunk: int = 50_000,
    progress: Callable[[str], None] = log.info,
) -> list[Migrated]:
    """Convert every plain history table; the partitioned ones are left alone."""
    if not P.is_postgres(engine):
        raise MigrationRefused("partitioning is for PostgreSQL; SQLite keeps plain tables")
    out = []
    for name, info in P.layout(engine).items():
        if info["layout"] == "plain":
            out.append(migrate_table(engine, name, now_ms, tz, chunk, progress))
    P.ensure_partitions(engine, now_ms, tz)
    return out
