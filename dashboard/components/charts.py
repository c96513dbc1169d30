"""What every chart, list and number tile shares about emptiness and meaning:

* :func:`empty_figure` — a chart with nothing to show says 暂无数据 / "No data" in its
  middle, with no axes (never Plotly's made-up −1…1 range);
* :func:`count_axis` — an axis of counts has whole-number ticks from 0 (never 0.5);
* :func:`empty_note` — the same words for an empty list or table;
* :func:`tone` — the colour class of a number from its direction and value: a rate
  without a sample is grey "no data", never green.

Pure: data in, plain dicts / components out."""

from __future__ import annotations

import math
from typing import Any

from dash import html

from dashboard.i18n import t

EMPTY_CLASS = "wg-empty"

# Each tiled rate: (higher is better, the value from which it is good, below which bad).
# A command centre reads green as "fine", red as "act": thresholds are the usual targets of
# grid governance (most small matters closed inside the grid; most grids patrolled daily).
RATE_TARGETS: dict[str, tuple[bool, float, float]] = {
    "grid_share": (True, 0.6, 0.3),  # 小事不出网格
    "coverage": (True, 0.8, 0.5),  # 巡查覆盖率
    "online_share": (True, 0.8, 0.5),  # 在线 / 在岗
}


def is_empty(values: Any) -> bool:
    """No values at all, or only zeros / None (nothing to draw)."""
    return not any(v for v in (values or []) if v is not None)


def blank_figure() -> dict[str, Any]:
    """A chart before its first answer: nothing on the panel's own background (Plotly's
    default figure is a white box with axes from 0 to 6, on a dark screen, for as long as
    the first refresh takes)."""
    hidden = {"visible": False, "showgrid": False, "zeroline": False}
    return {
        "data": [],
        "layout": {
            "template": {},
            "paper_bgcolor": "rgba(0,0,0,0)",
            "plot_bgcolor": "rgba(0,0,0,0)",
            "margin": {"l": 4, "r": 4, "t": 4, "b": 4},
            "showlegend": False,
            "xaxis": hidden,
            "yaxis": hidden,
        },
    }


def empty_figure(lang: str, size: int = 12) -> dict[str, Any]:
    """A chart's empty state: the words in the middle, no axes, no grid, no legend."""
    return {
        "data": [],
        "layout": {
            **blank_figure()["layout"],
            "annotations": [
                {
                    "text": t("empty.nodata", lang),
                    "showarrow": False,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.5,
                    "y": 0.5,
                    "font": {"size": size + 2, "color": "#7d8fa6"},
                }
            ],
            "meta": {"empty": True},
        },
    }


def nice_step(top: float, ticks: int = 5) -> int:
    """A whole tick step (1, 2, 5 × 10^k) giving about ``ticks`` ticks up to ``top``."""
    if top <= ticks:
        return 1
    raw = top / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return int(m * mag)
    return int(10 * mag)  # pragma: no cover - the loop always returns


def count_axis(values: Any, **over: Any) -> dict[str, Any]:
    """An axis for counts: from 0, whole-number ticks, thousands separated."""
    top = max([float(v) for v in (values or []) if v is not None] or [0.0])
    step = nice_step(top)
    return {
        "rangemode": "nonnegative",
        "tickformat": ",d",
        "tick0": 0,
        "dtick": step,
        "range": [0, max(step, top * 1.08)],
        **over,
    }


def empty_note(lang: str) -> html.Div:
    """An empty list or table says so (the same words as an empty chart)."""
    return html.Div(t("empty.nodata", lang), className=f"wg-muted {EMPTY_CLASS}")


def tone(metric: str, value: float | None, sample: int | None = None) -> str:
    """The colour class of a tiled rate: ``nodata`` without a sample (or a value),
    ``good`` / ``bad`` by the metric's direction and target, else neutral ``""``."""
    if value is None or (sample is not None and sample <= 0):
        return "nodata"
    higher, good, bad = RATE_TARGETS[metric]
    if higher:
        return "good" if value >= good else ("bad" if value < bad else "")
    return "good" if value <= good else ("bad" if value > bad else "")
