"""The dashboard on a real Redis and SQL: callbacks called as plain functions, sums over
children, shared per-tick computation, stale marks and recovery, routes."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dash import Dash, no_update
from sqlalchemy import Engine

from dashboard import live as L
from dashboard.app import create_app, page_module
from dashboard.auth import authorize
from dashboard.backend import Backend
from pipelines.access import accounts
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.embedded import EmbeddedRedis
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish
from tests.conftest import settings_for, sign_in_client, signed_in

pytestmark = pytest.mark.integration

ADDITIVE = ("reports", "open", "overdue", "resolved", "closed", "online", "patrolled", "video")


@pytest.fixture(scope="module")
def city() -> City:
    return demo_city(2026, n_grids=300)


def fill(settings: Settings, city: City, r: redis.Redis, engine: Engine, minutes: int = 40) -> None:
    """The last ``minutes`` of a simulated city, processed by the real pipeline code."""
    cfg = dataclasses.replace(
        settings.simulate,
        workers=400,
        cameras=80,
        malformed_share=0.0,
        incidents_per_day=60_000,
        video_alerts_per_day=30_000,
    )
    now = int(time.time() * 1000)
    sim = simulate.Simulator(city, cfg, settings.deadlines, start_ms=now - minutes * 60_000)
    store.replace_table(
        engine, store.cameras, sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    events = sim.advance(now - 1000)
    index = GridIndex(city)
    for feed in ("reports", "locations", "video"):
        w = make_worker(feed, settings, city, index, r, engine, f"{feed}-d")
        publish(r, w.consumer.stream, [p for f, p in events if f == feed])
        while w.step().acked:
            pass
    ClockJob(settings, city, live_state(r, settings), r).tick()


@pytest.fixture
def app_data(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
) -> tuple[Dash, Settings]:
    settings = live_settings
    fill(settings, city, rclient, engine)
    accounts.create_user(
        engine,
        city,
        "tester",
        "city_leader",
        city.city_id,
        password="not-used-here-1",
        now_ms=int(time.time() * 1000),
    )
    return create_app(settings, city=city, r=rclient), settings


def backend(app: Dash) -> Backend:
    b: Backend = app.server.extensions["wangge"]
    return b


def test_every_area_equals_the_sum_of_its_children(app_data: tuple[Dash, Settings]) -> None:
    app, _ = app_data
    b = backend(app)
    checked = 0
    with signed_in(app):
        for area in [b.city.city_id, *b.city.ids("district"), *b.city.ids("street")]:
            snap = L.snapshot(b, authorize(area, "aggregates"))
            assert snap is not None
            kids = b.city.children(area)
            kid_snaps = [L.snapshot(b, authorize(k, "aggregates")) for k in kids]
            for m in ADDITIVE:
                total = sum(s["kpi"][m] for s in kid_snaps if s)
                assert snap["kpi"][m] == total, (area, m)
            checked += 1
        top = L.snapshot(b, authorize(b.city.city_id, "aggregates"))
    assert top is not None and top["kpi"]["reports"] > 0 and top["kpi"]["online"] > 0
    assert checked == 1 + 11 + len(b.city.ids("street"))


def test_refresh_callback_as_a_plain_function(app_data: tuple[Dash, Settings]) -> None:
    app, _ = app_data
    pan = page_module("panorama")
    refresh, drill_down = pan.refresh, pan.drill_down
    b = backend(app)
    with signed_in(app):
        out = refresh(0, "open", [], b.city.city_id, None, "zh-CN")
        hideout, url, _legend, kpis, trend, cats, _hot, ticker, markers, stale, fresh, last = out
        assert len(hideout["values"]) == 11 and url == f"/geo/area/{b.city.city_id}.json"
        assert len(kpis) == 9 and stale == "" and "秒前更新" in fresh and last
        assert trend["data"][0]["y"] is not None and len(cats["data"][0]["x"]) == 8
        assert ticker and markers["features"] == []
        grids = refresh(0, "coverage", ["all"], b.city.city_id, None, "en")
        assert len(grids[0]["values"]) == b.city.grids.height and grids[1] == "/geo/grids.json"
        assert set(grids[0]["values"]) <= {0.0, 1.0} and "updated" in grids[10]
        street = b.city.ids("street")[0]
        st = refresh(0, "online", [], street, None, "zh-CN")
        kinds = {f["properties"]["k"] for f in st[8]["features"]}
        assert "w" not in kinds  # a city leader sees no individual worker (README "Privacy")
        district = b.city.ancestors(street)[1]
        with signed_in(app, role="district_commander", scope=district, username="cmd"):
            st = refresh(0, "online", [], street, None, "zh-CN")
        kinds = {f["properties"]["k"] for f in st[8]["features"]}
        assert "w" in kinds  # a command centre sees the street's workers on the map
        district = b.city.children(b.city.city_id)[0]
        assert drill_down({"properties": {"id": district}}, b.city.city_id) == f"/area/{district}"
        assert drill_down({"properties": {"id": "x"}}, b.city.city_id) is no_update


def test_panel_is_computed_once_per_tick_for_all_viewers(app_data: tuple[Dash, Settings]) -> None:
    app, _ = app_data
    b = backend(app)
    frozen = time.time()
    b.clock = lambda: frozen
    with signed_in(app):
        before = b.cache.computed
        for _ in range(25):
            grant = authorize(b.city.city_id, "aggregates")  # each viewer decided anew
            L.panel_or_stale(b, grant, "open", False, "zh-CN", None)
        assert b.cache.computed - before == 1  # one snapshot for 25 viewers
        b.clock = lambda: frozen + b.refresh_s
        L.panel_or_stale(b, grant, "open", False, "zh-CN", None)
        assert b.cache.computed - before == 2  # next tick: recomputed once


def test_unknown_area_is_a_friendly_panel(app_data: tuple[Dash, Settings]) -> None:
    app, _ = app_data
    layout = page_module("panorama", "layout").layout
    with signed_in(app):
        page = layout(area_id="<script>nope")
    assert page.id == "notfound"
    text = str(page)
    assert "未找到该区域" in text and "<script>nope" in text  # rendered as text by React


def test_routes(app_data: tuple[Dash, Settings]) -> None:
    app, _ = app_data
    c = sign_in_client(app.server.test_client())
    assert c.get("/geo/area/nope.json").status_code in (403, 404)
    r1 = c.get("/geo/area/320100.json", headers={"Accept-Encoding": "gzip"})
    assert r1.status_code == 200 and r1.headers["Content-Encoding"] == "gzip"
    assert "max-age" in r1.headers["Cache-Control"]
    r2 = c.get("/geo/area/320100.json", headers={"If-None-Match": r1.headers["ETag"]})
    assert r2.status_code == 304
    r3 = c.get("/lang/en?next=//evil.example/x")
    assert r3.status_code == 302 and r3.headers["Location"] == "/"
    assert "wg_lang=en" in r3.headers["Set-Cookie"] and "HttpOnly" in r3.headers["Set-Cookie"]
    assert c.get("/lang/en?next=/area/320102").headers["Location"] == "/area/320102"
    back = c.get("/lang/zh-CN", headers={"Referer": "http://localhost/wall/320102"})
    assert back.headers["Location"] == "/wall/320102"
    foreign = c.get("/lang/zh-CN", headers={"Referer": "http://evil.example/wall"})
    assert foreign.headers["Location"] == "/"
    page = c.get("/")
    assert page.status_code == 200
    html = page.data.decode()
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert c.get("/healthz").status_code == 200


@pytest.fixture
def flaky_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "flaky").start()
    yield server
    server.stop()


def test_stale_mark_then_recovery(
    flaky_redis: EmbeddedRedis, db_url: Any, engine: Engine, tmp_path: Path, city: City
) -> None:
    settings = settings_for(flaky_redis.url, "wgflaky", db_url, tmp_path)
    r = redis.Redis.from_url(flaky_redis.url, socket_timeout=1, socket_connect_timeout=1)
    fill(settings, city, r, engine, minutes=5)
    app = create_app(settings, city=city, r=r)
    refresh = page_module("panorama").refresh
    b = backend(app)
    with signed_in(app):
        ok = refresh(0, "open", [], city.city_id, None, "en")
        assert ok[9] == ""
        last_ok = ok[11]
        flaky_redis.stop()
        b.cache.local.clear()
        b.clock = lambda: time.time() + 60  # a later tick: nothing cached
        stale = refresh(1, "open", [], city.city_id, last_ok, "en")
        assert stale[0] is no_update and "stale since" in str(stale[9])
        flaky_redis.start()  # same port: the client reconnects by itself
        back = refresh(2, "open", [], city.city_id, last_ok, "en")
        assert back[9] == "" and back[0] is not no_update
