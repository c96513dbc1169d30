"""A live dashboard on a real Redis + SQL with simulated data, and headless Chromium.

The server's clock starts at one calendar moment (``--moment``, default ``thu-10:00``; see
``tests/clock.py``) and runs from there, so what the pages show never depends on the
machine's clock. Pages refresh by replacing their elements, so the tests never hold an
element across a wait: they wait on conditions that find and read the page afresh each
time (:func:`wait`, :func:`text`, :func:`click`, … below).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts, wall_tokens
from pipelines.city.geography import City, demo_city
from tests.clock import Clock, named
from tests.conftest import ARTIFACTS, open_engine, settings_for
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
    ("admin", "admin", "320100"),  # the audit log only
)


# ------------------------------------------------------------------ waiting on the page


class Wait:
    """WebDriverWait that retries a condition whose element was replaced meanwhile, and
    saves a screenshot and the browser log when it times out."""

    def __init__(self, driver: Any, seconds: float, ignore: tuple[type, ...] = ()) -> None:
        self.driver = driver
        self.inner = WebDriverWait(
            driver,
            seconds,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException, *ignore),
        )

    def until(self, condition: Callable[[Any], Any]) -> Any:
        try:
            return self.inner.until(condition)
        except TimeoutException:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%H%M%S")
            self.driver.save_screenshot(str(ARTIFACTS / f"timeout-{stamp}.png"))
            log = "\n".join(str(e) for e in self.driver.get_log("browser"))
            (ARTIFACTS / f"timeout-{stamp}.log").write_text(f"{self.driver.current_url}\n{log}")
            raise


# A JS expression: an AG Grid's rendered rows (``#id``), each its cells in column order
# (pinned left, centre, pinned right: a row is split across those containers) as
# [row element, [cell elements]], in row order.
GRID_ROWS = """
((id) => {
  const rows = new Map();
  for (const part of ['ag-pinned-left-cols-container', 'ag-center-cols-container',
                      'ag-pinned-right-cols-container'])
    for (const tr of document.querySelectorAll(`#${id} .${part} .ag-row`)) {
      const i = +tr.getAttribute('row-index');
      if (!rows.has(i)) rows.set(i, [tr, []]);
      rows.get(i)[1].push(...tr.querySelectorAll('.ag-cell'));
    }
  return [...rows.keys()].sort((a, b) => a - b).map(i => rows.get(i));
})
""".strip()  # (after a "return", a leading line break would end the statement)


def wait(driver: Any, seconds: float = 60) -> Wait:
    return Wait(driver, seconds)


def text(driver: Any, css: str) -> str:
    """The visible text of the first element matching ``css`` now ("" when none), read in
    the page in one step: never a handle that a refresh can make stale."""
    got = driver.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css
    )
    return str(got or "")


def texts(driver: Any, css: str) -> list[str]:
    """The visible texts of every element matching ``css`` now."""
    got = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);", css
    )
    return [str(t) for t in got]


def count(driver: Any, css: str) -> int:
    return int(driver.execute_script("return document.querySelectorAll(arguments[0]).length;", css))


def attr(driver: Any, css: str, name: str) -> str | None:
    """An attribute of the first element matching ``css`` now (None when none)."""
    got = driver.execute_script(
        "var e = document.querySelector(arguments[0]);"
        " return e ? e.getAttribute(arguments[1]) : null;",
        css,
        name,
    )
    return None if got is None else str(got)


def displayed(driver: Any, css: str) -> bool:
    """Whether the first element matching ``css`` is rendered (has a box) now."""
    return bool(
        driver.execute_script(
            "var e = document.querySelector(arguments[0]);"
            " return !!e && e.getClientRects().length > 0"
            " && getComputedStyle(e).visibility !== 'hidden';",
            css,
        )
    )


def wait_text(driver: Any, css: str, needle: str, seconds: float = 60) -> str:
    """Wait until the text of ``css`` contains ``needle``; returns that text."""

    def has(d: Any) -> str | None:
        got = text(d, css)
        return got if needle in got else None

    return str(wait(driver, seconds).until(has))


def _act(driver: Any, css: str, index: int, seconds: float, act: Callable[[Any], None]) -> None:
    """Find the element afresh and act on it, retrying while it is missing, replaced by a
    refresh, or covered for a moment."""

    def attempt(d: Any) -> bool | None:
        found = d.find_elements(By.CSS_SELECTOR, css)
        if len(found) <= index:
            return None
        act(found[index])
        return True

    busy = (ElementClickInterceptedException, ElementNotInteractableException)
    Wait(driver, seconds, busy).until(attempt)


def click(driver: Any, css: str, index: int = 0, seconds: float = 60) -> None:
    """Click the ``index``-th element matching ``css`` (found afresh on every try)."""
    _act(driver, css, index, seconds, lambda e: e.click())


def hover(driver: Any, css: str, index: int = 0, seconds: float = 60) -> None:
    """Move the mouse onto the ``index``-th element matching ``css``."""
    _act(driver, css, index, seconds, lambda e: ActionChains(driver).move_to_element(e).perform())


def type_into(driver: Any, css: str, keys: str, seconds: float = 60) -> None:
    _act(driver, css, 0, seconds, lambda e: e.send_keys(keys))


def login(driver: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the real form. A refusal fails at once with the form's own words;
    an expired form (its sign-in cookie replaced meanwhile) is filled in again once, as a
    person would."""
    for attempt in (1, 2):
        driver.get(base + "/login")
        type_into(driver, "#username", username)
        type_into(driver, "#password", password)
        click(driver, "#login-submit")
        said = wait(driver, 60).until(
            lambda d: "signed in" if "/login" not in d.current_url else login_error(d)
        )
        if said == "signed in":
            return
        if attempt == 2 or "会话已失效" not in said:
            raise AssertionError(f"sign-in as {username} refused: {said}")


