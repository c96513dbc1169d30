"""The metrics registry and the pure transforms behind it.

Every metric is in :data:`METRICS` with its names, unit, direction and written definition
(the page shows it as a tooltip, the exports as a definitions sheet). The transforms are
pure Polars over LazyFrames: per-incident flags, their aggregation per area, patrol
coverage, online rate, warning acknowledgement, goodness in [0, 1] and the weighted score
(weights in ``[assessment]``), × 100, and the ranking."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from pipelines.assessment.periods import HOUR_MS
from pipelines.assessment.wording import fill
from pipelines.dispatch.flows import STAGES, Flows, flows_for
from pipelines.dispatch.ontime import flow_table, stage_hours_of
from pipelines.settings import Settings

LEVELS = ("district", "street", "grid", "worker")


KEY = {"district": "district_id", "street": "street_id", "grid": "grid_id", "worker": "worker_id"}


LOCAL_LEVELS = ("grid", "community", "street")


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

    def definition(self, lang: str, settings: Settings) -> str:
        """The definition in words, with the configured deadlines and hours filled in."""
        return fill(self.definition_en if lang == "en" else self.definition_zh, settings, lang)

    def unit_label(self, lang: str) -> str:
        return {"pct": "%", "hours": "h" if lang == "en" else "小时", "count": ""}[self.unit]

    def column(self, lang: str) -> str:
        u = self.unit_label(lang)
        return f"{self.name(lang)}({u})" if u else self.name(lang)

    @property
    def sampled(self) -> bool:
        """A share or time over incidents (or warnings): it needs a minimum sample."""
        return self.source in ("incidents", "warnings") and self.id != "reports"


_M = Metric

# Flow stage → its words: name (zh, en), the step that ends it (zh, en).
STAGE_WORDS = (
    ("accept", "受理", "Accept", "受理", "accepted"),
    ("dispatch", "派遣", "Dispatch", "派遣", "dispatched"),
    ("handle", "处置", "Handle", "办结", "resolved"),
    ("verify", "核查", "Verify", "核查通过", "verified"),
    ("close", "结案", "Close", "结案", "closed"),
)
STAGE_METRICS = tuple(f"stage_{w[0]}" for w in STAGE_WORDS)


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
            "上报后在标准流程的受理时限（{accept}）内首次处理（受理或当场处置）的事件占比；"
            "分母为已处理或时限已过的事件。",
            "Share of incidents first acted on (accepted or handled on the spot) within "
            "their standard flow's acceptance deadline ({accept}) of the report; of those "
            "acted on or past that deadline.",
            "accept_counted", "accept_ok",
        ),
        _M(
            "dispatch_ontime", "按时派遣率", "Dispatched on time", "pct", True,
            "派遣事件中，自受理（未受理的自上报）起在标准流程的派遣时限（{dispatch}）内派遣的比例。",
            "Of dispatched incidents, the share dispatched within their standard flow's "
            "dispatch deadline ({dispatch}) of acceptance (of the report, if never accepted).",
            "dispatch_counted", "dispatch_ok",
        ),
        _M(
            "resolve_ontime", "按时办结率", "Closed on time", "pct", True,
            "在标准流程的办理时限（各环节时限之和：{deadlines}）内结案的事件占比；"
            "分母为已结案或时限已过的事件。",
            "Share of incidents closed within their standard flow's deadline (the sum of its "
            "stage deadlines: {deadlines}); of those closed or past that deadline.",
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
            "超过标准流程办理时限才结案、或时限已过仍未结案的事件数；计分按 1 − 超期数/上报数。",
            "Incidents closed after their standard flow's deadline or still open past it; "
            "scored as 1 − overdue / reports.",
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
            "已结案事件中结案记录的解决层级为网格的比例（小事不出网格；不含作为重复件合并的事件）。",
            "Of closed incidents, the share whose closure records grid level as the level "
            "it was resolved at (小事不出网格; incidents merged as duplicates left out).",
            "closed", "grid_level",
        ),
        _M(
            "local_level", "社区街道内解决率", "Closed within street", "pct", True,
            "已结案事件中在网格、社区或街道层级解决（未上交区级）的比例（不含重复件）。",
            "Of closed incidents, the share closed at grid, community or street level (not "
            "escalated to the district; duplicates left out).",
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
            "工作时段（{work}）按 {slot}"
            "分段，网格员有定位点的时段占 在册网格员×时段 的比例；"
            "时段自平台收到第一个定位点起计。",
            "Share of shift slots (working hours {work}, cut into slots of "
            "{slot}) in which a rostered worker sent a position; "
            "slots count from the platform's first position.",
            source="tracks",
        ),
        _M(
            "warning_ack", "预警按时签收率", "Warnings acknowledged on time", "pct", True,
            "统计期内发现的预警中，在签收时限 {ack}内签收的比例；"
            "分母为已签收或时限已过且未在时限前自动解除的预警。",
            "Of warnings raised in the period, the share acknowledged within "
            "{ack} (the acknowledgement deadline); of those acknowledged, or past that "
            "deadline and not cleared before it.",
            source="warnings",
        ),
        *(
            _M(
                f"stage_{st}", f"{zh}环节按时率", f"{en} stage on time", "pct", True,
                f"进入{zh}环节（{ends}前）的事件中，在标准流程该环节时限（{{{st}}}）内离开的比例；"
                "分母为已离开该环节或时限已过仍未离开的事件（一步越过该环节、作为重复件合并的不计）。",
                f"Of incidents that entered the {en.lower()} stage (until {ends_en}), the "
                f"share that left it within their standard flow's stage deadline ({{{st}}}); "
                "of those that left it or are still in it past that deadline (an incident "
                "passing the stage in one step, or merged as a duplicate, is left out).",
                f"stage_{st}_counted", f"stage_{st}_ok",
            )
            for st, zh, en, ends, ends_en in STAGE_WORDS
        ),
    )
}  # fmt: skip


SCORE_DEFINITION = (
    "综合得分 = 100 × Σ(权重 × 指标得分率) / Σ(有数据指标的权重)。比率类指标得分率为比率本身"
    "（退回返工率取 1 − 比率）；时长类为 max(0, 1 − 时长 / {ref})；"
    "超期事件数为 1 − 超期数/上报数。排名为本表内按得分从高到低（并列同名次）；"
    "环比为与上一同类统计期的得分之差。",
    "Score = 100 × Σ(weight × goodness) / Σ(weights of metrics with data). Goodness is the "
    "rate itself (1 − rate for returned/rework); for times max(0, 1 − hours / "
    "{ref}); for overdue 1 − overdue / reports. Rank is by score "
    "within this table (ties share a rank); change is the score minus the previous period's.",
)


def score_definition(lang: str, settings: Settings) -> str:
    """How the score is made, in words (the reference handling time filled in)."""
    return fill(SCORE_DEFINITION[1 if lang == "en" else 0], settings, lang)


SAMPLE_RULE = (
    "分母少于 {n} 件时显示“样本不足”，不计入综合得分，也不标最好/最差着色；"
    "分母为 0 时显示“无数据”。",
    "With fewer than {n} incidents (warnings) in the denominator the cell shows “Too few”, "
    "is left out of the score and never coloured best or worst; with none, “No data”.",
)
SCORE_RULE = (
    "只有数据充足的指标权重合计达到总权重的 {share:.0%} 时才计算综合得分并排名；"
    "其余区域列在已排名区域之后，不排名（灰色）。",
    "An area is scored and ranked only when its metrics with enough data carry at least "
    "{share:.0%} of the total weight; the others are listed after the ranked ones, unranked "
    "(grey).",
)


def sample_rule(metric_id: str, lang: str, min_sample: int) -> str:
    """The fair-ranking rule of a metric ('' for metrics measured over time, not samples)."""
    if not METRICS[metric_id].sampled:
        return ""
    return SAMPLE_RULE[1 if lang == "en" else 0].format(n=min_sample)


def score_rule(lang: str, min_weight: float) -> str:
    return SCORE_RULE[1 if lang == "en" else 0].format(share=min_weight)


def weights(settings: Settings) -> dict[str, float]:
    return {m: settings.assessment.weight(m) for m in METRICS}


def rules_of(settings: Settings) -> dict[str, Any]:
    """What a scorecard depends on besides the data (stored with every snapshot)."""
    flows = flows_for(settings)
    return {
        "assessment": asdict(settings.assessment),
        # every deadline is a flow's: the file and each flow's stage hours (snapshots from
        # before the flows recorded "deadlines", per category, instead)
        "flows": {"source": flows.source, "stage_hours": stage_hours_of(flows)},
        "work_hours": [settings.warnings.work_start_h, settings.warnings.work_end_h],
        "ack_s": settings.warnings.escalate_after_s,
    }


def incident_flags(inc: pl.LazyFrame, as_of_ms: int, flows: Flows) -> pl.LazyFrame:
    """Per-incident facts → the boolean flags and times every incident metric aggregates.

    Every deadline is the incident's standard flow's (by category and severity): accept
    due at report + the accept stage's hours; dispatch due at acceptance (the report, if
    never accepted) + the dispatch stage's; closure due at report + all stages' hours;
    each stage due when it was entered (the previous stage left) + its hours, or the
    deadline the dispatch set (``due_ms``) for the handle stage. An incident merged as a
    duplicate (``duplicate_of``) counts in no on-time rate and no resolution level.

    Input columns: incident_id, category, severity, source, reported_ms, first_action_ms,
    accepted_ms, dispatched_ms, first_resolved_ms, last_returned_ms, n_returned,
    n_verified, closed_ms, closed_level, left_accept_ms … left_verify_ms (lifecycle
    columns null when not reached); optional duplicate_of, due_ms.
    """
    cols = inc.collect_schema().names()
    hours = flow_table(flows).select("category", "severity", *[f"{s}_h" for s in STAGES], "total_h")
    h = {s: (pl.col(f"{s}_h") * HOUR_MS).cast(pl.Int64) for s in STAGES}
    dup = pl.col("duplicate_of").is_not_null() if "duplicate_of" in cols else pl.lit(False)
    accept_due = pl.col("reported_ms") + h["accept"]
    resolve_due = pl.col("reported_ms") + (pl.col("total_h") * HOUR_MS).cast(pl.Int64)
    acted = pl.col("first_action_ms").is_not_null()
    closed = pl.col("closed_ms").is_not_null()
    dispatched = pl.col("dispatched_ms").is_not_null()
    since = pl.coalesce("accepted_ms", "reported_ms")
    failed = pl.col("last_returned_ms").is_not_null() & (
        pl.col("last_returned_ms") > pl.col("first_resolved_ms")
    )
    failed = failed.fill_null(False)
    own = ~pl.col("duplicate")
    other = flows.select("other", 1)
    return (
        inc.with_columns(pl.col("severity").cast(pl.Int64))
        .join(hours.lazy(), on=["category", "severity"], how="left")
        .with_columns(  # a category the flows do not know (not in validated data): other's
            **{f"{s}_h": pl.col(f"{s}_h").fill_null(other.stage(s).hours) for s in STAGES},
            total_h=pl.col("total_h").fill_null(other.total_hours),
        )
        .with_columns(duplicate=dup.fill_null(False))
        .with_columns(
            all=pl.lit(True),
            self_found=pl.col("source") == "worker",
            accept_counted=own & (acted | (accept_due <= as_of_ms)),
            accept_ok=own & acted & (pl.col("first_action_ms") <= accept_due),
            dispatch_counted=own & dispatched,
            dispatch_ok=own & dispatched & (pl.col("dispatched_ms") - since <= h["dispatch"]),
            resolve_counted=own & (closed | (resolve_due <= as_of_ms)),
            resolve_ok=own & closed & (pl.col("closed_ms") <= resolve_due),
            closed=own & closed,
            handling_h=pl.when(own).then((pl.col("closed_ms") - pl.col("reported_ms")) / HOUR_MS),
            returned=pl.col("n_returned").fill_null(0) > 0,
            verify_checked=(pl.col("n_verified").fill_null(0) > 0) | failed,
            verify_ok=(pl.col("n_verified").fill_null(0) > 0) & ~failed,
            grid_level=own & closed & (pl.col("closed_level") == "grid"),
            local_level=own & closed & pl.col("closed_level").is_in(LOCAL_LEVELS),
            **_stage_flags(as_of_ms, h, own, "due_ms" in cols),
        )
        .with_columns(
            overdue=pl.col("resolve_counted") & ~pl.col("resolve_ok"),
            **{
                c: pl.col(c).fill_null(False)
                for c in ("accept_ok", "dispatch_ok", "resolve_ok", "grid_level", "local_level")
            },
        )
        .drop(*[f"{s}_h" for s in STAGES], "total_h")
    )


def _stage_flags(
    as_of_ms: int, h: dict[str, pl.Expr], own: pl.Expr, has_due: bool
) -> dict[str, pl.Expr]:
    """Per flow stage: ``stage_<s>_counted`` (it stopped in the stage and left it, or is
    still in it past the deadline at ``as_of``) and ``stage_<s>_ok`` (left by the deadline)."""
    left = {s: pl.col(f"left_{s}_ms") for s in STAGES if s != "close"} | {
        "close": pl.col("closed_ms")
    }
    out: dict[str, pl.Expr] = {}
    entered: pl.Expr = pl.col("reported_ms")
    for s in STAGES:
        due = entered + h[s]
        if s == "handle" and has_due:
            due = pl.coalesce(pl.col("due_ms"), due)
        stopped = entered.is_not_null() & (left[s].is_null() | (left[s] > entered))
        gone = left[s].is_not_null()
        out[f"stage_{s}_counted"] = (own & stopped & (gone | (due <= as_of_ms))).fill_null(False)
        out[f"stage_{s}_ok"] = (own & stopped & gone & (left[s] <= due)).fill_null(False)
        entered = left[s]
    return out


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
    **{m: functools.partial(_rate, f"{m}_ok", f"{m}_counted") for m in STAGE_METRICS},
}


def n_col(metric_id: str) -> str:
    """The column holding a sampled metric's sample size (its denominator)."""
    return f"n_{metric_id}"


