"""Panorama callbacks: the live refresh (computed once per tick) and the map's drill-down."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import (
    category_figure,
    denied_panel,
    hotspot_list,
    kpi_tiles,
    legend,
    ticker_list,
    trend_figure,
)


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
)
def refresh(
    _n: int, metric: str, allgrids: list[str], area_id: str, last_ok: int | None, lang: str
) -> tuple[Any, ...]:
    """Thin: the shared panel of this tick, shaped for this viewer's choices."""
    b = current()
    grids = "all" in (allgrids or [])
    b.keep_warm(
        f"pan:{area_id}:{metric}:{grids}:{lang}",
        lambda: cached_outputs(b, area_id, metric, grids, lang, None),
    )
    return cached_outputs(b, area_id, metric, grids, lang, last_ok)


def cached_outputs(
    b: Any, area_id: str, metric: str, grids: bool, lang: str, last_ok: int | None
) -> tuple[Any, ...]:
    """The outputs for this tick, built once per process (stale answers never cached)."""
    key = f"pan:{area_id}:{metric}:{grids}:{lang}"
    out: tuple[Any, ...] = b.per_tick(
        key, lambda: outputs(b, area_id, metric, grids, lang, last_ok)
    )
    if out and out[-1] == "stale":
        b.cache.local.pop(f"out:{key}:{b.tick()}", None)
        return out[:-1]
    return out


def outputs(
    b: Any, area_id: str, metric: str, allgrids: bool, lang: str, last_ok: int | None
) -> tuple[Any, ...]:
    if not auth.allowed(b.city, area_id):  # the scope comes from the session, not the store
        return (no_update,) * 3 + ([denied_panel(lang)],) + (no_update,) * 8
    panel = L.panel_or_stale(b, area_id, metric, allgrids, lang, last_ok)
    if panel is None:
        return (no_update,) * 12
    if panel["stale"]:
        return (*(no_update,) * 9, panel["stale_mark"], no_update, no_update, "stale")
    tz = b.settings.live.timezone
    return (
        panel["hideout"],
        panel["url"],
        legend(panel["hideout"], lang),
        kpi_tiles(panel["kpi"], lang),
        trend_figure(panel["trend"], lang, tz),
        category_figure(panel["categories"], lang),
        hotspot_list(panel["hotspots"], metric),
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
    return f"/area/{target}" if target and auth.allowed(city, target) else no_update
