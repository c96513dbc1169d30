"""Grid work (网格工作) reads, shaped for the page; the pure parts are unit-tested.

Privacy: only roles in ``auth.INDIVIDUALS`` get names, ids and tracks of workers;
everyone else gets counts and coverage (clusters, never individual markers). Every
function that returns people takes ``people: bool`` and strips them when it is False.
Expensive work is done once per refresh tick and shared by every viewer
(``Backend.tick_input`` for the parsed positions, ``Backend.cached`` per area and data
class, after the viewer's permission was decided).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import Engine, and_, func, or_, select

from dashboard import declutter
from dashboard.backend import Backend
from dashboard.i18n import t
from dashboard.live import OFFLINE, REPLAY_COLORS, TYPE_COLORS  # one palette per use
from dashboard.pages.panorama import queries as q
from pipelines.gridwork import tracks as work
from pipelines.spine import store

WINDOWS_H = (1, 2, 4, 8, 24)  # replay windows offered, hours back from now
DAY = "day"  # the window choice "a chosen day, from hour to hour"
MAX_WINDOW_H = 24  # the longest chosen window
HOUR_MS = 3_600_000
MAX_REPLAY_WORKERS = 20  # a grid replay shows at most this many workers (one colour each)
REPORTS_SCHEMA = {
    "worker_id": pl.String,
    "ts_ms": pl.Int64,
    "lon": pl.Float64,
    "lat": pl.Float64,
    "category": pl.String,
    "incident_id": pl.String,
}
MAX_LIST = 200  # unpatrolled grids / activity rows sent per refresh


def day_start_ms(now_ms: int, tz: str) -> int:
    zone = ZoneInfo(tz)
    d = datetime.fromtimestamp(now_ms / 1000, zone)
    return int(d.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


ZOOM = {"city": 9, "district": 11, "street": 13, "grid": 15}  # the map's opening zoom


def cluster_level(level: str, people: bool) -> str | None:
    """What the map groups positions by: districts at city level, streets at district
    level, grids at street level for counts-only roles, nothing (individual markers) for
    roles that see people at street and grid level."""
    if level == "city":
        return "district_id"
    if level == "district":
        return "street_id"
    if not people:
        return "grid_id"
    return None


def cluster_features(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [c["lon"], c["lat"]]},
            "properties": {"k": "c", "on": c["on"], "off": c["off"]},
        }
        for c in rows
    ]


MOCK_GPS = f"{t('work.mock_gps', 'zh-CN')} {t('work.mock_gps', 'en')}"  # both: no lang here


def worker_features(live: pl.DataFrame) -> list[dict[str, Any]]:
    """Individual markers (only ever built for roles that may see people)."""
    out = []
    mock = live["mock"] if "mock" in live.columns else pl.repeat(False, live.height, eager=True)
    for (w, lon, lat, typ, name, on), fake in zip(
        live.select("worker_id", "lon", "lat", "type", "name", "online").iter_rows(),
        mock.fill_null(False),
        strict=True,
    ):
        out.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {
                    "k": "w",
                    "id": w,
                    # a phone reporting a mock (simulated) location is marked, not trusted
                    "n": f"{name or w} ⚠ {MOCK_GPS}" if fake else f"{name or w}",
                    "c": TYPE_COLORS.get(typ or "", "#41c7ff") if on else OFFLINE,
                    "r": 5,
                },
            }
        )
    return out


def area_filter(level: str, area_id: str, col_prefix: str = "") -> pl.Expr:
    """Rows of ``area_id`` by the column of its level (grid_id, street_id, district_id)."""
    if level == "city":
        return pl.lit(True)
    return pl.col(f"{col_prefix}{level}_id") == area_id


def snapshot(
    *,
    level: str,
    area_id: str,
    children: list[str],
    grids: pl.DataFrame,
    roster: pl.DataFrame,
    live: pl.DataFrame,
    patrolled: set[str],
    now_ms: int,
    online_ms: int,
    people: bool,
    centres: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Everything a refresh shows except the SQL-backed tables (pure).

    ``grids``: the city's grids (grid_id, street_id, district_id); ``roster``: workers
    with their own grid's chain; ``live``: :func:`pipelines.gridwork.tracks.live_workers`;
    ``centres``: area → (lon, lat) where a cluster is drawn (its members' mean position
    when missing — which, for a cluster of one, is that worker's position).
    """
    here = grids.filter(area_filter(level, area_id))
    roster_here = roster.filter(area_filter(level, area_id))
    counts = work.status_counts(roster_here, live, now_ms, online_ms)
    child_col = {"city": "district_id", "district": "street_id", "street": "grid_id"}.get(level)
    if child_col:
        cov = work.coverage(here, child_col, patrolled)
        by = {r["area_id"]: r for r in cov.iter_rows(named=True)}
        values = [float(by[c]["share"]) if c in by else 0.0 for c in children]
        rows = [
            {
                "area_id": c,
                "grids": int(by[c]["grids"]) if c in by else 0,
                "patrolled": int(by[c]["patrolled"]) if c in by else 0,
            }
            for c in children
        ]
    else:  # a grid colours itself
        values = [1.0 if area_id in patrolled else 0.0]
        rows = []
    on_duty = roster_here.group_by(child_col).len() if child_col else None
    online = (
        live.filter(pl.col("online")).join(roster_here.select("worker_id", child_col), "worker_id")
        if child_col
        else None
    )
    duty = dict(on_duty.iter_rows()) if on_duty is not None else {}
    onl = dict(online.group_by(child_col).len().iter_rows()) if online is not None else {}
    for r in rows:
        r["on_duty"] = int(duty.get(r["area_id"], 0))
        r["online"] = int(onl.get(r["area_id"], 0))
    gaps = work.unpatrolled(here, patrolled)
    n_patrolled = here.height - len(gaps)
    where = live.filter(area_filter(level, area_id))
    group = cluster_level(level, people)
    if group:
        groups = work.clusters(where, group)
        at = centres or {}
        for c in groups:  # at the area's centre, never a member's spot
            c["lon"], c["lat"] = at.get(c["area"], (c["lon"], c["lat"]))
        # small central areas: their circles are moved apart so none covers another
        sizes = [declutter.cluster_size(c["on"] + c["off"]) for c in groups]
        placed = declutter.spread([(c["lon"], c["lat"]) for c in groups], sizes, ZOOM[level])
        for c, (lon, lat) in zip(groups, placed, strict=True):
            c["lon"], c["lat"] = round(lon, 5), round(lat, 5)
        feats = cluster_features(groups)
    else:
        feats = worker_features(where)
    return {
        "kpi": {
            **counts,
            "grids": here.height,
            "patrolled": n_patrolled,
            "coverage": n_patrolled / here.height if here.height else None,
            "unpatrolled": len(gaps),
        },
        "values": values,
        "children": rows,
        "gaps": gaps[:MAX_LIST],
        "markers": {"type": "FeatureCollection", "features": feats},
        "now_ms": now_ms,
    }


