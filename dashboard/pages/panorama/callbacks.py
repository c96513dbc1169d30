"""Panorama callbacks: the live refresh (decided per request, computed once per tick and
data class) and the map's drill-down."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components import timemachine as tm
from dashboard.components.panels import (
    category_figure,
    denied_panel,
    hotspot_list,
    kpi_tiles,
    legend,
    ticker_list,
    trend_figure,
)
from dashboard.pages.panorama.queries import METRICS
from dashboard.push.browser import follow
from dashboard.responses import shared_response


@dash.callback(
    Output(ids.P_GEO, "hideout"),
    Output(ids.P_GEO, "url"),
    Output(ids.P_LEGEND, "children"),
    Output(ids.P_KPIS, "children"),
    Output(ids.P_TREND, "figure"),
    Output(ids.P_CATS, "figure"),
    Output(ids.P_HOT, "children"),
    Output(ids.P_TICKER, "children"),
    Output(ids.P_MARKERS, "data"),
    Output(ids.P_STALE, "children"),
    Output(ids.FRESH, "children"),
    Output(ids.P_LAST, "data"),
    Input(ids.P_TICK, "n_intervals"),
    Input(ids.P_METRIC, "value"),
    Input(ids.P_ALLGRIDS, "value"),
    State(ids.P_AREA, "data"),
    State(ids.P_LAST, "data"),
    State(ids.LANG, "data"),
    State(ids.tm("pan", "at"), "data"),  # play bumps the tick when it moves on
)
def refresh(
    _n: int,
    metric: str,
    allgrids: list[str],
    area_id: str,
    last_ok: int | None,
    lang: str,
    at_value: Any = None,
) -> tuple[Any, ...]:
    """Thin: the viewer's permission first, then this tick's shared panel for what the data
    is (area, data class, metric, grids mode, language, the moment shown), computed once
    per process."""
    b = current()
    lang = L.lang_of(lang)
    metric = metric if metric in METRICS else "open"
    grids = isinstance(allgrids, list) and "all" in allgrids
    grant = auth.authorize(area_id, "aggregates")
    if not grant.granted:  # the scope comes from the session, not the store; never cached
        return (no_update,) * 3 + ([denied_panel(lang, auth.home_href(b.city))],) + (no_update,) * 8
    at_ms = tm.moment_of(b, at_value)  # a past moment, or live
    try:
        return shared_response(  # this tick's finished answer, once permitted
            b,
            grant,
            "pan",
            lambda: outputs(b, grant, metric, grids, lang, at_ms),
            metric,
            grids,
            lang,
            *([] if at_ms is None else [f"at{at_ms}"]),
            warm=at_ms is None,
        )
    except L.BACKEND_ERRORS:  # nothing cached: the next refresh tries again
        mark = L.stale_mark(last_ok, b.settings.live.timezone, lang)
        return (*(no_update,) * 9, mark, no_update, no_update)


def outputs(
    b: Backend,
    grant: auth.Decision,
    metric: str,
    allgrids: bool,
    lang: str,
    at_ms: int | None = None,
) -> tuple[Any, ...]:
    """The outputs for a granted area (pure of the session: shared by its data class),
    live or at the past moment ``at_ms``."""
    panel = L.panel(b, grant, metric, allgrids, lang, at_ms=at_ms)
    if panel is None:
        return (no_update,) * 12
    tz = b.settings.live.timezone
    return (
        panel["hideout"],
        panel["url"],
        legend(panel["hideout"], lang),
        kpi_tiles(panel["kpi"], lang),
        trend_figure(panel["trend"], lang, tz),
        category_figure(panel["categories"], lang),
        hotspot_list(panel["hotspots"], metric, lang=lang),
        ticker_list(panel["ticker"], lang, n=4),
        panel["markers"],
        "",
        panel["fresh"],
        panel["now_ms"],
    )


@dash.callback(
    Output(ids.URL, "pathname"),
    Input(ids.P_GEO, "clickData"),
    State(ids.P_AREA, "data"),
    prevent_initial_call=True,
)
def drill_down(click: dict[str, Any] | None, area_id: str) -> Any:
    city = current().city
    target = L.drill_target(city, area_id, click)
    if target is None or not auth.authorize(target, "aggregates").granted:
        return no_update
    return f"/area/{target}"


# Live push (dashboard/push/): the stream of what this page shows, reopened when it changes
follow(
    "pan",
    Input(ids.P_AREA, "data"),
    Input(ids.P_METRIC, "value"),
    Input(ids.P_ALLGRIDS, "value"),
    Input(ids.P_LAST, "data"),
)


tm.register("pan", ids.P_TICK)  # the "view at" control: pick a moment, play a day, back to live
