"""Grid work in a real browser: a district commander replays a worker's track and the
marker moves; a city leader sees clusters and counts, never a person."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from pipelines import store
from pipelines.geo import City
from tests.browser.conftest import login, shot, viewport
from tests.browser.test_panorama import wait
from tests.conftest import open_engine

pytestmark = pytest.mark.browser


def _busy_worker(module_db: Any, district: str, city: City) -> tuple[str, str, str]:
    """(worker_id, name, street) of the worker with the longest track in the district."""
    engine = open_engine(module_db)
    tp, w = store.track_points, store.workers
    pts = store.read_frame(engine, select(tp.c.worker_id))
    roster = store.read_frame(engine, select(w.c.worker_id, w.c.name, w.c.grid_id))
    engine.dispose()
    grids = city.grids.select("grid_id", "street_id", "district_id")
    top = (
        pts.group_by("worker_id")
        .len()
        .join(roster, "worker_id")
        .join(grids, "grid_id")
        .filter(pl.col("district_id") == district)
        .sort(["len", "worker_id"], descending=True)
    )
    row = top.row(0, named=True)
    return row["worker_id"], row["name"], row["street_id"]


def pick(driver: Any, dropdown_id: str, value: str, text: str) -> None:
    """Choose an option of a Dash 4 dropdown (a popover with a search box), checking it took."""
    for _ in range(3):
        driver.find_element(By.ID, dropdown_id).click()
        search = wait(driver).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "input.dash-dropdown-search") or None
        )
        search[0].send_keys(text)
        time.sleep(0.5)  # let the list filter
        css = f"label.dash-dropdown-option:has(input[value='{value}'])"
        wait(driver).until(lambda d, c=css: d.find_elements(By.CSS_SELECTOR, c) or None)[0].click()
        time.sleep(0.3)
        if text in driver.find_element(By.ID, f"{dropdown_id}-value").text:
            return
    raise AssertionError(f"could not pick {value} in {dropdown_id}")


def _dot(driver: Any) -> dict[str, float] | None:
    rect: dict[str, float] | None = driver.execute_script(
        "var e = document.querySelector('path.wg-replay-dot');"
        "if (!e) return null; var r = e.getBoundingClientRect();"
        "return r.width > 0 ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null;"
    )
    return rect


def test_commander_replays_a_track_and_the_marker_moves(
    chrome: Any, server_url: str, module_db: Any, city_small: City, artifacts: Path
) -> None:
    wid, name, street = _busy_worker(module_db, "320102", city_small)
    login(chrome, server_url, "xuanwu")
    viewport(chrome, 1600, 1000)
    chrome.get(f"{server_url}/work/{street}")
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#work-kpis .kpi") or None)
    wait(chrome).until(lambda d: "km" in d.find_element(By.ID, "work-children").text or None)
    assert name in chrome.find_element(By.ID, "work-children").text  # activity, by name
    pick(chrome, "wtrk-worker", wid, name)
    wait(chrome).until(lambda d: "公里" in d.find_element(By.ID, "wtrk-summary").text or None)
    assert "轨迹点" in chrome.find_element(By.ID, "wtrk-summary").text
    wait(chrome).until(lambda d: _dot(d))
    time.sleep(0.5)
    start = _dot(chrome)
    clock0 = chrome.find_element(By.ID, "wtrk-clock").text
    shot(chrome, artifacts, "work-replay-start")
    # 5× (five track minutes per second): a 20-minute track plays for about 4 s
    chrome.find_element(By.CSS_SELECTOR, "#wtrk-speed input[value='5']").click()
    chrome.find_element(By.ID, "wtrk-play").click()
    assert start is not None
    wait(chrome).until(
        lambda d: (
            (p := _dot(d)) is not None and abs(p["x"] - start["x"]) + abs(p["y"] - start["y"]) > 3
        )
    )
    assert chrome.find_element(By.ID, "wtrk-clock").text != clock0
    assert chrome.find_element(By.ID, "wtrk-play").text == "暂停"
    # pause mid-track: the replay clock stands still
    chrome.find_element(By.ID, "wtrk-play").click()
    slider_max = chrome.execute_script(
        "return document.querySelector('#wtrk-slider [role=slider]').getAttribute('aria-valuemax')"
    )
    time.sleep(0.6)
    now = chrome.execute_script(
        "return document.querySelector('#wtrk-slider [role=slider]').getAttribute('aria-valuenow')"
    )
    assert float(now) < float(slider_max)  # paused before the end
    held = chrome.find_element(By.ID, "wtrk-clock").text
    time.sleep(0.8)
    assert chrome.find_element(By.ID, "wtrk-clock").text == held
    assert chrome.find_element(By.ID, "wtrk-play").text == "播放"
    shot(chrome, artifacts, "work-replay-paused")
    href = chrome.find_element(By.ID, "wtrk-export").get_attribute("href")
    assert href and href.endswith(f"/export/track/{wid}.csv?hours=2")


def test_leader_sees_clusters_and_counts_only(
    chrome: Any, server_url: str, city_small: City, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 1000)
    chrome.get(f"{server_url}/work")
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".wk-cluster") or None)
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#work-children tr") or None)
    time.sleep(1.0)
    shot(chrome, artifacts, "work-city-leader")
    text = chrome.find_element(By.TAG_NAME, "body").text
    assert "网格工作" in text and "今日巡查覆盖率" in text and "在线" in text
    assert "个人信息" in text  # the privacy note instead of the replay panel
    assert not chrome.find_elements(By.ID, "wtrk-worker")
    district = city_small.children(city_small.city_id)[0]
    chrome.get(f"{server_url}/work/{district}")
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".wk-cluster") or None)
    time.sleep(1.0)
    shot(chrome, artifacts, "work-district-leader")
    # the same page in English
    chrome.get(f"{server_url}/lang/en?next=/work/{district}")
    wait(chrome).until(
        lambda d: "Patrol coverage today" in d.find_element(By.TAG_NAME, "body").text
    )
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#work-children tr") or None)
    time.sleep(1.0)
    shot(chrome, artifacts, "work-district-leader-en")
    assert "Not patrolled today" in chrome.find_element(By.TAG_NAME, "body").text
    chrome.get(f"{server_url}/lang/zh-CN?next=/work")
