"""Early-warning rules, fusion and lifecycle on hand-built frames with a fake clock."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from pipelines import warnings as W
from pipelines.dispatch.flows import parse_flows
from tests import flowfile

pytestmark = pytest.mark.clock  # its rules read the clock passed in (now_ms)

MIN = 60_000
HOUR = 3_600_000
# 2026-03-02 10:00 Asia/Shanghai (02:00 UTC): working time
NOW = int(datetime(2026, 3, 2, 2, 0, tzinfo=UTC).timestamp() * 1000)
# The SLA cases' deadlines come from this flow file: a dispute (severity 1-3) has 48 h to be
# handled, a severity-4 dispute 12 h; a fire 0.5 h to be accepted.
FLOWS = flowfile.doc(
    flowfile.flow("dispute", "dispute", (2, 4, 48, 24, 24), name_zh="矛盾纠纷"),
    flowfile.flow("dispute_grave", "dispute", (1, 1, 12, 4, 4), min_severity=4),
    flowfile.flow("fire", "fire", (0.5, 0.5, 1, 1, 1)),
)
CFG = dataclasses.replace(W.RuleConfig(), flows=parse_flows(FLOWS))

AREAS = W.Areas(
    grids=pl.DataFrame(
        {
            "grid_id": ["g1", "g2", "g3"],
            "street_id": ["s1", "s1", "s2"],
            "district_id": ["d1", "d1", "d1"],
            "city_id": ["c", "c", "c"],
        }
    ),
    parent={"g1": "s1", "g2": "s1", "g3": "s2", "s1": "d1", "s2": "d1", "d1": "c", "c": None},
)


def reports(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """rows: (incident_id, minutes_ago, category, grid, street, lon, lat[, severity=2])."""
    return pl.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "incident_id": inc,
                "ts_ms": NOW - int(ago * MIN),
                "category": cat,
                "severity": rest[0] if rest else 2,
                "grid_id": g,
                "street_id": s,
                "lon": lon,
                "lat": lat,
            }
            for i, (inc, ago, cat, g, s, lon, lat, *rest) in enumerate(rows)
        ],
        schema=W.REPORTS_SCHEMA,
    )


def video(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """rows: (alert_id, camera, label, minutes_ago, grid, street)."""
    return pl.DataFrame(
        [
            {"alert_id": a, "camera_id": c, "label": lb, "ts_ms": NOW - ago * MIN, "grid_id": g}
            | {"street_id": s}
            for a, c, lb, ago, g, s in rows
        ],
        schema=W.VIDEO_SCHEMA,
    )


def inputs(**kw: Any) -> W.RuleInputs:
    return W.RuleInputs(areas=AREAS, **kw)


def keys(fs: list[W.Finding]) -> dict[str, str]:
    return {f.key: f.level for f in fs}


# ------------------------------------------------------------------ rules: fires / not / boundary


def _fire(ago: float, sev: int = 3, n: int = 1) -> W.RuleInputs:
    rows = [(f"i{i}", ago, "fire", "g1", "s1", 118.8, 32.0, sev) for i in range(n)]
    return inputs(reports=reports(rows))


def _public_order(n: int) -> W.RuleInputs:
    rows = [(f"i{i}", 10, "public_order", "g1", "s1", 118.8, 32.0) for i in range(n)]
    return inputs(reports=reports(rows))


def _surge(n: int, total: int = 0, days: int = 28) -> W.RuleInputs:
    rows = [(f"i{i}", 5, "dispute", "g1", "s1", 118.8 + i * 0.01, 32.0) for i in range(n)]
    base = pl.DataFrame(
        {"street_id": ["s1"], "category": ["dispute"], "total": [total]}, schema=W.BASELINE_SCHEMA
    )
    return inputs(reports=reports(rows), baseline=base, baseline_days=days)


def _incident(
    status: str, hours_ago: float, sev: int = 2, cat: str = "dispute", n: int = 1, ok: int = 0
) -> W.RuleInputs:
    """n open cases in ``status`` since ``hours_ago``, plus ``ok`` cases well on time."""
    rows = [(status, hours_ago, sev, cat)] * n + [("handling", 1.0, 2, "dispute")] * ok
    df = pl.DataFrame(
        [
            {
                "incident_id": f"i{i}",
                "status": st,
                "category": c,
                "severity": sv,
                "grid_id": "g1",
                "street_id": "s1",
                "reported_ms": NOW - 100 * HOUR,
                "last_ms": NOW - int(h * HOUR),
            }
            for i, (st, h, sv, c) in enumerate(rows)
        ],
        schema=W.INCIDENTS_SCHEMA,
    )
    return inputs(incidents=df)


def _patrol(last_visit_h: float | None, online: bool = True, seen_min: int = 60) -> W.RuleInputs:
    """One worker of g1, online (seen a minute ago) or last seen ``seen_min`` ago."""
    workers = pl.DataFrame(
        {
            "worker_id": ["w1"],
            "grid_id": ["g1"],
            "street_id": ["s1"],
            "last_seen_ms": [NOW - (1 if online else seen_min) * MIN],
        },
        schema=W.WORKERS_SCHEMA,
    )
    visits = pl.DataFrame(
        {
            "grid_id": ["g1"],
            "last_ms": [None if last_visit_h is None else NOW - int(last_visit_h * HOUR)],
        },
        schema=W.VISITS_SCHEMA,
    )
    return inputs(workers=workers, visits=visits)


def _cams(k: int, label: str = "crowd_gathering", ago: int = 5, usual: int = 0) -> W.RuleInputs:
    """k cameras now; ``usual`` alerts of the label per 15 min over the past 6 hours."""
    base = pl.DataFrame(
        {"street_id": ["s1"], "label": [label], "total": [usual * 24]},
        schema=W.VIDEO_BASELINE_SCHEMA,
    )
    return inputs(
        video=video([(f"a{i}", f"cam{i}", label, ago, "g1", "s1") for i in range(k)]),
        video_baseline=base,
        video_baseline_h=6.0,
    )


def _recurrence(
    n: int, spread_deg: float, grid_km2: float | None = None, elsewhere: int = 0
) -> W.RuleInputs:
    """n reports ~spread apart, plus ``elsewhere`` more of the category across the grid."""
    rows = [
        (f"i{i}", 24 * 60, "sanitation", "g1", "s1", 118.8 + i * spread_deg, 32.0) for i in range(n)
    ]
    rows += [
        (f"j{i}", 60, "sanitation", "g1", "s1", 118.9 + i * 0.01, 32.1) for i in range(elsewhere)
    ]
    data = inputs(reports=reports(rows))
    if grid_km2 is None:
        return data
    grids = AREAS.grids.with_columns(area_km2=pl.lit(grid_km2))
    return dataclasses.replace(data, areas=W.Areas(grids, AREAS.parent))


def _roster(online: bool) -> pl.DataFrame:
    seen = NOW - (1 if online else 60) * MIN
    return pl.DataFrame(
        {"worker_id": ["w1"], "grid_id": ["g1"], "street_id": ["s1"], "last_seen_ms": [seen]},
        schema=W.WORKERS_SCHEMA,
    )


def _away(n_own: int, span_min: int, online: bool = True) -> W.RuleInputs:
    """w1's track over the last minutes: ``n_own`` of 30 points inside its own grid."""
    away = pl.DataFrame(
        {
            "worker_id": ["w1"],
            "n_points": [30],
            "n_own": [n_own],
            "first_ms": [NOW - span_min * MIN],
            "last_ms": [NOW - MIN],
        },
        schema=W.AWAY_SCHEMA,
    )
    return inputs(workers=_roster(online), away=away)


