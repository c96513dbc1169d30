"""大屏 — the wall screen: 16:9, dark, large type, no interaction, never an error page.

``/wall`` (the city) and ``/wall/<area_id>``. The wall tours by itself (``[wall]``): the
panorama of its area, its districts (or streets) and the areas of open red warnings, then
the warnings, grid-work and assessment views; an unacknowledged red warning takes the
screen over until acknowledged (``dashboard/pages/wall/queries.py``). Query options:
``?tour=0`` stops the tour, ``?tour=SECONDS`` sets the area dwell, ``?metric=...``
colours the map, ``?lang=en`` switches the language, ``?at=2026-12-03T09:40`` shows that
past moment (marked as such; see ``components/timemachine``)."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components import timemachine as tm
from dashboard.components.charts import blank_figure
from dashboard.components.panels import (
    leaflet_map,
    message_panel,
)
from dashboard.geometry import city_water
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.panorama.queries import METRICS, view_of
from dashboard.pages.wall import queries as Q

dash.register_page(__name__, path="/wall", path_template="/wall/<area_id>", name="wall")


GRAPH: Any = {"displayModeBar": False, "responsive": True, "staticPlot": True}


def _panel(title: str, body: Any, cls: str = "") -> html.Div:
    return html.Div([html.H3(title), body], className=f"wg-panel {cls}")


def _graph(graph_id: str) -> dcc.Graph:
    return dcc.Graph(
        id=graph_id,
        figure=blank_figure(),
        config=GRAPH,
        className="chart",
        style={"height": "100%"},
    )


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
    area_id: str | None = None,
    tour: str | None = None,
    metric: str | None = None,
    at: str | None = None,
    **_: Any,
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
    w = b.settings.wall
    plan = Q.plan_of(view.area_id, w.tour, w.area_dwell_s, w.dwell_s, tour, metric)
    first = Q.Stop("panorama", view.area_id)
    s = b.settings.dashboard
    past = tm.at_of(b, at)
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
        water=city_water(b, lang),
    )
    return html.Div(
        [
            dcc.Store(id=ids.W_AREA, data={"area": view.area_id, "metric": metric}),
            dcc.Store(id=ids.W_TOUR, data=plan.to_json()),
            dcc.Store(id=ids.W_STOP, data={"i": 0, "key": first.key, "take": None}),
            dcc.Store(id=ids.W_LAST, data=None),
            dcc.Store(id=ids.W_TZ, data=b.settings.live.timezone),
            dcc.Store(id=ids.W_VH, data=1080),
            dcc.Store(id=ids.tm("wall", "at"), data=past.at_ms),
            dcc.Interval(id=ids.W_TICK, interval=int(s.refresh_s * 1000)),
            dcc.Interval(id=ids.W_CLOCK_TICK, interval=1000),
            dcc.Interval(
                id=ids.W_TOUR_TICK,
                interval=int(Q.dwell_s(first, plan) * 1000),
                disabled=not plan.views,
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
                        className=f"wall-title wall-title-{lang}",  # per language: its size
                    ),
                    html.Div(
                        [
                            html.Div(
                                tm.mark_text(past.at_ms, b.settings.live.timezone, lang),
                                id=ids.tm("wall", "mark"),
                                className="tm-past" if past.at_ms else "tm-past tm-hidden",
                            ),
                            html.Div(id=ids.W_STALE),
                        ],
                        className="wall-status",
                    ),
                ],
                className="wall-head",
            ),
            html.Div(
                [
                    html.Div(  # its title follows the tour (the callbacks' tour step)
                        [
                            html.H3(view.name, id=ids.W_KPI_TITLE),
                            html.Div(id=ids.W_KPIS, className="kpis"),
                        ],
                        className="wg-panel wall-kpi",
                    ),
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
            *tour_parts(lang),
        ],
        className=Q.root_class("panorama", False),
        id="wall-root",
    )


def tour_parts(lang: str) -> list[Any]:
    """The carousel's view (over the panels and the map) and the takeover's two cards
    (over the side columns, beside the focused map); shown by the root's classes."""
    return [
        html.Div(id=ids.W_VIEW, className="wall-view"),
        html.Div(id=ids.W_TAKE, className="wall-take"),
        html.Div(
            [
                html.Div(id=f"{ids.W_TAKE_SIDE}-info"),
                html.Button(
                    t("wall.ack", lang), id=ids.W_ACK, n_clicks=0, style={"display": "none"}
                ),
                html.Div(id=ids.W_ACK_MSG, className="wall-ack-msg"),
            ],
            id=ids.W_TAKE_SIDE,
            className="wall-take-side",
        ),
    ]


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
