"""``HistoricState``: the live state's reads, answered for a past moment from SQL.

The pages read the live city through ``LiveState`` (``read_areas``, ``counts``,
``breakdown``, ``hourly``, ``ticker``, ``patrolled``, ``positions``, ``warnings``,
``open_incidents``, ``incident``, ``meta`` …). ``HistoricState(engine, city, settings,
at_ms)`` answers the same calls with what they returned at ``at_ms``: it reads the rows of
a bounded window of history once (the incidents open at ``at`` or touched in the 26 hours
before it, the video alerts and track points of that window, the day's patrols, the
warnings alive at ``at``) and hands them to the pure ``reconstruct.picture``. The same
rendering code then draws the past city.

What history cannot give back is said, not guessed: track points older than
``privacy.track_retention_days`` are purged (``tracks_kept`` is False, positions are
empty); dead-letter counters are not historic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl
from sqlalchemy import Engine, Integer, cast, func, or_, select, union

from pipelines.city.geography import City
from pipelines.dispatch.flows import flows_for
from pipelines.history import checkpoints, spans
from pipelines.history import reconstruct as rc
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.scripts import INCIDENT_FIELDS
from pipelines.warnings.store import live_item

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# How far back a worker's last track point still places them on the map at a past moment
# (the live position hash keeps a worker's last ping however old; history reads a window).
POSITIONS_LOOKBACK_MS = 24 * HOUR_MS
LIVE_METRICS = ("open", "overdue", "online", "warn_level")


def _ms_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


def tracks_kept(settings: Settings, at_ms: int, now_ms: int | None) -> bool:
    """Whether a moment's track points are still kept: they are purged once older than
    ``privacy.track_retention_days`` (``now_ms`` None: nothing is purged)."""
    retention = settings.privacy.track_retention_days * DAY_MS
    return now_ms is None or int(at_ms) >= int(now_ms) - retention


class HistoricState:
    """The live state's read interface at a past moment (read-only)."""

    def __init__(
        self,
        engine: Engine,
        city: City,
        settings: Settings,
        at_ms: int,
        *,
        now_ms: int | None = None,
        area_id: str | None = None,
        use_checkpoint: bool = True,
    ) -> None:
        self.engine = engine
        self.city = city
        self.settings = settings
        self.at_ms = int(at_ms)
        self.ticker_length = settings.live.ticker_length
        self.closed_ttl_ms = settings.live.closed_incident_ttl_hours * HOUR_MS
        self.bucket_ms = settings.live.bucket_ttl_hours * HOUR_MS
        self.tracks_kept = tracks_kept(settings, self.at_ms, now_ms)
        # a worker is online when seen within this (widened in a simulated past)
        self.online_minutes = spans.online_minutes_at(
            engine, settings.live.online_minutes, self.at_ms
        )
        # area_id: only that area and what is inside it is read (and may be asked about)
        self.scope = Scope.of(city, area_id)
        self.rows = read_rows(
            engine, city, settings, self.at_ms, self.bucket_ms, self.scope, use_checkpoint
        )
        if not self.tracks_kept:
            self.rows = rc.Rows(**{**self.rows.__dict__, "points": self.rows.points.clear()})
        self.pic = rc.picture(
            self.rows,
            self.at_ms,
            city_id=city.city_id,
            grids=city.grids,
            tz=settings.live.timezone,
            flows=flows_for(settings),
            online_minutes=self.online_minutes,
            ticker_length=self.ticker_length,
            ancestors=city.ancestors,
            window_ms=self.bucket_ms,
        )

    # ------------------------------------------------------------ the LiveState reads

    def _table(self, metric: str, day: str | None) -> Mapping[str, int]:
        if day is None or metric in LIVE_METRICS or metric.startswith(("open", "warn")):
            return self.pic.live.get(metric, {})
        return self.pic.days.get(metric, {}) if day == self.pic.day else {}

    def read_areas(
        self,
        area_ids: Sequence[str],
        day: str,
        focus: str,
        hours: Sequence[int],
        breakdowns: Mapping[str, tuple[str, Sequence[Any]]],
        ticker_n: int = 20,
    ) -> dict[str, Any]:
        """``LiveState.read_areas`` at the moment (same keys, same shapes)."""
        ids = list(area_ids)
        out: dict[str, Any] = {}
        for m in LIVE_METRICS:
            out[m] = self.counts(m, ids)
        for m in ("reports", "resolved", "closed", "video", "coverage"):
            out[m] = self.counts(m, ids, day)
        out["breakdowns"] = {
            name: self.breakdown(metric, focus, values, day)
            for name, (metric, values) in breakdowns.items()
        }
        out["hourly_reports"] = self.hourly("r", focus, hours)
        out["hourly_video"] = self.hourly("v", focus, hours)
        out["ticker"] = self.ticker(focus, ticker_n)
        out["meta"] = self.meta()
        return out

    def metric_for(self, metric: str, area_ids: Sequence[str], day: str) -> list[int]:
        return self.counts(metric, area_ids, None if metric in LIVE_METRICS else day)

    def counts(self, metric: str, area_ids: Sequence[str], day: str | None = None) -> list[int]:
        table = self._table(metric, day)
        return [int(table.get(a, 0)) for a in area_ids]

    def counts_all(self, metric: str, day: str | None = None) -> dict[str, int]:
        return dict(self._table(metric, day))

    def breakdown(
        self, metric: str, area_id: str, values: Sequence[Any], day: str | None = None
    ) -> dict[Any, int]:
        table = self._table(metric, day)
        return {v: int(table.get(f"{area_id}|{v}", 0)) for v in values}

    def hourly(self, kind: str, area_id: str, hours: Sequence[int]) -> list[int]:
        first = (self.at_ms - self.bucket_ms) // HOUR_MS
        return [
            int(self.pic.hours.get(h, {}).get(f"{kind}|{area_id}", 0)) if h >= first else 0
            for h in hours
        ]

    def ticker(self, area_id: str, n: int = 20) -> list[dict[str, Any]]:
        """The area's ticker at the moment (street, district or city; read when first
        asked: a panel shows one)."""
        level = self.city.level_of(area_id)
        if level not in ("street", "district", "city"):
            return []
        if area_id not in self.pic.tickers:
            lo, _ = window_of(self.at_ms, self.bucket_ms)
            events = read_ticker_rows(
                self.engine, self.at_ms, lo, self.scope, area_id, str(level), self.ticker_length
            )
            col = AREA_COLUMN.get(str(level))  # none for the city: all of them
            alerts = self.rows.alerts
            if col is not None:
                alerts = alerts.filter(pl.col(col) == area_id)
            got = rc.tickers_at(events, alerts, self.at_ms, self.city.city_id, self.ticker_length)
            self.pic.tickers[area_id] = got.get(area_id, [])
        return self.pic.tickers[area_id][:n]

    def patrolled(self, day: str) -> set[str]:
        return set(self.pic.patrolled) if day == self.pic.day else set()

    def warnings(self) -> list[dict[str, Any]]:
        return [orjson.loads(orjson.dumps(live_item(w), default=str)) for w in self.pic.warnings]

    def positions(self) -> dict[str, str]:
        return {w: p for w, (_ts, p) in self.pic.positions.items()}

    def positions_raw(self) -> dict[bytes, bytes]:
        return {w.encode(): p.encode() for w, (_ts, p) in self.pic.positions.items()}

    def positions_of(self, worker_ids: Sequence[str]) -> dict[str, str]:
        pos = self.pic.positions
        return {w: pos[w][1] for w in worker_ids if w in pos}

    def workers_seen_since(self, since_ms: int) -> list[str]:
        return [w for w, (ts, _p) in self.pic.positions.items() if ts >= since_ms]

    def open_incidents(self, street_id: str) -> list[dict[str, str]]:
        inc = self.pic.incidents
        rows = inc.filter((pl.col("open") == "1") & (pl.col("street") == street_id))
        fields = ("status", "cat", "sev", "grid", "lon", "lat", "ts", "overdue")
        return [dict(r) for r in rows.select(*fields, "incident_id").iter_rows(named=True)]

    def incident(self, incident_id: str) -> dict[str, str]:
        """The incident's live hash at the moment: an open one, or one closed within the
        closed-incident lifetime; else empty (as live)."""
        got = self.pic.incidents.filter(pl.col("incident_id") == incident_id)
        if got.is_empty():
            return {}
        row = got.row(0, named=True)
        if row["open"] != "1" and int(row["ts"]) < self.at_ms - self.closed_ttl_ms:
            return {}
        return {f: row[f] for f in (*INCIDENT_FIELDS, "overdue")}

    def meta(self) -> dict[str, str]:
        return dict(self.pic.meta)

    def deadletter_counts(self) -> dict[str, int]:
        return {}  # dead letters are counted live only


