"""Supervision and assessment (监督考核): periods, metrics (a registry), SQL sources,
scorecards, what the screen shows, and exports (a registry of formats, in ``exports``).

The names other packages use are re-exported here (``from pipelines import assessment as S``)."""

from __future__ import annotations

from pipelines.assessment.display import (
    Shown,
    column_title,
    display_value,
    shown_columns,
    sparkline,
)
from pipelines.assessment.metrics import (
    INCIDENT_AGGS,
    LEVELS,
    METRIC_IDS,
    METRICS,
    SCORE_DEFINITION,
    incident_flags,
    incident_metrics,
    online_rate,
    patrol_coverage,
    rank_rows,
    score_definition,
    warning_ack,
    weights,
    with_score,
)
from pipelines.assessment.periods import (
    DAY_MS,
    HOUR_MS,
    Period,
    PeriodError,
    current_period,
    elapsed_days,
    month_period,
    parse_period,
    shift_slots,
)
from pipelines.assessment.scorecards import (
    compute,
    incidents_behind,
    is_final,
    raw_scorecard,
    read_inputs,
    scorecard,
)
from pipelines.assessment.sources import (
    INCIDENT_SCHEMA,
    Filter,
    _typed,
    read_incidents,
    read_tracked_since,
)

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "INCIDENT_AGGS",
    "INCIDENT_SCHEMA",
    "LEVELS",
    "METRICS",
    "METRIC_IDS",
    "SCORE_DEFINITION",
    "Filter",
    "Period",
    "PeriodError",
    "Shown",
    "_typed",
    "column_title",
    "compute",
    "current_period",
    "display_value",
    "elapsed_days",
    "incident_flags",
    "incident_metrics",
    "incidents_behind",
    "is_final",
    "month_period",
    "online_rate",
    "parse_period",
    "patrol_coverage",
    "rank_rows",
    "raw_scorecard",
    "read_incidents",
    "read_inputs",
    "read_tracked_since",
    "score_definition",
    "scorecard",
    "shift_slots",
    "shown_columns",
    "sparkline",
    "warning_ack",
    "weights",
    "with_score",
]