# ------------------------------------------------------------------ SQL-backed reads


def _in_area(table: Any, level: str, area_id: str) -> Any:
    if level == "city":
        return True
    return table.c[f"{level}_id"] == area_id


def work_logs(
    engine: Engine,
    level: str,
    area_id: str,
    since_ms: int,
    limit: int = 40,
    until_ms: int | None = None,
) -> pl.DataFrame:
    """工作纪实: the latest steps taken by workers in the area (reports and handling),
    up to ``until_ms`` when given (a past view)."""
    ev = store.incident_events
    cols = (
        ev.c.ts_ms,
        ev.c.step,
        ev.c.category,
        ev.c.grid_id,
        ev.c.reporter_id,
        ev.c.handler_id,
        ev.c.incident_id,
    )
    query = (
        select(*cols)
        .where(
            ev.c.ts_ms >= since_ms,
            ev.c.ts_ms <= (until_ms if until_ms is not None else 2**62),
            _in_area(ev, level, area_id),
            or_(
                and_(ev.c.step == "reported", ev.c.source == "worker"),
                and_(ev.c.step != "reported", ev.c.handler_id.is_not(None)),
            ),
        )
        .order_by(ev.c.ts_ms.desc())
        .limit(limit)
    )
    return store.read_frame(engine, query)