# ------------------------------------------------------------------ the SQL reads

# The columns the reconstruction uses (no free text: descriptions, notes, photos; no event
# ids either: an incident's events are ordered by time and stream entry).
EVENT_COLUMNS = (
    "incident_id", "step", "ts_ms", "category", "severity", "grid_id", "street_id",
    "district_id", "lon", "lat", "level", "entry_id", "duplicate_of",
)  # fmt: skip
ALERT_COLUMNS = (
    "alert_id", "camera_id", "label", "ts_ms", "grid_id", "street_id", "district_id",
    "entry_id", "rev_entry",
)  # fmt: skip
POINT_COLUMNS = (
    "worker_id", "slot", "ts_ms", "lon", "lat", "grid_id", "accuracy", "speed", "battery", "mock",
)  # fmt: skip
AREA_COLUMN = {"grid": "grid_id", "street": "street_id", "district": "district_id"}
STATE_AREA = {"grid_id": "grid", "street_id": "street", "district_id": "district"}
# the incidents row columns a state at a moment is read from (``aggregate.row_states``)
INCIDENT_COLUMNS = (
    "incident_id", "status", "last_ms", "category", "severity", "grid_id", "street_id",
    "district_id", "lon", "lat", "first_ms", "acc", "acc_tz",
)  # fmt: skip


