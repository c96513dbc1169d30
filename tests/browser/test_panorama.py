"""What a person sees: the panorama, drill-down by click, breadcrumbs, the wall screen."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import login, shot, viewport, wall_url
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.browser


class Wait:
    """WebDriverWait that saves a screenshot and the browser log when it times out."""

    def __init__(self, driver: Any, seconds: float) -> None:
        self.driver = driver
        self.inner = WebDriverWait(
            driver,
            seconds,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),
        )

    def until(self, condition: Any) -> Any:
        try:
            return self.inner.until(condition)
        except TimeoutException:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%H%M%S")
            self.driver.save_screenshot(str(ARTIFACTS / f"timeout-{stamp}.png"))
            log = "\n".join(str(e) for e in self.driver.get_log("browser"))
            (ARTIFACTS / f"timeout-{stamp}.log").write_text(f"{self.driver.current_url}\n{log}")
            raise


def wait(driver: Any, seconds: float = 60) -> Wait:
    return Wait(driver, seconds)


def map_paths(driver: Any, map_id: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{map_id} path.leaflet-interactive")


def fills(driver: Any, map_id: str) -> list[str]:
    """Fill colours of the map's shapes, read in one go (shapes re-render on refresh)."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(p => p.getAttribute('fill'))",
            f"#{map_id} path.leaflet-interactive",
        )
    )


def test_panorama_loads_with_live_values(chrome: Any, server_url: str, artifacts: Path) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: len(map_paths(d, "pan-map")) == 11)
    wait(chrome).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#pan-kpis .kpi")) == 9)
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pan-trend .main-svg"))
    kpi = chrome.find_element(By.CSS_SELECTOR, "#pan-kpis .kpi .value").text
    assert re.fullmatch(r"[\d,]+", kpi), kpi
    # the map gets coloured by live values (not all one colour)
    wait(chrome).until(
        lambda d: len({p.get_attribute("fill") for p in map_paths(d, "pan-map")}) >= 2
    )
    assert "全景网格" in chrome.find_element(By.CSS_SELECTOR, ".wg-nav").text
    shot(chrome, artifacts, "panorama-city")


def test_click_drills_down_and_breadcrumb_goes_back(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: len(map_paths(d, "pan-map")) == 11)
    paths = map_paths(chrome, "pan-map")
    biggest = max(paths, key=lambda p: p.size["width"] * p.size["height"])
    chrome.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", biggest
    )
    wait(chrome).until(EC.url_matches(r"/area/3201\d\d$"))
    district = chrome.current_url.rsplit("/", 1)[1]
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pan-crumbs a"))
    wait(chrome).until(lambda d: 0 < len(map_paths(d, "pan-map")) != 11)
    crumbs = chrome.find_element(By.ID, "pan-crumbs").text
    assert "南京市" in crumbs
    shot(chrome, artifacts, f"panorama-{district}")
    chrome.find_element(By.CSS_SELECTOR, "#pan-crumbs a").click()
    wait(chrome).until(EC.url_matches(r"/area/320100$"))
    wait(chrome).until(lambda d: len(map_paths(d, "pan-map")) == 11)