SAMPLED = [m.id for m in METRICS.values() if m.sampled]
N_COLS = [n_col(m) for m in SAMPLED]


def _sample(metric_id: str) -> pl.Expr:
    basis = METRICS[metric_id].basis
    n = pl.len() if basis is None else pl.col(basis).cast(pl.Int64).sum()
    return n.cast(pl.Int64)


def incident_metrics(flags: pl.LazyFrame, key: str) -> pl.LazyFrame:
    """Per ``key`` (district_id / street_id / grid_id / worker_id): the incident metrics and,
    per sampled metric, its sample size (``n_<metric>``)."""
    samples = {n_col(m): _sample(m) for m in INCIDENT_AGGS if m in SAMPLED}
    return flags.group_by(key).agg(
        **{m: agg().alias(m) for m, agg in INCIDENT_AGGS.items()}, **samples
    )


def thin_out(frame: pl.LazyFrame, min_sample: int) -> pl.LazyFrame:
    """The fair-ranking rule: a sampled metric whose sample is below ``min_sample`` has no
    value (shown as too few, never scored or banded). Missing sample sizes count as 0."""
    cols = frame.collect_schema().names()
    present = [m for m in SAMPLED if m in cols]
    return frame.with_columns(
        [pl.col(n_col(m)).fill_null(0).cast(pl.Int64) for m in present if n_col(m) in cols]
    ).with_columns(
        [
            pl.when(pl.col(n_col(m)) >= min_sample).then(pl.col(m)).alias(m)
            for m in present
            if n_col(m) in cols
        ]
    )


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
        .agg(
            warning_ack=pl.col("ok").cast(pl.Float64).filter(pl.col("counted")).mean(),
            n_warning_ack=pl.col("counted").cast(pl.Int64).sum(),
        )
    )


