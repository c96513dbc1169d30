"""Early warning (研判预警): rules (a registry), the warning lifecycle and the engine.

* ``model`` — what rules read and produce (settings, input frames, findings);
* ``rules/`` — one module per family of rules, and the registry (``RULES``, ``POST``);
* ``lifecycle`` — the pure lifecycle of open warnings;
* ``store`` — warnings in SQL and in the live list, and people's actions;
* ``engine`` — :class:`WarningEngine`, which ticks all of it.

The names other packages use are re-exported here (``from pipelines import warnings as W``).
"""

from __future__ import annotations

from pipelines.warnings.engine import FULL_READ_EVERY_MS, WarningEngine
from pipelines.warnings.lifecycle import Warning, live_counts, update_open
from pipelines.warnings.model import (
    AWAY_SCHEMA,
    BASELINE_SCHEMA,
    INCIDENT_OPTIONAL,
    INCIDENTS_SCHEMA,
    LEVELS,
    M_PER_DEG_LAT,
    MAX_EVIDENCE,
    RANK,
    REPORTS_SCHEMA,
    SPREAD_SCHEMA,
    VIDEO_BASELINE_SCHEMA,
    VIDEO_SCHEMA,
    VISITS_SCHEMA,
    WORKERS_SCHEMA,
    Areas,
    Finding,
    RuleConfig,
    RuleInputs,
)
from pipelines.warnings.rules import POST, RULES, evaluate
from pipelines.warnings.rules.patrol import rule_idle, rule_left_grid, rule_patrol_gap
from pipelines.warnings.rules.reports import binom_sf, poisson_sf, rule_surge, rule_threshold
from pipelines.warnings.store import (
    ACTIONS,
    ActionError,
    act,
    live_item,
    open_warnings,
    persist,
    republish,
    warning_detail,
    warnings_from_frame,
)

__all__ = [
    "ACTIONS",
    "AWAY_SCHEMA",
    "BASELINE_SCHEMA",
    "FULL_READ_EVERY_MS",
    "INCIDENTS_SCHEMA",
    "INCIDENT_OPTIONAL",
    "LEVELS",
    "MAX_EVIDENCE",
    "M_PER_DEG_LAT",
    "POST",
    "RANK",
    "REPORTS_SCHEMA",
    "RULES",
    "SPREAD_SCHEMA",
    "VIDEO_BASELINE_SCHEMA",
    "VIDEO_SCHEMA",
    "VISITS_SCHEMA",
    "WORKERS_SCHEMA",
    "ActionError",
    "Areas",
    "Finding",
    "RuleConfig",
    "RuleInputs",
    "Warning",
    "WarningEngine",
    "act",
    "binom_sf",
    "evaluate",
    "live_counts",
    "live_item",
    "open_warnings",
    "persist",
    "poisson_sf",
    "republish",
    "rule_idle",
    "rule_left_grid",
    "rule_patrol_gap",
    "rule_surge",
    "rule_threshold",
    "update_open",
    "warning_detail",
    "warnings_from_frame",
]
