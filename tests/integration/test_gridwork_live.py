"""Grid work on real Redis + SQL with a simulated city: the refresh per role, track replay,
the audited and rate-limited export, the roster import and the retention purge."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from dash import Dash, no_update
from sqlalchemy import Engine, select

from dashboard.app import create_app, page_module
from dashboard.auth import authorize
from dashboard.backend import Backend
from pipelines.access import accounts, audit
from pipelines.city.geography import City, GridIndex
from pipelines.cli import main
from pipelines.gridwork import tracks as work
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.events import encode
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish
from tests.clock import Clock, Moment, local
from tests.conftest import (
    open_engine,
    private_database,
    private_prefix,
    settings_for,
    sign_in_client,
    signed_in,
)
from tests.integration.test_dashboard import fill, pings

pytestmark = pytest.mark.integration
PHONE = re.compile(r"(?<![\d.])1[3-9]\d{9}(?!\d)")  # a full mobile number: never shown


def walk_along(
    settings: Settings,
    city: City,
    r: redis.Redis,
    engine: Engine,
    clock: Clock,
    events: list[tuple[str, bytes]],
) -> None:
    """A second worker walks with the busiest one (20 s behind, ~30 m aside), sent through
    the real pipeline: the simulated workers mostly keep to their own grid, and at night
    few are out, so a grid walked by two workers is made, not left to chance. The mate
    is a worker of the same street who sent nothing in the window."""
    walked = pings(events)
    lead = busiest(engine)
    roster = store.read_frame(engine, select(store.workers.c.worker_id, store.workers.c.grid_id))
    chain = roster.join(city.grids.select("grid_id", "street_id"), "grid_id")
    street = chain.filter(pl.col("worker_id") == lead)["street_id"][0]
    idle = chain.filter(
        pl.col("street_id") == street, ~pl.col("worker_id").is_in(walked["worker_id"].to_list())
    )
    mate = str(idle.sort("worker_id")["worker_id"][0])
    steps = walked.filter(pl.col("worker_id") == lead, pl.col("ts") + 20_000 < clock.now_ms)
    along = [
        encode(
            {
                "worker_id": mate,
                "ts": ts + 20_000,
                "lon": round(lon + 0.0003, 6),
                "lat": round(lat - 0.0002, 6),
            }
        )
        for ts, lon, lat in steps.select("ts", "lon", "lat").iter_rows()
    ]
    w = make_worker("locations", settings, city, GridIndex(city), r, engine, "mate", clock=clock)
    publish(r, w.consumer.stream, along)
    while w.step().acked:
        pass
    ClockJob(settings, city, live_state(r, settings), r, clock=clock).tick()


def busiest(engine: Engine) -> str:
    """The worker with the most track points (the last id of a tie)."""
    pts = store.read_frame(engine, select(store.track_points.c.worker_id))
    top = pts.group_by("worker_id").len().sort(["len", "worker_id"], descending=True)
    return str(top["worker_id"][0])


@dataclass
class Shared:
    app: Dash
    engine: Engine
    clock: Clock


@pytest.fixture(scope="module")
def shared(redis_url: str, city: City, moment: Moment, tmp_path_factory: Any) -> Iterator[Shared]:
    """The half hour before the moment for the module's read-only tests (its own prefix and
    database per moment), an app whose clock stands at the moment."""
    tmp = tmp_path_factory.mktemp("w")
    with private_prefix(redis_url) as prefix, private_database(tmp) as db:
        settings = settings_for(redis_url, prefix, db, tmp)
        r = redis.Redis.from_url(redis_url)
        eng = open_engine(db)
        clock = Clock(moment.ms)
        events = fill(settings, city, r, eng, clock.now_ms, minutes=30)
        walk_along(settings, city, r, eng, clock, events)
        yield Shared(create_app(settings, city=city, r=r, clock=clock), eng, clock)
        eng.dispose()
        r.close()


@pytest.fixture
def app(shared: Shared) -> Dash:
    return shared.app


@pytest.fixture
def app_engine(shared: Shared) -> Engine:
    return shared.engine


def backend(app: Dash) -> Backend:
    b: Backend = app.server.extensions["wangge"]
    return b


def busy_worker(b: Backend) -> tuple[str, str, str]:
    """(worker_id, its street, its district) of a worker with the most track points."""
    wid = busiest(b.engine)
    roster = b.roster().filter(pl.col("worker_id") == wid)
    return wid, str(roster["street_id"][0]), str(roster["district_id"][0])


def test_city_leader_sees_counts_and_clusters_never_people(app: Dash) -> None:
    refresh = page_module("work").refresh
    b = backend(app)
    names = set(b.roster()["name"].to_list())
    with signed_in(app, role="city_leader", scope=b.city.city_id):
        out = refresh(0, b.city.city_id, None, None, "zh-CN")
        hide, _legend, kpis, markers, _gaps, children, _logs, stale, last, sent = out
        assert len(hide["values"]) == 11 and stale == "" and last
        assert len(kpis) == 6 and len(children.children[1].children) == 11  # one row per district
        kinds = {f["properties"]["k"] for f in markers["features"]}
        assert kinds == {"c"}  # clusters only
        n_markers = sum(f["properties"]["on"] + f["properties"]["off"] for f in markers["features"])
        assert n_markers == len(b.live.positions())
        again = refresh(1, b.city.city_id, last, sent, "zh-CN")  # the viewer has it all
        assert all(x is no_update for x in again[:7]) and again[8] == last
        district = b.city.children(b.city.city_id)[0]
        drill = page_module("work").drill_down
        assert drill({"properties": {"id": district}}, b.city.city_id) == f"/work/{district}"
        assert drill({"properties": {"id": "x"}}, b.city.city_id) is no_update
        street = b.city.ids("street")[0]
        st = refresh(0, street, None, None, "zh-CN")
        assert {f["properties"]["k"] for f in st[3]["features"]} <= {"c"}
    text = json.dumps([str(x) for x in (*out, *st)], ensure_ascii=False)
    assert not any(n in text for n in names if len(n) >= 2)
    assert not PHONE.search(text) and "****" not in text  # not even masked numbers


def test_commander_sees_workers_activity_and_replays_a_track(app: Dash, app_engine: Engine) -> None:
    engine = app_engine
    mod = page_module("work")
    b = backend(app)
    wid, street, district = busy_worker(b)
    with signed_in(app, role="district_commander", scope=district, username="cmd"):
        out = mod.refresh(0, street, None, None, "zh-CN")
        markers, table = out[3], out[5]
        workers = [f for f in markers["features"] if f["properties"]["k"] == "w"]
        assert workers and all(f["properties"]["n"] for f in workers)
        text = str(table)
        name = b.roster().filter(pl.col("worker_id") == wid)["name"][0]
        assert name in text and "km" in text and "****" in text and not PHONE.search(text)
        # replay: the worker's track, reports on the way, an export link
        load = mod.load_track
        out = load(wid, None, 2, None, None, None, "zh-CN")
        data, reports, outline, url, span, value, summary, href, style = out
        (w,) = data["workers"]
        assert w["id"] == wid and w["n"] == name and len(w["t"]) == len(w["ll"]) >= 10
        assert span > 0 and value == 0 and url is None and outline["features"] == []
        assert w["t"] == sorted(w["t"]) and "公里" in summary[0]
        assert all(f["properties"]["k"] == "r" for f in reports["features"])
        assert "reports" not in data  # drawn from the report layer, not sent twice
        assert href == f"/export/track/{wid}.csv?hours=2" and style == {}
        # a worker of another district: nothing
        other = b.roster().filter(pl.col("district_id") != district)["worker_id"][0]
        assert load(other, None, 2, None, None, None, "zh-CN")[0] is None
        assert load("nope", None, 2, None, None, None, "zh-CN")[0] is None
        # a chosen window: refused with the catalogue's words, or replayed
        bad = load(wid, None, "day", "2026-01-01", 12, 8, "zh-CN")
        assert bad[0] is None and "结束时间须晚于开始时间" in str(bad[6])
        # the local hour that began before ten minutes ago (yesterday's last hour just
        # after midnight): the worker walked in it
        ref = local(b.now_ms() - 10 * 60_000)
        day, h = ref.date().isoformat(), ref.hour
        got = load(wid, None, "day", day, h, h + 1, "zh-CN")
        (w,) = got[0]["workers"]
        since = int(ref.replace(minute=0, second=0, microsecond=0).timestamp() * 1000)
        assert all(since <= t < since + 3_600_000 for t in w["t"]) and len(w["t"]) >= 2
        assert got[7] == f"/export/track/{wid}.csv?day={day}&from={h}&to={h + 1}"
        # filter by grid: the grid's own workers are offered
        grid = b.roster().filter(pl.col("worker_id") == wid)["grid_id"][0]
        at_grid = mod.refresh(0, grid, None, None, "zh-CN")  # the grid level itself
        assert len(at_grid[0]["values"]) == 1 and name in str(at_grid[5])
        opts = mod.filter_workers(grid, 2, None, None, None, district)
        assert wid in {o["value"] for o in opts}
    with signed_in(app, role="city_leader", scope=b.city.city_id):
        assert mod.load_track(wid, None, 2, None, None, None, "zh-CN")[0] is None  # counts only
    views = audit.query(engine, limit=50)
    assert "track_view" in views["action"].to_list()


def busy_grid(b: Backend, district: str) -> tuple[str, list[str]]:
    """A grid of the district that most workers' tracks passed through, and those workers."""
    tp = store.track_points
    pts = store.read_frame(b.engine, select(tp.c.worker_id, tp.c.grid_id))
    grids = b.city.grids.filter(pl.col("district_id") == district).select("grid_id")
    top = (
        pts.join(grids, "grid_id")
        .group_by("grid_id")
        .agg(pl.col("worker_id").unique().sort())
        .with_columns(n=pl.col("worker_id").list.len())
        .sort(["n", "grid_id"], descending=True)
    )
    row = top.row(0, named=True)
    return row["grid_id"], row["worker_id"]


