"""Early warnings (研判预警): pure rules over Polars frames, a pure lifecycle, and a runner.

Shape
-----
* ``RULES`` is the registry: ``name → rule(inputs, cfg, now_ms) -> list[Finding]``. A rule
  is pure: it sees only the frames in :class:`RuleInputs` (prepared by the runner), the
  settings and the clock value. Adding a rule = one function + its settings + a test row.
* ``POST`` holds post-processing steps over all findings (``fusion``: a report and a video
  alert of the same grid, compatible category/label and close in time are one situation).
* :func:`update_open` is the pure lifecycle: one open warning per key; update instead of
  repeat; clear after ``hysteresis_s`` without the condition; escalate unacknowledged
  warnings up the area hierarchy every ``escalate_after_s``.
* :func:`persist`, :func:`act`, :func:`open_warnings` are the SQL side;
  :class:`WarningEngine` wires SQL + Redis → rules → lifecycle → SQL + live counts.

Finding keys are ``rule:area_id[:subject]`` (subject = category or label where a rule
watches several at once, so a fire and a brawl in one street stay two warnings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import polars as pl
import redis
from sqlalchemy import Engine, and_, case, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from pipelines.access import audit
from pipelines.access.text import clean_name, clean_text
from pipelines.city.geography import City
from pipelines.gridwork import tracks as work
from pipelines.settings import Settings, WarningSettings
from pipelines.spine import store
from pipelines.spine.events import STEPS
from pipelines.spine.state import LiveState

LEVELS = ("blue", "yellow", "orange", "red")
RANK = {lv: i + 1 for i, lv in enumerate(LEVELS)}
OPEN_STATUSES = ("new", "acknowledged", "dispatched")
STATUSES = (*OPEN_STATUSES, "resolved", "dismissed", "cleared")
MAX_EVIDENCE = 50
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
M_PER_DEG_LAT = 110_540.0
M_PER_DEG_LON_EQ = 111_320.0

Clock = Callable[[], float]
# The runner's input caches (reports, visits) are rebuilt from SQL this often, and the
# track points of this long before the previous read are read again on every tick.
FULL_READ_EVERY_MS = HOUR_MS
LATE_OVERLAP_MS = 10 * MINUTE_MS  # how late a row may land and still be seen next tick
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class RuleConfig(WarningSettings):
    """What rules see: the ``[warnings]`` settings plus the two live settings they share,
    with the table-valued strings parsed."""

    timezone: str = "Asia/Shanghai"
    online_minutes: int = 10  # a worker is online when seen within this many minutes

    @classmethod
    def of(cls, settings: Settings) -> RuleConfig:
        return cls(
            **dataclasses.asdict(settings.warnings),
            timezone=settings.live.timezone,
            online_minutes=settings.live.online_minutes,
        )

    @property
    def threshold_table(self) -> pl.DataFrame:
        rows = [r.split(":") for r in _items(self.threshold_rules)]
        return pl.DataFrame(
            {
                "spec": list(range(len(rows))),
                "category": [r[0] for r in rows],
                "min_count": [int(r[1]) for r in rows],
                "window_ms": [int(float(r[2]) * MINUTE_MS) for r in rows],
                "level": [r[3] for r in rows],
                "min_severity": [int(r[4]) if len(r) > 4 else 1 for r in rows],
            },
            schema={
                "spec": pl.Int64,
                "category": pl.String,
                "min_count": pl.Int64,
                "window_ms": pl.Int64,
                "level": pl.String,
                "min_severity": pl.Int64,
            },
        )

    @property
    def sla_level_table(self) -> list[tuple[float, str]]:
        """(share of a street's open cases breached, level), highest share first."""
        pairs = [(float(k), v) for k, v in (i.split(":") for i in _items(self.sla_levels))]
        return sorted(pairs, reverse=True)

    @property
    def stage_hours(self) -> dict[str, float]:
        return {k: float(v) for k, v in (i.split(":") for i in _items(self.sla_stage_hours))}

    @property
    def severity_scale(self) -> dict[int, float]:
        return {
            int(k): float(v) for k, v in (i.split(":") for i in _items(self.sla_severity_scale))
        }

    @property
    def category_scale(self) -> dict[str, float]:
        return {k: float(v) for k, v in (i.split(":") for i in _items(self.sla_category_scale))}

    @property
    def compat_pairs(self) -> pl.DataFrame:
        pairs = [
            (cat, label)
            for cat, labels in (i.split(":") for i in _items(self.fusion_compat))
            for label in labels.split("|")
        ]
        return pl.DataFrame(pairs, schema={"category": pl.String, "label": pl.String}, orient="row")

    def every_ms(self, rule: str) -> int:
        """How often a rule is evaluated (0 = every tick); slow conditions run less often."""
        return {"recurrence": self.recurrence_every_s * 1000}.get(rule, 0)

    def recent_ms(self) -> int:
        """The longest short window over reports (threshold, surge, fusion)."""
        windows = [int(w) for w in self.threshold_table["window_ms"].to_list()]
        return max(
            [*windows, self.surge_window_min * MINUTE_MS, self.fusion_window_min * MINUTE_MS]
        )

    def horizon_ms(self) -> int:
        """How far back the report frame must reach for every rule."""
        return max(self.recent_ms(), self.recurrence_days * DAY_MS)


def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


# ------------------------------------------------------------------ inputs and findings

REPORTS_SCHEMA = {
    "event_id": pl.String,
    "incident_id": pl.String,
    "ts_ms": pl.Int64,
    "category": pl.String,
    "severity": pl.Int64,
    "grid_id": pl.String,
    "street_id": pl.String,
    "lon": pl.Float64,
    "lat": pl.Float64,
}
INCIDENTS_SCHEMA = {
    "incident_id": pl.String,
    "status": pl.String,
    "category": pl.String,
    "severity": pl.Int64,
    "grid_id": pl.String,
    "street_id": pl.String,
    "reported_ms": pl.Int64,
    "last_ms": pl.Int64,
}
VIDEO_SCHEMA = {
    "alert_id": pl.String,
    "camera_id": pl.String,
    "label": pl.String,
    "ts_ms": pl.Int64,
    "grid_id": pl.String,
    "street_id": pl.String,
}
VISITS_SCHEMA = {"grid_id": pl.String, "last_ms": pl.Int64}
WORKERS_SCHEMA = {
    "worker_id": pl.String,
    "grid_id": pl.String,
    "street_id": pl.String,
    "last_seen_ms": pl.Int64,
}
BASELINE_SCHEMA = {"street_id": pl.String, "category": pl.String, "total": pl.Int64}
VIDEO_BASELINE_SCHEMA = {"street_id": pl.String, "label": pl.String, "total": pl.Int64}
# grid work: per worker over the last left_grid_minutes / idle_minutes of track points
AWAY_SCHEMA = {
    "worker_id": pl.String,
    "n_points": pl.Int64,
    "n_own": pl.Int64,  # points inside the worker's own grid
    "first_ms": pl.Int64,
    "last_ms": pl.Int64,
}
SPREAD_SCHEMA = {
    "worker_id": pl.String,
    "n_points": pl.Int64,
    "first_ms": pl.Int64,
    "last_ms": pl.Int64,
    "lon_min": pl.Float64,
    "lon_max": pl.Float64,
    "lat_min": pl.Float64,
    "lat_max": pl.Float64,
}


def empty(schema: Mapping[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


@dataclass(frozen=True)
class Areas:
    """The small area lookup rules need: grid → street, and every area's parent."""

    grids: pl.DataFrame  # grid_id, street_id, district_id, city_id (, area_km2)
    parent: Mapping[str, str | None]

    @classmethod
    def of(cls, city: City) -> Areas:
        parents = dict(
            zip(city.areas["area_id"].to_list(), city.areas["parent_id"].to_list(), strict=True)
        )
        cols = ["grid_id", "street_id", "district_id", "city_id", "area_km2"]
        return cls(city.grids.select(c for c in cols if c in city.grids.columns), parents)

    def ancestors(self, area_id: str) -> list[str]:
        """``[area_id, parent, …, city]``."""
        out: list[str] = []
        cur: str | None = area_id
        while cur is not None and cur not in out:
            out.append(cur)
            cur = self.parent.get(cur)
        return out


@dataclass(frozen=True)
class RuleInputs:
    """Everything rules read, prepared by the runner (or by hand in tests)."""

    areas: Areas
    reports: pl.DataFrame = field(default_factory=lambda: empty(REPORTS_SCHEMA))  # "reported"
    incidents: pl.DataFrame = field(default_factory=lambda: empty(INCIDENTS_SCHEMA))  # open
    video: pl.DataFrame = field(default_factory=lambda: empty(VIDEO_SCHEMA))
    visits: pl.DataFrame = field(default_factory=lambda: empty(VISITS_SCHEMA))  # last per grid
    workers: pl.DataFrame = field(default_factory=lambda: empty(WORKERS_SCHEMA))
    # reports per street × category in the same time-of-day window over the past days
    baseline: pl.DataFrame = field(default_factory=lambda: empty(BASELINE_SCHEMA))
    baseline_days: int = 0  # how many of those past days hold history at all
    # video alerts per street × label over the trailing hours before the video window
    video_baseline: pl.DataFrame = field(default_factory=lambda: empty(VIDEO_BASELINE_SCHEMA))
    video_baseline_h: float = 0.0  # how many of those hours hold history at all
    away: pl.DataFrame = field(default_factory=lambda: empty(AWAY_SCHEMA))  # left_grid
    spread: pl.DataFrame = field(default_factory=lambda: empty(SPREAD_SCHEMA))  # idle


@dataclass(frozen=True)
class Finding:
    rule: str
    area_id: str
    level: str
    key: str
    evidence: tuple[str, ...]
    summary: dict[str, Any]
    aliases: tuple[str, ...] = ()  # keys of findings merged into this one (fusion)


Rule = Callable[[RuleInputs, RuleConfig, int], list[Finding]]


def _findings(df: pl.DataFrame, rule: str) -> list[Finding]:
    """Rows with area_id, key, level, evidence (list), summary (dict) → Finding objects."""
    out = []
    for area, key, level, ev, summary in df.select(
        "area_id", "key", "level", "evidence", "summary"
    ).iter_rows():
        out.append(Finding(rule, area, level, key, tuple(ev[:MAX_EVIDENCE]), summary))
    return out


def _summaries(df: pl.DataFrame, cols: Sequence[str]) -> pl.DataFrame:
    """Pack ``cols`` into a ``summary`` dict column (one Python pass over findings only)."""
    dicts = df.select(cols).to_dicts() if df.height else []
    return df.with_columns(pl.Series("summary", dicts, dtype=pl.Object))


# ------------------------------------------------------------------ rules


def rule_threshold(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """≥ N reports of a category (of at least a severity) within a window in one street.

    A category may have several specs (one serious report, or several of any severity);
    where more than one holds, the highest level wins (then the larger count).
    """
    spec = cfg.threshold_table
    df = (
        inputs.reports.join(spec, on="category", how="inner")
        .filter(
            pl.col("ts_ms") > now_ms - pl.col("window_ms"),
            pl.col("ts_ms") <= now_ms,
            pl.col("severity") >= pl.col("min_severity"),
        )
        .sort("ts_ms", descending=True)
        .group_by("street_id", "category", "spec")
        .agg(
            n=pl.len(),
            min_count=pl.col("min_count").first(),
            window_min=(pl.col("window_ms").first() // MINUTE_MS),
            level=pl.col("level").first(),
            evidence=pl.col("incident_id").unique(maintain_order=True).head(MAX_EVIDENCE),
            grids=pl.col("grid_id").unique(maintain_order=True).head(MAX_EVIDENCE),
        )
        .filter(pl.col("n") >= pl.col("min_count"))
        .sort(
            pl.col("level").replace_strict(RANK, return_dtype=pl.Int64),
            "n",
            "spec",
            descending=[True, True, False],
        )
        .unique(["street_id", "category"], keep="first", maintain_order=True)
        .with_columns(
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("threshold:"), "street_id", pl.lit(":"), "category"]),
        )
        .sort("key")
    )
    return _findings(
        _summaries(df, ["category", "n", "min_count", "window_min", "grids"]), "threshold"
    )


def poisson_sf(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """P(X ≥ k) for X ~ Poisson(mu), vectorised; exact in the upper tail (k > mu).

    Summed in log space over j = k … k+L (terms fall fast once j > mu); where k ≤ mu the
    tail is not small and 1.0 is returned (not a surge either way).
    """
    k = np.asarray(k, dtype=np.int64)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    if k.size == 0:
        return np.zeros(0)
    span = int(10 * np.sqrt(mu.max()) + 60)
    top = int(k.max()) + span + 1
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1)))])
    j = k[:, None] + np.arange(span)[None, :]
    logp = j * np.log(mu)[:, None] - mu[:, None] - logfact[j]
    m = logp.max(axis=1, keepdims=True)
    tail = np.exp(m[:, 0]) * np.exp(logp - m).sum(axis=1)
    return np.where(k > mu, np.minimum(tail, 1.0), 1.0)