def goodness(metric_id: str, ref_hours: float) -> pl.Expr:
    m = METRICS[metric_id]
    col = pl.col(metric_id).cast(pl.Float64)
    if metric_id == "overdue":
        return pl.when(pl.col("reports") > 0).then(1.0 - col / pl.col("reports"))
    if m.unit == "hours":
        return (1.0 - col / ref_hours).clip(0.0, 1.0)
    return col if m.higher_better else 1.0 - col


def with_score(
    frame: pl.LazyFrame, w: dict[str, float], ref_hours: float, min_weight: float = 0.0
) -> pl.LazyFrame:
    """Adds ``score`` (0–100): the weighted mean goodness of the metrics that have data —
    only when their weights reach ``min_weight`` (a share) of the total weight."""
    parts = [(goodness(m, ref_hours), wt) for m, wt in w.items() if wt > 0]
    if not parts:
        return frame.with_columns(score=pl.lit(None, pl.Float64))
    total = sum(wt for _, wt in parts)
    num = pl.sum_horizontal([g.fill_null(0.0) * wt for g, wt in parts])
    den = pl.sum_horizontal([pl.when(g.is_not_null()).then(wt).otherwise(0.0) for g, wt in parts])
    enough = (den > 0) & (den >= min_weight * total - 1e-9)
    return frame.with_columns(score=pl.when(enough).then(100.0 * num / den))


def rank_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rank by score, highest first; ties share the best rank; rows without a score last."""
    return frame.with_columns(
        rank=pl.col("score").round(1).rank("min", descending=True).cast(pl.Int64)
    ).sort(["rank", "name", "row_id"], nulls_last=True)


METRIC_IDS = list(METRICS)
