"""The audit page's one callback: the filters → the table (admin only, by policy)."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, html

from dashboard import auth, ids
from dashboard import live as L
from dashboard.backend import current
from dashboard.i18n import t
from dashboard.pages.audit import queries as Q
from pipelines.access import audit


@dash.callback(
    Output(ids.AUD_TABLE, "children"),
    Output(ids.AUD_COUNT, "children"),
    Input(ids.AUD_ACTOR, "value"),
    Input(ids.AUD_ACTION, "value"),
    Input(ids.AUD_RANGE, "start_date"),
    Input(ids.AUD_RANGE, "end_date"),
    State(ids.LANG, "data"),
)
def table(actor: Any, action: Any, start: Any, end: Any, lang: str) -> Any:
    b = current()
    lang = L.lang_of(lang)
    if not auth.may("audit"):  # the guard refuses first; this never serves anyone else
        return [], ""
    tz = b.settings.live.timezone
    since, until = Q.time_range(start, end, tz)
    try:
        frame = audit.query(
            b.engine,
            actor=auth.clean_id(actor) if actor else None,
            action=auth.clean_id(action) if action else None,
            since_ms=since,
            until_ms=until,
            limit=Q.LIMIT,
        )
    except L.BACKEND_ERRORS:
        return html.P(t("asm.unavailable", lang), className="wg-muted"), ""
    rows = Q.view_rows(frame.to_dicts(), tz, lang, b.area_names)
    count = t("audit.count", lang, n=len(rows)) + (
        t("audit.capped", lang, n=Q.LIMIT) if len(rows) >= Q.LIMIT else ""
    )
    if not rows:
        return html.P(t("audit.none", lang), className="wg-muted"), count
    return render(rows, lang), count


COLUMNS = ("at", "actor", "role", "scope", "action", "target", "detail")


def render(rows: list[dict[str, Any]], lang: str) -> html.Table:
    head = html.Tr([html.Th(t(f"audit.col.{c}", lang)) for c in COLUMNS])
    body = []
    for r in rows:
        detail = html.Dl(
            [x for k, v in r["detail"] for x in ((html.Dt(k), html.Dd(v)) if k else (html.Dd(v),))],
            className="aud-detail",
        )
        body.append(
            html.Tr(
                [
                    html.Td(r["at"], title=f"#{r['seq']}", className="aud-at"),
                    html.Td(r["actor"]),
                    html.Td(r["role"]),
                    html.Td(r["scope"], title=r["scope_id"]),
                    html.Td(r["action"], title=r["action_id"]),
                    html.Td(r["target"], className="aud-target"),
                    html.Td(detail),
                ]
            )
        )
    return html.Table([html.Thead(head), html.Tbody(body)], className="audit")
