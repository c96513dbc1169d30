"""Free text is rendered as text everywhere: an XSS corpus in area names (an imported
city file) and in reports (descriptions, ids) runs no script on any page."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts
from pipelines.city.geography import City, GridIndex
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.browser.conftest import PASSWORD, count, hover, login, shot, text, viewport, wait
from tests.clock import Clock
from tests.conftest import open_engine, settings_for
from tests.integration.test_dashboard import fill

pytestmark = pytest.mark.browser

CORPUS = [
    '<img src=x onerror="window.__xss=(window.__xss||0)+1">',
    "<script>window.__xss=(window.__xss||0)+1</script>",
    '"><svg onload="window.__xss=(window.__xss||0)+1">',
    "javascript:window.__xss=1",
    "<iframe srcdoc='<script>parent.__xss=1</script>'>",
    "{{constructor.constructor('window.__xss=1')()}}",
]


def hostile_city(city: City) -> City:
    """The same geometry, with every district, street and grid name carrying a payload."""
    n = city.areas.height
    names = [
        f"{CORPUS[i % len(CORPUS)]}{name}" if level != "city" else name
        for i, (name, level) in enumerate(zip(city.areas["name"], city.areas["level"], strict=True))
    ]
    assert len(names) == n
    return City(areas=city.areas.with_columns(pl.Series("name", names)), geoms=city.geoms)


@pytest.fixture(scope="module")
def xss_server(
    redis_url: str,
    module_prefix: str,
    module_db: Any,
    city_small: City,
    server_clock: Clock,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    city = hostile_city(city_small)
    settings = settings_for(redis_url, module_prefix, module_db, tmp_path_factory.mktemp("x"))
    r = redis.Redis.from_url(redis_url)
    engine = open_engine(module_db)
    fill(settings, city, r, engine, server_clock.now_ms, minutes=5)
    # reports whose every free-text and id field is hostile, through the real pipeline
    now = server_clock.now_ms
    g = city.grids.row(0, named=True)
    events = [
        dict(
            event_id=f"X{i}",
            incident_id=payload[:60],
            ts=now - 60_000 + i,
            step="reported",
            category="dispute",
            severity=2,
            source="resident",
            lon=g["lon"],
            lat=g["lat"],
            description=payload,
            reporter_id=payload[:60],
            handler_id=payload[:60],
            level="grid",
        )
        for i, payload in enumerate(CORPUS)
    ]
    w = make_worker("reports", settings, city, GridIndex(city), r, engine, "xss", server_clock)
    publish(r, w.consumer.stream, [encode(e) for e in events])
    while w.step().acked:
        pass
    accounts.create_user(
        engine, city, "leader", "city_leader", city.city_id, password=PASSWORD, now_ms=now
    )
    app = create_app(settings, city=city, r=r, clock=server_clock)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    engine.dispose()
    r.close()


def no_script_ran(driver: Any) -> None:
    assert driver.execute_script("return window.__xss === undefined"), "an injected script ran"
    assert not count(driver, ".wg-main script, .wall script")


def test_no_injected_script_runs_anywhere(
    chrome: Any, xss_server: str, artifacts: Path, city_small: City
) -> None:
    viewport(chrome, 1600, 900)
    login(chrome, xss_server, "leader")
    street = city_small.children("320102")[0]
    for path in ("/", "/area/320102", f"/area/{street}", "/wall/320102"):
        chrome.get(xss_server + path)
        wait(chrome).until(lambda d: count(d, "path.leaflet-interactive"))
        wait(chrome).until(lambda d: count(d, ".kpi"))
        time.sleep(1.0)
        # hover a shape: its tooltip shows a hostile name
        hover(chrome, "path.leaflet-interactive")
        time.sleep(0.3)
        no_script_ran(chrome)
        # the payloads are on the page as visible text (rendered, never executed)
        body = text(chrome, "body")
        assert any(m in body for m in ("onerror=", "<script>", "onload=", "srcdoc=")), body[:500]
        shot(chrome, artifacts, path.strip("/").replace("/", "-") or "city")
