"""大屏 — the wall screen: 16:9, dark, large type, no interaction, never an error page.

``/wall`` (the city) and ``/wall/<area_id>``. Query options: ``?tour=SECONDS`` rotates
through the children (districts of the city, streets of a district), ``?metric=...``
colours the map, ``?lang=en`` switches the language.
"""

from __future__ import annotations

import contextlib
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import (
    category_figure,
    hotspot_list,
    kpi_tiles,
    label_figure,
    leaflet_map,
    legend,
    message_panel,
    ticker_text,
    trend_figure,
)
from dashboard.i18n import t
from dashboard.pages.panorama.queries import METRICS, font_px, next_in_tour, tour_areas, view_of
from dashboard.pages.warnings import queries as WL

dash.register_page(__name__, path="/wall", path_template="/wall/<area_id>", name="wall")

GRAPH: Any = {"displayModeBar": False, "responsive": True, "staticPlot": True}


def _panel(title: str, body: Any, cls: str = "") -> html.Div:
    return html.Div([html.H3(title), body], className=f"wg-panel {cls}")


def _graph(graph_id: str) -> dcc.Graph:
    return dcc.Graph(id=graph_id, config=GRAPH, className="chart", style={"height": "100%"})


def unavailable(b: Any, area_id: str | None, lang: str) -> html.Div | None:
    """A friendly panel instead of the wall when its area cannot be shown (never an
    exception, never a blank screen): an unknown id, an area outside the screen's scope,
    or a screen whose own scope is no area of the configured city."""
    home = auth.home_area(b.city)
    if b.city.area(home) is None:
        body = t("wall.noscope.body", lang, id=home, city=b.city.name)
        return _message(t("wall.noscope.title", lang), body, lang)
    if area_id is None:
        return None
    if b.city.area(area_id) is None:
        return _message(t("notfound.title", lang), t("notfound.body", lang, id=area_id), lang)
    if not auth.allowed(b.city, area_id):
        return _message(t("auth.denied", lang), t("auth.denied.body", lang), lang)
    return None


def _message(title: str, body: str, lang: str) -> html.Div:
    panel = message_panel(title, body, t("wall.back", lang), "wall-message", href="/wall")
    return html.Div(panel, id="wall-root", className="wall-message")


def layout(
    area_id: str | None = None, tour: str | None = None, metric: str | None = None, **_: Any
) -> Any:
    b = current()
    lang = L.lang()
    problem = unavailable(b, area_id, lang)
    if problem is not None:
        return problem
    view = view_of(b.city, area_id or auth.home_area(b.city))
    if view is None:  # unreachable after unavailable(); a wall never raises
        return _message(t("notfound.title", lang), t("notfound.body", lang, id=area_id), lang)
    metric = metric if metric in METRICS else "open"
    try:
        tour_s = float(tour) if tour is not None else b.settings.dashboard.wall_tour_s
    except ValueError:
        tour_s = b.settings.dashboard.wall_tour_s
    s = b.settings.dashboard
    row = b.city.area(view.area_id) or {"lon": 0.0, "lat": 0.0}
    zoom = {"city": 9.25, "district": 11, "street": 13, "grid": 15}[view.level]
    the_map = leaflet_map(
        ids.W_MAP,
        ids.W_GEO,
        f"/geo/area/{view.area_id}.json",
        (row["lon"], row["lat"]),
        int(zoom),
        s.tile_url,
        s.tile_crs == "gcj02",
        zoom_control=False,
    )
    return html.Div(
        [
            dcc.Store(id=ids.W_AREA, data={"area": view.area_id, "metric": metric}),
            dcc.Store(id=ids.W_TOUR, data=tour_areas(b.city, view.area_id) if tour_s > 0 else []),
            dcc.Store(id=ids.W_LAST, data=None),
            dcc.Store(id=ids.W_TZ, data=b.settings.live.timezone),
            dcc.Store(id=ids.W_VH, data=1080),
            dcc.Interval(id=ids.W_TICK, interval=int(s.refresh_s * 1000)),
            dcc.Interval(id=ids.W_CLOCK_TICK, interval=1000),
            dcc.Interval(
                id=ids.W_TOUR_TICK, interval=int(max(tour_s, 5) * 1000), disabled=tour_s <= 0
            ),
            html.Div(
                [
                    html.Div(
                        [
                            html.Div(id=ids.W_CLOCK, className="wall-clock"),
                            html.Div(id=ids.W_DATE, className="wall-date"),
                        ]
                    ),
                    html.Div(
                        f"{view.name} · {t('app.title', lang)}",
                        id=ids.W_TITLE,
                        className="wall-title",
                    ),
                    html.Div(id=ids.W_STALE, className="wall-status"),
                ],
                className="wall-head",
            ),
            html.Div(
                [
                    _panel(view.name, html.Div(id=ids.W_KPIS, className="kpis"), "wall-kpi"),
                    _panel(t("panel.categories", lang), _graph(ids.W_CATS)),
                ],
                className="wall-col",
            ),
            html.Div(
                [
                    the_map,
                    html.Div(id=ids.W_LEGEND, className="wg-legend"),
                    html.Div(id=ids.W_BANNER),
                ],
                className="wg-panel wall-map",
            ),
            html.Div(
                [
                    _panel(t("panel.trend", lang), _graph(ids.W_TREND)),
                    _panel(t("panel.labels", lang), _graph(ids.W_LABELS)),
                    _panel(t("panel.hotspots", lang), html.Div(id=ids.W_HOT)),
                ],
                className="wall-col",
            ),
            html.Div(
                [
                    html.Div(t("panel.ticker", lang), className="label"),
                    html.Div(html.Div(id=ids.W_TICKER, className="run"), className="track"),
                ],
                className="wall-ticker",
            ),
        ],
        className="wall",
        id="wall-root",
    )


