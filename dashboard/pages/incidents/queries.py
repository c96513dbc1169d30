"""The incident workbench's queue: filters, the stage deadline (SLA clock), paging.

Pure functions over an engine, the flows and the city; nothing here reads a request or a
session (the callbacks pass the viewer's granted scope). The queue is read with one SQL
``WHERE … ORDER BY … LIMIT/OFFSET`` on ``incidents`` and a ``COUNT(*)`` with the same
``WHERE``. The current stage's deadline is a SQL expression too (a ``CASE`` over the
flows: category, minimum severity, the stage of the status), so "overdue" and "due within
N hours" filter and sort correctly across pages; the page's SLA clock (time left or
overdue by) is then computed in Polars from that deadline, and :func:`with_due` computes
the same deadline in Polars alone (the two are checked against each other and against
the flow file by the tests).

Columns the dispatch core adds (``stage_ms``, ``unit_id``, ``due_ms``, ``level``,
``actor_id``, ``duplicate_of``) are used when the schema has them; before that the stage
is taken as entered at the latest event (``last_ms``), which is the same time for an
incident whose events arrived in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy import Engine, and_, case, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from pipelines.access import accounts
from pipelines.city.geography import City
from pipelines.dispatch import ontime
from pipelines.dispatch.flows import HOUR_MS, STAGE_OF_STEP, Flows
from pipelines.spine import store
from pipelines.spine.events import CATEGORIES, SEVERITIES, SOURCES

T = store.incidents
OPEN_STATUSES = tuple(s for s, stage in STAGE_OF_STEP.items() if stage is not None)
PAGE_SIZES = (25, 50, 100)
DUE_FILTERS = ("overdue", "soon")
# Sortable columns (the grid's column id → the SQL it sorts by); ties by incident id.
SORTS = ("due_ms", "reported_ms", "severity", "status", "category", "last_ms", "incident_id")
# What the queue shows of each incident (those the schema has; see the module's note).
QUEUE_COLUMNS = (
    "incident_id",
    "status",
    "category",
    "severity",
    "source",
    "grid_id",
    "street_id",
    "district_id",
    "lon",
    "lat",
    "reported_ms",
    "last_ms",
    "n_events",
    "reporter_id",
    "handler_id",
    "description",
    "level",
    "unit_id",
    "due_ms",
    "stage_ms",
    "actor_id",
    "duplicate_of",
)
NEW_COLUMNS = ("level", "unit_id", "due_ms", "stage_ms", "actor_id", "duplicate_of")
MAX_HOURS_SOON = 24 * 7
# Above this many candidate rows the deadline is filtered and sorted in SQL, below it in
# Polars (see :func:`queue_page`).
AUTO_SQL_ABOVE = 30_000


def has(column: str) -> bool:
    """Does this deployment's ``incidents`` table have ``column`` (core columns)?"""
    return column in T.c


def shown_columns() -> list[str]:
    return [c for c in QUEUE_COLUMNS if has(c)]


@dataclass(frozen=True)
class Filters:
    """The queue's filters (empty = all). Built with :meth:`of` from untrusted values."""

    statuses: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()
    unit_id: str | None = None
    area_id: str | None = None  # inside the scope (the caller has authorised it)
    due: str | None = None  # "overdue" | "soon"
    soon_hours: float = 2.0
    since_ms: int | None = None  # reported at or after
    until_ms: int | None = None  # reported before
    sort: str = "due_ms"
    desc: bool = False
    page: int = 0
    page_size: int = 50
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, raw: dict[str, Any] | None) -> Filters:
        """Only known values survive; anything odd is dropped (inputs are untrusted)."""
        raw = raw if isinstance(raw, dict) else {}

        def pick(key: str, allowed: Sequence[Any]) -> tuple[Any, ...]:
            got = raw.get(key) or ()
            got = got if isinstance(got, list | tuple) else (got,)
            return tuple(x for x in allowed if x in got)

        def num(key: str) -> float | None:
            v = raw.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return None
            return float(v)

        unit, area = raw.get("unit_id"), raw.get("area_id")
        size = raw.get("page_size")
        soon = num("soon_hours")
        since, until = num("since_ms"), num("until_ms")
        page = num("page")
        return cls(
            statuses=pick("statuses", OPEN_STATUSES),
            categories=pick("categories", CATEGORIES),
            severities=pick("severities", SEVERITIES),
            sources=pick("sources", SOURCES),
            unit_id=unit if isinstance(unit, str) and 0 < len(unit) <= 64 else None,
            area_id=area if isinstance(area, str) and 0 < len(area) <= 32 else None,
            due=raw.get("due") if raw.get("due") in DUE_FILTERS else None,
            soon_hours=min(MAX_HOURS_SOON, soon) if soon and soon > 0 else 2.0,
            since_ms=int(since) if since is not None else None,
            until_ms=int(until) if until is not None else None,
            sort=str(raw["sort"]) if raw.get("sort") in SORTS else "due_ms",
            desc=raw.get("desc") is True,
            page=max(0, int(page)) if page is not None else 0,
            page_size=size if size in PAGE_SIZES else 50,
        )


