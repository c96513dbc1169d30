"""监督考核 — supervision and assessment: ranked scorecards per district, street, grid or
worker for a period, with drill-down to the incidents behind any number, and exports.

The URL is the view (``/assessment?level=street&period=2026-10&area=320102``); the
server re-clamps it to the session's scope on every callback. The table shown is kept
in Redis under a token, and exports write exactly those rows (rate-limited, audited) in
a background job whose progress the page polls (``dashboard.pages.assessment.export_jobs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import denied_panel
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.assessment import queries as A
from dashboard.pages.assessment.components import (
    EXPORT_BUTTONS,
    POLL_MS,
    grid,
    session_view,
    view_data,
)

dash.register_page(__name__, path="/assessment", name="assessment")


def layout(**query: Any) -> Any:
    b = current()
    lang = L.lang()
    view = session_view(b, query)
    if view is None:
        return denied_panel(lang, auth.home_href(b.city))
    p = auth.principal()
    assert p is not None
    tz = b.settings.live.timezone
    now = b.now_ms()
    levels = A.levels_below(b.city, p.scope)
    kind = view.period.kind
    opts = A.period_options(kind, now, tz, lang)
    if kind in ("month", "week", "day") and view.period.key not in {o["value"] for o in opts}:
        opts.insert(0, {"label": view.period.label(lang), "value": view.period.key})
    can_export = p.role in A.EXPORT_ROLES
    toolbar = html.Div(
        [
            html.Div(id=ids.ASM_CRUMBS, className="pan-crumbs asm-crumbs"),
            dcc.RadioItems(
                id=ids.ASM_KIND,
                options=[{"label": t(f"asm.kind.{k}", lang), "value": k} for k in A.KINDS],
                value=kind,
                inline=True,
                className="asm-kind",
            ),
            dcc.Dropdown(
                id=ids.ASM_PERIOD,
                options=opts,
                value=view.period.key if kind != "range" else None,
                clearable=False,
                searchable=False,
                style={
                    "minWidth": 210,
                    "color": "#111",
                    "display": "none" if kind == "range" else "block",
                },
            ),
            dcc.DatePickerRange(
                id=ids.ASM_RANGE,
                start_date=view.period.first.isoformat(),
                end_date=view.period.last.isoformat(),
                display_format="YYYY-MM-DD",
                max_date_allowed=datetime.fromtimestamp(now / 1000, ZoneInfo(tz))
                .date()
                .isoformat(),
                style={"display": "inline-block" if kind == "range" else "none"},
                className="asm-range",
                first_day_of_week=1,
                month_format="YYYY年M月" if lang != "en" else "MMMM YYYY",
            ),
            dcc.RadioItems(
                id=ids.ASM_LEVEL,
                options=[{"label": t(f"asm.level.{lv}", lang), "value": lv} for lv in levels],
                value=view.level,
                inline=True,
                className="asm-levels",
            ),
            html.Div(
                [
                    html.Span(t("asm.export", lang), className="wg-muted"),
                    *[
                        html.Button(
                            fmt.upper(),
                            id=bid,
                            n_clicks=0,
                            className="asm-btn",
                            disabled=not can_export,
                            title="" if can_export else t("asm.export_denied", lang),
                        )
                        for fmt, bid in EXPORT_BUTTONS.items()
                    ],
                    html.Div(id=ids.ASM_PROGRESS, className="asm-progress", hidden=True),
                    html.Span(id=ids.ASM_MSG, className="asm-msg"),
                ],
                className="asm-exports",
            ),
        ],
        className="pan-toolbar asm-toolbar",
    )
    table = grid(
        ids.ASM_TABLE,
        A.columns(view.level, lang, b.settings),
        "100%",
        row_class_rules=A.ROW_CLASS_RULES,
        lang=lang,
    )
    return html.Div(
        [
            dcc.Store(id=ids.ASM_VIEW, data=view_data(view)),
            dcc.Store(id=ids.ASM_TOKEN, data=None),
            dcc.Store(id=ids.ASM_JOB, data=None),  # the export job being watched
            dcc.Store(id=ids.ASM_READY, data=None),  # a finished job: its file downloads
            dcc.Interval(id=ids.ASM_POLL, interval=POLL_MS, disabled=True, n_intervals=0),
            dcc.Download(id=ids.ASM_DOWNLOAD),
            html.Div(
                [
                    html.H2(t("nav.assessment", lang)),
                    html.Div(id=ids.ASM_TITLE, className="asm-title"),
                ],
                className="warn-head",
            ),
            toolbar,
            html.Div(
                [
                    html.P(t("asm.hint", lang), className="wg-muted asm-hint"),
                    dcc.Loading(
                        table, type="dot", color="#41c7ff", parent_className="asm-table-wrap"
                    ),
                ],
                className="wg-panel asm-main",
            ),
            html.Div(id=ids.ASM_BEHIND, className="wg-panel asm-behind", hidden=True),
        ],
        className="asm-page",
    )


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