dash.clientside_callback(
    ClientsideFunction(namespace="wangge_wall", function_name="height"),
    Output(ids.W_VH, "data"),
    Input(ids.W_CLOCK_TICK, "disabled"),
)

dash.clientside_callback(
    ClientsideFunction(namespace="wangge_wall", function_name="clock"),
    Output(ids.W_CLOCK, "children"),
    Output(ids.W_DATE, "children"),
    Input(ids.W_CLOCK_TICK, "n_intervals"),
    State(ids.LANG, "data"),
    State(ids.W_TZ, "data"),
)


@dash.callback(
    Output(ids.W_AREA, "data"),
    Input(ids.W_TOUR_TICK, "n_intervals"),
    State(ids.W_TOUR, "data"),
    State(ids.W_AREA, "data"),
    prevent_initial_call=True,
)
def tour_step(_n: int, areas: list[str], state: dict[str, Any]) -> Any:
    city = current().city
    areas = [a for a in areas or [] if auth.allowed(city, a)]
    if not areas:
        return no_update
    nxt = next_in_tour(areas, state["area"])
    return {**state, "area": nxt}


def red_banner(b: Any, area_id: str, red: int, lang: str) -> html.Div | None:
    """ "红色预警 × n", with the latest red warning's rule and place when the list has it."""
    if not red:
        return None
    text = f"⚠ {t('wall.red', lang)} × {red}"
    with contextlib.suppress(*L.BACKEND_ERRORS):
        top = WL.headline(b.live.warnings(), b.city, area_id)
        if top is not None:
            row = b.city.area(top["area_id"])
            place = str(row["name"]) if row else top["area_id"]
            text += f" · {t('rule.' + top['rule'], lang)} · {place}"
    return html.Div(text, className="wall-banner")


@dash.callback(
    Output(ids.W_GEO, "hideout"),
    Output(ids.W_GEO, "url"),
    Output(ids.W_LEGEND, "children"),
    Output(ids.W_KPIS, "children"),
    Output(ids.W_TREND, "figure"),
    Output(ids.W_CATS, "figure"),
    Output(ids.W_LABELS, "figure"),
    Output(ids.W_HOT, "children"),
    Output(ids.W_TICKER, "children"),
    Output(ids.W_BANNER, "children"),
    Output(ids.W_STALE, "children"),
    Output(ids.W_TITLE, "children"),
    Output(ids.W_LAST, "data"),
    Input(ids.W_TICK, "n_intervals"),
    Input(ids.W_AREA, "data"),
    Input(ids.W_VH, "data"),
    State(ids.W_LAST, "data"),
    State(ids.LANG, "data"),
)
def wall_refresh(
    _n: int, state: dict[str, Any], vh: int | None, last_ok: int | None, lang: str
) -> tuple[Any, ...]:
    b = current()
    area_id, metric = state["area"], state["metric"]
    if not auth.allowed(b.city, area_id):  # the scope comes from the session, not the store
        return (no_update,) * 11 + (t("auth.denied", lang), no_update)
    panel = L.panel_or_stale(b, area_id, metric, False, lang, last_ok)
    if panel is None:
        return (no_update,) * 13
    if panel["stale"]:
        return (*(no_update,) * 10, panel["stale_mark"], no_update, no_update)
    tz = b.settings.live.timezone
    banner = red_banner(b, area_id, panel["kpi"]["warnings"].get("red", 0), lang)
    view = view_of(b.city, area_id)
    title = f"{view.name if view else ''} · {t('app.title', lang)}"
    ticker = [html.Span(f"{r['time']} {ticker_text(r, lang)}") for r in panel["ticker"][:20]]
    return (
        panel["hideout"],
        panel["url"],
        legend(panel["hideout"], lang),
        kpi_tiles(panel["kpi"], lang),
        trend_figure(panel["trend"], lang, tz, size=font_px(vh)),
        category_figure(panel["categories"], lang, size=font_px(vh)),
        label_figure(panel["labels"], lang, size=font_px(vh)),
        hotspot_list(panel["hotspots"], metric, base="/wall/"),
        ticker,
        banner,
        panel["fresh"],
        title,
        panel["now_ms"],
    )
