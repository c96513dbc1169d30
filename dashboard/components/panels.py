"""Layout builders: data in, Dash components out. No I/O, no callbacks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dash_leaflet as dl
import plotly.io as pio
from dash import dcc, html

from dashboard.components.charts import (
    blank_figure,
    count_axis,
    empty_figure,
    empty_note,
    is_empty,
    tone,
)
from dashboard.i18n import t
from dashboard.pages.panorama.queries import WARN_LEVELS, AreaView, hour_labels
from pipelines.spine.events import CATEGORIES, VIDEO_LABELS

CAT_COLORS = (
    "#eb5757",
    "#f2994a",
    "#f2c94c",
    "#6fcf97",
    "#56ccf2",
    "#2f80ed",
    "#ff4d4f",
    "#9b9b9b",
)
FONT = "PingFang SC, Microsoft YaHei, Noto Sans CJK SC, WenQuanYi Micro Hei, sans-serif"


def fmt_int(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.1f}%"


def breadcrumbs(
    view: AreaView,
    lang: str,
    base: str = "/area/",
    linkable: Callable[[str], bool] = lambda _area_id: True,
) -> list[Any]:
    """市 › 区 › 街道; areas above the viewer's scope are plain text, not links."""
    out: list[Any] = []
    for i, (area_id, name, _level) in enumerate(view.crumbs):
        if i:
            out.append(html.Span("›", className="sep"))
        if i == len(view.crumbs) - 1 or not linkable(area_id):
            out.append(html.Span(name))
        else:
            out.append(dcc.Link(name, href=f"{base}{area_id}"))
    return out


def message_panel(
    title: str, body: str, link_text: str, panel_id: str, href: str = "/"
) -> html.Div:
    """A friendly full-width message (not found, denied): never a traceback."""
    return html.Div(
        [html.H2(title), html.P(body), dcc.Link(link_text, href=href)],
        className="wg-panel notfound",
        id=panel_id,
    )


def denied_panel(lang: str, home: str | None = None) -> html.Div:
    """The viewer may not see this area or page (the area is never named). The link goes
    back to the viewer's own area (``home``, from ``auth.home_href``), or to the city
    when their scope is the whole city."""
    back = t("auth.denied.back_home", lang) if home else t("notfound.back", lang)
    return message_panel(
        t("auth.denied", lang), t("auth.denied.body", lang), back, "denied", home or "/"
    )


def not_found_panel(area_id: str, lang: str) -> html.Div:
    """An unknown area id in the URL."""
    return message_panel(
        t("notfound.title", lang),
        t("notfound.body", lang, id=area_id),
        t("notfound.back", lang),
        "notfound",
    )


def graph_panel(title: str, graph_id: str, config: Any, height: str) -> html.Div:
    return html.Div(
        [
            html.H3(title),
            dcc.Graph(id=graph_id, figure=blank_figure(), config=config, style={"height": height}),
        ],
        className="wg-panel",
    )


def _tile(label: str, value: str, sub: str = "", cls: str = "", wide: bool = False) -> html.Div:
    return html.Div(
        [
            html.Div(label, className="label"),
            html.Div(value, className=f"value {cls}"),
            html.Div(sub, className="sub"),
        ],
        className="kpi wide" if wide else "kpi",
    )


def kpi_tiles(k: dict[str, Any], lang: str) -> list[Any]:
    warn = k.get("warnings", {})
    chips = [
        html.Span(f"{t('warn.' + lv, lang)} {warn.get(lv, 0)}", className=f"chip {lv}")
        for lv in WARN_LEVELS
    ]
    return [
        _tile(t("kpi.reports", lang), fmt_int(k.get("reports"))),
        _tile(t("kpi.open", lang), fmt_int(k.get("open"))),
        _tile(
            t("kpi.overdue", lang), fmt_int(k.get("overdue")), cls="bad" if k.get("overdue") else ""
        ),
        _tile(t("kpi.resolved", lang), fmt_int(k.get("resolved"))),
        _tile(
            t("kpi.grid_share", lang),
            fmt_pct(k.get("grid_share")),
            cls=tone("grid_share", k.get("grid_share"), k.get("closed")),
            sub=f"{fmt_int(k.get('closed'))} 结案"
            if lang != "en"
            else f"of {fmt_int(k.get('closed'))} closed",
        ),
        _tile(
            t("kpi.online", lang),
            fmt_int(k.get("online")),
            sub=(
                f"在岗 {fmt_int(k.get('on_duty'))}"
                if lang != "en"
                else f"of {fmt_int(k.get('on_duty'))} on duty"
            ),
        ),
        _tile(
            t("kpi.coverage", lang),
            fmt_pct(k.get("coverage")),
            cls=tone("coverage", k.get("coverage"), k.get("grids")),
            sub=f"{fmt_int(k.get('patrolled'))} / {fmt_int(k.get('grids'))}",
        ),
        _tile(t("kpi.video", lang), fmt_int(k.get("video"))),
        dcc.Link(  # to the early-warning page (the wall has no pointer: it just shows)
            [
                html.Div(t("kpi.warnings", lang), className="label"),
                html.Div(chips, className="warnchips"),
            ],
            href="/warnings",
            className="kpi wide kpi-link",
        ),
    ]


