"""Grid work in a real browser: a district commander replays a worker's track and the
marker moves; a city leader sees clusters and counts, never a person."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import select

from pipelines.access import accounts
from pipelines.city.geography import City
from pipelines.spine import store
from tests.browser.conftest import (
    PASSWORD,
    attr,
    click,
    count,
    displayed,
    hover,
    login,
    shot,
    text,
    texts,
    type_into,
    viewport,
    wait,
    wait_text,
)
from tests.clock import Clock
from tests.conftest import open_engine

pytestmark = pytest.mark.browser


def _busy_worker(module_db: Any, city: City) -> tuple[str, str, str, str]:
    """(worker_id, name, street, district) of the worker with the longest track: whoever
    is out at the server's moment (by day most workers, at night the night shift)."""
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
        .sort(["len", "worker_id"], descending=True)
    )
    row = top.row(0, named=True)
    return row["worker_id"], row["name"], row["street_id"], row["district_id"]


def _commander(module_db: Any, city: City, district: str, clock: Clock) -> str:
    """A district commander of ``district`` (created once): the replays' viewer."""
    name = f"cmd-{district}"
    engine = open_engine(module_db)
    if accounts.get_user(engine, name) is None:
        accounts.create_user(
            engine,
            city,
            name,
            "district_commander",
            district,
            password=PASSWORD,
            now_ms=clock.now_ms,
        )
    engine.dispose()
    return name


def pick(driver: Any, dropdown_id: str, value: str, label: str) -> None:
    """Choose an option of a Dash 4 dropdown (a popover with a search box), checking it took."""
    for _ in range(3):
        click(driver, f"#{dropdown_id}")
        type_into(driver, "input.dash-dropdown-search", label)
        time.sleep(0.5)  # let the list filter
        click(driver, f"label.dash-dropdown-option:has(input[value='{value}'])")
        time.sleep(0.3)
        if label in text(driver, f"#{dropdown_id}-value"):
            return
    raise AssertionError(f"could not pick {value} in {dropdown_id}")


def _dots(driver: Any) -> list[dict[str, float] | None]:
    """Screen centres of the replay markers by pool slot (None: the slot is hidden — an
    unused slot sits at [0, 0] with radius 0, far off the screen)."""
    rects: list[dict[str, float] | None] = driver.execute_script(
        "return Array.from(document.querySelectorAll('path.wg-replay-dot')).map(function (e) {"
        "  var r = e.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;"
        "  var on = r.width > 0 && x >= 0 && y >= 0 && x <= innerWidth && y <= innerHeight;"
        "  return on ? {x: x, y: y} : null; });"
    )
    return rects


def _dot(driver: Any) -> dict[str, float] | None:
    dots = _dots(driver)
    return dots[0] if dots else None


def _steady(driver: Any) -> list[dict[str, float] | None]:
    """The markers once the map has stopped moving (it flies to the tracks on load)."""
    last = _dots(driver)
    for _ in range(40):
        time.sleep(0.4)
        now = _dots(driver)
        if now == last and any(now):
            return now
        last = now
    raise AssertionError("the replay markers never settled")


def _moved(a: dict[str, float] | None, b: dict[str, float] | None) -> bool:
    return a is not None and b is not None and abs(a["x"] - b["x"]) + abs(a["y"] - b["y"]) > 3


