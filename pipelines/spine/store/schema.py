"""The SQL schema (SQLAlchemy 2 Core; one schema for SQLite and PostgreSQL): every table,
the engine, and the in-place upgrade of an older database (missing columns and indexes).

Every insert is a batch and idempotent on its natural key, so a redelivered batch
changes nothing. ``incidents`` (current state) is recomputed from the append-only
``incident_events`` of the touched incidents, so the order of arrival never matters;
that row carries the incident's lifecycle summary (what the scorecards read).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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
    inspect,
    text,
)

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
    Column("handler_id", String(64), index=True),  # a worker's task list
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
    # Command and dispatch: the incident's current level (last escalation, else grid), the
    # unit it was last dispatched to, a deadline set by that dispatch, the incident it was
    # merged into, when it entered its current status and who acted last.
    Column("level", String(16)),
    Column("unit_id", String(64)),
    Column("due_ms", BigInteger),
    Column("duplicate_of", String(64)),
    Column("stage_ms", BigInteger),
    Column("actor_id", String(64)),
    # when its current stage is due (the flow's deadline; NULL once closed): the workbench
    # filters and sorts by it with an index, the pipeline keeps it with every change and
    # ``ontime.refresh_stage_due`` rewrites it when the flows change
    Column("stage_due_ms", BigInteger, index=True),
    # when it first left each flow stage (reached a step of a later stage; the close stage
    # ends at closed_ms): the scorecard's on-time rate per stage
    Column("left_accept_ms", BigInteger),
    Column("left_dispatch_ms", BigInteger),
    Column("left_handle_ms", BigInteger),
    Column("left_verify_ms", BigInteger),
    # The fold state the reports pipeline keeps with every change, so a batch reads these
    # rows instead of the incidents' histories (``incidents.decide_reports``): the live
    # state's ``acc`` (its days in the time zone ``acc_tz``) and the last stored entry in
    # walk order (time, then stream order) over accepted and rejected entries, with
    # whether any of them is a ``closed``. NULL (rows of other writers, databases from
    # before these columns): the next batch touching the incident reads its history once.
    Column("acc", Text),
    Column("acc_tz", String(64)),
    Column("walk_ts_ms", BigInteger),
    Column("walk_entry", String(32)),
    Column("walk_closed", Integer),
    # the workbench's queue of a district or a street, by deadline
    Index("ix_incidents_district_due", "district_id", "stage_due_ms"),
    Index("ix_incidents_street_due", "street_id", "stage_due_ms"),
)

incident_events = Table(
    "incident_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("incident_id", String(64), nullable=False, index=True),
    Column("step", String(16), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
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
    Column("actor_id", String(64)),
    Column("reason", String(500)),
    Column("unit_id", String(64)),
    Column("due_ms", BigInteger),
    Column("note", Text),
    Column("photo_url", String(512)),
    Column("onsite_by", String(64)),
    Column("duplicate_of", String(64), index=True),
    # the time machine's "incidents touched between two moments", city-wide and in a
    # street: both answered from the index alone (``history.state.read_rows``); the first
    # also serves every time range — it replaces the single-column ``ix_incident_events_ts_ms``
    Index("ix_incident_events_ts_incident", "ts_ms", "incident_id"),
    Index("ix_incident_events_street_ts", "street_id", "ts_ms", "incident_id"),
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
    Column("entry_id", String(32), nullable=False),  # the first entry: it created the alert
    # An alert that changes while it lasts (a tracked object, a review item) is sent again
    # under its alert_id with a higher revision and updated in place: these columns hold
    # the newest revision's values (label and score above too); the place, camera and start
    # stay the creating entry's.
    Column("revision", BigInteger),
    Column("rev_entry", String(32)),  # the entry whose revision is shown
    Column("end_ms", BigInteger),
    Column("sub_label", String(128)),
    Column("zones", String(256)),
    Column("severity", String(16)),
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
    # each worker's latest point at or before a moment (the time machine), without reading
    # the rows: city-wide a range of the first grouped by worker, inside an area the
    # rostered workers' ranges of the second; the first also serves every time range
    # (retention, exports) — it replaces the single-column ``ix_track_points_ts``
    Index("ix_track_points_ts_worker", "ts_ms", "worker_id"),
    Index("ix_track_points_worker_ts", "worker_id", "ts_ms"),
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


# ------------------------------------------------------------------ the time machine's checkpoints
# (logic in pipelines/history/checkpoints.py)

# A version per hour of incident history: every write that adds or removes events of an
# hour bumps it (in the write's own transaction), so the sum of versions up to an hour
# changes with any change to the events up to it.
history_marks = Table(
    "history_marks",
    metadata,
    Column("hour_ms", BigInteger, primary_key=True),  # epoch ms of the hour's start
    Column("version", BigInteger, nullable=False),
)

# The incident states at a whole hour (those the time machine's picture holds then): every
# few hours all of them, in between those that changed in the hour; kept with the sum of
# history's versions up to it they were built from: a checkpoint whose sum is no longer
# that is not used.
history_checkpoints = Table(
    "history_checkpoints",
    metadata,
    Column("key", String(40), primary_key=True),  # the city, time zone and flows folded by
    Column("at_ms", BigInteger, primary_key=True),
    Column("marks", BigInteger, nullable=False),
    Column("incidents", Integer, nullable=False),
    # 1: every state; 0: only those that changed since the checkpoint an hour before
    Column("full", Integer, nullable=False),
    Column("built_ms", BigInteger, nullable=False),
    Column("states", LargeBinary, nullable=False),  # Parquet, zstd
)

# A simulated past (a first start's backfill, ``pipelines/history/spans.py``): its span, how
# thinly its worker tracks were kept (the time machine widens "online" to that interval),
# and how far the warnings engine has been evaluated over it (``warnings.replay``; a stop
# midway is resumed at the next start).
simulated_history = Table(
    "simulated_history",
    metadata,
    Column("start_ms", BigInteger, primary_key=True),
    Column("end_ms", BigInteger, nullable=False),
    Column("track_every_s", Float, nullable=False),
    Column("warnings_ms", BigInteger),  # evaluated up to this moment (None: not begun)
    # A backfill under way (or cut short: Ctrl-C, a crash) resumes from ``resume_ms`` (every
    # event up to it is in SQL); ``reached_ms``: the furthest it published; ``fingerprint``:
    # what its events follow from (the simulator's settings, the city, the flows). All
    # NULL once it has finished.
    Column("resume_ms", BigInteger),
    Column("reached_ms", BigInteger),
    Column("fingerprint", String(64)),
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
    Column("rules", Text, nullable=False),  # JSON: weights and the flows (deadlines) used
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
    """Create missing tables, then add missing (nullable) columns to existing ones.

    PostgreSQL: the history tables are created range-partitioned on their time column
    (``partitions.create_partitioned``) before the plain tables."""
    from pipelines.spine.store.partitions import create_partitioned

    load_table_modules()
    with _schema_lock(engine):
        create_partitioned(engine)
        metadata.create_all(engine)
        add_missing_columns(engine)
        add_missing_indexes(engine)


# Any fixed number: the session-level advisory lock every process takes while it creates or
# upgrades the schema (several workers of one service start at once on a fresh database).
_SCHEMA_LOCK = 0x57414E47  # "WANG"


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[None]:
    """One process at a time creates or upgrades the schema (the others wait, then find it
    done): a PostgreSQL advisory lock; for a SQLite file, an exclusive lock on a file
    beside it (its own write lock does not make "check, then create" atomic)."""
    if engine.dialect.name == "sqlite":
        db = engine.url.database
        if not db or db == ":memory:":
            yield
            return
        import fcntl

        try:
            lock = open(f"{db}.schema-lock", "a+b")  # noqa: SIM115 (held across the yield)
        except OSError:  # no such directory: the database fails to open with its own error
            yield
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _SCHEMA_LOCK})
            conn.commit()


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
