"""A live dashboard on a real Redis + SQL with simulated data, and headless Chromium."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts
from pipelines.city.geography import City, demo_city
from tests.conftest import open_engine, settings_for
from tests.integration.test_dashboard import fill

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--lang=zh-CN",
)


PASSWORD = "correct-horse-battery"
USERS = (
    ("leader", "city_leader", "320100"),
    ("xuanwu", "district_commander", "320102"),
    ("sup", "supervisor", "320102"),  # assessment: scorecards and exports for its district
)


def login(driver: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the real form (skipped when already signed in as that user)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)


def wall_url(base: str, token: str, path: str = "/wall") -> str:
    sep = "&" if "?" in path else "?"
    return f"{base}{path}{sep}token={token}"


@pytest.fixture(scope="module")
def wall_token(server_url: str, module_db: Any, city_small: City) -> str:
    """A kiosk credential for the wall screen (a real token, stored hashed)."""
    engine = open_engine(module_db)
    now = int(time.time() * 1000)
    if accounts.get_user(engine, "wall1") is None:
        accounts.create_user(engine, city_small, "wall1", "wall", "320100", now_ms=now)
    token = accounts.issue_wall_token(engine, "wall1", 30, now_ms=now)
    engine.dispose()
    return token


@pytest.fixture(scope="session")
def city_small() -> City:
    return demo_city(2026, n_grids=400)


@pytest.fixture(scope="module")
def browser_settings(
    redis_url: str, module_prefix: str, module_db: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    return settings_for(redis_url, module_prefix, module_db, tmp_path_factory.mktemp("b"))


@pytest.fixture
def warnings_writer(redis_url: str, browser_settings: Any) -> Iterator[Any]:
    """Writes open-warning counts the way the early-warning engine does."""
    from pipelines.spine.runner import live_state

    r = redis.Redis.from_url(redis_url)
    live = live_state(r, browser_settings)
    yield live.set_warnings
    live.set_warnings({}, {})
    r.close()


@pytest.fixture(scope="module")
def server_url(
    redis_url: str, module_db: Any, city_small: City, browser_settings: Any
) -> Iterator[str]:
    settings = browser_settings
    r = redis.Redis.from_url(redis_url)
    engine = open_engine(module_db)
    fill(settings, city_small, r, engine, minutes=20)
    now = int(time.time() * 1000)
    for name, role, scope in USERS:
        accounts.create_user(engine, city_small, name, role, scope, password=PASSWORD, now_ms=now)
    app = create_app(settings, city=city_small, r=r)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    engine.dispose()
    r.close()


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def shot(driver: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
