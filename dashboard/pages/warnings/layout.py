"""研判预警 — the early-warning page: live list, map, detail with timeline and actions.

Thin callbacks over ``dashboard.pages.warnings.queries`` (pure) and
``pipelines.warnings.engine`` (SQL).
The list comes from the live warning list in Redis (shared by all viewers, one read per
tick); details and actions go to SQL. Scope always comes from the session."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components import timemachine as tm
from dashboard.components.panels import denied_panel, leaflet_map
from dashboard.geometry import city_water
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.warnings import queries as WL
from dashboard.pages.warnings.components import ACTION_BUTTONS
from pipelines import warnings as W

dash.register_page(__name__, path="/warnings", name="warnings")


HOURS = (1, 6, 24, 168)


def layout(**query: Any) -> Any:
    b = current()
    lang = L.lang()
    p = auth.principal()
    if p is None or p.wall:
        return denied_panel(lang)
    s = b.settings.dashboard
    row = b.city.area(p.scope)
    assert row is not None
    zoom = {"city": 9, "district": 11, "street": 13, "grid": 15}[str(row["level"])]
    the_map = leaflet_map(
        ids.WARN_MAP,
        ids.WARN_GEO,
        f"/geo/area/{p.scope}.json",
        (row["lon"], row["lat"]),
        zoom,
        s.tile_url,
        s.tile_crs == "gcj02",
        markers_id=ids.WARN_MARKERS,
        water=city_water(b, lang),
    )
    level_opts = [{"label": " " + t(f"warn.{lv}", lang), "value": lv} for lv in W.LEVELS]
    status_opts = [{"label": " " + t(f"wstatus.{x}", lang), "value": x} for x in WL.STATUSES]
    rule_opts = [{"label": t(f"rule.{r}", lang), "value": r} for r in WL.RULES]
    area_opts = [{"label": n, "value": a} for a, n in WL.area_options(b.city, p.scope)]
    hour_opts = [{"label": t("wfilter.hours", lang, n=h), "value": h} for h in HOURS]
    filters = html.Div(
        [
            dcc.Checklist(id=ids.WARN_LEVELS, options=level_opts, value=[], inline=True),
            dcc.Checklist(id=ids.WARN_STATUS, options=status_opts, value=[], inline=True),
            dcc.Dropdown(
                id=ids.WARN_RULES,
                options=rule_opts,
                multi=True,
                placeholder=t("wfilter.rule", lang),
                style={"minWidth": 200, "color": "#111"},
            ),
            dcc.Dropdown(
                id=ids.WARN_AREA,
                options=area_opts,
                placeholder=t("wfilter.area", lang),
                style={"minWidth": 180, "color": "#111"},
            ),
            dcc.Dropdown(
                id=ids.WARN_HOURS,
                options=hour_opts,
                placeholder=t("wfilter.time", lang),
                style={"minWidth": 130, "color": "#111"},
            ),
            dcc.Checklist(
                id=ids.WARN_SOUND,
                options=[{"label": " " + t("warn.sound", lang), "value": "on"}],
                value=["on"],
                inline=True,
                persistence=True,
            ),
            tm.bar("warn", b, tm.at_of(b, query.get("at")), lang, "/warnings", query.get("at")),
        ],
        className="pan-toolbar warn-filters",
    )
    actions = html.Div(
        [
            dcc.Input(
                id=ids.WARN_ASSIGNEE,
                type="text",
                maxLength=128,
                placeholder=t("wact.assignee", lang),
                className="warn-input",
            ),
            dcc.Textarea(
                id=ids.WARN_NOTE,
                maxLength=500,
                placeholder=t("wact.note", lang),
                className="warn-input",
            ),
            html.Div(
                [
                    html.Button(t(f"wact.{a}", lang), id=bid, n_clicks=0, className="warn-btn")
                    for a, bid in ACTION_BUTTONS.items()
                ],
                className="warn-btns",
            ),
            html.Div(id=ids.WARN_MSG, className="warn-msg"),
        ],
        id=ids.WARN_ACTIONS,
        className="warn-actions",
        style={"display": "none"},
    )
    return html.Div(
        [
            dcc.Interval(id=ids.WARN_TICK, interval=int(s.refresh_s * 1000), n_intervals=0),
            # ?id= opens one warning (its detail callback checks the session's right to it)
            dcc.Store(id=ids.WARN_SEL, data=auth.clean_id(query.get("id"))),
            dcc.Store(id=ids.WARN_SEEN, data=None),
            dcc.Store(id=ids.WARN_ALARM, data=[]),
            dcc.Store(id=ids.WARN_DONE, data=0),
            html.Div(id=ids.WARN_CUE, hidden=True),
            html.Div(
                [
                    html.H2(t("nav.warnings", lang)),
                    html.Div(id=ids.WARN_COUNTS, className="warnchips"),
                    html.Div(id=ids.WARN_BANNER),
                ],
                className="warn-head",
            ),
            filters,
            html.Div(
                [
                    html.Div(
                        [html.H3(t("warn.list", lang)), html.Div(id=ids.WARN_LIST)],
                        className="wg-panel warn-list",
                    ),
                    html.Div(the_map, className="wg-panel warn-map"),
                    html.Div(
                        [html.Div(id=ids.WARN_DETAIL), actions],
                        className="wg-panel warn-detail",
                    ),
                ],
                className="warn-grid",
            ),
        ]
    )


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
