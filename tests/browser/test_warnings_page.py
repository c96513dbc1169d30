"""The early-warning page as a district commander sees it: the list in scope only, the
detail with evidence and timeline, an action, and the cue for a new red warning."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.webdriver.common.by import By

from pipelines import warnings as W
from pipelines.city.geography import City
from pipelines.spine.runner import live_state
from tests.browser.conftest import login, shot, viewport
from tests.browser.test_panorama import wait
from tests.conftest import open_engine

pytestmark = pytest.mark.browser


def _open(engine: Any, live: Any, city: City, findings: list[W.Finding]) -> list[W.Warning]:
    now = int(time.time() * 1000)
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
    artifacts: Path,
) -> None:
    engine = open_engine(module_db)
    r = redis.Redis.from_url(redis_url)
    live = live_state(r, browser_settings)
    mine = city_small.children("320102")[:2]
    other = city_small.children("320104")[0]
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
                {"category": "fire", "n": 2, "min_count": 1, "window_min": 30},
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
    )
    try:
        login(chrome, server_url, "xuanwu")
        viewport(chrome, 1600, 900)
        chrome.get(server_url + "/warnings")
        rows = wait(chrome).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#warn-list .warn-row") or None
        )
        assert len(rows) == 2  # the other district's red surge is not in scope
        text = chrome.find_element(By.ID, "warn-list").text
        assert "阈值预警" in text and "超时预警" in text and "突增" not in text
        assert "橙色 1" in chrome.find_element(By.ID, "warn-counts").text
        wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#warn-map path"))
        rows[0].click()  # most urgent first: the orange fire threshold
        wait(chrome).until(lambda d: "消防" in d.find_element(By.ID, "warn-detail").text)
        assert "I1" in chrome.find_element(By.ID, "warn-detail").text
        chrome.find_element(By.ID, "warn-assignee").send_keys("玄武消防中队")
        chrome.find_element(By.ID, "warn-dispatch").click()
        wait(chrome).until(lambda d: "已完成" in d.find_element(By.ID, "warn-msg").text)
        wait(chrome).until(lambda d: "玄武消防中队" in d.find_element(By.ID, "warn-detail").text)
        fire = next(w for w in seeded if w.rule == "threshold")
        row = W.warning_detail(engine, fire.warning_id)
        assert row is not None and row["status"] == "dispatched"
        assert [a["action"] for a in row["timeline"]] == ["open", "dispatch"]
        # dismissing without a reason is refused, with a message
        chrome.find_element(By.ID, "warn-dismiss").click()
        wait(chrome).until(lambda d: "原因" in d.find_element(By.ID, "warn-msg").text)
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
        )
        banner = wait(chrome, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#warn-banner .warn-alarm") or None
        )
        assert "红色" in banner[0].text
        wait(chrome).until(
            lambda d: "cue" in (d.find_element(By.ID, "warn-cue").get_attribute("title") or "")
        )
        shot(chrome, artifacts, "warnings-alarm")
    finally:
        ids = [w.warning_id for w in W.warnings_from_frame(W.open_warnings(engine))]
        for wid in ids:
            W.act(engine, wid, "dismiss", "test", int(time.time() * 1000), note="test cleanup")
        W.republish(engine, live, city_small)
        engine.dispose()
        r.close()
