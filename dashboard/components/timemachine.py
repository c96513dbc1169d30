"""The "view at" control of the map pages (time machine): pick a past moment or step
through a day (play / pause / speed); the page's panels then read the city as it was
(``pipelines.history``). The URL carries the moment (``?at=2026-12-03T09:40``, local time),
so a past view is a link; leaving it (or a moment not past yet) is live again.

Layout: :func:`bar` (the page passes its id prefix). Callbacks: :func:`register` once per
page module. The page's own refresh takes the moment from the ``at`` store."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import dash
from dash import ClientsideFunction, Input, Output, State, dcc, html, no_update

from dashboard import ids
from dashboard.i18n import t
from pipelines.history.moment import At, day_start_ms, format_at, parse_at

SPEEDS = (60, 300, 900, 3600)  # simulated seconds per second of play
FRAME_MS = 1000


def at_of(b: Any, value: object) -> At:
    """The page's ``?at=`` value, for this backend's clock and time zone."""
    return parse_at(value, b.settings.live.timezone, b.now_ms())


def moment_of(b: Any, value: object) -> int | None:
    """The moment an ``at`` store holds when it may be shown: a past time, else live."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value if value < b.now_ms() else None


def with_at(pathname: str, search: str | None, at_text: str | None) -> str:
    """The page's URL with ``at`` set to ``at_text`` (removed when None), other query
    values kept (pure)."""
    query = [(k, v) for k, v in parse_qsl((search or "").lstrip("?")) if k != "at"]
    if at_text:
        query.append(("at", at_text))
    return pathname + (f"?{urlencode(query, safe=':')}" if query else "")


def go_href(
    clicks: object, submits: object, value: object, pathname: str | None, search: str | None
) -> str | None:
    """Where the go button (or Enter in the moment's box) leads: the page's URL with the
    typed moment (``at`` removed when the box is empty), or None when neither was pressed.
    Dash also calls the callback when the bar is drawn, with no click and no Enter; the
    address then stays as it is, a bad ``at`` and its note included (pure)."""
    if not (_count(clicks) or _count(submits)):
        return None
    text = value.strip() if isinstance(value, str) else ""
    return with_at(pathname or "/", search, text or None)


def _count(n: object) -> int:
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


def next_frame(at_ms: int, speed: int, now_ms: int) -> tuple[int, bool]:
    """One step of play: the next moment and whether play goes on (it stops short of now,
    which is live, not history)."""
    nxt = at_ms + speed * FRAME_MS
    if nxt >= now_ms - FRAME_MS:
        return at_ms, False
    return nxt, True


def mark_text(at_ms: int | None, tz: str, lang: str) -> str:
    if at_ms is None:
        return ""
    return t("tm.past", lang, when=format_at(at_ms, tz).replace("T", " "))


def bar(page: str, b: Any, at: At, lang: str, live_href: str, raw: object = None) -> html.Div:
    """The control: the moment (a local date-time input and a go button), play / pause,
    speed, back to live, and the past mark; a note when the ``at`` asked for was not taken."""
    tz = b.settings.live.timezone
    shown = at.at_ms
    value = format_at(shown, tz) if shown is not None else ""
    problem = None
    if at.problem == "bad":
        problem = html.Span(t("tm.bad", lang, value=str(raw)[:40]), className="tm-problem")
    elif at.problem == "future":
        problem = html.Span(t("tm.future", lang), className="tm-problem")
    speeds = [{"label": f"{s}×", "value": s} for s in SPEEDS]
    return html.Div(
        [
            dcc.Store(id=ids.tm(page, "at"), data=shown),
            dcc.Store(id=ids.tm(page, "text"), data=value),
            dcc.Interval(id=ids.tm(page, "tick"), interval=FRAME_MS, disabled=True),
            html.Span(t("tm.view_at", lang), className="wg-muted"),
            dcc.Input(
                id=ids.tm(page, "input"),
                type="text",
                value=value,
                placeholder=t("tm.format", lang),
                size="17",
                style={"width": 170, "flex": "0 0 auto"},
                className="tm-input",
                debounce=True,
            ),
            html.Button(t("tm.go", lang), id=ids.tm(page, "go"), n_clicks=0, className="tm-btn"),
            html.Button(
                t("tm.play", lang), id=ids.tm(page, "play"), n_clicks=0, className="tm-btn"
            ),
            dcc.Dropdown(
                id=ids.tm(page, "speed"),
                options=speeds,
                value=SPEEDS[0],
                clearable=False,
                className="tm-speed",
                style={"width": 90, "color": "#111"},
            ),
            html.Span(
                mark_text(shown, tz, lang),
                id=ids.tm(page, "mark"),
                className="tm-past" if shown is not None else "tm-past tm-hidden",
            ),
            html.A(
                t("tm.live", lang),
                id=ids.tm(page, "live"),
                href=live_href,
                className="tm-live" if shown is not None else "tm-live tm-hidden",
            ),
            problem or html.Span(),
        ],
        className="tm-bar",
        id=ids.tm(page, "bar"),
    )


