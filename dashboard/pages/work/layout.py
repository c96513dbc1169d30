"""网格工作 — grid work: who is on patrol where, which grids nobody walked today, what each
worker did, and track replay. Same drill-down as the panorama: ``/work/<area_id>``.

Privacy: names, positions of individuals and tracks only for ``auth.INDIVIDUALS``
(district and street command, in scope); other roles see clusters, counts and coverage.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import dash
import dash_leaflet as dl
import orjson
from dash import (
    ALL,
    ClientsideFunction,
    Input,
    Output,
    State,
    clientside_callback,
    dcc,
    html,
    no_update,
)

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components.panels import breadcrumbs, fmt_int, fmt_pct, leaflet_map, message_panel
from dashboard.i18n import t
from dashboard.pages.panorama.queries import hideout, local_day, view_of
from dashboard.pages.work import queries as WQ

dash.register_page(__name__, path="/work", path_template="/work/<area_id>", name="work")

SPEEDS = (1, 5, 15, 60)  # track minutes per second of replay


def _denied(lang: str) -> html.Div:
    return message_panel(
        t("auth.denied", lang), t("auth.denied.body", lang), t("notfound.back", lang), "denied"
    )


def layout(area_id: str | None = None, **_query: Any) -> Any:
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
        return _denied(lang)
    people = auth.sees_people()
    s = b.settings.dashboard
    row = b.city.area(view.area_id)
    assert row is not None
    zoom = {"city": 9, "district": 11, "street": 13, "grid": 15}[view.level]
    the_map = leaflet_map(
        ids.WK_MAP,
        ids.WK_GEO,
        f"/geo/area/{view.area_id}.json",
        (row["lon"], row["lat"]),
        zoom,
        s.tile_url,
        s.tile_crs == "gcj02",
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
    roster = roster.sort("grid_id", "worker_id").head(3000)
    names = {g: n for g, n in zip(b.city.grids["grid_id"], b.city.grids["name"], strict=True)}
    workers = [
        {"label": f"{n} · {names.get(g, g)}", "value": w}
        for w, n, g in roster.select("worker_id", "name", "grid_id").iter_rows()
    ]
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


# ------------------------------------------------------------------ the refresh


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
)
def refresh(_n: int, area_id: str, last_ok: int | None, sent: Any, lang: str) -> tuple[Any, ...]:
    """Thin: this tick's shared panel for the area, shaped for the viewer's role; parts
    the viewer already has (same digest) are not sent again."""
    b = current()
    if not auth.allowed(b.city, area_id):  # the scope comes from the session, not the store
        return (no_update,) * 2 + ([_denied(lang)],) + (no_update,) * 7
    people = auth.sees_people()
    key = f"work:{area_id}:{int(people)}:{lang}"
    b.keep_warm(key, lambda: cached_outputs(b, area_id, people, lang, None))
    out, digests = cached_outputs(b, area_id, people, lang, last_ok)
    return (*only_changed(out, digests, sent), digests or no_update)


PARTS = ("hideout", "legend", "kpis", "markers", "gaps", "bottom", "logs")


def only_changed(out: tuple[Any, ...], digests: dict[str, str], sent: Any) -> tuple[Any, ...]:
    """``no_update`` for every part whose digest equals the one the viewer already has."""
    had = sent if isinstance(sent, dict) else {}
    parts = list(out)
    for i, name in enumerate(PARTS):
        if digests.get(name) is not None and had.get(name) == digests[name]:
            parts[i] = no_update
    return tuple(parts)


def cached_outputs(
    b: Backend, area_id: str, people: bool, lang: str, last_ok: int | None
) -> tuple[tuple[Any, ...], dict[str, str]]:
    key = f"work:{area_id}:{int(people)}:{lang}"
    try:
        got: tuple[tuple[Any, ...], dict[str, str]] = b.per_tick(
            key, lambda: outputs(b, area_id, people, lang)
        )
    except L.BACKEND_ERRORS:
        stale = L.stale_mark(last_ok, b.settings.live.timezone, lang)
        return (*(no_update,) * 7, stale, no_update), {}
    return got


def panel(b: Backend, area_id: str, people: bool) -> dict[str, Any]:
    """The area's numbers for this tick (shared by all viewers through Redis)."""
    level = b.city.level_of(area_id)
    assert level is not None

    def compute() -> dict[str, Any]:
        now = b.now_ms()
        tz = b.settings.live.timezone
        snap = WQ.snapshot(
            level=level,
            area_id=area_id,
            children=b.city.children(area_id),
            grids=b.city.grids,
            roster=b.roster(),
            live=WQ.live_frame(b),
            patrolled=b.live.patrolled(local_day(now, tz)),
            now_ms=now,
            online_ms=b.settings.live.online_minutes * 60_000,
            people=people,
        )
        logs = WQ.work_logs(b.engine, level, area_id, WQ.day_start_ms(now, tz))
        snap["logs"] = logs.to_dicts()
        return snap

    data: dict[str, Any] = b.shared(f"work:{area_id}:{int(people)}", compute)
    return data


