"""In the browser: grid work and warnings show each feed's freshness in the header; two
warnings of one rule and one street say which label each is about; a wall screen that
opens another page lands on the wall; a commander's header names them once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from pipelines import warnings as W
from pipelines.city.geography import City
from pipelines.spine.runner import live_state
from tests.browser.conftest import (
    count,
    forget_session,
    login,
    shot,
    text,
    viewport,
    wait,
    wait_text,
    wall_url,
)
from tests.clock import TZ, Clock
from tests.conftest import open_engine

pytestmark = pytest.mark.browser


def test_freshness_row_subjects_and_kiosk(
    chrome: Any,
    server_url: str,
    module_db: Any,
    redis_url: str,
    browser_settings: Any,
    city_small: City,
    server_clock: Clock,
    wall_token: str,
    artifacts: Path,
) -> None:
    engine = open_engine(module_db)
    r = redis.Redis.from_url(redis_url)
    live = live_state(r, browser_settings)
    street = city_small.children("320102")[0]
    findings = [
        W.Finding(
            "video_cluster",
            street,
            "yellow",
            f"video_cluster:{street}:{label}",
            (f"V{i}",),
            {"label": label, "cameras": 3, "n": 3, "window_min": 15},
        )
        for i, label in enumerate(("illegal_parking", "street_vending"))
    ]
    new, _, _ = W.update_open([], findings, server_clock.now_ms, W.RuleConfig())
    W.persist(engine, new, [], [], server_clock.now_ms)
    W.republish(engine, live, city_small)
    try:
        login(chrome, server_url, "xuanwu")
        viewport(chrome, 1920, 1080)
        chrome.get(server_url + "/warnings")
        wait(chrome).until(lambda d: count(d, "#warn-list .warn-row") >= 2)
        listed = text(chrome, "#warn-list")
        assert "违章停车 · 15 分钟内" in listed and "占道经营 · 15 分钟内" in listed
        assert "上报" in wait_text(chrome, "#shell-fresh", "更新")
        assert "(demo)" not in text(chrome, "#shell-user")
        shot(chrome, artifacts, "warnings-subjects-fresh")
        # a past moment: the header says which one, not the live feeds' freshness
        past = datetime.fromtimestamp(server_clock.now_ms / 1000 - 900, TZ)
        chrome.get(server_url + f"/warnings?at={past.strftime('%Y-%m-%dT%H:%M')}")
        said = wait_text(chrome, "#shell-fresh", "历史回看")
        assert past.strftime("%Y-%m-%d %H:%M") in said and "更新" not in said
        chrome.get(server_url + "/work")
        assert "定位" in wait_text(chrome, "#shell-fresh", "上报")
        shot(chrome, artifacts, "work-fresh")
        chrome.get(server_url + f"/work?at={past.strftime('%Y-%m-%dT%H:%M')}")
        assert past.strftime("%H:%M") in wait_text(chrome, "#shell-fresh", "历史回看")
        # a wall screen: signed in with its token, then sent to another page
        forget_session(chrome, server_url)
        chrome.get(wall_url(server_url, wall_token))
        wait(chrome).until(lambda d: d.current_url.endswith("/wall"))
        chrome.get(server_url + "/")
        wait(chrome).until(lambda d: d.current_url.endswith("/wall"))
        wait(chrome).until(lambda d: count(d, "#wall-kpis .kpi") == 9)  # a working wall
        shot(chrome, artifacts, "kiosk-back-on-wall")
    finally:
        for w in new:
            W.act(engine, w.warning_id, "dismiss", "test", server_clock.now_ms, note="cleanup")
        W.republish(engine, live, city_small)
        forget_session(chrome, server_url)
        engine.dispose()
        r.close()