def _still(spread_m: float, span_min: int = 60, online: bool = True) -> W.RuleInputs:
    """w1's points of the last ``span_min`` minutes span ``spread_m`` metres north–south."""
    spread = pl.DataFrame(
        {
            "worker_id": ["w1"],
            "n_points": [span_min],
            "first_ms": [NOW - span_min * MIN],
            "last_ms": [NOW],
            "lon_min": [118.8],
            "lon_max": [118.8],
            "lat_min": [32.0],
            "lat_max": [32.0 + spread_m / W.M_PER_DEG_LAT],
        },
        schema=W.SPREAD_SCHEMA,
    )
    return inputs(workers=_roster(online), spread=spread)


CASES = [
    # (rule, inputs, now offset ms, expected {key: level})
    ("threshold", _fire(29), 0, {"threshold:s1:fire": "orange"}),  # one serious fire
    ("threshold", _fire(31), 0, {}),
    ("threshold", _fire(5, sev=2), 0, {}),  # one minor fire report: its own incident only
    ("threshold", _fire(5, sev=2, n=6), 0, {"threshold:s1:fire": "orange"}),  # six of them
    ("threshold", _fire(5, sev=2, n=5), 0, {}),
    ("threshold", _public_order(20), 0, {"threshold:s1:public_order": "yellow"}),
    ("threshold", _public_order(19), 0, {}),
    ("surge", _surge(12, total=28), 0, {"surge:s1:dispute": "orange"}),  # expected ≈ 1
    ("surge", _surge(4, total=0), 0, {}),  # below the minimum count
    ("surge", _surge(12, total=28 * 10), 0, {}),  # usual for this street
    ("surge", _surge(25, total=0, days=0), 0, {"surge:s1:dispute": "red"}),  # prior only
    # a street's share of open cases past their stage deadline (FLOWS: handling 48 h at sev 2)
    ("sla", _incident("handling", 50, n=5, ok=20), 0, {"sla:s1": "yellow"}),  # 20 %
    ("sla", _incident("handling", 50, n=4), 0, {}),  # 100 %, but fewer than 5 cases
    ("sla", _incident("handling", 50, n=5, ok=40), 0, {}),  # 11 %: a busy street's normal
    ("sla", _incident("handling", 40, n=5, ok=10), 0, {"sla:s1": "blue"}),  # ≥ 80 %: about to
    ("sla", _incident("handling", 30, n=5, ok=5), 0, {}),
    ("sla", _incident("handling", 50, n=10, ok=20), 0, {"sla:s1": "orange"}),  # 33 %
    ("sla", _incident("handling", 50, n=10, ok=5), 0, {"sla:s1": "red"}),  # 67 %
    ("sla", _incident("handling", 150, n=5, ok=20), 0, {"sla:s1": "orange"}),  # very late: +1
    ("sla", _incident("handling", 40, sev=4, n=5), 0, {"sla:s1": "red"}),  # 12 h; capped at red
    ("sla", _incident("reported", 0.6, cat="fire", n=5, ok=20), 0, {"sla:s1": "yellow"}),  # .5 h
    ("patrol_gap", _patrol(3), 0, {"patrol_gap:s1": "blue"}),
    ("patrol_gap", _patrol(1), 0, {}),
    ("patrol_gap", _patrol(1, online=False), 0, {"patrol_gap:s1": "yellow"}),
    ("patrol_gap", _patrol(3, online=False), 0, {"patrol_gap:s1": "yellow"}),  # gap + offline
    # its only worker not seen since 08:00 (night shift, day off): no grid gap, but nobody
    # of the street is online
    ("patrol_gap", _patrol(3, online=False, seen_min=150), 0, {"patrol_gap:s1": "yellow"}),
    ("patrol_gap", _patrol(None), 12 * HOUR, {}),  # 22:00 local: outside working time
    ("patrol_gap", _patrol(None), -1 * HOUR, {}),  # 09:00: not 2 working hours yet
    ("video_cluster", _cams(3), 0, {"video_cluster:s1:crowd_gathering": "orange"}),
    ("video_cluster", _cams(3, "smoke_fire"), 0, {"video_cluster:s1:smoke_fire": "red"}),
    ("video_cluster", _cams(2), 0, {}),
    ("video_cluster", _cams(3, usual=3), 0, {}),  # a busy street: three is its usual
    ("video_cluster", _cams(14, usual=3), 0, {"video_cluster:s1:crowd_gathering": "orange"}),
    ("video_cluster", _cams(3, ago=16), 0, {}),
    ("recurrence", _recurrence(4, 0.0002), 0, {"recurrence:s1:sanitation": "yellow"}),  # ~19 m
    ("recurrence", _recurrence(4, 0.01), 0, {}),  # ~940 m apart
    ("recurrence", _recurrence(3, 0.0001), 0, {}),
    # against its grid's own density: 4 of 4 reports of a 1 km² grid in one spot is no chance
    ("recurrence", _recurrence(4, 0.0002, 1.0), 0, {"recurrence:s1:sanitation": "yellow"}),
    # … but in a tiny grid (0.02 km²) with 40 such reports, 4 near each other is ordinary
    ("recurrence", _recurrence(4, 0.0002, 0.02, elsewhere=36), 0, {}),
    ("left_grid", _away(0, 30), 0, {"left_grid:s1": "blue"}),
    ("left_grid", _away(1, 30), 0, {}),  # back in its grid once within the window
    ("left_grid", _away(0, 10), 0, {}),  # away, but not for long enough yet
    ("left_grid", _away(0, 30, online=False), 0, {}),
    ("left_grid", _away(0, 30), 12 * HOUR, {}),  # outside working time
    ("idle", _still(20), 0, {"idle:s1": "blue"}),
    ("idle", _still(200), 0, {}),  # walked 200 m
    ("idle", _still(20, span_min=30), 0, {}),  # still, but only for 30 of 60 minutes
    ("idle", _still(20, online=False), 0, {}),
]


