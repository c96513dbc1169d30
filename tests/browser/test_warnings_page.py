"""The early-warning page as a district commander sees it: the list in scope only, the
detail with evidence and timeline, an action, and the cue for a new red warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from pipelines import warnings as W
from pipelines.city.geography import City
from pipelines.spine.runner import live_state
from tests.browser.conftest import (
    attr,
    click,
    count,
    login,
    shot,
    text,
    type_into,
    viewport,
    wait,
    wait_text,
)
from tests.clock import Clock
from tests.conftest import open_engine

pytestmark = pytest.mark.browser


def _open(
    engine: Any, live: Any, city: City, findings: list[W.Finding], now: int
) -> list[W.Warning]:
    olds = W.warnings_from_frame(W.open_warnings(engine))
    new, _, _ = W.update_open(olds, findings, now, W.RuleConfig())
    W.persist(engine, new, [], [], now)
    W.republish(engine, live, city)
    return new


def test_commander_sees_acts_and_is_alerted(
    chrome: Any,
    server_url: str,
    module_db: Any,
    redis_url: str,
    browser_settings: Any,
    city_small: City,
    server_clock: Clock,
    artifacts: Path,
) -> None:
    engine = open_engine(module_db)
    r = redis.Redis.from_url(redis_url)
    live = live_state(r, browser_settings)
    mine = city_small.children("320102")[:2]
    other = city_small.children("320104")[0]
    grid = city_small.children(mine[0])[0]
    seeded = _open(
        engine,
        live,
        city_small,
        [
            W.Finding(
                "threshold",
                mine[0],
                "orange",
                f"threshold:{mine[0]}:fire",
                ("I1", "I2"),
                {"category": "fire", "n": 2, "min_count": 1, "window_min": 30, "grids": [grid]},
            ),
            W.Finding("sla", mine[1], "yellow", f"sla:{mine[1]}", ("I3",), {"breached": 3}),
            W.Finding(
                "surge",
                other,
                "red",
                f"surge:{other}:dispute",
                ("I4",),
                {"category": "dispute", "n": 12, "expected": 1.5},
            ),
        ],
        server_clock.now_ms,
    )
    try:
        login(chrome, server_url, "xuanwu")
        viewport(chrome, 1600, 900)
        chrome.get(server_url + "/warnings")
        wait(chrome).until(lambda d: count(d, "#warn-list .warn-row"))
        assert count(chrome, "#warn-list .warn-row") == 2  # the other district's is not
        listed = text(chrome, "#warn-list")
        assert "阈值预警" in listed and "超时预警" in listed and "突增" not in listed
        assert "橙色 1" in text(chrome, "#warn-counts")
        wait(chrome).until(lambda d: count(d, "#warn-map path"))
        click(chrome, "#warn-list .warn-row")  # most urgent first: the orange fire threshold
        assert "I1" in wait_text(chrome, "#warn-detail", "消防")
        # names, not ids: the street and the grid by name, each id on hover
        detail = text(chrome, "#warn-detail")
        grid_name = str(city_small.area(grid)["name"])  # type: ignore[index]
        assert grid_name in detail and grid not in detail
        assert attr(chrome, f'#warn-detail span[title="{grid}"]', "title") == grid
        street_name = str(city_small.area(mine[0])["name"])  # type: ignore[index]
        assert street_name in listed and mine[0] not in listed
        assert count(chrome, f'#warn-list .warn-area[title="{mine[0]}"]') == 1
        type_into(chrome, "#warn-assignee", "玄武消防中队")
        click(chrome, "#warn-dispatch")
        wait_text(chrome, "#warn-msg", "已完成")
        wait_text(chrome, "#warn-detail", "玄武消防中队")
        fire = next(w for w in seeded if w.rule == "threshold")
        row = W.warning_detail(engine, fire.warning_id)
        assert row is not None and row["status"] == "dispatched"
        assert [a["action"] for a in row["timeline"]] == ["open", "dispatch"]
        # dismissing without a reason is refused, with a message
        click(chrome, "#warn-dismiss")
        wait_text(chrome, "#warn-msg", "原因")
        shot(chrome, artifacts, "warnings-detail")
        # a new red warning in scope: the banner flashes (and the chime plays when allowed)
        _open(
            engine,
            live,
            city_small,
            [
                W.Finding(
                    "video_cluster",
                    mine[1],
                    "red",
                    f"video_cluster:{mine[1]}:smoke_fire",
                    ("V1", "V2", "V3"),
                    {"label": "smoke_fire", "cameras": 3},
                )
            ],
            server_clock.now_ms,
        )
        wait_text(chrome, "#warn-banner .warn-alarm", "红色", seconds=30)
        wait(chrome).until(lambda d: "cue" in (attr(d, "#warn-cue", "title") or ""))
        shot(chrome, artifacts, "warnings-alarm")
    finally:
        ids = [w.warning_id for w in W.warnings_from_frame(W.open_warnings(engine))]
        for wid in ids:
            W.act(engine, wid, "dismiss", "test", server_clock.now_ms, note="test cleanup")
        W.republish(engine, live, city_small)
        engine.dispose()
        r.close()
