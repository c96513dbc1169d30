"""Glue between thin callbacks and the pure queries: shared per-tick reads, stale handling.

Everything expensive is computed once per refresh tick per area and data class
(``Backend.cached``) and reused by every viewer; per-viewer work is only picking the
metric and formatting. Every read takes the viewer's granted ``auth.Decision`` for the
area: the permission is decided before any shared value is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
import redis
from dash import Input, Output, State, no_update
from sqlalchemy.exc import SQLAlchemyError

from dashboard import ids
from dashboard.auth import Decision
from dashboard.backend import Backend, current
from dashboard.i18n import current_lang, normalize, t
from dashboard.pages.panorama import queries as q
from pipelines.city.geography import City
from pipelines.spine.aggregate import unpack_position

BACKEND_ERRORS = (redis.RedisError, OSError, SQLAlchemyError)
TYPE_COLORS = {
    "full_time": "#41c7ff",
    "part_time": "#6fcf97",
    "political_legal": "#f2c94c",
    "emergency": "#eb5757",
    "safety_supervision": "#bb86fc",
}
OFFLINE = "#5a6b80"
# Track replay: one colour per worker replayed together (distinct on the dark map; the
# worker-type colours first, then more), at least ``workq.MAX_REPLAY_WORKERS`` of them.
REPLAY_COLORS = (
    "#f2c94c",
    "#41c7ff",
    "#eb5757",
    "#6fcf97",
    "#bb86fc",
    "#f2994a",
    "#ff7eb6",
    "#2dd4bf",
    "#e0e0e0",
    "#a3e635",
    "#9b51e0",
    "#56ccf2",
    "#fb7185",
    "#fde68a",
    "#22c55e",
    "#c084fc",
    "#fca5a5",
    "#38bdf8",
    "#d9a066",
    "#ffffff",
)


def lang() -> str:
    from flask import current_app

    return current_lang(current_app.config["WANGGE_SETTINGS"].dashboard.language)


def reader(b: Backend, at_ms: int | None, area_id: str | None = None) -> Any:
    """What the panels read: the live state, or the city at a past moment (the same reads,
    ``pipelines.history.HistoricState``), of ``area_id`` and what is inside it."""
    return b.live if at_ms is None else b.past(at_ms, area_id)


def _moment(b: Backend, at_ms: int | None) -> int:
    return b.now_ms() if at_ms is None else int(at_ms)


def _at(at_ms: int | None) -> tuple[object, ...]:
    """A cached value's extra key part: the moment shown (nothing for live)."""
    return () if at_ms is None else (f"at{int(at_ms)}",)


def snapshot(b: Backend, grant: Decision, at_ms: int | None = None) -> dict[str, Any] | None:
    """The granted area's panel data for this tick (shared by all viewers of its class),
    live or at the past moment ``at_ms``."""
    view = q.view_of(b.city, grant.area_id)
    if view is None:
        return None

    def compute() -> dict[str, Any]:
        now = _moment(b, at_ms)
        hours = q.hours_back(now)
        raw = reader(b, at_ms, view.area_id).read_areas(
            [view.area_id, *view.children],
            q.local_day(now, b.settings.live.timezone),
            view.area_id,
            hours,
            q.breakdown_spec(),
        )
        return q.build_snapshot(
            view, raw, now_ms=now, hours=hours, grid_counts=b.grid_counts, on_duty=b.on_duty()
        )

    snap: dict[str, Any] = b.cached(grant, "snap", compute, *_at(at_ms), shared=True)
    return snap


