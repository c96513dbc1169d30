"""The wall screen on live push (assets/wangge_push.js, dashboard/push/), in Chromium: it
updates over its stream with polling paused; when the push server goes away it falls back
to polling and keeps updating; when the push server is back it reconnects by itself; when
the web server goes away too it shows the stale mark, and recovers when it is back. The
grid-work page, signed in, updates over its own stream too."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from dashboard.app import create_app
from dashboard.push.server import create_app as create_push
from pipelines.access import accounts, wall_tokens
from pipelines.city.geography import City
from pipelines.gateway.server import free_port
from tests.browser.conftest import PASSWORD, count, login, shot, wait, wall_url
from tests.clock import Clock
from tests.conftest import open_engine
from tests.integration.test_dashboard import fill
from tests.push_client import PushServer

pytestmark = pytest.mark.browser
REFRESH_S = 1.0  # short ticks keep the test short


@dataclass
class Live:
    base: str
    token: str
    start_push: Any
    stop_push: Any
    start_web: Any
    stop_web: Any


@pytest.fixture(scope="module")
def live(
    redis_url: str, module_db: Any, city_small: City, browser_settings: Any, server_clock: Clock
) -> Iterator[Live]:
    push_port, web_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    s = browser_settings
    settings = dataclasses.replace(
        s,
        dashboard=dataclasses.replace(s.dashboard, refresh_s=REFRESH_S),
        push=dataclasses.replace(
            s.push, url=f":{push_port}", dashboard_url=f"http://127.0.0.1:{web_port}"
        ),
    )
    r = redis.Redis.from_url(redis_url)
    engine = open_engine(module_db)
    fill(settings, city_small, r, engine, server_clock.now_ms, minutes=3)
    now = server_clock.now_ms
    accounts.create_user(engine, city_small, "pushwall", "wall", "320100", now_ms=now)
    token = wall_tokens.issue_wall_token(engine, "pushwall", 30, now_ms=now)
    accounts.create_user(
        engine, city_small, "pushwork", "city_leader", "320100", PASSWORD, now_ms=now
    )
    app = create_app(settings, city=city_small, r=r, clock=server_clock)
    state: dict[str, Any] = {}

    def start_web() -> None:
        web = make_server("127.0.0.1", web_port, app.server, threaded=True)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        state["web"] = web

    def stop_web() -> None:
        web = state.pop("web")
        web.shutdown()
        web.server_close()

    def start_push() -> None:
        push = create_push(settings, city=city_small, engine=engine, clock=server_clock)
        state["push"] = PushServer(push, push_port).start()

    def stop_push() -> None:
        state.pop("push").stop()

    start_web()
    start_push()
    yield Live(f"http://127.0.0.1:{web_port}", token, start_push, stop_push, start_web, stop_web)
    for name, stop in (("push", stop_push), ("web", stop_web)):
        if name in state:
            stop()
    engine.dispose()
    r.close()


def status(driver: Any, page: str = "wall") -> dict[str, Any]:
    got = driver.execute_script(
        f"return window.wangge_push_status && window.wangge_push_status('{page}');"
    )
    return got or {}


def test_wall_updates_by_push_and_survives_restarts(
    live: Live, chrome: Any, artifacts: Any
) -> None:
    d = chrome
    d.get(wall_url(live.base, live.token))
    # pushed ticks arrive, and the page's polling is paused while they do
    wait(d, 60).until(lambda d: status(d).get("pushes", 0) >= 2 and not status(d)["polling"])
    wait(d, 60).until(lambda d: d.find_elements("css selector", "#wall-kpis .kpi"))
    pushes = status(d)["pushes"]

    # the push server goes away: polling resumes and the wall keeps updating
    live.stop_push()
    wait(d, 60).until(lambda d: status(d)["polling"] and not status(d)["open"])
    polled_from, pushes = status(d)["updates"], status(d)["pushes"]
    wait(d, 60).until(lambda d: status(d)["updates"] >= polled_from + 1)
    assert status(d)["pushes"] == pushes  # those updates came from polling

    # it is back: the wall reconnects by itself, and polling pauses again
    live.start_push()
    wait(d, 60).until(lambda d: status(d)["pushes"] >= pushes + 1 and not status(d)["polling"])

    # the web server goes away: no tick, no poll, the stale mark shows
    live.stop_web()
    wait(d, 60).until(lambda d: d.find_elements("css selector", "#wall-stale .wg-stale"))
    shot(d, artifacts, "wall-stale")
    pushes = status(d)["pushes"]
    live.start_web()
    wait(d, 60).until(
        lambda d: (
            status(d)["pushes"] >= pushes + 2
            and not d.find_elements("css selector", "#wall-stale .wg-stale")
        )
    )


def test_grid_work_updates_by_push(live: Live, chrome: Any, artifacts: Any) -> None:
    d = chrome
    login(d, live.base, "pushwork")
    d.get(live.base + "/work/320100")
    wait(d, 60).until(
        lambda d: status(d, "work").get("pushes", 0) >= 2 and not status(d, "work")["polling"]
    )
    wait(d, 60).until(lambda d: count(d, "#work-kpis .kpi"))
    pushes = status(d, "work")["pushes"]
    wait(d, 60).until(lambda d: status(d, "work")["pushes"] >= pushes + 2)
    assert not status(d, "work")["polling"]
    shot(d, artifacts, "work-push")
