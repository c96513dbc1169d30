"""Grid-work callbacks: the live refresh (one shared computation per area and tick, only
changed parts sent), drill-down, the replay pickers and the track load (audited); playback
runs in the browser (clientside)."""

from __future__ import annotations

import hashlib
from typing import Any

import dash
import orjson
from dash import (
    ALL,
    ClientsideFunction,
    Input,
    Output,
    State,
    clientside_callback,
    html,
    no_update,
)

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components import timemachine as tm
from dashboard.components.panels import (
    denied_panel,
)
from dashboard.i18n import t
from dashboard.pages.panorama.queries import hideout, local_day
from dashboard.pages.work import queries as WQ
from dashboard.pages.work.components import (
    EMPTY_FC,
    HIDDEN,
    activity_table,
    children_table,
    gap_list,
    kpi_tiles,
    legend,
    log_list,
    replay_summary,
    report_features,
)
from dashboard.push.browser import follow
from dashboard.responses import shared_response


@dash.callback(
    Output(ids.WK_GEO, "hideout"),
    Output(ids.WK_LEGEND, "children"),
    Output(ids.WK_KPIS, "children"),
    Output(ids.WK_MARKERS, "data"),
    Output(ids.WK_GAPS, "children"),
    Output(ids.WK_CHILDREN, "children"),
    Output(ids.WK_LOGS, "children"),
    Output(ids.WK_STALE, "children"),
    Output(ids.WK_LAST, "data"),
    Output(ids.WK_SENT, "data"),
    Input(ids.WK_TICK, "n_intervals"),
    State(ids.WK_AREA, "data"),
    State(ids.WK_LAST, "data"),
    State(ids.WK_SENT, "data"),
    State(ids.LANG, "data"),
    State(ids.tm("work", "at"), "data"),  # play bumps the tick when it moves on
)
def refresh(
    _n: int, area_id: str, last_ok: int | None, sent: Any, lang: str, at_value: Any = None
) -> tuple[Any, ...]:
    """Thin: the viewer's permission first, then this tick's shared panel for what the
    data is (area, data class: people or counts only, language); parts the viewer already
    has (same digest) are not sent again. A viewer that has nothing yet (a first load, or
    the push server asking for a stream's tick) gets the whole answer, serialised once
    per tick for all of them."""
    b = current()
    lang = L.lang_of(lang)
    grant = auth.authorize(area_id, "aggregates")
    if not grant.granted:  # the scope comes from the session, not the store; never cached
        back = denied_panel(lang, auth.home_href(b.city, "/work/"))
        return (no_update,) * 2 + ([back],) + (no_update,) * 7
    at_ms = tm.moment_of(b, at_value)
    if sent is None and at_ms is None:
        try:
            # this tick's finished answer, once permitted (not warmed: its parts are)
            return shared_response(b, grant, "work", lambda: whole(b, grant, lang), lang)
        except L.BACKEND_ERRORS:  # nothing cached: the next refresh tries again
            mark = L.stale_mark(last_ok, b.settings.live.timezone, lang)
            return (*(no_update,) * 7, mark, no_update, no_update)
    out, digests = cached_outputs(b, grant, lang, last_ok, at_ms)
    return (*only_changed(out, digests, sent), digests or no_update)


def whole(b: Backend, grant: auth.Decision, lang: str) -> tuple[Any, ...]:
    """Every output of the live refresh for a granted area, the parts' digests last (the
    parts of this tick, as the pollers get them)."""
    out, digests = shared_parts(b, grant, lang)
    return (*out, digests)


PARTS = ("hideout", "legend", "kpis", "markers", "gaps", "bottom", "logs")


def only_changed(out: tuple[Any, ...], digests: dict[str, str], sent: Any) -> tuple[Any, ...]:
    """``no_update`` for every part whose digest equals the one the viewer already has."""
    had = sent if isinstance(sent, dict) else {}
    parts = list(out)
    for i, name in enumerate(PARTS):
        if digests.get(name) is not None and had.get(name) == digests[name]:
            parts[i] = no_update
    return tuple(parts)


def shared_parts(
    b: Backend, grant: auth.Decision, lang: str, at_ms: int | None = None
) -> tuple[tuple[Any, ...], dict[str, str]]:
    """This tick's outputs and their digests for a granted area (computed once, shared)."""
    past = () if at_ms is None else (f"at{at_ms}",)
    got: tuple[tuple[Any, ...], dict[str, str]] = b.cached(
        grant, "work:parts", lambda: outputs(b, grant, lang, at_ms), lang, *past, warm=not past
    )
    return got