def activity_rows(b: Backend, area_id: str) -> list[dict[str, Any]]:
    """Per-worker activity of a street or grid (people roles only), cached for a minute."""
    level = b.city.level_of(area_id)
    assert level in ("street", "grid")

    def compute() -> list[dict[str, Any]]:
        now = b.now_ms()
        roster = b.roster().filter(WQ.area_filter(level, area_id))
        since = WQ.day_start_ms(now, b.settings.live.timezone)
        rows: list[dict[str, Any]] = (
            WQ.activity(b.engine, roster, WQ.live_frame(b), since, now).head(WQ.MAX_LIST).to_dicts()
        )
        return rows

    minute = int(b.clock() // 60)
    rows: list[dict[str, Any]] = b.cache.get(f"work:act:{area_id}:{minute}", 60, compute)
    return rows


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value), digest_size=8).hexdigest()


def outputs(
    b: Backend, area_id: str, people: bool, lang: str
) -> tuple[tuple[Any, ...], dict[str, str]]:
    snap = panel(b, area_id, people)
    level = b.city.level_of(area_id) or "city"
    hide = hideout("coverage", snap["values"])
    tz = b.settings.live.timezone
    names = _names(b)
    if people and level in ("street", "grid"):
        rows = activity_rows(b, area_id)
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
        "",
        snap["now_ms"],
    ), digests


def _names(b: Backend) -> dict[str, str]:
    def compute() -> dict[str, str]:
        a = b.city.areas
        return dict(zip(a["area_id"].to_list(), a["name"].to_list(), strict=True))

    names: dict[str, str] = b.cache.local_only("work:names", 3600, compute)
    return names


# ------------------------------------------------------------------ builders (no I/O)


def _tile(label: str, value: str, sub: str = "", cls: str = "") -> html.Div:
    return html.Div(
        [
            html.Div(label, className="label"),
            html.Div(value, className=f"value {cls}"),
            html.Div(sub, className="sub"),
        ],
        className="kpi",
    )


def kpi_tiles(k: dict[str, Any], lang: str) -> list[Any]:
    return [
        _tile(t("work.kpi.on_duty", lang), fmt_int(k["on_duty"])),
        _tile(t("work.kpi.online", lang), fmt_int(k["online"]), cls="good"),
        _tile(
            t("work.kpi.offline", lang), fmt_int(k["offline"]), cls="bad" if k["offline"] else ""
        ),
        _tile(t("work.kpi.in_own", lang), fmt_int(k["in_own"])),
        _tile(
            t("work.kpi.coverage", lang),
            fmt_pct(k["coverage"]),
            sub=f"{fmt_int(k['patrolled'])} / {fmt_int(k['grids'])}",
        ),
        _tile(
            t("work.kpi.unpatrolled", lang),
            fmt_int(k["unpatrolled"]),
            cls="bad" if k["unpatrolled"] else "good",
        ),
    ]