def login_error(driver: Any) -> str:
    found = driver.find_elements(By.ID, "login-error")
    return str(found[0].text).strip() if found else ""


def forget_session(driver: Any, base: str) -> None:
    """Leave the page first (its scripts stop and none of its requests can bring a cookie
    back), then drop this browser's cookies."""
    driver.get(base + "/healthz")
    driver.delete_all_cookies()


# ------------------------------------------------------------------ the live server


def wall_url(base: str, token: str, path: str = "/wall") -> str:
    sep = "&" if "?" in path else "?"
    return f"{base}{path}{sep}token={token}"


@pytest.fixture(scope="module")
def server_clock(request: pytest.FixtureRequest) -> Clock:
    """The live server's clock: from the chosen calendar moment on, at the machine's pace."""
    return Clock(named(request.config.getoption("moment")).ms, running=True)


@pytest.fixture(scope="module")
def wall_token(server_url: str, module_db: Any, city_small: City, server_clock: Clock) -> str:
    """A kiosk credential for the wall screen (a real token, stored hashed)."""
    engine = open_engine(module_db)
    now = server_clock.now_ms
    if accounts.get_user(engine, "wall1") is None:
        accounts.create_user(engine, city_small, "wall1", "wall", "320100", now_ms=now)
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=now)
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
    redis_url: str, module_db: Any, city_small: City, browser_settings: Any, server_clock: Clock
) -> Iterator[str]:
    settings = browser_settings
    r = redis.Redis.from_url(redis_url)
    engine = open_engine(module_db)
    fill(settings, city_small, r, engine, server_clock.now_ms, minutes=20)
    now = server_clock.now_ms
    for name, role, scope in USERS:
        accounts.create_user(engine, city_small, name, role, scope, password=PASSWORD, now_ms=now)
    app = create_app(settings, city=city_small, r=r, clock=server_clock)
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
