"""The incident workbench in a browser, a full loop as a street operator would do it: an
incident reported through the reports stream appears in the queue; it is accepted,
dispatched to a unit, handled, resolved with a note and a photo link, verified with the
worker who checked on site and closed with the level; each outcome shows at once and the
detail's timeline shows every step. A reports pipeline runs beside the dashboard on a
real Redis and database. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import insert
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts
from pipelines.city.geography import City, GridIndex
from pipelines.dispatch.actions import load_incident
from pipelines.dispatch.units import demo_units, units
from pipelines.spine.runner import make_worker
from pipelines.spine.store.schema import workers
from pipelines.spine.streams import publish
from tests.browser.conftest import PASSWORD, click, login, shot, text, viewport, wait, wait_text
from tests.browser.test_work_page import pick
from tests.clock import Clock, named
from tests.conftest import open_engine, private_database, private_prefix, settings_for

pytestmark = pytest.mark.browser

INC = "I-BROWSER-LOOP-1"
WORKER, WORKER_NAME = "W-B1", "李网格"


class Live:
    def __init__(
        self, url: str, r: redis.Redis, stream: str, engine: Any, grid: dict, clock: Clock
    ):
        self.url, self.r, self.stream, self.engine, self.grid, self.clock = (
            url, r, stream, engine, grid, clock,
        )  # fmt: skip


@pytest.fixture(scope="module")
def live(
    redis_url: str, city_small: City, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("loop")
    clock = Clock(named("thu-10:00").ms, running=True)
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        s = settings_for(redis_url, prefix, db, tmp, streams={"block_ms": 50})
        engine = open_engine(db)
        r = redis.Redis.from_url(redis_url)
        g = city_small.grids.row(0, named=True)
        with engine.begin() as conn:
            conn.execute(insert(units), demo_units(city_small))
            conn.execute(
                insert(workers),
                [
                    {
                        "worker_id": WORKER,
                        "name": WORKER_NAME,
                        "type": "full_time",
                        "grid_id": g["grid_id"],
                    }
                ],
            )
        accounts.create_user(
            engine, city_small, "op_loop", "street_operator", g["street_id"],
            password=PASSWORD, now_ms=clock.now_ms,
        )  # fmt: skip
        w = make_worker(
            "reports", s, city_small, GridIndex(city_small), r, engine, "rep-loop", clock=clock
        )
        stop = threading.Event()
        pipeline = threading.Thread(target=w.run, args=(stop,), daemon=True)
        pipeline.start()
        app = create_app(s, city=city_small, r=r, clock=clock)
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield Live(
                f"http://127.0.0.1:{server.server_port}",
                r,
                f"{prefix}:{s.streams.reports}",
                engine,
                g,
                clock,
            )
        finally:
            server.shutdown()
            stop.set()
            pipeline.join(timeout=10)
            r.close()
            engine.dispose()


def press(driver: Any, label: str) -> None:
    """Click the action button with this label (found afresh until it is there)."""
    script = (
        "const b = [...document.querySelectorAll('#inca-btns button')]"
        ".find(x => x.textContent.trim() === arguments[0]);"
        " if (!b) return false; b.click(); return true;"
    )
    wait(driver, 30).until(lambda d: d.execute_script(script, label))


def fill(driver: Any, css: str, value: str) -> None:
    """Type into a form field (cleared first), found afresh."""
    wait(driver, 10).until(lambda d: d.execute_script(f"return !!document.querySelector('{css}')"))
    el = driver.find_element("css selector", css)
    el.clear()
    el.send_keys(value)


def into_view(driver: Any, css: str) -> None:
    """Scroll the detail panel to an element, as a person would (found afresh)."""
    script = (
        "const e = document.querySelector(arguments[0]);"
        " if (!e) return false; e.scrollIntoView({block: 'center'}); return true;"
    )
    wait(driver, 30).until(lambda d: d.execute_script(script, css))


def submit_and_see(driver: Any, step_word: str) -> None:
    into_view(driver, "#inca-submit")
    click(driver, "#inca-submit")
    wait_text(driver, "#inca-msg", "已生效", 30)
    wait_text(driver, "#inc-more .inc-timeline", step_word, 30)


def test_the_full_loop_in_the_browser(chrome: Any, live: Live, tmp_path: Path) -> None:
    d = chrome
    viewport(d, 1920, 1080)
    login(d, live.url, "op_loop")
    event = {
        "event_id": f"{INC}-r",
        "incident_id": INC,
        "ts": live.clock.now_ms - 5 * 60_000,
        "step": "reported",
        "category": "dispute",
        "severity": 1,
        "source": "resident",
        "lon": live.grid["lon"],
        "lat": live.grid["lat"],
        "reporter_id": WORKER,
        "description": "邻里噪音纠纷",
    }
    publish(live.r, live.stream, [orjson.dumps(event)])
    end = time.monotonic() + 30
    while load_incident(live.engine, INC) is None:
        assert time.monotonic() < end, "the pipeline did not apply the report"
        time.sleep(0.05)
    d.get(live.url + "/incidents")
    cell = f"#inc-grid .ag-row[row-id='{INC}'] .ag-cell[col-id='incident_id']"
    wait(d, 60).until(lambda x: x.execute_script(f'return !!document.querySelector("{cell}")'))
    assert "剩余" in text(d, f"#inc-grid .ag-row[row-id='{INC}'] .ag-cell[col-id='clock']")
    shot(d, tmp_path, "1-queue")
    click(d, cell)
    wait_text(d, "#inc-detail", "邻里噪音纠纷", 30)
    assert WORKER_NAME in text(d, "#inc-detail")  # the reporter, by name, for a command centre

    press(d, "受理")
    submit_and_see(d, "受理")
    press(d, "派遣")
    unit = f"{live.grid['street_id']}-community"
    into_view(d, "#inca-unit")
    pick(d, "inca-unit", unit, "社区工作站")
    submit_and_see(d, "派遣")
    press(d, "开始处置")
    submit_and_see(d, "处置")
    press(d, "办结")
    into_view(d, "#inca-note")
    fill(d, "#inca-note", "已上门调解，双方达成一致")
    fill(d, "#inca-photo", "https://media.example.org/p/loop.jpg")
    shot(d, tmp_path, "2-resolve-form")
    submit_and_see(d, "办结")
    press(d, "核查通过")
    into_view(d, "#inca-onsite")
    pick(d, "inca-onsite", WORKER, WORKER_NAME)
    submit_and_see(d, "核查")
    press(d, "结案")
    into_view(d, "#inca-level")
    pick(d, "inca-level", "grid", "网格")
    submit_and_see(d, "结案")
    timeline = text(d, "#inc-more .inc-timeline")
    for word in ("上报", "受理", "派遣", "处置", "办结", "核查", "结案", "已上门调解"):
        assert word in timeline, word
    assert "loop.jpg" in text(d, "#inc-more")
    shot(d, tmp_path, "3-closed-detail")
    # the closed incident leaves the queue at once
    wait(d, 30).until(lambda x: not x.execute_script(f'return !!document.querySelector("{cell}")'))
    print(f"screenshots: {tmp_path}")
