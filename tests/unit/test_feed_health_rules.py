"""Feed freshness and pipeline health: the pure decisions, from inputs at fixed clocks."""

from __future__ import annotations

import polars as pl
import pytest

from dashboard.live import fresh_text
from pipelines import warnings as W
from pipelines.spine.health import FeedHealth, Thresholds, freshness_rows, stale_reasons
from pipelines.warnings.model import STREAMS_SCHEMA
from tests.unit.test_warning_rules import AREAS

NOW = 1_772_416_800_000  # a fixed moment; only differences from it matter
S = 1000
MIN = 60 * S
HOUR = 60 * MIN
TH = Thresholds(max_lag=100, max_pending_s=60, max_restarts_hour=3)


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (FeedHealth("reports"), []),  # nothing at all: nothing to complain about
        (FeedHealth("reports", lag=100), []),  # at the threshold: still keeps up
        (FeedHealth("reports", lag=101), ["lag"]),
        (FeedHealth("reports", pending=1, oldest_pending_ms=NOW - 60 * S), []),
        (FeedHealth("reports", pending=1, oldest_pending_ms=NOW - 61 * S), ["pending"]),
        # an old entry id with nothing pending is not a stuck batch
        (FeedHealth("reports", pending=0, oldest_pending_ms=NOW - HOUR), []),
        (FeedHealth("reports", restarts=(NOW - 10 * MIN, NOW - 5 * MIN)), []),
        (FeedHealth("reports", restarts=(NOW - 50 * MIN, NOW - 10 * MIN, NOW - MIN)), ["restarts"]),
        # restarts older than an hour do not count
        (FeedHealth("reports", restarts=(NOW - 2 * HOUR, NOW - 90 * MIN, NOW - MIN)), []),
        (
            FeedHealth("reports", lag=500, pending=3, oldest_pending_ms=NOW - HOUR),
            ["lag", "pending"],
        ),
    ],
)
def test_stale_reasons(health: FeedHealth, expected: list[str]) -> None:
    assert stale_reasons(health, TH, NOW) == expected
    # while a backfill runs its backlog is no stall; nothing else changes
    assert stale_reasons(health, TH, NOW, backfill=True) == [w for w in expected if w != "lag"]


def test_freshness_rows_age_of_newest_applied_event() -> None:
    feeds = {
        "reports": FeedHealth("reports", event_ms=NOW - 3600 * S, lag=5000),
        "locations": FeedHealth("locations", event_ms=NOW - 2 * S),
        "video": FeedHealth("video"),
    }
    rows = freshness_rows(feeds, TH, NOW)
    assert rows == [
        {"feed": "reports", "age_s": 3600, "why": ["lag"]},
        {"feed": "locations", "age_s": 2, "why": []},
        {"feed": "video", "age_s": None, "why": []},
    ]


def test_fresh_text_never_claims_freshness_a_feed_lacks() -> None:
    rows = [
        {"feed": "reports", "age_s": 3600, "why": ["restarts", "pending"]},
        {"feed": "locations", "age_s": 0, "why": []},
        {"feed": "video", "age_s": None, "why": []},
    ]
    zh = fresh_text(rows, 1, "zh-CN")
    assert zh == (
        "⚠ 上报 数据滞后（反复重启、批次卡住）· 最新 60 分钟前 · 定位 0 秒前更新"
        " · 视频 暂无数据 · ⚠ 系统预警 1 条"
    )
    en = fresh_text(rows, 0, "en")
    assert en.startswith("⚠ Reports STALE (crash loop, batch stuck) · newest 60 min ago")
    assert "Positions updated 0 s ago" in en and "system" not in en
    # all feeds fresh: each says its own age
    ok = [{"feed": "reports", "age_s": 7200, "why": []}]
    assert fresh_text(ok, 0, "zh-CN") == "上报 2 小时前更新"
    assert fresh_text([], 0, "zh-CN") == "暂无数据"


