"""Wall-screen callbacks: the clock, the tour, the red banner and the live refresh."""

from __future__ import annotations

import contextlib
from typing import Any

import dash
from dash import ClientsideFunction, Input, Output, State, html, no_update

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
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
from dashboard.pages.panorama.queries import METRICS, font_px, next_in_tour, view_of
from dashboard.pages.warnings import queries as WL
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


@dash.callback(
    Output(ids.W_AREA, "data"),
    Input(ids.W_TOUR_TICK, "n_intervals"),
    State(ids.W_TOUR, "data"),
    State(ids.W_AREA, "data"),
    prevent_initial_call=True,
)
def tour_step(_n: int, areas: list[str], state: dict[str, Any]) -> Any:
    city = current().city
    known = [a for a in areas if auth.clean_id(a)] if isinstance(areas, list) else []
    areas = [a for a in known if auth.allowed(city, a)]  # the tour's own stops; no data read
    if not areas:
        return no_update
    area, metric = _wall_state(state)
    return {"area": next_in_tour(areas, area or ""), "metric": metric}


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
