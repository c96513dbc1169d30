"""What the screen shows: display rows (values rounded as shown, sparklines of the trend), the
column titles per level and language, and :class:`Shown` — the exact table on screen that
the exports write."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines.assessment.metrics import METRIC_IDS, METRICS, SAMPLED, n_col
from pipelines.assessment.periods import Period, parse_period
from pipelines.assessment.scorecards import Scorecard

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None]) -> str:
    """Block characters for scores 0–100 (a gap · for a period without a score)."""
    out = []
    for v in values:
        if v is None:
            out.append("·")
        else:
            out.append(SPARK[min(len(SPARK) - 1, max(0, int(v / 100 * len(SPARK))))])
    return "".join(out)


def display_value(metric_id: str, v: Any) -> float | int | None:
    """The number as shown: percentages ×100 and 1 decimal, hours 1 decimal, counts whole."""
    if v is None:
        return None
    unit = METRICS[metric_id].unit if metric_id in METRICS else "score"
    if unit == "count":
        return int(v)
    if unit == "pct":
        return round(float(v) * 100.0, 1)
    return round(float(v), 1)


DISPLAY_COLUMNS = ("rank", "name", "parent", "score", "change", *METRIC_IDS)


def display_rows(card: Scorecard) -> list[dict[str, Any]]:
    """The table exactly as on screen and in every export (rounded once, here)."""
    out = []
    for r in card.rows.iter_rows(named=True):
        row: dict[str, Any] = {
            "row_id": r["row_id"],
            "rank": r["rank"],
            "name": r["name"],
            "parent": r["parent"] or "",
            "parent_id": r.get("parent_id") or "",  # the page shows it on hover
            "score": None if r["score"] is None else round(float(r["score"]), 1),
            "change": None if r["change"] is None else round(float(r["change"]), 1),
        }
        for m in METRIC_IDS:
            row[m] = display_value(m, r[m])
        # a sampled metric without a value but with a sample: too few to count (the rule)
        row["thin"] = [m for m in SAMPLED if r[m] is None and (r.get(n_col(m)) or 0) > 0]
        row["trend"] = sparkline(r["trend"] or [])
        out.append(row)
    return out


ROW_TITLES = {
    "name": {
        "worker": ("网格员", "Worker"),
        "grid": ("网格", "Grid"),
        "street": ("街道", "Street"),
        "district": ("区", "District"),
    },
    "parent": {
        "worker": ("责任网格", "Grid"),
        "grid": ("所属街道", "Street"),
        "street": ("所属区", "District"),
        "district": ("", ""),
    },
}


FIXED_TITLES = {
    "rank": ("排名", "Rank"),
    "score": ("综合得分", "Score"),
    "change": ("环比变化", "Change"),
    "trend": ("近期趋势", "Trend"),
}


GAPS = {  # what an empty cell says (page and exports alike)
    "thin": ("样本不足", "Too few"),
    "none": ("无数据", "No data"),
    "rank": ("未排名", "Unranked"),
    "score": ("数据不足", "Not enough data"),
}


def gap_text(kind: str, lang: str) -> str:
    return GAPS[kind][1 if lang == "en" else 0]


def gap_of(row: dict[str, Any], col: str) -> str | None:
    """Why a shown row's cell is empty (a key of GAPS), or None when it has a value or is
    a column where empty needs no words (change, trend, parent)."""
    if row.get(col) is not None:
        return None
    if col in ("rank", "score"):
        return col
    if col in METRICS:
        return "thin" if col in (row.get("thin") or []) else "none"
    return None


@dataclass(frozen=True)
class Shown:
    """A scorecard as displayed (rounded rows): what the page shows and every export writes."""

    level: str
    period: Period
    area: str
    final: bool
    generated_ms: int
    rows: list[dict[str, Any]]

    @classmethod
    def of(cls, card: Scorecard) -> Shown:
        return cls(
            card.level, card.period, card.scope, card.final, card.generated_ms, display_rows(card)
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "level": self.level,
                "period": self.period.key,
                "tz": self.period.tz,
                "area": self.area,
                "final": self.final,
                "generated_ms": self.generated_ms,
                "rows": self.rows,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Shown:
        d = json.loads(text)
        period = parse_period(d["period"], d["tz"])
        return cls(d["level"], period, d["area"], d["final"], d["generated_ms"], d["rows"])


def column_title(col: str, lang: str, level: str) -> str:
    """The column's heading (the XLSX/CSV/PDF headers use the same)."""
    if col in METRICS:
        return METRICS[col].column(lang)
    pair = ROW_TITLES[col][level] if col in ROW_TITLES else FIXED_TITLES[col]
    return pair[1] if lang == "en" else pair[0]


def shown_columns(level: str) -> list[str]:
    return [c for c in DISPLAY_COLUMNS if not (c == "parent" and level == "district")]
