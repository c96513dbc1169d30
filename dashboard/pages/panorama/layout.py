"""全景网格 — the panorama: the city's live map with drill-down; the URL is the state."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components import timemachine as tm
from dashboard.components.panels import (
    breadcrumbs,
    denied_panel,
    graph_panel,
    leaflet_map,
    not_found_panel,
)
from dashboard.geometry import city_water
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.panorama.queries import METRICS, view_of

dash.register_page(__name__, path="/", path_template="/area/<area_id>", name="panorama")


GRAPH_CONFIG: Any = {"displayModeBar": False, "responsive": True}


def layout(area_id: str | None = None, **query: Any) -> Any:
    b = current()
    lang = L.lang()
    view = view_of(b.city, area_id or auth.home_area(b.city))
    if view is None:
        return not_found_panel(str(area_id), lang)
    if not auth.allowed(b.city, view.area_id):
        return denied_panel(lang, auth.home_href(b.city))
    s = b.settings.dashboard
    at = tm.at_of(b, query.get("at"))
    here = "/" if area_id is None else f"/area/{view.area_id}"
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
            # the area's open incidents, in the incident workbench (for roles that see them)
            dcc.Link(
                t("inc.open_area", lang),
                href=f"/incidents?area={view.area_id}",
                className="pan-inc-link",
            )
            if auth.may("incidents")
            else html.Span(),
            tm.bar("pan", b, at, lang, here, query.get("at")),
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
        water=city_water(b, lang),
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


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
