"""A stalled, crash-looping reports consumer on a real Redis and real SQL: the screens'
freshness text goes stale, the system warning opens at the city (the admin and the wall
see it), ``wangge status`` reports it — and recovery clears all three.

The clock is passed in everywhere; stream entry ids are written from the same clock, so
the oldest pending entry's age is a difference of two values the test chose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from dashboard import live as L
from dashboard.backend import Backend
from dashboard.pages.warnings import queries as WL
from pipelines.city.geography import City, GridIndex
from pipelines.cli.run import restart_recorder
from pipelines.cli.status import health_lines
from pipelines.settings import Settings
from pipelines.spine import health
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import FIELD
from pipelines.warnings import WarningEngine
from tests.clock import MOMENTS
from tests.conftest import settings_for
from tests.integration.test_pipeline import grid_point, lifecycle

pytestmark = pytest.mark.integration

T0 = MOMENTS[0].ms
S = 1000
MIN = 60 * S


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
def settings(redis_url: str, prefix: str, db_url: Any, tmp_path: Path) -> Settings:
    return settings_for(
        redis_url,
        prefix,
        db_url,
        tmp_path,
        live={"stale_lag": 1000, "stale_pending_s": 60, "stale_restarts_hour": 3},
    )


def add_reports(r: redis.Redis, s: Settings, at_ms: int, events: list[dict[str, Any]]) -> None:
    """XADD with entry ids from the test's clock (as Redis would at that moment)."""
    key = f"{s.redis.prefix}:{s.streams.reports}"
    for i, e in enumerate(events):
        r.xadd(key, {FIELD: encode(e)}, id=f"{at_ms}-{i + 1}")


def reports_line(r: redis.Redis, s: Settings, now_ms: int) -> str:
    (line,) = [x for x in health_lines(r, s, now_ms) if x.startswith("reports")]
    return line


def test_stalled_feed_goes_stale_warns_and_recovers(
    settings: Settings, city: City, rclient: redis.Redis, engine: Engine
) -> None:
    s, r = settings, rclient
    clock = Clock(T0)
    worker = make_worker("reports", s, city, GridIndex(city), r, engine, "reports-1", clock=clock)
    warn = WarningEngine(s, city, r, engine, clock=clock)
    board = Backend(s, city, r, engine, clock=clock)
    record = restart_recorder(r, s.redis.prefix, clock=clock)

    def screen(lang: str = "zh-CN") -> str:
        return L.feed_fresh_text(board, lang)

    def system_warnings() -> list[dict[str, Any]]:
        admin = WL.in_scope(board.live.warnings(), city, city.city_id)
        return [w for w in admin if w["rule"] == "system"]

    # 1. healthy: one incident reported 5 s before the batch is applied
    _, lon, lat = grid_point(city, 3)
    add_reports(r, s, T0 - 5 * S, lifecycle("i1", lon, lat, T0 - 5 * S, ["reported"]))
    assert worker.step().applied == 1
    clock.ms = T0 + 2 * S
    assert screen().startswith("上报 7 秒前更新")
    assert "⚠" not in screen() and "STALE" not in screen("en")
    warn.tick()
    assert system_warnings() == []
    assert reports_line(r, s, clock.ms).endswith(" ok")

    # 2. the consumer reads a batch and dies before acknowledging it, three times within
    #    the hour (the supervisor records each restart); two minutes pass
    t1 = T0 + 10 * S
    add_reports(
        r,
        s,
        t1,
        lifecycle("i2", lon, lat, t1, ["reported"]) + lifecycle("i3", lon, lat, t1, ["reported"]),
    )
    assert len(worker.consumer.read()) == 2  # read, never acknowledged: now pending
    for k in range(3):
        clock.ms = t1 + (k + 1) * 20 * S
        record("reports", "reports-1")
    clock.ms = t1 + 2 * MIN
    text = screen()
    assert text.startswith("⚠ 上报 数据滞后（批次卡住、反复重启）· 最新 2 分钟前"), text
    assert "秒前更新" not in text.split(" · ")[0]  # no freshness it does not have
    assert "STALE (batch stuck, crash loop)" in screen("en")
    line = reports_line(r, s, clock.ms)
    assert "pending=2" in line and "oldest_pending_s=120" in line
    assert "restarts_1h=3" in line and line.endswith("STALE(pending,restarts)")
    warn.tick()
    (w,) = system_warnings()  # the admin (city scope) sees it …
    assert w["area_id"] == city.city_id and w["level"] == "red"
    assert w["summary"]["feed"] == "reports"
    clock.ms += 2 * s.dashboard.refresh_s * S  # the next tick of the screens
    assert screen().endswith("⚠ 系统预警 1 条")  # … and so does the wall's status line

    # 3. recovery: the restarted worker applies its pending batch; an hour later the
    #    restarts have aged out and the warning clears after its hysteresis
    worker = make_worker("reports", s, city, GridIndex(city), r, engine, "reports-1", clock=clock)
    assert worker.step().applied == 2  # a new process under the same name: its pending first
    clock.ms = t1 + 61 * MIN
    assert reports_line(r, s, clock.ms).endswith(" ok")
    warn.tick()
    clock.ms += warn.cfg.hysteresis_s * S
    warn.tick()
    assert system_warnings() == []
    text = screen()
    assert text.startswith("上报 76 分钟前更新") and "⚠" not in text, text