@pytest.mark.parametrize(("rule", "data", "shift", "expected"), CASES)
def test_rule(rule: str, data: W.RuleInputs, shift: int, expected: dict[str, str]) -> None:
    got = W.RULES[rule](data, CFG, NOW + shift)
    assert keys(got) == expected
    for f in got:
        assert f.rule == rule and f.level in W.LEVELS and 0 < len(f.evidence) <= W.MAX_EVIDENCE


def test_every_rule_handles_empty_inputs() -> None:
    for rule in W.RULES.values():
        assert rule(inputs(), CFG, NOW) == []


def test_evidence_is_capped() -> None:
    rows = [(f"i{i}", 1, "fire", "g1", "s1", 118.8, 32.0) for i in range(80)]
    (f,) = W.rule_threshold(inputs(reports=reports(rows)), CFG, NOW)
    assert len(f.evidence) == W.MAX_EVIDENCE and f.summary["n"] == 80


def test_poisson_tail() -> None:
    import numpy as np

    p = W.poisson_sf(np.array([1, 5, 10]), np.array([1.0, 1.0, 1.0]))
    assert p[0] == 1.0  # k ≤ mu: not a tail
    assert p[1] == pytest.approx(0.0036598, rel=1e-4)
    assert p[2] == pytest.approx(1.1143e-7, rel=1e-3)