def legend(h: dict[str, Any], lang: str) -> list[Any]:
    metric = h.get("metric", "open")
    breaks, colors = h.get("breaks", []), h.get("colors", [])
    rows: list[Any] = [html.Div(t(f"metric.{metric}", lang), className="wg-muted")]
    if metric == "warning":
        names = ["—", *(t(f"warn.{lv}", lang) for lv in WARN_LEVELS)]
        labels = names
    else:
        labels = []
        lo: float = 0
        for b in breaks:
            if metric == "coverage":
                labels.append(f"≤ {b * 100:.0f}%")
            else:
                labels.append(f"{int(lo)}–{int(b)}" if b > lo else f"{int(b)}")
            lo = b + (0 if metric == "coverage" else 1)
    for color, label in zip(colors, labels, strict=False):
        rows.append(
            html.Div(
                [html.Span(className="sw", style={"background": color}), html.Span(label)],
                className="row",
            )
        )
    return rows


_TEMPLATE_NONE = pio.templates["none"].to_plotly_json()


def _layout(size: int, **over: Any) -> dict[str, Any]:
    """Plain-dict layout (no plotly validation: ~100x cheaper, identical JSON)."""
    lay: dict[str, Any] = {
        "template": _TEMPLATE_NONE,
        "margin": {"l": size * 3, "r": 8, "t": 8, "b": size * 2 + 4},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": FONT, "color": "#d8e9ff", "size": size},
        "showlegend": True,
        "legend": {"orientation": "h", "y": 1.12, "x": 0, "font": {"size": size}},
        # automargin: the margins grow to fit the tick labels, in any language and size
        "xaxis": {
            "gridcolor": "#1d4f7f55",
            "linecolor": "#1d4f7f",
            "tickangle": 0,
            "nticks": 7,
            "automargin": True,
        },
        "yaxis": {
            "gridcolor": "#1d4f7f55",
            "linecolor": "#1d4f7f",
            "rangemode": "tozero",
            "automargin": True,
        },
    }
    for k, v in over.items():
        lay[k] = {**lay[k], **v} if isinstance(v, dict) and isinstance(lay.get(k), dict) else v
    return lay


def trend_figure(trend: dict[str, Any], lang: str, tz: str, size: int = 12) -> dict[str, Any]:
    reports, video = trend.get("reports", []), trend.get("video", [])
    if is_empty(reports) and is_empty(video):
        return empty_figure(lang, size)
    x = hour_labels(trend.get("hours", []), tz)
    w = 3 if size > 14 else 2
    return {
        "data": [
            {
                "type": "scatter",
                "x": x,
                "y": trend.get("reports", []),
                "name": t("trend.reports", lang),
                "mode": "lines",
                "line": {"color": "#41c7ff", "width": w},
                "fill": "tozeroy",
                "fillcolor": "rgba(65,199,255,0.15)",
            },
            {
                "type": "scatter",
                "x": x,
                "y": trend.get("video", []),
                "name": t("trend.video", lang),
                "mode": "lines",
                "line": {"color": "#bb86fc", "width": w},
            },
        ],
        "layout": _layout(size, yaxis=count_axis([*reports, *video])),
    }


def category_figure(counts: dict[str, int], lang: str, size: int = 12) -> dict[str, Any]:
    cats = list(CATEGORIES)
    v = [counts.get(c, 0) for c in cats]
    if is_empty(v):
        return empty_figure(lang, size)
    names = [t(f"cat.{c}", lang) for c in cats]
    bar = {
        "type": "bar",
        "x": v,
        "y": names,
        "orientation": "h",
        "marker": {"color": list(CAT_COLORS)},
        "text": [fmt_int(x) if x else "" for x in v],  # grouped like every count on the page
        # inside a bar wide enough, else just past its end (never clipped to "…")
        "textposition": "auto",
        "insidetextanchor": "end",
        "textangle": 0,
        "cliponaxis": False,
    }
    lay = _layout(
        size,
        showlegend=False,
        margin={"l": 4, "r": 8, "t": 4, "b": 4},  # automargin fits the category names
        yaxis={"autorange": "reversed", "gridcolor": "rgba(0,0,0,0)"},
        xaxis=count_axis(v),
    )
    lay["xaxis"].pop("nticks", None)  # the count axis sets its own whole ticks
    # Plotly writes no text on a bar of no width: a 0 is written beside the axis instead
    zeros = [n for n, x in zip(names, v, strict=True) if not x]
    if not zeros:
        return {"data": [bar], "layout": lay}
    zero = {
        "type": "scatter",
        "mode": "text",
        "x": [0] * len(zeros),
        "y": zeros,
        "text": ["0"] * len(zeros),
        "textposition": "middle right",
        "textfont": {"color": "#8fb3d9"},
        "hoverinfo": "skip",
        "cliponaxis": False,
    }
    return {"data": [bar, zero], "layout": lay}