def test_commander_replays_a_grid_all_workers_together(app: Dash, app_engine: Engine) -> None:
    mod = page_module("work")
    b = backend(app)
    _wid, _street, district = busy_worker(b)
    grid, passed = busy_grid(b, district)
    assert len(passed) >= 2  # the simulated city has 400 workers on 300 grids
    in_scope = set(b.roster().filter(pl.col("district_id") == district)["worker_id"].to_list())
    with signed_in(app, role="district_commander", scope=district, username="cmd"):
        out = mod.load_track(None, grid, 2, None, None, None, "zh-CN")
        data, reports, outline, url, span, value, summary, href, style = out
        got = [w["id"] for w in data["workers"]]
        assert set(got) == set(passed) & in_scope and len(got) >= 2
        assert len({w["c"] for w in data["workers"]}) == len(got)  # a colour each
        assert outline is None and url == f"/geo/area/{grid}.json"  # the grid highlighted
        assert span > 0 and value == 0 and style == {}
        assert href == f"/export/track/grid/{grid}.csv?hours=2"
        text = str(summary)
        assert "名网格员" in text and all(w["n"] in text for w in data["workers"])
        for f in reports["features"]:
            assert f["properties"]["k"] == "r" and " · " in f["properties"]["n"]
        # the worker choice wins over the grid
        one = mod.load_track(got[0], grid, 2, None, None, None, "zh-CN")[0]
        assert [w["id"] for w in one["workers"]] == [got[0]]
        # a grid outside the scope: nothing
        far = b.city.grids.filter(pl.col("district_id") != district)["grid_id"][0]
        assert mod.load_track(None, far, 2, None, None, None, "zh-CN")[0] is None
    rows = audit.query(app_engine, limit=50).filter(pl.col("target") == grid)
    detail = rows.filter(pl.col("action") == "track_view")["detail"][0]
    detail = detail if isinstance(detail, dict) else json.loads(detail)
    assert detail["grid"] == grid and detail["count"] == len(got) and detail["hours"] == "2"
    assert sorted(detail["workers"]) == sorted(got) and detail["since_ms"] < detail["until_ms"]


