"""Supervision and assessment (监督考核): scorecards per district, street, grid or worker.

Pure metric functions over Polars LazyFrames, fed from SQL history with the period, the
as-of time and the area filter pushed down into the SQL (per-incident lifecycle facts come
from the lifecycle summary the pipeline keeps on ``incidents``, or — for an as-of in the
past — are aggregated from the events in the database, so a month at city scale moves
~600k rows, not millions).

* **Cohort**: an incident belongs to the period in which it was *reported* and to the
  grid, street and district where it was reported; at worker level to the grid worker
  responsible when it was reported (the ``handler_id`` of its ``reported`` event).
* **As of**: only lifecycle events before ``as_of`` count, so a scorecard is reproducible;
  a deadline counts against an open incident only once it has passed at ``as_of``.
* **Snapshots**: once a period is final (``assessment.snapshot_grace_hours`` after its
  end) its city-wide scorecard per level is written to ``scorecard_snapshots`` with the
  weights and deadlines used; later reads use the snapshot, so boundary or rule changes
  never rewrite history.

Every metric is in :data:`METRICS` with its names, unit, direction and written definition
(the page shows it as a tooltip, the exports as a definitions sheet). The score is a
weighted mean of per-metric "goodness" in [0, 1] (weights in ``[assessment]``), × 100.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import Engine, and_, case, func, select

from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine import store

LEVELS = ("district", "street", "grid", "worker")
KEY = {"district": "district_id", "street": "street_id", "grid": "grid_id", "worker": "worker_id"}
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
LOCAL_LEVELS = ("grid", "community", "street")


# ------------------------------------------------------------------ periods


@dataclass(frozen=True)
class Period:
    """A half-open local-time interval ``[start, end)``, stored as UTC milliseconds."""

    key: str  # 2026-10 · 2026-W44 · 2026-10-05 · 2026-10-01..2026-10-15
    kind: str  # month / week / day / range
    first: date  # first local day
    last: date  # last local day (inclusive)
    tz: str = "Asia/Shanghai"

    @property
    def start_ms(self) -> int:
        return _local_ms(self.first, self.tz)

    @property
    def end_ms(self) -> int:
        return _local_ms(self.last + timedelta(days=1), self.tz)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def label(self, lang: str = "zh-CN") -> str:
        f, la = self.first, self.last
        if self.kind == "month":
            return f"{f.year}年{f.month}月" if lang != "en" else f"{f:%B %Y}"
        if self.kind == "week":
            y, w, _ = f.isocalendar()
            span = f"{f:%m-%d}–{la:%m-%d}"
            return f"{y}年第{w}周（{span}）" if lang != "en" else f"Week {w}, {y} ({span})"
        if self.kind == "day":
            return f"{f.year}年{f.month}月{f.day}日" if lang != "en" else f.isoformat()
        return f"{f.isoformat()} 至 {la.isoformat()}" if lang != "en" else f"{f} to {la}"

    def shift(self, n: int) -> Period:
        """The period ``n`` steps later (negative: earlier), of the same kind and length."""
        if self.kind == "month":
            m = self.first.year * 12 + self.first.month - 1 + n
            return month_period(m // 12, m % 12 + 1, self.tz)
        step = {"week": 7, "day": 1}.get(self.kind, self.days) * n
        first, last = self.first + timedelta(days=step), self.last + timedelta(days=step)
        if self.kind == "week":
            y, w, _ = first.isocalendar()
            return Period(f"{y}-W{w:02d}", "week", first, last, self.tz)
        if self.kind == "day":
            return Period(first.isoformat(), "day", first, first, self.tz)
        return Period(f"{first}..{last}", "range", first, last, self.tz)

    def previous(self) -> Period:
        return self.shift(-1)

    def recent(self, n: int) -> list[Period]:
        """The ``n`` periods ending with this one, oldest first."""
        return [self.shift(i) for i in range(-(n - 1), 1)]


def _local_ms(d: date, tz: str) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def month_period(year: int, month: int, tz: str = "Asia/Shanghai") -> Period:
    last = calendar.monthrange(year, month)[1]
    return Period(f"{year}-{month:02d}", "month", date(year, month, 1), date(year, month, last), tz)


class PeriodError(ValueError):
    pass


def parse_period(text: str, tz: str = "Asia/Shanghai") -> Period:
    """``2026-10`` (month), ``2026-W44`` (ISO week), ``2026-10-05`` (day),
    ``2026-10-01..2026-10-15`` (custom range, both days included)."""
    s = (text or "").strip()
    try:
        if m := re.fullmatch(r"(\d{4})-(\d{2})", s):
            return month_period(int(m[1]), int(m[2]), tz)
        if m := re.fullmatch(r"(\d{4})-W(\d{1,2})", s, flags=re.IGNORECASE):
            first = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            return Period(f"{m[1]}-W{int(m[2]):02d}", "week", first, first + timedelta(6), tz)
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            d = date.fromisoformat(s)
            return Period(d.isoformat(), "day", d, d, tz)
        if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", s):
            a, b = date.fromisoformat(m[1]), date.fromisoformat(m[2])
            if b < a:
                raise PeriodError(f"range ends before it starts: {s}")
            if (b - a).days > 366:
                raise PeriodError(f"range longer than a year: {s}")
            return Period(f"{a}..{b}", "range", a, b, tz)
    except ValueError as exc:
        if isinstance(exc, PeriodError):
            raise
        raise PeriodError(f"not a valid period: {s!r} ({exc})") from None
    raise PeriodError(
        f"not a period: {s!r} (use 2026-10, 2026-W44, 2026-10-05 or 2026-10-01..2026-10-15)"
    )


def current_period(kind: str, now_ms: int, tz: str = "Asia/Shanghai") -> Period:
    today = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz)).date()
    if kind == "month":
        return month_period(today.year, today.month, tz)
    if kind == "week":
        y, w, _ = today.isocalendar()
        return parse_period(f"{y}-W{w:02d}", tz)
    return parse_period(today.isoformat(), tz)


# ------------------------------------------------------------------ the metrics registry


@dataclass(frozen=True)
class Metric:
    id: str
    zh: str
    en: str
    unit: str  # count · pct · hours
    higher_better: bool
    definition_zh: str
    definition_en: str
    # drill-down: the per-incident flag of the denominator (None: all reports) and of the
    # numerator; None for metrics that are not about incidents
    basis: str | None = None
    flag: str | None = None
    source: str = "incidents"  # incidents · patrols · tracks · warnings

    def name(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh

    def definition(self, lang: str) -> str:
        return self.definition_en if lang == "en" else self.definition_zh

    def unit_label(self, lang: str) -> str:
        return {"pct": "%", "hours": "h" if lang == "en" else "小时", "count": ""}[self.unit]

    def column(self, lang: str) -> str:
        u = self.unit_label(lang)
        return f"{self.name(lang)}({u})" if u else self.name(lang)


_M = Metric
METRICS: dict[str, Metric] = {
    m.id: m
    for m in (
        _M(
            "reports", "事件上报数", "Reports", "count", True,
            "统计期内在该区域上报的事件数（按上报时间和上报位置归属；网格员按上报时的责任网格员归属）。",
            "Incidents reported in the area during the period (by report time and place; "
            "for a worker, by the grid worker responsible when it was reported).",
            None, "all",
        ),
        _M(
            "self_found", "自主发现率", "Self-discovered", "pct", True,
            "由网格员巡查自主发现上报的事件占全部上报事件的比例。",
            "Share of reports raised by grid workers on patrol (source = worker).",
            None, "self_found",
        ),
        _M(
            "accept_ontime", "按时受理率", "Accepted on time", "pct", True,
            "上报后在受理时限（assessment.accept_hours）内首次处理（受理或当场处置）的事件占比；"
            "分母为已处理或时限已过的事件。",
            "Share of incidents first acted on (accepted or handled on the spot) within "
            "assessment.accept_hours of the report; of those acted on or past that deadline.",
            "accept_counted", "accept_ok",
        ),
        _M(
            "dispatch_ontime", "按时派遣率", "Dispatched on time", "pct", True,
            "派遣事件中，自受理起在派遣时限（assessment.dispatch_hours）内派遣的比例。",
            "Of dispatched incidents, the share dispatched within assessment.dispatch_hours "
            "of acceptance (of the report, if never accepted).",
            "dispatch_counted", "dispatch_ok",
        ),
        _M(
            "resolve_ontime", "按时办结率", "Closed on time", "pct", True,
            "在类别办理时限（[deadlines]）内结案的事件占比；分母为已结案或时限已过的事件。",
            "Share of incidents closed within their category deadline ([deadlines]); of "
            "those closed or past that deadline.",
            "resolve_counted", "resolve_ok",
        ),
        _M(
            "mean_hours", "平均办理时长", "Mean handling time", "hours", False,
            "已结案事件从上报到结案的平均小时数。",
            "Mean hours from report to closure, over closed incidents.",
            "closed", "closed",
        ),
        _M(
            "p90_hours", "办理时长P90", "p90 handling time", "hours", False,
            "已结案事件从上报到结案小时数的第90百分位（线性插值，同 Excel PERCENTILE.INC）。",
            "90th percentile of hours from report to closure over closed incidents (linear "
            "interpolation, as Excel PERCENTILE.INC).",
            "closed", "closed",
        ),
        _M(
            "overdue", "超期事件数", "Overdue", "count", False,
            "超过类别办理时限才结案、或时限已过仍未结案的事件数；计分按 1 − 超期数/上报数。",
            "Incidents closed after their category deadline or still open past it; scored "
            "as 1 − overdue / reports.",
            None, "overdue",
        ),
        _M(
            "returned", "退回返工率", "Returned / rework", "pct", False,
            "处置过程中至少被退回一次（返工）的事件占比。",
            "Share of incidents returned (sent back for rework) at least once.",
            None, "returned",
        ),
        _M(
            "verify_pass", "核查通过率", "Verification pass rate", "pct", True,
            "经核查的事件中首次办结即核查通过（其后未被退回）的比例；"
            "分母为有核查记录或办结后被退回的事件。",
            "Of incidents checked (verified, or returned after being resolved), the share "
            "whose first resolution passed (not returned afterwards).",
            "verify_checked", "verify_ok",
        ),
        _M(
            "grid_level", "网格内解决率", "Closed within grid", "pct", True,
            "已结案事件中在网格层级解决的比例（小事不出网格）。",
            "Of closed incidents, the share closed at grid level (小事不出网格).",
            "closed", "grid_level",
        ),
        _M(
            "local_level", "社区街道内解决率", "Closed within street", "pct", True,
            "已结案事件中在网格、社区或街道层级解决（未上交区级）的比例。",
            "Of closed incidents, the share closed at grid, community or street level (not "
            "escalated to the district).",
            "closed", "local_level",
        ),
        _M(
            "patrol_coverage", "巡查覆盖率", "Patrol coverage", "pct", True,
            "网格·日 中有网格员到访的比例（每个网格每天是否被巡查到）；"
            "网格员为到访本人责任网格的天数占比。自平台收到第一个定位点之日起计。",
            "Share of grid-days on which some worker visited the grid; for a worker, the "
            "share of days they visited their own grid. Days count from the day the platform "
            "received its first position.",
            source="patrols",
        ),
        _M(
            "online_rate", "在岗在线率", "Online during shifts", "pct", True,
            "工作时段（warnings.work_start_h–work_end_h）按 assessment.online_slot_minutes "
            "分段，网格员有定位点的时段占 在册网格员×时段 的比例；"
            "时段自平台收到第一个定位点起计。",
            "Share of shift slots (warnings.work_start_h–work_end_h, cut into "
            "assessment.online_slot_minutes) in which a rostered worker sent a position; "
            "slots count from the platform's first position.",
            source="tracks",
        ),
        _M(
            "warning_ack", "预警按时签收率", "Warnings acknowledged on time", "pct", True,
            "统计期内发现的预警中，在签收时限（warnings.escalate_after_s）内签收的比例；"
            "分母为已签收或时限已过且未在时限前自动解除的预警。",
            "Of warnings raised in the period, the share acknowledged within "
            "warnings.escalate_after_s; of those acknowledged, or past that deadline and "
            "not cleared before it.",
            source="warnings",
        ),
    )
}  # fmt: skip
SCORE_DEFINITION = (
    "综合得分 = 100 × Σ(权重 × 指标得分率) / Σ(有数据指标的权重)。比率类指标得分率为比率本身"
    "（退回返工率取 1 − 比率）；时长类为 max(0, 1 − 时长 / assessment.handling_ref_hours)；"
    "超期事件数为 1 − 超期数/上报数。排名为本表内按得分从高到低（并列同名次）；"
    "环比为与上一同类统计期的得分之差。",
    "Score = 100 × Σ(weight × goodness) / Σ(weights of metrics with data). Goodness is the "
    "rate itself (1 − rate for returned/rework); for times max(0, 1 − hours / "
    "assessment.handling_ref_hours); for overdue 1 − overdue / reports. Rank is by score "
    "within this table (ties share a rank); change is the score minus the previous period's.",
)


def weights(settings: Settings) -> dict[str, float]:
    return {m: settings.assessment.weight(m) for m in METRICS}


def rules_of(settings: Settings) -> dict[str, Any]:
    """What a scorecard depends on besides the data (stored with every snapshot)."""
    return {
        "assessment": asdict(settings.assessment),
        "deadlines": asdict(settings.deadlines),
        "work_hours": [settings.warnings.work_start_h, settings.warnings.work_end_h],
        "ack_s": settings.warnings.escalate_after_s,
    }


# ------------------------------------------------------------------ pure transforms


def incident_flags(
    inc: pl.LazyFrame,
    as_of_ms: int,
    deadline_hours: dict[str, float],
    accept_hours: float,
    dispatch_hours: float,
) -> pl.LazyFrame:
    """Per-incident facts → the boolean flags and times every incident metric aggregates.

    Input columns: incident_id, category, source, reported_ms, first_action_ms,
    accepted_ms, dispatched_ms, first_resolved_ms, last_returned_ms, n_returned,
    n_verified, closed_ms, closed_level (lifecycle columns null when not reached).
    """
    default = deadline_hours.get("other", 72.0)
    cats = pl.DataFrame(
        {"category": list(deadline_hours), "deadline_h": list(deadline_hours.values())},
        schema={"category": pl.String, "deadline_h": pl.Float64},
    ).lazy()
    accept_due = pl.col("reported_ms") + int(accept_hours * HOUR_MS)
    resolve_due = pl.col("reported_ms") + (pl.col("deadline_h") * HOUR_MS).cast(pl.Int64)
    acted = pl.col("first_action_ms").is_not_null()
    closed = pl.col("closed_ms").is_not_null()
    dispatched = pl.col("dispatched_ms").is_not_null()
    since = pl.coalesce("accepted_ms", "reported_ms")
    failed = pl.col("last_returned_ms").is_not_null() & (
        pl.col("last_returned_ms") > pl.col("first_resolved_ms")
    )
    failed = failed.fill_null(False)
    return (
        inc.join(cats, on="category", how="left")
        .with_columns(pl.col("deadline_h").fill_null(default))
        .with_columns(
            all=pl.lit(True),
            self_found=pl.col("source") == "worker",
            accept_counted=acted | (accept_due <= as_of_ms),
            accept_ok=acted & (pl.col("first_action_ms") <= accept_due),
            dispatch_counted=dispatched,
            dispatch_ok=dispatched
            & (pl.col("dispatched_ms") - since <= int(dispatch_hours * HOUR_MS)),
            resolve_counted=closed | (resolve_due <= as_of_ms),
            resolve_ok=closed & (pl.col("closed_ms") <= resolve_due),
            closed=closed,
            handling_h=(pl.col("closed_ms") - pl.col("reported_ms")) / HOUR_MS,
            returned=pl.col("n_returned").fill_null(0) > 0,
            verify_checked=(pl.col("n_verified").fill_null(0) > 0) | failed,
            verify_ok=(pl.col("n_verified").fill_null(0) > 0) & ~failed,
            grid_level=closed & (pl.col("closed_level") == "grid"),
            local_level=closed & pl.col("closed_level").is_in(LOCAL_LEVELS),
        )
        .with_columns(
            overdue=pl.col("resolve_counted") & ~pl.col("resolve_ok"),
            accept_ok=pl.col("accept_ok").fill_null(False),
            dispatch_ok=pl.col("dispatch_ok").fill_null(False),
            resolve_ok=pl.col("resolve_ok").fill_null(False),
            grid_level=pl.col("grid_level").fill_null(False),
            local_level=pl.col("local_level").fill_null(False),
        )
    )


def _rate(flag: str, basis: str | None = None) -> pl.Expr:
    col = pl.col(flag).cast(pl.Float64)
    return (col.filter(pl.col(basis)) if basis else col).mean()


INCIDENT_AGGS: dict[str, Callable[[], pl.Expr]] = {
    "reports": lambda: pl.len().cast(pl.Int64),
    "self_found": lambda: _rate("self_found"),
    "accept_ontime": lambda: _rate("accept_ok", "accept_counted"),
    "dispatch_ontime": lambda: _rate("dispatch_ok", "dispatch_counted"),
    "resolve_ontime": lambda: _rate("resolve_ok", "resolve_counted"),
    "mean_hours": lambda: pl.col("handling_h").mean(),
    "p90_hours": lambda: pl.col("handling_h").quantile(0.9, "linear"),
    "overdue": lambda: pl.col("overdue").sum().cast(pl.Int64),
    "returned": lambda: _rate("returned"),
    "verify_pass": lambda: _rate("verify_ok", "verify_checked"),
    "grid_level": lambda: _rate("grid_level", "closed"),
    "local_level": lambda: _rate("local_level", "closed"),
}


def incident_metrics(flags: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """Per ``key`` (district_id / street_id / grid_id / worker_id): the incident metrics."""
    return flags.group_by(key).agg(**{m: agg().alias(m) for m, agg in INCIDENT_AGGS.items()})


def patrol_coverage(
    visits: pl.LazyFrame, grids: pl.LazyFrame, key: str, n_days: int
) -> pl.LazyFrame:
    """visits (day, grid_id) × grids (grid_id, key) → key, patrol_coverage."""
    visited = visits.unique(["day", "grid_id"]).group_by("grid_id").agg(v=pl.len())
    return (
        grids.join(visited, on="grid_id", how="left")
        .group_by(key)
        .agg(
            patrol_coverage=pl.col("v").fill_null(0).sum()
            / pl.when(n_days > 0).then(pl.len() * n_days).otherwise(None)
        )
        .with_columns(pl.col("patrol_coverage").cast(pl.Float64))
    )


def online_rate(
    slots: pl.LazyFrame, roster: pl.LazyFrame, key: str, shift_slots: int
) -> pl.LazyFrame:
    """slots (worker_id, online_slots) × roster (worker_id, key) → key, online_rate."""
    return (
        roster.join(slots, on="worker_id", how="left")
        .group_by(key)
        .agg(
            online_rate=pl.col("online_slots").fill_null(0).sum().cast(pl.Float64)
            / pl.when(shift_slots > 0).then(pl.len() * shift_slots).otherwise(None)
        )
        .with_columns(pl.col("online_rate").cast(pl.Float64))
    )


def warning_ack(warns: pl.LazyFrame, key: str, as_of_ms: int, ack_s: float) -> pl.LazyFrame:
    """warnings (key, first_seen_ms, acked_ms, closed_ms) → key, warning_ack."""
    due = pl.col("first_seen_ms") + int(ack_s * 1000)
    acked = pl.col("acked_ms").is_not_null() & (pl.col("acked_ms") < as_of_ms)
    gone_early = pl.col("closed_ms").is_not_null() & (pl.col("closed_ms") < due) & ~acked
    counted = acked | ((due <= as_of_ms) & ~gone_early)
    ok = acked & (pl.col("acked_ms") <= due)
    return (
        warns.drop_nulls(key)
        .with_columns(counted=counted, ok=ok)
        .group_by(key)
        .agg(warning_ack=pl.col("ok").cast(pl.Float64).filter(pl.col("counted")).mean())
    )


def goodness(metric_id: str, ref_hours: float) -> pl.Expr:
    m = METRICS[metric_id]
    col = pl.col(metric_id).cast(pl.Float64)
    if metric_id == "overdue":
        return pl.when(pl.col("reports") > 0).then(1.0 - col / pl.col("reports"))
    if m.unit == "hours":
        return (1.0 - col / ref_hours).clip(0.0, 1.0)
    return col if m.higher_better else 1.0 - col


def with_score(frame: pl.LazyFrame, w: dict[str, float], ref_hours: float) -> pl.LazyFrame:
    """Adds ``score`` (0–100): the weighted mean goodness of the metrics that have data."""
    parts = [(goodness(m, ref_hours), wt) for m, wt in w.items() if wt > 0]
    if not parts:
        return frame.with_columns(score=pl.lit(None, pl.Float64))
    num = pl.sum_horizontal([g.fill_null(0.0) * wt for g, wt in parts])
    den = pl.sum_horizontal([pl.when(g.is_not_null()).then(wt).otherwise(0.0) for g, wt in parts])
    return frame.with_columns(score=pl.when(den > 0).then(100.0 * num / den))


def rank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rank by score, highest first; ties share the best rank; rows without a score last."""
    return frame.with_columns(
        rank=pl.col("score").round(1).rank("min", descending=True).cast(pl.Int64)
    ).sort(["rank", "name", "row_id"], nulls_last=True)


