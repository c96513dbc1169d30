"""Assessment callbacks: render the scorecard for the URL's view, navigate (drill-down and
pickers), list the incidents behind a number, and run exports as background jobs."""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import date
from typing import Any

import dash
from dash import Input, Output, State, ctx, dcc, html, no_update
from flask import current_app

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.i18n import t
from dashboard.pages.assessment import export_jobs as J
from dashboard.pages.assessment import queries as A
from dashboard.pages.assessment.components import (
    EXPORT_BUTTONS,
    crumbs,
    grid,
    progress_bar,
    session_view,
    title,
)
from pipelines import assessment as S
from pipelines.assessment import exports as E

TOKEN_TTL_MS = 30 * 60_000


def shown_for(b: Backend, grant: auth.Decision, view: A.View) -> S.Shown:
    """The view's scorecard as displayed (computed at most once a minute per view and data
    class, for viewers whose decision granted the view's area)."""
    assert grant.area_id == view.area

    def compute() -> S.Shown:
        card = S.scorecard(
            b.engine, b.city, b.settings, view.level, view.period, b.now_ms(), scope=view.area
        )
        return S.Shown.of(card)

    shown: S.Shown = b.cached(grant, "asm", compute, view.level, view.period.key, period_s=60)
    return shown


@dash.callback(
    Output(ids.ASM_TABLE, "rowData"),
    Output(ids.ASM_TABLE, "columnDefs"),
    Output(ids.ASM_TITLE, "children"),
    Output(ids.ASM_CRUMBS, "children"),
    Output(ids.ASM_TOKEN, "data"),
    Input(ids.ASM_VIEW, "data"),
    State(ids.LANG, "data"),
)
def render(query: dict[str, Any] | None, lang: str) -> tuple[Any, ...]:
    b = current()
    lang = L.lang_of(lang)
    view = session_view(b, query if isinstance(query, dict) else {})
    grant = auth.authorize(view.area, "scorecards") if view is not None else None
    if view is None or grant is None or not grant.granted:
        return [], no_update, t("auth.denied", lang), [], None
    p = auth.principal()
    assert p is not None
    try:
        shown = shown_for(b, grant, view)
    except L.BACKEND_ERRORS:
        return [], no_update, html.Span(t("asm.unavailable", lang), className="wg-muted"), [], None
    token = secrets.token_urlsafe(18)
    payload = {"user": p.username, "shown": shown.to_json()}
    with contextlib.suppress(*L.BACKEND_ERRORS):
        key = _token_key(b, p.username, token)
        b.r.set(key, json.dumps(payload, ensure_ascii=False), px=TOKEN_TTL_MS)
    return (
        A.table_data(shown.rows),
        A.columns(view.level, lang, b.settings, A.bands(shown.rows, S.weights(b.settings))),
        title(shown, b, lang),
        crumbs(b, p.scope, view),
        token,
    )


def _token_key(b: Backend, owner: str, token: str) -> str:
    """Where a shown table waits for its export: under its owner, so a lookup can only
    ever find the asking user's own tables."""
    return f"{b.settings.redis.prefix}:asm:shown:{owner}:{token}"


@dash.callback(
    Output(ids.URL, "search"),
    Input(ids.ASM_KIND, "value"),
    Input(ids.ASM_PERIOD, "value"),
    Input(ids.ASM_RANGE, "start_date"),
    Input(ids.ASM_RANGE, "end_date"),
    Input(ids.ASM_LEVEL, "value"),
    Input(ids.ASM_TABLE, "cellClicked"),
    State(ids.ASM_VIEW, "data"),
    prevent_initial_call=True,
)
def navigate(
    kind: str | None,
    period: str | None,
    start: str | None,
    end: str | None,
    level: str | None,
    cell: dict[str, Any] | None,
    query: dict[str, Any] | None,
) -> Any:
    b = current()
    view = session_view(b, query if isinstance(query, dict) else {})
    if view is None:
        return no_update
    tz = b.settings.live.timezone
    trig = ctx.triggered_id
    q = {"level": view.level, "period": view.period.key, "area": view.area}
    if trig == ids.ASM_TABLE:
        if not isinstance(cell, dict) or cell.get("colId") != "name":
            return no_update
        target = A.drill(b.city, view, str(cell.get("rowId") or ""))
        if target is None:
            return no_update
        q = {"level": target.level, "period": view.period.key, "area": target.area}
    elif trig == ids.ASM_KIND and isinstance(kind, str):
        if kind == view.period.kind or kind not in A.KINDS:
            return no_update
        if kind == "range":
            q["period"] = f"{view.period.first}..{view.period.last}"
        else:
            q["period"] = S.current_period(kind, b.now_ms(), tz).key
    elif trig == ids.ASM_PERIOD and isinstance(period, str):
        q["period"] = period
    elif trig in (ids.ASM_RANGE,) and isinstance(start, str) and isinstance(end, str):
        with contextlib.suppress(ValueError):
            a, z = date.fromisoformat(start[:10]), date.fromisoformat(end[:10])
            q["period"] = f"{min(a, z)}..{max(a, z)}"
    elif trig == ids.ASM_LEVEL and isinstance(level, str):
        q["level"] = level
    else:
        return no_update
    new = A.view_of(b.city, auth.principal().scope, q, b.now_ms(), tz)  # type: ignore[union-attr]
    if new == view:
        return no_update
    return new.search()