# ------------------------------------------------------------------ fusion


def _fire_scene(alert_grid: str = "g1", alert_ago: int = 5) -> W.RuleInputs:
    return inputs(
        reports=reports([("i1", 3, "fire", "g1", "s1", 118.8, 32.0, 3)]),
        video=video(
            [(f"a{i}", f"cam{i}", "smoke_fire", alert_ago, alert_grid, "s1") for i in range(3)]
        ),
    )


def test_fusion_merges_report_and_video_of_one_grid() -> None:
    data = _fire_scene()
    fs, timings = W.evaluate(data, CFG, NOW)
    assert set(timings) == {*W.RULES, *W.POST}
    (f,) = [f for f in fs if f.rule in ("threshold", "video_cluster", "fusion")]
    assert f.rule == "fusion" and f.level == "red"
    assert set(f.aliases) == {"threshold:s1:fire", "video_cluster:s1:smoke_fire"}
    assert "i1" in f.evidence and "a0" in f.evidence
    assert ["i1", "a0"] in f.summary["linked"]


@pytest.mark.parametrize("scene", [_fire_scene(alert_grid="g2"), _fire_scene(alert_ago=40)])
def test_fusion_needs_same_grid_and_close_time(scene: W.RuleInputs) -> None:
    cfg = dataclasses.replace(CFG, video_window_min=60)
    fs, _ = W.evaluate(scene, cfg, NOW)
    assert {f.rule for f in fs} == {"threshold", "video_cluster"}


