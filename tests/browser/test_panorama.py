"""What a person sees: the panorama, drill-down by click, breadcrumbs, the wall screen."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from selenium.webdriver.support import expected_conditions as EC

from tests.browser.conftest import (
    click,
    count,
    login,
    shot,
    text,
    viewport,
    wait,
    wait_text,
    wall_url,
)
from tests.clock import Clock, named

pytestmark = pytest.mark.browser


def map_paths(driver: Any, map_id: str) -> int:
    """How many shapes the map draws now."""
    return count(driver, f"#{map_id} path.leaflet-interactive")


def fills(driver: Any, map_id: str) -> list[str]:
    """Fill colours of the map's shapes, read in one go (shapes re-render on refresh)."""
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(p => p.getAttribute('fill'))",
            f"#{map_id} path.leaflet-interactive",
        )
    )


# Click the largest shape of a map (found and measured in the page in one step).
CLICK_BIGGEST = """
const paths = [...document.querySelectorAll(arguments[0])];
if (!paths.length) return false;
const area = p => { const r = p.getBoundingClientRect(); return r.width * r.height; };
const big = paths.reduce((a, b) => (area(b) > area(a) ? b : a));
big.dispatchEvent(new MouseEvent('click', {bubbles: true}));
return true;
"""


def test_panorama_loads_with_live_values(chrome: Any, server_url: str, artifacts: Path) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: map_paths(d, "pan-map") == 11)
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    wait(chrome).until(lambda d: count(d, "#pan-trend .main-svg"))
    kpi = text(chrome, "#pan-kpis .kpi .value")
    assert re.fullmatch(r"[\d,]+", kpi), kpi
    # the map gets coloured by live values (not all one colour)
    wait(chrome).until(lambda d: len(set(fills(d, "pan-map"))) >= 2)
    assert "全景网格" in text(chrome, ".wg-nav")
    shot(chrome, artifacts, "panorama-city")


def test_click_drills_down_and_breadcrumb_goes_back(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: map_paths(d, "pan-map") == 11)
    wait(chrome).until(
        lambda d: d.execute_script(CLICK_BIGGEST, "#pan-map path.leaflet-interactive")
    )
    wait(chrome).until(EC.url_matches(r"/area/3201\d\d$"))
    district = chrome.current_url.rsplit("/", 1)[1]
    wait(chrome).until(lambda d: count(d, "#pan-crumbs a"))
    wait(chrome).until(lambda d: 0 < map_paths(d, "pan-map") != 11)
    assert "南京市" in text(chrome, "#pan-crumbs")
    shot(chrome, artifacts, f"panorama-{district}")
    click(chrome, "#pan-crumbs a")
    wait(chrome).until(EC.url_matches(r"/area/320100$"))
    wait(chrome).until(lambda d: map_paths(d, "pan-map") == 11)


def test_street_level_shows_workers_and_incidents(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/area/320102-001")
    wait(chrome).until(lambda d: map_paths(d, "pan-map") > 3)
    shot(chrome, artifacts, "panorama-street")


def test_unknown_area_and_address_are_friendly(
    chrome: Any, server_url: str, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    chrome.get(server_url + "/area/no-such-place")
    assert "返回全市" in wait_text(chrome, "#notfound", "未找到该区域")
    chrome.get(server_url + "/no/such/page")
    wait_text(chrome, "#notfound", "页面不存在")
    assert "Traceback" not in chrome.page_source
    shot(chrome, artifacts, "not-found")


def test_language_switch(chrome: Any, server_url: str) -> None:
    login(chrome, server_url, "leader")
    chrome.get(server_url + "/area/320102")
    click(chrome, "#shell-lang-link")
    wait_text(chrome, ".wg-nav", "Panorama")
    assert chrome.current_url.endswith("/area/320102")
    click(chrome, "#shell-lang-link")
    wait_text(chrome, ".wg-nav", "全景网格")


@pytest.mark.parametrize("width, height", [(1920, 1080), (3840, 2160)])
def test_wall_fills_the_screen(
    chrome: Any, server_url: str, artifacts: Path, width: int, height: int, wall_token: str
) -> None:
    viewport(chrome, width, height)
    chrome.get(wall_url(server_url, wall_token))
    wait(chrome).until(lambda d: map_paths(d, "wall-map") == 11)
    wait(chrome).until(lambda d: count(d, "#wall-kpis .kpi") == 9)
    wait(chrome).until(lambda d: count(d, ".wall .main-svg") >= 3)
    wait(chrome).until(lambda d: count(d, "#wall-ticker span"))
    wait(chrome).until(lambda d: re.search(r"\d\d:\d\d:\d\d", text(d, "#wall-clock")))
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
    for w, h, chars, svgs, overflow in panels:
        assert w > width * 0.15 and h > height * 0.15
        assert chars > 0 or svgs > 0
        assert overflow <= 2, panels
    shot(chrome, artifacts, f"wall-{width}x{height}")


WEEKDAYS_ZH = "一二三四五六日"


def _wall_words(ms: int) -> tuple[str, str]:
    """What a wall shows at ``ms``: its clock (HH:MM:SS) and date, in Nanjing's time."""
    at = datetime.fromtimestamp(ms / 1000, ZoneInfo("Asia/Shanghai"))
    return at.strftime("%H:%M:%S"), f"{at:%Y年%m月%d日}星期{WEEKDAYS_ZH[at.weekday()]}"


def test_the_wall_clock_keeps_the_servers_time(
    chrome: Any, server_url: str, wall_token: str, server_clock: Clock
) -> None:
    """The wall's clock and date are the server's (the clock the data's "today" is read
    by), not the wall PC's: this server's clock runs from a named moment, not from the
    time of the machine the browser runs on."""
    browser_ms = chrome.execute_script("return Date.now();")
    assert abs(browser_ms - server_clock.now_ms) > 60_000  # the test can tell them apart
    chrome.get(wall_url(server_url, wall_token))

    def agrees(d: Any) -> bool:
        before = server_clock.now_ms
        shown = (text(d, "#wall-clock"), text(d, "#wall-date"))
        after = server_clock.now_ms
        # the server's time while it was read, give or take the browser's second ticks
        return any(shown == _wall_words(ms) for ms in range(before - 2000, after + 1000, 1000))

    wait(chrome).until(agrees)


def test_wall_red_warning_banner_comes_and_goes(
    chrome: Any, server_url: str, artifacts: Path, warnings_writer: Any, wall_token: str
) -> None:
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token))
    wait(chrome).until(lambda d: count(d, "#wall-kpis .kpi") == 9)
    assert not count(chrome, ".wall-banner")
    red = {"id": "W1", "rule": "fusion", "area_id": "320102", "level": "red", "status": "new"}
    red |= {"first_ms": 1, "last_ms": 2}
    warnings_writer(
        {"320100": {"red": 1, "orange": 2}, "320102": {"red": 1}}, {"W1": orjson.dumps(red)}
    )
    banner = wait_text(chrome, ".wall-banner", "玄武区", seconds=20)
    assert "红色预警" in banner and "多源融合" in banner
    shot(chrome, artifacts, "wall-red-banner")
    warnings_writer({})  # acknowledged elsewhere: the banner goes
    wait(chrome, 20).until(lambda d: not count(d, ".wall-banner"))


