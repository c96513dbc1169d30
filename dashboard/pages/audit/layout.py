"""审计日志 — the audit log, for administrators only: inside the app's shell, in the
user's language, local times, each entry's detail as ``key: value`` lines, filters by
actor, action and a range of days. The chain check (tampering) is stated on top.

Access: the page ``audit`` of the policy table (``pipelines/access/policy.py``: the
administrator only); the router and every ``aud-`` callback are refused to anyone else
(``dashboard/auth.py``), and the layout checks the role again."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.components.panels import denied_panel
from dashboard.i18n import t
from dashboard.pages import load_callbacks
from dashboard.pages.audit import queries as Q
from pipelines.access import audit, policy

dash.register_page(__name__, path="/admin/audit", name="audit")


def layout(**_query: Any) -> Any:
    b = current()
    lang = L.lang()
    p = auth.principal()
    if p is None or p.wall or not policy.may_open(p.role, "audit"):
        return denied_panel(lang)
    tz = b.settings.live.timezone
    start, end = Q.default_range(b.now_ms(), tz)
    recent = audit.query(b.engine, limit=5000)
    check, intact = Q.verify_text(audit.verify(b.engine), lang)
    filters = html.Div(
        [
            dcc.Dropdown(
                id=ids.AUD_ACTOR,
                options=Q.options(recent["actor"].to_list(), "", lang),
                placeholder=t("audit.filter.actor", lang),
                style={"minWidth": 200, "color": "#111"},
            ),
            dcc.Dropdown(
                id=ids.AUD_ACTION,
                options=Q.options(recent["action"].to_list(), "audit.action", lang),
                placeholder=t("audit.filter.action", lang),
                style={"minWidth": 220, "color": "#111"},
            ),
            html.Div(  # a fixed-width box: the picker fills its parent
                dcc.DatePickerRange(
                    id=ids.AUD_RANGE,
                    start_date=start,
                    end_date=end,
                    display_format="YYYY-MM-DD",
                    start_date_placeholder_text=t("audit.filter.from", lang),
                    end_date_placeholder_text=t("audit.filter.to", lang),
                    clearable=True,
                    className="aud-range",
                ),
                className="aud-range-box",
            ),
            html.Span(id=ids.AUD_COUNT, className="wg-muted"),
        ],
        className="pan-toolbar aud-filters",
    )
    return html.Div(
        [
            html.H2(t("audit.title", lang)),
            html.P(check, className="aud-check" + ("" if intact else " bad"), id="aud-check"),
            filters,
            html.Div(id=ids.AUD_TABLE, className="aud-table"),
        ],
        className="aud-page",
    )


load_callbacks(__name__)  # this page's callbacks, registered with each app (see pages/)