# ------------------------------------------------------------------ the stage deadline


def _entered() -> ColumnElement[Any]:
    """When the incident entered its current status (``stage_ms``, else its latest event)."""
    return func.coalesce(T.c.stage_ms, T.c.last_ms) if has("stage_ms") else T.c.last_ms


def due_sql(flows: Flows) -> ColumnElement[Any]:
    """The current stage's deadline (epoch ms) as SQL: a CASE over the flows, most
    specific flow (highest min_severity) first; a dispatch's own deadline overrides the
    handle stage. NULL for a closed incident."""
    whens: list[tuple[ColumnElement[bool], Any]] = []
    ordered = sorted(flows.flows, key=lambda f: (f.category, -f.min_severity))
    for flow in ordered:
        for stage in flow.stages:
            statuses = [s for s in OPEN_STATUSES if STAGE_OF_STEP[s] == stage.name]
            cond = and_(
                T.c.category == flow.category,
                T.c.severity >= flow.min_severity,
                T.c.status.in_(statuses),
            )
            whens.append((cond, literal(round(stage.hours * HOUR_MS))))
    span = case(*whens, else_=None)
    due = _entered() + span
    if has("due_ms"):
        handle = [s for s in OPEN_STATUSES if STAGE_OF_STEP[s] == "handle"]
        return case(
            (and_(T.c.status.in_(handle), T.c.due_ms.is_not(None)), T.c.due_ms),
            else_=due,
        )
    return due


def with_due(frame: pl.DataFrame, flows: Flows) -> pl.DataFrame:
    """The same deadline in Polars, vectorised: ``due_ms`` (and ``stage``) from the one
    definition of on time (:func:`pipelines.dispatch.ontime.with_stage_due`: ``stage_ms``,
    else ``last_ms``, + the stage's hours, or a dispatch's own deadline in the handle
    stage), the frame's row order kept."""
    out = ontime.with_stage_due(frame.with_row_index("_row"), flows).sort("_row")
    extra = ("_row", "entered_ms", "stage_h", "due_ms_stage", "flow_id", "flow_zh", "flow_en")
    return out.with_columns(pl.col("due_ms_stage").alias("due_ms")).drop(
        [c for c in extra if c in out.columns]
    )


def sla_clock(frame: pl.DataFrame, now_ms: int) -> pl.DataFrame:
    """Adds ``left_ms`` (due − now; negative: overdue by) and ``overdue`` (vectorised)."""
    left = pl.col("due_ms") - pl.lit(now_ms)
    return frame.with_columns(left.alias("left_ms"), (left < 0).alias("overdue"))