def _grid_with_two_walkers(module_db: Any, street: str, city: City) -> tuple[str, str]:
    """(grid_id, name) of the street's busiest grid, where a second worker of the street now
    walks along with the busiest one for a while (a few seconds behind, ~30 m aside): the
    simulated workers mostly keep to their own grid, so two in one grid is not left to
    chance. The mate's own points of that while are replaced (this module's data)."""
    engine = open_engine(module_db)
    tp, w = store.track_points, store.workers
    grids = city.grids.filter(pl.col("street_id") == street).select("grid_id", "name")
    pts = store.read_frame(engine, select(tp).where(tp.c.grid_id.in_(grids["grid_id"].to_list())))
    counts = pts.group_by("grid_id", "worker_id").len()
    grid, lead, _n = counts.sort(["len", "grid_id", "worker_id"], descending=True).row(0)
    roster = store.read_frame(engine, select(w.c.worker_id, w.c.grid_id))
    walked = set(pts.filter(pl.col("grid_id") == grid)["worker_id"].to_list())
    mates = roster.join(grids, "grid_id").filter(~pl.col("worker_id").is_in(list(walked)))
    mate = mates.sort("worker_id")["worker_id"][0]
    walk = pts.filter(pl.col("grid_id") == grid, pl.col("worker_id") == lead).sort("ts_ms")
    walk = walk.slice(walk.height // 3, walk.height // 3)  # the middle third: came and went
    rows = [
        r
        | {
            "worker_id": mate,
            "ts_ms": r["ts_ms"] + 20_000,
            "lon": r["lon"] + 0.0003,
            "lat": r["lat"] - 0.0002,
        }
        for r in walk.to_dicts()
    ]
    lo, hi = rows[0]["ts_ms"] - 30_000, rows[-1]["ts_ms"] + 30_000
    with engine.begin() as conn:
        conn.execute(tp.delete().where(tp.c.worker_id == mate, tp.c.ts_ms >= lo, tp.c.ts_ms <= hi))
        store.insert_ignore(conn, tp, rows)
    engine.dispose()
    return grid, str(grids.filter(pl.col("grid_id") == grid)["name"][0])


def test_commander_replays_a_track_and_the_marker_moves(
    chrome: Any,
    server_url: str,
    server_clock: Clock,
    module_db: Any,
    city_small: City,
    artifacts: Path,
) -> None:
    wid, name, street, district = _busy_worker(module_db, city_small)
    login(chrome, server_url, _commander(module_db, city_small, district, server_clock))
    viewport(chrome, 1600, 1000)
    chrome.get(f"{server_url}/work/{street}")
    wait(chrome).until(lambda d: count(d, "#work-kpis .kpi"))
    wait_text(chrome, "#work-children", "km")
    assert name in text(chrome, "#work-children")  # activity, by name
    pick(chrome, "wtrk-worker", wid, name)
    assert "轨迹点" in wait_text(chrome, "#wtrk-summary", "公里")
    wait(chrome).until(lambda d: _dot(d))
    start = _steady(chrome)[0]
    clock0 = text(chrome, "#wtrk-clock")
    shot(chrome, artifacts, "work-replay-start")
    # 1× (one track minute per second): a 20-minute track plays for about 20 s, so the
    # pause below lands mid-track even on a loaded machine (at 5× it once ran out first)
    click(chrome, "#wtrk-speed input[value='1']")
    click(chrome, "#wtrk-play")
    assert start is not None
    wait(chrome).until(
        lambda d: (
            (p := _dot(d)) is not None and abs(p["x"] - start["x"]) + abs(p["y"] - start["y"]) > 3
        )
    )
    assert text(chrome, "#wtrk-clock") != clock0
    assert text(chrome, "#wtrk-play") == "暂停"
    # pause mid-track: the replay clock stands still
    click(chrome, "#wtrk-play")
    slider_max = chrome.execute_script(
        "return document.querySelector('#wtrk-slider [role=slider]').getAttribute('aria-valuemax')"
    )
    time.sleep(0.6)
    now = chrome.execute_script(
        "return document.querySelector('#wtrk-slider [role=slider]').getAttribute('aria-valuenow')"
    )
    assert float(now) < float(slider_max)  # paused before the end
    held = text(chrome, "#wtrk-clock")
    time.sleep(0.8)
    assert text(chrome, "#wtrk-clock") == held
    assert text(chrome, "#wtrk-play") == "播放"
    shot(chrome, artifacts, "work-replay-paused")
    href = attr(chrome, "#wtrk-export", "href")
    assert href and href.endswith(f"/export/track/{wid}.csv?hours=2")


def test_commander_replays_a_grid_and_every_worker_moves(
    chrome: Any,
    server_url: str,
    server_clock: Clock,
    module_db: Any,
    city_small: City,
    artifacts: Path,
) -> None:
    """Pick only a grid: every worker who passed through it replays on one time slider."""
    _wid, _name, street, district = _busy_worker(module_db, city_small)
    grid, grid_name = _grid_with_two_walkers(module_db, street, city_small)
    login(chrome, server_url, _commander(module_db, city_small, district, server_clock))
    viewport(chrome, 1920, 1080)  # a command-centre screen
    chrome.get(f"{server_url}/work/{street}")
    wait(chrome).until(lambda d: count(d, "#work-kpis .kpi"))
    pick(chrome, "wtrk-grid", grid, grid_name)
    wait_text(chrome, "#wtrk-summary", "名网格员")
    names = {t.strip() for t in texts(chrome, "#wtrk-summary .wk-who")}
    assert len(names) >= 2
    href = attr(chrome, "#wtrk-export", "href")
    assert href and href.endswith(f"/export/track/grid/{grid}.csv?hours=2")
    wait(chrome).until(lambda d: count(d, ".leaflet-pane path"))
    before = _steady(chrome)
    # play at 1× until at least two workers' markers have moved on the shared slider (at
    # 5× the 20 minutes of tracks once ran out between two looks on a loaded machine)
    click(chrome, "#wtrk-speed input[value='1']")
    click(chrome, "#wtrk-play")
    wait(chrome).until(
        lambda d: (
            sum(
                _moved(a, b) or (a is None and b is not None)
                for a, b in zip(before, _dots(d), strict=True)
            )
            >= 2
            and sum(p is not None for p in _dots(d)) >= 2
        )
    )
    click(chrome, "#wtrk-play")  # pause
    time.sleep(0.5)
    after = _dots(chrome)
    assert sum(p is not None for p in after) >= 2
    moved = sum(_moved(a, b) for a, b in zip(before, after, strict=True))
    appeared = sum(a is None and b is not None for a, b in zip(before, after, strict=True))
    assert moved + appeared >= 2
    # the grid's outline is drawn (a dashed polygon) and the lines are one colour each
    colours = chrome.execute_script(
        "return Array.from(document.querySelectorAll('.leaflet-wk-replay-pane path'))"
        ".map(function (e) { return e.getAttribute('stroke') + '|' +"
        " (e.getAttribute('stroke-dasharray') || ''); });"
    )
    assert any(c.endswith("|6 4") for c in colours), colours
    assert len({c for c in colours if c.endswith("|")}) >= 3, colours  # ≥ 2 lines + white rims
    # a marker's tooltip names its worker (as text)
    slot = next(i for i, p in enumerate(after) if p is not None)
    hover(chrome, "path.wg-replay-dot", index=slot)
    tip = wait(chrome).until(lambda d: texts(d, ".leaflet-tooltip") or None)
    assert set(tip) & names, (tip, names)
    shot(chrome, artifacts, "work-replay-grid")
    # a chosen day (yesterday 08:00–12:00 by default): the simulated city has no track then
    # (its data is the 20 minutes before the server's moment)
    pick(chrome, "wtrk-window", "day", "指定日期时段")
    wait(chrome).until(lambda d: displayed(d, "#wtrk-custom"))
    wait_text(chrome, "#wtrk-summary", "没有网格员经过")
    assert not [p for p in _dots(chrome) if p is not None]  # the old replay is gone
    shot(chrome, artifacts, "work-replay-day")


def test_leader_sees_clusters_and_counts_only(
    chrome: Any, server_url: str, module_db: Any, city_small: City, artifacts: Path
) -> None:
    login(chrome, server_url, "leader")
    viewport(chrome, 1600, 1000)
    chrome.get(f"{server_url}/work")
    wait(chrome).until(lambda d: count(d, ".wk-cluster"))
    wait(chrome).until(lambda d: count(d, "#work-children tr"))
    time.sleep(1.0)
    shot(chrome, artifacts, "work-city-leader")
    body = text(chrome, "body")
    assert "网格工作" in body and "今日巡查覆盖率" in body and "在线" in body
    assert "个人信息" in body  # the privacy note instead of the replay panel
    assert not count(chrome, "#wtrk-worker")
    # a district where someone is out at the server's moment (its clusters are drawn)
    _wid, _name, _street, district = _busy_worker(module_db, city_small)
    chrome.get(f"{server_url}/work/{district}")
    wait(chrome).until(lambda d: count(d, ".wk-cluster"))
    time.sleep(1.0)
    shot(chrome, artifacts, "work-district-leader")
    # the same page in English
    chrome.get(f"{server_url}/lang/en?next=/work/{district}")
    wait_text(chrome, "body", "Patrol coverage today")
    wait(chrome).until(lambda d: count(d, "#work-children tr"))
    time.sleep(1.0)
    shot(chrome, artifacts, "work-district-leader-en")
    assert "Not patrolled today" in text(chrome, "body")
    chrome.get(f"{server_url}/lang/zh-CN?next=/work")