def _bump(n: object) -> int:
    return _count(n) + 1


def register(page: str, tick_id: str) -> None:
    """The control's callbacks for a page (call once from its callbacks module).
    ``tick_id``: the page's refresh interval; a new moment from play bumps it, so the
    page's refresh (which reads the ``at`` store as State) redraws at once."""

    @dash.callback(
        Output(ids.URL, "href", allow_duplicate=True),
        Input(ids.tm(page, "go"), "n_clicks"),
        Input(ids.tm(page, "input"), "n_submit"),
        State(ids.tm(page, "input"), "value"),
        State(ids.URL, "pathname"),
        State(ids.URL, "search"),
        prevent_initial_call=True,
    )
    def go(n: int, s: int, value: str | None, pathname: str, search: str | None) -> Any:
        """Open the chosen moment: its URL (a past view is a link)."""
        href = go_href(n, s, value, pathname, search)
        return no_update if href is None else href

    @dash.callback(
        Output(ids.tm(page, "tick"), "disabled"),
        Output(ids.tm(page, "play"), "children"),
        Output(ids.tm(page, "at"), "data", allow_duplicate=True),
        Output(tick_id, "n_intervals", allow_duplicate=True),
        Input(ids.tm(page, "play"), "n_clicks"),
        State(ids.tm(page, "tick"), "disabled"),
        State(ids.tm(page, "at"), "data"),
        State(ids.LANG, "data"),
        State(tick_id, "n_intervals"),
        prevent_initial_call=True,
    )
    def play(_n: int, stopped: bool, at_ms: Any, lang: str, ticks: Any) -> Any:
        """Play / pause. Playing from live starts at the beginning of today."""
        from dashboard import live as L
        from dashboard.backend import current

        b = current()
        lang = L.lang_of(lang)
        if not stopped:
            return True, t("tm.play", lang), no_update, no_update
        start = moment_of(b, at_ms)
        if start is None:
            start = day_start_ms(b.now_ms(), b.settings.live.timezone)
            return False, t("tm.pause", lang), start, _bump(ticks)
        return False, t("tm.pause", lang), no_update, no_update

    @dash.callback(
        Output(ids.tm(page, "at"), "data", allow_duplicate=True),
        Output(ids.tm(page, "tick"), "disabled", allow_duplicate=True),
        Output(ids.tm(page, "play"), "children", allow_duplicate=True),
        Output(tick_id, "n_intervals", allow_duplicate=True),
        Input(ids.tm(page, "tick"), "n_intervals"),
        State(ids.tm(page, "at"), "data"),
        State(ids.tm(page, "speed"), "value"),
        State(ids.LANG, "data"),
        State(tick_id, "n_intervals"),
        prevent_initial_call=True,
    )
    def step(_n: int, at_ms: Any, speed: Any, lang: str, ticks: Any) -> Any:
        """One frame of play: the moment moves on by ``speed`` seconds."""
        from dashboard import live as L
        from dashboard.backend import current

        b = current()
        at = moment_of(b, at_ms)
        if at is None:
            return no_update, True, t("tm.play", L.lang_of(lang)), no_update
        pace = speed if speed in SPEEDS else SPEEDS[0]
        nxt, going = next_frame(at, int(pace), b.now_ms())
        if going:
            return nxt, no_update, no_update, _bump(ticks)
        return nxt, True, t("tm.play", L.lang_of(lang)), no_update

    @dash.callback(
        Output(ids.tm(page, "mark"), "children"),
        Output(ids.tm(page, "mark"), "className"),
        Output(ids.tm(page, "live"), "className"),
        Output(ids.tm(page, "input"), "value"),
        Output(ids.tm(page, "text"), "data"),
        Input(ids.tm(page, "at"), "data"),
        State(ids.LANG, "data"),
        prevent_initial_call=True,
    )
    def mark(at_ms: Any, lang: str) -> Any:
        from dashboard import live as L
        from dashboard.backend import current

        b = current()
        at = moment_of(b, at_ms)
        tz = b.settings.live.timezone
        hidden = " tm-hidden" if at is None else ""
        text = mark_text(at, tz, L.lang_of(lang))
        shown = format_at(at, tz) if at else ""
        return text, "tm-past" + hidden, "tm-live" + hidden, shown, shown

    # Keep the address bar on the moment shown while playing (no navigation: the page
    # stays, the link stays shareable).
    dash.clientside_callback(
        ClientsideFunction(namespace="wangge_tm", function_name="url"),
        Output(ids.tm(page, "bar"), "title"),
        Input(ids.tm(page, "text"), "data"),
        prevent_initial_call=True,
    )