def test_street_level_shows_workers_and_incidents(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/area/320102-001")
    wait(chrome).until(lambda d: len(map_paths(d, "pan-map")) > 3)
    shot(chrome, artifacts, "panorama-street")


def test_unknown_area_and_address_are_friendly(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    chrome.get(server_url + "/area/no-such-place")
    panel = wait(chrome).until(EC.presence_of_element_located((By.ID, "notfound")))
    assert "未找到该区域" in panel.text and "返回全市" in panel.text
    chrome.get(server_url + "/no/such/page")
    panel = wait(chrome).until(EC.presence_of_element_located((By.ID, "notfound")))
    assert "页面不存在" in panel.text
    assert "Traceback" not in chrome.page_source
    shot(chrome, artifacts, "not-found")


def test_language_switch(chrome: Any, server_url: str) -> None:
    login(chrome, server_url, "leader")
    chrome.get(server_url + "/area/320102")
    link = wait(chrome).until(EC.element_to_be_clickable((By.ID, "shell-lang-link")))
    link.click()
    wait(chrome).until(lambda d: "Panorama" in d.find_element(By.CSS_SELECTOR, ".wg-nav").text)
    assert chrome.current_url.endswith("/area/320102")
    chrome.find_element(By.ID, "shell-lang-link").click()
    wait(chrome).until(lambda d: "全景网格" in d.find_element(By.CSS_SELECTOR, ".wg-nav").text)


@pytest.mark.parametrize("width, height", [(1920, 1080), (3840, 2160)])
def test_wall_fills_the_screen(
    chrome: Any, server_url: str, artifacts: Path, width: int, height: int, wall_token: str
) -> None:
    viewport(chrome, width, height)
    chrome.get(wall_url(server_url, wall_token))
    wait(chrome).until(lambda d: len(map_paths(d, "wall-map")) == 11)
    wait(chrome).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wall-kpis .kpi")) == 9)
    wait(chrome).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".wall .main-svg")) >= 3)
    wait(chrome).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#wall-ticker span"))
    clock = (By.ID, "wall-clock")
    wait(chrome).until(lambda d: re.search(r"\d\d:\d\d:\d\d", d.find_element(*clock).text))
    dims = chrome.execute_script(
        "const e = document.documentElement, r = document.getElementById('wall-root')"
        ".getBoundingClientRect();"
        "return [e.scrollWidth, e.scrollHeight, innerWidth, innerHeight, r.width, r.height,"
        " document.body.scrollWidth, document.body.scrollHeight];"
    )
    sw, sh, iw, ih, rw, rh, bw, bh = dims
    assert (iw, ih) == (width, height)
    assert sw <= iw and sh <= ih and bw <= iw and bh <= ih, dims  # no scrollbars
    assert (round(rw), round(rh)) == (width, height), dims  # fills the screen exactly
    # every panel is filled and nothing overflows its panel
    panels = chrome.execute_script(
        "return [...document.querySelectorAll('.wall .wg-panel')].map(p => {"
        " const r = p.getBoundingClientRect();"
        " return [r.width, r.height, p.innerText.trim().length, p.querySelectorAll('svg').length,"
        "         p.scrollHeight - p.clientHeight]; });"
    )
    assert len(panels) == 6
    for w, h, text, svgs, overflow in panels:
        assert w > width * 0.15 and h > height * 0.15
        assert text > 0 or svgs > 0
        assert overflow <= 2, panels
    shot(chrome, artifacts, f"wall-{width}x{height}")


def test_wall_red_warning_banner_comes_and_goes(
    chrome: Any, server_url: str, artifacts: Path, warnings_writer: Any, wall_token: str
) -> None:
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token))
    wait(chrome).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#wall-kpis .kpi")) == 9)
    assert not chrome.find_elements(By.CSS_SELECTOR, ".wall-banner")
    red = {"id": "W1", "rule": "fusion", "area_id": "320102", "level": "red", "status": "new"}
    red |= {"first_ms": 1, "last_ms": 2}
    warnings_writer(
        {"320100": {"red": 1, "orange": 2}, "320102": {"red": 1}}, {"W1": orjson.dumps(red)}
    )
    banner = wait(chrome, 20).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, ".wall-banner"))
    )
    wait(chrome, 20).until(
        lambda d: "玄武区" in d.find_element(By.CSS_SELECTOR, ".wall-banner").text
    )
    assert "红色预警" in banner.text and "多源融合" in banner.text
    shot(chrome, artifacts, "wall-red-banner")
    warnings_writer({})  # acknowledged elsewhere: the banner goes
    wait(chrome, 20).until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".wall-banner"))


def test_wall_auto_tour_rotates(chrome: Any, server_url: str, wall_token: str) -> None:
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token, "/wall?tour=5"))
    title = wait(chrome).until(EC.presence_of_element_located((By.ID, "wall-title")))
    wait(chrome).until(lambda d: d.find_element(By.ID, "wall-title").text.startswith("南京市"))
    wait(chrome, 30).until(
        lambda d: not d.find_element(By.ID, "wall-title").text.startswith("南京市")
    )
    assert "区" in title.text  # now showing a district, no interaction needed


def test_gcj02_display_conversion(chrome: Any, server_url: str) -> None:
    """For Chinese tiles (GCJ-02) the map shifts our WGS-84 data for display only."""
    login(chrome, server_url, "leader")
    chrome.get(server_url + "/area/320102")
    wait(chrome).until(lambda d: d.execute_script("return !!(window.wangge && wangge.map)"))
    # Tiananmen: WGS-84 (116.397428, 39.90923) is GCJ-02 ≈ (116.403674, 39.910633)
    lat, lng = chrome.execute_script(
        "const p = wangge.map.gcj02([116.397428, 39.90923]); return [p.lat, p.lng];"
    )
    assert abs(lat - 39.910633) < 2e-4 and abs(lng - 116.403674) < 2e-4
    # outside China the offset is the textbook formula's (~hundreds of metres), never huge
    lat2, lng2 = chrome.execute_script(
        "const p = wangge.map.gcj02([118.78, 32.04]); return [p.lat, p.lng];"
    )
    assert 0.0005 < abs(lng2 - 118.78) < 0.01 and 0.0005 < abs(lat2 - 32.04) < 0.01
