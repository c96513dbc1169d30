"""What the assessment page's layout and callbacks share: the session's view of the URL, the
table (an AG Grid), the title, breadcrumbs and the export progress bar."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import dash_ag_grid as dag
from dash import dcc, html

from dashboard import auth, ids
from dashboard.backend import Backend
from dashboard.components import localise
from dashboard.i18n import t
from dashboard.pages.assessment import queries as A
from pipelines import assessment as S

POLL_MS = 500  # how often a running export's progress is asked for


EXPORT_BUTTONS = {"xlsx": ids.ASM_XLSX, "csv": ids.ASM_CSV, "pdf": ids.ASM_PDF}

# The dark panel's colours as AG Grid theme parameters (a theme expression that the grid
# parses itself: no eval, so it passes the Content-Security-Policy). The cells' side
# paddings are 3/4 of Balham's (9 px: ``components.columns.CELL_PAD_PX``), so that a
# scorecard's 26 columns fit a 1080p screen.
GRID_THEME = {
    "function": "themeBalham.withParams({"
    "backgroundColor: '#0a203c', foregroundColor: '#d8e9ff', accentColor: '#41c7ff', "
    "headerBackgroundColor: '#12345a', headerTextColor: '#d8e9ff', borderColor: '#1d3350', "
    "oddRowBackgroundColor: '#0c2546', rowHoverColor: '#16395e', "
    "selectedRowBackgroundColor: '#1b3656', fontFamily: 'inherit', fontSize: 13, "
    "headerFontWeight: 600, wrapperBorderRadius: 4, cellHorizontalPaddingScale: 0.75})"
}


def grid(
    grid_id: str,
    columns: list[dict[str, Any]],
    height: str,
    rows: list[dict[str, Any]] | None = None,
    *,
    row_class_rules: dict[str, str] | None = None,
    lang: str = "zh-CN",
    **options: Any,
) -> Any:
    """A sortable, dark AG Grid whose rows keep their ``id`` (clicks name the row)."""
    return dag.AgGrid(
        id=grid_id,
        rowData=rows or [],
        columnDefs=columns,
        getRowId="params.data.id",
        defaultColDef={
            "sortable": True,
            "resizable": True,
            "wrapHeaderText": True,
            "autoHeaderHeight": True,
        },
        dashGridOptions={
            "theme": GRID_THEME,
            "tooltipShowDelay": 300,
            "ensureDomOrder": True,
            "suppressColumnVirtualisation": True,
            "animateRows": False,
            "localeText": localise.grid_words(lang),  # AG Grid's own texts (callback grids too)
            **options,
        },
        style={"height": height, "width": "100%"},
        className="asm-grid",
        rowClassRules=row_class_rules or {},
    )


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
