""" "On time", vectorised: the standard flows as tables and Polars expressions.

The flows (:mod:`pipelines.dispatch.flows`) are the one definition of every deadline: the
live overdue mark, the SLA warning rule, the scorecards, Open311's ``expected_datetime``
and the simulator all read them through this module, so an incident's deadline is the
same number everywhere. An incident's flow depends on its category and severity; the
tables below hold one row per (category, severity), so a frame of incidents gets its
deadlines by one join (or one ``replace`` on a combined key), never a Python loop per row.
"""

from __future__ import annotations

import polars as pl

from pipelines.dispatch.flows import HOUR_MS, STAGE_OF_STEP, STAGES, Flow, Flows
from pipelines.spine.events import CATEGORIES, SEVERITIES

FLOW_SCHEMA = {
    "category": pl.String,
    "severity": pl.Int64,
    "flow_id": pl.String,
    "flow_zh": pl.String,
    "flow_en": pl.String,
    **{f"{s}_h": pl.Float64 for s in STAGES},
    "total_h": pl.Float64,
}


def _key(category: str, severity: int) -> str:
    return f"{category}:{severity}"


def _key_expr(category: str, severity: str) -> pl.Expr:
    return pl.concat_str([pl.col(category), pl.lit(":"), pl.col(severity).cast(pl.String)])


def flow_table(flows: Flows) -> pl.DataFrame:
    """One row per (category, severity) with its flow: id, names, each stage's hours
    (``accept_h`` … ``close_h``) and ``total_h`` (report → closure)."""
    rows = []
    for c in CATEGORIES:
        for sev in SEVERITIES:
            f = flows.select(c, sev)
            hours = [f.stage(s).hours for s in STAGES]
            rows.append((c, sev, f.id, f.name_zh, f.name_en, *hours, f.total_hours))
    return pl.DataFrame(rows, schema=FLOW_SCHEMA, orient="row")


def _fallback(flows: Flows) -> Flow:
    """The flow of a category the file does not know (never in validated data): other's."""
    return flows.select("other", SEVERITIES[0])


def closure_ms(flows: Flows, category: str = "category", severity: str = "severity") -> pl.Expr:
    """Milliseconds from an incident's report to its closure deadline (its flow's total),
    by category and severity."""
    mapping = {
        _key(c, s): int(flows.select(c, s).total_hours * HOUR_MS)
        for c in CATEGORIES
        for s in SEVERITIES
    }
    default = int(_fallback(flows).total_hours * HOUR_MS)
    return _key_expr(category, severity).replace_strict(
        mapping, default=default, return_dtype=pl.Int64
    )


def with_stage_due(frame: pl.DataFrame, flows: Flows) -> pl.DataFrame:
    """Open incidents → their current stage and when it is due (``Flow.stage_due_ms``).

    Adds ``stage`` (accept … close; null once closed), ``stage_h`` (its hours),
    ``entered_ms`` (when it entered its current status: ``stage_ms`` when the frame has it,
    else ``last_ms``), ``due_ms_stage`` (entered + hours, or the dispatch's deadline
    override ``due_ms`` for the handle stage when the frame has one) and the flow's
    ``flow_id`` / ``flow_zh`` / ``flow_en``."""
    cols = frame.columns
    entered = pl.coalesce("stage_ms", "last_ms") if "stage_ms" in cols else pl.col("last_ms")
    table = flow_table(flows)
    base = frame.drop([c for c in ("flow_id", "flow_zh", "flow_en") if c in cols])
    out = base.with_columns(
        pl.col("severity").cast(pl.Int64),
        stage=pl.col("status").replace_strict(STAGE_OF_STEP, default=None, return_dtype=pl.String),
        entered_ms=entered.cast(pl.Int64),
    ).join(
        table.select("category", "severity", "flow_id", "flow_zh", "flow_en", *_hour_cols()),
        on=["category", "severity"],
        how="left",
    )
    hours = pl.lit(None, pl.Float64)
    for s in STAGES:
        hours = pl.when(pl.col("stage") == s).then(pl.col(f"{s}_h")).otherwise(hours)
    due = pl.col("entered_ms") + (pl.col("stage_h") * HOUR_MS).cast(pl.Int64)
    if "due_ms" in cols:
        due = (
            pl.when((pl.col("stage") == "handle") & pl.col("due_ms").is_not_null())
            .then(pl.col("due_ms").cast(pl.Int64))
            .otherwise(due)
        )
    other = _fallback(flows)
    return (
        out.with_columns(
            **{f"{s}_h": pl.col(f"{s}_h").fill_null(other.stage(s).hours) for s in STAGES}
        )
        .with_columns(stage_h=hours)
        .with_columns(due_ms_stage=pl.when(pl.col("stage").is_not_null()).then(due))
        .drop(_hour_cols())
    )


def _hour_cols() -> list[str]:
    return [f"{s}_h" for s in STAGES]


def stage_hours_of(flows: Flows) -> dict[str, dict[str, float]]:
    """Per flow id: each stage's hours (what a scorecard snapshot records)."""
    return {f.id: {s.name: s.hours for s in f.stages} for f in flows.flows}
