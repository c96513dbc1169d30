"""The assessment page (监督考核) as a district supervisor uses it: the ranked street
table of last month in scope only, drill-down, the incidents behind a number, and an
XLSX downloaded from the page that holds exactly the table on screen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openpyxl
import pytest

from pipelines import assessment as S
from pipelines.assessment import exports as E
from pipelines.city.geography import City
from tests.browser.conftest import (
    GRID_ROWS,
    attr,
    click,
    displayed,
    login,
    shot,
    text,
    viewport,
    wait,
    wait_text,
)
from tests.clock import Clock
from tests.conftest import open_engine
from tests.history import make_history

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def history(module_db: Any, city_small: City, server_clock: Clock) -> S.Period:
    """Two months of history up to the server's moment; returns last month (final once
    ``assessment.snapshot_grace_hours`` have passed since it ended)."""
    today = server_clock.local().date()
    this = S.month_period(today.year, today.month)
    last = this.previous()
    start = last.previous()
    days = (today - start.first).days
    engine = open_engine(module_db)
    from tests.history import load

    load(engine, make_history(city_small, start.start_ms, days, 6000, 300, seed=3, prefix="H"))
    engine.dispose()
    return last


# every state the export's progress element shows, in order (a job this small finishes
# within one poll, so the states seen are the start's 0 % and the finished 100 %)
WATCH_PROGRESS = """
window.asmProgress = [];
const el = document.getElementById('asm-progress');
new MutationObserver(() => {
  const text = el.innerText.replace(/\\s+/g, ' ').trim();
  if (!el.hidden && text && window.asmProgress.at(-1) !== text) window.asmProgress.push(text);
}).observe(el, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def table_rows(driver: Any) -> list[list[str]]:
    return driver.execute_script(
        f"""return {GRID_ROWS}('asm-table')
             .map(([, tds]) => tds.map(td => td.innerText.trim()))
             .filter(r => r.length > 3);"""
    )


def test_supervisor_ranks_drills_and_downloads(
    chrome: Any,
    server_url: str,
    server_clock: Clock,
    browser_settings: Any,
    history: S.Period,
    city_small: City,
    artifacts: Path,
) -> None:
    d = chrome
    viewport(d, 1680, 1000)
    d.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(artifacts)}
    )
    for old in artifacts.glob("scorecard_*"):
        old.unlink()
    login(d, server_url, "sup")
    d.get(f"{server_url}/assessment?level=street&period={history.key}&area=320104")
    # an area outside the scope in the URL falls back to the user's own district
    wait(d).until(lambda d: len(table_rows(d)) >= 3)
    rows = table_rows(d)
    streets = {str(city_small.area(s)["name"]) for s in city_small.children("320102")}
    names = [r[1] for r in rows]
    assert set(names) == streets, names
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), key=int)  # ranked
    # last month is final once the grace after its end has passed (not yet in the small
    # hours of the 1st)
    grace_ms = int(browser_settings.assessment.snapshot_grace_hours * 3_600_000)
    final = server_clock.now_ms >= history.end_ms + grace_ms
    assert ("已定稿" if final else "统计中") in text(d, "#asm-title")
    shot(d, artifacts, "assessment-streets")
    # the metric definition is a tooltip on the heading
    # drill: click a street name → its grids
    name_cell = "#asm-table .ag-row[row-index='0'] [col-id=name]"
    street_name = text(d, name_cell)
    click(d, name_cell)
    wait(d).until(lambda d: "level=grid" in d.current_url)
    wait(d).until(lambda d: (rows := table_rows(d)) and rows[0][2] == street_name)
    shot(d, artifacts, "assessment-grids")
    # the incidents behind a number
    click(d, "#asm-table .ag-row[row-index='0'] [col-id=reports]")
    wait(d).until(lambda d: displayed(d, "#asm-behind"))
    wait_text(d, "#asm-behind", "事件上报数")
    shot(d, artifacts, "assessment-behind")
    # download the XLSX (a background job with a progress bar) and compare with the table
    on_screen = table_rows(d)
    assert not displayed(d, "#asm-progress")
    d.execute_script(WATCH_PROGRESS)
    click(d, "#asm-xlsx")
    wait(d).until(lambda d: any(artifacts.glob("scorecard_grid_*.xlsx")))
    path = next(artifacts.glob("scorecard_grid_*.xlsx"))
    wait(d).until(lambda d: path.stat().st_size > 0 and "已导出" in text(d, "#asm-msg"))
    seen = d.execute_script("return window.asmProgress;")
    assert seen[0].startswith("0%") and "正在整理表格" in seen[0], seen  # the job started
    assert displayed(d, "#asm-progress")
    assert text(d, "#asm-progress").split() == ["100%", "已完成"]  # and completed
    style = attr(d, "#asm-progress .asm-bar-fill", "style") or ""
    assert style.replace(" ", "") == "width:100%;"
    assert d.execute_script(
        "return [...document.querySelectorAll('.asm-btn')].every(b => !b.disabled);"
    )
    ws = openpyxl.load_workbook(path)["考核排名"]
    got = [
        [("" if v is None else v) for v in row] for row in ws.iter_rows(min_row=6, values_only=True)
    ]
    assert len(got) == len(on_screen)
    kinds = [E.column_kind(c) for c in S.shown_columns("grid")]
    for screen, cells in zip(on_screen, got, strict=True):
        # every cell as shown: the table writes a true minus sign
        screen = [x.replace("\u2212", "-") for x in screen[: len(kinds)]]
        # (an empty change, no previous period, is a blank cell in the workbook and "—"
        # on the page, as in the PDF)
        assert screen == [
            ("—" if k == "signed1" else "") if v == "" else E.cell_text(k, v)
            for k, v in zip(kinds, cells, strict=True)
        ]
    shot(d, artifacts, "assessment-exported")