def test_fused_warning_updates_the_warning_one_side_opened() -> None:
    only_video = inputs(video=_fire_scene().video)
    fs, _ = W.evaluate(only_video, CFG, NOW)
    new, _, _ = W.update_open([], fs, NOW, CFG)
    assert [w.key for w in new] == ["video_cluster:s1:smoke_fire"]
    fs, _ = W.evaluate(_fire_scene(), CFG, NOW + MIN)
    new2, updated, _ = W.update_open(new, fs, NOW + MIN, CFG)
    assert new2 == [] and len(updated) == 1 and updated[0].rule == "fusion"
    # the report side alone later still lands on the same warning
    only_report = W.rule_threshold(_fire_scene(), CFG, NOW + 2 * MIN)
    new3, updated3, _ = W.update_open(updated, only_report, NOW + 2 * MIN, CFG)
    assert new3 == [] and updated3[0].warning_id == new[0].warning_id


# ------------------------------------------------------------------ lifecycle


def finding(level: str = "yellow", ev: tuple[str, ...] = ("x",), key: str = "r:s1") -> W.Finding:
    return W.Finding("r", "s1", level, key, ev, {"n": 1})


def chain(a: str) -> list[str]:
    return AREAS.ancestors(a)


def test_update_not_repeat_and_level_max() -> None:
    new, upd, clr = W.update_open([], [finding()], NOW, CFG)
    assert len(new) == 1 and upd == [] and clr == []
    w = new[0]
    new2, upd2, _ = W.update_open(new, [finding("orange", ("y",))], NOW + MIN, CFG)
    assert new2 == [] and upd2[0].warning_id == w.warning_id
    assert upd2[0].level == "orange" and upd2[0].evidence == ("y", "x")
    _, upd3, _ = W.update_open(upd2, [finding("blue")], NOW + 2 * MIN, CFG)
    assert upd3[0].level == "orange" and upd3[0].last_seen_ms == NOW + 2 * MIN


def test_clears_after_hysteresis_only() -> None:
    new, _, _ = W.update_open([], [finding()], NOW, CFG)
    h = CFG.hysteresis_s * 1000
    _, upd, clr = W.update_open(new, [], NOW + h - 1, CFG)
    assert clr == [] and upd == []
    _, _, clr = W.update_open(new, [], NOW + h, CFG)
    assert [w.status for w in clr] == ["cleared"]


def test_escalates_street_district_city_and_ack_stops_it() -> None:
    step = CFG.escalate_after_s * 1000
    new, _, _ = W.update_open([], [finding()], NOW, CFG, chain)
    _, upd, _ = W.update_open(new, [finding()], NOW + step - 1, CFG, chain)
    assert upd[0].escalated_to is None
    _, upd, _ = W.update_open(upd, [finding()], NOW + step, CFG, chain)
    assert upd[0].escalated_to == "d1"
    _, upd, _ = W.update_open(upd, [finding()], NOW + 2 * step, CFG, chain)
    assert upd[0].escalated_to == "c"
    _, upd, _ = W.update_open(upd, [finding()], NOW + 9 * step, CFG, chain)
    assert upd[0].escalated_to == "c"
    acked = [dataclasses.replace(new[0], status="acknowledged")]
    _, upd, _ = W.update_open(acked, [finding()], NOW + 5 * step, CFG, chain)
    assert upd[0].escalated_to is None and upd[0].status == "acknowledged"


def test_escalation_without_findings_is_an_update() -> None:
    step = CFG.escalate_after_s * 1000
    cfg = dataclasses.replace(CFG, hysteresis_s=10 * CFG.escalate_after_s)
    new, _, _ = W.update_open([], [finding()], NOW, cfg, chain)
    _, upd, clr = W.update_open(new, [], NOW + step, cfg, chain)
    assert clr == [] and upd[0].escalated_to == "d1" and upd[0].last_seen_ms == NOW


