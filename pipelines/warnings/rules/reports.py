"""Rules over reports: ``threshold`` (N of a category in a street within a window), ``surge``
(against the street's own same-time-of-day history, an exact conditional test) and
``recurrence`` (reports clustered within r metres over d days, beyond chance)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from pipelines.warnings.model import (
    DAY_MS,
    M_PER_DEG_LAT,
    M_PER_DEG_LON_EQ,
    MAX_EVIDENCE,
    MINUTE_MS,
    RANK,
    Finding,
    RuleConfig,
    RuleInputs,
    _findings,
    summaries,
)


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
        summaries(df, ["category", "n", "min_count", "window_min", "grids"]), "threshold"
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
    return _findings(summaries(df, ["category", "n", "expected", "p", "window_min"]), "surge")


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
        summaries(out, ["category", "clusters", "max_n", "radius_m", "days"]), "recurrence"
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
