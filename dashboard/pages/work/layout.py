"""网格工作 — grid work: who is on patrol where, which grids nobody walked today, what each
worker did, and track replay. Same drill-down as the panorama: ``/work/<area_id>``.

Privacy: names, positions of individuals and tracks only for ``auth.INDIVIDUALS``
(district and street command, in scope); other roles see clusters, counts and coverage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dash
import dash_leaflet as dl
from dash import (
    dcc,
    html,
)

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components import timemachine as tm
from dashboard.components.panels import (
    breadcrumbs,
    denied_panel,
    leaflet_map,
    message_panel,
)
from dashboard.geometry import city_water
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.panorama.queries import view_of
from dashboard.pages.work import queries as WQ
from dashboard.pages.work.components import EMPTY_FC, SPEEDS

dash.register_page(__name__, path="/work", path_template="/work/<area_id>", name="work")


def layout(area_id: str | None = None, **query: Any) -> Any:
    b = current()
    lang = L.lang()
    view = view_of(b.city, area_id or auth.home_area(b.city))
    if view is None:
        return message_panel(
            t("notfound.title", lang),
            t("notfound.body", lang, id=str(area_id)),
            t("notfound.back", lang),
            "notfound",
            href="/work",
        )
    if not auth.allowed(b.city, view.area_id):
        return denied_panel(lang, auth.home_href(b.city, "/work/"))
    people = auth.sees_people()
    s = b.settings.dashboard
    row = b.city.area(view.area_id)
    assert row is not None
    zoom = WQ.ZOOM[view.level]
    the_map = leaflet_map(
        ids.WK_MAP,
        ids.WK_GEO,
        f"/geo/area/{view.area_id}.json",
        (row["lon"], row["lat"]),
        zoom,
        s.tile_url,
        s.tile_crs == "gcj02",
        water=city_water(b, lang),
    )
    gcj = {"coordsToLatLng": {"variable": "wangge.map.gcj02"}} if s.tile_crs == "gcj02" else {}
    # Own panes above the area polygons (which load later and would cover the markers).
    top: list[Any] = [
        dl.GeoJSON(
            id=ids.WK_MARKERS,
            data={"type": "FeatureCollection", "features": []},
            pointToLayer={"variable": "wangge.work.point"},
            onEachFeature={"variable": "wangge.work.tip"},
            **gcj,
        )
    ]
    the_map.children = [
        *the_map.children,
        dl.Pane(top, name="wk-markers", style={"zIndex": 450}),
    ]
    if people:
        replay = dl.Pane(_replay_layers(gcj), name="wk-replay", style={"zIndex": 460})
        the_map.children = [*the_map.children, replay]
    toolbar = html.Div(
        [
            html.Div(breadcrumbs(view, lang, base="/work/"), className="pan-crumbs"),
            html.Span(id=ids.WK_STALE),
            tm.bar(
                "work",
                b,
                tm.at_of(b, query.get("at")),
                lang,
                "/work" if area_id is None else f"/work/{view.area_id}",
                query.get("at"),
            ),
        ],
        className="pan-toolbar",
    )
    left = html.Div(
        [
            html.Div(
                [html.H3(view.name), html.Div(id=ids.WK_KPIS, className="kpis")],
                className="wg-panel",
                style={"flex": "0 0 auto"},  # the counts never shrink; the gap list scrolls
            ),
            html.Div(
                [
                    html.H3(t("work.panel.gaps", lang)),
                    html.Div(id=ids.WK_GAPS, className="wk-gaps"),
                ],
                className="wg-panel",
                style={"flex": "1 1 auto", "minHeight": 0, "overflow": "auto"},
            ),
        ],
        className="pan-left",
    )
    right_children: list[Any] = []
    if people:
        right_children.append(_replay_panel(b, view.area_id, view.level, lang))
    else:
        right_children.append(
            html.Div([html.P(t("work.private", lang), className="wg-muted")], className="wg-panel")
        )
    right_children.append(
        html.Div(
            [html.H3(t("work.panel.logs", lang)), html.Div(id=ids.WK_LOGS, className="ticker")],
            className="wg-panel",
            style={"flex": "1 1 auto", "minHeight": 0, "overflow": "auto"},
        )
    )
    bottom_title = (
        "work.panel.activity"
        if people and view.level in ("street", "grid")
        else "work.panel.children"
    )
    return html.Div(
        [
            dcc.Store(id=ids.WK_AREA, data=view.area_id),
            dcc.Store(id=ids.WK_LAST, data=None),
            dcc.Store(id=ids.WK_SENT, data=None),
            dcc.Interval(id=ids.WK_TICK, interval=int(s.refresh_s * 1000), n_intervals=0),
            toolbar,
            html.Div(
                [
                    left,
                    html.Div(
                        [the_map, html.Div(id=ids.WK_LEGEND, className="wg-legend")],
                        className="wg-panel pan-map",
                    ),
                    html.Div(right_children, className="pan-right"),
                    html.Div(
                        [
                            html.H3(t(bottom_title, lang)),
                            html.Div(id=ids.WK_CHILDREN, className="wk-table"),
                        ],
                        className="wg-panel pan-ticker wk-bottom",
                    ),
                ],
                className="pan-grid wk-grid",
            ),
        ]
    )


def _replay_layers(gcj: dict[str, Any]) -> list[Any]:
    """The replayed grid's outline, one line per worker, the reports on the way and a pool
    of ``MAX_REPLAY_WORKERS`` markers (slot i: the i-th worker, in ``REPLAY_COLORS[i]``)."""
    dots = [
        dl.CircleMarker(
            dl.Tooltip("", id={"type": ids.TR_TIPS, "i": i}, className="wg-tip"),
            id={"type": ids.TR_DOTS, "i": i},
            center=[0, 0],
            radius=0,
            color="#ffffff",
            fillColor=L.REPLAY_COLORS[i],
            fillOpacity=1,
            weight=2,
            className="wg-replay-dot",
        )
        for i in range(WQ.MAX_REPLAY_WORKERS)
    ]
    return [
        dl.GeoJSON(
            id=ids.TR_OUTLINE,
            data=EMPTY_FC,
            # not interactive (a style option: Leaflet reads it when the path is made), so
            # the markers under it still get the mouse
            style={
                "color": "#ffffff",
                "weight": 3,
                "dashArray": "6 4",
                "fillOpacity": 0.06,
                "interactive": False,
            },
            **gcj,
        ),
        dl.GeoJSON(
            id=ids.TR_PATHS,
            data=EMPTY_FC,
            style={"variable": "wangge.work.trackStyle"},
            **gcj,
        ),
        dl.GeoJSON(
            id=ids.TR_REPORTS,
            data=EMPTY_FC,
            pointToLayer={"variable": "wangge.work.report"},
            onEachFeature={"variable": "wangge.work.tip"},
            **gcj,
        ),
        *dots,
    ]


def _replay_panel(b: Backend, area_id: str, level: str, lang: str) -> html.Div:
    roster = b.roster().filter(WQ.area_filter(level, area_id))
    names = {g: n for g, n in zip(b.city.grids["grid_id"], b.city.grids["name"], strict=True)}
    workers = WQ.worker_options(roster, WQ.live_frame(b), names, lang)  # online first
    grid_ids = sorted(set(roster["grid_id"].to_list()))
    grid_opts = [{"label": names.get(g, g), "value": g} for g in grid_ids[:2000]]
    windows = [{"label": t("work.replay.hours", lang, h=h), "value": h} for h in WQ.WINDOWS_H]
    windows.append({"label": t("work.replay.day", lang), "value": WQ.DAY})
    speeds = [{"label": f"{v}×", "value": v} for v in SPEEDS]
    tz = b.settings.live.timezone
    today = WQ.local_date(b.now_ms(), tz)
    first = today - timedelta(days=b.settings.privacy.track_retention_days - 1)
    hours = [{"label": f"{h:02d}:00", "value": h} for h in range(25)]
    custom = html.Div(
        [
            dcc.DatePickerSingle(
                id=ids.TR_DAY,
                date=(today - timedelta(days=1)).isoformat(),
                min_date_allowed=first.isoformat(),
                max_date_allowed=today.isoformat(),
                display_format="YYYY-MM-DD",
            ),
            html.Div(
                [
                    dcc.Dropdown(
                        id=ids.TR_FROM,
                        options=hours[:-1],
                        value=8,
                        clearable=False,
                        searchable=False,
                        style={"color": "#111", "flex": "1 1 0"},
                    ),
                    html.Span("—", className="wg-muted"),
                    dcc.Dropdown(
                        id=ids.TR_TO,
                        options=hours[1:],
                        value=12,
                        clearable=False,
                        searchable=False,
                        style={"color": "#111", "flex": "1 1 0"},
                    ),
                ],
                className="wk-hours",
            ),
        ],
        id=ids.TR_CUSTOM,
        className="wk-custom",
        style={"display": "none"},
    )
    return html.Div(
        [
            html.H3(t("work.panel.replay", lang)),
            html.Div(
                [
                    dcc.Dropdown(
                        id=ids.TR_GRID,
                        options=grid_opts,
                        placeholder=t("work.replay.grid", lang),
                        style={"color": "#111"},
                    ),
                    dcc.Dropdown(
                        id=ids.TR_WORKER,
                        options=workers,
                        placeholder=t("work.replay.pick", lang),
                        style={"color": "#111"},
                    ),
                    dcc.Dropdown(
                        id=ids.TR_WINDOW,
                        options=windows,
                        value=WQ.WINDOWS_H[1],
                        clearable=False,
                        style={"color": "#111"},
                    ),
                    custom,
                ],
                className="wk-replay-pick",
            ),
            dcc.Store(id=ids.TR_DATA, data=None),
            dcc.Store(
                id=ids.TR_LABELS, data=[t("work.replay.play", lang), t("work.replay.pause", lang)]
            ),
            dcc.Interval(id=ids.TR_TIMER, interval=250, disabled=True, n_intervals=0),
            html.Div(
                dcc.Slider(
                    id=ids.TR_SLIDER,
                    min=0,
                    max=1,
                    step=1,
                    value=0,
                    marks=None,
                    updatemode="drag",
                    allow_direct_input=False,
                ),
                className="wk-slider",
            ),
            html.Div(
                [
                    html.Button(
                        t("work.replay.play", lang),
                        id=ids.TR_PLAY,
                        n_clicks=0,
                        className="wk-btn",
                    ),
                    html.Span(t("work.replay.speed", lang), className="wg-muted"),
                    dcc.RadioItems(id=ids.TR_SPEED, options=speeds, value=SPEEDS[1], inline=True),
                    html.Span("—", id=ids.TR_CLOCK, className="wk-clock"),
                ],
                className="wk-controls",
            ),
            html.Div(t("work.replay.hint", lang), id=ids.TR_SUMMARY, className="wg-muted"),
            html.A(
                t("work.replay.export", lang),
                id=ids.TR_EXPORT,
                href="",
                className="wk-export",
                style={"display": "none"},
            ),
        ],
        className="wg-panel wk-replay",
    )


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