def test_live_counts_at_area_and_ancestors() -> None:
    new, _, _ = W.update_open(
        [], [finding("red"), finding("blue", key="q:s1"), finding(key="z:s2")], NOW, CFG
    )
    new[2] = dataclasses.replace(new[2], area_id="s2")
    c = W.live_counts(new, chain)
    assert c["s1"] == {"red": 1, "blue": 1}
    assert c["s2"] == {"yellow": 1}
    assert c["d1"] == c["c"] == {"red": 1, "blue": 1, "yellow": 1}


def test_settings_tables_parse() -> None:
    t = CFG.threshold_table
    fire = t.filter(pl.col("category") == "fire").drop("spec")
    assert fire.rows() == [("fire", 1, 30 * MIN, "orange", 3), ("fire", 6, 30 * MIN, "orange", 1)]
    assert t.filter(pl.col("category") == "dispute")["min_severity"].to_list() == [1]
    assert CFG.sla_level_table == [(0.4, "red"), (0.25, "orange"), (0.15, "yellow")]
    assert CFG.compat_pairs.height >= 5
    assert CFG.horizon_ms() == CFG.recurrence_days * 86_400_000


def test_recently_closed_by_a_person_stays_quiet() -> None:
    new, _, _ = W.update_open([], [finding()], NOW, CFG, quiet={"r:s1"})
    assert new == []
    new, _, _ = W.update_open([], [finding(key="r:s2")], NOW, CFG, quiet={"r:s1"})
    assert [w.key for w in new] == ["r:s2"]
    # an open warning under that key is still updated (quiet only stops reopening)
    opened, _, _ = W.update_open([], [finding()], NOW, CFG)
    _, upd, _ = W.update_open(opened, [finding()], NOW + MIN, CFG, quiet={"r:s1"})
    assert [w.warning_id for w in upd] == [opened[0].warning_id]


def test_live_item_and_counts_cover_open_warnings_only() -> None:
    new, _, _ = W.update_open([], [finding("red"), finding(key="r:s1:b")], NOW, CFG)
    closed = dataclasses.replace(new[1], status="dismissed")
    counts = W.live_counts([new[0], closed], chain)
    assert counts == {"s1": {"red": 1}, "d1": {"red": 1}, "c": {"red": 1}}
    item = W.live_item(new[0])
    assert item["level"] == "red" and item["area_id"] == "s1" and item["n_evidence"] == 1


def test_patrol_gap_counts_grids_of_workers_on_duty_today() -> None:
    workers = pl.DataFrame(
        {
            "worker_id": ["w1", "w2", "w3"],
            "grid_id": ["g1", "g2", "g2"],
            "street_id": ["s1", "s1", "s1"],
            # w1 online; w2 on the night shift (last seen 07:00); w3 never seen
            "last_seen_ms": [NOW - MIN, NOW - 3 * HOUR, None],
        },
        schema=W.WORKERS_SCHEMA,
    )
    (f,) = W.rule_patrol_gap(inputs(workers=workers), CFG, NOW)
    assert f.level == "blue" and f.evidence == ("g1",)
    assert f.summary["n_gap"] == 1 and f.summary["n_online"] == 1


def test_binomial_tail_matches_the_sum_of_terms() -> None:
    import math

    import numpy as np

    cases = [(0, 5, 0.3), (1, 5, 0.3), (4, 10, 0.5), (10, 10, 0.5), (11, 10, 0.5), (7, 40, 0.02)]
    cases += [(3, 3, 1.0), (30, 32, 0.5), (200, 290, 1 / 29)]
    k, n, q = (np.array(c) for c in zip(*cases, strict=True))
    got = W.binom_sf(k, n, q)
    for (kk, nn, qq), g in zip(cases, got, strict=True):
        want = sum(math.comb(nn, j) * qq**j * (1 - qq) ** (nn - j) for j in range(kk, nn + 1))
        assert g == pytest.approx(min(want, 1.0), rel=1e-9, abs=1e-300), (kk, nn, qq)


def test_surge_holds_a_short_history_to_its_own_noise() -> None:
    """One day of history with 10 in the window: 18 now is busy, not a surge (the old
    plug-in estimate, pulled down by the prior, called it one)."""
    assert W.rule_surge(_surge(18, total=10, days=1), CFG, NOW) == []
    assert W.rule_surge(_surge(40, total=10, days=1), CFG, NOW) != []
