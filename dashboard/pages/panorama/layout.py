"""全景网格 — the panorama: the city's live map with drill-down; the URL is the state."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import (
    breadcrumbs,
    category_figure,
    graph_panel,
    hotspot_list,
    kpi_tiles,
    leaflet_map,
    legend,
    message_panel,
    ticker_list,
    trend_figure,
)
from dashboard.i18n import t
from dashboard.pages.panorama.queries import METRICS, view_of

dash.register_page(__name__, path="/", path_template="/area/<area_id>", name="panorama")

GRAPH_CONFIG: Any = {"displayModeBar": False, "responsive": True}


def not_found(area_id: str, lang: str) -> html.Div:
    return message_panel(
        t("notfound.title", lang),
        t("notfound.body", lang, id=area_id),
        t("notfound.back", lang),
        "notfound",
    )


def denied(lang: str) -> html.Div:
    return message_panel(
        t("auth.denied", lang), t("auth.denied.body", lang), t("notfound.back", lang), "denied"
    )


def layout(area_id: str | None = None, **query: Any) -> Any:
    b = current()
    lang = L.lang()
    view = view_of(b.city, area_id or auth.home_area(b.city))
    if view is None:
        return not_found(str(area_id), lang)
    if not auth.allowed(b.city, view.area_id):
        return denied(lang)
    s = b.settings.dashboard
    metric_options = [{"label": t(f"metric.{m}", lang), "value": m} for m in METRICS]
    toolbar = html.Div(
        [
            html.Div(
                breadcrumbs(view, lang, linkable=lambda a: auth.allowed(b.city, a)),
                className="pan-crumbs",
                id="pan-crumbs",
            ),
            html.Span(t("map.metric", lang), className="wg-muted"),
            dcc.Dropdown(
                id=ids.P_METRIC,
                options=metric_options,
                value="open",
                clearable=False,
                style={"width": 170, "color": "#111"},
            ),
            dcc.Checklist(
                id=ids.P_ALLGRIDS,
                options=[{"label": " " + t("map.allgrids", lang), "value": "all"}]
                if view.level == "city"
                else [],
                value=[],
                inline=True,
            ),
            html.Span(id=ids.P_STALE),
        ],
        className="pan-toolbar",
    )
    row = b.city.area(view.area_id)
    assert row is not None
    zoom = {"city": 9, "district": 11, "street": 13, "grid": 15}[view.level]
    center = (row["lon"], row["lat"])
    the_map = leaflet_map(
        ids.P_MAP,
        ids.P_GEO,
        f"/geo/area/{view.area_id}.json",
        center,
        zoom,
        s.tile_url,
        s.tile_crs == "gcj02",
        markers_id=ids.P_MARKERS,
    )
    return html.Div(
        [
            dcc.Store(id=ids.P_AREA, data=view.area_id),
            dcc.Store(id=ids.P_LAST, data=None),
            dcc.Interval(id=ids.P_TICK, interval=int(s.refresh_s * 1000), n_intervals=0),
            toolbar,
            html.Div(
                [
                    html.Div(
                        [
                            html.Div(
                                [html.H3(view.name), html.Div(id=ids.P_KPIS, className="kpis")],
                                className="wg-panel",
                                style={"flex": "1 1 auto"},
                            )
                        ],
                        className="pan-left",
                    ),
                    html.Div(
                        [the_map, html.Div(id=ids.P_LEGEND, className="wg-legend")],
                        className="wg-panel pan-map",
                    ),
                    html.Div(
                        [
                            graph_panel(t("panel.trend", lang), ids.P_TREND, GRAPH_CONFIG, "190px"),
                            graph_panel(
                                t("panel.categories", lang), ids.P_CATS, GRAPH_CONFIG, "210px"
                            ),
                            html.Div(
                                [html.H3(t("panel.hotspots", lang)), html.Div(id=ids.P_HOT)],
                                className="wg-panel",
                                style={"flex": "1 1 auto"},
                            ),
                        ],
                        className="pan-right",
                    ),
                    html.Div(
                        [
                            html.H3(t("panel.ticker", lang)),
                            html.Div(id=ids.P_TICKER, className="ticker"),
                        ],
                        className="wg-panel pan-ticker",
                    ),
                ],
                className="pan-grid",
            ),
        ]
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
        return (no_update,) * 3 + ([denied(lang)],) + (no_update,) * 8
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