@dash.callback(
    Output(ids.ASM_BEHIND, "children"),
    Output(ids.ASM_BEHIND, "hidden"),
    Input(ids.ASM_TABLE, "cellClicked"),
    State(ids.ASM_VIEW, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def behind(cell: dict[str, Any] | None, query: dict[str, Any] | None, lang: str) -> Any:
    b = current()
    lang = L.lang_of(lang)
    view = session_view(b, query if isinstance(query, dict) else {})
    if view is None or not isinstance(cell, dict):
        return no_update, no_update
    metric = str(cell.get("colId") or "")
    row_id = str(cell.get("rowId") or "")
    if metric not in S.METRICS:
        return no_update, no_update
    if not _row_in_scope(b, view, row_id):  # scope from the session, never the cell
        return [html.P(t("warn.gone", lang), className="wg-muted")], False
    row_id = str(auth.clean_id(row_id))
    m = S.METRICS[metric]
    if m.flag is None:
        return [html.P(t("asm.behind.not_incidents", lang), className="wg-muted")], False
    try:
        frame = S.incidents_behind(
            b.engine, b.city, b.settings, view.level, view.period, row_id, metric, b.now_ms()
        )
    except L.BACKEND_ERRORS:
        return [html.P(t("asm.unavailable", lang), className="wg-muted")], False
    tz = b.settings.live.timezone
    rows = A.behind_rows(frame, tz, lang, b.area_names) if frame.height else []
    for r in rows:
        r["category"] = t(f"cat.{r['category']}", lang)
        r["source"] = t(f"asm.src.{r['source']}", lang)
        r["level"] = t(f"level.{r['level']}", lang) if r["level"] != "—" else "—"
    name = _row_name(b, view, row_id)
    head = html.H3(t("asm.behind", lang, name=name, metric=m.name(lang), n=len(rows)))
    if not rows:
        return [head, html.P(t("asm.behind.none", lang), className="wg-muted")], False
    cols = [
        ("incident_id", "asm.col.incident"),
        ("category", "asm.col.category"),
        ("source", "asm.col.source"),
        ("grid", "asm.col.grid"),
        ("reported", "asm.col.reported"),
        ("closed", "asm.col.closed"),
        ("level", "asm.col.level"),
        ("hours", "asm.col.hours"),
        ("counts", "asm.behind.counts"),
    ]
    table = grid(
        ids.ASM_BEHIND_TABLE,
        A.behind_columns([(c, t(k, lang)) for c, k in cols]),
        f"{min(15, len(rows)) * 28 + 60}px",
        [{**r, "id": r["incident_id"]} for r in rows],
        lang=lang,
        getRowStyle={
            "styleConditions": [
                {"condition": "params.data.counts == '✗'", "style": {"color": "#ffb4b4"}}
            ]
        },
    )
    return [head, table], False


def _row_in_scope(b: Backend, view: A.View, row_id: str) -> bool:
    """May the session see the incidents behind this row (its area decides; audited)?"""
    rid = auth.clean_id(row_id)
    if view.level == "worker":
        roster = b.roster()
        hit = roster.filter(roster["worker_id"] == rid) if rid else roster.clear()
        grid = str(hit["grid_id"][0]) if not hit.is_empty() else None
        if grid is None or view.area not in b.city.ancestors(grid):
            auth.refused("scorecards", row_id, "not a row of the view")
            return False
        return auth.authorize(grid, "scorecards", target=row_id).granted
    if rid is None or b.city.level_of(rid) != view.level or view.area not in b.city.ancestors(rid):
        auth.refused("scorecards", row_id, "not a row of the view")
        return False
    return auth.authorize(rid, "scorecards").granted


def _row_name(b: Backend, view: A.View, row_id: str) -> str:
    if view.level == "worker":
        roster = b.roster()
        hit = roster.filter(roster["worker_id"] == row_id)
        return str(hit["name"][0]) if not hit.is_empty() else row_id
    row = b.city.area(row_id)
    return str(row["name"]) if row else row_id


@dash.callback(
    Output(ids.ASM_JOB, "data"),
    Output(ids.ASM_READY, "data"),
    Output(ids.ASM_POLL, "disabled"),
    Output(ids.ASM_PROGRESS, "children"),
    Output(ids.ASM_PROGRESS, "hidden"),
    Output(ids.ASM_MSG, "children"),
    *(Output(bid, "disabled") for bid in EXPORT_BUTTONS.values()),
    *(Input(bid, "n_clicks") for bid in EXPORT_BUTTONS.values()),
    Input(ids.ASM_POLL, "n_intervals"),
    State(ids.ASM_JOB, "data"),
    State(ids.ASM_TOKEN, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def export(*args: Any) -> tuple[Any, ...]:
    """A click starts an export job (or shows the one running); a tick shows its progress."""
    *_clicks, _tick, job_id, token, lang = args
    b = current()
    lang = L.lang_of(lang)
    p = auth.principal()
    if ctx.triggered_id == ids.ASM_POLL:
        job_id = J.clean_job_id(job_id)
        if job_id is None or p is None:
            return UNCHANGED
        try:
            job = J.status(b, p.username, job_id)
        except L.BACKEND_ERRORS:
            return UNCHANGED  # a blip: ask again at the next tick
        return watch(job, lang)
    fmt = next((f for f, bid in EXPORT_BUTTONS.items() if bid == ctx.triggered_id), None)
    if fmt is None:
        return UNCHANGED
    try:
        result, started = begin_export(b, p, token, fmt, lang)
    except L.BACKEND_ERRORS:
        result, started = "unavailable", None
    return watch(started, lang) if started is not None else _idle(t(f"asm.{result}", lang))


UNCHANGED = (no_update,) * (6 + len(EXPORT_BUTTONS))


def _idle(msg: str) -> tuple[Any, ...]:
    """No job watched: no bar, the buttons enabled, ``msg`` said."""
    return None, no_update, True, [], True, msg, *_buttons(False)


def watch(job: J.Job | None, lang: str) -> tuple[Any, ...]:
    """The page's outputs for a job: the bar while it runs; when done, the download."""
    if job is None:  # gone (expired) or not this user's
        return _idle(t("asm.lost", lang))
    bar = progress_bar(job.percent, J.stage_text(job, lang), job.state)
    if job.state == "running":
        return job.id, no_update, False, bar, False, "", *_buttons(True)
    if job.state == "error":
        return None, no_update, True, bar, False, "", *_buttons(False)
    msg = t("asm.exported", lang, name=job.filename, n=job.rows)
    return None, job.id, True, bar, False, msg, *_buttons(False)


def _buttons(disabled: bool) -> list[bool]:
    return [disabled] * len(EXPORT_BUTTONS)


@dash.callback(
    Output(ids.ASM_DOWNLOAD, "data"),
    Output(ids.ASM_MSG, "children", allow_duplicate=True),
    Input(ids.ASM_READY, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def deliver(job_id: Any, lang: str) -> tuple[Any, Any]:
    """A finished job's file, to the user who started it."""
    p = auth.principal()
    lang = L.lang_of(lang)
    job_id = J.clean_job_id(job_id)
    if job_id is None or p is None:
        return no_update, no_update
    got = J.fetch(current(), p.username, job_id)
    if got is None:
        return no_update, t("asm.lost", lang)
    job, data = got
    return dcc.send_bytes(data, job.filename, type=job.mime), no_update


def begin_export(
    b: Backend, p: auth.Principal | None, token: Any, fmt: str, lang: str
) -> tuple[str, J.Job | None]:
    """Role, scope, rate limit; then a job writing the shown rows in ``fmt`` (audited when
    done) — or the user's export already running. (result, job)"""
    guard = current_app.extensions["wangge.guard"]
    if p is None or p.wall or p.role not in A.EXPORT_ROLES or fmt not in E.EXPORTS:
        auth.refused("exports", "/assessment/export", "export role")
        return "export_denied", None
    job = J.running(b, p.username)
    if job is not None:  # a second click while one runs: the same job
        return "ok", job
    if guard.rate_limited(f"export:{p.username}", b.settings.auth.export_rate_per_minute):
        return "rate_limited", None
    tok = J.clean_job_id(token)  # the same alphabet as job ids
    raw = b.r.get(_token_key(b, p.username, tok)) if tok else None  # only the user's own
    if raw is None:
        return "stale", None
    payload = json.loads(raw)
    shown = S.Shown.from_json(payload["shown"])
    if payload.get("user") != p.username:
        auth.refused("exports", "/assessment/export", "foreign table")
        return "export_denied", None
    if not auth.authorize(shown.area, "exports", target="/assessment/export").granted:
        return "export_denied", None
    return "ok", J.start(b, p, shown, fmt, lang)


@dash.callback(
    Output(ids.URL, "href", allow_duplicate=True),
    Input(ids.ASM_BEHIND_TABLE, "cellClicked"),
    prevent_initial_call=True,
)
def open_incident(cell: dict[str, Any] | None) -> Any:
    """A click on an incident id behind a number opens it in the incident workbench (when
    the session may see it: its grid decides, a refusal is audited)."""
    if not isinstance(cell, dict) or cell.get("colId") != "incident_id":
        return no_update
    from dashboard.pages.incidents.detail import incident_row

    iid = auth.clean_id(cell.get("rowId"))
    if iid is None:
        auth.refused("incidents", cell.get("rowId"), "malformed id")
        return no_update
    try:
        row = incident_row(current().engine, iid)
    except L.BACKEND_ERRORS:
        return no_update
    if row is None:
        auth.refused("incidents", iid, "unknown incident")
        return no_update
    if not auth.authorize(row["grid_id"], "incidents", target=iid).granted:
        return no_update
    return f"/incidents/{iid}"