def activity(
    engine: Engine,
    roster_here: pl.DataFrame,
    live: pl.DataFrame,
    since_ms: int,
    now_ms: int,
) -> pl.DataFrame:
    """Per worker today: reports made, incidents handled, distance walked, time inside own
    grid, last seen. ``roster_here``: the area's workers (worker_id, name, type, grid_id,
    phone_masked)."""
    ids = roster_here["worker_id"].to_list()[:2000]
    tp, ev = store.track_points, store.incident_events
    pts = store.read_frame(
        engine,
        select(tp.c.worker_id, tp.c.ts_ms, tp.c.lon, tp.c.lat, tp.c.grid_id).where(
            tp.c.worker_id.in_(ids), tp.c.ts_ms >= since_ms, tp.c.ts_ms <= now_ms
        ),
    )
    if pts.is_empty():
        pts = pl.DataFrame(schema=work.POINTS_SCHEMA)
    stats = work.track_stats(pts, roster_here.select("worker_id", "grid_id"))
    rep = store.read_frame(
        engine,
        select(ev.c.reporter_id.label("worker_id"), func.count().label("reports"))
        .where(ev.c.reporter_id.in_(ids), ev.c.step == "reported", ev.c.ts_ms >= since_ms)
        .group_by(ev.c.reporter_id),
    )
    han = store.read_frame(
        engine,
        select(
            ev.c.handler_id.label("worker_id"),
            func.count(func.distinct(ev.c.incident_id)).label("handled"),
        )
        .where(ev.c.handler_id.in_(ids), ev.c.ts_ms >= since_ms)
        .group_by(ev.c.handler_id),
    )
    out = roster_here.select("worker_id", "name", "type", "grid_id", "phone_masked")
    for frame, cols in (
        (stats, {"distance_m": pl.Float64, "own_grid_ms": pl.Int64}),
        (rep, {"reports": pl.Int64}),
        (han, {"handled": pl.Int64}),
    ):
        f = frame if not frame.is_empty() else pl.DataFrame(schema={"worker_id": pl.String, **cols})
        f = f.select("worker_id", *[pl.col(c).cast(t) for c, t in cols.items()])
        out = out.join(f, "worker_id", "left")
    last = live.select("worker_id", pl.col("ts_ms").alias("last_seen_ms"), "online")
    out = out.join(last, "worker_id", "left").with_columns(
        pl.col("reports").fill_null(0),
        pl.col("handled").fill_null(0),
        pl.col("distance_m").fill_null(0.0),
        pl.col("own_grid_ms").fill_null(0),
        pl.col("online").fill_null(False),
    )
    return out.sort(["online", "reports", "distance_m"], descending=True)


