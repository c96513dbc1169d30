"""Fusion (post-processing): a report and a video alert of one grid, with a compatible
category and label and close in time, become one situation instead of two warnings."""

from __future__ import annotations

import polars as pl

from pipelines.warnings.model import MAX_EVIDENCE, MINUTE_MS, RANK, Finding, RuleConfig, RuleInputs


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
