"""A warning's summary shows names (ids on hover) and says what a baseline is in words."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.pages.warnings import wording as WW
from pipelines.settings import Settings

NAMES = {
    "320106-001-049": "宁海路街道第49网格",
    "320106-001-050": "宁海路街道第50网格",
    "w-0001": "张伟",
}
S = Settings()


def fmt(v: Any, lang: str) -> str:
    return str(v)


def test_ids_become_names_with_the_id_kept() -> None:
    items = WW.summary_items(
        {"grids": ["320106-001-049", "320106-001-050", "999-unknown"], "n": 5},
        "threshold",
        NAMES,
        S,
        "zh-CN",
        fmt,
    )
    label, grids = items[0]
    assert label == "涉及网格"
    assert grids == [
        ("宁海路街道第49网格", "320106-001-049"),
        ("宁海路街道第50网格", "320106-001-050"),
        ("999-unknown", "999-unknown"),  # an id without a name stays itself
    ]
    assert items[1] == ("数量", "5")


@pytest.mark.parametrize(
    ("lang", "expected", "text"),
    [
        ("zh-CN", 0.043, "过去 {d} 天同一时段平均每 30 分钟约 0.04 件"),
        ("en", 0.043, "about 0.04 per 30 min at this time of day (average of the past {d} days)"),
        ("zh-CN", 2.345, "过去 {d} 天同一时段平均每 30 分钟约 2.3 件"),
        ("en", 0.001, "under 0.01 per 30 min at this time of day (average of the past {d} days)"),
    ],
)
def test_surge_baseline_in_words(lang: str, expected: float, text: str) -> None:
    items = WW.summary_items(
        {"category": "fire", "n": 6, "expected": expected, "window_min": 30},
        "surge",
        NAMES,
        S,
        lang,
        fmt,
    )
    got = dict(items)
    label = "往常水平" if lang == "zh-CN" else "Usually"
    assert got[label] == text.format(d=S.warnings.surge_baseline_days)
    assert "0.043" not in str(got)


def test_video_baseline_in_words_inside_a_fused_warning() -> None:
    summary = {
        "linked": [["r1", "a1"]],
        "parts": {
            "video_cluster:320106-001:smoke_fire": {
                "label": "smoke_fire",
                "expected": 0.25,
                "window_min": 15,
                "grids": ["320106-001-049"],
            },
            "surge:320106-001:fire": {"category": "fire", "expected": 1.5, "window_min": 30},
        },
        "rules": ["surge", "video_cluster"],
    }
    items = WW.summary_items(summary, "fusion", NAMES, S, "zh-CN", fmt)
    texts = [v for _, v in items if isinstance(v, str)]
    h = S.warnings.video_baseline_h
    assert f"近 {h} 小时平均每 15 分钟约 0.25 次" in texts
    assert f"过去 {S.warnings.surge_baseline_days} 天同一时段平均每 30 分钟约 1.5 件" in texts
    assert [("宁海路街道第49网格", "320106-001-049")] in [v for _, v in items]


def test_assessment_incidents_behind_show_grid_names_and_iso_local_times() -> None:
    """The drill-down's grid column is the grid's name (its id kept for the hover) and its
    times are local (Asia/Shanghai), dated ISO."""
    import polars as pl

    from dashboard.pages.assessment import queries as A

    frame = pl.DataFrame(
        {
            "incident_id": ["I1"],
            "category": ["fire"],
            "source": ["worker"],
            "grid_id": ["320106-001-049"],
            "reported_ms": [1_796_400_000_000],  # 2026-12-04 16:00 UTC = 12-05 00:00 local
            "closed_ms": [None],
            "closed_level": [None],
            "handling_h": [None],
            "counts": [True],
        }
    )
    (row,) = A.behind_rows(frame, "Asia/Shanghai", "zh-CN", NAMES)
    assert row["grid"] == "宁海路街道第49网格" and row["grid_id"] == "320106-001-049"
    assert row["reported"] == "2026-12-05 00:00"
    cols = {c["field"]: c for c in A.behind_columns([("grid", "网格"), ("hours", "时长")])}
    assert cols["grid"]["tooltipField"] == "grid_id"
    names = {c["field"]: c for c in A.columns("grid", "zh-CN", S)}
    assert names["name"]["tooltipField"] == "row_id"


def test_worker_names_only_for_viewers_who_see_people() -> None:
    """A role that sees counts only (e.g. a city leader) gets worker ids, never names."""
    from types import SimpleNamespace

    import polars as pl

    from dashboard.pages.warnings.components import names_of

    roster = pl.DataFrame({"worker_id": ["w-0001"], "name": ["张伟"]})
    b = SimpleNamespace(area_names={"320106-001-049": "宁海路街道第49网格"}, roster=lambda: roster)
    assert names_of(b, people=True)["w-0001"] == "张伟"  # type: ignore[arg-type]
    hidden = names_of(b, people=False)  # type: ignore[arg-type]
    assert "w-0001" not in hidden and hidden["320106-001-049"] == "宁海路街道第49网格"


@pytest.mark.parametrize(
    ("p", "zh", "en"),
    [
        (1e-3, "偶然出现约为 1,000 次中 1 次", "by chance about 1 in 1,000"),
        (2.5e-7, "偶然出现约为 4,000,000 次中 1 次", "by chance about 1 in 4,000,000"),
        (1e-14, "偶然出现不到 10,000,000,000 次中 1 次", "by chance less than 1 in 10,000,000,000"),
        (0.6, "常见（约每两次一次或更多）", "common (about every other time or more)"),
    ],
)
def test_a_chance_is_said_in_words(p: float, zh: str, en: str) -> None:
    """The surge rule's tail probability (summary field p) as odds a person reads."""
    assert WW.chance_text(p, "zh-CN") == zh and WW.chance_text(p, "en") == en
    items = dict(WW.summary_items({"p": p}, "surge", {}, S, "en", str))
    assert items["Chance"] == en


def test_a_tick_that_opens_a_hundred_warnings_is_one_short_console_line() -> None:
    from pipelines.warnings.engine import tick_summary

    ids = [f"W{i:03d}" for i in range(103)]
    res = {"findings": 103, "new": 103, "updated": 0, "cleared": 0, "open": 103, "new_ids": ids}
    line = tick_summary(res)
    assert line == "103 new, 0 updated, 0 cleared, 103 open; 103 findings " + (
        "(W000, W001, W002, W003, W004 +98 more)"
    )
    quiet = {**res, "new": 0, "cleared": 2, "open": 101, "new_ids": []}
    assert tick_summary(quiet) == "0 new, 0 updated, 2 cleared, 101 open; 103 findings"
    assert tick_summary({**res, "new": 2, "new_ids": ids[:2]}).endswith("(W000, W001)")
