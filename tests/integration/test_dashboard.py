"""The dashboard on a real Redis and SQL: callbacks called as plain functions, sums over
children, shared per-tick computation, stale marks and recovery, routes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
import redis
from dash import Dash, no_update
from sqlalchemy import Engine

from dashboard import ids
from dashboard import live as L
from dashboard.app import create_app, page_module
from dashboard.auth import authorize
from dashboard.backend import Backend
from pipelines.access import accounts
from pipelines.city import simulator as simulate
from pipelines.city.geography import City, GridIndex
from pipelines.dispatch.flows import flows_for
from pipelines.embedded import EmbeddedRedis
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish
from tests.clock import MOMENTS, Clock, Moment, local
from tests.conftest import (
    open_engine,
    private_database,
    private_prefix,
    settings_for,
    sign_in_client,
    signed_in,
)

pytestmark = pytest.mark.integration

ADDITIVE = ("reports", "open", "overdue", "resolved", "closed", "online", "patrolled", "video")


def fill(
    settings: Settings,
    city: City,
    r: redis.Redis,
    engine: Engine,
    now_ms: int,
    minutes: int = 40,
) -> list[tuple[str, bytes]]:
    """The ``minutes`` before ``now_ms`` of a simulated city, processed by the real pipeline
    code with the clock at ``now_ms``; returns the events fed (the input, to derive
    expectations from). Who is out depends on the moment: the simulated workers keep
    their own shifts (most by day, some by night)."""
    cfg = dataclasses.replace(
        settings.simulate,
        workers=400,
        cameras=80,
        malformed_share=0.0,
        incidents_per_day=60_000,
        video_alerts_per_day=30_000,
    )
    clock = Clock(now_ms)
    sim = simulate.Simulator(city, cfg, flows_for(settings), start_ms=now_ms - minutes * 60_000)
    store.replace_table(
        engine, store.cameras, sim.cameras.select("camera_id", "lon", "lat", "grid_id").to_dicts()
    )
    cols = [c.name for c in store.workers.columns]
    store.replace_table(engine, store.workers, sim.roster.select(cols).to_dicts())
    events = sim.advance(now_ms - 1000)
    index = GridIndex(city)
    for feed in ("reports", "locations", "video"):
        w = make_worker(feed, settings, city, index, r, engine, f"{feed}-d", clock=clock)
        publish(r, w.consumer.stream, [p for f, p in events if f == feed])
        while w.step().acked:
            pass
    ClockJob(settings, city, live_state(r, settings), r, clock=clock).tick()
    return events


def pings(events: list[tuple[str, bytes]]) -> pl.DataFrame:
    """The location pings among ``events`` (worker_id, ts, lon, lat)."""
    rows = [orjson.loads(p) for f, p in events if f == "locations"]
    schema = {"worker_id": pl.String, "ts": pl.Int64, "lon": pl.Float64, "lat": pl.Float64}
    return pl.DataFrame([{k: r[k] for k in schema} for r in rows], schema=schema)


def online_workers(events: list[tuple[str, bytes]], now_ms: int, settings: Settings) -> set[str]:
    """Workers whose latest ping is within ``live.online_minutes`` of ``now_ms``."""
    since = now_ms - settings.live.online_minutes * 60_000
    last = pings(events).group_by("worker_id").agg(pl.col("ts").max())
    return set(last.filter(pl.col("ts") >= since)["worker_id"].to_list())


def reports_on_day(events: list[tuple[str, bytes]], day_ms: int) -> int:
    """Reports (the ``reported`` step) whose time falls on the local day of ``day_ms``."""
    day = local(day_ms).date()
    rows = [orjson.loads(p) for f, p in events if f == "reports"]
    return sum(r["step"] == "reported" and local(r["ts"]).date() == day for r in rows)


@dataclass
class Filled:
    app: Dash
    settings: Settings
    clock: Clock
    events: list[tuple[str, bytes]]


@pytest.fixture(scope="module")
def filled(
    redis_url: str, city: City, moment: Moment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Filled]:
    """The 40 minutes before the moment, an app whose clock stands at the moment (its own
    Redis prefix and database per moment)."""
    tmp = tmp_path_factory.mktemp("dash")
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        settings = settings_for(redis_url, prefix, db, tmp)
        r = redis.Redis.from_url(redis_url)
        engine = open_engine(db)
        clock = Clock(moment.ms)
        events = fill(settings, city, r, engine, clock.now_ms)
        accounts.create_user(
            engine,
            city,
            "tester",
            "city_leader",
            city.city_id,
            password="not-used-here-1",
            now_ms=clock.now_ms,
        )
        yield Filled(create_app(settings, city=city, r=r, clock=clock), settings, clock, events)
        engine.dispose()
        r.close()


@pytest.fixture
def bare_app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    """An app with no live data (for what needs none) and the signed-in test user."""
    clock = Clock(MOMENTS[0].ms)
    accounts.create_user(
        engine, city, "tester", "city_leader", city.city_id, "not-used-here-1", now_ms=clock.now_ms
    )
    return create_app(live_settings, city=city, r=rclient, clock=clock)


def backend(app: Dash) -> Backend:
    b: Backend = app.server.extensions["wangge"]
    return b


def test_every_area_equals_the_sum_of_its_children(filled: Filled) -> None:
    b = backend(filled.app)
    checked = 0
    with signed_in(filled.app):
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
    assert top is not None and checked == 1 + 11 + len(b.city.ids("street"))
    # today is the moment's local day; online is seen within live.online_minutes
    now = filled.clock.now_ms
    assert top["kpi"]["reports"] == reports_on_day(filled.events, now)
    assert top["kpi"]["online"] == len(online_workers(filled.events, now, filled.settings))


def test_refresh_callback_as_a_plain_function(filled: Filled) -> None:
    app = filled.app
    pan = page_module("panorama")
    refresh, drill_down = pan.refresh, pan.drill_down
    b = backend(app)
    with signed_in(app):
        out = refresh(0, "open", [], b.city.city_id, None, "zh-CN")
        hideout, url, _legend, kpis, trend, cats, _hot, ticker, markers, stale, fresh, last = out
        assert len(hideout["values"]) == 11 and url == f"/geo/area/{b.city.city_id}.json"
        assert len(kpis) == 9 and stale == "" and "上报" in fresh and last
        assert "前更新" in fresh and "暂无数据" not in fresh  # each feed's own age
        assert trend["data"][0]["y"] is not None and len(cats["data"][0]["x"]) == 8
        assert ticker and markers["features"] == []
        grids = refresh(0, "coverage", ["all"], b.city.city_id, None, "en")
        assert len(grids[0]["values"]) == b.city.grids.height and grids[1] == "/geo/grids.json"
        assert set(grids[0]["values"]) <= {0.0, 1.0} and "updated" in grids[10]
        street = b.city.ids("street")[0]
        st = refresh(0, "online", [], street, None, "zh-CN")
        kinds = {f["properties"]["k"] for f in st[8]["features"]}
        assert "w" not in kinds  # a city leader sees no individual worker (README "Privacy")
        district = b.city.children(b.city.city_id)[0]
        assert drill_down({"properties": {"id": district}}, b.city.city_id) == f"/area/{district}"
        assert drill_down({"properties": {"id": "x"}}, b.city.city_id) is no_update
    # a street's workers on the map: whoever of its roster has sent a position (on or off
    # shift at this moment), coloured while seen within live.online_minutes, grey after
    pinged = set(pings(filled.events)["worker_id"].to_list())
    roster = b.roster().filter(pl.col("worker_id").is_in(list(pinged)))
    assert roster.height, "the simulated city always has someone on shift"
    street = roster.group_by("street_id").len().sort(["len", "street_id"]).row(-1)[0]
    mine = set(roster.filter(pl.col("street_id") == street)["worker_id"].to_list())
    online = online_workers(filled.events, filled.clock.now_ms, filled.settings)
    district = b.city.ancestors(street)[1]
    with signed_in(app, role="district_commander", scope=district, username="cmd"):
        st = refresh(0, "online", [], street, None, "zh-CN")
    workers = {f["properties"]["id"]: f for f in st[8]["features"] if f["properties"]["k"] == "w"}
    assert set(workers) == mine
    for w, f in workers.items():
        assert (f["properties"]["c"] != L.OFFLINE) == (w in online), w


def test_grid_work_and_warnings_show_each_feeds_freshness(filled: Filled) -> None:
    """Every page with a live tick writes the header's per-feed freshness line on that
    tick (panorama, grid work, warnings; the wall has its own), the same line for every
    viewer: each feed's own age, never one global "updated" (stale marks: the unit tests
    of ``fresh_text`` and tests/integration/test_feed_health.py)."""
    app = filled.app
    b = backend(app)
    app.server.test_client().get("/_dash-dependencies")  # fills callback_map on first use
    ticks = {"panorama": ids.P_TICK, "work": ids.WK_TICK, "warnings": ids.WARN_TICK}
    for page, tick in ticks.items():
        writers = [
            key
            for key, spec in app.callback_map.items()
            if f"{ids.FRESH}.children" in [o.split("@")[0] for o in key.strip(".").split("...")]
            and any(i["id"] == tick for i in spec["inputs"])
        ]
        assert len(writers) == 1, page
    district = b.city.children(b.city.city_id)[0]
    for role, scope in (("city_leader", b.city.city_id), ("district_commander", district)):
        with signed_in(app, role=role, scope=scope, username=f"fresh-{role}"):
            for page in ("work", "warnings"):
                for lang, feed in (("zh-CN", "上报"), ("en", "Reports")):
                    text = page_module(page).fresh(0, lang)
                    assert text == L.feed_fresh_text(b, lang), (page, lang)
                    assert text.startswith(feed) and ("前更新" in text or "updated" in text)


def test_panel_is_computed_once_per_tick_for_all_viewers(
    filled: Filled, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = filled.app
    b = backend(app)
    clock = Clock(filled.clock.now_ms + 7 * 86_400_000)  # a tick no other test has computed
    monkeypatch.setattr(b, "clock", clock)
    with signed_in(app):
        before = b.cache.computed
        for _ in range(25):
            grant = authorize(b.city.city_id, "aggregates")  # each viewer decided anew
            L.panel_or_stale(b, grant, "open", False, "zh-CN", None)
        assert b.cache.computed - before == 1  # one snapshot for 25 viewers
        clock.advance(int(b.refresh_s * 1000))
        L.panel_or_stale(b, grant, "open", False, "zh-CN", None)
        assert b.cache.computed - before == 2  # next tick: recomputed once


def test_an_app_is_set_up_before_its_first_request(bare_app: Dash) -> None:
    """Every callback is in place when the app is built: Dash's own setup on the first
    request marked itself done before it was, and the other first requests of a fresh
    gunicorn worker's threads got 500 "Callback function not found" (a killed worker's
    replacement failed the viewers it took over)."""
    before = set(bare_app.callback_map)
    assert any(k.startswith(f"..{ids.P_GEO}.hideout") for k in before)
    c = sign_in_client(bare_app.server.test_client())
    assert c.get("/healthz").status_code == 200
    assert set(bare_app.callback_map) == before  # nothing added by a first request
    deps = c.get("/_dash-dependencies").get_json()
    served = {d["output"] for d in deps if not d.get("clientside_function")}
    assert served and served <= before  # every callback a browser may call, from the start


def _shell_lang(layout: dict[str, Any]) -> str:
    """The language the served layout speaks (its ``shell-lang`` store)."""
    found = [
        c["props"]["data"]
        for c in layout["props"]["children"]
        if isinstance(c, dict) and c["props"].get("id") == ids.LANG
    ]
    assert len(found) == 1, layout
    return str(found[0])


@pytest.mark.parametrize("path", ["/", "/wall"])
def test_a_url_with_lang_keeps_that_language_for_the_layout_and_callbacks(
    bare_app: Dash, path: str
) -> None:
    """A page opened as ``…?lang=en`` (a wall screen's configured URL) speaks English: its
    layout comes from ``/_dash-layout``, a later request without the query."""
    c = sign_in_client(bare_app.server.test_client())
    assert _shell_lang(c.get("/_dash-layout").get_json()) == "zh-CN"  # the default
    page = c.get(f"{path}?lang=en")
    assert page.status_code == 200 and '<html lang="en">' in page.data.decode()
    assert "wg_lang=en" in page.headers["Set-Cookie"]
    assert _shell_lang(c.get("/_dash-layout").get_json()) == "en"
    c.get(f"{path}?lang=zh")  # and back
    assert _shell_lang(c.get("/_dash-layout").get_json()) == "zh-CN"
    assert "Set-Cookie" not in c.get(path).headers  # no query: the choice stays
    assert "Set-Cookie" not in c.get(f"{path}?lang=fr").headers  # nor a language we lack
    # nor a request that is not a page: a push stream names its page's language, which
    # an open tab's stream would set back after a switch (/lang/en) to another
    assert "Set-Cookie" not in c.get("/geo/area/320100.json?lang=en").headers
    # …nor the stream an open tab retries while the browser already opens the switched
    # page (seen in CI: /lang/en, then the old tab's /push/work?…&lang=zh-CN put the
    # cookie back before the new page's layout was read). As Chromium sends it:
    c.get("/lang/en?next=/work")
    stream = c.get(
        "/push/work?area=320100&lang=zh-CN",
        headers={"Accept": "text/event-stream", "Sec-Fetch-Dest": "empty"},
    )
    assert stream.status_code == 404 and stream.mimetype == "text/plain"  # not a page
    assert "Set-Cookie" not in stream.headers
    # a page's own requests for a page (fetch metadata: not a document) keep it too, and
    # so does a browser without fetch metadata that asks for an event stream
    for headers in ({"Sec-Fetch-Dest": "empty"}, {"Accept": "text/event-stream"}):
        assert "Set-Cookie" not in c.get(f"{path}?lang=zh", headers=headers).headers
    assert _shell_lang(c.get("/_dash-layout").get_json()) == "en"
    # the address bar does set it (a browser with fetch metadata)
    opened = c.get(f"{path}?lang=zh", headers={"Sec-Fetch-Dest": "document"})
    assert "wg_lang=zh-CN" in opened.headers["Set-Cookie"]
    assert _shell_lang(c.get("/_dash-layout").get_json()) == "zh-CN"


def test_the_servers_clock_is_read_by_signed_in_screens_only(bare_app: Dash) -> None:
    """/clock.json (the wall's clock keeps to it) is the app's clock, never cached; a
    visitor without a session gets nothing."""
    anonymous = bare_app.server.test_client().get("/clock.json")
    assert anonymous.status_code == 401 and b"ms" not in anonymous.data
    got = sign_in_client(bare_app.server.test_client()).get("/clock.json")
    assert got.status_code == 200 and got.get_json() == {"ms": MOMENTS[0].ms}  # frozen clock
    assert got.headers["Cache-Control"] == "no-store"


def test_unknown_area_is_a_friendly_panel(bare_app: Dash) -> None:
    layout = page_module("panorama", "layout").layout
    with signed_in(bare_app):
        page = layout(area_id="<script>nope")
    assert page.id == "notfound"
    text = str(page)
    assert "未找到该区域" in text and "<script>nope" in text  # rendered as text by React


def test_routes(bare_app: Dash) -> None:
    c = sign_in_client(bare_app.server.test_client())
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
    assert "://" not in "".join(re.findall(r'(?:src|href)="([^"]*)"', html))  # all local
    assert "unpkg" not in html.lower() and "cdn." not in html.lower()
    # before its scripts run, the page speaks the viewer's language (Dash's boot screen
    # says "Loading..." in English)
    assert '<html lang="zh-CN">' in html and "加载中…" in html and "Loading..." not in html
    # ... and so does the renderer's own "Loading..." while the layout loads (hidden, the
    # catalog's words shown instead)
    assert '._dash-loading::after{content:"加载中…"' in html
    c.get("/lang/en")
    english = c.get("/").data.decode()
    assert '<html lang="en">' in english and "Loading…" in english
    c.get("/lang/zh-CN")
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
    clock = Clock(MOMENTS[0].ms)
    fill(settings, city, r, engine, clock.now_ms, minutes=5)
    app = create_app(settings, city=city, r=r, clock=clock)
    refresh = page_module("panorama").refresh
    b = backend(app)
    with signed_in(app):
        ok = refresh(0, "open", [], city.city_id, None, "en")
        assert ok[9] == ""
        last_ok = ok[11]
        flaky_redis.stop()
        b.cache.local.clear()
        clock.advance(60_000)  # a later tick: nothing cached
        stale = refresh(1, "open", [], city.city_id, last_ok, "en")
        assert stale[0] is no_update and "stale since" in str(stale[9])
        flaky_redis.start()  # same port: the client reconnects by itself
        back = refresh(2, "open", [], city.city_id, last_ok, "en")
        assert back[9] == "" and back[0] is not no_update