def legend(h: dict[str, Any], lang: str, people: bool, level: str) -> list[Any]:
    rows: list[Any] = [html.Div(t("metric.coverage", lang), className="wg-muted")]
    for color, b in zip(h.get("colors", []), h.get("breaks", []), strict=False):
        rows.append(
            html.Div(
                [html.Span(className="sw", style={"background": color}), f"≤ {b * 100:.0f}%"],
                className="row",
            )
        )
    if people and level in ("street", "grid"):
        for typ, color in WQ.TYPE_COLORS.items():
            rows.append(
                html.Div(
                    [
                        html.Span(className="dot", style={"background": color}),
                        t(f"type.{typ}", lang),
                    ],
                    className="row",
                )
            )
        rows.append(
            html.Div(
                [
                    html.Span(className="dot", style={"background": WQ.OFFLINE}),
                    t("work.legend.offline", lang),
                ],
                className="row",
            )
        )
    else:
        rows.append(
            html.Div(
                [html.Span("12", className="wk-cl-sample"), t("work.legend.cluster", lang)],
                className="row",
            )
        )
    return rows


def gap_list(gaps: list[str], total: int, names: dict[str, str], lang: str) -> list[Any]:
    if not total:
        return [html.Div(t("work.gaps.none", lang), className="wg-muted")]
    items: list[Any] = [
        html.Li(dcc.Link(names.get(g, g), href=f"/work/{g}"), className="wk-gap") for g in gaps
    ]
    out: list[Any] = [html.Ul(items, className="wk-gap-list")]
    if total > len(gaps):
        out.append(html.Div(t("work.gaps.more", lang, n=total - len(gaps)), className="wg-muted"))
    return out


def _table(head: list[str], body: list[list[Any]]) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in head])),
            html.Tbody([html.Tr([html.Td(c) for c in row]) for row in body]),
        ],
        className="wk-tbl",
    )


def children_table(rows: list[dict[str, Any]], names: dict[str, str], lang: str, level: str) -> Any:
    if not rows:
        return html.Div(t("work.activity.street", lang), className="wg-muted")
    head = [
        t("work.col.area", lang),
        t("work.col.on_duty", lang),
        t("work.col.online", lang),
        t("work.col.coverage", lang),
    ]
    body = []
    for r in rows:
        share = r["patrolled"] / r["grids"] if r["grids"] else None
        body.append(
            [
                dcc.Link(names.get(r["area_id"], r["area_id"]), href=f"/work/{r['area_id']}"),
                fmt_int(r["on_duty"]),
                fmt_int(r["online"]),
                f"{fmt_pct(share)} ({r['patrolled']}/{r['grids']})",
            ]
        )
    return _table(head, body)


