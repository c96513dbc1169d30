"""A friendly page for an unknown address (never a traceback)."""

from __future__ import annotations

from typing import Any

import dash

from dashboard import live as L
from dashboard.components.panels import message_panel
from dashboard.i18n import t

dash.register_page(__name__, path="/404")


def layout(**_: Any) -> Any:
    lang = L.lang()
    return message_panel(
        t("page.notfound", lang),
        t("page.notfound.body", lang),
        t("notfound.back", lang),
        "notfound",
    )