def test_a_backfills_backlog_is_no_stall_until_it_ends(
    settings: Settings, city: City, rclient: redis.Redis, engine: Engine
) -> None:
    """A backlog past ``stale_lag`` on the reports stream (entries the group has not read):
    while a backfill runs, the screens say so, ``wangge status`` names it and the system
    rule opens nothing; once it has ended, the same backlog is a stalled pipeline for all
    three."""
    s, r = settings, rclient
    clock = Clock(T0)
    make_worker("reports", s, city, GridIndex(city), r, engine, "reports-1", clock=clock)
    pipe = r.pipeline(transaction=False)
    for i in range(s.live.stale_lag + 200):
        pipe.xadd(f"{s.redis.prefix}:{s.streams.reports}", {FIELD: b"{}"}, id=f"{T0}-{i + 1}")
    pipe.execute()
    warn = WarningEngine(s, city, r, engine, clock=clock)

    def seen() -> tuple[str, list[str], list[str]]:
        board = Backend(s, city, r, engine, clock=clock)  # a new tick's line
        system = [w for w in board.live.warnings() if w["rule"] == "system"]
        return L.feed_fresh_text(board, "zh-CN"), health_lines(r, s, clock.ms), system

    health.BACKFILL.mark(r, s.redis.prefix, 0.4)
    assert 0 < r.ttl(health.BACKFILL.key(s.redis.prefix)) <= health.PROGRESS_TTL_S
    warn.tick()
    line, status, system = seen()
    assert line.startswith("正在回填近期历史 40% · ") and "⚠" not in line, line
    assert status[-1] == "backfill   running, 40% done (the lag above is its backlog)"
    reports = next(x for x in status if x.startswith("reports"))
    assert f"lag={s.live.stale_lag + 200} " in reports and reports.endswith(" ok"), reports
    assert system == []

    health.BACKFILL.clear(r, s.redis.prefix)
    clock.ms += 2 * s.dashboard.refresh_s * S
    warn.tick()
    line, status, system = seen()
    assert line.startswith("⚠ 上报 数据滞后（积压未处理）"), line
    assert not any(x.startswith("backfill") for x in status)
    assert next(x for x in status if x.startswith("reports")).endswith(" STALE(lag)")
    assert [(w["summary"]["feed"], w["summary"]["reasons"]) for w in system] == [
        ("reports", ["lag"])
    ]
