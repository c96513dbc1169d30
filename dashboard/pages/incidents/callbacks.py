"""Incident workbench callbacks: the queue (filters, pages), the detail, and the actions.

Every callback decides the viewer's right first (``auth.authorize`` on the session's
scope, the chosen area or the incident's grid) and reads nothing before it; the actions
re-check ``incident_actions`` on the incident's area on the server whatever the page
offered. The queue and the detail are read fresh from SQL on every request (never
cached), so an action's result shows in the actor's own queue at once."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import ALL, Input, Output, State, ctx, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.i18n import t
from dashboard.pages.incidents import acting as A
from dashboard.pages.incidents import components as C
from dashboard.pages.incidents import detail as D
from dashboard.pages.incidents import queries as Q
from pipelines.dispatch import units as U
from pipelines.dispatch.flows import flows_for
from pipelines.spine.events import LEVELS

DA = A.DA  # the dispatch core (pipelines/dispatch/actions.py); None before it lands

FIELD_BOXES = [f"inca-f-{name}" for name in C.FIELDS]
FIELD_INPUTS = [f"inca-{name}" for name in C.FIELDS]  # each form opens empty


# ------------------------------------------------------------------ shared reads


def units_in(b: Backend, scope: str) -> list[dict[str, Any]]:
    """Units serving the scope, an area above it or one inside it (districts, streets)."""
    city = b.city
    areas = set(city.ancestors(scope))
    for level in ("district", "street"):
        areas |= {a for a in city.ids(level) if scope in city.ancestors(a)}
    return U.list_units(b.engine, sorted(areas))


def unit_names(b: Backend, grant: auth.Decision) -> dict[str, str]:
    """unit id → name (the unit register; read once a minute per granted area)."""

    def compute() -> dict[str, str]:
        return {u["unit_id"]: str(u["name"]) for u in U.list_units(b.engine)}

    got: dict[str, str] = b.cached(grant, "inc-units", compute, period_s=60)
    return got


def workers_in(b: Backend, grant: auth.Decision, district: str | None = None) -> dict[str, str]:
    """id → name of the rostered workers inside the granted area (and ``district``: the
    core dispatches only to workers of the incident's district; names only for roles that
    may see them, else each worker's id stands for itself)."""
    roster = b.roster()
    level = b.city.level_of(grant.area_id)
    if level != "city":
        roster = roster.filter(roster[f"{level}_id"] == grant.area_id)
    if district is not None:
        roster = roster.filter(roster["district_id"] == district)
    pairs = zip(roster["worker_id"].to_list(), roster["name"].to_list(), strict=True)
    return {w: (n if grant.may("names") and n else w) for w, n in pairs if w}


def scope_grant(kind: str = "incidents") -> auth.Decision | None:
    p = auth.principal()
    if p is None or p.wall:
        return None
    grant = auth.authorize(p.scope, kind)
    return grant if grant.granted else None


def incident_of(b: Backend, incident_id: object, kind: str) -> dict[str, Any] | None:
    """The incident if the session may see ``kind`` of it (its grid decides; a refusal or
    an unknown id is audited), else None. An odd id is refused before any lookup."""
    iid = auth.clean_id(incident_id)
    if iid is None:
        auth.refused(kind, incident_id, "malformed id")
        return None
    row = D.incident_row(b.engine, iid)
    if row is None:
        auth.refused(kind, iid, "unknown incident")
        return None
    if not auth.authorize(row["grid_id"], kind, target=iid).granted:
        return None
    return row


def _ms_of(day: object, tz: str, plus_days: int = 0) -> int | None:
    if not isinstance(day, str):
        return None
    try:
        d = date.fromordinal(date.fromisoformat(day[:10]).toordinal() + plus_days)
    except ValueError:
        return None
    return int(datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


# ------------------------------------------------------------------ the queue


@dash.callback(
    Output(ids.INC_UNIT, "options"),
    Output(ids.INC_AREA, "options"),
    Input(ids.INC_VIEW, "data"),
)
def filter_options(view: Any) -> tuple[Any, Any]:
    b = current()
    grant = scope_grant()
    if grant is None:
        return [], []
    lang = L.lang()
    units = [
        {"label": C.unit_label(u, lang), "value": u["unit_id"]} for u in units_in(b, grant.area_id)
    ]
    areas = [{"label": n, "value": a} for a, n, _ in Q.area_options(b.city, grant.area_id)]
    wanted = view.get("area") if isinstance(view, dict) else None
    known = {a["value"] for a in areas}
    # a grid from a link is offered as well (checked like any area; a refusal is audited)
    if (
        isinstance(wanted, str)
        and wanted not in known
        and auth.authorize(wanted, "incidents").granted
    ):
        areas.append({"label": b.area_names.get(wanted, wanted), "value": wanted})
    return units, areas


@dash.callback(
    Output(ids.INC_PAGE, "data"),
    Input(ids.INC_PREV, "n_clicks"),
    Input(ids.INC_NEXT, "n_clicks"),
    Input(ids.INC_STATUS, "value"),
    Input(ids.INC_DUE, "value"),
    Input(ids.INC_CATS, "value"),
    Input(ids.INC_SEV, "value"),
    Input(ids.INC_SOURCES, "value"),
    Input(ids.INC_UNIT, "value"),
    Input(ids.INC_AREA, "value"),
    Input(ids.INC_SORT, "value"),
    Input(ids.INC_SIZE, "value"),
    State(ids.INC_PAGE, "data"),
    State(ids.INC_NPAGES, "data"),
    prevent_initial_call=True,
)
def turn(*args: Any) -> Any:
    """Previous / next page; any other change of the filters goes back to the first."""
    page, pages = args[-2], args[-1]
    page = page if isinstance(page, int) and page >= 0 else 0
    pages = pages if isinstance(pages, int) and pages >= 1 else 1
    if ctx.triggered_id == ids.INC_PREV:
        return max(0, page - 1)
    if ctx.triggered_id == ids.INC_NEXT:
        return min(pages - 1, page + 1)
    return 0


@dash.callback(
    Output(ids.INC_GRID, "rowData"),
    Output(ids.INC_INFO, "children"),
    Output(ids.INC_NPAGES, "data"),
    Input(ids.INC_TICK, "n_intervals"),
    Input(ids.INC_PAGE, "data"),
    Input(ids.INC_DONE, "data"),
    Input(ids.INC_STATUS, "value"),
    Input(ids.INC_DUE, "value"),
    Input(ids.INC_SOON, "value"),
    Input(ids.INC_CATS, "value"),
    Input(ids.INC_SEV, "value"),
    Input(ids.INC_SOURCES, "value"),
    Input(ids.INC_UNIT, "value"),
    Input(ids.INC_AREA, "value"),
    Input(ids.INC_RANGE, "start_date"),
    Input(ids.INC_RANGE, "end_date"),
    Input(ids.INC_SORT, "value"),
    Input(ids.INC_DESC, "value"),
    Input(ids.INC_SIZE, "value"),
    State(ids.LANG, "data"),
)
def refresh(
    _n: int,
    page: Any,
    _done: Any,
    statuses: Any,
    due: Any,
    soon: Any,
    cats: Any,
    sevs: Any,
    sources: Any,
    unit: Any,
    area: Any,
    start: Any,
    end: Any,
    sort: Any,
    desc: Any,
    size: Any,
    lang: str,
) -> tuple[Any, Any, Any]:
    b = current()
    lang = L.lang_of(lang)
    grant = scope_grant()  # the session's own scope first, before anything is read
    if grant is None:
        return [], t("auth.denied", lang), 1
    # a chosen area is checked too (outside the scope: refused and audited)
    if isinstance(area, str) and area and not auth.authorize(area, "incidents").granted:
        return [], t("inc.gone", lang), 1
    tz = b.settings.live.timezone
    f = Q.Filters.of(
        {
            "statuses": statuses,
            "due": due,
            "soon_hours": soon,
            "categories": cats,
            "severities": sevs,
            "sources": sources,
            "unit_id": unit,
            "area_id": area,
            "since_ms": _ms_of(start, tz),
            "until_ms": _ms_of(end, tz, 1),
            "sort": sort,
            "desc": bool(desc),
            "page": page,
            "page_size": size,
        }
    )
    try:
        got = Q.queue_page(b.engine, flows_for(b.settings), b.city, grant.area_id, f, b.now_ms())
        rows = C.row_data(got.rows, lang, tz, b.area_names, unit_names(b, grant))
    except L.BACKEND_ERRORS:
        return no_update, t("inc.unavailable", lang), no_update
    info = t("inc.info", lang, p=got.page + 1, n=got.pages, total=got.total)
    return rows, info, got.pages


@dash.callback(
    Output(ids.INC_SEL, "data"),
    Input(ids.INC_GRID, "cellClicked"),
    prevent_initial_call=True,
)
def select(cell: Any) -> Any:
    if not isinstance(cell, dict) or cell.get("colId") != "incident_id":
        return no_update
    return auth.clean_id(cell.get("rowId")) or no_update


# ------------------------------------------------------------------ the detail


@dash.callback(
    Output(ids.INC_DETAIL, "children"),
    Output(ids.INC_MORE, "children"),
    Output(ids.INC_MARKER, "data"),
    Output(ids.INC_MAP, "viewport"),
    Output(ids.INC_SHOWN, "data"),
    Input(ids.INC_SEL, "data"),
    Input(ids.INC_DONE, "data"),
    Input(ids.INC_TICK, "n_intervals"),
    State(ids.LANG, "data"),
)
def show(incident_id: Any, _done: Any, _n: Any, lang: str) -> tuple[Any, ...]:
    b = current()
    lang = L.lang_of(lang)
    empty = {"type": "FeatureCollection", "features": []}
    if not isinstance(incident_id, str) or not incident_id:
        return html.P(t("inc.pick", lang), className="wg-muted"), [], empty, no_update, None
    try:
        row = incident_of(b, incident_id, "incidents")
        if row is None:  # unknown, or outside the session's scope (audited)
            return html.P(t("inc.gone", lang), className="wg-muted"), [], empty, no_update, None
        grant = auth.authorize(row["grid_id"], "incidents", audited=False)
        now = b.now_ms()
        flows = flows_for(b.settings)
        flow = flows.select(str(row["category"]), int(row["severity"]))
        entered = row.get("stage_ms") or row.get("last_ms") or now
        due = flow.stage_due_ms(str(row["status"]), int(entered), row.get("due_ms"))
        events = D.timeline(b.engine, row["incident_id"])
        alerts = D.video_alerts(b.engine, row)
        warns = D.linked_warnings(b.engine, b.city, row, now)
        head, more = C.detail_panel(
            row,
            events,
            alerts,
            warns,
            lang=lang,
            tz=b.settings.live.timezone,
            left_ms=None if due is None else due - now,
            due_ms=due,
            area_names=b.area_names,
            workers=_roster_names(b),
            sees_names=grant.may("names"),
            units=unit_names(b, grant),
        )
    except L.BACKEND_ERRORS:
        unavailable = html.P(t("inc.unavailable", lang), className="wg-muted")
        return unavailable, [], no_update, no_update, None
    view: Any = {"center": [float(row["lat"]), float(row["lon"])], "zoom": 16}
    if ctx.triggered_id in (ids.INC_TICK, ids.INC_DONE):  # a refresh: the map stays put
        view = no_update
    shown = {"id": row["incident_id"], "n_events": int(row["n_events"])}
    return head, more, C.marker(row), view, shown


def _roster_names(b: Backend) -> dict[str, str]:
    roster = b.roster()
    pairs = zip(roster["worker_id"].to_list(), roster["name"].to_list(), strict=True)
    return {w: str(n or w) for w, n in pairs if w}


fresh = L.freshness_on(ids.INC_TICK)  # the header's per-feed freshness line


# ------------------------------------------------------------------ the actions
# Every callback below names an ``inca-`` component: its policy needs "incident_actions"
# (dashboard/auth.py), and each re-checks the incident's area itself.


def _actor(p: auth.Principal) -> Any:
    return DA.Actor(id=p.username, role=p.role, scope=p.scope)


def _context(b: Backend) -> Any:
    return DA.ActionContext.of(b.engine, b.r, b.settings, b.city)


@dash.callback(
    Output(ids.INCA_BTNS, "children"),
    Input(ids.INC_SHOWN, "data"),
    State(ids.LANG, "data"),
)
def offer(shown: Any, lang: str) -> Any:
    """The buttons of the actions the core offers this viewer on the shown incident."""
    b = current()
    lang = L.lang_of(lang)
    p = auth.principal()
    if p is None or not isinstance(shown, dict):
        return []
    row = incident_of(b, shown.get("id"), "incident_actions")
    if row is None:
        return []
    if DA is None:
        return html.P(t("inca.err.unavailable", lang), className="wg-muted")
    offered = DA.offered(row, _actor(p), flows_for(b.settings), b.city)
    if not offered:
        return html.P(t("inca.none", lang), className="wg-muted")
    return [
        html.Button(
            t(f"inca.{a}", lang),
            id={"type": ids.INCA_BTN, "action": a},
            n_clicks=0,
            className="warn-btn",
        )
        for a in offered
    ]


@dash.callback(
    Output(ids.INCA_PENDING, "data"),
    Output(ids.INCA_FORM, "data"),
    Output(ids.INCA_FIELDS, "style"),
    *(Output(box, "style") for box in FIELD_BOXES),
    Output(ids.INCA_UNIT, "options"),
    Output(ids.INCA_HANDLER, "options"),
    Output(ids.INCA_ONSITE, "options"),
    Output(ids.INCA_LEVEL, "options"),
    Output(ids.INCA_MSG, "children"),
    *(Output(fid, "value") for fid in FIELD_INPUTS),
    Input({"type": ids.INCA_BTN, "action": ALL}, "n_clicks"),
    Input(ids.INCA_CANCEL, "n_clicks"),
    State(ids.INC_SHOWN, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def open_form(clicks: Any, _cancel: Any, shown: Any, lang: str) -> tuple[Any, ...]:
    """Open the form of one action: exactly the fields it needs, a fresh request id (a
    double submit is one action) and the events the viewer saw (a changed incident is a
    conflict, not a blind overwrite)."""
    b = current()
    lang = L.lang_of(lang)
    hidden = {"display": "none"}
    blank = (None,) * len(FIELD_INPUTS)
    closed: tuple[Any, ...] = (
        None, None, hidden, *([hidden] * len(FIELD_BOXES)), [], [], [], [], "", *blank
    )  # fmt: skip
    trig = ctx.triggered_id
    if trig == ids.INCA_CANCEL:
        return closed
    # new buttons (another incident, or the next stage) are no click: the form and the
    # last outcome stay as they are
    if not isinstance(trig, dict) or not any(c for c in (clicks or []) if c):
        return (no_update,) * len(closed)
    action = trig.get("action")
    p = auth.principal()
    if p is None or not isinstance(shown, dict) or action not in C.ACTION_FIELDS:
        return closed
    row = incident_of(b, shown.get("id"), "incident_actions")  # its area decides; audited
    if row is None or DA is None:
        why = t("inca.err.denied" if DA else "inca.err.unavailable", lang)
        return (*closed[: -1 - len(blank)], why, *blank)
    if action not in DA.offered(row, _actor(p), flows_for(b.settings), b.city):
        return (*closed[: -1 - len(blank)], t("inca.err.wrong_stage", lang), *blank)
    flows = flows_for(b.settings)
    fields = C.shown_fields(action, row, flows)
    need = C.required_fields(action, row, flows)
    styles = [({"display": "flex"} if name in fields else hidden) for name in C.FIELDS]
    for i, name in enumerate(C.FIELDS):  # required ones are marked
        if name in need or (name in ("unit", "handler") and "unit_or_handler" in need):
            styles[i] = {"display": "flex", "borderLeft": "3px solid #f2994a"}
    district = b.city.ancestors(str(row["grid_id"]))
    units = [
        {"label": C.unit_label(u, lang), "value": u["unit_id"]}
        for u in units_in(b, p.scope)
        if u["area_id"] in district  # a unit serving the incident's area (the core's rule)
    ]
    grant = auth.authorize(p.scope, "incident_actions", audited=False)
    people = [
        {"label": n if n == w else f"{n} · {w}", "value": w}
        for w, n in workers_in(b, grant, row.get("district_id")).items()
    ]
    levels = [{"label": t(f"level.{lv}", lang), "value": lv} for lv in LEVELS]
    form = A.form_state(action, row["incident_id"], shown.get("n_events"))
    return None, form, {"display": "flex"}, *styles, units, people, people, levels, "", *blank


@dash.callback(
    Output(ids.INCA_MSG, "children", allow_duplicate=True),
    Output(ids.INC_DONE, "data"),
    Output(ids.INCA_FORM, "data", allow_duplicate=True),
    Output(ids.INCA_FIELDS, "style", allow_duplicate=True),
    Output(ids.INCA_PENDING, "data", allow_duplicate=True),
    Input(ids.INCA_SUBMIT, "n_clicks"),
    State(ids.INCA_FORM, "data"),
    State(ids.INCA_UNIT, "value"),
    State(ids.INCA_HANDLER, "value"),
    State(ids.INCA_REASON, "value"),
    State(ids.INCA_NOTE, "value"),
    State(ids.INCA_PHOTO, "value"),
    State(ids.INCA_ONSITE, "value"),
    State(ids.INCA_LEVEL, "value"),
    State(ids.INCA_DUP, "value"),
    State(ids.INCA_DUE, "value"),
    State(ids.INC_DONE, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def submit(clicks: Any, form: Any, *rest: Any) -> tuple[Any, ...]:
    """Perform the opened form's action (the core checks role, scope, stage and records,
    claims the incident's version, writes the event and waits for its verdict)."""
    *values, done, lang = rest
    b = current()
    lang = L.lang_of(lang)
    p = auth.principal()
    if not clicks or p is None or not A.valid_form(form):
        return (no_update,) * 5
    if DA is None:
        return t("inca.err.unavailable", lang), *(no_update,) * 4
    if incident_of(b, form["incident_id"], "incident_actions") is None:  # re-checked here
        return t("inca.err.denied", lang), *(no_update,) * 4
    fields = dict(
        zip(
            ("unit", "handler", "reason", "note", "photo", "onsite", "level", "dup", "due"),
            values,
            strict=True,
        )
    )
    now = b.now_ms()
    req = A.request_of(
        form,
        {k: auth.safe_text(v, 2000) if isinstance(v, str) else v for k, v in fields.items()},
        now,
    )
    try:
        outcome = DA.perform(_context(b), req, _actor(p), now)
    except DA.ActionError as exc:
        return A.error_text(exc, lang), (done or 0) + 1, no_update, no_update, None
    except L.BACKEND_ERRORS:
        return t("inca.err.unavailable", lang), *(no_update,) * 4
    text = A.outcome_text(outcome, lang)
    finished = outcome.status in ("applied", "duplicate", "pending")
    closed = {"display": "none"}
    return (
        text,
        (done or 0) + 1,
        None if finished else no_update,
        closed if finished else no_update,
        A.pending_of(outcome, form),  # asked again on every tick until decided
    )


@dash.callback(
    Output(ids.INCA_MSG, "children", allow_duplicate=True),
    Output(ids.INCA_PENDING, "data", allow_duplicate=True),
    Output(ids.INC_DONE, "data", allow_duplicate=True),
    Input(ids.INC_TICK, "n_intervals"),
    State(ids.INCA_PENDING, "data"),
    State(ids.INC_DONE, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def settle(_n: Any, pending: Any, done: Any, lang: str) -> tuple[Any, ...]:
    """An action the pipeline had not decided when it was sent: its verdict, once there
    (the message said "being applied"; it must not stay so after the pipeline answered)."""
    if pending is None:
        return no_update, no_update, no_update
    b = current()
    lang = L.lang_of(lang)
    if DA is None or auth.principal() is None or not A.valid_pending(pending):
        return no_update, None, no_update
    if incident_of(b, pending["incident_id"], "incident_actions") is None:  # its area decides
        return t("inca.err.denied", lang), None, no_update
    try:
        outcome = DA.verdict_of(_context(b), pending["incident_id"], pending["request_id"])
    except L.BACKEND_ERRORS:
        return no_update, no_update, no_update  # asked again on the next tick
    if outcome.status == "pending":
        return no_update, no_update, no_update
    return A.outcome_text(outcome, lang), None, (done or 0) + 1


@dash.callback(
    Output(ids.INCA_BULK_FORM, "data"),
    Output(ids.INCA_BULK_MSG, "children"),
    Output(ids.INCA_BULK_UNIT, "options"),
    Output(ids.INCA_BULK_HANDLER, "options"),
    Input(ids.INC_GRID, "selectedRows"),
    State(ids.LANG, "data"),
)
def bulk_form(selected: Any, lang: str) -> tuple[Any, ...]:
    """Picking rows opens the bulk dispatch: one request id per incident, made now."""
    b = current()
    lang = L.lang_of(lang)
    grant = scope_grant("incident_actions")
    if grant is None:
        return None, "", [], []
    units = [
        {"label": C.unit_label(u, lang), "value": u["unit_id"]} for u in units_in(b, grant.area_id)
    ]
    people = [
        {"label": n if n == w else f"{n} · {w}", "value": w}
        for w, n in workers_in(b, grant).items()
    ]
    rows = [r for r in (selected or []) if isinstance(r, dict) and auth.clean_id(r.get("id"))]
    plan: dict[str, list[Any]] = {}
    for r in rows[:200]:  # each incident's own area decides (refusals audited)
        found = incident_of(b, r.get("id"), "incident_actions")
        if found is not None:
            seen = r.get("n_events")  # the version the viewer saw in the queue
            seen = seen if isinstance(seen, int) and not isinstance(seen, bool) else None
            plan[str(found["incident_id"])] = [A.new_request_id(), seen]
    msg = t("inca.bulk", lang, n=len(plan)) if plan else t("inca.bulk.pick", lang)
    return (plan or None), msg, units, people


@dash.callback(
    Output(ids.INCA_BULK_MSG, "children", allow_duplicate=True),
    Output(ids.INC_DONE, "data", allow_duplicate=True),
    Input(ids.INCA_BULK_GO, "n_clicks"),
    State(ids.INCA_BULK_FORM, "data"),
    State(ids.INCA_BULK_UNIT, "value"),
    State(ids.INCA_BULK_HANDLER, "value"),
    State(ids.INC_DONE, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def bulk_dispatch(clicks: Any, plan: Any, unit: Any, handler: Any, done: Any, lang: str) -> Any:
    """Dispatch every picked incident to one unit or worker (each checked on its own)."""
    b = current()
    lang = L.lang_of(lang)
    p = auth.principal()
    if not clicks or p is None or not isinstance(plan, dict) or not plan:
        return t("inca.bulk.pick", lang), no_update
    if DA is None:
        return t("inca.err.unavailable", lang), no_update
    reqs, refused = [], 0
    now = b.now_ms()
    for iid, spec in list(plan.items())[:200]:
        if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str)):
            refused += 1
            continue
        if incident_of(b, iid, "incident_actions") is None:  # each incident's own area
            refused += 1
            continue
        form = {
            "action": "dispatch",
            "incident_id": iid,
            "request_id": spec[0],
            "expected_events": spec[1],
        }
        if not A.valid_form(form):
            refused += 1
            continue
        reqs.append(A.request_of(form, {"unit": unit, "handler": handler}, now))
    try:
        results = DA.perform_many(_context(b), reqs, _actor(p), now) if reqs else []
    except L.BACKEND_ERRORS:
        return t("inca.err.unavailable", lang), no_update
    ok = sum(
        1
        for r in results
        if not isinstance(r, Exception) and r.status in ("applied", "pending", "duplicate")
    )
    bad = len(results) - ok + refused
    return t("inca.bulk.result", lang, ok=ok, bad=bad), (done or 0) + 1