def tracks(
    engine: Engine, worker_ids: Sequence[str], since_ms: int, until_ms: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Track points (worker_id, ts_ms, lon, lat, grid_id; by worker, time) and the reports
    the workers made (worker_id, ts_ms, lon, lat, category, incident_id) in a window."""
    tp, ev = store.track_points, store.incident_events
    ids = list(worker_ids)
    pts = store.read_frame(
        engine,
        select(tp.c.worker_id, tp.c.ts_ms, tp.c.lon, tp.c.lat, tp.c.grid_id)
        .where(tp.c.worker_id.in_(ids), tp.c.ts_ms >= since_ms, tp.c.ts_ms <= until_ms)
        .order_by(tp.c.worker_id, tp.c.ts_ms),
    )
    reps = store.read_frame(
        engine,
        select(
            ev.c.reporter_id.label("worker_id"),
            ev.c.ts_ms,
            ev.c.lon,
            ev.c.lat,
            ev.c.category,
            ev.c.incident_id,
        ).where(
            ev.c.reporter_id.in_(ids),
            ev.c.step == "reported",
            ev.c.ts_ms >= since_ms,
            ev.c.ts_ms <= until_ms,
        ),
    )
    if pts.is_empty():
        pts = pl.DataFrame(schema=work.POINTS_SCHEMA)
    if reps.is_empty():
        reps = pl.DataFrame(schema=REPORTS_SCHEMA)
    return pts, reps


def worker_grid(roster: pl.DataFrame, worker_id: object) -> str | None:
    """A worker's own grid from the roster (None for an unknown or malformed id)."""
    if not isinstance(worker_id, str) or not worker_id:
        return None
    got = roster.filter(pl.col("worker_id") == worker_id)["grid_id"]
    return str(got[0]) if got.len() and got[0] is not None else None


def workers_in_grid(engine: Engine, grid_id: str, since_ms: int, until_ms: int) -> list[str]:
    """Workers whose track passed through a grid in a window, the longest there first."""
    if not grid_id:
        return []
    tp = store.track_points
    n = func.count().label("n")
    query = (
        select(tp.c.worker_id, n)
        .where(tp.c.grid_id == grid_id, tp.c.ts_ms >= since_ms, tp.c.ts_ms <= until_ms)
        .group_by(tp.c.worker_id)
        .order_by(n.desc(), tp.c.worker_id)
    )
    ids: list[str] = store.read_frame(engine, query)["worker_id"].to_list()
    return ids


def grid_workers(
    engine: Engine,
    roster: pl.DataFrame,
    grid_id: str,
    window: Window,
    may_see: Callable[[str], bool],
) -> tuple[list[str], int]:
    """Whom a grid replay shows: workers whose track passed through the grid in the window
    and whose own grid the viewer may see (``may_see(grid_id)``), the longest there first,
    at most ``MAX_REPLAY_WORKERS``; and how many such workers there were."""
    passed = workers_in_grid(engine, grid_id, window.since_ms, window.until_ms)
    mine = roster.filter(pl.col("worker_id").is_in(passed))
    own = dict(zip(mine["worker_id"].to_list(), mine["grid_id"].to_list(), strict=True))
    seen = [w for w in passed if own.get(w) and may_see(own[w])]
    return seen[:MAX_REPLAY_WORKERS], len(seen)


# ------------------------------------------------------------------ replay windows (pure)


@dataclass(frozen=True)
class Window:
    """A validated replay window: ``since_ms`` ≤ t ≤ ``until_ms``; ``args`` rebuild it (the
    export link's query string, the audit detail)."""

    since_ms: int
    until_ms: int
    args: dict[str, str]

    @property
    def query(self) -> str:
        return urlencode(self.args)

    def detail(self) -> dict[str, Any]:
        return {**self.args, "since_ms": self.since_ms, "until_ms": self.until_ms}


class WindowError(ValueError):
    """A window the server refuses; ``key`` is its message in the catalog."""

    def __init__(self, key: str, **kw: Any) -> None:
        super().__init__(key)
        self.key = key
        self.kw = kw


def _hour(value: object) -> int | None:
    try:
        h = int(str(value))
    except ValueError:
        return None
    return h if 0 <= h <= 24 else None


def replay_window(
    choice: object,
    day: object = None,
    from_h: object = None,
    to_h: object = None,
    *,
    now_ms: int,
    tz: str,
    retention_days: int,
    max_hours: int = MAX_WINDOW_H,
) -> Window:
    """The window a replay (or its export) asks for, checked on the server.

    ``choice``: hours back from now (one of ``WINDOWS_H``; anything else means the default),
    or ``DAY``: the local ``day`` (YYYY-MM-DD) from hour ``from_h`` to ``to_h`` (0–24). A day
    window must run forwards, last at most ``max_hours``, start in the past and within the
    track retention; its end is cut at ``now``. Raises :class:`WindowError`.
    """
    if choice != DAY:
        try:
            h = int(str(choice))
        except ValueError:
            h = WINDOWS_H[1]
        h = h if h in WINDOWS_H else WINDOWS_H[1]
        return Window(now_ms - h * HOUR_MS, now_ms, {"hours": str(h)})
    try:
        d = date.fromisoformat(str(day)[:10])
    except ValueError:
        raise WindowError("work.replay.err.date") from None
    a, b = _hour(from_h), _hour(to_h)
    if a is None or b is None:
        raise WindowError("work.replay.err.hours")
    if a >= b:
        raise WindowError("work.replay.err.order")
    midnight = datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz))
    since = int((midnight + timedelta(hours=a)).timestamp() * 1000)
    until = int((midnight + timedelta(hours=b)).timestamp() * 1000)
    if until - since > max_hours * HOUR_MS:
        raise WindowError("work.replay.err.long", h=max_hours)
    if since >= now_ms:
        raise WindowError("work.replay.err.future")
    if since < now_ms - retention_days * work.DAY_MS:
        raise WindowError("work.replay.err.retention", days=retention_days)
    args = {"day": d.isoformat(), "from": str(a), "to": str(b)}
    return Window(since, min(until - 1, now_ms), args)  # until: inclusive


