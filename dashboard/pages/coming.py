"""Pages of later issues: grid work (shown as "coming")."""

from __future__ import annotations

from typing import Any

import dash
from dash import html

from dashboard import live as L
from dashboard.i18n import t

dash.register_page(
    __name__,
    path="/work",
    path_template="/work/<area_id>",
    name="work",
    layout=lambda area_id=None, **_: coming("nav.work"),
)


def coming(title_key: str) -> Any:
    lang = L.lang()
    return html.Div(
        [
            html.H2(t(title_key, lang)),
            html.H3(t("coming.title", lang)),
            html.P(t("coming.body", lang), className="wg-muted"),
        ],
        className="wg-panel notfound",
    )
