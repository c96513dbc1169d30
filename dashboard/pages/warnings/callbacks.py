"""Early-warning page callbacks: the live list, selection, detail and the actions (checked
on the server against role and scope; the scope always comes from the session)."""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, ctx, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components import timemachine as tm
from dashboard.i18n import t
from dashboard.pages.warnings import queries as WL
from dashboard.pages.warnings.components import (
    ACTION_BUTTONS,
    alarm_banner,
    detail_panel,
    level_chips,
    warning_rows,
)
from pipelines import warnings as W
from pipelines.access import accounts


def scoped_items(b: Backend, at_ms: int | None = None) -> list[dict[str, Any]]:
    """The open warnings in the session's scope, read fresh (one HVALS of the open list,
    never cached): an action's result shows in the actor's own list at once. At a past
    moment ``at_ms``: those open then, with their level and status then."""
    p = auth.principal()
    if p is None or p.wall:
        return []
    grant = auth.authorize(p.scope, "warnings")
    if not grant.granted:
        return []
    return WL.in_scope(L.reader(b, at_ms, grant.area_id).warnings(), b.city, grant.area_id)


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
    State(ids.tm("warn", "at"), "data"),  # play bumps the tick when it moves on
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
    at_value: Any = None,
) -> tuple[Any, ...]:
    b = current()
    lang = L.lang_of(lang)
    at_ms = tm.moment_of(b, at_value)  # a past moment, or live
    try:
        items = scoped_items(b, at_ms)
    except L.BACKEND_ERRORS:
        return (no_update,) * 5 + (html.Span(t("warn.unavailable", lang), className="wg-muted"),)
    now = b.now_ms() if at_ms is None else at_ms
    shown = WL.apply(items, WL.Filters.of(levels, statuses, rules, area, hours, now), b.city)
    if at_ms is not None:  # the past never raises an alarm
        return (
            warning_rows(shown, b, lang, selected),
            level_chips(WL.level_counts(items), lang),
            WL.markers(shown, b.city),
            no_update,
            [],
            None,
        )
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


dash.clientside_callback(
    dash.ClientsideFunction(namespace="wangge_warn", function_name="cue"),
    Output(ids.WARN_CUE, "title"),
    Input(ids.WARN_ALARM, "data"),
    State(ids.WARN_SOUND, "value"),
)


@dash.callback(
    Output(ids.WARN_SEL, "data"),
    Input({"type": ids.WARN_ROW, "id": ALL}, "n_clicks"),
    Input(ids.WARN_MARKERS, "clickData"),
    prevent_initial_call=True,
)
def select(_clicks: list[int], marker: dict[str, Any] | None) -> Any:
    trig = ctx.triggered_id
    if isinstance(trig, dict) and any(_clicks or ()):
        return auth.clean_id(trig.get("id")) or no_update
    props = marker.get("properties") if isinstance(marker, dict) else None
    if trig == ids.WARN_MARKERS and isinstance(props, dict):
        return auth.clean_id(props.get("id")) or no_update
    return no_update


@dash.callback(
    Output(ids.WARN_DETAIL, "children"),
    Output(ids.WARN_ACTIONS, "style"),
    *(Output(bid, "style") for bid in ACTION_BUTTONS.values()),
    Input(ids.WARN_SEL, "data"),
    Input(ids.WARN_DONE, "data"),
    Input(ids.WARN_TICK, "n_intervals"),
    State(ids.LANG, "data"),
    State(ids.tm("warn", "at"), "data"),
)
def detail(
    warning_id: str | None, _done: int, _n: int, lang: str, at_value: Any = None
) -> tuple[Any, ...]:
    b = current()
    lang = L.lang_of(lang)
    hidden = {"display": "none"}
    none = (hidden,) * (1 + len(ACTION_BUTTONS))
    if not isinstance(warning_id, str) or not warning_id:
        return html.P(t("warn.pick", lang), className="wg-muted"), *none
    try:
        row = warning_of(b, warning_id)
    except L.BACKEND_ERRORS:
        return html.P(t("warn.unavailable", lang), className="wg-muted"), *none
    if row is None:  # unknown, or outside the session's scope (audited)
        return html.P(t("warn.gone", lang), className="wg-muted"), *none
    p = auth.principal()
    can = WL.allowed_actions(p.role, _can_act(p), row["status"]) if p else []
    if tm.moment_of(b, at_value) is not None:
        can = []  # a past view: nothing to act on
    buttons = [{} if a in can else hidden for a in ACTION_BUTTONS]
    return detail_panel(row, b, lang), ({} if can else hidden), *buttons


def warning_of(b: Backend, warning_id: object, kind: str = "warnings") -> dict[str, Any] | None:
    """The warning if the session may see ``kind`` of it (its area decides; a refusal or
    an unknown id is audited), else None. An odd id is refused before any lookup."""
    wid = auth.clean_id(warning_id)
    if wid is None:
        auth.refused(kind, warning_id, "malformed id")
        return None
    row = W.warning_detail(b.engine, wid)
    if row is None:
        auth.refused(kind, wid, "unknown warning")
        return None
    if not auth.authorize(row["area_id"], kind, target=wid).granted:
        return None
    return row


def _can_act(p: auth.Principal) -> bool:
    spec = accounts.ROLES.get(p.role)
    return bool(spec and spec.can_act and not p.wall)


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
    lang = L.lang_of(lang)
    p = auth.principal()
    note, assignee = auth.safe_text(note or "", 2000), auth.safe_text(assignee or "", 200)
    result = act(b, p, warning_id, action, note, assignee)
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
    if warning_of(b, warning_id, "warning_actions") is None:  # its area decides
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


fresh = L.freshness_on(ids.WARN_TICK, ids.tm("warn", "at"))  # the header's freshness line


tm.register("warn", ids.WARN_TICK)  # the "view at" control: the warnings open at a past moment
