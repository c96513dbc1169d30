"""研判预警 — the early-warning page: live list, map, detail with timeline and actions.

Thin callbacks over ``dashboard.pages.warnings.queries`` (pure) and
``pipelines.warnings.engine`` (SQL).
The list comes from the live warning list in Redis (shared by all viewers, one read per
tick); details and actions go to SQL. Scope always comes from the session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components.panels import leaflet_map, message_panel
from dashboard.i18n import t
from dashboard.pages.warnings import queries as WL
from pipelines.access import accounts
from pipelines.warnings import engine as W

dash.register_page(__name__, path="/warnings", name="warnings")

HOURS = (1, 6, 24, 168)


def layout(**_query: Any) -> Any:
    b = current()
    lang = L.lang()
    p = auth.principal()
    if p is None or p.wall:
        return message_panel(
            t("auth.denied", lang), t("auth.denied.body", lang), t("notfound.back", lang), "denied"
        )
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
            dcc.Store(id=ids.WARN_SEL, data=None),
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


ACTION_BUTTONS = {
    "acknowledge": ids.WARN_ACK,
    "dispatch": ids.WARN_DISPATCH,
    "resolve": ids.WARN_RESOLVE,
    "dismiss": ids.WARN_DISMISS,
}


# ------------------------------------------------------------------ list, counts, map, cue


def scoped_items(b: Backend) -> list[dict[str, Any]]:
    """The open warnings in the session's scope, read fresh (one HVALS of the open list):
    an action's result shows in the actor's own list at once, not a tick later."""
    p = auth.principal()
    if p is None or p.wall:
        return []
    return WL.in_scope(b.live.warnings(), b.city, p.scope)


@dash.callback(
    Output(ids.WARN_LIST, "children"),
    Output(ids.WARN_COUNTS, "children"),
    Output(ids.WARN_MARKERS, "data"),
    Output(ids.WARN_SEEN, "data"),
    Output(ids.WARN_ALARM, "data"),
    Output(ids.WARN_BANNER, "children"),
    Input(ids.WARN_TICK, "n_intervals"),
    Input(ids.WARN_LEVELS, "value"),
    Input(ids.WARN_STATUS, "value"),
    Input(ids.WARN_RULES, "value"),
    Input(ids.WARN_AREA, "value"),
    Input(ids.WARN_HOURS, "value"),
    Input(ids.WARN_DONE, "data"),
    State(ids.WARN_SEEN, "data"),
    State(ids.WARN_SEL, "data"),
    State(ids.LANG, "data"),
)
def refresh(
    _n: int,
    levels: list[str] | None,
    statuses: list[str] | None,
    rules: list[str] | None,
    area: str | None,
    hours: float | None,
    _done: int,
    seen: list[str] | None,
    selected: str | None,
    lang: str,
) -> tuple[Any, ...]:
    b = current()
    try:
        items = scoped_items(b)
    except L.BACKEND_ERRORS:
        return (no_update,) * 5 + (html.Span(t("warn.unavailable", lang), className="wg-muted"),)
    now = b.now_ms()
    shown = WL.apply(items, WL.Filters.of(levels, statuses, rules, area, hours, now), b.city)
    alarms = WL.new_alarms(items, seen) if seen is not None else []
    seen_now = sorted({*(seen or ()), *(w["id"] for w in items)})
    return (
        warning_rows(shown, b, lang, selected),
        level_chips(WL.level_counts(items), lang),
        WL.markers(shown, b.city),
        seen_now,
        alarms,
        alarm_banner(alarms, items, b, lang) if alarms else no_update,
    )


def level_chips(counts: dict[str, int], lang: str) -> list[Any]:
    return [
        html.Span(f"{t('warn.' + lv, lang)} {counts[lv]}", className=f"chip {lv}")
        for lv in reversed(W.LEVELS)
    ]


def area_name(b: Backend, area_id: str | None) -> str:
    row = b.city.area(area_id) if area_id else None
    return str(row["name"]) if row else (area_id or "")


def when(ms: int | None, b: Backend) -> str:
    if not ms:
        return "—"
    tz = ZoneInfo(b.settings.live.timezone)
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%m-%d %H:%M:%S")


def warning_rows(
    items: list[dict[str, Any]], b: Backend, lang: str, selected: str | None
) -> list[Any]:
    if not items:
        return [html.P(t("warn.none", lang), className="wg-muted")]
    out = []
    for w in items[:200]:
        cls = "warn-row" + (" sel" if w["id"] == selected else "")
        out.append(
            html.Div(
                [
                    html.Span(t(f"warn.{w['level']}", lang), className=f"chip {w['level']}"),
                    html.Span(t(f"rule.{w['rule']}", lang), className="warn-rule"),
                    html.Span(area_name(b, w["area_id"]), className="warn-area"),
                    html.Span(t(f"wstatus.{w['status']}", lang), className="warn-status"),
                    html.Span(when(w["last_ms"], b), className="wg-muted"),
                ],
                id={"type": ids.WARN_ROW, "id": w["id"]},
                n_clicks=0,
                className=cls,
            )
        )
    return out


def alarm_banner(
    alarm_ids: list[str], items: list[dict[str, Any]], b: Backend, lang: str
) -> html.Div:
    by_id = {w["id"]: w for w in items}
    worst = max((by_id[i] for i in alarm_ids), key=lambda w: W.RANK[w["level"]])
    text = t(
        "warn.alarm",
        lang,
        level=t(f"warn.{worst['level']}", lang),
        rule=t(f"rule.{worst['rule']}", lang),
        area=area_name(b, worst["area_id"]),
        n=len(alarm_ids),
    )
    return html.Div(f"⚠ {text}", className=f"warn-alarm {worst['level']}")


dash.clientside_callback(
    dash.ClientsideFunction(namespace="wangge_warn", function_name="cue"),
    Output(ids.WARN_CUE, "title"),
    Input(ids.WARN_ALARM, "data"),
    State(ids.WARN_SOUND, "value"),
)


# ------------------------------------------------------------------ selection and detail


@dash.callback(
    Output(ids.WARN_SEL, "data"),
    Input({"type": ids.WARN_ROW, "id": ALL}, "n_clicks"),
    Input(ids.WARN_MARKERS, "clickData"),
    prevent_initial_call=True,
)
def select(_clicks: list[int], marker: dict[str, Any] | None) -> Any:
    trig = ctx.triggered_id
    if isinstance(trig, dict) and any(_clicks or ()):
        return str(trig.get("id"))
    if trig == ids.WARN_MARKERS and marker:
        return str((marker.get("properties") or {}).get("id") or "") or no_update
    return no_update


@dash.callback(
    Output(ids.WARN_DETAIL, "children"),
    Output(ids.WARN_ACTIONS, "style"),
    *(Output(bid, "style") for bid in ACTION_BUTTONS.values()),
    Input(ids.WARN_SEL, "data"),
    Input(ids.WARN_DONE, "data"),
    Input(ids.WARN_TICK, "n_intervals"),
    State(ids.LANG, "data"),
)
def detail(warning_id: str | None, _done: int, _n: int, lang: str) -> tuple[Any, ...]:
    b = current()
    hidden = {"display": "none"}
    none = (hidden,) * (1 + len(ACTION_BUTTONS))
    if not isinstance(warning_id, str) or not warning_id:
        return html.P(t("warn.pick", lang), className="wg-muted"), *none
    try:
        row = W.warning_detail(b.engine, warning_id)
    except L.BACKEND_ERRORS:
        return html.P(t("warn.unavailable", lang), className="wg-muted"), *none
    if row is None or not auth.allowed(b.city, row["area_id"]):  # scope from the session
        return html.P(t("warn.gone", lang), className="wg-muted"), *none
    p = auth.principal()
    can = WL.allowed_actions(p.role, _can_act(p), row["status"]) if p else []
    buttons = [{} if a in can else hidden for a in ACTION_BUTTONS]
    return detail_panel(row, b, lang), ({} if can else hidden), *buttons


def _can_act(p: auth.Principal) -> bool:
    spec = accounts.ROLES.get(p.role)
    return bool(spec and spec.can_act and not p.wall)


def detail_panel(row: dict[str, Any], b: Backend, lang: str) -> html.Div:
    summary = [html.Li(f"{_field(k, lang)}: {_fmt(v, lang)}") for k, v in _flat(row["summary"])]
    timeline = [
        html.Li(
            [
                html.Span(when(a["at_ms"], b), className="wg-muted"),
                f" {t('waction.' + a['action'], lang)} · {_actor(a['actor'], lang)}",
                f" · {_note(a['action'], a['note'], b, lang)}" if a["note"] else "",
            ]
        )
        for a in row["timeline"]
    ]
    facts = [
        (t("wfield.rule", lang), t(f"rule.{row['rule']}", lang)),
        (t("wfield.area", lang), area_name(b, row["area_id"])),
        (t("wfield.status", lang), t(f"wstatus.{row['status']}", lang)),
        (t("wfield.first", lang), when(row["first_seen_ms"], b)),
        (t("wfield.last", lang), when(row["last_seen_ms"], b)),
    ]
    if row.get("escalated_to"):
        facts.append((t("wfield.escalated", lang), area_name(b, row["escalated_to"])))
    if row.get("assigned_to"):
        facts.append((t("wfield.assigned", lang), row["assigned_to"]))
    if row.get("close_note"):
        facts.append((t("wfield.reason", lang), row["close_note"]))
    return html.Div(
        [
            html.H3(
                [
                    html.Span(t(f"warn.{row['level']}", lang), className=f"chip {row['level']}"),
                    " ",
                    t(f"rule.{row['rule']}", lang),
                ]
            ),
            html.Dl([x for k, v in facts for x in (html.Dt(k), html.Dd(v))], className="warn-dl"),
            html.H4(t("warn.summary", lang)),
            html.Ul(summary),
            html.H4(t("warn.evidence", lang, n=len(row["evidence"]))),
            html.Div(
                [
                    dcc.Link(e, href=f"/area/{row['area_id']}", className="warn-ev")
                    for e in row["evidence"]
                ],
                className="warn-evs",
            ),
            html.H4(t("warn.timeline", lang)),
            html.Ul(timeline, className="warn-timeline"),
        ]
    )


def _actor(actor: str, lang: str) -> str:
    return t("warn.engine", lang) if actor == "engine" else actor


def _note(action: str, note: str, b: Backend, lang: str) -> str:
    if action == "open":
        return t(f"warn.{note}", lang)  # the level it opened at
    if action == "escalate":
        return area_name(b, note)
    return note


def _flat(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """A fused situation's parts are listed after its own fields."""
    out = [(k, v) for k, v in summary.items() if k != "parts"]
    for part in (summary.get("parts") or {}).values():
        out += [(k, v) for k, v in part.items() if isinstance(part, dict)]
    return out


