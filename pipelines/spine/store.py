"""SQL history, the system of record (SQLAlchemy 2 Core; one schema for SQLite and PostgreSQL).

Every insert is a batch and idempotent on its natural key, so a redelivered batch
changes nothing. ``incidents`` (current state) is recomputed from the append-only
``incident_events`` of the touched incidents, so the order of arrival never matters;
that row carries the incident's lifecycle summary (what the scorecards read).
"""

from __future__ import annotations

import importlib

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite

from pipelines.spine.events import stream_order

metadata = MetaData()

areas = Table(
    "areas",
    metadata,
    Column("area_id", String(32), primary_key=True),
    Column("level", String(16), nullable=False),
    Column("parent_id", String(32), index=True),
    Column("name", String(64), nullable=False),
    Column("district_id", String(32)),
    Column("street_id", String(32)),
    Column("lon", Float),
    Column("lat", Float),
    Column("area_km2", Float),
)

incidents = Table(
    "incidents",
    metadata,
    Column("incident_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False, index=True),  # the open ones, every tick
    Column("category", String(32), nullable=False),
    Column("severity", Integer, nullable=False),
    Column("source", String(16)),
    Column("grid_id", String(32), index=True),
    Column("street_id", String(32), index=True),
    Column("district_id", String(32), index=True),
    Column("lon", Float),
    Column("lat", Float),
    Column("reported_ms", BigInteger, index=True),
    Column("last_ms", BigInteger),
    Column("closed_ms", BigInteger),
    Column("resolution_level", String(16)),
    Column("reporter_id", String(64)),
    Column("handler_id", String(64)),
    Column("description", Text),
    Column("n_events", Integer, nullable=False),
    # Lifecycle summary over the incident's full event history (see ``lifecycle_summary``);
    # NULL until computed (rows of a database from before these columns existed).
    Column("first_ms", BigInteger),  # earliest event (``last_ms`` is the latest)
    Column("first_action_ms", BigInteger),
    Column("accepted_ms", BigInteger),
    Column("dispatched_ms", BigInteger),
    Column("first_resolved_ms", BigInteger),
    Column("last_returned_ms", BigInteger),
    Column("n_returned", Integer),
    Column("n_verified", Integer),
    Column("closed_level", String(16)),
    Column("report_handler_id", String(64)),  # the grid worker responsible when reported
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("step", String(16), nullable=False),
    Column("ts_ms", BigInteger, nullable=False, index=True),
    Column("category", String(32), nullable=False),
    Column("severity", Integer, nullable=False),
    Column("source", String(16)),
    Column("reporter_id", String(64)),
    Column("handler_id", String(64)),
    Column("grid_id", String(32), nullable=False),
    Column("street_id", String(32), nullable=False),
    Column("district_id", String(32), nullable=False),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("description", Text),
    Column("level", String(16)),
    Column("entry_id", String(32), nullable=False),
)

# Valid report entries that were turned down (``duplicate``, ``bad_transition``): the
# event-id rule and the lifecycle rule are decided over every valid entry, accepted or
# not (``aggregate.decide_reports``), and a rejection is final.
report_rejects = Table(
    "report_rejects",
    metadata,
    Column("entry_id", String(32), primary_key=True),
    Column("event_id", String(64), nullable=False, index=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("step", String(16), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
)

video_alerts = Table(
    "video_alerts",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("camera_id", String(64), nullable=False),
    Column("label", String(32), nullable=False),
    Column("score", Float, nullable=False),
    Column("ts_ms", BigInteger, nullable=False, index=True),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("grid_id", String(32), nullable=False),
    Column("street_id", String(32), nullable=False, index=True),
    Column("district_id", String(32), nullable=False),
    Column("entry_id", String(32), nullable=False),
)

track_points = Table(
    "track_points",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("slot", BigInteger, primary_key=True),  # ts_ms // (persist_tracks_every_s * 1000)
    Column("ts_ms", BigInteger, nullable=False),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("grid_id", String(32), nullable=False),
    Column("accuracy", Float),
    Column("speed", Float),
    Column("battery", Float),
    Column("mock", Boolean),  # the phone reported a simulated (mock) location
    Index("ix_track_points_ts", "ts_ms"),
)

patrols = Table(
    "patrols",
    metadata,
    Column("day", String(8), primary_key=True),  # local day YYYYMMDD
    Column("grid_id", String(32), primary_key=True),
    Column("first_ms", BigInteger, nullable=False),
)

worker_positions = Table(
    "worker_positions",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("packed", String(160), nullable=False),  # state.py's position encoding
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("stream", String(32), primary_key=True),
    Column("entry_id", String(32), primary_key=True),
    Column("reason", String(32), nullable=False, index=True),
    Column("detail", Text),
    Column("payload", LargeBinary),
    Column("received_ms", BigInteger, nullable=False),
)

cameras = Table(
    "cameras",
    metadata,
    Column("camera_id", String(64), primary_key=True),
    Column("lon", Float, nullable=False),
    Column("lat", Float, nullable=False),
    Column("grid_id", String(32), nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("grid_id", String(32), nullable=False, index=True),
    Column("phone_masked", String(32)),
)


# ------------------------------------------------------------------ access control and audit
# (logic in pipelines/access/accounts.py and pipelines/access/audit.py)

users = Table(
    "users",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("scope_area_id", String(32), nullable=False),
    Column("password_hash", String(256)),  # None for wall users (no interactive login)
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column(
        "failure_id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("username", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Index("ix_login_failures_user_at", "username", "at_ms"),
)

wall_tokens = Table(
    "wall_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("user_id", String(32), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the token
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    # Assigned as last seq + 1 under the append lock (gapless, unlike a sequence).
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at_ms", BigInteger, nullable=False, index=True),
    Column("actor", String(128), nullable=False, index=True),
    Column("role", String(32), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("target", String(256), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)


# ------------------------------------------------------------------ early warnings
# (logic in pipelines/warnings/engine.py)

warnings = Table(
    "warnings",
    metadata,
    Column("warning_id", String(64), primary_key=True),
    Column("key", String(160), nullable=False, index=True),  # rule × area (× subject) identity
    Column("rule", String(32), nullable=False),
    Column("area_id", String(32), nullable=False, index=True),
    Column("level", String(8), nullable=False),  # blue / yellow / orange / red
    # new / acknowledged / dispatched (open) · resolved / dismissed / cleared (closed)
    Column("status", String(16), nullable=False, index=True),
    Column("first_seen_ms", BigInteger, nullable=False, index=True),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("escalated_to", String(32)),  # the ancestor area it has been escalated to
    Column("escalated_ms", BigInteger),
    Column("acked_by", String(128)),
    Column("acked_ms", BigInteger),
    Column("closed_ms", BigInteger),
    Column("assigned_to", String(128)),  # dispatched to this unit or person
    Column("close_note", Text),  # why it was resolved / dismissed
    Column("evidence", Text, nullable=False),  # JSON list of event / incident / alert ids
    Column("summary", Text, nullable=False),  # JSON object
    Column("aliases", Text, nullable=False),  # JSON list of other keys merged in (fusion)
)

warning_actions = Table(
    "warning_actions",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("warning_id", String(64), nullable=False, index=True),
    Column("action", String(32), nullable=False),  # open / escalate / clear / acknowledge …
    Column("actor", String(128), nullable=False),
    Column("note", Text),
    Column("at_ms", BigInteger, nullable=False),
)


# ------------------------------------------------------------------ supervision and assessment
# (logic in pipelines/assessment/scorecards.py)

scorecard_snapshots = Table(
    "scorecard_snapshots",
    metadata,
    Column("period_key", String(32), primary_key=True),  # 2026-10 · 2026-W44 · …
    Column("level", String(16), primary_key=True),  # district / street / grid / worker
    Column("row_id", String(64), primary_key=True),  # area_id or worker_id
    Column("name", String(128), nullable=False),
    Column("parent_id", String(32)),
    Column("parent", String(128)),
    Column("metrics", Text, nullable=False),  # JSON: metric id → unrounded value
    Column("score", Float),
    Column("rules", Text, nullable=False),  # JSON: weights and deadlines used
    Column("computed_ms", BigInteger, nullable=False),
)


# ------------------------------------------------------------------ the database's city
# (logic in pipelines/city/binding.py)

city_binding = Table(
    "city_binding",
    metadata,
    Column("slot", String(8), primary_key=True),  # always "city": one row
    Column("city_id", String(32), nullable=False),
    Column("name", String(64), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # sha256 of the area hierarchy
    Column("areas", Integer, nullable=False),
    Column("bound_ms", BigInteger, nullable=False),
)


def make_engine(url: str, schema: str | None = None, echo: bool = False) -> Engine:
    """Engine for SQLite (WAL, busy timeout) or PostgreSQL (optionally a private schema)."""
    if url.startswith("sqlite"):
        eng = create_engine(url, echo=echo, connect_args={"timeout": 60})

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return eng
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    args: dict[str, Any] = {}
    if schema:
        args["options"] = f"-csearch_path={schema}"
    return create_engine(url, echo=echo, connect_args=args, pool_pre_ping=True)


# Modules outside the spine that register their own tables on :data:`metadata`; they are
# loaded before the schema is created or a city rebound, whatever a process imported before.
TABLE_MODULES = (
    "pipelines.gateway.credentials",
    "pipelines.gateway.open311",
    "pipelines.dispatch.units",
)


def load_table_modules() -> None:
    for name in TABLE_MODULES:
        importlib.import_module(name)


def create_schema(engine: Engine) -> None:
    """Create missing tables, then add missing (nullable) columns to existing ones."""
    load_table_modules()
    metadata.create_all(engine)
    add_missing_columns(engine)
    add_missing_indexes(engine)


def add_missing_indexes(engine: Engine) -> None:
    """Create every model index an existing table lacks (``create_all`` only indexes the
    tables it creates)."""
    for table in metadata.sorted_tables:
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def add_missing_columns(engine: Engine) -> list[str]:
    """``ALTER TABLE … ADD COLUMN`` for every model column an existing table lacks.

    Only nullable columns can be added this way (existing rows get NULL); a database
    created before the columns existed is upgraded in place. Safe to run concurrently
    (a column another process added meanwhile is skipped). Returns ``table.column``s added.
    """
    insp = inspect(engine)
    present = {
        t.name: {c["name"] for c in insp.get_columns(t.name)} for t in metadata.sorted_tables
    }
    added = []
    for table in metadata.sorted_tables:
        for col in table.columns:
            if col.name in present[table.name]:
                continue
            assert col.nullable, f"{table.name}.{col.name}: only nullable columns can be added"
            kind = col.type.compile(dialect=engine.dialect)
            exists = " IF NOT EXISTS" if engine.dialect.name == "postgresql" else ""
            ddl = f"ALTER TABLE {table.name} ADD COLUMN{exists} {col.name} {kind}"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
            except Exception as exc:  # SQLite has no IF NOT EXISTS for columns
                if "duplicate column" not in str(exc).lower():
                    raise
            added.append(f"{table.name}.{col.name}")
    return added


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


# ------------------------------------------------------------------ writes


EVENT_COLUMNS = [c.name for c in incident_events.columns]


def persist_report_events(engine: Engine, events: pl.DataFrame) -> None:
    """Append events (idempotent) and recompute the current state of touched incidents."""
    if events.is_empty():
        return
    rows = events.select(EVENT_COLUMNS).to_dicts()
    ids = events["incident_id"].unique().to_list()
    with engine.begin() as conn:
        lock_incidents(conn, ids)
        insert_ignore(conn, incident_events, rows)
        hist = _events_of(conn, ids)
        upsert(conn, incidents, incident_rows(hist), ["incident_id"])


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


def _rows_in(
    conn: Connection, table: Table, column: str, values: Iterable[str], columns: Sequence[str]
) -> pl.DataFrame:
    """Rows of ``table`` whose ``column`` is one of ``values`` (chunked IN lists)."""
    vals = sorted(set(values))
    schema = frame_schema(table, columns)
    frames = [pl.DataFrame(schema=schema)]
    for i in range(0, len(vals), 5000):
        q = select(*[table.c[c] for c in columns]).where(table.c[column].in_(vals[i : i + 5000]))
        frames.append(pl.DataFrame(conn.execute(q).fetchall(), schema=schema, orient="row"))
    return pl.concat(frames)


def _events_of(conn: Connection, incident_ids: list[str]) -> pl.DataFrame:
    return _rows_in(conn, incident_events, "incident_id", incident_ids, EVENT_COLUMNS)


REJECT_COLUMNS = [c.name for c in report_rejects.columns]


@dataclass
class ReportDecision:
    """What ``decide_reports`` decided and wrote for one batch."""

    verdicts: dict[str, str]  # batch entry → "accepted" or a dead-letter reason
    known: dict[str, str]  # batch entries decided earlier (redelivered) → "A" or "X"
    turned_down: pl.DataFrame  # accepted entries of earlier batches now rejected (+ verdict)
    before: pl.DataFrame  # accepted events of the incidents concerned, before
    after: pl.DataFrame  # … and after this batch
    changed: set[str]  # incidents whose set of accepted events changed
    concerned: set[str] = field(default_factory=set)  # every incident read


def decide_reports(conn: Connection, batch: pl.DataFrame) -> ReportDecision:
    """Decide a batch of valid report events (``incident_events`` columns) against the
    stored history and write the outcome: accepted events into ``incident_events``,
    rejected ones into ``report_rejects``, the touched ``incidents`` rows recomputed.

    Locks the incidents and event ids concerned first (``lock_keys``), so concurrent
    batches are decided one after the other; the rule itself is the pure
    ``aggregate.decide_reports``. Earlier entries that a batch turns down (an event id
    claimed by an entry earlier in the stream, a ``closed`` that arrived late) move
    from ``incident_events`` to ``report_rejects``.
    """
    from pipelines.spine import aggregate as agg

    write_lock(conn)
    eids = batch["event_id"].unique().to_list()
    concerned = set(batch["incident_id"].unique().to_list())
    lock_keys(conn, [f"event:{e}" for e in eids])
    locked: set[str] = set()
    for _ in range(10):  # the incidents holding these event ids, until none is new
        for t in (incident_events, report_rejects):
            concerned.update(_rows_in(conn, t, "event_id", eids, ["incident_id"])["incident_id"])
        if concerned <= locked or conn.dialect.name != "postgresql":
            break  # (SQLite: the write lock is held already, nothing changes meanwhile)
        lock_keys(conn, concerned - locked)
        locked |= concerned
    acc = _rows_in(conn, incident_events, "incident_id", concerned, EVENT_COLUMNS)
    rej = _rows_in(conn, report_rejects, "incident_id", concerned, REJECT_COLUMNS)
    known = {e: "A" for e in acc["entry_id"]} | {e: "X" for e in rej["entry_id"]}
    fresh = batch.filter(~pl.col("entry_id").is_in(list(known)))
    cols = list(agg.DECISION_COLUMNS)
    cands = pl.concat(
        [
            acc.select(cols).with_columns(stored=pl.lit("A"), reason=pl.lit(None, pl.String)),
            rej.select(*cols, stored=pl.lit("X"), reason="reason"),
            fresh.select(cols).with_columns(
                stored=pl.lit(None, pl.String), reason=pl.lit(None, pl.String)
            ),
        ]
    )
    decided = agg.decide_reports(cands)
    verdict = dict(zip(decided["entry_id"], decided["verdict"], strict=True))
    down_ids = [e for e in acc["entry_id"] if verdict[e] != "accepted"]
    turned_down = acc.filter(pl.col("entry_id").is_in(down_ids)).with_columns(
        verdict=pl.col("entry_id").replace_strict(verdict, return_dtype=pl.String)
    )
    new_acc = fresh.filter(
        pl.col("entry_id").replace_strict(verdict, return_dtype=pl.String) == "accepted"
    )
    new_rej = decided.filter(pl.col("stored").is_null() & (pl.col("verdict") != "accepted")).select(
        *cols, reason="verdict"
    )
    if turned_down.height:
        conn.execute(
            incident_events.delete().where(
                incident_events.c.event_id.in_(turned_down["event_id"].to_list()),
                incident_events.c.entry_id.in_(down_ids),
            )
        )
    rejects = pl.concat([turned_down.select(*cols, reason="verdict"), new_rej])
    insert_ignore(conn, report_rejects, rejects.select(REJECT_COLUMNS).to_dicts())
    insert_ignore(conn, incident_events, new_acc.select(EVENT_COLUMNS).to_dicts())
    kept = acc.filter(~pl.col("entry_id").is_in(down_ids))
    after = pl.concat([kept, new_acc.select(acc.columns)])
    changed = set(turned_down["incident_id"]) | set(new_acc["incident_id"])
    _recompute(conn, after.filter(pl.col("incident_id").is_in(list(changed))), changed)
    return ReportDecision(
        verdicts={e: verdict[e] for e in batch["entry_id"]},
        known={e: known[e] for e in batch["entry_id"] if e in known},
        turned_down=turned_down,
        before=acc,
        after=after,
        changed=changed,
        concerned=concerned,
    )


def _recompute(conn: Connection, hist: pl.DataFrame, incident_ids: set[str]) -> None:
    """Rewrite the ``incidents`` rows of these incidents from their accepted events;
    an incident left with none has no row."""
    upsert(conn, incidents, incident_rows(hist), ["incident_id"])
    empty = sorted(incident_ids - set(hist["incident_id"]))
    for i in range(0, len(empty), 5000):
        conn.execute(incidents.delete().where(incidents.c.incident_id.in_(empty[i : i + 5000])))


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


def lifecycle_summary(hist: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Per incident, the lifecycle facts the scorecard needs, from its events (pure).

    Input columns: incident_id, step, ts_ms, level, handler_id. The same aggregates as the
    scorecard's SQL ``GROUP BY`` over the same events (``scorecard.read_incidents``), so
    either gives the same facts: first / last event, first action (any step but
    ``reported``), first accepted / dispatched / resolved, last returned, number of
    returns and verifications, the (greatest) level of a ``closed`` event and the
    (least) ``handler_id`` of a ``reported`` event. Independent of the order of arrival.
    """
    step, ts = pl.col("step"), pl.col("ts_ms")

    def first(name: str) -> pl.Expr:
        return ts.filter(step == name).min()

    return (
        hist.lazy()
        .group_by("incident_id")
        .agg(
            first_ms=ts.min(),
            first_action_ms=ts.filter(step != "reported").min(),
            accepted_ms=first("accepted"),
            dispatched_ms=first("dispatched"),
            first_resolved_ms=first("resolved"),
            last_returned_ms=ts.filter(step == "returned").max(),
            n_returned=(step == "returned").sum().cast(pl.Int64),
            n_verified=(step == "verified").sum().cast(pl.Int64),
            closed_level=pl.col("level").filter(step == "closed").max(),
            report_handler_id=pl.col("handler_id").filter(step == "reported").min(),
        )
    )


SUMMARY_COLUMNS = [
    "first_ms",
    "first_action_ms",
    "accepted_ms",
    "dispatched_ms",
    "first_resolved_ms",
    "last_returned_ms",
    "n_returned",
    "n_verified",
    "closed_level",
    "report_handler_id",
]


def incident_rows(hist: pl.DataFrame) -> list[dict[str, Any]]:
    """Current state of each incident, with its lifecycle summary, from its full event
    history (pure)."""
    if hist.is_empty():
        return []
    walk = ["incident_id", "ts_ms", "_ems", "_eseq"]  # time, then stream order
    h = hist.with_columns(stream_order()).sort(walk).drop("_ems", "_eseq")
    summary = lifecycle_summary(h.select("incident_id", "step", "ts_ms", "level", "handler_id"))
    cur = h.group_by("incident_id").agg(
        status=pl.col("step").last(),
        category=pl.col("category").first(),
        severity=pl.col("severity").first(),
        source=pl.col("source").first(),
        grid_id=pl.col("grid_id").first(),
        street_id=pl.col("street_id").first(),
        district_id=pl.col("district_id").first(),
        lon=pl.col("lon").first(),
        lat=pl.col("lat").first(),
        reported_ms=pl.col("ts_ms").filter(pl.col("step") == "reported").min(),
        last_ms=pl.col("ts_ms").max(),
        closed_ms=pl.col("ts_ms").filter(pl.col("step") == "closed").min(),
        resolution_level=pl.col("level").filter(pl.col("step") == "closed").first(),
        reporter_id=pl.col("reporter_id").drop_nulls().first(),
        handler_id=pl.col("handler_id").drop_nulls().last(),
        description=pl.col("description").drop_nulls().first(),
        n_events=pl.len().cast(pl.Int64),
    )
    # A closed incident stays closed whatever arrives later (late events are history).
    cur = cur.with_columns(
        status=pl.when(pl.col("closed_ms").is_not_null())
        .then(pl.lit("closed"))
        .otherwise(pl.col("status"))
    )
    return cur.join(summary.collect(), on="incident_id", how="left").to_dicts()


def backfill_summaries(engine: Engine, chunk: int = 5000) -> int:
    """Compute the lifecycle summary of incidents that have none (rows written before the
    summary columns existed), ``chunk`` incidents per transaction. Idempotent and
    resumable (the same rows ``persist_report_events`` would write). Returns the count."""
    i = incidents
    done, after = 0, ""
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(i.c.incident_id)
                    .where(i.c.incident_id > after, i.c.first_ms.is_(None))
                    .order_by(i.c.incident_id)
                    .limit(chunk)
                ).scalars()
            )
            if not ids:
                return done
            lock_incidents(conn, ids)
            upsert(conn, incidents, incident_rows(_events_of(conn, ids)), ["incident_id"])
        done, after = done + len(ids), ids[-1]


def persist_tracks(engine: Engine, points: pl.DataFrame) -> None:
    """Downsampled points: per (worker, slot) the earliest point wins, whatever the order."""
    if points.is_empty():
        return
    cols = [c.name for c in track_points.columns]
    with engine.begin() as conn:
        upsert_frame(
            conn, track_points, points.select(cols), ["worker_id", "slot"], where_older="ts_ms"
        )


def persist_patrols(engine: Engine, visits: pl.DataFrame) -> None:
    """Grids visited per day (the earliest visit wins, whatever the order)."""
    if visits.is_empty():
        return
    with engine.begin() as conn:
        frame = visits.select("day", "grid_id", "first_ms")
        upsert_frame(conn, patrols, frame, ["day", "grid_id"], where_older="first_ms")


def persist_positions(engine: Engine, latest: list[tuple[str, int, str]]) -> None:
    """Each worker's latest packed position (the newest wins, whatever the order)."""
    if not latest:
        return
    frame = pl.DataFrame(
        latest,
        schema={"worker_id": pl.String, "ts_ms": pl.Int64, "packed": pl.String},
        orient="row",
    )
    with engine.begin() as conn:
        upsert_frame(conn, worker_positions, frame, ["worker_id"], where_newer="ts_ms")


def persist_dead_letters(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    if rows:
        with engine.begin() as conn:
            insert_ignore(conn, dead_letters, rows)


def replace_table(engine: Engine, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(table.delete())
        insert_ignore(conn, table, rows)


# ------------------------------------------------------------------ reads


def read_frame(engine: Engine, query: Any) -> pl.DataFrame:
    with engine.connect() as conn:
        res = conn.execute(query)
        return pl.DataFrame(res.fetchall(), schema=list(res.keys()), orient="row")


def table_count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def cameras_frame(engine: Engine) -> pl.DataFrame:
    return read_frame(engine, select(cameras))


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


def events_by_incident(engine: Engine, chunk: int) -> Iterator[tuple[list[str], pl.DataFrame]]:
    """Every incident's accepted events, ``chunk`` incidents at a time (in id order)."""
    ie = incident_events
    after = ""
    while True:
        with engine.connect() as conn:
            q = (
                select(ie.c.incident_id)
                .where(ie.c.incident_id > after)
                .group_by(ie.c.incident_id)
                .order_by(ie.c.incident_id)
                .limit(chunk)
            )
            ids = list(conn.execute(q).scalars())
            if not ids:
                return
            events = _rows_in(conn, ie, "incident_id", ids, EVENT_COLUMNS)
        yield ids, events
        after = ids[-1]


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