def test_wall_auto_tour_rotates(chrome: Any, server_url: str, wall_token: str) -> None:
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token, "/wall?tour=5"))
    wait(chrome).until(lambda d: text(d, "#wall-title").startswith("南京市"))
    title = wait(chrome, 30).until(
        lambda d: (t := text(d, "#wall-title")) and not t.startswith("南京市") and t
    )
    assert "区" in title  # now showing a district, no interaction needed


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


# ------------------------------------------------------------------ the time machine
# A shared ``/?at=`` link shows the past, marked as such, with values that differ from
# live; play steps the moment on; bad values say so; the wall takes ``?at=`` too.


def reports_kpi(driver: Any) -> str:
    """The first KPI tile (reports today) as shown now."""
    return text(driver, "#pan-kpis .kpi .value")


def test_a_past_link_shows_the_past_and_play_steps_on(
    chrome: Any, server_url: str, artifacts: Path, request: pytest.FixtureRequest
) -> None:
    # The server holds the 20 minutes before its moment (09:40–10:00 on the default
    # moment); 15 minutes before it, a quarter of today's reports had come in.
    moment = named(request.config.getoption("moment"))
    past = moment.local.replace(second=0, microsecond=0) - timedelta(minutes=15)
    at = past.strftime("%Y-%m-%dT%H:%M")
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 900)
    chrome.get(server_url + "/")
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    live = reports_kpi(chrome)
    assert "历史回看" not in text(chrome, ".tm-bar")  # live: no past mark

    chrome.get(server_url + f"/?at={at}")
    mark = wait_text(chrome, "#pan-tm-mark", past.strftime("%Y-%m-%d %H:%M"))
    assert "历史回看" in mark
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    wait(chrome).until(lambda d: reports_kpi(d) != live)
    then = int(reports_kpi(chrome).replace(",", ""))
    assert then < int(live.replace(",", ""))  # fewer reports by then than by now
    assert "返回实时" in text(chrome, "#pan-tm-live")
    shot(chrome, artifacts, "time-machine-past")

    # play: the moment moves on (a minute of city time per second at 60×)
    click(chrome, "#pan-tm-play")
    wait(chrome).until(lambda d: past.strftime("%H:%M") not in text(d, "#pan-tm-mark"))
    assert "at=" in chrome.current_url and at not in chrome.current_url
    click(chrome, "#pan-tm-play")  # pause

    # a bad value: said in words, and live is shown
    chrome.get(server_url + "/?at=yesterday-ish")
    wait_text(chrome, ".tm-problem", "yesterday-ish")
    wait(chrome).until(lambda d: count(d, "#pan-kpis .kpi") == 9)
    # the settled page keeps the address and its note (drawing the bar is not a "go")
    assert "at=yesterday-ish" in chrome.current_url
    assert "yesterday-ish" in text(chrome, ".tm-problem")


def test_the_wall_shows_a_past_moment_marked(
    chrome: Any, server_url: str, wall_token: str, request: pytest.FixtureRequest
) -> None:
    moment = named(request.config.getoption("moment"))
    past = moment.local.replace(second=0, microsecond=0) - timedelta(minutes=15)
    at = past.strftime("%Y-%m-%dT%H:%M")
    viewport(chrome, 1920, 1080)
    chrome.get(wall_url(server_url, wall_token, f"/wall?at={at}"))
    wait_text(chrome, "#wall-tm-mark", past.strftime("%Y-%m-%d %H:%M"))
    wait_text(chrome, "#wall-stale", past.strftime("%H:%M"))  # the past, not live freshness
    chrome.get(wall_url(server_url, wall_token))
    wait(chrome).until(lambda d: count(d, "#wall-kpis .kpi") == 9)
    assert not text(chrome, "#wall-tm-mark")  # live: no past mark