def _field(key: str, lang: str) -> str:
    got = t("wfield." + key, lang)
    return key if got == "wfield." + key else got


def _fmt(v: Any, lang: str) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ", ".join(_fmt(x, lang) for x in v[:10]) + (" …" if len(v) > 10 else "")
    if isinstance(v, dict):
        return ", ".join(f"{_fmt(k, lang)} {_fmt(x, lang)}" for k, x in v.items())
    text = str(v)
    for prefix in ("cat.", "label.", "step."):
        got = t(prefix + text, lang)
        if got != prefix + text:
            return got
    return text


# ------------------------------------------------------------------ actions


@dash.callback(
    Output(ids.WARN_MSG, "children"),
    Output(ids.WARN_DONE, "data"),
    *(Input(bid, "n_clicks") for bid in ACTION_BUTTONS.values()),
    State(ids.WARN_SEL, "data"),
    State(ids.WARN_NOTE, "value"),
    State(ids.WARN_ASSIGNEE, "value"),
    State(ids.WARN_DONE, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def take_action(*args: Any) -> tuple[Any, Any]:
    *_clicks, warning_id, note, assignee, done, lang = args
    action = next((a for a, bid in ACTION_BUTTONS.items() if bid == ctx.triggered_id), None)
    if action is None or not isinstance(warning_id, str):
        return no_update, no_update
    b = current()
    p = auth.principal()
    result = act(b, p, warning_id, action, str(note or ""), str(assignee or ""))
    return t(f"wresult.{result}", lang), (done or 0) + (result == "ok")


def act(
    b: Backend,
    p: auth.Principal | None,
    warning_id: str,
    action: str,
    note: str,
    assignee: str,
) -> str:
    """Check role and scope on the server, act, republish the live list: a result code."""
    if p is None or not _can_act(p):
        return "denied"
    row = W.warning_detail(b.engine, warning_id)
    if row is None or not accounts.scope_allows(p.scope, row["area_id"], b.city):
        return "denied"
    try:
        ok = W.act(
            b.engine,
            warning_id,
            action,
            p.username,
            b.now_ms(),
            role=p.role,
            scope=p.scope,
            note=note,
            assignee=assignee,
        )
    except W.ActionError:
        return "need_note" if action == "dismiss" else "need_assignee"
    if not ok:
        return "stale"
    W.republish(b.engine, b.live, b.city)  # every viewer's list shows it at their next tick
    return "ok"
