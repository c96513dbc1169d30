"""The wall as leaders use it: it tours by itself (areas, then the warnings, grid-work and
assessment views), a new red warning in its area takes the screen over until someone
acknowledges it, then the tour resumes. At 1920×1080 and 3840×2160, in Chinese.

The module's server runs with short dwells (``[wall] dwell_s``/``area_dwell_s`` 2 s) and a
1 s refresh, so a whole carousel passes in seconds. Waits are on conditions read afresh
(the root's classes, texts), never on an element a refresh replaces."""

from __future__ import annotations

import shutil
from collections.abc import Callable
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
    displayed,
    forget_session,
    login,
    shot,
    text,
    viewport,
    wait,
    wall_url,
)
from tests.browser.test_no_english_zh import ALLOWED, visible_words
from tests.clock import Clock
from tests.conftest import open_engine, settings_for

pytestmark = pytest.mark.browser

DISTRICT = "320102"  # the commander "xuanwu"'s district
VIEWS = {"warnings": "研判预警", "work": "网格工作", "assessment": "监督考核"}


@pytest.fixture(scope="module")
def browser_settings(
    redis_url: str, module_prefix: str, module_db: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """This module's server: a short tour, a quick refresh."""
    return settings_for(
        redis_url,
        module_prefix,
        module_db,
        tmp_path_factory.mktemp("wt"),
        wall={"dwell_s": 2.0, "area_dwell_s": 2.0},
        dashboard={"refresh_s": 1.0},
    )


def root(driver: Any) -> str:
    return attr(driver, "#wall-root", "class") or ""


def wait_view(driver: Any, view: str, seconds: float = 30) -> None:
    wait(driver, seconds).until(lambda d: f"wall-v-{view} " in root(d) + " ")


def keep(driver: Any, artifacts: Path, name: str) -> None:
    path = shot(driver, artifacts, name)
    out = artifacts.parents[0] / "walltour-shots"
    out.mkdir(exist_ok=True)
    shutil.copy(path, out / path.name)


def english(driver: Any) -> set[str]:
    return visible_words(driver) - ALLOWED


def red(engine: Any, live: Any, city: City, area: str, now: int) -> W.Warning:
    """A new red warning in ``area``, opened the way the engine opens one."""
    olds = W.warnings_from_frame(W.open_warnings(engine))
    finding = W.Finding(
        "surge", area, "red", f"surge:{area}:fire:{now}", ("I9",), {"category": "fire", "n": 9}
    )
    new, _, _ = W.update_open(olds, [finding], now, W.RuleConfig())
    W.persist(engine, new, [], [], now)
    W.republish(engine, live, city)
    return new[0]


def pause(driver: Any, paused: bool) -> None:
    """Hold (or resume) the tour in the browser, as a slow screenshot on a loaded machine
    would otherwise outlast the short dwell."""
    driver.execute_script(
        "window.dash_clientside.set_props('wall-tour-tick', {disabled: arguments[0]});", paused
    )


def hold_when(driver: Any, what: str, shown: Callable[[Any], bool | None]) -> None:
    """Wait until the tour shows what ``shown`` looks for (True), and hold it there.
    ``shown`` says False when the tour is elsewhere, None while it is on its way; a step
    already under way when the hold starts may still move on: then the next round."""
    for _ in range(4):
        wait(driver, 60).until(lambda d: shown(d) is True)
        pause(driver, True)
        if wait(driver, 20).until(lambda d: "off" if shown(d) is False else shown(d)) is True:
            return
        pause(driver, False)
    raise AssertionError(f"the tour never held {what}")


def hold(driver: Any, view: str) -> None:
    """Hold a carousel view with its own content (not the last view's)."""
    own = f"#wall-view.wall-view-{view}"

    def shown(d: Any) -> bool | None:
        if f"wall-v-{view} " not in root(d) + " ":
            return False
        return True if displayed(d, own) else None

    hold_when(driver, view, shown)


def settled_panorama(driver: Any, name: str) -> None:
    """Hold the panorama of the area ``name``, its panels and title showing it."""
    wait(driver).until(lambda d: count(d, "#wall-kpis .kpi") == 9)
    wait(driver).until(lambda d: count(d, ".wall .main-svg") >= 3)

    def shown(d: Any) -> bool | None:
        if "wall-v-panorama" not in root(d) or text(d, ".wall-kpi h3") != name:
            return False
        return True if text(d, "#wall-title").startswith(name + " ") else None

    hold_when(driver, name, shown)


SIZES = {"1080p": (1920, 1080), "4k": (3840, 2160)}


def fits(driver: Any) -> list[str]:
    """What is cut off in the shown view: the view itself overflowing, or a place name
    that does not fit its column (rule texts may end in "…", names never)."""
    got = driver.execute_script(
        "const v = document.getElementById('wall-view'), out = [];"
        "if (v.scrollHeight > v.clientHeight + 2) out.push('view ' + v.scrollHeight);"
        "for (const e of v.querySelectorAll('.name, .place'))"
        "  if (e.scrollWidth > e.clientWidth + 1) out.push(e.innerText);"
        "return out;"
    )
    return [str(x) for x in got]


def at_both_sizes(driver: Any, artifacts: Path, name: str) -> None:
    """Photograph what is held on screen at 1920×1080 and at 3840×2160 (the wall is sized
    in viewport units: the same layout, scaled), checking it fits at each."""
    for size, (w, h) in SIZES.items():
        viewport(driver, w, h)
        wait(driver, 10).until(lambda d, w=w: d.execute_script("return innerWidth") == w)
        if "wall-v-panorama" not in root(driver):
            assert not fits(driver), (size, fits(driver))
        keep(driver, artifacts, f"{name}-{size}")
    viewport(driver, *SIZES["1080p"])


def tour_pages(driver: Any, artifacts: Path) -> None:
    """The carousel shows each view in turn, in wall style, in Chinese."""
    for view, title in VIEWS.items():
        hold(driver, view)
        assert title in text(driver, "#wall-view .wall-view-head")
        wait(driver, 20).until(lambda d: count(d, "#wall-view .wall-big, #wall-view .wall-bar"))
        assert displayed(driver, "#wall-view") and not displayed(driver, "#wall-kpis")
        assert not english(driver), sorted(english(driver))
        at_both_sizes(driver, artifacts, f"wall-{view}")
        pause(driver, False)


def test_the_wall_tours_and_a_red_warning_takes_it_over(
    chrome: Any,
    server_url: str,
    wall_token: str,
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
    street = city_small.children(DISTRICT)[0]
    street_name = str(city_small.area(street)["name"])  # type: ignore[index]
    grid = city_small.children(street)[0]
    try:
        # a street wall on a kiosk token: the street, then the views, then round again
        viewport(chrome, 1920, 1080)
        chrome.get(wall_url(server_url, wall_token, f"/wall/{street}"))
        settled_panorama(chrome, street_name)
        keep(chrome, artifacts, "wall-panorama-1080p")
        pause(chrome, False)
        tour_pages(chrome, artifacts)
        wait_view(chrome, "panorama")

        # a new red warning in the wall's area takes the screen over: place, rule, since
        first = red(engine, live, city_small, grid, server_clock.now_ms)
        wait(chrome, 60).until(lambda d: "wall-takeover" in root(d))
        grid_name = str(city_small.area(grid)["name"])  # type: ignore[index]
        card = text(chrome, "#wall-take")
        assert "红色预警" in card and grid_name in card and "突增预警" in card and "起" in card
        # the map focuses the grid's street, coloured by warning level: the grid is red
        wait(chrome, 60).until(lambda d: street_name in text(d, "#wall-title"))
        wait(chrome, 60).until(lambda d: "预警等级" in text(d, "#wall-legend"))
        assert not displayed(chrome, "#wall-ack")  # a kiosk never acknowledges
        assert "签收" in text(chrome, "#wall-take-side")
        assert not english(chrome), sorted(english(chrome))
        at_both_sizes(chrome, artifacts, "wall-takeover")
        # acknowledged by the command centre in the warnings workflow: the tour resumes
        assert W.act(engine, first.warning_id, "acknowledge", "xuanwu", server_clock.now_ms)
        W.republish(engine, live, city_small)
        wait(chrome, 60).until(lambda d: "wall-takeover" not in root(d))
        # the tour goes on, and the area of the (still open) red warning is one of its stops
        wait(chrome, 60).until(lambda d: grid_name in text(d, "#wall-title"))
        # its long name still fits the head (a smaller title), clear of the clock and status
        wait(chrome, 10).until(
            lambda d: d.execute_script(
                "const e = document.getElementById('wall-title');"
                " return e.scrollWidth <= e.clientWidth + 1;"
            )
        )

        # loaded at 4K, a signed-in commander: a takeover acknowledged on the wall itself
        forget_session(chrome, server_url)
        login(chrome, server_url, "xuanwu")
        viewport(chrome, *SIZES["4k"])
        chrome.get(f"{server_url}/wall/{street}")
        settled_panorama(chrome, street_name)
        keep(chrome, artifacts, "wall-panorama-4k")
        pause(chrome, False)
        second = red(engine, live, city_small, street, server_clock.now_ms + 1)
        wait(chrome, 60).until(lambda d: "wall-takeover" in root(d))
        wait(chrome, 60).until(lambda d: displayed(d, "#wall-ack"))
        keep(chrome, artifacts, "wall-takeover-ack-4k")
        click(chrome, "#wall-ack")
        wait(chrome, 60).until(lambda d: "wall-takeover" not in root(d))
        row = W.warning_detail(engine, second.warning_id)
        assert row is not None and row["status"] == "acknowledged"
        assert row["acked_by"] == "xuanwu"
    finally:
        for w in W.warnings_from_frame(W.open_warnings(engine)):
            W.act(engine, w.warning_id, "dismiss", "test", server_clock.now_ms, note="cleanup")
        W.republish(engine, live, city_small)
        engine.dispose()
        r.close()
