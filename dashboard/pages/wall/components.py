"""Layout builders of the wall's carousel views and of the red-warning takeover.

Pure of Flask: each takes the data its callback read (after the permission check) and the
language, and returns components sized in viewport units for a 16:9 wall (no pointer, no
controls): big numbers, ranked bars, a short list. Names, never ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import html

from dashboard.components.panels import fmt_int, fmt_pct
from dashboard.i18n import t
from dashboard.pages.wall import queries as Q

LEVELS_DOWN = ("red", "orange", "yellow", "blue")


def _big(label: str, value: str, sub: str = "", cls: str = "") -> html.Div:
    return html.Div(
        [
            html.Div(label, className="label"),
            html.Div(value, className="value"),
            html.Div(sub, className="sub"),
        ],
        className=f"wall-big {cls}".strip(),
    )


def _card(title: str, body: Any, cls: str = "") -> html.Div:
    return html.Div([html.H3(title), body], className=f"wg-panel wall-card {cls}".strip())


def ranked_bars(
    rows: Sequence[tuple[str, float, str]], lang: str, tone: str = "", top: float | None = None
) -> html.Div:
    """(name, value, text) rows as numbered horizontal bars (longest = the largest value)."""
    if not rows:
        return html.Div(t("wall.view.none", lang), className="wall-none")
    peak = top if top is not None else max((v for _, v, _ in rows), default=0.0)
    items = []
    for i, (name, value, text) in enumerate(rows, 1):
        width = 0.0 if peak <= 0 else max(0.0, min(100.0, 100.0 * value / peak))
        items.append(
            html.Div(
                [
                    html.Span(str(i), className="rank"),
                    html.Span(name, className="name"),
                    html.Span(
                        html.Span(className=f"fill {tone}", style={"width": f"{width:.1f}%"}),
                        className="bar",
                    ),
                    html.Span(text, className="val"),
                ],
                className="wall-bar",
            )
        )
    return html.Div(items, className="wall-bars")


def clock(ms: int, tz: str) -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).strftime("%H:%M")


def rule_words(rule: str, lang: str) -> tuple[str, str]:
    """(the rule's name, what it means in one sentence)."""
    return t(f"rule.{rule}", lang), t(f"wall.rdesc.{rule}", lang)


def duration(first_ms: int, now_ms: int, lang: str) -> str:
    h, m = Q.since_text(first_ms, now_ms)
    return t("wall.for_hm", lang, h=h, m=m) if h else t("wall.for_m", lang, m=m)


def warnings_view(
    alerts: Mapping[str, Any], names: Mapping[str, str], now_ms: int, tz: str, lang: str
) -> list[Any]:
    """研判预警 on the wall: open warnings per level, then the most urgent ones."""
    counts = alerts.get("counts", {})
    tiles = [
        _big(t(f"warn.{lv}", lang), fmt_int(counts.get(lv, 0)), cls=f"lv-{lv}")
        for lv in LEVELS_DOWN
    ]
    tiles.append(_big(t("wstatus.new", lang), fmt_int(alerts.get("new", 0)), cls="lv-new"))
    rows = []
    for w in alerts.get("rows", [])[:9]:
        name, words = rule_words(str(w["rule"]), lang)
        first = int(w["first_ms"])
        rows.append(
            html.Div(
                [
                    html.Span(t(f"warn.{w['level']}", lang), className=f"chip {w['level']}"),
                    html.Span(names.get(w["area_id"], w["area_id"]), className="place"),
                    html.Span([html.B(name), " ", words], className="what"),
                    html.Span(
                        f"{clock(first, tz)} · {duration(first, now_ms, lang)}",
                        className="when",
                    ),
                    html.Span(t(f"wstatus.{w['status']}", lang), className=f"st st-{w['status']}"),
                ],
                className="wall-wrow",
            )
        )
    body = (
        html.Div(rows, className="wall-wrows")
        if rows
        else html.Div(t("wall.view.no_warnings", lang), className="wall-none")
    )
    return [
        html.Div(tiles, className="wall-bigs"),
        _card(t("wall.view.urgent", lang), body, "wall-grow"),
    ]


def work_view(
    kpi: Mapping[str, Any], children: Sequence[tuple[str, float, float]], lang: str
) -> list[Any]:
    """网格工作 on the wall: who is out, how much is patrolled, per district / street.

    ``children``: (name, coverage share, workers online) per child area."""
    tiles = [
        _big(
            t("kpi.online", lang),
            fmt_int(kpi.get("online")),
            t("wall.of_on_duty", lang, n=fmt_int(kpi.get("on_duty"))),
        ),
        _big(
            t("kpi.coverage", lang),
            fmt_pct(kpi.get("coverage")),
            f"{fmt_int(kpi.get('patrolled'))} / {fmt_int(kpi.get('grids'))}",
        ),
        _big(t("kpi.reports", lang), fmt_int(kpi.get("reports"))),
        _big(t("kpi.resolved", lang), fmt_int(kpi.get("resolved"))),
    ]
    cover = sorted(children, key=lambda c: (-c[1], c[0]))
    online = sorted(children, key=lambda c: (-c[2], c[0]))
    return [
        html.Div(tiles, className="wall-bigs"),
        html.Div(
            [
                _card(
                    t("metric.coverage", lang),
                    ranked_bars([(n, c, fmt_pct(c)) for n, c, _ in cover[:10]], lang, "good", 1.0),
                ),
                _card(
                    t("metric.online", lang),
                    ranked_bars([(n, o, fmt_int(o)) for n, _, o in online[:10]], lang, "blue"),
                ),
            ],
            className="wall-two wall-grow",
        ),
    ]


def assessment_view(
    score_rows: Sequence[Mapping[str, Any]] | None,
    period_label: str,
    today: Sequence[tuple[str, float, float, float]],
    kpi: Mapping[str, Any],
    lang: str,
) -> list[Any]:
    """监督考核 on the wall: the period's scorecard ranking where the viewer may see
    scorecards, else (a kiosk sees aggregates only) today's handling: the area's totals
    and, per child area (name, overdue, open, reports), where incidents are overdue or
    still open."""
    if score_rows is not None:
        rows = [
            (str(r["name"]), float(r["score"]), f"{float(r['score']):.1f}")
            for r in score_rows
            if r.get("score") is not None
        ]
        low = [r for r in rows[::-1][:10]]
        return [
            html.Div(period_label, className="wall-sub"),
            html.Div(
                [
                    _card(t("wall.view.best", lang), ranked_bars(rows[:10], lang, "good", 100.0)),
                    _card(t("wall.view.worst", lang), ranked_bars(low, lang, "bad", 100.0)),
                ],
                className="wall-two wall-grow",
            ),
        ]
    overdue = sorted((r for r in today if r[1] > 0), key=lambda r: (-r[1], -r[2], r[0]))
    still = sorted((r for r in today if r[2] > 0), key=lambda r: (-r[2], r[0]))
    tiles = [
        _big(t("kpi.reports", lang), fmt_int(kpi.get("reports"))),
        _big(t("kpi.resolved", lang), fmt_int(kpi.get("resolved"))),
        _big(
            t("kpi.overdue", lang),
            fmt_int(kpi.get("overdue")),
            cls="lv-red" if kpi.get("overdue") else "",
        ),
        _big(
            t("kpi.grid_share", lang),
            fmt_pct(kpi.get("grid_share")),
            t("wall.of_closed", lang, n=fmt_int(kpi.get("closed"))),
        ),
    ]
    late = [(n, o, fmt_int(o)) for n, o, _, _ in overdue[:10]]
    return [
        html.Div(t("wall.view.today_note", lang), className="wall-sub"),
        html.Div(tiles, className="wall-bigs"),
        html.Div(
            [
                _card(
                    t("wall.view.overdue_rank", lang),
                    ranked_bars(late, lang, "bad")
                    if late
                    else html.Div(t("wall.view.no_overdue", lang), className="wall-none"),
                ),
                _card(
                    t("wall.view.open_rank", lang),
                    ranked_bars([(n, op, fmt_int(op)) for n, _, op, _ in still[:10]], lang, "warm"),
                ),
            ],
            className="wall-two wall-grow",
        ),
    ]


def takeover_card(
    take: Mapping[str, Any],
    names: Mapping[str, str],
    path: Sequence[str],
    now_ms: int,
    tz: str,
    lang: str,
) -> list[Any]:
    """The takeover's main card: 红色预警, the place (under its district and street,
    ``path``), the rule in words, since when."""
    name, words = rule_words(str(take["rule"]), lang)
    area = names.get(str(take["area_id"]), str(take["area_id"]))
    first = int(take["first_ms"])
    out: list[Any] = [
        html.Div(f"⚠ {t('wall.red', lang)}", className="wall-take-head"),
        html.Div(" › ".join(path), className="wall-take-path"),
        html.Div(area, className="wall-take-place"),
        html.Div(name, className="wall-take-rule"),
        html.Div(words, className="wall-take-words"),
        html.Div(
            [
                html.Span(t("wall.since", lang, t=clock(first, tz)), className="since"),
                html.Span(duration(first, now_ms, lang), className="for"),
            ],
            className="wall-take-when",
        ),
    ]
    up = take.get("escalated_to")
    if isinstance(up, str) and up:
        out.append(
            html.Div(t("wall.escalated", lang, area=names.get(up, up)), className="wall-take-up")
        )
    return out


def takeover_side(take: Mapping[str, Any], lang: str) -> list[Any]:
    """The side card: waiting for acknowledgement, and how many more red warnings wait."""
    out: list[Any] = [
        html.Div(t("wall.waiting", lang), className="wall-take-status"),
        html.Div(t("wall.ack_hint", lang), className="wall-take-hint"),
    ]
    if take.get("waiting"):
        out.append(
            html.Div(t("wall.more_red", lang, n=int(take["waiting"])), className="wall-take-more")
        )
    return out