def duration_words(ms: int, lang: str) -> str:
    """A duration in words: 2 天 3 小时, 3 小时 5 分, 12 分 / 2 d 3 h, 3 h 5 min, 12 min."""
    mins = max(0, int(ms // 60_000))
    d, h, m = mins // 1440, (mins % 1440) // 60, mins % 60
    zh = lang != "en"
    if d:
        return f"{d} 天 {h} 小时" if zh else f"{d} d {h} h"
    if h:
        return f"{h} 小时 {m} 分" if zh else f"{h} h {m} min"
    return f"{m} 分钟" if zh else f"{m} min"


def clock_words(left_ms: int | None, lang: str) -> str:
    """The SLA clock of a stage in words: time left, or overdue by (zh / en)."""
    if left_ms is None:
        return "—"
    if left_ms < 0:
        span = duration_words(-left_ms, lang)
        return f"超时 {span}" if lang != "en" else f"overdue by {span}"
    span = duration_words(left_ms, lang)
    return f"剩余 {span}" if lang != "en" else f"{span} left"


# ------------------------------------------------------------------ the queue


def scope_clause(city: City, area_id: str) -> ColumnElement[bool] | None:
    """Incidents inside ``area_id`` (None: the whole city)."""
    level = city.level_of(area_id)
    col = {"district": T.c.district_id, "street": T.c.street_id, "grid": T.c.grid_id}.get(
        str(level)
    )
    return None if col is None else col == area_id


def where_clauses(
    f: Filters, city: City, scope: str, flows: Flows, now_ms: int
) -> list[ColumnElement[bool]]:
    """The WHERE of the queue: open, in scope, and the filters."""
    out: list[ColumnElement[bool]] = [T.c.status.in_(f.statuses or OPEN_STATUSES)]
    for area in (scope, f.area_id):
        if area is None:
            continue
        clause = scope_clause(city, area)
        if clause is not None:
            out.append(clause)
    if f.categories:
        out.append(T.c.category.in_(f.categories))
    if f.severities:
        out.append(T.c.severity.in_(f.severities))
    if f.sources:
        out.append(T.c.source.in_(f.sources))
    if f.unit_id and has("unit_id"):
        out.append(T.c.unit_id == f.unit_id)
    if f.since_ms is not None:
        out.append(T.c.reported_ms >= f.since_ms)
    if f.until_ms is not None:
        out.append(T.c.reported_ms < f.until_ms)
    if f.due:
        due = due_sql(flows)
        if f.due == "overdue":
            out.append(due < now_ms)
        else:
            out.append(and_(due >= now_ms, due < now_ms + int(f.soon_hours * HOUR_MS)))
    return out


@dataclass(frozen=True)
class QueuePage:
    rows: pl.DataFrame  # the page, with due_ms, left_ms, overdue
    total: int  # rows matching the filters (every page)
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))


def queue_page(
    engine: Engine,
    flows: Flows,
    city: City,
    scope: str,
    f: Filters,
    now_ms: int,
    *,
    deadline: str = "auto",
) -> QueuePage:
    """One page of the open incidents in ``scope`` matching ``f``, sorted, with each row's
    SLA clock. ``scope`` must be the viewer's granted area (and ``f.area_id``, if any, one
    the caller authorised).

    Without a deadline filter or sort: one COUNT and one page query in SQL, the page's
    deadlines in Polars. With one, the deadline decides which rows and in what order, so
    it must be known for every matching row: ``deadline="polars"`` (the default) reads the
    matching rows' few deciding columns, computes the deadline, filters, sorts and slices
    in Polars, then reads the page's rows by id; ``deadline="sql"`` does it all in SQL with
    :func:`due_sql` (slower on SQLite: ``tests/bench/test_incident_workbench_bench.py``)."""
    if f.area_id is not None and not accounts.scope_allows(scope, f.area_id, city):
        f = Filters(**{**f.__dict__, "area_id": None})
    if f.due is None and f.sort != "due_ms":
        return _plain_page(engine, flows, city, scope, f, now_ms)
    if deadline == "auto":
        where = where_clauses(Filters(**{**f.__dict__, "due": None}), city, scope, flows, now_ms)
        with engine.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(T).where(*where)).scalar_one())
        deadline = "sql" if n > AUTO_SQL_ABOVE else "polars"
    if deadline == "sql":
        return _sql_page(engine, flows, city, scope, f, now_ms)
    return _polars_page(engine, flows, city, scope, f, now_ms)


def _fetch(conn: Any, query: Any) -> pl.DataFrame:
    res = conn.execute(query)
    rows = res.fetchall()
    return pl.DataFrame(rows, schema=_schema(list(res.keys())), orient="row")


def _plain_page(
    engine: Engine, flows: Flows, city: City, scope: str, f: Filters, now_ms: int
) -> QueuePage:
    where = where_clauses(f, city, scope, flows, now_ms)
    key = T.c[f.sort]
    order = [key.desc() if f.desc else key.asc(), T.c.incident_id.asc()]
    cols = [T.c[c] for c in shown_columns()]
    with engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(T).where(*where)).scalar_one())
        page = min(f.page, max(1, math.ceil(total / f.page_size)) - 1)
        frame = _fetch(
            conn,
            select(*cols)
            .where(*where)
            .order_by(*order)
            .limit(f.page_size)
            .offset(page * f.page_size),
        )
    return QueuePage(
        sla_clock(with_due(frame, flows).drop("stage"), now_ms), total, page, f.page_size
    )