def all_grid_values(
    b: Backend, grant: Decision, metric: str, at_ms: int | None = None
) -> list[float]:
    """One metric for all 12,545 grids, aligned with ``/geo/grids.json`` (a city grant)."""
    assert b.city.level_of(grant.area_id) == "city"

    def compute() -> list[float]:
        grid_ids = b.city.grids["grid_id"].to_list()
        now = _moment(b, at_ms)
        day = q.local_day(now, b.settings.live.timezone)
        st = reader(b, at_ms, grant.area_id)
        if metric == "coverage":
            patrolled = st.patrolled(day)
            return [1.0 if g in patrolled else 0.0 for g in grid_ids]
        source = "warn_level" if metric == "warning" else metric
        return [float(v) for v in st.metric_for(source, grid_ids, day)]

    values: list[float] = b.cached(grant, "grids", compute, metric, *_at(at_ms), shared=True)
    return values


def markers(b: Backend, grant: Decision, at_ms: int | None = None) -> dict[str, Any]:
    """The map's points in a street (or one grid): open incidents, and the workers — each
    worker with its id and live position for viewers who may see positions, else the
    workers counted per grid at the grid's centre (no id, no position of anyone)."""
    area_id = grant.area_id
    level = b.city.level_of(area_id)
    empty: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    if level not in ("street", "grid"):
        return empty
    people = grant.may("positions")
    incidents = grant.may("incidents")

    def compute() -> dict[str, Any]:
        street = area_id if level == "street" else b.grid_street[area_id]
        roster = b.roster()
        col = "street_id" if level == "street" else "grid_id"
        mine = roster.filter(roster[col] == area_id)
        types = dict(zip(mine["worker_id"].to_list(), mine["type"].to_list(), strict=True))
        grids = dict(zip(mine["worker_id"].to_list(), mine["grid_id"].to_list(), strict=True))
        online_since = _moment(b, at_ms) - b.online_ms(at_ms)
        st = reader(b, at_ms, street)
        feats = []
        counts: dict[str, list[int]] = {}
        for w, packed in st.positions_of(list(types)).items():
            p = unpack_position(packed)
            on = p["ts"] >= online_since
            if not people:
                counts.setdefault(grids[w], [0, 0])[0 if on else 1] += 1
                continue
            color = TYPE_COLORS.get(types[w], "#41c7ff") if on else OFFLINE
            feats.append(_point(p["lon"], p["lat"], {"k": "w", "id": w, "r": 4, "c": color}))
        for grid, (n_on, n_off) in sorted(counts.items()):
            row = b.city.area(grid)
            if row is None:
                continue
            size = min(12, 4 + round(math.sqrt(n_on + n_off)))
            color = TYPE_COLORS["full_time"] if n_on else OFFLINE
            props = {"k": "c", "on": n_on, "off": n_off, "r": size, "c": color}
            feats.append(_point(float(row["lon"]), float(row["lat"]), props))
        for inc in st.open_incidents(street) if incidents else []:
            if level == "grid" and inc["grid"] != area_id:
                continue
            color = "#eb5757" if inc["overdue"] == "1" else "#f2994a"
            feats.append(
                _point(
                    float(inc["lon"]),
                    float(inc["lat"]),
                    {"k": "inc", "id": inc["incident_id"], "r": 6, "c": color},
                )
            )
        return {"type": "FeatureCollection", "features": feats}

    data: dict[str, Any] = b.cached(grant, "markers", compute, *_at(at_ms), shared=True)
    return data


def _point(lon: float, lat: float, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": props,
    }