def cached_outputs(
    b: Backend, grant: auth.Decision, lang: str, last_ok: int | None, at_ms: int | None = None
) -> tuple[tuple[Any, ...], dict[str, str]]:
    try:
        return shared_parts(b, grant, lang, at_ms)
    except L.BACKEND_ERRORS:
        stale = L.stale_mark(last_ok, b.settings.live.timezone, lang)
        return (*(no_update,) * 7, stale, no_update), {}


def panel(b: Backend, grant: auth.Decision, at_ms: int | None = None) -> dict[str, Any]:
    """The granted area's numbers for this tick (shared by all viewers of its data class
    through Redis): individual markers only for a class that may see positions. At a
    past moment ``at_ms``: as they were then."""
    area_id = grant.area_id
    level = b.city.level_of(area_id)
    assert level is not None
    people = grant.may("positions")

    def compute() -> dict[str, Any]:
        now = b.now_ms() if at_ms is None else at_ms
        tz = b.settings.live.timezone
        snap = WQ.snapshot(
            level=level,
            area_id=area_id,
            children=b.city.children(area_id),
            grids=b.city.grids,
            roster=b.roster(),
            live=WQ.live_frame(b, at_ms, area_id),
            patrolled=L.reader(b, at_ms, area_id).patrolled(local_day(now, tz)),
            now_ms=now,
            online_ms=b.online_ms(at_ms),
            people=people,
            centres=b.area_centres,
        )
        logs = WQ.work_logs(b.engine, level, area_id, WQ.day_start_ms(now, tz), until_ms=at_ms)
        snap["logs"] = logs.to_dicts()
        return snap

    past = () if at_ms is None else (f"at{at_ms}",)
    data: dict[str, Any] = b.cached(grant, "work:panel", compute, *past, shared=True)
    return data


def activity_rows(
    b: Backend, grant: auth.Decision, at_ms: int | None = None
) -> list[dict[str, Any]]:
    """Per-worker activity of a street or grid (viewers who may see names), for a minute."""
    area_id = grant.area_id
    level = b.city.level_of(area_id)
    assert level in ("street", "grid") and grant.may("names")

    def compute() -> list[dict[str, Any]]:
        now = b.now_ms() if at_ms is None else at_ms
        roster = b.roster().filter(WQ.area_filter(level, area_id))
        since = WQ.day_start_ms(now, b.settings.live.timezone)
        live = WQ.live_frame(b, at_ms, area_id)
        rows: list[dict[str, Any]] = (
            WQ.activity(b.engine, roster, live, since, now).head(WQ.MAX_LIST).to_dicts()
        )
        return rows

    past = () if at_ms is None else (f"at{at_ms}",)
    rows: list[dict[str, Any]] = b.cached(
        grant, "work:act", compute, *past, shared=True, period_s=60
    )
    return rows


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=8).hexdigest()


def outputs(
    b: Backend, grant: auth.Decision, lang: str, at_ms: int | None = None
) -> tuple[tuple[Any, ...], dict[str, str]]:
    """The outputs for a granted area (pure of the session: shared by its data class),
    live or at the past moment ``at_ms``."""
    area_id = grant.area_id
    snap = panel(b, grant, at_ms)
    people = grant.may("names")
    level = b.city.level_of(area_id) or "city"
    hide = hideout("coverage", snap["values"])
    tz = b.settings.live.timezone
    names = _names(b)
    if people and level in ("street", "grid"):
        rows = activity_rows(b, grant, at_ms)
        bottom = activity_table(rows, names, lang, tz)
    else:
        rows = snap["children"]
        bottom = children_table(snap["children"], names, lang, level)
    digests = {
        "hideout": _digest(hide),
        "legend": _digest(hide),
        "kpis": _digest(snap["kpi"]),
        "markers": _digest(snap["markers"]),
        "gaps": _digest([snap["gaps"], snap["kpi"]["unpatrolled"]]),
        "bottom": _digest(rows),
        "logs": _digest(snap["logs"]),
    }
    return (
        hide,
        legend(hide, lang, people, level),
        kpi_tiles(snap["kpi"], lang),
        snap["markers"],
        gap_list(snap["gaps"], snap["kpi"]["unpatrolled"], names, lang),
        bottom,
        log_list(snap["logs"], names, lang, tz, people, b),
        "" if at_ms is None else L.past_text(b, at_ms, lang),
        snap["now_ms"],
    ), digests


def _names(b: Backend) -> dict[str, str]:
    return b.area_names


