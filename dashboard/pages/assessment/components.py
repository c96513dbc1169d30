"""What the assessment page's layout and callbacks share: the session's view of the URL, the
table's styling, the title, breadcrumbs and the export progress bar."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import dash_table, dcc, html

from dashboard import auth, ids
from dashboard.backend import Backend
from dashboard.i18n import t
from dashboard.pages.assessment import queries as A
from pipelines import assessment as S

DataTable = dash_table.DataTable  # type: ignore[attr-defined]  # generated at import


POLL_MS = 500  # how often a running export's progress is asked for


EXPORT_BUTTONS = {"xlsx": ids.ASM_XLSX, "csv": ids.ASM_CSV, "pdf": ids.ASM_PDF}


DARK_TABLE: dict[str, Any] = {
    "style_table": {"overflowX": "auto", "maxHeight": "calc(100vh - 330px)", "overflowY": "auto"},
    "style_header": {
        "backgroundColor": "#12345a",
        "color": "#d8e9ff",
        "fontWeight": "600",
        "border": "1px solid #1d4f7f",
        "whiteSpace": "normal",
        "height": "auto",
        "textAlign": "center",
        "cursor": "help",
    },
    "style_cell": {
        "backgroundColor": "rgba(10, 32, 60, 0.9)",
        "color": "#d8e9ff",
        "border": "1px solid #1d3350",
        "fontFamily": "inherit",
        "fontSize": "13px",
        "padding": "4px 8px",
        "fontVariantNumeric": "tabular-nums",
        "minWidth": "64px",
    },
}


ACTIVE_STYLES: list[dict[str, Any]] = [
    {
        "if": {"state": "active"},
        "backgroundColor": "#1b3656",
        "border": "1px solid #41c7ff",
        "color": "#ffffff",
    },
    {"if": {"state": "selected"}, "backgroundColor": "#1b3656", "color": "#ffffff"},
]


def session_view(b: Backend, query: dict[str, Any] | None) -> A.View | None:
    p = auth.principal()
    if p is None or p.wall:
        return None
    return A.view_of(b.city, p.scope, query or {}, b.now_ms(), b.settings.live.timezone)


def view_data(view: A.View) -> dict[str, str]:
    return {"level": view.level, "period": view.period.key, "area": view.area}


def title(shown: S.Shown, b: Backend, lang: str) -> list[Any]:
    tz = ZoneInfo(b.settings.live.timezone)
    at = datetime.fromtimestamp(shown.generated_ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
    state = "final" if shown.final else "live"
    return [
        html.Span(shown.period.label(lang), className="asm-period"),
        html.Span(t(f"asm.{state}", lang), className=f"asm-state {state}"),
        html.Span(t("asm.rows", lang, n=len(shown.rows)), className="wg-muted"),
        html.Span(t("asm.generated", lang, t=at), className="wg-muted"),
    ]


def crumbs(b: Backend, scope: str, view: A.View) -> list[Any]:
    out: list[Any] = []
    chain = A.crumbs(b.city, scope, view)
    for i, (name, search) in enumerate(chain):
        if i:
            out.append(html.Span("›", className="sep"))
        out.append(dcc.Link(name, href=f"/assessment{search}"))
    return out


def progress_bar(percent: int, text: str, state: str) -> list[Any]:
    return [
        html.Div(
            html.Div(className="asm-bar-fill", style={"width": f"{percent}%"}),
            className=f"asm-bar {state}",
            role="progressbar",
            title=f"{percent}%",
        ),
        html.Span(f"{percent}%", className="asm-pct"),
        html.Span(text, className=f"asm-stage {state}"),
    ]
