"""A friendly page for an unknown address (never a traceback)."""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from dashboard import live as L
from dashboard.i18n import t

dash.register_page(__name__, path="/404")


def layout(**_: Any) -> Any:
    lang = L.lang()
    return html.Div(
        [
            html.H2(t("page.notfound", lang)),
            html.P(t("page.notfound.body", lang)),
            dcc.Link(t("notfound.back", lang), href="/"),
        ],
        className="wg-panel notfound",
        id="notfound",
    )