def window_of(at_ms: int, bucket_ms: int) -> tuple[int, int]:
    """[lo, at]: the stretch of history a moment's picture reads (hour buckets and the
    local day both fall inside it)."""
    return min(at_ms - bucket_ms, at_ms - 25 * HOUR_MS), at_ms


@dataclass(frozen=True)
class Scope:
    """Where a picture is asked about: the whole city (None), or one district, street or
    grid and everything in it (its reads then only fetch that part of history; its worker
    positions are those of the workers rostered there)."""

    column: str | None  # the area column rows are filtered on
    area_id: str | None
    grids: tuple[str, ...]  # the grids inside (empty for the city)
    areas: tuple[str, ...]  # every area inside, the scope's own included

    @classmethod
    def of(cls, city: City, area_id: str | None) -> Scope:
        level = city.level_of(area_id) if area_id else None
        if area_id is None or level not in AREA_COLUMN:
            return cls(None, None, (), ())
        col = AREA_COLUMN[str(level)]
        inside = city.grids.filter(pl.col(col) == area_id)
        grids = tuple(inside["grid_id"].to_list())
        streets = tuple(inside["street_id"].unique().to_list()) if level == "district" else ()
        return cls(col, area_id, grids, (area_id, *streets, *grids))


def read_rows(
    engine: Engine,
    city: City,
    settings: Settings,
    at_ms: int,
    bucket_ms: int,
    scope: Scope | None = None,
    use_checkpoint: bool = True,
) -> rc.Rows:
    """The history rows ``reconstruct.picture`` needs for ``at`` (bounded by the window,
    plus the incidents still open at ``at`` however old: the rows of those settled by
    ``at``, every event up to ``at`` of the others), for the whole city or only inside
    ``scope``. The tickers' events are read apart, per area asked (``read_ticker_rows``).

    For the city or a district, the incidents start from the newest checkpoint that holds
    within a few hours before ``at`` (``checkpoints``; ``use_checkpoint``): only those
    touched since are read. A street or a grid reads its few incidents directly."""
    from pipelines.spine.aggregate import local_day

    sc = scope or Scope(None, None, (), ())
    lo, hi = window_of(at_ms, bucket_ms)
    va = store.video_alerts
    tp, pa, wt, wa = store.track_points, store.patrols, store.warnings, store.warning_actions
    day = local_day(at_ms, settings.live.timezone)

    def inside(table: Any) -> list[Any]:
        return [] if sc.column is None else [table.c[sc.column] == sc.area_id]

    def in_grids(column: Any) -> list[Any]:
        return [] if sc.column is None else [column.in_(sc.grids)]

    with engine.connect() as conn:
        base = None
        if use_checkpoint and sc.column in (None, "district_id"):
            key = checkpoints.key_of(city.city_id, settings.live.timezone, flows_for(settings))
            base = checkpoints.nearest(conn, key, hi)
        states = None if base is None else base.states
        if states is not None and sc.column is not None:
            states = states.filter(pl.col(STATE_AREA[sc.column]) == sc.area_id)
        since = None if base is None else base.at_ms
        events, settled_rows, later = read_incidents(
            conn, hi, lo, settings.live.timezone, sc, since, states
        )
        alerts = store.driver_frame(
            conn,
            select(*[va.c[c] for c in ALERT_COLUMNS]).where(
                va.c.ts_ms >= lo, va.c.ts_ms <= hi, *inside(va)
            ),
            va,
            ALERT_COLUMNS,
        )
        # each worker's latest track point within the lookback; inside a scope, of the
        # workers rostered there (looked up by worker: the table has no area index)
        where = [tp.c.ts_ms >= hi - POSITIONS_LOOKBACK_MS, tp.c.ts_ms <= hi]
        if sc.column is not None:
            roster = select(store.workers.c.worker_id).where(store.workers.c.grid_id.in_(sc.grids))
            where.append(tp.c.worker_id.in_(roster))
        last = (
            select(tp.c.worker_id, func.max(tp.c.ts_ms).label("m"))
            .where(*where)
            .group_by(tp.c.worker_id)
            .subquery()
        )
        # through the driver (the mock flag as 0/1: SQLite has no booleans)
        cols = [tp.c[c] for c in POINT_COLUMNS[:-1]] + [cast(tp.c.mock, Integer).label("mock")]
        on = (tp.c.worker_id == last.c.worker_id) & (tp.c.ts_ms == last.c.m)
        points = store.driver_frame(
            conn, select(*cols).join(last, on), tp, POINT_COLUMNS, {"mock": pl.Int8}
        ).with_columns(pl.col("mock").cast(pl.Boolean))
        patrols = _frame(
            conn,
            select(pa).where(pa.c.day == day, pa.c.first_ms <= hi, *in_grids(pa.c.grid_id)),
            pa,
        )
        scoped = [] if sc.column is None else [wt.c.area_id.in_(sc.areas)]
        warns = _frame(
            conn,
            select(wt).where(
                wt.c.first_seen_ms <= hi,
                or_(wt.c.closed_ms.is_(None), wt.c.closed_ms > hi),
                *scoped,
            ),
            wt,
        )
        actions = pl.concat(
            [
                _frame(conn, select(wa).where(wa.c.warning_id.in_(part)), wa)
                for part in _chunks(warns["warning_id"].to_list())
            ]
        )
    return rc.Rows(events, alerts, points, patrols, warns, actions, settled_rows, states, lo, later)


