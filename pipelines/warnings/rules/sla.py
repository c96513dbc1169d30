"""The SLA rule: incidents about to breach or past the deadline of their current stage, per
street, relative to the street's caseload. The deadline is the incident's standard flow's
(``Flow.stage_due_ms``: when it entered its status plus the stage's hours, or the deadline
its dispatch set), so it follows the category and severity as the flow file says."""

from __future__ import annotations

import polars as pl

from pipelines.dispatch.ontime import with_stage_due
from pipelines.warnings.model import (
    MAX_EVIDENCE,
    RANK,
    Finding,
    RuleConfig,
    RuleInputs,
    _findings,
    summaries,
)


def sla_deadlines(incidents: pl.DataFrame, cfg: RuleConfig) -> pl.DataFrame:
    """Open incidents with their current stage's deadline from their flow: ``stage``,
    ``stage_h``, ``entered_ms``, ``due_ms_stage`` (``ontime.with_stage_due``) and
    ``deadline_ms``, the time allowed in the stage (at least 1 ms: a dispatch deadline set
    before the stage began is breached at once)."""
    return with_stage_due(incidents, cfg.flows).with_columns(
        deadline_ms=pl.max_horizontal(pl.col("due_ms_stage") - pl.col("entered_ms"), pl.lit(1))
    )


def rule_sla(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """One warning per street whose open cases pile up past their stage deadlines,
    measured against the street's own caseload (a busy street has more late cases).

    Level: the share of the street's watched open cases that are breached, per
    ``sla_levels`` (with at least ``sla_min_count`` breached); blue when breached plus
    about-to-breach cases reach the first share (and the count) but breached alone do
    not. A case over its allowed time by ``sla_late_factor`` times that time lifts a
    yellow-or-above street one level. The summary's ``deadline`` quotes the flow of the
    latest case (its stage, the stage's hours and the flow's names).
    """
    df = (
        sla_deadlines(inputs.incidents, cfg)
        .filter(pl.col("due_ms_stage").is_not_null())
        .with_columns(elapsed=now_ms - pl.col("entered_ms"))
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
        .join(
            df.sort(["late", "incident_id"], descending=[True, False])
            .group_by("street_id")
            .agg(
                deadline=pl.struct(
                    pl.col("stage"),
                    hours=pl.col("stage_h"),
                    flow_zh=pl.col("flow_zh"),
                    flow_en=pl.col("flow_en"),
                ).first()
            ),
            on="street_id",
        )
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
    cols = ["open", "breached", "due_soon", "share", "worst_late", "by_stage", "deadline"]
    return _findings(summaries(out, cols), "sla")
