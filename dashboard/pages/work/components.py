"""Builders of what the grid-work callbacks render: tiles, legend, lists and tables, the
replay summary and the reports drawn along a track."""

from __future__ import annotations

from typing import Any

from dash import (
    dcc,
    html,
)

from dashboard.backend import Backend
from dashboard.components.charts import empty_note, tone
from dashboard.components.panels import (
    fmt_int,
    fmt_pct,
)
from dashboard.i18n import t
from dashboard.pages.work import queries as WQ

SPEEDS = (1, 5, 15, 60)  # track minutes per second of replay


def _tile(label: str, value: str, sub: str = "", cls: str = "") -> html.Div:
    return html.Div(
        [
            html.Div(label, className="label"),
            html.Div(value, className=f"value {cls}"),
            html.Div(sub, className="sub"),
        ],
        className="kpi",
    )


def kpi_tiles(k: dict[str, Any], lang: str) -> list[Any]:
    return [
        _tile(t("work.kpi.on_duty", lang), fmt_int(k["on_duty"])),
        _tile(
            t("work.kpi.online", lang),
            fmt_int(k["online"]),
            cls=tone(
                "online_share", k["online"] / k["on_duty"] if k["on_duty"] else None, k["on_duty"]
            ),
        ),
        _tile(
            t("work.kpi.offline", lang), fmt_int(k["offline"]), cls="bad" if k["offline"] else ""
        ),
        _tile(t("work.kpi.in_own", lang), fmt_int(k["in_own"])),
        _tile(
            t("work.kpi.coverage", lang),
            fmt_pct(k["coverage"]),
            sub=f"{fmt_int(k['patrolled'])} / {fmt_int(k['grids'])}",
        ),
        _tile(
            t("work.kpi.unpatrolled", lang),
            fmt_int(k["unpatrolled"]),
            cls="nodata" if not k["grids"] else ("bad" if k["unpatrolled"] else "good"),
        ),
    ]


def legend(h: dict[str, Any], lang: str, people: bool, level: str) -> list[Any]:
    rows: list[Any] = [html.Div(t("metric.coverage", lang), className="wg-muted")]
    for color, b in zip(h.get("colors", []), h.get("breaks", []), strict=False):
        rows.append(
            html.Div(
                [html.Span(className="sw", style={"background": color}), f"≤ {b * 100:.0f}%"],
                className="row",
            )
        )
    if people and level in ("street", "grid"):
        for typ, color in WQ.TYPE_COLORS.items():
            rows.append(
                html.Div(
                    [
                        html.Span(className="dot", style={"background": color}),
                        t(f"type.{typ}", lang),
                    ],
                    className="row",
                )
            )
        rows.append(
            html.Div(
                [
                    html.Span(className="dot", style={"background": WQ.OFFLINE}),
                    t("work.legend.offline", lang),
                ],
                className="row",
            )
        )
    else:
        rows.append(
            html.Div(
                [html.Span("12", className="wk-cl-sample"), t("work.legend.cluster", lang)],
                className="row",
            )
        )
    return rows


def gap_list(gaps: list[str], total: int, names: dict[str, str], lang: str) -> list[Any]:
    if not total:
        return [html.Div(t("work.gaps.none", lang), className="wg-muted")]
    items: list[Any] = [
        html.Li(dcc.Link(names.get(g, g), href=f"/work/{g}"), className="wk-gap") for g in gaps
    ]
    out: list[Any] = [html.Ul(items, className="wk-gap-list")]
    if total > len(gaps):
        out.append(html.Div(t("work.gaps.more", lang, n=total - len(gaps)), className="wg-muted"))
    return out


def _table(head: list[str], body: list[list[Any]]) -> html.Table:
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in head])),
            html.Tbody([html.Tr([html.Td(c) for c in row]) for row in body]),
        ],
        className="wk-tbl",
    )


def children_table(rows: list[dict[str, Any]], names: dict[str, str], lang: str, level: str) -> Any:
    if not rows:
        return html.Div(t("work.activity.street", lang), className="wg-muted")
    head = [
        t("work.col.area", lang),
        t("work.col.on_duty", lang),
        t("work.col.online", lang),
        t("work.col.coverage", lang),
    ]
    body = []
    for r in rows:
        share = r["patrolled"] / r["grids"] if r["grids"] else None
        body.append(
            [
                dcc.Link(
                    names.get(r["area_id"], r["area_id"]),
                    href=f"/work/{r['area_id']}",
                    title=r["area_id"],  # the id on hover
                ),
                fmt_int(r["on_duty"]),
                fmt_int(r["online"]),
                f"{fmt_pct(share)} ({r['patrolled']}/{r['grids']})",
            ]
        )
    return _table(head, body)