def read_incidents(
    conn: Any,
    at_ms: int,
    lo: int,
    tz: str,
    sc: Scope,
    since_ms: int | None = None,
    base: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None]:
    """The incidents a moment's picture reads, inside ``sc``: those open at the moment
    (however old) or touched in ``[lo, at]`` (``concerned_ids``) — or, after a checkpoint
    at ``since_ms`` (its states ``base``), only those touched in ``(since, at]``.

    Returns the events up to ``at`` of those still changing after it; the ``incidents``
    rows of those settled by it (the state the pipelines keep on the row is their state
    then); and, after a checkpoint, the events in ``(since, at]`` of the changing ones
    whose checkpoint state is whole (touched since ``lo``: an ``acc`` not emptied), to be
    folded onto it (``reconstruct.incidents_at``'s ``later``) instead of read again from
    their first event."""
    inc, ev = store.incidents, store.incident_events
    in_ev = [] if sc.column is None else [ev.c[sc.column] == sc.area_id]
    if since_ms is None:
        in_inc = [] if sc.column is None else [inc.c[sc.column] == sc.area_id]
        ids = concerned_ids(at_ms, lo, in_inc, in_ev)
    else:
        ids = select(ev.c.incident_id).where(ev.c.ts_ms > since_ms, ev.c.ts_ms <= at_ms, *in_ev)
    concerned = select(ids.subquery().c.incident_id)
    rows = store.driver_frame(
        conn,
        select(*[inc.c[c] for c in INCIDENT_COLUMNS]).where(inc.c.incident_id.in_(concerned)),
        inc,
        INCIDENT_COLUMNS,
    )
    done = settled(at_ms, tz)
    changing = rows.filter(~done)["incident_id"]
    later = None
    if since_ms is not None and base is not None:
        whole = base.filter(pl.col("ts").cast(pl.Int64) >= lo)["incident_id"].implode()
        folded = changing.filter(changing.is_in(whole))
        changing = changing.filter(~changing.is_in(whole))
        later = _events_of(conn, folded.to_list(), at_ms, since_ms)
    events = _events_of(conn, changing.to_list(), at_ms)
    return events, rows.filter(done), later


