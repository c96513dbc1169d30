"""Pages of later issues: assessment (shown as "coming")."""

from __future__ import annotations

from typing import Any

import dash
from dash import html

from dashboard import live as L
from dashboard.i18n import t

dash.register_page(
    "assessment", path="/assessment", name="assessment", layout=lambda **_: coming("nav.assessment")
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
