"""Empty, sparse and fair, as a person sees it: the assessment table fills the screen, thin
cells say 样本不足 and are never banded, unranked rows come last and grey, the range picker is
dark and compact, a clicked row keeps the band colours readable; the panorama's charts and
lists show 暂无数据 when there is nothing, and the city map names its water."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines import assessment as S
from pipelines.city.geography import City
from tests.browser.conftest import GRID_ROWS, click, count, login, shot, viewport, wait
from tests.clock import Clock
from tests.conftest import open_engine
from tests.history import make_history

pytestmark = [pytest.mark.browser, pytest.mark.screens]

TAG = os.environ.get("WG_SHOT_TAG", "after")  # "before" when shooting the old code


@pytest.fixture(scope="module")
def history(module_db: Any, city_small: City, server_clock: Clock) -> S.Period:
    """Two months of history; returns last month."""
    today = server_clock.local().date()
    this = S.month_period(today.year, today.month)
    last = this.previous()
    start = last.previous()
    engine = open_engine(module_db)
    from tests.history import load

    days = (today - start.first).days
    load(engine, make_history(city_small, start.start_ms, days, 6000, 300, seed=5, prefix="F"))
    engine.dispose()
    return last


CELLS = f"""
return {GRID_ROWS}('asm-table')
  .map(([tr, tds]) => ({{...Object.fromEntries(tds.map(td => [
      td.getAttribute('col-id'),
      {{text: td.innerText.trim(), bg: getComputedStyle(td).backgroundColor,
       color: getComputedStyle(td).color}}])), _grey: tr.classList.contains('asm-unranked')}}));
"""


def cells(d: Any) -> list[dict[str, Any]]:
    return list(d.execute_script(CELLS) or [])


def test_assessment_screens(
    chrome: Any, server_url: str, history: S.Period, city_small: City, artifacts: Path
) -> None:
    d = chrome
    viewport(d, 1920, 1080)
    login(d, server_url, "sup")
    d.get(f"{server_url}/assessment?level=grid&period={history.key}&area=320102")
    wait(d).until(lambda d: len(cells(d)) >= 5)
    shot(d, artifacts, f"fair-asm-grids-{TAG}")
    # a clicked score cell (the row gets the focus): the band colours stay
    click(d, "#asm-table .ag-row[row-index='0'] [col-id=score]")
    shot(d, artifacts, f"fair-asm-selected-{TAG}")
    d.get(f"{server_url}/assessment?level=street&period={history.key}&area=320102")
    wait(d).until(lambda d: len(cells(d)) >= 3)
    click(d, "#asm-kind input[value=range]")
    wait(d).until(lambda d: ".." in d.current_url)
    click(d, ".asm-range .dash-datepicker-input")
    wait(d).until(lambda d: count(d, ".dash-datepicker-content") > 0)
    shot(d, artifacts, f"fair-asm-range-{TAG}")
    if TAG == "before":
        return
    # the range picker is compact (not a 1,000-px box) and dark, its text light
    box = d.execute_script(
        "const w = document.querySelector('.asm-range');"
        "const i = document.querySelector('.asm-range .dash-datepicker-input');"
        "return [w.getBoundingClientRect().width, getComputedStyle(w).backgroundColor,"
        " getComputedStyle(i).color];"
    )
    outer = d.execute_script(
        "return document.querySelector('.asm-toolbar .dash-datepicker')"
        ".getBoundingClientRect().width;"
    )
    assert outer < 400, outer
    assert box[0] < 400 and box[1] == "rgb(12, 36, 64)" and box[2] == "rgb(216, 233, 255)", box
    # the open calendar speaks Chinese: weekday and month names, no English left
    calendar = d.execute_script(
        "return document.querySelector('.dash-datepicker-content').innerText;"
    )
    assert "一" in calendar and "日" in calendar, calendar
    assert not re.search(r"[A-Za-z]", calendar), calendar


def test_thin_cells_are_words_never_banded_and_unranked_last(
    chrome: Any, server_url: str, history: S.Period, city_small: City, artifacts: Path
) -> None:
    if TAG == "before":
        pytest.skip("shooting the old code")
    d = chrome
    viewport(d, 1920, 1080)
    login(d, server_url, "sup")
    d.get(f"{server_url}/assessment?level=grid&period={history.key}&area=320102")
    wait(d).until(lambda d: len(cells(d)) >= 5)
    rows = cells(d)
    words = {S.gap_text(k, "zh-CN") for k in S.GAPS}
    seen_gap = False
    ranked_done = False
    for r in rows:
        unranked = r["rank"]["text"] == S.gap_text("rank", "zh-CN")
        assert unranked == r["_grey"]  # greyed exactly when unranked
        if unranked:
            ranked_done = True
        else:
            assert not ranked_done, "a ranked row after an unranked one"
        for col in [*S.METRIC_IDS, "score"]:
            cell = r.get(col)
            if cell and cell["text"] in words:
                seen_gap = True
                assert cell["bg"] in ("rgba(0, 0, 0, 0)", "transparent"), (col, cell)
            assert cell is None or cell["text"] != "", (col, r)  # never a blank cell
    assert seen_gap  # this sparse street has thin cells
    # a single day in English: most grids have too few reports to be ranked
    day = history.last.isoformat()
    d.get(f"{server_url}/lang/en")  # the language cookie (reset below)
    d.get(f"{server_url}/assessment?level=grid&period={day}&area=320102")
    wait(d).until(lambda d: len(cells(d)) >= 5 and "Too few" in str(cells(d)))
    rows = cells(d)
    unranked = [r for r in rows if r["rank"]["text"] == "Unranked"]
    assert unranked and all(r["_grey"] for r in unranked)
    assert rows[-len(unranked) :] == unranked  # listed after the ranked ones
    assert all(r["score"]["text"] == "Not enough data" for r in unranked)
    shot(d, artifacts, "fair-asm-day-en")
    assert "level=grid" in d.current_url and day in d.current_url
    # the table fills the screen below the toolbar (no half-empty page)
    bottom = d.execute_script(
        "return document.querySelector('#asm-table').getBoundingClientRect().bottom;"
    )
    assert bottom > 1080 * 0.85, bottom
    d.get(f"{server_url}/lang/zh-CN")


def test_panorama_screens(chrome: Any, server_url: str, city_small: City, artifacts: Path) -> None:
    d = chrome
    viewport(d, 1920, 1080)
    login(d, server_url, "leader")
    d.get(server_url + "/")
    wait(d).until(lambda d: count(d, "#pan-map path.leaflet-interactive") >= 11)
    wait(d).until(lambda d: count(d, "#pan-trend .main-svg"))
    shot(d, artifacts, f"fair-panorama-city-{TAG}")
    quiet = city_small.grids["grid_id"][0]
    d.get(f"{server_url}/area/{quiet}")
    wait(d).until(lambda d: count(d, "#pan-trend .main-svg"))
    shot(d, artifacts, f"fair-panorama-grid-{TAG}")
