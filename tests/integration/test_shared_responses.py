"""Per-tick responses built once (``dashboard/responses.py``), through the real HTTP
dispatch (``/_dash-update-component``) of sessions with different rights on one area in
one refresh tick.

From the rules (README "Privacy", "Accounts, scope and audit"):

* the permission is decided first on every request: a viewer outside the area's scope
  gets the refusal (the denied panel), never a stored answer, and a refusal is never
  stored;
* a city leader sees aggregates only, a district commander of the street's district its
  workers' live positions as well: two data classes, two answers, never exchanged;
* viewers of the same data class in the same tick get the same bytes, and the second one
  costs no serialisation (the product's instrumented counter ``ResponseCache.built``);
  the next tick is serialised anew; gzip and brotli carry the same JSON.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import brotli
import polars as pl
import pytest
import redis
from dash import Dash

from dashboard import ids
from dashboard.app import create_app
from dashboard.i18n import t
from dashboard.responses import EXTENSION, ResponseCache
from pipelines.access import accounts
from pipelines.city.geography import City
from tests.clock import MOMENTS, Clock
from tests.conftest import (
    open_engine,
    private_database,
    private_prefix,
    settings_for,
    sign_in_client,
)
from tests.integration.test_dashboard import fill, pings

pytestmark = pytest.mark.integration


@dataclass
class World:
    app: Dash
    clock: Clock
    street: str  # a street whose workers sent positions
    district: str  # its district
    elsewhere: str  # another district
    workers: set[str]  # the street's workers with a position
    make_app: Any  # another web worker's app on the same Redis, database and clock


@pytest.fixture(scope="module")
def world(redis_url: str, city: City, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("responses")
    moment = MOMENTS[0]
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        settings = settings_for(redis_url, prefix, db, tmp)
        r = redis.Redis.from_url(redis_url)
        engine = open_engine(db)
        clock = Clock(moment.ms)
        events = fill(settings, city, r, engine, clock.now_ms)
        app = create_app(settings, city=city, r=r, clock=clock)
        accounts.create_user(
            engine, city, "tester", "city_leader", city.city_id, "not-used-1", now_ms=clock.now_ms
        )
        # the input: which workers sent a position, and the street with most of them
        pinged = set(pings(events)["worker_id"].to_list())
        b = app.server.extensions["wangge"]
        roster = b.roster().filter(pl.col("worker_id").is_in(list(pinged)))
        street = roster.group_by("street_id").len().sort(["len", "street_id"]).row(-1)[0]
        mine = set(roster.filter(pl.col("street_id") == street)["worker_id"].to_list())
        district = city.ancestors(street)[1]
        elsewhere = next(d for d in city.children(city.city_id) if d != district)

        def make_app() -> Dash:
            return create_app(settings, city=city, r=r, clock=clock)

        yield World(app, clock, street, district, elsewhere, mine, make_app)
        engine.dispose()
        r.close()


def refresh_body(app: Dash, area: str, n: int) -> dict[str, Any]:
    """The JSON dash-renderer POSTs for the panorama's refresh of ``area``."""
    key = next(k for k in app.callback_map if k.startswith(f"..{ids.P_GEO}.hideout..."))
    cb = app.callback_map[key]
    values_in: list[Any] = [n, "online", []]
    values_st: list[Any] = [area, None, "zh-CN", None]  # the last: live (no ?at=)
    ins = [{**i, "value": v} for i, v in zip(cb["inputs"], values_in, strict=True)]
    sts = [{**s, "value": v} for s, v in zip(cb["state"], values_st, strict=True)]
    outs = [{"id": o.split(".")[0], "property": o.split(".")[1]} for o in key[2:-2].split("...")]
    return {
        "output": key,
        "outputs": outs,
        "inputs": ins,
        "state": sts,
        "changedPropIds": [f"{ids.P_TICK}.n_intervals"],
    }


def viewer(w: World, role: str, scope: str, name: str) -> Any:
    return sign_in_client(w.app.server.test_client(), role, scope, name)


def ask(client: Any, app: Dash, area: str, n: int, encoding: str = "") -> Any:
    headers = {"Origin": "http://localhost"}
    if encoding:
        headers["Accept-Encoding"] = encoding
    return client.post(
        "/_dash-update-component",
        data=json.dumps(refresh_body(app, area, n)),
        content_type="application/json",
        headers=headers,
    )


def worker_ids(raw: bytes) -> set[str]:
    """The individual workers a panorama answer shows (map markers of kind "w")."""
    markers = json.loads(raw)["response"][ids.P_MARKERS]["data"]
    return {f["properties"]["id"] for f in markers["features"] if f["properties"]["k"] == "w"}