# ------------------------------------------------------------------ SQL sources (pushed down)


@dataclass(frozen=True)
class Filter:
    """Rows inside ``area_id`` (its own column ``column``); None = the whole city."""

    column: str | None
    area_id: str | None

    @classmethod
    def of(cls, city: City, area_id: str | None) -> Filter:
        level = city.level_of(area_id) if area_id else None
        if level is None or level == "city":
            return cls(None, None)
        return cls(KEY[level], area_id)


def _since_until(period: Period, as_of_ms: int) -> tuple[int, int]:
    return period.start_ms, min(period.end_ms, as_of_ms)


def read_incidents(
    engine: Engine, period: Period, as_of_ms: int, flt: Filter, summary: bool = True
) -> pl.LazyFrame:
    """Per incident reported in the period (and area): its lifecycle facts as of ``as_of``.

    An incident whose events all lie in [period start, ``as_of``) — every incident when
    ``as_of`` is now — is read from its lifecycle summary in ``incidents`` (one range
    scan on ``reported_ms``). The others (an as-of in the past, an event stamped before
    the period, or no summary yet) have their events aggregated in SQL, restricted to
    that window. Both give the same facts; ``summary=False`` aggregates every incident."""
    i = store.incidents
    s, u = _since_until(period, as_of_ms)
    where = [i.c.reported_ms >= s, i.c.reported_ms < u]
    if flt.column is not None:
        where.append(i.c[flt.column] == flt.area_id)
    if not summary:
        return _aggregated(engine, and_(*where), s, as_of_ms)
    q = select(
        *[i.c[c] for c in COHORT_COLUMNS],
        *[i.c[c] for c in LIFECYCLE_COLUMNS if c != "worker_id"],
        i.c.report_handler_id.label("worker_id"),
        i.c.first_ms,
        i.c.last_ms,
    ).where(*where)
    read = _typed(engine, q, SUMMARY_READ_SCHEMA).collect()
    whole = ((pl.col("first_ms") >= s) & (pl.col("last_ms") < as_of_ms)).fill_null(False)
    summarised = read.filter(whole).drop("first_ms", "last_ms")  # null: no summary yet
    if summarised.height == read.height:
        return summarised.lazy()
    # the others by id, from this read (not a second scan of the period's incidents)
    rest = read.filter(~whole)["incident_id"].to_list()
    parts = [
        _aggregated(engine, i.c.incident_id.in_(rest[k : k + ID_CHUNK]), s, as_of_ms)
        for k in range(0, len(rest), ID_CHUNK)
    ]
    return pl.concat([summarised.lazy(), *parts])