def ago_text(age_s: int, lang: str) -> str:
    if age_s < 120:
        return t("fresh.ago_s", lang, s=age_s)
    if age_s < 7200:
        return t("fresh.ago_m", lang, m=age_s // 60)
    return t("fresh.ago_h", lang, h=age_s // 3600)


def fresh_text(
    rows: list[dict[str, Any]],
    system_open: int,
    lang: str,
    backfill: float | None = None,
    replay: float | None = None,
) -> str:
    """One line per page: each feed's newest applied event age, stale feeds marked (pure).

    Never one global "updated N s ago": a feed that stopped shows its own age and, past the
    ``[live]`` thresholds, says it is stale and why (``health.freshness_rows``, which
    counts no backfill's backlog as a stall). While a backfill runs (``backfill``: how
    far, 0..1) the line says so first, as while the backfilled past's warnings are evaluated
    (``replay``; the warnings list is empty until then)."""
    parts = []
    if backfill is not None:
        parts.append(t("fresh.backfill", lang, pct=int(backfill * 100)))
    if replay is not None:
        parts.append(t("fresh.replay", lang, pct=int(replay * 100)))
    if not rows or all(r["age_s"] is None and not r["why"] for r in rows):
        parts.append(t("fresh.nodata", lang))
    else:
        for r in rows:
            feed = t(f"feed.{r['feed']}", lang)
            ago = "—" if r["age_s"] is None else ago_text(int(r["age_s"]), lang)
            if r["why"]:
                why = t("stale.sep", lang).join(t(f"stale.{w}", lang) for w in r["why"])
                parts.append(t("fresh.feed_stale", lang, feed=feed, why=why, ago=ago))
            elif r["age_s"] is None:
                parts.append(t("fresh.feed_none", lang, feed=feed))
            else:
                parts.append(t("fresh.feed", lang, feed=feed, ago=ago))
    if system_open:
        parts.append(t("fresh.system", lang, n=system_open))
    return " · ".join(parts)


def feed_freshness(b: Backend) -> dict[str, Any]:
    """This tick's per-feed freshness and open system warnings (shared by all viewers)."""
    from pipelines.spine import health

    def compute() -> dict[str, Any]:
        now = b.now_ms()
        feeds = health.read_health(b.live.r, b.settings, now)
        prefix = b.settings.redis.prefix
        backfill = health.BACKFILL.read(b.live.r, prefix)
        th = health.thresholds_of(b.settings)
        rows = health.freshness_rows(feeds, th, now, backfill is not None)
        system = sum(1 for w in b.live.warnings() if w.get("rule") == "system")
        replay = health.REPLAY.read(b.live.r, prefix)
        return {"rows": rows, "system": system, "backfill": backfill, "replay": replay}

    got: dict[str, Any] = b.tick_input("feed_fresh", compute)
    return got


def feed_fresh_text(b: Backend, lang: str) -> str:
    f = feed_freshness(b)
    return fresh_text(f["rows"], int(f["system"]), lang, f.get("backfill"), f.get("replay"))


def scoped_fresh_text(b: Backend, lang: str, at_ms: int | None = None) -> str | None:
    """The per-feed freshness line of a page without a live map panel (grid work,
    warnings): permission for the session's own area first, then the tick's shared value
    — or, when the page shows a past moment (``at_ms``), that moment (``past_text``);
    None when nobody is signed in or the backend is unreachable (the line keeps its text)."""
    from dashboard import auth

    p = auth.principal()
    if p is None or not auth.authorize(p.scope, "aggregates").granted:
        return None
    if at_ms is not None:
        return past_text(b, at_ms, lang)
    try:
        return feed_fresh_text(b, lang)
    except BACKEND_ERRORS:
        return None


def stale_mark(last_ok_ms: int | None, tz: str, lang: str) -> Any:
    from dash import html

    when = "—"
    if last_ok_ms:
        when = datetime.fromtimestamp(last_ok_ms / 1000, ZoneInfo(tz)).strftime("%H:%M:%S")
    return html.Span(t("fresh.stale", lang, t=when), className="wg-stale", id="stale-mark")


def past_text(b: Backend, at_ms: int, lang: str) -> str:
    """The freshness line of a past view: the moment shown, and what history lacks."""
    from pipelines.history.state import tracks_kept

    when = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(b.settings.live.timezone))
    text = t("tm.showing", lang, when=when.strftime("%Y-%m-%d %H:%M"))
    if not tracks_kept(b.settings, at_ms, b.now_ms()):
        text += " · " + t("tm.no_tracks", lang, days=b.settings.privacy.track_retention_days)
    return text


def panel(
    b: Backend,
    grant: Decision,
    metric: str,
    allgrids: bool,
    lang: str,
    with_markers: bool = True,
    at_ms: int | None = None,
) -> dict[str, Any] | None:
    """What a refresh of the granted area shows, shared data shaped for ``metric``; None
    for an unknown area; at the past moment ``at_ms`` when given. Backend errors propagate
    (see :func:`panel_or_stale`)."""
    metric = metric if metric in q.METRICS else "open"
    snap = snapshot(b, grant, at_ms)
    if snap is None:
        return None
    grids_mode = allgrids and b.city.level_of(grant.area_id) == "city"
    values = all_grid_values(b, grant, metric, at_ms) if grids_mode else snap["children"][metric]
    if not snap["children"][metric] and not grids_mode:  # a grid: colour itself
        values = [snap["self"][metric]]
    hide = q.hideout(metric, values, selected=None)
    hide["thin"] = grids_mode
    if grids_mode and metric not in ("coverage", "warning"):  # many small counts
        hide["breaks"] = q.quantile_breaks(values)
    empty: dict[str, Any] = {"type": "FeatureCollection", "features": []}
    return {
        "stale": False,
        "hideout": hide,
        "url": "/geo/grids.json" if grids_mode else f"/geo/area/{grant.area_id}.json",
        "kpi": snap["kpi"],
        "trend": snap["trend"],
        "categories": snap["categories"],
        "labels": snap["labels"],
        "hotspots": snap["hotspots"].get(metric, []),
        "ticker": q.ticker_rows(snap["ticker"], b.settings.live.timezone, b.city, snap["now_ms"]),
        "markers": markers(b, grant, at_ms) if with_markers else empty,
        "fresh": feed_fresh_text(b, lang) if at_ms is None else past_text(b, at_ms, lang),
        "now_ms": snap["now_ms"],
    }


def panel_or_stale(
    b: Backend,
    grant: Decision,
    metric: str,
    allgrids: bool,
    lang: str,
    last_ok: int | None,
    with_markers: bool = True,
    at_ms: int | None = None,
) -> dict[str, Any] | None:
    """What one viewer's refresh returns, or a stale mark when the backend is down."""
    try:
        return panel(b, grant, metric, allgrids, lang, with_markers, at_ms)
    except BACKEND_ERRORS:
        return {"stale": True, "stale_mark": stale_mark(last_ok, b.settings.live.timezone, lang)}


def drill_target(city: City, area_id: object, click: object) -> str | None:
    """The area a map click leads to: a known area other than the current one (whether the
    viewer may open it is the caller's decision)."""
    props = click.get("properties") if isinstance(click, dict) else None
    target = props.get("id") if isinstance(props, dict) else None
    if not isinstance(target, str) or not target or target == area_id:
        return None
    return target if city.area(target) is not None else None


def freshness_on(tick_id: str, at_id: str | None = None) -> Callable[..., Any]:
    """Register the header's per-feed freshness line (reports, positions, video; stale
    feeds marked) on a page's own tick, as the panorama and the wall show it; returns the
    callback. Pages call this from their callbacks module (``fresh = freshness_on(...)``).
    ``at_id``: the page's time-machine moment: a past one is said instead (as the
    panorama does), at once when it is picked."""
    from dashboard.components import timemachine as tm

    moments = [] if at_id is None else [Input(at_id, "data")]

    @dash.callback(
        Output(ids.FRESH, "children", allow_duplicate=True),
        Input(tick_id, "n_intervals"),
        *moments,
        State(ids.LANG, "data"),
        prevent_initial_call="initial_duplicate",
    )
    def fresh(_n: int, *values: Any) -> Any:
        *at, lang = values
        b = current()
        text = scoped_fresh_text(b, lang_of(lang), tm.moment_of(b, at[0]) if at else None)
        return no_update if text is None else text

    return fresh


def lang_of(value: object) -> str:
    """The language a component value asks for (anything odd: the default)."""
    return normalize(value if isinstance(value, str) else None)