def _duration(ms: int) -> str:
    m = int(ms // 60_000)
    return f"{m // 60}:{m % 60:02d}"


def activity_table(rows: list[dict[str, Any]], names: dict[str, str], lang: str, tz: str) -> Any:
    head = [
        t("work.col.worker", lang),
        t("work.col.type", lang),
        t("work.col.grid", lang),
        t("work.col.phone", lang),
        t("work.col.reports", lang),
        t("work.col.handled", lang),
        t("work.col.distance", lang),
        t("work.col.own_time", lang),
        t("work.col.last_seen", lang),
    ]
    body = []
    for r in rows:
        dot = html.Span(className="dot " + ("on" if r["online"] else "off"))
        body.append(
            [
                html.Span([dot, r["name"]]),
                t(f"type.{r['type']}", lang),
                names.get(r["grid_id"], r["grid_id"]),
                r["phone_masked"] or "—",  # stored masked; never the full number
                fmt_int(r["reports"]),
                fmt_int(r["handled"]),
                f"{r['distance_m'] / 1000:.2f} km",
                _duration(r["own_grid_ms"]),
                WQ.local_time(r["last_seen_ms"], tz),
            ]
        )
    return _table(head, body)


def log_list(
    logs: list[dict[str, Any]],
    names: dict[str, str],
    lang: str,
    tz: str,
    people: bool,
    b: Backend,
) -> list[Any]:
    if not logs:
        return [html.Div(t("work.logs.none", lang), className="wg-muted")]
    who: dict[str, str] = {}
    if people:
        roster = b.roster()
        ids_ = {x for r in logs for x in (r["reporter_id"], r["handler_id"]) if x}
        mine = roster.filter(roster["worker_id"].is_in(list(ids_)))
        who = dict(zip(mine["worker_id"].to_list(), mine["name"].to_list(), strict=True))
    out = []
    for r in logs:
        reported = r["step"] == "reported"
        wid = r["reporter_id"] if reported else r["handler_id"]
        person = (
            who.get(wid or "", t("work.logs.anon", lang)) if people else t("work.logs.anon", lang)
        )
        verb = t(f"step.{r['step']}", lang)
        cat = t(f"cat.{r['category']}", lang)
        out.append(
            html.Div(
                [
                    html.Span(WQ.local_time(r["ts_ms"], tz, "%H:%M:%S"), className="t"),
                    html.Span(f"{person} {verb} {cat}"),
                    html.Span(names.get(r["grid_id"], r["grid_id"]), className="wg-muted"),
                ],
                className="tick-row",
            )
        )
    return out


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
    return f"/work/{target}" if target and auth.allowed(city, target) else no_update


# ------------------------------------------------------------------ track replay

EMPTY_FC: dict[str, Any] = {"type": "FeatureCollection", "features": []}
HIDDEN = {"display": "none"}


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
    if not auth.sees_people() or not auth.allowed(b.city, area_id):
        return []
    level = b.city.level_of(area_id) or "city"
    roster = b.roster().filter(WQ.area_filter(level, area_id))
    if grid_id and auth.allowed(b.city, grid_id):
        now = b.now_ms()
        try:
            win = _window(b, choice, day, from_h, to_h)
            since, until = win.since_ms, win.until_ms
        except WQ.WindowError:
            since, until = WQ.day_start_ms(now, b.settings.live.timezone), now
        passed = WQ.workers_in_grid(b.engine, grid_id, since, until)
        roster = roster.filter((roster["grid_id"] == grid_id) | roster["worker_id"].is_in(passed))
    names = _names(b)
    return [
        {"label": f"{n} · {names.get(g, g)}", "value": w}
        for w, n, g in roster.sort("grid_id", "worker_id")
        .head(3000)
        .select("worker_id", "name", "grid_id")
        .iter_rows()
    ]


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
    if not auth.sees_people():
        return _no_replay(t("work.replay.hint", lang))
    try:
        win = _window(b, choice, day, from_h, to_h)
    except WQ.WindowError as exc:
        return _no_replay(t(exc.key, lang, **exc.kw), error=True)
    roster = b.roster()
    if worker_id:
        grid = WQ.worker_grid(roster, worker_id)
        if grid is None or not auth.allowed(b.city, grid):
            return _no_replay(t("work.replay.hint", lang))
        shown, total, outline = [str(worker_id)], 1, None
        href = f"/export/track/{worker_id}.csv?{win.query}"
        _audit_view(str(worker_id), win.detail())
    elif grid_id and auth.allowed(b.city, grid_id):
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


def replay_summary(
    data: dict[str, Any], n_reports: int, total: int, lang: str, *, grid: bool
) -> list[Any]:
    """Points, distance and reports; for a grid: how many workers (and the cap) and a legend
    of their colours. Names are text children, never HTML."""
    km = f"{data['km']:.2f}"
    workers = data["workers"]
    if not grid:
        return [t("work.replay.summary", lang, n=data["points"], km=km, r=n_reports)]
    out: list[Any] = [
        html.Div(
            t(
                "work.replay.summary.grid",
                lang,
                w=len(workers),
                n=data["points"],
                km=km,
                r=n_reports,
            )
        )
    ]
    if total > len(workers):
        out.append(html.Div(t("work.replay.capped", lang, cap=len(workers), total=total)))
    out.append(
        html.Div(
            [
                html.Span(
                    [html.Span(className="dot", style={"background": w["c"]}), w["n"]],
                    className="wk-who",
                )
                for w in workers
            ],
            className="wk-legend",
        )
    )
    return out


def report_features(
    reports: list[dict[str, Any]], workers: list[dict[str, Any]], tz: str, lang: str
) -> dict[str, Any]:
    """Reports on the way as map points where the worker stood, the tooltip: time, category
    (and, with several workers, who)."""
    several = len(workers) > 1
    feats = []
    for r in reports:
        text = f"{WQ.local_time(r['t'], tz)} {t('cat.' + r['cat'], lang)}"
        if several:
            text += f" · {workers[r['w']]['n']}"
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [r["ll"][1], r["ll"][0]]},
                "properties": {"k": "r", "n": text, "c": workers[r["w"]]["c"]},
            }
        )
    return {"type": "FeatureCollection", "features": feats}


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
