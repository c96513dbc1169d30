"""What the rules read and produce: the rule settings (:class:`RuleConfig`), the input frames
and their schemas (:class:`RuleInputs`), the area lookup and :class:`Finding`.

Finding keys are ``rule:area_id[:subject]`` (subject = category or label where a rule
watches several at once, so a fire and a brawl in one street stay two warnings)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from pipelines.city.geography import City
from pipelines.dispatch.flows import Flows, flows_for
from pipelines.settings import Settings, WarningSettings

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


@dataclass(frozen=True)
class RuleConfig(WarningSettings):
    """What rules see: the ``[warnings]`` settings plus the two live settings they share,
    with the table-valued strings parsed."""

    timezone: str = "Asia/Shanghai"
    online_minutes: int = 10  # a worker is online when seen within this many minutes
    stale_lag: int = 1000  # [live]: a feed's group lag beyond this is a stalled pipeline
    stale_pending_s: int = 60  # [live]: its oldest pending entry older than this, too
    stale_restarts_hour: int = 3  # [live]: this many worker restarts in an hour: crash loop
    # [dispatch] flows: the standard flows, whose stage deadlines the sla rule watches
    flows: Flows = field(default_factory=lambda: flows_for(Settings()), compare=False)

    @classmethod
    def of(cls, settings: Settings) -> RuleConfig:
        return cls(
            **dataclasses.asdict(settings.warnings),
            timezone=settings.live.timezone,
            online_minutes=settings.live.online_minutes,
            stale_lag=settings.live.stale_lag,
            stale_pending_s=settings.live.stale_pending_s,
            stale_restarts_hour=settings.live.stale_restarts_hour,
            flows=flows_for(settings),
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
    def compat_pairs(self) -> pl.DataFrame:
        pairs = [
            (cat, label)
            for cat, labels in (i.split(":") for i in _items(self.fusion_compat))
            for label in labels.split("|")
        ]
        return pl.DataFrame(pairs, schema={"category": pl.String, "label": pl.String}, orient="row")

    @property
    def video_level_table(self) -> dict[str, str]:
        """``video_levels`` as label → level (levels checked against :data:`LEVELS`)."""
        table = {k: v for k, v in (i.split(":") for i in _items(self.video_levels))}
        bad = sorted({*table.values(), self.video_default_level} - set(LEVELS))
        if bad:
            raise ValueError(f"warnings.video_levels: unknown level(s) {bad}")
        return table

    def is_night(self, now_ms: int) -> bool:
        """Whether ``now_ms`` falls in the local night hours [night_start_h, night_end_h)."""
        hour = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(self.timezone)).hour
        a, b = self.night_start_h % 24, self.night_end_h % 24
        return (a <= hour < b) if a <= b else (hour >= a or hour < b)

    def video_level(self, label: str, now_ms: int) -> str:
        """A video cluster's level: its label's, one lower at night for nuisance labels."""
        level = self.video_level_table.get(label, self.video_default_level)
        if label in _items(self.night_lower_labels) and self.is_night(now_ms):
            level = LEVELS[max(0, RANK[level] - 2)]
        return level

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
# Read too when the incidents table has them (the dispatch core's columns): when the
# incident entered its current status, and a deadline set by its dispatch.
INCIDENT_OPTIONAL = {"stage_ms": pl.Int64, "due_ms": pl.Int64}


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


# the pipelines' health per feed (read from Redis by the engine; see pipelines/spine/health.py)
STREAMS_SCHEMA = {
    "feed": pl.String,
    "lag": pl.Int64,
    "pending": pl.Int64,
    "pending_age_s": pl.Int64,  # age of the oldest pending entry (0: none pending)
    "restarts_1h": pl.Int64,  # worker restarts within the last hour
    "event_ms": pl.Int64,  # newest applied event (0: never)
    "backfill": pl.Boolean,  # a backfill runs (``health.BACKFILL.read``): its backlog is no stall
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
    streams: pl.DataFrame = field(default_factory=lambda: empty(STREAMS_SCHEMA))  # system


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


def summaries(df: pl.DataFrame, cols: Sequence[str]) -> pl.DataFrame:
    """Pack ``cols`` into a ``summary`` dict column (one Python pass over findings only)."""
    dicts = df.select(cols).to_dicts() if df.height else []
    return df.with_columns(pl.Series("summary", dicts, dtype=pl.Object))