def binom_sf(k: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """P(X ≥ k) for X ~ Binomial(n, q), vectorised, summed exactly in log space."""
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-300, 1.0)
    if k.size == 0:
        return np.zeros(0)
    out = np.where(k <= 0, 1.0, 0.0)
    live = (k > 0) & (k <= n) & (q < 1.0)
    out = np.where((k > 0) & (k <= n) & (q >= 1.0), 1.0, out)
    if not live.any():
        return out
    kk, nn, qq = k[live], n[live], q[live]
    span = int((nn - kk).max()) + 1
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(nn.max()) + 1)))])
    j = kk[:, None] + np.arange(span)[None, :]
    valid = j <= nn[:, None]
    jc = np.minimum(j, nn[:, None])
    logp = (
        logfact[nn][:, None]
        - logfact[jc]
        - logfact[nn[:, None] - jc]
        + jc * np.log(qq)[:, None]
        + (nn[:, None] - jc) * np.log1p(-qq)[:, None]
    )
    logp = np.where(valid, logp, -np.inf)
    m = logp.max(axis=1, keepdims=True)
    out[live] = np.minimum(np.exp(m[:, 0]) * np.exp(logp - m).sum(axis=1), 1.0)
    return out


def rule_surge(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Per street × category: recent count vs the street's own time-of-day baseline.

    With d past days of history (H reports in the same windows), the test is the exact
    conditional one for two Poisson rates: given k + H reports, each lies in the recent
    window with probability 1 / (d + 1) when nothing changed, so p = P(Bin(k + H,
    1/(d+1)) ≥ k). Unlike plugging H / d in as the truth, this accounts for the baseline's
    own noise (a street with one day of history is not held to its one-day count). A new
    street (no history yet) is compared with the prior ``surge_prior_expected``."""
    win = cfg.surge_window_min * MINUTE_MS
    recent = (
        inputs.reports.filter(pl.col("ts_ms") > now_ms - win, pl.col("ts_ms") <= now_ms)
        .sort("ts_ms", descending=True)
        .group_by("street_id", "category")
        .agg(n=pl.len(), evidence=pl.col("incident_id").unique(maintain_order=True).head(50))
        .filter(pl.col("n") >= cfg.surge_min_count)
    )
    if recent.is_empty():
        return []
    days = int(inputs.baseline_days)
    w = cfg.surge_prior_weight
    df = recent.join(inputs.baseline, on=["street_id", "category"], how="left").with_columns(
        total=pl.col("total").fill_null(0),
        expected=(pl.col("total").fill_null(0) + cfg.surge_prior_expected * w) / (days + w),
    )
    k = df["n"].to_numpy()
    if days >= 1:
        p = binom_sf(k, k + df["total"].to_numpy(), np.full(len(k), 1.0 / (days + 1)))
    else:
        p = poisson_sf(k, df["expected"].to_numpy())
    df = (
        df.with_columns(p=pl.Series(p, dtype=pl.Float64))
        .filter(pl.col("p") < cfg.surge_p)
        .with_columns(
            level=pl.when(pl.col("p") < cfg.surge_p_red)
            .then(pl.lit("red"))
            .when(pl.col("p") < cfg.surge_p_orange)
            .then(pl.lit("orange"))
            .otherwise(pl.lit("yellow")),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("surge:"), "street_id", pl.lit(":"), "category"]),
            expected=pl.col("expected").round(3),
            window_min=pl.lit(cfg.surge_window_min),
        )
        .sort("key")
    )
    return _findings(_summaries(df, ["category", "n", "expected", "p", "window_min"]), "surge")


def sla_deadlines(incidents: pl.DataFrame, cfg: RuleConfig) -> pl.DataFrame:
    """Add ``deadline_ms`` (allowed time in the current stage) to open incidents."""
    hours = pl.col("status").replace_strict(cfg.stage_hours, default=None, return_dtype=pl.Float64)
    sev = pl.col("severity").replace_strict(
        cfg.severity_scale, default=1.0, return_dtype=pl.Float64
    )
    cat = pl.col("category").replace_strict(
        cfg.category_scale, default=1.0, return_dtype=pl.Float64
    )
    return incidents.with_columns(deadline_ms=(hours * sev * cat * HOUR_MS).cast(pl.Int64))


def rule_sla(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """One warning per street whose open cases pile up past their stage deadlines,
    measured against the street's own caseload (a busy street has more late cases).

    Level: the share of the street's watched open cases that are breached, per
    ``sla_levels`` (with at least ``sla_min_count`` breached); blue when breached plus
    about-to-breach cases reach the first share (and the count) but breached alone do
    not. A case over its allowed time by ``sla_late_factor`` times that time lifts a
    yellow-or-above street one level.
    """
    df = (
        sla_deadlines(inputs.incidents, cfg)
        .filter(pl.col("deadline_ms").is_not_null() & (pl.col("deadline_ms") > 0))
        .with_columns(elapsed=now_ms - pl.col("last_ms"))
        .with_columns(
            breached=pl.col("elapsed") >= pl.col("deadline_ms"),
            soon=pl.col("elapsed") >= pl.col("deadline_ms") * cfg.sla_warn_share,
            over=pl.col("elapsed") - pl.col("deadline_ms"),
            late=(pl.col("elapsed") - pl.col("deadline_ms")) / pl.col("deadline_ms"),
        )
    )
    if df.is_empty():
        return []
    levels = sorted(cfg.sla_level_table)  # (share, level), lowest share first
    first_share = levels[0][0]
    by_share = pl.lit(0)
    for share, level in levels:  # highest share reached wins
        by_share = pl.when(pl.col("share") >= share).then(pl.lit(RANK[level])).otherwise(by_share)
    late = df.filter(pl.col("soon"))
    by_stage = (
        late.group_by("street_id", "status")
        .agg(pl.len().alias("k"))
        .group_by("street_id")
        .agg(by_stage=pl.struct("status", "k"))
    )
    out = (
        df.group_by("street_id")
        .agg(
            open=pl.len(),
            breached=pl.col("breached").sum(),
            due_soon=(pl.col("soon") & ~pl.col("breached")).sum(),
            worst_late=pl.col("late").max(),
        )
        .with_columns(share=pl.col("breached") / pl.col("open"))
        .with_columns(
            rank=pl.when(pl.col("breached") >= cfg.sla_min_count).then(by_share).otherwise(0)
        )
        .with_columns(
            rank=pl.when(pl.col("rank") >= RANK["yellow"])
            .then(
                pl.min_horizontal(
                    pl.col("rank") + (pl.col("worst_late") >= cfg.sla_late_factor).cast(pl.Int64),
                    pl.lit(RANK["red"]),
                )
            )
            .when(
                (pl.col("breached") + pl.col("due_soon") >= cfg.sla_min_count)
                & ((pl.col("breached") + pl.col("due_soon")) / pl.col("open") >= first_share)
            )
            .then(pl.lit(RANK["blue"]))
            .otherwise(pl.lit(0))
        )
        .filter(pl.col("rank") > 0)
        .join(
            late.sort("over", descending=True)
            .group_by("street_id")
            .agg(evidence=pl.col("incident_id").head(MAX_EVIDENCE)),
            on="street_id",
        )
        .join(by_stage, on="street_id")
        .with_columns(
            level=pl.col("rank").replace_strict({v: k for k, v in RANK.items()}),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("sla:"), "street_id"]),
            share=pl.col("share").round(3),
            worst_late=pl.col("worst_late").round(2),
            by_stage=pl.col("by_stage").list.eval(
                pl.concat_str(
                    [
                        pl.element().struct.field("status"),
                        pl.lit(":"),
                        pl.element().struct.field("k").cast(pl.String),
                    ]
                )
            ),
        )
        .sort("key")
    )
    cols = ["open", "breached", "due_soon", "share", "worst_late", "by_stage"]
    return _findings(_summaries(out, cols), "sla")


def local_hour(now_ms: int, tz: str) -> float:
    t = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(tz))
    return t.hour + t.minute / 60 + t.second / 3600


def rule_patrol_gap(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Staffed grids unvisited for N working hours (blue); a street's workers all offline
    (yellow). Only evaluated during working time, and only once N hours of it have passed.

    A grid is staffed when one of its workers has been seen since today's working time
    began: a grid whose only worker is on the night shift or off today is a rota matter,
    not a patrol gap (the all-offline check still covers a street nobody turned up in).
    """
    h = local_hour(now_ms, cfg.timezone)
    if not (cfg.work_start_h <= h < cfg.work_end_h):
        return []
    workers = inputs.workers
    if workers.is_empty():
        return []
    gap_ms = int(cfg.patrol_gap_hours * HOUR_MS)
    day_start = now_ms - int((h - cfg.work_start_h) * HOUR_MS)
    staffed = (
        workers.filter(pl.col("last_seen_ms").fill_null(0) >= day_start)
        .select("grid_id", "street_id")
        .unique()
    )
    gaps = empty({"street_id": pl.String, "grids": pl.List(pl.String), "n_gap": pl.UInt32})
    if h - cfg.work_start_h >= cfg.patrol_gap_hours:
        gaps = (
            staffed.join(inputs.visits, on="grid_id", how="left")
            .filter(pl.col("last_ms").is_null() | (pl.col("last_ms") < now_ms - gap_ms))
            .sort("grid_id")
            .group_by("street_id")
            .agg(grids=pl.col("grid_id"), n_gap=pl.len())
        )
    since = now_ms - cfg.online_minutes * MINUTE_MS
    online = workers.group_by("street_id").agg(
        n_workers=pl.len(),
        n_online=(pl.col("last_seen_ms").fill_null(0) >= since).sum(),
        offline=pl.col("worker_id").sort().head(MAX_EVIDENCE),
    )
    df = (
        online.join(gaps, on="street_id", how="full", coalesce=True)
        .with_columns(
            n_gap=pl.col("n_gap").fill_null(0),
            grids=pl.col("grids").fill_null(pl.lit([], pl.List(pl.String))),
            all_offline=(pl.col("n_online") == 0) & (pl.col("n_workers") > 0),
        )
        .filter(pl.col("all_offline") | (pl.col("n_gap") > 0))
        .with_columns(
            level=pl.when(pl.col("all_offline")).then(pl.lit("yellow")).otherwise(pl.lit("blue")),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("patrol_gap:"), "street_id"]),
            evidence=pl.when(pl.col("all_offline"))
            .then(pl.concat_list("offline", "grids"))
            .otherwise(pl.col("grids"))
            .list.head(MAX_EVIDENCE),
            gap_hours=pl.lit(cfg.patrol_gap_hours),
        )
        .sort("key")
    )
    cols = ["n_gap", "n_workers", "n_online", "all_offline", "gap_hours"]
    return _findings(_summaries(df, cols), "patrol_gap")