@dash.callback(
    Output(ids.URL, "pathname", allow_duplicate=True),
    Input(ids.WK_GEO, "clickData"),
    State(ids.WK_AREA, "data"),
    prevent_initial_call=True,
)
def drill_down(click: dict[str, Any] | None, area_id: str) -> Any:
    """A click on a child area opens its grid work (when in scope)."""
    city = current().city
    target = L.drill_target(city, area_id, click)
    if target is None or not auth.authorize(target, "aggregates").granted:
        return no_update
    return f"/work/{target}"


@dash.callback(
    Output(ids.TR_WORKER, "options"),
    Input(ids.TR_GRID, "value"),
    Input(ids.TR_WINDOW, "value"),
    Input(ids.TR_DAY, "date"),
    Input(ids.TR_FROM, "value"),
    Input(ids.TR_TO, "value"),
    State(ids.WK_AREA, "data"),
    prevent_initial_call=True,
)
def filter_workers(
    grid_id: str | None, choice: Any, day: Any, from_h: Any, to_h: Any, area_id: str
) -> Any:
    """Workers of a grid: assigned to it, or whose track passed through it in the window
    (today when the window is not valid)."""
    b = current()
    area = auth.authorize(area_id, "names")
    if not area.granted:
        return []
    level = b.city.level_of(area.area_id) or "city"
    roster = b.roster().filter(WQ.area_filter(level, area.area_id))
    grid = auth.authorize(grid_id, "names") if grid_id else None
    if grid is not None and grid.granted:
        grid_id = grid.area_id
        now = b.now_ms()
        try:
            win = _window(b, choice, day, from_h, to_h)
            since, until = win.since_ms, win.until_ms
        except WQ.WindowError:
            since, until = WQ.day_start_ms(now, b.settings.live.timezone), now
        passed = WQ.workers_in_grid(b.engine, grid_id, since, until)
        roster = roster.filter((roster["grid_id"] == grid_id) | roster["worker_id"].is_in(passed))
    return WQ.worker_options(roster, WQ.live_frame(b), _names(b), L.lang())  # online first


# A new grid clears the worker: the grid's workers replay together (pick one to focus).
clientside_callback(
    "function (grid) { return null; }",
    Output(ids.TR_WORKER, "value"),
    Input(ids.TR_GRID, "value"),
    prevent_initial_call=True,
)


def _window(b: Backend, choice: Any, day: Any, from_h: Any, to_h: Any) -> WQ.Window:
    return WQ.replay_window(
        choice,
        day,
        from_h,
        to_h,
        now_ms=b.now_ms(),
        tz=b.settings.live.timezone,
        retention_days=b.settings.privacy.track_retention_days,
    )