def test_refresh_is_computed_once_per_tick_for_all_viewers(
    app: Dash, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = page_module("work")
    b = backend(app)
    later = Clock(b.now_ms() + 3_600_000)  # a tick no earlier test has computed
    monkeypatch.setattr(b, "clock", later)
    with signed_in(app, role="city_leader", scope=b.city.city_id):
        before = b.cache.computed
        for _ in range(20):
            mod.panel(b, authorize(b.city.city_id, "aggregates"))
        assert b.cache.computed - before == 1


def test_track_export_is_scoped_rate_limited_and_audited(app: Dash, app_engine: Engine) -> None:
    engine = app_engine
    b = backend(app)
    wid, _street, district = busy_worker(b)
    now = b.now_ms()
    for name, role, scope in (
        ("cmd", "district_commander", district),
        ("boss", "city_leader", b.city.city_id),
    ):
        accounts.create_user(
            engine, b.city, name, role, scope, password="pass-word-123", now_ms=now
        )
    c = sign_in_client(app.server.test_client(), "district_commander", district, "cmd")
    resp = c.get(f"/export/track/{wid}.csv?hours=2")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    lines = resp.get_data(as_text=True).splitlines()
    head = "worker_id,time_utc,time_local,lon,lat,grid_id,worker_name,grid_name"
    assert lines[0] == head and len(lines) > 10
    first = next(csv.DictReader(io.StringIO("\n".join(lines))))
    assert first["grid_name"] == b.city.area(first["grid_id"])["name"]  # type: ignore[index]
    # a grid's export: every worker the grid replay shows, one column says whose point
    grid, _passed = busy_grid(b, district)
    resp = c.get(f"/export/track/grid/{grid}.csv?hours=2")
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert resp.status_code == 200 and len({r["worker_id"] for r in rows}) >= 2
    assert c.get(f"/export/track/grid/{grid}.csv?day=2026-01-01&from=9&to=8").status_code == 400
    far = b.city.grids.filter(pl.col("district_id") != district)["grid_id"][0]
    assert c.get(f"/export/track/grid/{far}.csv").status_code == 403
    assert c.get(f"/export/track/grid/{district}.csv").status_code == 403  # not a grid
    other = b.roster().filter(pl.col("district_id") != district)["worker_id"][0]
    assert c.get(f"/export/track/{other}.csv").status_code == 403
    assert c.get("/export/track/nobody.csv").status_code == 403
    leader = sign_in_client(app.server.test_client(), "city_leader", b.city.city_id, "boss")
    assert leader.get(f"/export/track/{wid}.csv").status_code == 403
    assert app.server.test_client().get(f"/export/track/{wid}.csv").status_code == 401
    codes = [c.get(f"/export/track/{wid}.csv").status_code for _ in range(25)]
    assert 429 in codes  # auth.export_rate_per_minute (20), shared in Redis
    log = audit.query(engine, limit=200)
    actions = log["action"].to_list()
    assert "track_export" in actions and "track_export_limited" in actions
    assert f"grid-{grid}" in log.filter(pl.col("action") == "track_export")["target"].to_list()


def test_track_purge_in_the_clock_job(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, moment: Moment
) -> None:
    now = moment.ms
    day = 86_400_000
    rows = [
        {"worker_id": "W1", "slot": i, "ts_ms": now - age * day, "lon": 118.8, "lat": 32.0}
        | {"grid_id": "g", "accuracy": None, "speed": None, "battery": None}
        for i, age in enumerate((200, 181, 179, 1))
    ]
    with engine.begin() as conn:
        store.insert_ignore(conn, store.track_points, rows)
    settings = dataclasses.replace(
        live_settings,
        privacy=dataclasses.replace(live_settings.privacy, track_retention_days=180),
    )
    clock = Clock(now)
    job = ClockJob(settings, city, live_state(rclient, settings), rclient, clock)
    job.engine = engine
    assert job.purge(now) == {"track_points": 2, "positions": 0}
    assert work.oldest_track_ms(engine) == now - 179 * day
    clock.advance(60_000)  # within the purge period: not run again
    job.tick()
    assert store.table_count(engine, store.track_points) == 2
    assert work.purge_tracks(engine, 180, now) == {"track_points": 0, "positions": 0}  # idempotent


def test_workers_import_cli_all_or_nothing(
    live_settings: Settings,
    engine: Engine,
    city: City,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = live_settings
    monkeypatch.setattr("pipelines.cli.load_settings", lambda _path=None: settings)
    monkeypatch.setattr("pipelines.cli.admin.load_city", lambda _s: city)
    grid = city.grids["grid_id"][0]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"worker_id,name,type,grid_id,phone\nW1,张三,专职,{grid},13812345678\nW2,李四,boss,{grid},\n",
        encoding="utf-8",
    )
    assert main(["workers", "import", str(bad)]) == 1
    assert store.table_count(engine, store.workers) == 0  # nothing half-imported
    good = tmp_path / "good.csv"
    good.write_text(
        f"worker_id,name,type,grid_id,phone\nW1,张三,专职,{grid},13812345678\n"
        f"W2,李四,应急格,{grid},\n",
        encoding="utf-8",
    )
    assert main(["workers", "import", str(good)]) == 0
    rows = store.read_frame(engine, select(store.workers).order_by(store.workers.c.worker_id))
    assert rows["phone_masked"].to_list() == ["138****5678", None]
    assert rows["type"].to_list() == ["full_time", "emergency"]
    assert "workers_import" in audit.query(engine, limit=20)["action"].to_list()
    # --replace: the file is the whole roster
    one = tmp_path / "one.csv"
    one.write_text(f"worker_id,name,type,grid_id\nW9,王五,part_time,{grid}\n", encoding="utf-8")
    assert main(["workers", "import", "--replace", str(one)]) == 0
    assert store.read_frame(engine, select(store.workers.c.worker_id))["worker_id"].to_list() == [
        "W9"
    ]