def _duration(ms: int) -> str:
    m = int(ms // 60_000)
    return f"{m // 60}:{m % 60:02d}"


def activity_table(rows: list[dict[str, Any]], names: dict[str, str], lang: str, tz: str) -> Any:
    head = [
        t("work.col.worker", lang),
        t("work.col.type", lang),
        t("work.col.grid", lang),
        t("work.col.phone", lang),
        t("work.col.reports", lang),
        t("work.col.handled", lang),
        t("work.col.distance", lang),
        t("work.col.own_time", lang),
        t("work.col.last_seen", lang),
    ]
    if not rows:
        return empty_note(lang)
    body = []
    for r in rows:
        dot = html.Span(className="dot " + ("on" if r["online"] else "off"))
        body.append(
            [
                html.Span([dot, r["name"]], title=r.get("worker_id") or ""),
                t(f"type.{r['type']}", lang),
                html.Span(names.get(r["grid_id"], r["grid_id"]), title=r["grid_id"] or ""),
                r["phone_masked"] or "—",  # stored masked; never the full number
                fmt_int(r["reports"]),
                fmt_int(r["handled"]),
                f"{r['distance_m'] / 1000:.2f} km",
                _duration(r["own_grid_ms"]),
                WQ.local_time(r["last_seen_ms"], tz),
            ]
        )
    return _table(head, body)


def log_list(
    logs: list[dict[str, Any]],
    names: dict[str, str],
    lang: str,
    tz: str,
    people: bool,
    b: Backend,
) -> list[Any]:
    if not logs:
        return [html.Div(t("work.logs.none", lang), className="wg-muted")]
    who: dict[str, str] = {}
    if people:
        roster = b.roster()
        ids_ = {x for r in logs for x in (r["reporter_id"], r["handler_id"]) if x}
        mine = roster.filter(roster["worker_id"].is_in(list(ids_)))
        who = dict(zip(mine["worker_id"].to_list(), mine["name"].to_list(), strict=True))
    out = []
    for r in logs:
        reported = r["step"] == "reported"
        wid = r["reporter_id"] if reported else r["handler_id"]
        person = (
            who.get(wid or "", t("work.logs.anon", lang)) if people else t("work.logs.anon", lang)
        )
        verb = t(f"step.{r['step']}", lang)
        cat = t(f"cat.{r['category']}", lang)
        out.append(
            html.Div(
                [
                    html.Span(WQ.local_time(r["ts_ms"], tz, "%H:%M:%S"), className="t"),
                    html.Span(f"{person} {verb} {cat}"),
                    html.Span(
                        names.get(r["grid_id"], r["grid_id"]),
                        title=r["grid_id"] or "",
                        className="wg-muted",
                    ),
                ],
                className="tick-row",
            )
        )
    return out


EMPTY_FC: dict[str, Any] = {"type": "FeatureCollection", "features": []}


HIDDEN = {"display": "none"}


def replay_summary(
    data: dict[str, Any], n_reports: int, total: int, lang: str, *, grid: bool
) -> list[Any]:
    """Points, distance and reports; for a grid: how many workers (and the cap) and a legend
    of their colours. Names are text children, never HTML."""
    km = f"{data['km']:.2f}"
    workers = data["workers"]
    if not grid:
        return [t("work.replay.summary", lang, n=data["points"], km=km, r=n_reports)]
    out: list[Any] = [
        html.Div(
            t(
                "work.replay.summary.grid",
                lang,
                w=len(workers),
                n=data["points"],
                km=km,
                r=n_reports,
            )
        )
    ]
    if total > len(workers):
        out.append(html.Div(t("work.replay.capped", lang, cap=len(workers), total=total)))
    out.append(
        html.Div(
            [
                html.Span(
                    [html.Span(className="dot", style={"background": w["c"]}), w["n"]],
                    className="wk-who",
                )
                for w in workers
            ],
            className="wk-legend",
        )
    )
    return out


def report_features(
    reports: list[dict[str, Any]], workers: list[dict[str, Any]], tz: str, lang: str
) -> dict[str, Any]:
    """Reports on the way as map points where the worker stood, the tooltip: time, category
    (and, with several workers, who)."""
    several = len(workers) > 1
    feats = []
    for r in reports:
        text = f"{WQ.local_time(r['t'], tz)} {t('cat.' + r['cat'], lang)}"
        if several:
            text += f" · {workers[r['w']]['n']}"
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [r["ll"][1], r["ll"][0]]},
                "properties": {"k": "r", "n": text, "c": workers[r["w"]]["c"]},
            }
        )
    return {"type": "FeatureCollection", "features": feats}