def _polars_page(
    engine: Engine, flows: Flows, city: City, scope: str, f: Filters, now_ms: int
) -> QueuePage:
    where = where_clauses(Filters(**{**f.__dict__, "due": None}), city, scope, flows, now_ms)
    deciding = ["incident_id", "category", "severity", "status", "last_ms"]
    deciding += [c for c in ("stage_ms", "due_ms") if has(c)]
    with engine.connect() as conn:
        frame = _fetch(conn, select(*[T.c[c] for c in deciding]).where(*where))
        frame = sla_clock(with_due(frame, flows), now_ms)
        if f.due == "overdue":
            frame = frame.filter(pl.col("due_ms") < now_ms)
        elif f.due == "soon":
            soon = now_ms + int(f.soon_hours * HOUR_MS)
            frame = frame.filter((pl.col("due_ms") >= now_ms) & (pl.col("due_ms") < soon))
        total = frame.height
        page = min(f.page, max(1, math.ceil(total / f.page_size)) - 1)
        key = f.sort if f.sort in frame.columns else "due_ms"
        picked = (
            frame.with_columns(pl.col("due_ms").is_null().alias("_late"))
            .sort(["_late", key, "incident_id"], descending=[False, f.desc, False])
            .slice(page * f.page_size, f.page_size)
            .select("incident_id", "due_ms", "left_ms", "overdue")
        )
        ids = picked["incident_id"].to_list()
        cols = [T.c[c] for c in shown_columns() if c != "due_ms"]
        rows = _fetch(conn, select(*cols).where(T.c.incident_id.in_(ids))) if ids else None
    if rows is None:
        rows = pl.DataFrame(schema=_schema([c.name for c in cols]))
    out = picked.join(rows, on="incident_id", how="left", maintain_order="left")
    return QueuePage(out, total, page, f.page_size)


def _sql_page(
    engine: Engine, flows: Flows, city: City, scope: str, f: Filters, now_ms: int
) -> QueuePage:
    where = where_clauses(f, city, scope, flows, now_ms)
    due = due_sql(flows).label("due_ms")
    cols = [T.c[c] for c in shown_columns() if c != "due_ms"]
    key: Any = due if f.sort == "due_ms" else T.c[f.sort]
    order = [key.desc() if f.desc else key.asc(), T.c.incident_id.asc()]
    if f.sort == "due_ms":  # a NULL deadline (unknown flow) sorts last either way
        order.insert(0, case((due.is_(None), 1), else_=0))
    with engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(T).where(*where)).scalar_one())
        page = min(f.page, max(1, math.ceil(total / f.page_size)) - 1)
        frame = _fetch(
            conn,
            select(*cols, due)
            .where(*where)
            .order_by(*order)
            .limit(f.page_size)
            .offset(page * f.page_size),
        )
    return QueuePage(sla_clock(frame, now_ms), total, page, f.page_size)


_INT = {"severity", "reported_ms", "last_ms", "n_events", "due_ms", "stage_ms"}
_FLOAT = {"lon", "lat"}


def _schema(names: list[str]) -> dict[str, Any]:
    return {n: pl.Int64 if n in _INT else pl.Float64 if n in _FLOAT else pl.String for n in names}


def plain_rows(engine: Engine, city: City, scope: str, f: Filters) -> int:
    """The benchmark's baseline: the same page of rows by a plain select (no deadline)."""
    where: list[ColumnElement[bool]] = [T.c.status.in_(OPEN_STATUSES)]
    clause = scope_clause(city, scope)
    if clause is not None:
        where.append(clause)
    with engine.connect() as conn:
        got = conn.execute(
            select(*[T.c[c] for c in shown_columns() if c != "due_ms"])
            .where(*where)
            .order_by(T.c.reported_ms, T.c.incident_id)
            .limit(f.page_size)
            .offset(f.page * f.page_size)
        ).fetchall()
    return len(got)


def area_options(city: City, scope: str) -> list[tuple[str, str, str]]:
    """(area_id, name, level) of the scope and the districts and streets inside it (and
    its grids, for a street or grid scope)."""
    out = []
    for level in ("city", "district", "street"):
        for area_id in city.ids(level):
            if accounts.scope_allows(scope, area_id, city):
                row = city.area(area_id)
                out.append((area_id, str(row["name"]) if row else area_id, level))
    grids = {"street": city.children(scope), "grid": [scope]}.get(str(city.level_of(scope)), [])
    for grid in grids:
        row = city.area(grid)
        out.append((grid, str(row["name"]) if row else grid, "grid"))
    return out