def _events_of(
    conn: Any, incident_ids: list[str], at_ms: int, after_ms: int | None = None
) -> pl.DataFrame:
    """The events of these incidents up to ``at`` (and after ``after_ms``), by incident."""
    ev = store.incident_events
    since = [] if after_ms is None else [ev.c.ts_ms > after_ms]
    cols = [ev.c[c] for c in EVENT_COLUMNS]
    return pl.concat(
        [
            store.driver_frame(
                conn,
                select(*cols).where(ev.c.incident_id.in_(part), ev.c.ts_ms <= at_ms, *since),
                ev,
                EVENT_COLUMNS,
            )
            for part in _chunks(incident_ids)
        ]
    )


def concerned_ids(at_ms: int, lo: int, in_inc: list[Any], in_ev: list[Any]) -> Any:
    """The ids of the incidents a moment's picture holds: open at the moment (however
    old) or touched in ``[lo, at]`` (inside the scope's area)."""
    inc, ev = store.incidents, store.incident_events
    first = func.coalesce(inc.c.first_ms, inc.c.reported_ms)
    still_open = select(inc.c.incident_id).where(
        first <= at_ms, or_(inc.c.closed_ms.is_(None), inc.c.closed_ms > at_ms), *in_inc
    )
    recent = select(ev.c.incident_id).where(ev.c.ts_ms >= lo, ev.c.ts_ms <= at_ms, *in_ev)
    return union(still_open, recent)


def settled(at_ms: int, tz: str) -> pl.Expr:
    """Incidents whose row holds their state at ``at``: no event after it, and the fold
    the pipelines keep with every change (``acc`` in this time zone, the first event's
    time). Rows of other writers or older databases are read as their events."""
    return (
        (pl.col("last_ms") <= at_ms)
        & pl.col("first_ms").is_not_null()
        & pl.col("acc").is_not_null()
        & (pl.col("acc_tz") == tz)
    ).fill_null(False)


def read_ticker_rows(
    engine: Engine, at_ms: int, lo: int, sc: Scope, area_id: str, level: str, n: int
) -> pl.DataFrame:
    """The report events the ticker of one area (street, district or the city) can show
    at ``at``: its newest ``n`` events of the incidents concerned, ties in time included
    (their stream order decides). Events in ``[lo, at]`` all qualify (their incident was
    touched in the window); older ones only those of the incidents concerned, looked at
    when the window holds fewer than ``n``."""
    ev, inc = store.incident_events, store.incidents
    cols = [ev.c[c] for c in EVENT_COLUMNS]
    here = [] if level == "city" else [ev.c[AREA_COLUMN[level]] == area_id]
    inside_inc = [] if sc.column is None else [inc.c[sc.column] == sc.area_id]
    inside_ev = [] if sc.column is None else [ev.c[sc.column] == sc.area_id]

    def newest(conn: Any, where: list[Any]) -> pl.DataFrame:
        nth = conn.execute(
            select(ev.c.ts_ms).where(*where).order_by(ev.c.ts_ms.desc()).offset(n - 1).limit(1)
        ).scalar()
        since = [] if nth is None else [ev.c.ts_ms >= nth]
        return store.driver_frame(conn, select(*cols).where(*where, *since), ev, EVENT_COLUMNS)

    with engine.connect() as conn:
        got = newest(conn, [*here, ev.c.ts_ms >= lo, ev.c.ts_ms <= at_ms])
        if got.height >= n:
            return got
        concerned = concerned_ids(at_ms, lo, inside_inc, inside_ev).subquery().c.incident_id
        older = newest(conn, [*here, ev.c.ts_ms < lo, ev.c.incident_id.in_(select(concerned))])
    return pl.concat([got, older])


def _chunks(values: list[str], n: int = 5000) -> list[list[str]]:
    """``values`` in IN lists of at most ``n`` (one empty list when there are none)."""
    return [values[i : i + n] for i in range(0, len(values), n)] or [[]]


def _frame(conn: Any, query: Any, table: Any, columns: Sequence[str] | None = None) -> pl.DataFrame:
    schema = store.frame_schema(table, columns)
    return pl.DataFrame(conn.execute(query).fetchall(), schema=schema, orient="row")