def label_figure(counts: dict[str, int], lang: str, size: int = 12) -> dict[str, Any]:
    labels = list(VIDEO_LABELS)
    if is_empty([counts.get(v, 0) for v in labels]):
        return empty_figure(lang, size)
    pie = {
        "type": "pie",
        "labels": [t(f"label.{v}", lang) for v in labels],
        "values": [counts.get(v, 0) for v in labels],
        "hole": 0.55,
        "sort": False,
        "textinfo": "value",
    }
    lay = _layout(
        size,
        margin={"l": 4, "r": 4, "t": 4, "b": 4},
        legend={"orientation": "v", "x": 1.0, "y": 0.5},
    )
    return {"data": [pie], "layout": lay}


def hotspot_list(
    items: list[dict[str, Any]], metric: str, base: str = "/area/", lang: str = "zh-CN"
) -> Any:
    if not items:
        return empty_note(lang)

    def value(v: float) -> str:
        return f"{v * 100:.0f}%" if metric == "coverage" else fmt_int(v)

    return html.Ul(
        [
            html.Li(
                [
                    html.Span(f"{i + 1}", className="rank"),
                    dcc.Link(it["name"], href=f"{base}{it['area_id']}", style={"flex": 1}),
                    html.Span(value(it["value"])),
                ]
            )
            for i, it in enumerate(items)
        ],
        className="hot",
    )


def ticker_text(row: dict[str, Any], lang: str) -> str:
    what = row["what"]
    if row["kind"] == "report" and ":" in what:
        cat, step = what.split(":", 1)
        what = f"{t('cat.' + cat, lang)} · {t('step.' + step, lang)}"
    elif row["kind"] == "video":
        what = f"{t('label.' + what, lang)}"
    return f"{row['place']} {what}"


def ticker_list(rows: list[dict[str, Any]], lang: str, n: int = 6) -> list[Any]:
    if not rows:
        return [empty_note(lang)]
    return [
        html.Div(
            [
                html.Span(r["time"], className="time"),
                html.Span(ticker_text(r, lang), className=f"kind-{r['kind']}"),
            ],
            className="item",
        )
        for r in rows[:n]
    ]


WATER_STYLE = {
    "color": "#2b7bb9",
    "weight": 1,
    "fillColor": "#0f4f80",
    "fillOpacity": 0.6,
    "dashArray": "4 3",
}


def _rings(geometry: dict[str, Any]) -> list[list[list[list[float]]]]:
    """GeoJSON (Multi)Polygon → Leaflet polygons: rings of [lat, lon]."""
    polys = (
        geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    )
    return [[[[lat, lon] for lon, lat in ring] for ring in poly] for poly in polys]


def water_layers(water: dict[str, Any]) -> list[Any]:
    """Named water (pipelines/city/water.py): a blue shape that takes no clicks, and its
    name on it, so a gap between districts never reads as missing data. Drawn only without
    a tile layer (tiles show the real water)."""
    out: list[Any] = []
    for f in water["features"]:
        for rings in _rings(f["geometry"]):
            out.append(dl.Polygon(positions=rings, interactive=False, **WATER_STYLE))
        lon, lat = f["properties"]["label"]
        out.append(
            dl.DivMarker(
                position=[lat, lon],
                interactive=False,
                iconOptions={
                    "className": "wg-water-label",
                    "html": str(f["properties"]["n"]),
                    "iconSize": [120, 20],
                    "iconAnchor": [60, 10],
                },
            )
        )
    return out


def leaflet_map(
    map_id: str,
    geo_id: str,
    url: str,
    center: tuple[float, float],
    zoom: int,
    tile_url: str,
    gcj02: bool,
    markers_id: str | None = None,
    zoom_control: bool = True,
    water: dict[str, Any] | None = None,
) -> dl.Map:
    layers: list[Any] = []
    if tile_url:
        layers.append(dl.TileLayer(url=tile_url, maxZoom=19))
    geo_kw: dict[str, Any] = {}
    if gcj02:
        geo_kw["coordsToLatLng"] = {"variable": "wangge.map.gcj02"}
    if water and water.get("features") and not tile_url:
        layers.extend(water_layers(water))
    layers.append(
        dl.GeoJSON(
            id=geo_id,
            url=url,
            style={"variable": "wangge.map.style"},
            onEachFeature={"variable": "wangge.map.tooltip"},
            hoverStyle={"weight": 3, "color": "#ffffff"},
            zoomToBounds=True,
            hideout={},
            **geo_kw,
        )
    )
    if markers_id:
        layers.append(
            dl.GeoJSON(
                id=markers_id,
                data={"type": "FeatureCollection", "features": []},
                pointToLayer={"variable": "wangge.map.point"},
                **geo_kw,
            )
        )
    return dl.Map(
        id=map_id,
        children=layers,
        center=[center[1], center[0]],
        zoom=zoom,
        zoomSnap=0.25,
        attributionControl=False,
        zoomControl=zoom_control,
        className="wg-leaflet",
        preferCanvas=False,
    )
