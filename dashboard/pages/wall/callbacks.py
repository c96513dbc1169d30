"""Wall-screen callbacks: the clock, the red banner, the live refresh, and the tour: the
carousel of views and areas, the red-warning takeover and its acknowledgement."""

from __future__ import annotations

import contextlib
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output, State, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import Backend, current
from dashboard.components import timemachine as tm
from dashboard.components.panels import (
    category_figure,
    hotspot_list,
    kpi_tiles,
    label_figure,
    legend,
    ticker_text,
    trend_figure,
)
from dashboard.i18n import t
from dashboard.pages.panorama.queries import METRICS, font_px, view_of
from dashboard.pages.wall import components as V
from dashboard.pages.wall import queries as Q
from dashboard.pages.warnings import queries as WL
from dashboard.push.browser import follow
from dashboard.responses import shared_response

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


def _wall_state(state: object) -> tuple[str | None, str]:
    """(area, metric) of the wall's store, as values a lookup may use."""
    got = state if isinstance(state, dict) else {}
    metric = got.get("metric")
    return auth.clean_id(got.get("area")), metric if metric in METRICS else "open"


def red_banner(
    b: Any, area_id: str, red: int, lang: str, at_ms: int | None = None
) -> html.Div | None:
    """ "红色预警 × n", with the latest red warning's rule and place when the list has it."""
    if not red:
        return None
    text = f"⚠ {t('wall.red', lang)} × {red}"
    with contextlib.suppress(*L.BACKEND_ERRORS):
        top = WL.headline(L.reader(b, at_ms, area_id).warnings(), b.city, area_id)
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
    State(ids.tm("wall", "at"), "data"),
)
def wall_refresh(
    _n: int,
    state: dict[str, Any],
    vh: int | None,
    last_ok: int | None,
    lang: str,
    at_value: Any = None,
) -> tuple[Any, ...]:
    """Thin: the wall's permission first, then this tick's shared outputs for what the data
    is (area, data class, metric, language, font size), computed once per process."""
    b = current()
    lang = L.lang_of(lang)
    area_id, metric = _wall_state(state)
    grant = auth.authorize(area_id, "aggregates", target=area_id or state)
    if not grant.granted:  # the scope comes from the session, not the store; never cached
        return (no_update,) * 11 + (t("auth.denied", lang), no_update)
    size = font_px(vh if isinstance(vh, int | float) else None)
    at_ms = tm.moment_of(b, at_value)  # ?at=: a past moment, or live
    try:
        return shared_response(  # this tick's finished answer, once permitted
            b,
            grant,
            "wall",
            lambda: outputs(b, grant, metric, lang, size, at_ms),
            metric,
            lang,
            size,
            *([] if at_ms is None else [f"at{at_ms}"]),
            warm=at_ms is None,
        )
    except L.BACKEND_ERRORS:  # nothing cached: the next refresh tries again
        mark = L.stale_mark(last_ok, b.settings.live.timezone, lang)
        return (*(no_update,) * 10, mark, no_update, no_update)


def outputs(
    b: Any, grant: auth.Decision, metric: str, lang: str, size: int, at_ms: int | None = None
) -> tuple[Any, ...]:
    """The wall's outputs for a granted area (pure of the session: shared by its class),
    live or at the past moment ``at_ms``."""
    panel = L.panel(b, grant, metric, False, lang, with_markers=False, at_ms=at_ms)
    if panel is None:
        return (no_update,) * 13
    tz = b.settings.live.timezone
    red = panel["kpi"]["warnings"].get("red", 0)
    banner = red_banner(b, grant.area_id, red, lang, at_ms)
    view = view_of(b.city, grant.area_id)
    title = f"{view.name if view else ''} · {t('app.title', lang)}"
    ticker = [html.Span(f"{r['time']} {ticker_text(r, lang)}") for r in panel["ticker"][:20]]
    return (
        panel["hideout"],
        panel["url"],
        legend(panel["hideout"], lang),
        kpi_tiles(panel["kpi"], lang),
        trend_figure(panel["trend"], lang, tz, size=size),
        category_figure(panel["categories"], lang, size=size),
        label_figure(panel["labels"], lang, size=size),
        hotspot_list(panel["hotspots"], metric, base="/wall/", lang=lang),
        ticker,
        banner,
        panel["fresh"],
        title,
        panel["now_ms"],
    )


# Live push (dashboard/push/): the wall's stream, reopened when its area or size changes;
# reconnects by itself, polls while it is down, marks stale data.
follow("wall", Input(ids.W_AREA, "data"), Input(ids.W_VH, "data"), Input(ids.W_LAST, "data"))

# ---------------------------------------------------------------- the tour and the takeover