def test_a_running_backfill_is_said_first_and_its_backlog_is_no_stall() -> None:
    old = NOW - 400_000 * S
    feeds = {
        "reports": FeedHealth("reports", event_ms=old, lag=5000),
        "locations": FeedHealth(
            "locations", event_ms=old, lag=5000, pending=2, oldest_pending_ms=NOW - HOUR
        ),
        "video": FeedHealth("video"),
    }
    rows = freshness_rows(feeds, TH, NOW, backfill=True)
    zh = fresh_text(rows, 0, "zh-CN", backfill=0.527)
    assert zh == (
        "正在回填近期历史 52% · 上报 111 小时前更新"
        " · ⚠ 定位 数据滞后（批次卡住）· 最新 111 小时前 · 视频 暂无数据"
    )
    en = fresh_text(rows, 2, "en", backfill=1.0)
    assert en.startswith("Backfilling recent history 100% · Reports updated 111 h ago")
    assert "backlog" not in en and "batch stuck" in en and en.endswith("2 system warning(s)")
    assert fresh_text([], 0, "zh-CN", backfill=0.0) == "正在回填近期历史 0% · 暂无数据"
    # no backfill: the same feeds are stale for their backlog
    live = fresh_text(freshness_rows(feeds, TH, NOW), 0, "zh-CN")
    assert live.startswith("⚠ 上报 数据滞后（积压未处理）")


def streams(rows: list[tuple[str, int, int, int, int]], backfill: bool = False) -> pl.DataFrame:
    """rows: (feed, lag, pending, pending_age_s, restarts_1h); ``backfill``: one runs."""
    return pl.DataFrame(
        [
            {
                "feed": f,
                "lag": lag,
                "pending": p,
                "pending_age_s": age,
                "restarts_1h": n,
                "event_ms": NOW - HOUR,
                "backfill": backfill,
            }
            for f, lag, p, age, n in rows
        ],
        schema=STREAMS_SCHEMA,
    )


CFG = W.RuleConfig(stale_lag=100, stale_pending_s=60, stale_restarts_hour=3)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("reports", 0, 0, 0, 0), ("video", 100, 1, 60, 2)], {}),
        ([("reports", 101, 0, 0, 0)], {"system:c:reports": "orange"}),
        ([("reports", 0, 1, 61, 0)], {"system:c:reports": "orange"}),
        ([("reports", 0, 1, 3000, 3)], {"system:c:reports": "red"}),  # crash loop
        (
            [("video", 0, 0, 0, 5), ("locations", 5000, 0, 0, 0)],
            {"system:c:video": "red", "system:c:locations": "orange"},
        ),
    ],
)
def test_system_rule(rows: list[tuple[str, int, int, int, int]], expected: dict[str, str]) -> None:
    inputs = W.RuleInputs(areas=AREAS, streams=streams(rows))
    got = W.RULES["system"](inputs, CFG, NOW)
    assert {f.key: f.level for f in got} == expected
    for f in got:
        assert f.rule == "system" and f.area_id == "c"  # the city: reaches the admin


@pytest.mark.parametrize("backfill", [None, 0.4], ids=["live", "backfilling"])
def test_system_rule_and_screens_agree(backfill: float | None) -> None:
    """The warning opens exactly when the screens mark the feed stale — also while a
    backfill runs, when neither counts its backlog."""
    th = Thresholds(CFG.stale_lag, CFG.stale_pending_s, CFG.stale_restarts_hour)
    for lag in (0, 100, 101):
        for age in (0, 60, 61):
            for n in (0, 2, 3):
                h = FeedHealth(
                    "reports",
                    lag=lag,
                    pending=1 if age else 0,
                    oldest_pending_ms=NOW - age * S if age else 0,
                    restarts=tuple(NOW - (i + 1) * MIN for i in range(n)),
                )
                rows = streams([("reports", lag, 1 if age else 0, age, n)], backfill is not None)
                opened = bool(W.RULES["system"](W.RuleInputs(areas=AREAS, streams=rows), CFG, NOW))
                running = backfill is not None
                feeds = {"reports": h}
                line = fresh_text(freshness_rows(feeds, th, NOW, running), 0, "zh-CN", backfill)
                assert opened == ("⚠" in line), (lag, age, n, line)
                # derived from the inputs, not from the code under test
                stuck = bool(age > CFG.stale_pending_s or n >= CFG.stale_restarts_hour)
                assert opened == (stuck or (lag > CFG.stale_lag and not running)), (lag, age, n)


def test_a_replay_of_the_pasts_warnings_is_said_after_a_backfill() -> None:
    ok = [{"feed": "reports", "age_s": 5, "why": []}]
    assert fresh_text(ok, 0, "zh-CN", replay=0.426) == (
        "正在研判回填历史的预警 42% · 上报 5 秒前更新"
    )
    en = fresh_text(ok, 0, "en", backfill=1.0, replay=0.0)
    assert en == (
        "Backfilling recent history 100% · Evaluating the backfilled history's warnings 0%"
        " · Reports updated 5 s ago"
    )