@dash.callback(
    Output(ids.TR_DATA, "data"),
    Output(ids.TR_REPORTS, "data"),
    Output(ids.TR_OUTLINE, "data"),
    Output(ids.TR_OUTLINE, "url"),
    Output(ids.TR_SLIDER, "max"),
    Output(ids.TR_SLIDER, "value"),
    Output(ids.TR_SUMMARY, "children"),
    Output(ids.TR_EXPORT, "href"),
    Output(ids.TR_EXPORT, "style"),
    Input(ids.TR_WORKER, "value"),
    Input(ids.TR_GRID, "value"),
    Input(ids.TR_WINDOW, "value"),
    Input(ids.TR_DAY, "date"),
    Input(ids.TR_FROM, "value"),
    Input(ids.TR_TO, "value"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def load_track(
    worker_id: str | None,
    grid_id: str | None,
    choice: Any,
    day: Any,
    from_h: Any,
    to_h: Any,
    lang: str,
) -> tuple[Any, ...]:
    """Thin: one worker's track (the worker's own grid in scope), or, with a grid picked and
    no worker, every in-scope worker whose track passed through the grid (at most
    ``MAX_REPLAY_WORKERS``, longest there first), for a validated window. Audited."""
    b = current()
    lang = L.lang_of(lang)
    if not auth.may_see("tracks"):
        return _no_replay(t("work.replay.hint", lang))
    try:
        win = _window(b, choice, day, from_h, to_h)
    except WQ.WindowError as exc:
        return _no_replay(t(exc.key, lang, **exc.kw), error=True)
    roster = b.roster()
    if worker_id:  # the worker's own grid decides
        wid = auth.clean_id(worker_id)
        if wid is None:
            auth.refused("tracks", worker_id, "malformed id")
            return _no_replay(t("work.replay.hint", lang))
        grid = WQ.worker_grid(roster, wid)
        if not auth.authorize(grid, "tracks", target=wid).granted:
            return _no_replay(t("work.replay.hint", lang))
        shown, total, outline = [wid], 1, None
        href = f"/export/track/{wid}.csv?{win.query}"
        _audit_view(wid, win.detail())
    elif grid_id and auth.authorize(grid_id, "tracks").granted:
        shown, total = WQ.grid_workers(
            b.engine, roster, grid_id, win, lambda g: auth.allowed(b.city, g)
        )
        outline = grid_id
        href = f"/export/track/grid/{grid_id}.csv?{win.query}"
        _audit_view(grid_id, {"grid": grid_id, "workers": shown, "count": total, **win.detail()})
    else:
        return _no_replay(t("work.replay.hint", lang))
    data = WQ.replay(b.engine, roster, shown, win) if shown else {"workers": []}
    url = f"/geo/area/{outline}.json" if outline else None
    if not data["workers"]:
        key = "work.replay.empty.grid" if outline else "work.replay.empty"
        return (None, EMPTY_FC, None if url else EMPTY_FC, url, 1, 0, t(key, lang), "", HIDDEN)
    tz = b.settings.live.timezone
    data |= {"tz": tz, "gcj": b.settings.dashboard.tile_crs == "gcj02"}
    reports = data.pop("reports")
    span_s = max(1, (data["t1"] - data["t0"]) // 1000)
    summary = replay_summary(data, len(reports), total, lang, grid=outline is not None)
    features = report_features(reports, data["workers"], tz, lang)
    return (data, features, None if url else EMPTY_FC, url, span_s, 0, summary, href, {})


def _no_replay(text: str, error: bool = False) -> tuple[Any, ...]:
    summary = html.Span(text, className="wk-error") if error else text
    return (None, EMPTY_FC, EMPTY_FC, None, 1, 0, summary, "", HIDDEN)


def _audit_view(target: str, detail: dict[str, Any]) -> None:
    """Every replay is audited: who looked at whose track (or which grid's), which window."""
    from flask import current_app

    guard = current_app.extensions.get("wangge.guard")
    if guard is not None:
        guard.audit("track_view", target=target, detail=detail)


# Play / pause, the timer and the markers run in the browser (smooth, no server round trip).
clientside_callback(
    ClientsideFunction(namespace="wangge_work", function_name="toggle"),
    Output(ids.TR_TIMER, "disabled"),
    Output(ids.TR_PLAY, "children"),
    Input(ids.TR_PLAY, "n_clicks"),
    Input(ids.TR_DATA, "data"),
    State(ids.TR_TIMER, "disabled"),
    State(ids.TR_LABELS, "data"),
    prevent_initial_call=True,
)


clientside_callback(
    ClientsideFunction(namespace="wangge_work", function_name="advance"),
    Output(ids.TR_SLIDER, "value", allow_duplicate=True),
    Input(ids.TR_TIMER, "n_intervals"),
    State(ids.TR_SLIDER, "value"),
    State(ids.TR_SLIDER, "max"),
    State(ids.TR_SPEED, "value"),
    prevent_initial_call=True,
)


clientside_callback(
    ClientsideFunction(namespace="wangge_work", function_name="paths"),
    Output(ids.TR_PATHS, "data"),
    Output({"type": ids.TR_TIPS, "i": ALL}, "children"),
    Output(ids.WK_MAP, "viewport"),
    Input(ids.TR_DATA, "data"),
    prevent_initial_call=True,
)


clientside_callback(
    ClientsideFunction(namespace="wangge_work", function_name="place"),
    Output({"type": ids.TR_DOTS, "i": ALL}, "center"),
    Output({"type": ids.TR_DOTS, "i": ALL}, "radius"),
    Output(ids.TR_CLOCK, "children"),
    Input(ids.TR_SLIDER, "value"),
    Input(ids.TR_DATA, "data"),
)


clientside_callback(
    "function (choice) { return {display: choice === 'day' ? 'flex' : 'none'}; }",
    Output(ids.TR_CUSTOM, "style"),
    Input(ids.TR_WINDOW, "value"),
)


fresh = L.freshness_on(ids.WK_TICK, ids.tm("work", "at"))  # the header's freshness line


# Live push (dashboard/push/): the stream of what this page shows, reopened when it changes
follow("work", Input(ids.WK_AREA, "data"), Input(ids.WK_LAST, "data"))


tm.register("work", ids.WK_TICK)  # the "view at" control: the grid work of a past moment
