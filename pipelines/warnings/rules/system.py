"""The system rule: a stalled or crash-looping pipeline is a warning of its own.

A feed whose consumer group lags by more than ``stale_lag`` entries, whose oldest pending
entry is older than ``stale_pending_s``, or whose workers restarted at least
``stale_restarts_hour`` times in the last hour leaves every screen showing old numbers: the
admin (city scope) and the wall must know. One finding per feed, at the city. The test is
the screens' own (``health.stalled``): while a backfill runs, a backlog is its own, not a
stall; a stuck batch or a crash loop still is.
"""

from __future__ import annotations

from pipelines.spine.health import Thresholds, stalled
from pipelines.warnings.model import Finding, RuleConfig, RuleInputs


def rule_system(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Red when the feed's workers crash-loop (restarts), orange when it only falls behind."""
    if inputs.streams.is_empty() or inputs.areas.grids.is_empty():
        return []
    city = str(inputs.areas.grids["city_id"][0])
    th = Thresholds(cfg.stale_lag, cfg.stale_pending_s, cfg.stale_restarts_hour)
    out = []
    for row in inputs.streams.sort("feed").iter_rows(named=True):
        why = stalled(
            int(row["lag"]),
            int(row["pending"]),
            int(row["pending_age_s"]),
            int(row["restarts_1h"]),
            th,
            bool(row["backfill"]),
        )
        if not why:
            continue
        feed = str(row["feed"])
        out.append(
            Finding(
                "system",
                city,
                "red" if "restarts" in why else "orange",
                f"system:{city}:{feed}",
                (),
                {
                    "feed": feed,
                    "reasons": why,
                    "lag": int(row["lag"]),
                    "pending_age_s": int(row["pending_age_s"]),
                    "restarts_1h": int(row["restarts_1h"]),
                },
            )
        )
    return out