def replay(
    engine: Engine, roster: pl.DataFrame, worker_ids: Sequence[str], window: Window
) -> dict[str, Any]:
    """The replay of these workers (in this order) in the window, for the browser:
    :func:`pipelines.gridwork.tracks.replay_payload` with each worker's name (``n``) and
    colour (``c``),
    and the distance they walked (``km``, on the full tracks)."""
    pts, reps = tracks(engine, worker_ids, window.since_ms, window.until_ms)
    data = work.replay_payload(pts, reps, worker_ids)
    mine = roster.filter(pl.col("worker_id").is_in(list(worker_ids)))
    names = dict(zip(mine["worker_id"].to_list(), mine["name"].to_list(), strict=True))
    for i, w in enumerate(data["workers"]):
        w["n"] = names.get(w["id"]) or w["id"]
        w["c"] = REPLAY_COLORS[i % len(REPLAY_COLORS)]
    stats = work.track_stats(pts, mine.select("worker_id", "grid_id"))
    data["km"] = float(stats["distance_m"].sum()) / 1000 if stats.height else 0.0
    return data


def live_frame(b: Backend, at_ms: int | None = None, area_id: str | None = None) -> pl.DataFrame:
    """Every worker's latest position with status and roster fields (once per tick per
    process: 30,000 positions parse in a few milliseconds); at a past moment ``at_ms``,
    those of the workers of ``area_id`` then (``pipelines.history``)."""
    if at_ms is not None:
        past = b.past(at_ms, area_id)
        return work.live_workers(
            work.positions_frame(past.positions_raw()),
            b.roster(),
            b.city.grids,
            at_ms,
            b.online_ms(at_ms),
        )

    def compute() -> pl.DataFrame:
        now = b.now_ms()
        pos = work.positions_frame(b.live.positions_raw())
        return work.live_workers(
            pos,
            b.roster(),
            b.city.grids,
            now,
            b.online_ms(),
        )

    frame: pl.DataFrame = b.tick_input("work:live", compute)
    return frame


def worker_options(
    roster: pl.DataFrame,
    live: pl.DataFrame,
    names: dict[str, str],
    lang: str,
    limit: int = 3000,
) -> list[dict[str, Any]]:
    """The track-replay picker's workers: those online first (● marked), then the offline
    ones (○, said in words), each group by own grid and id (pure)."""
    online = set(live.filter(pl.col("online"))["worker_id"].to_list()) if live.height else set()
    rows = sorted(
        roster.select("worker_id", "name", "grid_id").iter_rows(),
        key=lambda r: (r[0] not in online, str(r[2]), str(r[0])),
    )[:limit]
    out = []
    for w, n, g in rows:
        where = names.get(g, g)
        if w in online:
            label = f"● {n} · {where} · {t('work.replay.online', lang)}"
        else:
            label = f"○ {n} · {where} · {t('work.replay.offline', lang)}"
        out.append({"label": label, "value": w})
    return out


def local_date(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def local_time(ms: int | None, tz: str, fmt: str = "%H:%M") -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime(fmt)


__all__ = ["WINDOWS_H", "q"]