def text_of(raw: bytes) -> str:
    """Every string of a JSON answer, joined (JSON may escape CJK text)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(raw))
    return "\n".join(out)


def counts(app: Dash) -> tuple[int, int]:
    rc: ResponseCache = app.server.extensions[EXTENSION]
    return rc.built, rc.served


def test_viewers_of_one_area_and_tick_share_only_what_they_may_see(world: World) -> None:
    w = world
    app = w.app
    app.server.test_client().get("/_dash-dependencies")  # fills callback_map on first use
    w.clock.advance(3_600_000)  # a tick of its own
    assert w.workers, "the simulated street has workers with positions"
    leader = viewer(w, "city_leader", "320100", "leader-a")
    leader2 = viewer(w, "city_leader", "320100", "leader-b")
    cmd = viewer(w, "district_commander", w.district, "cmd-a")
    cmd2 = viewer(w, "district_commander", w.district, "cmd-b")
    outsider = viewer(w, "district_commander", w.elsewhere, "cmd-x")
    denied = t("auth.denied", "zh-CN")

    # a refusal first: nothing is built nor served, and it reads the refusal
    built, served = counts(app)
    resp = ask(outsider, w.app, w.street, 1)
    assert resp.status_code == 200 and denied in text_of(resp.data)
    assert counts(app) == (built, served)

    first = ask(leader, w.app, w.street, 1)
    assert first.status_code == 200
    assert counts(app) == (built + 1, served)  # serialised once
    assert worker_ids(first.data) == set()  # aggregates only for a city leader
    second = ask(leader2, w.app, w.street, 2)
    assert second.data == first.data
    assert counts(app) == (built + 1, served + 1)  # the second viewer: no serialisation

    # the commander of the street's district: another data class, its own answer
    c1 = ask(cmd, w.app, w.street, 1)
    assert worker_ids(c1.data) == w.workers and c1.data != first.data
    assert counts(app) == (built + 2, served + 1)
    c2 = ask(cmd2, w.app, w.street, 3)
    assert c2.data == c1.data and counts(app) == (built + 2, served + 2)
    again = ask(leader, w.app, w.street, 3)  # after the commander: still the leader's own
    assert again.data == first.data and worker_ids(again.data) == set()

    # with the answers stored, a viewer outside the scope still gets the refusal
    for _ in range(2):
        resp = ask(outsider, w.app, w.street, 4)
        raw = resp.get_data()
        assert denied in text_of(raw) and raw not in (first.data, c1.data)
        assert not any(wid in text_of(raw) for wid in w.workers)
    assert counts(app) == (built + 2, served + 3)

    # the encodings carry the same JSON
    gz = ask(leader, w.app, w.street, 5, "gzip")
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz.data) == first.data
    br = ask(cmd, w.app, w.street, 5, "gzip, deflate, br")
    assert br.headers["Content-Encoding"] == "br"
    assert brotli.decompress(br.data) == c1.data
    assert counts(app) == (built + 2, served + 5)

    # the next tick is serialised anew (once)
    w.clock.advance(int(app.server.extensions["wangge"].refresh_s * 1000))
    ask(leader, w.app, w.street, 6)
    ask(leader2, w.app, w.street, 6)
    assert counts(app) == (built + 3, served + 6)


def test_first_load_scripts_are_light_and_compressed_once(world: World) -> None:
    """The page loads the basic Plotly bundle (not plotly.min.js) and no grid bundle; a
    script goes out in the encoding the client accepts, compressed once per file."""
    from pathlib import Path

    from dashboard.static import EXTENSION as STATIC
    from dashboard.static import StaticCompressor

    client = viewer(world, "city_leader", "320100", "leader-load")
    page = client.get("/").get_data(as_text=True)
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert any("vendor/plotly-basic.min.js" in s for s in scripts)
    assert not any("plotly.min.js" in s and "basic" not in s for s in scripts)
    assert not any("dash_ag_grid.min.js" in s or "dash_ag_grid.v" in s for s in scripts)
    # the maps' GeoJSON layer comes with the page, after dash-leaflet's bundle that takes
    # it in (else the map says React's English "Loading..." until it is fetched)
    leaflet = [i for i, s in enumerate(scripts) if "/dash_leaflet/" in s]
    names = [scripts[i].rsplit("/", 1)[1].split(".")[0] for i in leaflet]
    assert names[:2] == ["dash_leaflet", "async-GeoJSON"], names
    src = next(s for s in scripts if "plotly-basic" in s)
    raw = (Path(__file__).resolve().parents[2] / "assets/vendor/plotly-basic.min.js").read_bytes()
    comp: StaticCompressor = world.app.server.extensions[STATIC]
    before = comp.compressed
    br = client.get(src, headers={"Accept-Encoding": "gzip, deflate, br"})
    assert br.headers["Content-Encoding"] == "br" and brotli.decompress(br.data) == raw
    gz = client.get(src, headers={"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip" and gzip.decompress(gz.data) == raw
    plain = client.get(src)
    assert "Content-Encoding" not in plain.headers and plain.data == raw
    again = client.get(src, headers={"Accept-Encoding": "br"})
    assert brotli.decompress(again.data) == raw
    assert comp.compressed - before == 1  # once for every request of this file
    grid = client.get("/_dash-component-suites/dash_ag_grid/dash_ag_grid.min.js")
    assert grid.status_code == 200  # still served, for the page that shows a grid


def test_another_worker_serves_the_same_serialisation(world: World) -> None:
    """A second web worker (its own app and memory, the same Redis) answers a viewer of
    the same data in the same tick with the first worker's bytes, without serialising;
    its refusals stay refusals."""
    w = world
    w.clock.advance(7_200_000)  # a tick of its own
    # each worker sets its app up before the next is made (a worker is its own process;
    # in one test process, Dash hands page callbacks to the app that sets up first)
    w.app.server.test_client().get("/_dash-dependencies")
    other = w.make_app()
    other.server.test_client().get("/_dash-dependencies")
    built, served = counts(w.app)
    first = ask(viewer(w, "city_leader", "320100", "leader-w1"), w.app, w.street, 1)
    assert counts(w.app) == (built + 1, served)

    def on_other(role: str, scope: str, name: str) -> Any:
        return sign_in_client(other.server.test_client(), role, scope, name)

    outsider = ask(on_other("district_commander", w.elsewhere, "cmd-w2x"), other, w.street, 1)
    assert t("auth.denied", "zh-CN") in text_of(outsider.data)
    assert counts(other) == (0, 0)
    second = ask(on_other("city_leader", "320100", "leader-w2"), other, w.street, 2)
    assert second.data == first.data
    rc: ResponseCache = other.server.extensions[EXTENSION]
    assert (rc.built, rc.shared) == (0, 1)  # taken from Redis, not serialised again