ID_CHUNK = 5000  # ids bound in one IN (…) (SQLite allows 32,766 parameters)


def _aggregated(engine: Engine, cohort: Any, since_ms: int, as_of_ms: int) -> pl.LazyFrame:
    """The cohort's lifecycle facts from its events in [since, as_of): one GROUP BY in SQL
    (the same aggregates as ``store.lifecycle_summary``)."""
    e, i = store.incident_events, store.incidents

    def first(step: str, col: Any = None) -> Any:
        return func.min(case((e.c.step == step, col if col is not None else e.c.ts_ms)))

    def count(step: str) -> Any:
        return func.sum(case((e.c.step == step, 1), else_=0))

    ids = select(i.c.incident_id).where(cohort)
    life = (
        select(
            e.c.incident_id,
            func.min(case((e.c.step != "reported", e.c.ts_ms))).label("first_action_ms"),
            first("accepted").label("accepted_ms"),
            first("dispatched").label("dispatched_ms"),
            first("resolved").label("first_resolved_ms"),
            func.max(case((e.c.step == "returned", e.c.ts_ms))).label("last_returned_ms"),
            count("returned").label("n_returned"),
            count("verified").label("n_verified"),
            first("closed").label("closed_ms"),
            func.max(case((e.c.step == "closed", e.c.level))).label("closed_level"),
            first("reported", e.c.handler_id).label("worker_id"),
        )
        .where(e.c.incident_id.in_(ids), e.c.ts_ms >= since_ms, e.c.ts_ms < as_of_ms)
        .group_by(e.c.incident_id)
        .subquery()
    )
    q = select(
        *[i.c[c] for c in COHORT_COLUMNS],
        *[life.c[c] for c in LIFECYCLE_COLUMNS],
    ).join_from(i, life, and_(i.c.incident_id == life.c.incident_id))
    return _typed(engine, q, INCIDENT_SCHEMA)