def wall_alerts(b: Backend, grant: auth.Decision) -> dict[str, Any]:
    """This tick's open warnings inside the granted area, as the wall uses them (shared by
    every wall of that area): red areas, the takeover (its id stays on the server), counts
    and the most urgent rows (level, rule, area, times, status; no ids, no evidence)."""

    def compute() -> dict[str, Any]:
        inside = WL.in_scope(b.live.warnings(), b.city, grant.area_id)
        urgent = WL.apply(inside, WL.Filters(), b.city)[:12]
        keep = ("level", "rule", "area_id", "first_ms", "last_ms", "status")
        return {
            "reds": Q.red_areas(inside, b.city, grant.area_id),
            "take": Q.takeover(inside, b.city, grant.area_id),
            "counts": WL.level_counts(inside),
            "new": sum(1 for w in inside if w["status"] == "new"),
            "rows": [{k: w.get(k) for k in keep} for w in urgent],
        }

    got: dict[str, Any] = b.cached(grant, "wall-alerts", compute, shared=True)
    return got


def _home_grant(plan_data: object) -> auth.Decision | None:
    """The wall's own area from its store, checked against the session (never trusted)."""
    home = plan_data.get("home") if isinstance(plan_data, dict) else None
    grant = auth.authorize(home, "aggregates", target=home)
    return grant if grant.granted else None