def rule_video_cluster(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Distinct cameras of one street raising the same label within a window: at least
    ``video_min_cameras``, and more than the street × label's own alert rate explains.

    Expected alerts per window = (alerts over the trailing hours + prior × 1 h) / (hours +
    1 h) × window; the camera count's Poisson tail must fall below ``video_p`` (alerts ≥
    distinct cameras, so the test is conservative).
    """
    win = cfg.video_window_min * MINUTE_MS
    df = (
        inputs.video.filter(pl.col("ts_ms") > now_ms - win, pl.col("ts_ms") <= now_ms)
        .sort("ts_ms", descending=True)
        .group_by("street_id", "label")
        .agg(
            cameras=pl.col("camera_id").n_unique(),
            n=pl.len(),
            evidence=pl.col("alert_id").head(MAX_EVIDENCE),
            grids=pl.col("grid_id").unique(maintain_order=True).head(MAX_EVIDENCE),
        )
        .filter(pl.col("cameras") >= cfg.video_min_cameras)
    )
    if df.is_empty():
        return []
    hours = float(inputs.video_baseline_h)
    per_window = cfg.video_window_min / 60.0
    prior = cfg.video_prior_expected / per_window  # per hour, weight 1 h
    df = df.join(inputs.video_baseline, on=["street_id", "label"], how="left").with_columns(
        expected=(pl.col("total").fill_null(0) + prior) / (hours + 1.0) * per_window
    )
    p = poisson_sf(df["cameras"].to_numpy(), df["expected"].to_numpy())
    df = (
        df.with_columns(p=pl.Series(p, dtype=pl.Float64))
        .filter(pl.col("p") < cfg.video_p)
        .with_columns(
            level=pl.when(pl.col("label") == "smoke_fire")
            .then(pl.lit("red"))
            .otherwise(pl.lit("orange")),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("video_cluster:"), "street_id", pl.lit(":"), "label"]),
            window_min=pl.lit(cfg.video_window_min),
            expected=pl.col("expected").round(3),
        )
        .sort("key")
    )
    return _findings(
        _summaries(df, ["label", "cameras", "n", "expected", "grids", "window_min"]),
        "video_cluster",
    )


def rule_recurrence(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """≥ n reports of one category within ~r metres over d days, more than chance.

    Points are snapped to an r-metre lattice in local projected metres; the lattice is also
    taken shifted by r/2 on both axes, so a cluster cut by one lattice's cell border is
    whole in the other. Clusters of a street × category make one finding.

    Dense grids see several reports near each other by chance alone, so a cell counts only
    when its count is unlikely given its grids' own reports of that category spread over
    their area: p = P(Bin(N, r² / A) ≥ n) < ``recurrence_p`` (N reports of the category
    in the cell's grids over the window, A their area; skipped without grid areas).
    """
    df = inputs.reports.filter(
        pl.col("ts_ms") > now_ms - cfg.recurrence_days * DAY_MS, pl.col("ts_ms") <= now_ms
    )
    if df.height < cfg.recurrence_min_count:
        return []
    r = cfg.recurrence_radius_m
    lat0 = float(np.radians(df["lat"].mean()))  # type: ignore[arg-type]
    mx = M_PER_DEG_LON_EQ * np.cos(lat0)
    df = df.with_columns(x=pl.col("lon") * mx / r, y=pl.col("lat") * M_PER_DEG_LAT / r)
    parts = []
    for shift in (0.0, 0.5):
        parts.append(
            df.with_columns(
                cx=(pl.col("x") + shift).floor().cast(pl.Int64),
                cy=(pl.col("y") + shift).floor().cast(pl.Int64),
                lattice=pl.lit(int(shift * 2)),
            )
        )
    cell = ["lattice", "cx", "cy", "category"]
    points = pl.concat(parts).select(*cell, "incident_id", "street_id", "grid_id")
    # Count first, gather ids and streets only for the few cells over the minimum.
    hot = points.group_by(cell).agg(n=pl.len()).filter(pl.col("n") >= cfg.recurrence_min_count)
    if hot.is_empty():
        return []
    cells = (
        points.join(hot, on=cell, how="inner")
        .group_by(cell)
        .agg(
            n=pl.col("n").first(),
            ids=pl.col("incident_id"),
            street_id=pl.col("street_id").mode().sort().first(),
            grids=pl.col("grid_id").unique(),
        )
    )
    cells = _more_than_chance(cells, df, inputs.areas.grids, cell, cfg)
    if cells.is_empty():
        return []
    out = (
        cells.sort("n", descending=True)
        .group_by("street_id", "category")
        .agg(
            clusters=pl.len(),
            max_n=pl.col("n").max(),
            evidence=pl.col("ids").explode().unique(maintain_order=True).head(MAX_EVIDENCE),
        )
        .with_columns(
            level=pl.lit("yellow"),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("recurrence:"), "street_id", pl.lit(":"), "category"]),
            radius_m=pl.lit(r),
            days=pl.lit(cfg.recurrence_days),
        )
        .sort("key")
    )
    return _findings(
        _summaries(out, ["category", "clusters", "max_n", "radius_m", "days"]), "recurrence"
    )


def _more_than_chance(
    cells: pl.DataFrame, reports: pl.DataFrame, grids: pl.DataFrame, cell: list[str], cfg: Any
) -> pl.DataFrame:
    """Keep the hot cells whose count is unlikely under a uniform spread over their grids."""
    if "area_km2" not in grids.columns or cells.is_empty():
        return cells
    per_grid = reports.group_by("grid_id", "category").agg(total=pl.len())
    area = grids.select("grid_id", "area_km2")
    spread = (
        cells.select(*cell, "grids")
        .explode("grids")
        .rename({"grids": "grid_id"})
        .join(per_grid, on=["grid_id", "category"], how="left")
        .join(area, on="grid_id", how="left")
        .group_by(cell)
        .agg(total=pl.col("total").fill_null(0).sum(), area_m2=pl.col("area_km2").sum() * 1e6)
    )
    df = cells.join(spread, on=cell, how="left")
    q = (cfg.recurrence_radius_m**2 / df["area_m2"].fill_null(0.0).clip(lower_bound=1.0)).clip(
        upper_bound=1.0
    )
    n = df["n"].to_numpy()
    p = binom_sf(n, np.maximum(df["total"].fill_null(0).to_numpy(), n), q.to_numpy())
    return df.filter(pl.Series(p < cfg.recurrence_p))


def _online_on_shift(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> pl.DataFrame:
    """Rostered workers seen within ``online_minutes``, during working time only."""
    h = local_hour(now_ms, cfg.timezone)
    if not (cfg.work_start_h <= h < cfg.work_end_h) or inputs.workers.is_empty():
        return empty(WORKERS_SCHEMA)
    since = now_ms - cfg.online_minutes * MINUTE_MS
    return inputs.workers.filter(pl.col("last_seen_ms").fill_null(0) >= since)


def _per_street(
    df: pl.DataFrame, rule: str, min_workers: int, cols: dict[str, Any]
) -> list[Finding]:
    """One finding per street of the flagged workers' own grids (evidence: worker ids)."""
    out = (
        df.sort("worker_id")
        .group_by("street_id")
        .agg(workers=pl.col("worker_id"), n_workers=pl.len())
        .filter(pl.col("n_workers") >= min_workers)
        .with_columns(
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit(f"{rule}:"), "street_id"]),
            level=pl.when(pl.col("n_workers") >= 5)
            .then(pl.lit("yellow"))
            .otherwise(pl.lit("blue")),
            evidence=pl.col("workers").list.head(MAX_EVIDENCE),
            **{k: pl.lit(v) for k, v in cols.items()},
        )
        .sort("key")
    )
    return _findings(_summaries(out, ["n_workers", *cols]), rule)


