"""Reads shaped for the pages: pure functions over raw live-state reads.

``build_snapshot`` turns one ``LiveState.read_areas`` result into everything a panel
shows (KPIs, child values per metric, trend, categories, hot spots, ticker). It is
computed once per tick per area (``Backend.shared``) and unit-tested without Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipelines.city.geography import City
from pipelines.spine.events import CATEGORIES, LEVELS, VIDEO_LABELS

METRICS = ("open", "reports", "overdue", "warning", "coverage", "online", "video")
WARN_LEVELS = ("blue", "yellow", "orange", "red")
WARN_COLORS = ("#1e3a5f", "#2f80ed", "#f2c94c", "#f2994a", "#eb5757")  # none, blue … red
ADDITIVE = ("open", "overdue", "online", "reports", "resolved", "closed", "video", "coverage")

# Sequential palettes (light → dark on a dark map), one per metric family.
PALETTES: dict[str, tuple[str, ...]] = {
    "open": ("#16324f", "#1f5f8b", "#2f8fc2", "#f2c94c", "#f2994a", "#eb5757"),
    "reports": ("#16324f", "#1f5f8b", "#2f8fc2", "#56ccf2", "#a0e7ff", "#ffffff"),
    "overdue": ("#1d2f45", "#5b3a4a", "#8e3b46", "#c0392b", "#e74c3c", "#ff7b6b"),
    "coverage": ("#5b1f2a", "#8e3b46", "#b7791f", "#d6b656", "#6fcf97", "#27ae60"),
    "online": ("#16324f", "#1d4e5f", "#1f7a6d", "#27ae60", "#6fcf97", "#b9f6ca"),
    "video": ("#1d2f45", "#3b3a66", "#5b4b99", "#8e6ccf", "#bb86fc", "#e1ccff"),
}


@dataclass(frozen=True)
class AreaView:
    area_id: str
    level: str
    name: str
    crumbs: tuple[tuple[str, str, str], ...]  # (area_id, name, level) city → … → this
    children: tuple[str, ...]
    child_names: tuple[str, ...]
    child_level: str | None


def view_of(city: City, area_id: str | None) -> AreaView | None:
    """The area behind a URL (None → the city); None for an unknown id."""
    area_id = area_id or city.city_id
    row = city.area(area_id)
    if row is None:
        return None
    crumbs = []
    for a in reversed(city.ancestors(area_id)):
        r = city.area(a)
        assert r is not None
        crumbs.append((a, r["name"], r["level"]))
    children = city.children(area_id)
    names = [city.area(c)["name"] for c in children]  # type: ignore[index]
    child_level = None
    if children:
        child_level = city.level_of(children[0])
    return AreaView(
        area_id,
        row["level"],
        row["name"],
        tuple(crumbs),
        tuple(children),
        tuple(names),
        child_level,
    )


def hours_back(now_ms: int, n: int = 24) -> list[int]:
    """Epoch hours of the last ``n`` hours, oldest first, ending with the current hour."""
    h = now_ms // 3_600_000
    return list(range(h - n + 1, h + 1))


def local_day(now_ms: int, tz: str) -> str:
    return datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).strftime("%Y%m%d")


def breakdown_spec() -> dict[str, tuple[str, tuple[Any, ...]]]:
    return {
        "open_cat": ("open_cat", CATEGORIES),
        "reports_cat": ("reports_cat", CATEGORIES),
        "closed_level": ("closed_level", LEVELS),
        "video_label": ("video_label", VIDEO_LABELS),
        "warn_count": ("warn_count", WARN_LEVELS),
    }


def child_values(
    raw: dict[str, Any], metric: str, ids: list[str], grid_counts: dict[str, int]
) -> list[float]:
    """Values of one metric for ``ids`` (aligned with ``raw``'s per-area lists)."""
    if metric == "warning":
        return [float(v) for v in raw["warn_level"]]
    if metric == "coverage":
        return [
            round(c / grid_counts.get(a, 1), 4) if grid_counts.get(a) else 0.0
            for a, c in zip(ids, raw["coverage"], strict=True)
        ]
    return [float(v) for v in raw[metric]]


def breaks_for(metric: str, values: list[float]) -> list[float]:
    """Upper bounds of 6 colour classes: fixed for shares and levels, data-driven else."""
    if metric == "coverage":
        return [0.2, 0.4, 0.6, 0.8, 0.95, 1.0]
    if metric == "warning":
        return [0, 1, 2, 3, 4]
    top = max(values, default=0.0)
    if top <= 0:
        return [0, 1, 2, 3, 4, 5]
    step = _nice(top / 5)
    return [0] + [step * i for i in range(1, 6)]


def quantile_breaks(values: list[float], classes: int = 6) -> list[float]:
    """Upper bounds for many small counts (every grid of the city): 0 alone, then the
    non-zero values split into equal-sized groups, so the map shows where the most are
    rather than one colour for all (a linear scale puts almost every grid in its first
    class). Whole numbers, strictly rising; fewer classes when the values are few."""
    positive = sorted(v for v in values if v > 0)
    if not positive:
        return [0, 1, 2, 3, 4, 5]
    out: list[float] = [0]
    rest = classes - 1
    for k in range(1, rest + 1):
        at = positive[min(len(positive) - 1, math.ceil(k * len(positive) / rest) - 1)]
        b = float(math.ceil(at))
        if b > out[-1]:
            out.append(b)
    return out


def _nice(x: float) -> float:
    """1, 2, 5 × 10^k at or above x."""
    if x <= 1:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * exp >= x:
            return float(m * exp)
    return float(10 * exp)


def colors_for(metric: str) -> list[str]:
    if metric == "warning":
        return list(WARN_COLORS)
    return list(PALETTES.get(metric, PALETTES["open"]))


def hideout(metric: str, values: list[float], selected: str | None = None) -> dict[str, Any]:
    """What the clientside map style function needs: values by feature index + scale."""
    return {
        "metric": metric,
        "values": values,
        "breaks": breaks_for(metric, values),
        "colors": colors_for(metric),
        "selected": selected,
    }


def kpis(
    raw: dict[str, Any], i: int, area: str, grid_counts: dict[str, int], on_duty: int
) -> dict[str, Any]:
    """The KPI tiles of the area at index ``i`` of the read."""
    closed = raw["closed"][i]
    levels = raw["breakdowns"]["closed_level"]
    warn = raw["breakdowns"]["warn_count"]
    grids = grid_counts.get(area, 0)
    # Of the incidents closed at a level: a merged duplicate closes at none.
    settled = sum(levels.get(lv, 0) for lv in LEVELS)
    return {
        "reports": raw["reports"][i],
        "open": raw["open"][i],
        "overdue": raw["overdue"][i],
        "resolved": raw["resolved"][i],
        "closed": closed,
        "grid_share": round(levels.get("grid", 0) / settled, 4) if closed and settled else None,
        "online": raw["online"][i],
        "on_duty": on_duty,
        "coverage": round(raw["coverage"][i] / grids, 4) if grids else None,
        "patrolled": raw["coverage"][i],
        "grids": grids,
        "video": raw["video"][i],
        "warnings": {lv: warn.get(lv, 0) for lv in WARN_LEVELS},
    }


def hotspots(
    names: list[str], ids: list[str], values: list[float], n: int = 5
) -> list[dict[str, Any]]:
    ranked = sorted(zip(values, ids, names, strict=True), key=lambda x: (-x[0], x[1]))
    return [{"area_id": a, "name": nm, "value": v} for v, a, nm in ranked[:n] if v > 0]


def build_snapshot(
    view: AreaView,
    raw: dict[str, Any],
    *,
    now_ms: int,
    hours: list[int],
    grid_counts: dict[str, int],
    on_duty: dict[str, int],
) -> dict[str, Any]:
    """Everything the panorama/wall shows for one area, JSON-ready."""
    ids = [view.area_id, *view.children]
    kids = list(view.children)
    per_metric = {
        m: child_values(_slice(raw, 1), m, kids, grid_counts) if kids else [] for m in METRICS
    }
    self_values = {
        m: child_values(_slice(raw, 0, 1), m, [view.area_id], grid_counts)[0] for m in METRICS
    }
    last = max((int(v) for k, v in raw["meta"].items() if k.startswith("last_")), default=0)
    return {
        "area_id": view.area_id,
        "now_ms": now_ms,
        "data_ms": last,
        "kpi": kpis(raw, 0, view.area_id, grid_counts, on_duty.get(view.area_id, 0)),
        "ids": ids,
        "children": per_metric,
        "self": self_values,
        "hotspots": {
            m: hotspots(list(view.child_names), kids, per_metric[m]) for m in METRICS if kids
        },
        "trend": {
            "hours": hours,
            "reports": raw["hourly_reports"],
            "video": raw["hourly_video"],
        },
        "categories": raw["breakdowns"]["open_cat"],
        "reports_cat": raw["breakdowns"]["reports_cat"],
        "labels": raw["breakdowns"]["video_label"],
        "ticker": raw["ticker"],
    }


def _slice(raw: dict[str, Any], start: int, stop: int | None = None) -> dict[str, Any]:
    out = dict(raw)
    for m in (
        "open",
        "overdue",
        "online",
        "warn_level",
        "reports",
        "resolved",
        "closed",
        "video",
        "coverage",
    ):
        out[m] = raw[m][start:stop]
    return out


def hour_labels(hours: list[int], tz: str) -> list[str]:
    zone = ZoneInfo(tz)
    return [datetime.fromtimestamp(h * 3600, UTC).astimezone(zone).strftime("%H:00") for h in hours]


def clock_text(now_ms: int, tz: str) -> tuple[str, str, int]:
    """(HH:MM:SS, YYYY-MM-DD, weekday 0=Mon) in the display time zone."""
    dt = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    return dt.strftime("%H:%M:%S"), dt.strftime("%Y-%m-%d"), dt.weekday()


def freshness(now_ms: int, data_ms: int) -> int | None:
    """Seconds since the pipelines last wrote, or None when nothing arrived yet."""
    if not data_ms:
        return None
    return max(0, (now_ms - data_ms) // 1000)


def ticker_rows(
    items: list[dict[str, Any]], tz: str, city: City, now_ms: int
) -> list[dict[str, Any]]:
    """Ticker entries with local time and the grid's name. An event of another day than
    ``now_ms``'s (a backfill landing, a phone's late upload) shows its date too."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    out = []
    for it in items:
        grid = city.area(str(it.get("grid", "")))
        at = datetime.fromtimestamp(int(it["ts"]) / 1000, zone)
        out.append(
            {
                "time": at.strftime("%H:%M:%S" if at.date() == today else "%m-%d %H:%M"),
                "kind": it.get("k", ""),
                "what": str(it.get("what", "")),
                "place": grid["name"] if grid else "",
                "sev": it.get("sev"),
            }
        )
    return out


def tour_areas(city: City, area_id: str) -> list[str]:
    """The areas a wall's auto-tour visits: the area, then its children (never grids)."""
    kids = city.children(area_id)
    if kids and city.level_of(kids[0]) != "grid":
        return [area_id, *kids]
    return [area_id]


def next_in_tour(areas: list[str], current_area: str) -> str:
    i = areas.index(current_area) if current_area in areas else -1
    return areas[(i + 1) % len(areas)]


def font_px(viewport_height: int | None) -> int:
    """Wall chart font size: 1.65 % of the screen height (18 px at 1080p, 36 at 2160p)."""
    return max(12, round((viewport_height or 1080) * 0.0165))