@dash.callback(
    Output(ids.W_AREA, "data"),
    Output(ids.W_STOP, "data"),
    Output(ids.W_TOUR_TICK, "interval"),
    Output("wall-root", "className"),
    Output(ids.W_TAKE, "children"),
    Output(f"{ids.W_TAKE_SIDE}-info", "children"),
    Output(ids.W_ACK, "style"),
    Output(ids.W_TITLE, "className"),
    Output(ids.W_KPI_TITLE, "children"),
    Input(ids.W_TOUR_TICK, "n_intervals"),
    Input(ids.W_LAST, "data"),  # every refresh, polled or pushed (polling pauses under push)
    State(ids.W_TOUR, "data"),
    State(ids.W_STOP, "data"),
    State(ids.W_AREA, "data"),
    State(ids.W_TOUR_TICK, "interval"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def tour(
    _tour_n: int | None,
    _refreshed: object,
    plan_data: dict[str, Any],
    stop_state: dict[str, Any],
    area_state: dict[str, Any],
    interval: int | None,
    lang: str,
) -> tuple[Any, ...]:
    """Thin: the wall's area checked first, then this tick's shared alerts; the pure
    :func:`queries.step` decides the stop (advance when the dwell ran out) and takeover."""
    b = current()
    lang = L.lang_of(lang)
    grant = _home_grant(plan_data)
    if grant is None:
        return (no_update,) * 9
    plan = Q.Plan.of_json(plan_data, grant.area_id)
    try:
        alerts = wall_alerts(b, grant)
    except L.BACKEND_ERRORS:  # keep showing what is on screen; the next tick retries
        return (no_update,) * 9
    take = alerts["take"] if b.settings.wall.takeover else None
    stops = Q.stops_of(b.city, plan, alerts["reds"]) if plan.views else Q.stops_of(b.city, plan)
    # the dwell ran out when the tour's own tick moved since the last step (both ticks may
    # arrive in one request: the count says it, whichever Dash names as the trigger)
    ticks = _tour_n if isinstance(_tour_n, int) else 0
    last = stop_state.get("n") if isinstance(stop_state, dict) else None
    advance = bool(plan.views) and ticks != (last if isinstance(last, int) else 0)
    stop, state = Q.step(stops, stop_state, take, advance)
    state |= {"view": stop.view, "area": stop.area, "n": ticks}
    area, metric = _wall_state(area_state)
    shown = "warning" if take is not None else plan.metric  # a takeover: warning levels
    moved = (stop.area, shown) != (area, metric)
    new_area = {"area": stop.area, "metric": shown} if moved else no_update
    ms = int(Q.dwell_s(stop, plan) * 1000)
    name = b.area_names.get(stop.area, stop.area)
    if take is None:
        card: Any = []
        side: Any = []
        ack: dict[str, str] = {"display": "none"}
    else:
        now, tz = b.now_ms(), b.settings.live.timezone
        path = [b.area_names.get(a, a) for a in b.city.ancestors(str(take["area_id"]))[1:-1]]
        card = V.takeover_card(take, b.area_names, path[::-1], now, tz, lang)
        side = V.takeover_side(take, lang)
        p = auth.principal()
        ok = p is not None and Q.may_acknowledge(
            p.role, p.wall, p.scope, str(take["area_id"]), b.city
        )
        ack = {} if ok else {"display": "none"}
    return (
        new_area,
        state,
        ms if ms != interval else no_update,
        Q.root_class(stop.view, take is not None),
        card,
        side,
        ack,
        Q.title_class(lang, name, t("app.title", lang)),
        name if moved else no_update,
    )


@dash.callback(
    Output(ids.W_VIEW, "children"),
    Output(ids.W_VIEW, "className"),
    Input(ids.W_STOP, "data"),
    Input(ids.W_LAST, "data"),  # every refresh, polled or pushed
    State(ids.W_TOUR, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def view_panel(
    stop_state: dict[str, Any], _refreshed: object, plan_data: dict[str, Any], lang: str
) -> tuple[Any, Any]:
    """The carousel's view other than the panorama, for the wall's (checked) area. Its
    class names the view it holds: the wall shows it only under that view (never the
    previous view's content while the next one is on its way)."""
    view = stop_state.get("view") if isinstance(stop_state, dict) else None
    if view not in ("warnings", "work", "assessment") or stop_state.get("take"):
        return no_update, no_update
    b = current()
    lang = L.lang_of(lang)
    grant = _home_grant(plan_data)
    if grant is None:
        return no_update, no_update
    area = view_of(b.city, grant.area_id)
    head = html.Div(
        [
            html.Span(t(f"nav.{view}", lang), className="what"),
            html.Span(area.name if area else "", className="where"),
        ],
        className="wall-view-head",
    )
    try:
        body = _view_body(b, grant, str(view), lang)
    except L.BACKEND_ERRORS:
        return no_update, no_update
    return [head, *body], f"wall-view wall-view-{view}"


def _view_body(b: Backend, grant: auth.Decision, view: str, lang: str) -> list[Any]:
    names = b.area_names
    if view == "warnings":
        alerts = wall_alerts(b, grant)
        return V.warnings_view(alerts, names, b.now_ms(), b.settings.live.timezone, lang)
    snap = L.snapshot(b, grant)
    if snap is None:
        return []
    kids = snap["ids"][1:]
    per = snap["children"]
    if view == "work":
        rows = [
            (names.get(a, a), float(c), float(o))
            for a, c, o in zip(kids, per["coverage"], per["online"], strict=True)
        ]
        return V.work_view(snap["kpi"], rows, lang)
    score_rows, label = _scores(b, grant, lang)
    today = [
        (names.get(a, a), float(o), float(op), float(r))
        for a, o, op, r in zip(kids, per["overdue"], per["open"], per["reports"], strict=True)
    ]
    return V.assessment_view(score_rows, label, today, snap["kpi"], lang)


def _scores(b: Backend, grant: auth.Decision, lang: str) -> tuple[Any, str]:
    """This month's scorecard of the areas below the wall's, where the viewer may see
    scorecards (a person signed in); (None, "") for a kiosk (aggregates only) or while
    nothing is scored yet."""
    if not auth.may_see("scorecards"):
        return None, ""
    from dashboard.pages.assessment import queries as A
    from dashboard.pages.assessment.callbacks import shown_for

    sgrant = auth.authorize(grant.area_id, "scorecards")
    if not sgrant.granted:
        return None, ""
    view = A.view_of(b.city, grant.area_id, {}, b.now_ms(), b.settings.live.timezone)
    shown = shown_for(b, sgrant, view)
    rows = sorted(
        (r for r in shown.rows if r.get("score") is not None), key=lambda r: -float(r["score"])
    )
    if not rows:  # nothing scored yet this period: today's handling instead
        return None, ""
    label = t("wall.view.period", lang, period=view.period.key)
    return rows, label


@dash.callback(
    Output(ids.W_ACK_MSG, "children"),
    Input(ids.W_ACK, "n_clicks"),
    State(ids.W_STOP, "data"),
    State(ids.W_TOUR, "data"),
    State(ids.LANG, "data"),
    prevent_initial_call=True,
)
def acknowledge(
    clicks: int, stop_state: dict[str, Any], plan_data: dict[str, Any], lang: str
) -> Any:
    """Acknowledge the red warning on screen: the browser names it by its digest only; the
    server finds it again in the wall's area and acts through the warnings workflow
    (role, kiosk and the warning's own area checked there, audited)."""
    if not clicks:
        return no_update
    from dashboard.pages.warnings.callbacks import act

    b = current()
    lang = L.lang_of(lang)
    grant = _home_grant(plan_data)
    key = stop_state.get("take") if isinstance(stop_state, dict) else None
    if grant is None or not isinstance(key, str):
        return t("wresult.denied", lang)
    take = Q.takeover(b.live.warnings(), b.city, grant.area_id)  # fresh, not the tick's
    if take is None or take["key"] != key:
        return t("wresult.stale", lang)
    result = act(b, auth.principal(), str(take["id"]), "acknowledge", "", "")
    return t(f"wresult.{result}", lang)