COHORT_COLUMNS = [
    "incident_id",
    "category",
    "source",
    "grid_id",
    "street_id",
    "district_id",
    "reported_ms",
]
LIFECYCLE_COLUMNS = [
    "first_action_ms",
    "accepted_ms",
    "dispatched_ms",
    "first_resolved_ms",
    "last_returned_ms",
    "n_returned",
    "n_verified",
    "closed_ms",
    "closed_level",
    "worker_id",
]
INCIDENT_SCHEMA = pl.Schema(
    {
        "incident_id": pl.String,
        "category": pl.String,
        "source": pl.String,
        "grid_id": pl.String,
        "street_id": pl.String,
        "district_id": pl.String,
        "reported_ms": pl.Int64,
        "first_action_ms": pl.Int64,
        "accepted_ms": pl.Int64,
        "dispatched_ms": pl.Int64,
        "first_resolved_ms": pl.Int64,
        "last_returned_ms": pl.Int64,
        "n_returned": pl.Int64,
        "n_verified": pl.Int64,
        "closed_ms": pl.Int64,
        "closed_level": pl.String,
        "worker_id": pl.String,
    }
)


SUMMARY_READ_SCHEMA = pl.Schema(
    [*INCIDENT_SCHEMA.items(), ("first_ms", pl.Int64()), ("last_ms", pl.Int64())]
)


