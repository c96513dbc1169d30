"""Generic SQL helpers: idempotent batch inserts and upserts (SQLite and PostgreSQL),
transaction locks, Polars frames of tables, and chunked reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import polars as pl
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.spine.store.schema import dead_letters, history_marks, report_rejects

HOUR_MS = 3_600_000


def _insert(conn: Connection, table: Table) -> Any:
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(table)


def _key_order(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted by primary key: concurrent writers then lock rows in the same order."""
    keys = [c.name for c in table.primary_key.columns]
    return sorted(rows, key=lambda row: tuple(str(row.get(k)) for k in keys))


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Batch insert; rows whose primary key exists are skipped (idempotent)."""
    if not rows:
        return
    rows = _key_order(table, rows)
    stmt = _insert(conn, table).on_conflict_do_nothing()
    step = max(1, 30000 // max(1, len(rows[0])))
    for i in range(0, len(rows), step):
        conn.execute(stmt, list(rows[i : i + step]))


def hour_end(ts_ms: int) -> int:
    """The whole hour an event time counts at in ``history_marks``: at or after it (so the
    versions up to a whole hour are those of the events at or before it)."""
    return -(-int(ts_ms) // HOUR_MS) * HOUR_MS


def bump_marks(conn: Connection, ts_ms: Iterable[int]) -> None:
    """Bump the version of every hour these event times fall in (``history_marks``), in
    the transaction that adds or removes the events: the time machine's checkpoints up to
    a bumped hour are no longer used."""
    hours = sorted({hour_end(t) for t in ts_ms})
    if not hours:
        return
    ins = _insert(conn, history_marks)
    stmt = ins.on_conflict_do_update(
        index_elements=["hour_ms"], set_={"version": history_marks.c.version + 1}
    )
    conn.execute(stmt, [{"hour_ms": h, "version": 1} for h in hours])


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    where_newer: str | None = None,
    where_older: str | None = None,
) -> None:
    """Insert or update on the key; optionally only when the new row's column is newer/older."""
    if not rows:
        return
    rows = _key_order(table, rows)
    ins = _insert(conn, table)
    cols = [c for c in rows[0] if c not in keys]
    cond = None
    if where_newer:
        cond = table.c[where_newer] <= ins.excluded[where_newer]
    if where_older:
        cond = table.c[where_older] > ins.excluded[where_older]
    stmt = ins.on_conflict_do_update(
        index_elements=list(keys), set_={c: ins.excluded[c] for c in cols}, where=cond
    )
    step = max(1, 30000 // max(1, len(rows[0])))
    for i in range(0, len(rows), step):
        conn.execute(stmt, list(rows[i : i + step]))


def upsert_sql(
    dialect: str,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    where_newer: str | None = None,
    where_older: str | None = None,
) -> str:
    """The DB-API text of ``upsert`` for positional rows (SQLite and PostgreSQL alike).

    The same statement ``upsert`` builds with SQLAlchemy: insert, or on a key conflict
    update the other columns, optionally only when the new row's column is newer/older.
    """
    ph = "?" if dialect == "sqlite" else "%s"
    cols = ", ".join(columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    sql = (
        f"INSERT INTO {table.name} ({cols}) VALUES ({', '.join([ph] * len(columns))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )
    if where_newer:
        sql += f" WHERE {table.name}.{where_newer} <= excluded.{where_newer}"
    if where_older:
        sql += f" WHERE {table.name}.{where_older} > excluded.{where_older}"
    return sql


def upsert_frame(
    conn: Connection,
    table: Table,
    frame: pl.DataFrame,
    keys: Sequence[str],
    where_newer: str | None = None,
    where_older: str | None = None,
) -> None:
    """``upsert`` of a frame's rows through the driver's executemany (no per-row Core work).

    Rows go in primary-key order, like ``upsert``, so concurrent writers lock alike.
    """
    if frame.is_empty():
        return
    sql = upsert_sql(conn.dialect.name, table, frame.columns, keys, where_newer, where_older)
    conn.exec_driver_sql(sql, frame.sort(keys).rows())


def insert_ignore_frame(conn: Connection, table: Table, frame: pl.DataFrame) -> None:
    """``insert_ignore`` of a frame's rows through the driver's executemany (no per-row
    Core work); rows whose primary key exists are skipped. Rows go in primary-key order,
    like ``insert_ignore``, so concurrent writers lock alike."""
    if frame.is_empty():
        return
    ph = "?" if conn.dialect.name == "sqlite" else "%s"
    cols = ", ".join(frame.columns)
    sql = (
        f"INSERT INTO {table.name} ({cols}) VALUES ({', '.join([ph] * frame.width)})"
        " ON CONFLICT DO NOTHING"
    )
    keys = [c.name for c in table.primary_key.columns]
    conn.exec_driver_sql(sql, frame.sort(keys).rows())


def lock_incidents(conn: Connection, incident_ids: Iterable[str]) -> None:
    """Serialise the transactions that recompute the same incidents, so each reads a
    history that includes every event an earlier one committed (else two workers each
    write a row missing the other's event). See ``lock_keys``."""
    lock_keys(conn, incident_ids)


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Transaction-scoped locks on names (incident ids, ``event:<id>``, ``alert:<id>``).

    PostgreSQL: advisory locks on the names' hashes, taken in one sorted order (no
    deadlock between lockers that take theirs in one call). SQLite has one writer at a
    time: the first write of the transaction takes it (``write_lock``)."""
    keys = sorted(set(keys))
    if conn.dialect.name != "postgresql" or not keys:
        return
    conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT"
            " hashtextextended(x, 0) AS k FROM unnest(CAST(:ids AS text[])) AS x ORDER BY k) s"
        ),
        {"ids": keys},
    )


def write_lock(conn: Connection) -> None:
    """SQLite: take the database's write lock now, so what this transaction reads next
    is not changed by another writer before it writes (a no-op write begins the
    transaction). PostgreSQL: nothing (``lock_keys`` serialises the writers concerned)."""
    if conn.dialect.name == "sqlite":
        conn.execute(report_rejects.delete().where(text("1 = 0")))


_DTYPES: tuple[tuple[type, Any], ...] = (
    (BigInteger, pl.Int64),
    (Integer, pl.Int64),
    (Float, pl.Float64),
    (Boolean, pl.Boolean),
    (LargeBinary, pl.Binary),
    (String, pl.String),
)


def frame_schema(table: Table, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Polars dtypes of a table's columns (so an empty result keeps its types)."""
    out: dict[str, Any] = {}
    for c in table.columns:
        if columns is None or c.name in columns:
            out[c.name] = next(d for t, d in _DTYPES if isinstance(c.type, t))
    return out if columns is None else {c: out[c] for c in columns}


def driver_frame(
    conn: Any,
    query: Any,
    table: Any,
    columns: Sequence[str],
    dtypes: Mapping[str, Any] | None = None,
) -> pl.DataFrame:
    """A query's rows as a frame of ``columns`` (the large reads of text, integer and float
    columns): the compiled statement goes straight to the driver's cursor (SQLAlchemy's
    per-row processing is most of the cost of a hundred thousand rows, and these types
    need none). ``dtypes``: columns read as another type than the table's."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = tuple(params[k] for k in compiled.positiontup) if compiled.positional else params
    cur = conn.connection.cursor()
    try:
        cur.execute(str(compiled), args)
        rows = cur.fetchall()
    finally:
        cur.close()
    schema = frame_schema(table, columns) | dict(dtypes or {})
    return pl.DataFrame(rows, schema=schema, orient="row")


def _rows_in(
    conn: Connection, table: Table, column: str, values: Iterable[str], columns: Sequence[str]
) -> pl.DataFrame:
    """Rows of ``table`` whose ``column`` is one of ``values`` (chunked IN lists; in no
    particular order). The statement goes straight to the driver: SQLAlchemy would
    render the expanded IN list and process every row on each call."""
    vals = sorted(set(values))
    schema = frame_schema(table, columns)
    frames = [pl.DataFrame(schema=schema)]
    names = ", ".join(table.c[c].name for c in columns)
    where = table.c[column].name
    pg = conn.dialect.name == "postgresql"
    if not vals:
        return frames[0]
    cur = conn.connection.cursor()  # the driver's own: no Row object per row
    try:
        for i in range(0, len(vals), 5000):
            part = vals[i : i + 5000]
            if pg:
                sql = f"SELECT {names} FROM {table.name} WHERE {where} = ANY(%s)"
                cur.execute(sql, (part,))
            else:
                marks = ", ".join("?" * len(part))
                sql = f"SELECT {names} FROM {table.name} WHERE {where} IN ({marks})"
                cur.execute(sql, tuple(part))
            frames.append(pl.DataFrame(cur.fetchall(), schema=schema, orient="row"))
    finally:
        cur.close()
    return pl.concat(frames)


def persist_dead_letters(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    if rows:
        with engine.begin() as conn:
            insert_ignore(conn, dead_letters, rows)


def replace_table(engine: Engine, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(table.delete())
        insert_ignore(conn, table, rows)


def read_frame(engine: Engine, query: Any) -> pl.DataFrame:
    with engine.connect() as conn:
        res = conn.execute(query)
        # every row decides a column's type (a column null in the first rows is not Null)
        rows = res.fetchall()
        return pl.DataFrame(rows, schema=list(res.keys()), orient="row", infer_schema_length=None)


def table_count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def distinct_count(engine: Engine, column: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(func.distinct(column)))).scalar_one())


def rows_by_key(engine: Engine, table: Table, chunk: int) -> Iterator[pl.DataFrame]:
    """A table in primary-key order, ``chunk`` rows at a time (keyset pagination: each
    read is one short indexed query, whatever the table's size)."""
    keys = [c for c in table.primary_key.columns]
    schema = frame_schema(table)
    after: tuple[Any, ...] | None = None
    while True:
        q = select(table).order_by(*keys).limit(chunk)
        if after is not None:
            q = q.where(tuple_(*keys) > tuple_(*after))
        with engine.connect() as conn:
            rows = conn.execute(q).fetchall()
        if not rows:
            return
        df = pl.DataFrame(rows, schema=schema, orient="row")
        yield df
        after = tuple(df.row(-1, named=True)[k.name] for k in keys)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
