"""The browser side of a pushed page, registered by the page (``assets/wangge_push.js``)."""

from __future__ import annotations

import dash
from dash import ClientsideFunction, Input, Output, State

from dashboard import ids
from dashboard.push.spec import PAGES


def follow(stream: str, *watched: Input) -> None:
    """Register the browser side of a pushed page (``assets/wangge_push.js``): the stream
    is (re)opened when a watched value changes; its ticks update the refresh's outputs and
    pause the polling (``Output(tick, "disabled")``), which resumes while it is down."""
    s = PAGES[stream]
    dash.clientside_callback(
        ClientsideFunction(namespace="wangge_push", function_name=s.page),
        Output(s.tick, "disabled"),
        *watched,
        State(ids.LANG, "data"),
        State(ids.PUSH, "data"),
    )
