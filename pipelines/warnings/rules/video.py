"""The video-cluster rule: at least k cameras of one street raising one label within a window."""

from __future__ import annotations

import polars as pl

from pipelines.warnings.model import (
    MAX_EVIDENCE,
    MINUTE_MS,
    Finding,
    RuleConfig,
    RuleInputs,
    _findings,
    summaries,
)
from pipelines.warnings.rules.reports import poisson_sf


def rule_video_cluster(inputs: RuleInputs, cfg: RuleConfig, now_ms: int) -> list[Finding]:
    """Distinct cameras of one street raising the same label within a window: at least
    ``video_min_cameras``, and more than the street × label's own alert rate explains.

    Expected alerts per window = (alerts over the trailing hours + prior × 1 h) / (hours +
    1 h) × window; the camera count's Poisson tail must fall below ``video_p`` (alerts ≥
    distinct cameras, so the test is conservative).

    The level is the label's (``video_levels``: a fire is red, parked cars yellow), one
    lower at local night (``night_start_h``–``night_end_h``) for ``night_lower_labels``.
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
            level=pl.col("label").replace_strict(
                {lab: cfg.video_level(lab, now_ms) for lab in df["label"].unique().to_list()},
                return_dtype=pl.String,
            ),
            area_id=pl.col("street_id"),
            key=pl.concat_str([pl.lit("video_cluster:"), "street_id", pl.lit(":"), "label"]),
            window_min=pl.lit(cfg.video_window_min),
            expected=pl.col("expected").round(3),
        )
        .sort("key")
    )
    return _findings(
        summaries(df, ["label", "cameras", "n", "expected", "grids", "window_min"]),
        "video_cluster",
    )