def rule_left_grid(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Online workers whose every track point of the last ``left_grid_minutes`` lies
    outside their own grid (the track must span most of the window)."""
    online = _online_on_shift(inputs, cfg, now_ms)
    win = cfg.left_grid_minutes * MINUTE_MS
    away = inputs.away.filter(
        pl.col("n_points") >= 2,
        pl.col("n_own") == 0,
        pl.col("last_ms") - pl.col("first_ms") >= int(win * 0.75),
        pl.col("first_ms") > now_ms - win - MINUTE_MS,
    )
    df = online.join(away, on="worker_id", how="semi")
    return _per_street(
        df, "left_grid", cfg.left_grid_min_workers, {"minutes": cfg.left_grid_minutes}
    )


def rule_idle(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Online workers whose track points of the last ``idle_minutes`` all fit in a box of
    diagonal ``2 × idle_radius_m`` (the track must span most of the window)."""
    online = _online_on_shift(inputs, cfg, now_ms)
    win = cfg.idle_minutes * MINUTE_MS
    mid_lat = ((pl.col("lat_min") + pl.col("lat_max")) / 2).radians()
    dx = (pl.col("lon_max") - pl.col("lon_min")) * M_PER_DEG_LON_EQ * mid_lat.cos()
    dy = (pl.col("lat_max") - pl.col("lat_min")) * M_PER_DEG_LAT
    still = inputs.spread.filter(
        pl.col("n_points") >= 3,
        pl.col("last_ms") - pl.col("first_ms") >= int(win * 0.9),
        (dx.pow(2) + dy.pow(2)).sqrt() <= 2 * cfg.idle_radius_m,
    )
    df = online.join(still, on="worker_id", how="semi")
    return _per_street(df, "idle", 1, {"minutes": cfg.idle_minutes})


RULES: dict[str, Rule] = {
    "threshold": rule_threshold,
    "surge": rule_surge,
    "sla": rule_sla,
    "patrol_gap": rule_patrol_gap,
    "video_cluster": rule_video_cluster,
    "recurrence": rule_recurrence,
    "left_grid": rule_left_grid,
    "idle": rule_idle,
}


# ------------------------------------------------------------------ fusion (post-processing)


def fuse(
    findings: list[Finding], inputs: RuleInputs, cfg: RuleConfig, now_ms: int
) -> list[Finding]:
    """Merge report findings (threshold) and video findings (video_cluster) that describe
    one situation: some report and some alert of the same grid, compatible category and
    label, within ``fusion_window_min`` of each other. The merged finding carries both
    sides' ids, the highest level, and the merged keys as aliases (so a warning opened by
    one side is updated, not duplicated, when the other side joins).
    """
    rep_idx = [i for i, f in enumerate(findings) if f.rule == "threshold"]
    vid_idx = [i for i, f in enumerate(findings) if f.rule == "video_cluster"]
    if not rep_idx or not vid_idx:
        return findings
    rep_ev = pl.DataFrame(
        {"fi": rep_idx, "incident_id": [list(findings[i].evidence) for i in rep_idx]},
        schema={"fi": pl.Int64, "incident_id": pl.List(pl.String)},
    ).explode("incident_id")
    vid_ev = pl.DataFrame(
        {"fj": vid_idx, "alert_id": [list(findings[i].evidence) for i in vid_idx]},
        schema={"fj": pl.Int64, "alert_id": pl.List(pl.String)},
    ).explode("alert_id")
    reps = rep_ev.join(
        inputs.reports.select("incident_id", "grid_id", "category", r_ts="ts_ms"),
        on="incident_id",
    )
    vids = vid_ev.join(
        inputs.video.select("alert_id", "grid_id", "label", v_ts="ts_ms"), on="alert_id"
    )
    win = cfg.fusion_window_min * MINUTE_MS
    links = (
        reps.join(vids, on="grid_id")
        .join(cfg.compat_pairs, on=["category", "label"], how="semi")
        .filter((pl.col("r_ts") - pl.col("v_ts")).abs() <= win)
    )
    if links.is_empty():
        return findings
    pairs = links.group_by("fi", "fj").agg(
        linked=pl.concat_str(["incident_id", pl.lit("~"), "alert_id"]).unique().sort()
    )
    # Union-find over findings (a handful of nodes; the heavy lifting was the join above).
    parent = list(range(len(findings)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    linked: dict[int, list[str]] = {}
    for fi, fj, ls in pairs.sort("fi", "fj").iter_rows():
        a, b = root(fi), root(fj)
        if a != b:
            parent[max(a, b)] = min(a, b)
        linked.setdefault(fi, []).extend(ls)
    groups: dict[int, list[int]] = {}
    for i in range(len(findings)):
        groups.setdefault(root(i), []).append(i)
    out: list[Finding] = []
    for members in groups.values():
        if len(members) == 1:
            out.append(findings[members[0]])
            continue
        fs = [findings[i] for i in members]
        keys = sorted(f.key for f in fs)
        pairs_txt = sorted({p for i in members for p in linked.get(i, [])})
        evidence: list[str] = []
        for p in pairs_txt:  # linked ids first, then the rest
            for x in p.split("~"):
                if x not in evidence:
                    evidence.append(x)
        for f in fs:
            evidence.extend(x for x in f.evidence if x not in evidence)
        street = fs[0].area_id
        out.append(
            Finding(
                rule="fusion",
                area_id=street,
                level=max((f.level for f in fs), key=RANK.__getitem__),
                key="fusion:" + "+".join(keys),
                evidence=tuple(evidence[:MAX_EVIDENCE]),
                summary={
                    "linked": [p.split("~") for p in pairs_txt[:MAX_EVIDENCE]],
                    "parts": {f.key: f.summary for f in fs},
                    "rules": sorted({f.rule for f in fs}),
                },
                aliases=tuple(keys),
            )
        )
    return sorted(out, key=lambda f: f.key)


POST: dict[str, Callable[[list[Finding], RuleInputs, RuleConfig, int], list[Finding]]] = {
    "fusion": fuse,
}


def run_rules(
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    rules: Mapping[str, Rule],
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, list[Finding]], dict[str, float]]:
    """Run the given rules: (findings per rule, seconds per rule)."""
    found: dict[str, list[Finding]] = {}
    timings: dict[str, float] = {}
    for name, rule in rules.items():
        t0 = timer()
        found[name] = rule(inputs, cfg, now_ms)
        timings[name] = timer() - t0
    return found, timings


def post_process(
    findings: list[Finding],
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[list[Finding], dict[str, float]]:
    """The post steps (fusion) over every rule's findings; (findings, seconds per step)."""
    timings: dict[str, float] = {}
    for name, step in POST.items():
        t0 = timer()
        findings = step(findings, inputs, cfg, now_ms)
        timings[name] = timer() - t0
    return findings, timings


def evaluate(
    inputs: RuleInputs,
    cfg: RuleConfig,
    now_ms: int,
    rules: Mapping[str, Rule] | None = None,
    timer: Callable[[], float] = time.perf_counter,
) -> tuple[list[Finding], dict[str, float]]:
    """Run every rule, then the post steps; (findings, seconds per rule/step)."""
    found, timings = run_rules(inputs, cfg, now_ms, RULES if rules is None else rules, timer)
    findings, post = post_process(
        [f for fs in found.values() for f in fs], inputs, cfg, now_ms, timer
    )
    return findings, {**timings, **post}


# ------------------------------------------------------------------ lifecycle (pure)


@dataclass(frozen=True)
class Warning:
    warning_id: str
    key: str
    rule: str
    area_id: str
    level: str
    status: str
    first_seen_ms: int
    last_seen_ms: int
    evidence: tuple[str, ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    escalated_to: str | None = None
    escalated_ms: int | None = None


def warning_id(key: str, first_seen_ms: int) -> str:
    digest = hashlib.sha1(f"{key}|{first_seen_ms}".encode()).hexdigest()[:12]
    return f"W{first_seen_ms:x}{digest}"


def _merge_evidence(new: Iterable[str], old: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for x in (*new, *old):
        if x not in out:
            out.append(x)
        if len(out) >= MAX_EVIDENCE:
            break
    return tuple(out)


def update_open(
    open_warnings: Iterable[Warning],
    findings: Sequence[Finding],
    now_ms: int,
    cfg: RuleConfig,
    ancestors: Callable[[str], Sequence[str]] | None = None,
    quiet: Collection[str] = (),
) -> tuple[list[Warning], list[Warning], list[Warning]]:
    """(new, updated, cleared) after one evaluation.

    * a finding matching no open warning but one of the ``quiet`` keys (recently resolved
      or dismissed by a person) opens nothing: a dismissed warning does not bounce back;

    * a finding whose key (or one of its aliases) matches an open warning updates it:
      last_seen = now, level = max, evidence merged (newest first, ≤ 50), summary replaced;
      otherwise it opens a new warning;
    * an open warning not seen for ``hysteresis_s`` is cleared;
    * a warning still ``new`` (unacknowledged) is escalated one step up ``ancestors`` for
      every full ``escalate_after_s`` since it opened (street → district → city).
    """
    by_key: dict[str, Warning] = {}
    for w in open_warnings:
        for k in (w.key, *w.aliases):
            by_key.setdefault(k, w)
    current: dict[str, Warning] = {}  # warning_id → state after this tick
    seen: set[str] = set()
    new: list[Warning] = []
    for f in findings:
        target = next((by_key[k] for k in (f.key, *f.aliases) if k in by_key), None)
        if target is None:
            if quiet and any(k in quiet for k in (f.key, *f.aliases)):
                continue
            w = Warning(
                warning_id=warning_id(f.key, now_ms),
                key=f.key,
                rule=f.rule,
                area_id=f.area_id,
                level=f.level,
                status="new",
                first_seen_ms=now_ms,
                last_seen_ms=now_ms,
                evidence=tuple(f.evidence[:MAX_EVIDENCE]),
                summary=f.summary,
                aliases=tuple(k for k in f.aliases if k != f.key),
            )
            new.append(w)
            for k in (f.key, *f.aliases):
                by_key[k] = w
            continue
        base = current.get(target.warning_id, target)
        aliases = tuple(
            dict.fromkeys(k for k in (*base.aliases, f.key, *f.aliases) if k != base.key)
        )
        w = replace(
            base,
            last_seen_ms=now_ms,
            level=max(base.level, f.level, key=RANK.__getitem__),
            evidence=_merge_evidence(f.evidence, base.evidence),
            summary=f.summary,
            aliases=aliases,
            rule=f.rule if f.rule == "fusion" else base.rule,
        )
        current[w.warning_id] = w
        seen.add(w.warning_id)
        for k in (f.key, *f.aliases):
            by_key.setdefault(k, w)
    updated: list[Warning] = []
    cleared: list[Warning] = []
    olds = {w.warning_id: w for w in by_key.values() if w.status in OPEN_STATUSES}
    new_ids = {w.warning_id for w in new}
    for wid, old in sorted(olds.items()):
        if wid in new_ids:
            continue
        w = current.get(wid, old)
        if wid not in seen and now_ms - w.last_seen_ms >= cfg.hysteresis_s * 1000:
            cleared.append(replace(w, status="cleared"))
            continue
        esc = escalate(w, now_ms, cfg, ancestors)
        if wid in seen or esc is not w:
            updated.append(esc)
    return new, updated, cleared


def escalate(
    w: Warning,
    now_ms: int,
    cfg: RuleConfig,
    ancestors: Callable[[str], Sequence[str]] | None,
) -> Warning:
    """Escalated one step per full ``escalate_after_s`` while unacknowledged (pure)."""
    if w.status != "new" or ancestors is None or cfg.escalate_after_s <= 0:
        return w
    chain = list(ancestors(w.area_id))[1:]
    if not chain:
        return w
    steps = min(len(chain), (now_ms - w.first_seen_ms) // (cfg.escalate_after_s * 1000))
    if steps <= 0:
        return w
    target = chain[int(steps) - 1]
    if target == w.escalated_to:
        return w
    return replace(w, escalated_to=target, escalated_ms=now_ms)


def live_counts(
    warnings: Iterable[Warning], ancestors: Callable[[str], Sequence[str]]
) -> dict[str, dict[str, int]]:
    """area → {level: open warnings}, each warning counted at its area and every ancestor."""
    out: dict[str, dict[str, int]] = {}
    for w in warnings:
        if w.status not in OPEN_STATUSES:
            continue
        for a in ancestors(w.area_id):
            by = out.setdefault(a, {})
            by[w.level] = by.get(w.level, 0) + 1
    return out


# ------------------------------------------------------------------ SQL


def _json(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_SORT_KEYS).decode()


def _row(w: Warning) -> dict[str, Any]:
    return {
        "warning_id": w.warning_id,
        "key": w.key,
        "rule": w.rule,
        "area_id": w.area_id,
        "level": w.level,
        "status": w.status,
        "first_seen_ms": w.first_seen_ms,
        "last_seen_ms": w.last_seen_ms,
        "escalated_to": w.escalated_to,
        "escalated_ms": w.escalated_ms,
        "acked_by": None,
        "acked_ms": None,
        "closed_ms": None,
        "assigned_to": None,
        "close_note": None,
        "evidence": _json(list(w.evidence)),
        "summary": _json(dict(w.summary)),
        "aliases": _json(list(w.aliases)),
    }


def persist(
    engine: Engine,
    new: Sequence[Warning],
    updated: Sequence[Warning],
    cleared: Sequence[Warning],
    now_ms: int,
) -> None:
    """Write one evaluation: insert new, update engine-owned columns, clear.

    Users own ``status`` (acknowledge, dispatch, …): updates never touch it, an escalation
    is only written while the warning is still ``new``, and clearing only applies to a
    warning that is still open — so an acknowledgement racing with a tick is never lost.
    """
    t, a = store.warnings, store.warning_actions
    actions: list[dict[str, Any]] = []
    with engine.begin() as conn:
        store.insert_ignore(conn, t, [_row(w) for w in new])
        actions += [
            {"warning_id": w.warning_id, "action": "open", "actor": "engine", "note": w.level}
            for w in new
        ]
        if updated:
            for w in sorted(updated, key=lambda w: w.warning_id):
                conn.execute(
                    update(t)
                    .where(t.c.warning_id == w.warning_id, t.c.status.in_(OPEN_STATUSES))
                    .values(
                        level=w.level,
                        last_seen_ms=w.last_seen_ms,
                        evidence=_json(list(w.evidence)),
                        summary=_json(dict(w.summary)),
                        aliases=_json(list(w.aliases)),
                        rule=w.rule,
                    )
                )
                if w.escalated_to is not None:
                    res = conn.execute(
                        update(t)
                        .where(
                            t.c.warning_id == w.warning_id,
                            t.c.status == "new",
                            or_(t.c.escalated_to.is_(None), t.c.escalated_to != w.escalated_to),
                        )
                        .values(escalated_to=w.escalated_to, escalated_ms=w.escalated_ms)
                    )
                    if res.rowcount:
                        actions.append(
                            {
                                "warning_id": w.warning_id,
                                "action": "escalate",
                                "actor": "engine",
                                "note": w.escalated_to,
                            }
                        )
        for w in sorted(cleared, key=lambda w: w.warning_id):
            res = conn.execute(
                update(t)
                .where(t.c.warning_id == w.warning_id, t.c.status.in_(OPEN_STATUSES))
                .values(status="cleared", closed_ms=now_ms)
            )
            if res.rowcount:
                actions.append(
                    {"warning_id": w.warning_id, "action": "clear", "actor": "engine", "note": None}
                )
        if actions:
            conn.execute(a.insert(), [{**x, "at_ms": now_ms} for x in actions])


class ActionError(ValueError):
    """A warning action that cannot be taken (unknown action, missing note or assignee)."""


# action → (statuses it applies to, status after). Every action is audited.
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("new",), "acknowledged"),
    "dispatch": (OPEN_STATUSES, "dispatched"),  # to a unit or person, with a note
    "resolve": (("acknowledged", "dispatched"), "resolved"),
    "dismiss": (OPEN_STATUSES, "dismissed"),  # with a reason
}
CLOSED_BY_USER = ("resolved", "dismissed")


def act(
    engine: Engine,
    warning_id: str,
    action: str,
    actor: str,
    now_ms: int,
    *,
    role: str = "",
    scope: str = "",
    note: str = "",
    assignee: str = "",
) -> bool:
    """Take a user action on a warning; audited in the same transaction.

    Returns False (and changes nothing) when the warning is unknown or its status does not
    allow the action (someone else was faster). Raises :class:`ActionError` on bad input.
    The caller checks role and scope (see ``dashboard/warnings``).
    """
    if action not in ACTIONS:
        raise ActionError(f"unknown action {action!r}")
    note, assignee = clean_text(note).strip()[:500], clean_name(assignee)[:128]
    if action == "dispatch" and not assignee:
        raise ActionError("dispatch needs a unit or person")
    if action == "dismiss" and not note:
        raise ActionError("dismiss needs a reason")
    sources, target = ACTIONS[action]
    values: dict[str, Any] = {"status": target}
    if action in ("acknowledge", "dispatch"):
        values |= {"acked_by": func.coalesce(store.warnings.c.acked_by, actor)}
        values |= {"acked_ms": func.coalesce(store.warnings.c.acked_ms, now_ms)}
    if action == "dispatch":
        values["assigned_to"] = assignee
    if target in CLOSED_BY_USER:
        values |= {"closed_ms": now_ms, "close_note": note}
    t = store.warnings
    with audit.transaction(engine) as conn:
        res = conn.execute(
            update(t).where(t.c.warning_id == warning_id, t.c.status.in_(sources)).values(values)
        )
        if not res.rowcount:
            return False
        text = f"{assignee}: {note}" if assignee and note else assignee or note
        conn.execute(
            store.warning_actions.insert().values(
                warning_id=warning_id, action=action, actor=actor, note=text, at_ms=now_ms
            )
        )
        detail = {k: v for k, v in (("note", note), ("assignee", assignee)) if v}
        audit.append(
            conn,
            actor=actor,
            role=role,
            scope=scope,
            action=f"warning_{action}",
            target=warning_id,
            detail=detail,
            now_ms=now_ms,
        )
    return True


def quiet_keys(engine: Engine, now_ms: int, quiet_s: int) -> set[str]:
    """Keys of warnings a user resolved or dismissed within ``quiet_s``: not reopened yet."""
    if quiet_s <= 0:
        return set()
    t = store.warnings
    q = select(t.c.key, t.c.aliases).where(
        t.c.status.in_(CLOSED_BY_USER), t.c.closed_ms > now_ms - quiet_s * 1000
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return {k for key, aliases in rows for k in (key, *orjson.loads(aliases))}


def live_item(w: Warning) -> dict[str, Any]:
    """What the live list shows of an open warning (no evidence: details come from SQL)."""
    return {
        "id": w.warning_id,
        "rule": w.rule,
        "area_id": w.area_id,
        "level": w.level,
        "status": w.status,
        "first_ms": w.first_seen_ms,
        "last_ms": w.last_seen_ms,
        "escalated_to": w.escalated_to,
        "summary": dict(w.summary),
        "n_evidence": len(w.evidence),
    }


def publish_live(
    live: LiveState, warnings: Iterable[Warning], ancestors: Callable[[str], Sequence[str]]
) -> None:
    """Replace the live warning counts and list with these (open ones only)."""
    still = [w for w in warnings if w.status in OPEN_STATUSES]
    items = {w.warning_id: orjson.dumps(live_item(w), default=str) for w in still}
    live.set_warnings(live_counts(still, ancestors), items)


def republish(engine: Engine, live: LiveState, city: City) -> int:
    """The live warnings from SQL (after a user action, or by ``rebuild-live``)."""
    areas = Areas.of(city)
    still = warnings_from_frame(open_warnings(engine))
    publish_live(live, still, areas.ancestors)
    return len(still)


def warning_detail(engine: Engine, warning_id: str) -> dict[str, Any] | None:
    """One warning with its evidence, summary and timeline of actions (oldest first)."""
    t, a = store.warnings, store.warning_actions
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.warning_id == warning_id)).mappings().first()
        if row is None:
            return None
        acts = conn.execute(
            select(a.c.action, a.c.actor, a.c.note, a.c.at_ms)
            .where(a.c.warning_id == warning_id)
            .order_by(a.c.at_ms, a.c.id)
        ).mappings()
        timeline = [dict(x) for x in acts]
    out = dict(row)
    for k in ("evidence", "summary", "aliases"):
        out[k] = orjson.loads(out[k])
    out["timeline"] = timeline
    return out


def open_warnings(engine: Engine) -> pl.DataFrame:
    t = store.warnings
    return store.read_frame(engine, select(t).where(t.c.status.in_(OPEN_STATUSES)))


def warnings_from_frame(df: pl.DataFrame) -> list[Warning]:
    out = []
    for row in df.iter_rows(named=True):
        out.append(
            Warning(
                warning_id=row["warning_id"],
                key=row["key"],
                rule=row["rule"],
                area_id=row["area_id"],
                level=row["level"],
                status=row["status"],
                first_seen_ms=int(row["first_seen_ms"]),
                last_seen_ms=int(row["last_seen_ms"]),
                evidence=tuple(orjson.loads(row["evidence"])),
                summary=orjson.loads(row["summary"]),
                aliases=tuple(orjson.loads(row["aliases"])),
                escalated_to=row["escalated_to"],
                escalated_ms=row["escalated_ms"],
            )
        )
    return out


# ------------------------------------------------------------------ runner


def _frame(engine: Engine, query: Any, schema: Mapping[str, Any]) -> pl.DataFrame:
    df = store.read_frame(engine, query)
    if df.is_empty():
        return empty(schema)
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


@dataclass
class WarningEngine:
    """Reads inputs (SQL + Redis), evaluates every rule, applies the lifecycle, persists,
    and writes the live warning counts. State kept between ticks is explicit: the cached
    frames below (a performance cache — a restart rebuilds them from SQL)."""

    settings: Settings
    city: City
    r: redis.Redis
    engine: Engine
    clock: Clock = time.time
    cfg: RuleConfig = field(init=False)
    areas: Areas = field(init=False)
    _workers: pl.DataFrame | None = field(default=None, init=False)
    _workers_ms: int = field(default=0, init=False)
    # reports within the horizon as of _reports_hi; last visit per grid as of _visits_hi
    _reports: pl.DataFrame | None = field(default=None, init=False)
    _reports_hi: int = field(default=0, init=False)
    _reports_full: int = field(default=0, init=False)
    _visits: pl.DataFrame | None = field(default=None, init=False)
    _visits_hi: int = field(default=0, init=False)
    _visits_full: int = field(default=0, init=False)
    _work: tuple[int, dict[str, pl.DataFrame]] | None = field(default=None, init=False)
    _incidents: pl.DataFrame | None = field(default=None, init=False)
    _incidents_hi: int = field(default=0, init=False)
    _incidents_full: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.cfg = RuleConfig.of(self.settings)
        self.areas = Areas.of(self.city)
        self.live = LiveState(self.r, self.settings.redis.prefix)
        self._chain: dict[str, list[str]] = {}
        # slow rules' last evaluation: rule → (now_ms, findings), carried between runs
        self._carried: dict[str, tuple[int, list[Finding]]] = {}

    def ancestors(self, area_id: str) -> list[str]:
        got = self._chain.get(area_id)
        if got is None:
            got = self._chain[area_id] = self.areas.ancestors(area_id)
        return got

    # ---------------------------------------------------------------- inputs

    def read_inputs(self, now_ms: int) -> RuleInputs:
        cfg = self.cfg
        va = store.video_alerts
        reports = self.read_reports(now_ms)
        incidents = self.read_incidents(now_ms)
        vsince = now_ms - max(cfg.video_window_min, cfg.fusion_window_min) * MINUTE_MS
        video = _frame(
            self.engine,
            select(
                va.c.alert_id, va.c.camera_id, va.c.label, va.c.ts_ms, va.c.grid_id, va.c.street_id
            ).where(va.c.ts_ms > vsince, va.c.ts_ms <= now_ms),
            VIDEO_SCHEMA,
        )
        baseline, days = self.read_baseline(now_ms)
        vbase, vhours = self.read_video_baseline(now_ms)
        positions = self.read_positions()
        return RuleInputs(
            areas=self.areas,
            reports=reports,
            incidents=incidents,
            video=video,
            visits=self.read_visits(now_ms, positions),
            workers=self.read_workers(now_ms, positions),
            baseline=baseline,
            baseline_days=days,
            video_baseline=vbase,
            video_baseline_h=vhours,
            **self.read_work(now_ms),
        )

    def _incremental(self, now_ms: int, hi: int, full_ms: int, cached: object) -> bool:
        """Whether this read may extend the cache (else: rebuild it from SQL)."""
        return cached is not None and hi <= now_ms and now_ms - full_ms < FULL_READ_EVERY_MS

    def read_incidents(self, now_ms: int) -> pl.DataFrame:
        """The open incidents reported within the SLA lookback, read incrementally.

        A full read goes through the status index (IN over the open steps). Between full
        reads, each tick re-reads only the incidents with an event since the previous read
        less an overlap (``LATE_OVERLAP_MS`` or the longest short window, as reports), via
        the events' time index, replaces them in the cache and drops the ones now closed.
        An event that arrives later than that overlap is seen at the next full read (every
        ``FULL_READ_EVERY_MS``, and after a restart).
        """
        inc, ev = store.incidents, store.incident_events
        since = now_ms - self.cfg.sla_lookback_days * DAY_MS
        cols = (
            inc.c.incident_id,
            inc.c.status,
            inc.c.category,
            inc.c.severity,
            inc.c.grid_id,
            inc.c.street_id,
            inc.c.reported_ms,
            inc.c.last_ms,
        )
        cached = self._incidents
        if self._incremental(now_ms, self._incidents_hi, self._incidents_full, cached):
            assert cached is not None
            lo = self._incidents_hi - max(LATE_OVERLAP_MS, self.cfg.recent_ms())
            touched = select(ev.c.incident_id).where(ev.c.ts_ms > lo, ev.c.ts_ms <= now_ms)
            fresh = _frame(
                self.engine,
                select(*cols).where(inc.c.incident_id.in_(touched), inc.c.reported_ms > since),
                INCIDENTS_SCHEMA,
            )
            kept = cached.filter(
                pl.col("reported_ms") > since,
                ~pl.col("incident_id").is_in(fresh["incident_id"].implode()),
            )
            got = pl.concat([kept, fresh.filter(pl.col("status") != "closed")])
        else:
            # IN over the open steps (not != "closed"): the status index reads only the
            # open incidents instead of scanning a month of them
            got = _frame(
                self.engine,
                select(*cols).where(
                    inc.c.reported_ms > since, inc.c.status.in_([x for x in STEPS if x != "closed"])
                ),
                INCIDENTS_SCHEMA,
            )
            self._incidents_full = now_ms
        self._incidents, self._incidents_hi = got, now_ms
        return got

    def read_reports(self, now_ms: int) -> pl.DataFrame:
        """ "reported" events within the horizon, read incrementally.

        Each tick re-reads the rows with ``ts_ms`` above (last read − the longest short
        window) and keeps the cached rows below it, so every short-window rule (threshold,
        surge, fusion) sees exactly what a full read would show, late arrivals included.
        Only a row arriving later than that window is missed by recurrence (7 days) until
        the next full read (every ``FULL_READ_EVERY_MS``, and after a restart).
        """
        ev = store.incident_events
        since = now_ms - self.cfg.horizon_ms()
        cols = (
            ev.c.event_id,
            ev.c.incident_id,
            ev.c.ts_ms,
            ev.c.category,
            ev.c.severity,
            ev.c.grid_id,
            ev.c.street_id,
            ev.c.lon,
            ev.c.lat,
        )
        if self._incremental(now_ms, self._reports_hi, self._reports_full, self._reports):
            assert self._reports is not None
            lo = max(since, self._reports_hi - self.cfg.recent_ms())
            kept = self._reports.filter(pl.col("ts_ms") > since, pl.col("ts_ms") <= lo)
        else:
            lo, kept = since, empty(REPORTS_SCHEMA)
            self._reports_full = now_ms
        fresh = _frame(
            self.engine,
            select(*cols).where(ev.c.ts_ms > lo, ev.c.ts_ms <= now_ms, ev.c.step == "reported"),
            REPORTS_SCHEMA,
        )
        self._reports = pl.concat([kept, fresh]) if kept.height else fresh
        self._reports_hi = now_ms
        return self._reports

    def read_work(self, now_ms: int) -> dict[str, pl.DataFrame]:
        """Per-worker track aggregates for left_grid and idle (tracks are 1/min: cached
        for the current minute)."""
        minute = now_ms // MINUTE_MS
        if self._work is not None and self._work[0] == minute:
            return self._work[1]
        tp, w = store.track_points, store.workers
        since = now_ms - self.cfg.left_grid_minutes * MINUTE_MS
        own = func.sum(case((tp.c.grid_id == w.c.grid_id, 1), else_=0))
        away = _frame(
            self.engine,
            select(
                tp.c.worker_id,
                func.count().label("n_points"),
                own.label("n_own"),
                func.min(tp.c.ts_ms).label("first_ms"),
                func.max(tp.c.ts_ms).label("last_ms"),
            )
            .join(w, w.c.worker_id == tp.c.worker_id)
            .where(tp.c.ts_ms > since, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.worker_id),
            AWAY_SCHEMA,
        )
        since = now_ms - self.cfg.idle_minutes * MINUTE_MS
        spread = _frame(
            self.engine,
            select(
                tp.c.worker_id,
                func.count().label("n_points"),
                func.min(tp.c.ts_ms).label("first_ms"),
                func.max(tp.c.ts_ms).label("last_ms"),
                func.min(tp.c.lon).label("lon_min"),
                func.max(tp.c.lon).label("lon_max"),
                func.min(tp.c.lat).label("lat_min"),
                func.max(tp.c.lat).label("lat_max"),
            )
            .where(tp.c.ts_ms > since, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.worker_id),
            SPREAD_SCHEMA,
        )
        self._work = (minute, {"away": away, "spread": spread})
        return self._work[1]

    def read_baseline(self, now_ms: int) -> tuple[pl.DataFrame, int]:
        """Reports per street × category in the same time-of-day window on past days."""
        cfg = self.cfg
        ev = store.incident_events
        with self.engine.connect() as conn:
            first = conn.execute(
                select(func.min(ev.c.ts_ms)).where(ev.c.step == "reported")
            ).scalar()
        if first is None:
            return empty(BASELINE_SCHEMA), 0
        win = cfg.surge_window_min * MINUTE_MS
        days = [
            k
            for k in range(1, cfg.surge_baseline_days + 1)
            if now_ms - k * DAY_MS - win >= int(first)
        ]
        if not days:
            return empty(BASELINE_SCHEMA), 0
        ranges = [
            and_(ev.c.ts_ms > now_ms - k * DAY_MS - win, ev.c.ts_ms <= now_ms - k * DAY_MS)
            for k in days
        ]
        q = (
            select(ev.c.street_id, ev.c.category, func.count().label("total"))
            .where(ev.c.step == "reported", or_(*ranges))
            .group_by(ev.c.street_id, ev.c.category)
        )
        return _frame(self.engine, q, BASELINE_SCHEMA), len(days)

    def read_video_baseline(self, now_ms: int) -> tuple[pl.DataFrame, float]:
        """Alerts per street × label over the trailing hours before the video window."""
        cfg, va = self.cfg, store.video_alerts
        hi = now_ms - cfg.video_window_min * MINUTE_MS
        lo = hi - cfg.video_baseline_h * HOUR_MS
        with self.engine.connect() as conn:
            first = conn.execute(select(func.min(va.c.ts_ms))).scalar()
        if first is None or int(first) > hi:
            return empty(VIDEO_BASELINE_SCHEMA), 0.0
        q = (
            select(va.c.street_id, va.c.label, func.count().label("total"))
            .where(va.c.ts_ms > lo, va.c.ts_ms <= hi)
            .group_by(va.c.street_id, va.c.label)
        )
        hours = (hi - max(lo, int(first))) / HOUR_MS
        return _frame(self.engine, q, VIDEO_BASELINE_SCHEMA), hours

    def read_visits(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        """Last visit per grid within the gap horizon: track points + live positions.

        The track-point part is incremental: each tick reads the points of the last
        ``LATE_OVERLAP_MS`` before the previous read onwards and keeps the newest per
        grid; a full read every ``FULL_READ_EVERY_MS`` (and after a restart) picks up
        points that arrived later than that.
        """
        tp = store.track_points
        since = now_ms - int(self.cfg.patrol_gap_hours * HOUR_MS)
        if self._incremental(now_ms, self._visits_hi, self._visits_full, self._visits):
            assert self._visits is not None
            lo, kept = max(since, self._visits_hi - LATE_OVERLAP_MS), self._visits
        else:
            lo, kept = since, empty(VISITS_SCHEMA)
            self._visits_full = now_ms
        fresh = _frame(
            self.engine,
            select(tp.c.grid_id, func.max(tp.c.ts_ms).label("last_ms"))
            .where(tp.c.ts_ms > lo, tp.c.ts_ms <= now_ms)
            .group_by(tp.c.grid_id),
            VISITS_SCHEMA,
        )
        hist = (
            pl.concat([kept, fresh])
            .group_by("grid_id")
            .agg(pl.col("last_ms").max())
            .filter(pl.col("last_ms") > since)
        )
        self._visits, self._visits_hi = hist, now_ms
        pos = positions.select("grid_id", pl.col("ts_ms").alias("last_ms")).filter(
            pl.col("last_ms") > since, pl.col("last_ms") <= now_ms
        )
        return pl.concat([hist, pos]).group_by("grid_id").agg(pl.col("last_ms").max())

    def read_positions(self) -> pl.DataFrame:
        """Every worker's latest ping from Redis (worker_id, lon, lat, ts_ms, grid_id). The
        packed position and the "seen" score are written together by one script, so its
        ``ts_ms`` is the worker's last ping."""
        return work.positions_frame(self.live.positions_raw())

    def read_workers(self, now_ms: int, positions: pl.DataFrame) -> pl.DataFrame:
        """The roster (cached 5 min) with each worker's last ping from Redis."""
        if self._workers is None or now_ms - self._workers_ms > 5 * MINUTE_MS:
            w = store.workers
            roster = store.read_frame(self.engine, select(w.c.worker_id, w.c.grid_id))
            if roster.is_empty():
                roster = empty({"worker_id": pl.String, "grid_id": pl.String})
            self._workers = roster.join(
                self.areas.grids.select("grid_id", "street_id"), on="grid_id", how="inner"
            )
            self._workers_ms = now_ms
        last = positions.select("worker_id", pl.col("ts_ms").alias("last_seen_ms"))
        return self._workers.join(last, on="worker_id", how="left").select(list(WORKERS_SCHEMA))

    # ---------------------------------------------------------------- schedule

    def lead(self, owner: str) -> bool:
        """Hold the evaluation lease (one evaluator per prefix, however many run)."""
        key, ttl = self.live.keys.live("warn_lease"), int(self.cfg.tick_s * 3000)
        if self.r.set(key, owner, nx=True, px=ttl):
            return True
        if self.r.get(key) == owner.encode():
            self.r.pexpire(key, ttl)
            return True
        return False

    def run(self, stop: threading.Event, owner: str) -> None:
        """Evaluate every ``tick_s`` while holding the lease, until ``stop``."""
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                if self.lead(owner):
                    res = self.tick()
                    if res["new"] or res["cleared"]:
                        log.info("warnings: %s", {k: v for k, v in res.items() if k != "timings"})
            except (redis.RedisError, OSError, SQLAlchemyError) as exc:
                log.warning("warnings: %s", str(exc).splitlines()[0])
            stop.wait(max(0.5, self.cfg.tick_s - (time.monotonic() - t0)))

    # ---------------------------------------------------------------- one tick

    def due(self, now_ms: int, every_rule: bool = False) -> dict[str, Rule]:
        """The rules to evaluate now: every rule but a slow one evaluated recently."""

        def is_due(name: str) -> bool:
            last = self._carried.get(name)
            every = self.cfg.every_ms(name)
            return every_rule or last is None or not (0 <= now_ms - last[0] < every)

        return {name: rule for name, rule in RULES.items() if is_due(name)}

    def tick(self, every_rule: bool = False) -> dict[str, Any]:
        """One evaluation: read, run the due rules (slow rules' last findings carry over),
        fuse, apply the lifecycle, persist and publish. ``every_rule`` runs them all."""
        t0 = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        inputs = self.read_inputs(now_ms)
        t_read = time.perf_counter() - t0
        found, timings = run_rules(inputs, self.cfg, now_ms, self.due(now_ms, every_rule))
        for name, got in found.items():
            if self.cfg.every_ms(name):
                self._carried[name] = (now_ms, got)
        every_finding = [
            f for n in RULES for f in (found[n] if n in found else self._carried[n][1])
        ]
        findings, post = post_process(every_finding, inputs, self.cfg, now_ms)
        timings |= post
        t1 = time.perf_counter()
        olds = warnings_from_frame(open_warnings(self.engine))
        quiet = quiet_keys(self.engine, now_ms, self.cfg.dismiss_quiet_s)
        new, updated, cleared = update_open(olds, findings, now_ms, self.cfg, self.ancestors, quiet)
        persist(self.engine, new, updated, cleared, now_ms)
        changed = {w.warning_id: w for w in (*updated, *cleared)}
        still = [changed.get(w.warning_id, w) for w in olds] + new
        publish_live(self.live, still, self.ancestors)
        t_write = time.perf_counter() - t1
        return {
            "now_ms": now_ms,
            "findings": len(findings),
            "new": len(new),
            "updated": len(updated),
            "cleared": len(cleared),
            "open": sum(1 for w in still if w.status in OPEN_STATUSES),
            "new_ids": [w.warning_id for w in new],
            "timings": {"read": t_read, **timings, "lifecycle_persist_live": t_write},
        }
