"""Pure helpers of the assessment page (监督考核): the view from the URL, table columns,
tooltips, colour bands, crumbs, period options. No Flask, no SQL: unit-tested directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from dashboard.components.columns import fit
from pipelines import assessment as S
from pipelines.access import policy
from pipelines.assessment.exports import cell_text, column_kind
from pipelines.city.geography import City
from pipelines.settings import Settings

LEVEL_ORDER = {"city": 0, "district": 1, "street": 2, "grid": 3, "worker": 4}
KINDS = ("month", "week", "day", "range")
# who may export: the policy table's "exports" (the page is its "scorecards")
EXPORT_ROLES = policy.roles_for("exports")
BAND_SHARE = 0.2  # best / worst fifth of the rows get a colour band (≥ 5 rows)


@dataclass(frozen=True)
class View:
    level: str
    period: S.Period
    area: str  # the rows lie inside this area (the user's scope, or a drill-down inside it)

    def search(self) -> str:
        return "?" + urlencode({"level": self.level, "period": self.period.key, "area": self.area})


def levels_below(city: City, area_id: str) -> list[str]:
    """Scorecard levels available inside an area (the area's own level and below)."""
    lv = city.level_of(area_id) or "city"
    return [x for x in S.LEVELS if LEVEL_ORDER[x] >= max(1, LEVEL_ORDER[lv])]


def view_of(
    city: City, scope: str, query: dict[str, Any], now_ms: int, tz: str, default_kind: str = "month"
) -> View:
    """The view a URL asks for, clamped to the user's scope (never outside it): an area
    outside the scope falls back to the scope; a level above the area to the next below."""
    area = str(query.get("area") or scope)
    if city.area(area) is None or scope not in city.ancestors(area):
        area = scope
    levels = levels_below(city, area)
    level = str(query.get("level") or "")
    if level not in levels:
        level = levels[1] if len(levels) > 1 and city.level_of(area) != "grid" else levels[0]
    try:
        period = S.parse_period(str(query.get("period") or ""), tz)
    except S.PeriodError:
        period = S.current_period(default_kind, now_ms, tz)
    return View(level, period, area)


def crumbs(city: City, scope: str, view: View) -> list[tuple[str, str]]:
    """(name, search) from the user's scope down to the view's area."""
    chain = list(reversed(city.ancestors(view.area)))
    chain = chain[chain.index(scope) :] if scope in chain else [view.area]
    out = []
    for a in chain:
        row = city.area(a)
        sub = levels_below(city, a)
        nxt = sub[1] if len(sub) > 1 and city.level_of(a) != "grid" else sub[0]
        out.append((str(row["name"]) if row else a, View(nxt, view.period, a).search()))
    return out


def drill(city: City, view: View, row_id: str) -> View | None:
    """Clicking a row's name: district → its streets → its grids → its workers."""
    nxt = {"district": "street", "street": "grid", "grid": "worker"}.get(view.level)
    if nxt is None or city.area(row_id) is None:
        return None
    return View(nxt, view.period, row_id)


def period_options(kind: str, now_ms: int, tz: str, lang: str, n: int = 13) -> list[dict]:
    if kind not in ("month", "week", "day"):
        return []
    cur = S.current_period(kind, now_ms, tz)
    return [{"label": p.label(lang), "value": p.key} for p in reversed(cur.recent(n))]


FORMATS = {  # d3-format specifiers, the same text as ``exports.cell_text``
    "int": ".0f",
    "num1": ".1f",
    "signed1": "+.1f",
}
BEST_STYLE = {"backgroundColor": "rgba(39, 174, 96, 0.30)", "color": "#c9f7d9"}
WORST_STYLE = {"backgroundColor": "rgba(235, 87, 87, 0.30)", "color": "#ffd6d6"}
GAP_STYLE = {"color": "#7d8fa6", "fontStyle": "italic"}  # 样本不足 / 无数据: grey, never banded
# the least widths of the text columns (a name wraps within its cell) and of a number
TEXT_WIDTH = {"name": 100, "parent": 72, "trend": 90}
NUMBER_WIDTH = 56
PINNED = ("rank", "name")  # kept in view while the other columns scroll sideways
# rows without a score (too little data) are listed after the ranked ones, greyed
ROW_CLASS_RULES = {"asm-unranked": "params.data != null && params.data.rank == null"}


def _gaps(col: str) -> tuple[str, ...]:
    """What an empty cell of the column may say (keys of ``GAPS``), as the exports."""
    if col in ("rank", "score"):
        return (col,)
    if col in S.METRICS:
        return ("thin", "none") if S.METRICS[col].sampled else ("none",)
    return ()


def _formatter(kind: str, col: str, lang: str) -> str:
    """A number as the exports write it; an empty metric says why (the exports' words)."""
    num = f"d3.format('{FORMATS[kind]}')(params.value)"
    says = [S.gap_text(g, lang) for g in _gaps(col)]
    if len(says) == 2:  # a sampled metric: too few, or none at all
        gap = (
            f"((params.data && params.data.thin && params.data.thin.includes('{col}'))"
            f" ? '{says[0]}' : '{says[1]}')"
        )
    elif says:
        gap = f"'{says[0]}'"
    elif col == "change":  # no score in this period or the one before (as the exports write)
        gap = f"'{cell_text(column_kind(col), None)}'"
    else:
        gap = "''"
    return f"params.value == null ? {gap} : {num}"


ID_OF = {"name": "row_id", "parent": "parent_id"}  # a name column → the id behind it


def columns(
    level: str,
    lang: str,
    settings: Settings,
    banded: dict[str, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """AG Grid column definitions: numbers stay numbers (sortable), formatted like the
    exports; an empty cell says why (样本不足 / 无数据 / 未排名) in grey; a metric's header
    carries its definition and the fair-ranking rule (min sample, min score weight);
    ``banded`` (from :func:`bands`) colours the best and worst fifth of each column."""
    tips = header_tooltips(lang, settings)
    out: list[dict[str, Any]] = []
    for c in [*S.shown_columns(level), "trend"]:
        col: dict[str, Any] = {"field": c, "headerName": S.column_title(c, lang, level)}
        if c in tips:
            col["headerTooltip"] = tips[c]
        if c in ID_OF:  # a name shows its id on hover
            col["tooltipField"] = ID_OF[c]
        kind = column_kind(c)
        # its header's words and what an empty cell says (on one line) fit
        header, says = [col["headerName"]], [S.gap_text(g, lang) for g in _gaps(c)]
        if kind in FORMATS:
            col |= {
                "type": "numericColumn",
                "valueFormatter": {"function": _formatter(kind, c, lang)},
                "minWidth": fit(header, NUMBER_WIDTH, whole=says),
            }
        else:
            col |= {"minWidth": fit(header, TEXT_WIDTH.get(c, 90)), "cellClass": f"asm-col-{c}"}
        # the pinned columns keep their least width (a pinned column does not flex)
        pin = {"pinned": "left", "width": col["minWidth"]}
        col |= pin if c in PINNED else {"flex": 1}
        if kind in FORMATS:
            gaps = [{"condition": "params.value == null", "style": GAP_STYLE}]
            col["cellStyle"] = {"styleConditions": gaps + (banded or {}).get(c, [])}
        out.append(col)
    return out


def header_tooltips(lang: str, settings: Settings) -> dict[str, str]:
    """Each metric's definition with the fair-ranking rule (the exports' definitions)."""
    a = settings.assessment
    tips = {
        m.id: " ".join(
            x for x in (m.definition(lang, settings), S.sample_rule(m.id, lang, a.min_sample)) if x
        )
        for m in S.METRICS.values()
    }
    tips["score"] = (
        S.score_definition(lang, settings)
        + (" " if lang == "en" else "")
        + S.score_rule(lang, a.min_score_weight)
    )
    tips["trend"] = (
        "Score in each of the last periods (oldest first; · = no score)"
        if lang == "en"
        else "最近各统计期的综合得分（从早到近；· 表示无得分）"
    )
    tips["change"] = "Score minus the previous period's" if lang == "en" else "本期得分减上期得分"
    return tips


def bands(
    rows: list[dict[str, Any]], weights: dict[str, float] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per column, the conditions that colour the best fifth green and the worst fifth red
    (by each metric's direction), when there are at least 5 rows with values. With
    ``weights``, only the score and the metrics that count in it are banded (a count such as
    reports is not good or bad in itself)."""
    out: dict[str, list[dict[str, Any]]] = {}
    cols = [m for m in S.METRIC_IDS if weights is None or weights.get(m, 0.0) > 0]
    for c in ["score", *cols]:
        vals = sorted(float(r[c]) for r in rows if r.get(c) is not None)
        if len(vals) < 5 or vals[0] == vals[-1]:
            continue
        k = max(1, int(len(vals) * BAND_SHARE))
        low, high = vals[k - 1], vals[-k]
        higher_better = c == "score" or S.METRICS[c].higher_better
        best, worst = (high, low) if higher_better else (low, high)
        op_best, op_worst = (">=", "<=") if higher_better else ("<=", ">=")
        # Ties: when over four fifths share the best value, the worst band would reach it
        # (and paint the best rows red): band only what is strictly worse than it — fewer
        # than a fifth of the rows. Likewise for the best band and the worst value.
        top, bottom = (vals[-1], vals[0]) if higher_better else (vals[0], vals[-1])
        if worst == top:
            op_worst = op_worst[0]
        if best == bottom:
            op_best = op_best[0]
        out[c] = [
            {
                "condition": f"params.value != null && params.value {op_best} {best}",
                "style": BEST_STYLE,
            },
            {
                "condition": f"params.value != null && params.value {op_worst} {worst}",
                "style": WORST_STYLE,
            },
        ]
    return out


def table_data(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Display rows with the grid's stable row ``id``."""
    return [{**r, "id": r["row_id"]} for r in rows]


def behind_columns(titles: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Columns of the incidents-behind table: text left, the hours right; the grid by
    name, its id on hover."""
    return [
        {"field": c, "headerName": name, "minWidth": 70, "flex": 1}
        | ({"type": "numericColumn"} if c == "hours" else {})
        | ({"tooltipField": "grid_id", "minWidth": 140} if c == "grid" else {})
        | ({"cellClass": "wg-ident inc-link"} if c == "incident_id" else {})
        for c, name in titles
    ]


def behind_rows(
    frame: Any, tz: str, lang: str, names: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """The incidents behind a number, for a small table (``grid``: the grid's name from
    ``names``, ``grid_id`` kept for the hover); times local, dates ISO."""
    z = ZoneInfo(tz)
    names = names or {}

    def when(ms: Any) -> str:
        if ms is None:
            return "—"
        return datetime.fromtimestamp(int(ms) / 1000, z).strftime("%Y-%m-%d %H:%M")

    yes, no = ("✓", "✗")
    out = []
    for r in frame.iter_rows(named=True):
        out.append(
            {
                "incident_id": r["incident_id"],
                "category": r["category"],
                "source": r["source"],
                "grid_id": r["grid_id"],
                "grid": names.get(r["grid_id"] or "", r["grid_id"] or "—"),
                "reported": when(r["reported_ms"]),
                "closed": when(r["closed_ms"]),
                "level": r["closed_level"] or "—",
                "hours": cell_text("num1", r["handling_h"]),
                "counts": yes if r["counts"] else no,
            }
        )
    return out
