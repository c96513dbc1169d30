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
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from dashboard.app import create_app
from pipelines.access import accounts
from pipelines.city.geography import City, GridIndex
from pipelines.spine.events import encode
from pipelines.spine.runner import make_worker
from pipelines.spine.streams import publish
from tests.browser.conftest import PASSWORD, login, shot, viewport
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
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    city = hostile_city(city_small)
    settings = settings_for(redis_url, module_prefix, module_db, tmp_path_factory.mktemp("x"))
    r = redis.Redis.from_url(redis_url)
    engine = open_engine(module_db)
    fill(settings, city, r, engine, minutes=5)
    # reports whose every free-text and id field is hostile, through the real pipeline
    now = int(time.time() * 1000)
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
    w = make_worker("reports", settings, city, GridIndex(city), r, engine, "xss")
    publish(r, w.consumer.stream, [encode(e) for e in events])
    while w.step().acked:
        pass
    accounts.create_user(
        engine, city, "leader", "city_leader", city.city_id, password=PASSWORD, now_ms=now
    )
    app = create_app(settings, city=city, r=r)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    engine.dispose()
    r.close()


def no_script_ran(driver: Any) -> None:
    assert driver.execute_script("return window.__xss === undefined"), "an injected script ran"
    assert not driver.find_elements(By.CSS_SELECTOR, ".wg-main script, .wall script")


def test_no_injected_script_runs_anywhere(
    chrome: Any, xss_server: str, artifacts: Path, city_small: City
) -> None:
    viewport(chrome, 1600, 900)
    login(chrome, xss_server, "leader")
    wait = WebDriverWait(chrome, 60, poll_frequency=0.2)
    street = city_small.children("320102")[0]
    for path in ("/", "/area/320102", f"/area/{street}", "/wall/320102"):
        chrome.get(xss_server + path)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "path.leaflet-interactive"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".kpi"))
        time.sleep(1.0)
        # hover a shape: its tooltip shows a hostile name
        shape = chrome.find_elements(By.CSS_SELECTOR, "path.leaflet-interactive")[0]
        ActionChains(chrome).move_to_element(shape).perform()
        time.sleep(0.3)
        no_script_ran(chrome)
        # the payloads are on the page as visible text (rendered, never executed)
        text = chrome.find_element(By.TAG_NAME, "body").text
        assert any(m in text for m in ("onerror=", "<script>", "onload=", "srcdoc=")), text[:500]
        shot(chrome, artifacts, path.strip("/").replace("/", "-") or "city")
