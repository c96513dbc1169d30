"""The wall never shows a blank screen: an area it cannot show is a message with a way back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from pipelines.access import accounts, wall_tokens
from pipelines.city.geography import City
from tests.browser.conftest import forget_session, shot, viewport, wall_url
from tests.conftest import open_engine


def wait(driver: Any, timeout: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def _message(driver: Any) -> str:
    panel = wait(driver).until(EC.visibility_of_element_located((By.ID, "wall-message")))
    return str(panel.text)


def test_an_unknown_area_is_a_message_with_a_way_back(
    chrome: Any, server_url: str, artifacts: Path, wall_token: str
) -> None:
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token, "/wall/999999"))
    text = _message(chrome)
    assert "未找到该区域" in text and "区域编号 “999999” 不存在" in text
    shot(chrome, artifacts, "wall-unknown-area")
    chrome.find_element(By.LINK_TEXT, "返回大屏").click()
    wait(chrome).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wall-kpis .kpi")) == 9)


def test_an_area_outside_the_screens_scope_is_a_message(
    chrome: Any, server_url: str, module_db: Any, city_small: City
) -> None:
    engine = open_engine(module_db)
    now = int(time.time() * 1000)
    if accounts.get_user(engine, "wall-xuanwu") is None:
        accounts.create_user(engine, city_small, "wall-xuanwu", "wall", "320102", now_ms=now)
    token = wall_tokens.issue_wall_token(engine, "wall-xuanwu", 1, now_ms=now)
    engine.dispose()
    forget_session(chrome, server_url)
    chrome.get(wall_url(server_url, token, "/wall/320104"))
    assert "该区域不在您的权限范围内" in _message(chrome)