def _empty_incidents() -> pl.LazyFrame:
    return pl.LazyFrame(schema=INCIDENT_SCHEMA)


def _typed(engine: Engine, query: Any, schema: pl.Schema) -> pl.LazyFrame:
    """Read a query into a lazy frame of exactly ``schema`` (typed even when empty).

    Straight through the DB-API cursor into Polars (3× faster than SQLAlchemy rows for the
    hundreds of thousands of rows of a city-scale month); the query is still SQLAlchemy
    Core, compiled for the engine's dialect with bound parameters."""
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positiontup is not None:  # qmark / format paramstyles (SQLite)
        params = tuple(compiled.params[k] for k in compiled.positiontup)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(str(compiled), params)
        rows = cur.fetchall()
        cur.close()
    finally:
        raw.close()
    if not rows:
        return pl.LazyFrame(schema=schema)
    return pl.DataFrame(rows, schema=schema, orient="row").lazy()


def _tz_offset_ms(period: Period) -> int:
    off = datetime.fromtimestamp(period.start_ms / 1000, ZoneInfo(period.tz)).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def read_visits(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    p = store.patrols
    last = min(period.last, _local_day(as_of_ms - 1, period.tz))
    q = select(p.c.day, p.c.grid_id).where(
        p.c.day >= period.first.strftime("%Y%m%d"), p.c.day <= last.strftime("%Y%m%d")
    )
    return _typed(engine, q, pl.Schema({"day": pl.String, "grid_id": pl.String}))


def _local_day(ms: int, tz: str) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


def elapsed_days(period: Period, as_of_ms: int, since_ms: int | None = None) -> int:
    """Local days of the period that have begun by ``as_of`` — from the day of ``since_ms``
    (when positions began to arrive) if that is later: days before any position came in
    cannot have been patrolled on the record."""
    if as_of_ms <= period.start_ms:
        return 0
    first = period.first
    if since_ms is not None:
        first = max(first, _local_day(since_ms, period.tz))
    last = min(period.last, _local_day(as_of_ms - 1, period.tz))
    return max(0, (last - first).days + 1)


def shift_slots(
    period: Period,
    as_of_ms: int,
    start_h: int,
    end_h: int,
    slot_min: int,
    since_ms: int | None = None,
) -> int:
    """Shift slots of the period that have begun by ``as_of`` (per worker) and have not
    ended before ``since_ms`` (when positions began to arrive)."""
    slot = slot_min * 60_000
    per_day = [(h0, h0 + slot) for h0 in range(start_h * HOUR_MS, end_h * HOUR_MS, slot)]
    after = since_ms if since_ms is not None else period.start_ms
    n = 0
    for d in range(period.days):
        day0 = _local_ms(period.first + timedelta(days=d), period.tz)
        n += sum(1 for a, b in per_day if day0 + a < as_of_ms and day0 + b > after)
    return n


def read_tracked_since(engine: Engine) -> int | None:
    """When the platform received its first position (the earliest track point kept)."""
    t = store.track_points
    with engine.connect() as conn:
        got = conn.execute(select(func.min(t.c.ts_ms))).scalar()
    return int(got) if got is not None else None


def read_online_slots(
    engine: Engine,
    period: Period,
    as_of_ms: int,
    start_h: int,
    end_h: int,
    slot_min: int,
    track_every_s: int = 60,
) -> pl.LazyFrame:
    """Per worker: shift slots with at least one track point, counted in SQL over the
    downsampled ``slot`` (``ts_ms // track_every``, the primary key's second column, so
    the scan reads only the key index): a point counts at its slot's start."""
    t = store.track_points
    s, u = _since_until(period, as_of_ms)
    every = track_every_s * 1000
    off, slot = _tz_offset_ms(period), slot_min * 60_000
    local = t.c.slot * every + off
    tod = local % DAY_MS
    first, end = s // every + (s % every > 0), -(-u // every)  # slots starting in [s, u)
    q = (
        select(t.c.worker_id, func.count(func.distinct(local // slot)).label("online_slots"))
        .where(t.c.slot >= first, t.c.slot < end, tod >= start_h * HOUR_MS, tod < end_h * HOUR_MS)
        .group_by(t.c.worker_id)
    )
    return _typed(engine, q, pl.Schema({"worker_id": pl.String, "online_slots": pl.Int64}))


def read_worker_visits(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    """Per worker: local days with a track point inside their own grid."""
    t, w = store.track_points, store.workers
    s, u = _since_until(period, as_of_ms)
    off = _tz_offset_ms(period)
    q = (
        select(t.c.worker_id, func.count(func.distinct((t.c.ts_ms + off) // DAY_MS)).label("v"))
        .join_from(t, w, and_(w.c.worker_id == t.c.worker_id, w.c.grid_id == t.c.grid_id))
        .where(t.c.ts_ms >= s, t.c.ts_ms < u)
        .group_by(t.c.worker_id)
    )
    return _typed(engine, q, pl.Schema({"worker_id": pl.String, "v": pl.Int64}))


def read_warnings(engine: Engine, period: Period, as_of_ms: int) -> pl.LazyFrame:
    w = store.warnings
    s, u = _since_until(period, as_of_ms)
    q = select(w.c.area_id, w.c.first_seen_ms, w.c.acked_ms, w.c.closed_ms).where(
        w.c.first_seen_ms >= s, w.c.first_seen_ms < u
    )
    schema = {"area_id": pl.String, "first_seen_ms": pl.Int64, "acked_ms": pl.Int64}
    return _typed(engine, q, pl.Schema({**schema, "closed_ms": pl.Int64}))


def read_roster(engine: Engine, city: City) -> pl.LazyFrame:
    f = store.read_frame(engine, select(store.workers))
    schema = pl.Schema({c.name: pl.String for c in store.workers.columns})
    f = f.cast(schema) if f.width else pl.DataFrame(schema=schema)
    chain = city.grids.select("grid_id", "street_id", "district_id")
    return f.lazy().join(chain.lazy(), on="grid_id", how="inner")


# ------------------------------------------------------------------ rows and the scorecard


def area_chain(city: City) -> pl.DataFrame:
    """Every area → its own grid / street / district column (null above its level)."""
    a = city.areas
    return a.select(
        "area_id",
        "level",
        "name",
        grid_id=pl.when(pl.col("level") == "grid").then(pl.col("area_id")),
        street_id=pl.when(pl.col("level") == "street")
        .then(pl.col("area_id"))
        .otherwise(pl.when(pl.col("level") == "grid").then(pl.col("street_id"))),
        district_id=pl.when(pl.col("level") == "district")
        .then(pl.col("area_id"))
        .otherwise(pl.col("district_id")),
    )


def universe(city: City, roster: pl.LazyFrame, level: str, flt: Filter) -> pl.DataFrame:
    """The rows of a scorecard: every area (or rostered worker) at ``level`` in the filter."""
    if level == "worker":
        r = roster.collect()
        if flt.column:
            r = r.filter(pl.col(flt.column) == flt.area_id)
        names = dict(zip(city.areas["area_id"], city.areas["name"], strict=True))
        return r.select(
            row_id=pl.col("worker_id"),
            name=pl.col("name"),
            parent_id=pl.col("grid_id"),
            parent=pl.col("grid_id").replace_strict(names, default=pl.col("grid_id")),
        ).sort("row_id")
    chain = area_chain(city).filter(pl.col("level") == level)
    if flt.column:
        chain = chain.filter(pl.col(flt.column) == flt.area_id)
    parents = dict(zip(city.areas["area_id"], city.areas["name"], strict=True))
    pcol = {"district": None, "street": "district_id", "grid": "street_id"}[level]
    return chain.select(
        row_id=pl.col("area_id"),
        name=pl.col("name"),
        parent_id=pl.col(pcol) if pcol else pl.lit(None, pl.String),
        parent=pl.col(pcol).replace_strict(parents, default=None) if pcol else pl.lit(""),
    ).sort("row_id")


@dataclass(frozen=True)
class Inputs:
    """The already-read sources of one scorecard (lazy frames) — pure from here on."""

    incidents: pl.LazyFrame
    visits: pl.LazyFrame
    online: pl.LazyFrame
    worker_visits: pl.LazyFrame
    warnings: pl.LazyFrame
    roster: pl.LazyFrame
    tracked_since_ms: int | None = None  # the first position: coverage and online count from it


def read_inputs(
    engine: Engine, city: City, settings: Settings, level: str, period: Period,
    as_of_ms: int, flt: Filter,
) -> Inputs:  # fmt: skip
    a, w = settings.assessment, settings.warnings
    return Inputs(
        incidents=read_incidents(engine, period, as_of_ms, flt),
        visits=read_visits(engine, period, as_of_ms),
        online=read_online_slots(
            engine,
            period,
            as_of_ms,
            w.work_start_h,
            w.work_end_h,
            a.online_slot_minutes,
            settings.pipelines.persist_tracks_every_s,
        ),
        worker_visits=read_worker_visits(engine, period, as_of_ms)
        if level == "worker"
        else pl.LazyFrame(schema={"worker_id": pl.String, "v": pl.Int64}),
        warnings=read_warnings(engine, period, as_of_ms),
        roster=read_roster(engine, city),
        tracked_since_ms=read_tracked_since(engine),
    )


METRIC_IDS = list(METRICS)


def compute(
    inputs: Inputs, city: City, settings: Settings, level: str, period: Period,
    as_of_ms: int, flt: Filter,
) -> pl.DataFrame:  # fmt: skip
    """The scorecard's rows (unranked): row_id, name, parent_id, parent, metrics…, score."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}")
    a, w = settings.assessment, settings.warnings
    key = KEY[level]
    rows = universe(city, inputs.roster, level, flt).lazy()
    deadlines = asdict(settings.deadlines)
    flags = incident_flags(inputs.incidents, as_of_ms, deadlines, a.accept_hours, a.dispatch_hours)
    inc = incident_metrics(flags.drop_nulls(key), key).rename({key: "row_id"})
    since = inputs.tracked_since_ms
    n_days = elapsed_days(period, as_of_ms, since)
    slots = shift_slots(
        period, as_of_ms, w.work_start_h, w.work_end_h, a.online_slot_minutes, since
    )
    roster = inputs.roster
    if level == "worker":
        cover = inputs.worker_visits.select(
            row_id="worker_id",
            patrol_coverage=pl.col("v").cast(pl.Float64) / n_days if n_days else pl.lit(None),
        ).with_columns(pl.col("patrol_coverage").cast(pl.Float64))
        online = online_rate(
            inputs.online, roster.select("worker_id", key=pl.col("worker_id")), "key", slots
        ).rename({"key": "row_id"})
        warn = pl.LazyFrame(schema={"row_id": pl.String, "warning_ack": pl.Float64})
    else:
        grids = city.grids.lazy().select("grid_id", pl.col(key).alias("row_id"))
        cover = patrol_coverage(inputs.visits, grids, "row_id", n_days)
        online = online_rate(
            inputs.online, roster.select("worker_id", row_id=pl.col(key)), "row_id", slots
        )
        chain = area_chain(city).lazy().select("area_id", row_id=pl.col(key))
        warns = inputs.warnings.join(chain, on="area_id", how="inner")
        warn = warning_ack(warns, "row_id", as_of_ms, w.escalate_after_s)
    out = (
        rows.join(inc, on="row_id", how="left")
        .join(cover, on="row_id", how="left")
        .join(online, on="row_id", how="left")
        .join(warn, on="row_id", how="left")
        .with_columns(pl.col("reports").fill_null(0), pl.col("overdue").fill_null(0))
    )
    if level == "worker" and n_days:  # no day begun (on the record): no coverage, null
        out = out.with_columns(pl.col("patrol_coverage").fill_null(0.0).cast(pl.Float64))
    out = with_score(out, weights(settings), a.handling_ref_hours)
    cols = ["row_id", "name", "parent_id", "parent", *METRIC_IDS, "score"]
    return out.select(cols).collect()


# ------------------------------------------------------------------ snapshots


def is_final(period: Period, now_ms: int, settings: Settings) -> bool:
    return period.end_ms + settings.assessment.snapshot_grace_hours * HOUR_MS <= now_ms


def read_snapshot(engine: Engine, period: Period, level: str) -> pl.DataFrame | None:
    t = store.scorecard_snapshots
    q = select(t.c.row_id, t.c.name, t.c.parent_id, t.c.parent, t.c.metrics, t.c.score).where(
        t.c.period_key == period.key, t.c.level == level
    )
    f = store.read_frame(engine, q)
    if f.is_empty():
        return None
    values = [json.loads(m) for m in f["metrics"].to_list()]
    mf = pl.DataFrame(
        {m: [v.get(m) for v in values] for m in METRIC_IDS},
        schema={m: pl.Int64 if METRICS[m].unit == "count" else pl.Float64 for m in METRIC_IDS},
    )
    return pl.concat(
        [f.select("row_id", "name", "parent_id", "parent"), mf, f.select("score")],
        how="horizontal",
    ).cast({"score": pl.Float64})


def write_snapshot(
    engine: Engine, period: Period, level: str, frame: pl.DataFrame, rules: dict[str, Any],
    now_ms: int,
) -> None:  # fmt: skip
    """Idempotent: the first snapshot of a period and level wins."""
    rules_json = json.dumps(rules, sort_keys=True, ensure_ascii=False)
    rows = [
        {
            "period_key": period.key,
            "level": level,
            "row_id": r["row_id"],
            "name": r["name"],
            "parent_id": r["parent_id"],
            "parent": r["parent"],
            "metrics": json.dumps({m: r[m] for m in METRIC_IDS}, allow_nan=False),
            "score": r["score"],
            "rules": rules_json,
            "computed_ms": now_ms,
        }
        for r in frame.iter_rows(named=True)
    ]
    with engine.begin() as conn:
        store.insert_ignore(conn, store.scorecard_snapshots, rows)


def raw_scorecard(
    engine: Engine, city: City, settings: Settings, level: str, period: Period, now_ms: int,
    scope: str | None = None,
) -> pl.DataFrame:  # fmt: skip
    """Unranked rows for the period within ``scope`` — from the snapshot when final."""
    flt = Filter.of(city, scope)
    if is_final(period, now_ms, settings):
        snap = read_snapshot(engine, period, level)
        if snap is None:
            whole = Filter(None, None)
            inputs = read_inputs(engine, city, settings, level, period, now_ms, whole)
            snap = compute(inputs, city, settings, level, period, now_ms, whole)
            write_snapshot(engine, period, level, snap, rules_of(settings), now_ms)
        return _within(snap, city, level, flt, engine)
    as_of = min(now_ms, period.end_ms + int(settings.assessment.snapshot_grace_hours * HOUR_MS))
    inputs = read_inputs(engine, city, settings, level, period, as_of, flt)
    return compute(inputs, city, settings, level, period, as_of, flt)


def _within(
    frame: pl.DataFrame, city: City, level: str, flt: Filter, engine: Engine
) -> pl.DataFrame:
    if flt.column is None:
        return frame
    if level == "worker":
        ids = universe(city, read_roster(engine, city), level, flt)["row_id"]
    else:
        ids = universe(city, pl.LazyFrame(), level, flt)["row_id"]
    return frame.filter(pl.col("row_id").is_in(ids.implode()))


@dataclass(frozen=True)
class Scorecard:
    level: str
    period: Period
    scope: str
    rows: pl.DataFrame  # ranked: rank, row_id, name, parent…, metrics, score, change, trend
    periods: list[Period]  # of the trend, oldest first
    final: bool
    generated_ms: int


def scorecard(
    engine: Engine, city: City, settings: Settings, level: str, period: Period, now_ms: int,
    scope: str | None = None,
) -> Scorecard:  # fmt: skip
    """Ranked rows with the change against the previous period and the recent trend."""
    scope = scope or city.city_id
    n = max(2, settings.assessment.sparkline_periods)
    periods = period.recent(n)
    frames = {
        p.key: raw_scorecard(engine, city, settings, level, p, now_ms, scope)
        for p in periods
        if p.start_ms < now_ms or p.key == period.key
    }
    cur = rank_rows(frames[period.key])
    prev = frames.get(period.previous().key)
    if prev is not None:
        cur = cur.join(
            prev.select("row_id", prev_score="score"), on="row_id", how="left"
        ).with_columns(change=pl.col("score").round(1) - pl.col("prev_score").round(1))
        cur = cur.drop("prev_score")
    else:
        cur = cur.with_columns(change=pl.lit(None, pl.Float64))
    trend = [
        frames[p.key].select("row_id", pl.col("score").alias(p.key))
        for p in periods
        if p.key in frames
    ]
    hist = trend[0]
    for f in trend[1:]:
        hist = hist.join(f, on="row_id", how="full", coalesce=True)
    keys = [p.key for p in periods if p.key in frames]
    hist = hist.select("row_id", trend=pl.concat_list([pl.col(k).round(1) for k in keys]))
    cur = cur.join(hist, on="row_id", how="left")
    return Scorecard(
        level, period, scope, cur, [p for p in periods if p.key in frames],
        is_final(period, now_ms, settings), now_ms,
    )  # fmt: skip


# ------------------------------------------------------------------ what the screen shows

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
            "score": None if r["score"] is None else round(float(r["score"]), 1),
            "change": None if r["change"] is None else round(float(r["change"]), 1),
        }
        for m in METRIC_IDS:
            row[m] = display_value(m, r[m])
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


# ------------------------------------------------------------------ drill-down to incidents


def incidents_behind(
    engine: Engine, city: City, settings: Settings, level: str, period: Period,
    row_id: str, metric_id: str, now_ms: int, limit: int = 500,
) -> pl.DataFrame:  # fmt: skip
    """The incidents a number is made of: those in the metric's denominator, with whether
    each counts in its numerator (``counts``). Empty for non-incident metrics."""
    m = METRICS.get(metric_id)
    if m is None or m.flag is None or level not in LEVELS:
        return pl.DataFrame()
    as_of = min(now_ms, period.end_ms + int(settings.assessment.snapshot_grace_hours * HOUR_MS))
    flt = Filter(KEY[level], row_id) if level != "worker" else Filter(None, None)
    a = settings.assessment
    inc = read_incidents(engine, period, as_of, flt)
    if level == "worker":
        inc = inc.filter(pl.col("worker_id") == row_id)
    flags = incident_flags(inc, as_of, asdict(settings.deadlines), a.accept_hours, a.dispatch_hours)
    if m.basis:
        flags = flags.filter(pl.col(m.basis))
    return (
        flags.select(
            "incident_id",
            "category",
            "source",
            "grid_id",
            "reported_ms",
            "closed_ms",
            "closed_level",
            "handling_h",
            counts=pl.col(m.flag),
        )
        .sort(["counts", "reported_ms"], descending=[metric_id != "mean_hours", False])
        .head(limit)
        .collect()
    )
