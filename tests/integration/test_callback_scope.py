"""Every server callback of the app, replayed by sessions of different scopes and roles in
the same refresh tick (one frozen clock, one Backend and its caches), in both orders.

Generated from the app's callback registry (``app.callback_map``): a new callback is
covered without editing this file; a callback whose inputs this file cannot classify
fails its test with a message naming it.

The oracle is written from the rules, not from the code under test:

* canaries (a worker's id, name, live position and track, an incident, a warning and
  outsized counts) are planted in one street of another district through the real
  pipeline (plus planted live counts), and each canary is visible to a session exactly
  when the session's scope covers the canary's area and, for individual-level data
  (live positions, tracks), its role is a command centre (README "Privacy");
* a session gets, in a tick shared with the others, exactly the canaries it gets alone
  in a fresh tick (nothing served from another viewer's cached answer, no cached
  refusal), and never one it may not see;
* the data callbacks do show the canaries to sessions that may see them (the canaries
  are real).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis
import shapely
from dash import Dash
from sqlalchemy import Engine

from dashboard.app import create_app
from pipelines import warnings as W
from pipelines.access import accounts, audit, wall_tokens
from pipelines.city.geography import City, GridIndex, demo_city
from pipelines.settings import Settings, load_settings
from pipelines.spine import store
from pipelines.spine.runner import ClockJob, live_state, make_worker
from pipelines.spine.streams import publish

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
# The app's clock: a Wednesday morning (nothing here depends on the machine's clock).
T0 = datetime(2026, 6, 10, 10, 0, tzinfo=TZ).timestamp()
MONTH = "2026-06"
REFRESH_S = 60.0  # one tick outlives a whole round of sessions (cache TTLs are real time)
MINE, OTHER = "320102", "320104"
COMMAND_CENTRES = frozenset({"district_commander", "street_operator"})  # README "Privacy"

WORKER = "WKCANARY7"
NAME = "金丝雀七号"
INCIDENT = "INCCANARY7"
EVIDENCE = "WARNCANARY7"
CANARY_N = 987654321


@dataclasses.dataclass(frozen=True)
class Canaries:
    district: str
    street: str
    neighbour: str  # another street of the same district
    grid: str
    pos: str  # the canary worker's live position: its longitude to 5 decimals (~1 m)
    track: str  # an earlier point of its track, the same way
    warning: str = ""

    def tokens(self) -> dict[str, tuple[str, ...]]:
        """canary → the strings that betray it in a response."""
        return {
            "worker": (WORKER,),
            "name": (NAME,),
            "position": (self.pos,),
            "track": (self.track,),
            "incident": (INCIDENT,),
            "warning": (self.warning, EVIDENCE),
            "counts": (str(CANARY_N), f"{CANARY_N:,}"),
        }

    def area(self, canary: str) -> str:
        return self.street if canary == "warning" else self.grid


# The kind of individual-level data a canary is (None: scope decides alone).
INDIVIDUAL = {"position": "positions", "track": "tracks"}


@dataclasses.dataclass(frozen=True)
class Session:
    username: str
    role: str
    scope: str
    wall: bool = False

    def may_see(self, canary: str, c: Canaries, city: City) -> bool:
        if not accounts.scope_allows(self.scope, c.area(canary), city):
            return False
        return canary not in INDIVIDUAL or self.role in COMMAND_CENTRES


def sessions_of(city: City, c: Canaries) -> list[Session]:
    """Who asks, in the order of the first round: those who may see the canaries first."""
    return [
        Session("cmd_other", "district_commander", c.district),
        Session("op_other", "street_operator", c.street),
        Session("leader", "city_leader", city.city_id),
        Session("cmd_mine", "district_commander", MINE),
        Session("op_nb", "street_operator", c.neighbour),  # the neighbouring street
        Session("sup_mine", "supervisor", MINE),
        Session("wall_mine", "wall", MINE, wall=True),
    ]


def _inside(city: City, grid: str, salt: str) -> tuple[float, float]:
    """A point inside ``grid`` whose longitude has 6 decimals ending in ``salt`` (whose last
    digit is below 5, so the 5-decimal rounding of a cluster of one keeps its prefix)."""
    geom = city.grid_geoms[city.grids["grid_id"].to_list().index(grid)]
    p = shapely.point_on_surface(geom)
    for dx in range(0, 400):
        lon = float(f"{p.x - 0.0002 + dx * 0.000001:.3f}{salt}")
        lat = round(p.y, 6)
        if shapely.contains_xy(geom, lon, lat) and repr(lon).endswith(salt):
            return lon, lat
    raise AssertionError(f"no point ending in {salt} inside {grid}")


def seed(settings: Settings, city: City, r: redis.Redis, engine: Engine, now: float) -> Canaries:
    """The canaries, through the real pipeline (roster, pings, a report), plus outsized live
    counts and a red warning in the canary street."""
    district = OTHER
    street, neighbour = city.children(district)[:2]
    grid = city.children(street)[0]
    mine_grid = city.children(city.children(MINE)[0])[0]
    nb_grid = city.children(neighbour)[0]
    pos_lon, pos_lat = _inside(city, grid, "432")
    track_lon, track_lat = _inside(city, grid, "913")
    inc_lon, inc_lat = _inside(city, grid, "271")
    now_ms = int(now * 1000)
    roster = [
        {"worker_id": WORKER, "name": NAME, "type": "full_time", "grid_id": grid},
        {"worker_id": "WKMINE1", "name": "本区一号", "type": "part_time", "grid_id": mine_grid},
        {"worker_id": "WKNB1", "name": "邻街一号", "type": "full_time", "grid_id": nb_grid},
    ]
    store.replace_table(
        engine,
        store.workers,
        [{**w, "phone_masked": "139****4321"} for w in roster],
    )
    walk = shapely.point_on_surface(city.grid_geoms[city.grids["grid_id"].to_list().index(grid)])
    pings = []
    for i in range(40, 0, -1):  # a ping a minute for 40 minutes; the last is the live position
        lon, lat = {30: (track_lon, track_lat), 1: (pos_lon, pos_lat)}.get(i, (walk.x, walk.y))
        pings.append({"worker_id": WORKER, "ts": now_ms - i * 60_000, "lon": lon, "lat": lat})
    mine_pt = shapely.point_on_surface(
        city.grid_geoms[city.grids["grid_id"].to_list().index(mine_grid)]
    )
    pings.append(
        {"worker_id": "WKMINE1", "ts": now_ms - 60_000, "lon": mine_pt.x, "lat": mine_pt.y}
    )
    steps = [("reported", 20), ("accepted", 18), ("dispatched", 15)]
    reports = [
        {
            "event_id": f"{INCIDENT}-{step}",
            "incident_id": INCIDENT,
            "ts": now_ms - ago * 60_000,
            "step": step,
            "category": "fire",
            "severity": 3,
            "source": "worker",
            "reporter_id": WORKER,
            "handler_id": WORKER,
            "lon": inc_lon,
            "lat": inc_lat,
            "level": "grid",
        }
        for step, ago in steps
    ]
    index = GridIndex(city)
    clock = lambda: now  # noqa: E731
    for feed, payloads in (("locations", pings), ("reports", reports)):
        w = make_worker(feed, settings, city, index, r, engine, f"{feed}-canary", clock=clock)
        publish(r, w.consumer.stream, [orjson.dumps(p) for p in payloads])
        while w.step().acked:
            pass
    live = live_state(r, settings)
    assert live.deadletter_counts() == {}, "a canary event was refused by the pipeline"
    ClockJob(settings, city, live, r, clock).tick()
    for area in (district, street, grid):
        r.hset(live.keys.live("open"), area, CANARY_N)
        r.hset(live.keys.live("overdue"), area, CANARY_N)
    finding = W.Finding("surge", street, "red", "surge:canary", (EVIDENCE,), {"n": EVIDENCE})
    new, _, _ = W.update_open([], [finding], now_ms, W.RuleConfig())
    W.persist(engine, new, [], [], now_ms)
    W.republish(engine, live, city)
    canaries = Canaries(
        district, street, neighbour, grid, repr(pos_lon)[:-1], repr(track_lon)[:-1],
        new[0].warning_id,
    )  # fmt: skip
    others = " ".join(repr(float(v)) for v in city.areas.select("lon", "lat").to_numpy().ravel())
    others += f" {walk.x!r} {walk.y!r} {inc_lon!r}"
    assert canaries.pos not in others and canaries.track not in others  # distinctive
    return canaries


# ------------------------------------------------------------------ the app under test


@dataclasses.dataclass
class World:
    app: Dash
    city: City
    canaries: Canaries
    sessions: list[Session]
    clock: list[float]
    clients: dict[str, Any]
    tick_no: int = 0
    owned: dict[str, Any] = dataclasses.field(default_factory=dict)  # the owner's token, job

    def fresh_tick(self) -> None:
        """The next refresh tick: nothing cached by an earlier request is keyed to it."""
        self.tick_no += 1
        self.clock[0] = T0 + self.tick_no * REFRESH_S + 0.5


@pytest.fixture
def world(
    redis_url: str, prefix: str, db_url: tuple[str, str | None], tmp_path: Any, city: City,
    engine: Engine, rclient: redis.Redis,
) -> Iterator[World]:  # fmt: skip
    from tests.conftest import settings_for

    settings = settings_for(redis_url, prefix, db_url, tmp_path, dashboard={"refresh_s": REFRESH_S})
    canaries = seed(settings, city, rclient, engine, T0)
    clock = [T0 + 0.5]
    app = create_app(settings, city=city, r=rclient, clock=lambda: clock[0])
    sessions = sessions_of(city, canaries)
    clients = {}
    for s in sessions:
        accounts.create_user(
            engine, city, s.username, s.role, s.scope, password=None if s.wall else "pass-word-123",
            now_ms=int(T0 * 1000),
        )  # fmt: skip
        c = app.server.test_client()
        guard = app.server.extensions["wangge.guard"]
        known = accounts.get_user(engine, s.username)
        now_ms = guard.now_ms()
        wall = None
        if s.wall:  # a kiosk signs in with a real token (its session lives as long)
            token = wall_tokens.issue_wall_token(engine, s.username, 30, now_ms)
            wall = wall_tokens.check_wall_token(engine, token, now_ms)
            assert wall is not None
        session = guard.sessions.start(
            username=s.username,
            role=s.role,
            scope=s.scope,
            display_name=s.username,
            now_ms=now_ms,
            stamp=known.stamp if known is not None else "",
            wall=s.wall,
            token_id=wall.token_id if wall else "",
            token_expires_ms=wall.expires_ms if wall else 0,
            csrf="test-csrf",
        )
        with c.session_transaction() as sess:
            sess["sid"] = session.sid
        clients[s.username] = c
    yield World(app, city, canaries, sessions, clock, clients)


def registry(app: Dash) -> dict[str, Any]:
    app.server.test_client().get("/_dash-dependencies")  # fills callback_map on first use
    return {k: v for k, v in app.callback_map.items() if v.get("callback") is not None}


@pytest.fixture(scope="module")
def registry_keys() -> list[str]:
    return _registry_keys()


def _registry_keys() -> list[str]:
    return sorted(_specs())


@functools.cache
def _specs() -> dict[str, Any]:
    """The app's server callbacks (an app built on a throwaway database, Redis unused)."""
    import tempfile

    base = load_settings(environ={})
    with tempfile.TemporaryDirectory() as tmp:
        s = dataclasses.replace(
            base,
            database=dataclasses.replace(base.database, url=f"sqlite:///{tmp}/keys.db", schema=""),
            run=dataclasses.replace(base.run, var_dir=tmp),
        )
        app = create_app(s, city=demo_city(2026, n_grids=300), r=redis.Redis(port=1))
        return registry(app)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "callback_key" in metafunc.fixturenames:
        keys = _registry_keys()
        metafunc.parametrize("callback_key", keys, ids=[k.strip(".").split("...")[0] for k in keys])


# ------------------------------------------------------------------ driving a callback


class Variants(tuple):  # type: ignore[type-arg]
    """Several values for one input, tried in turn (aligned across the callback's inputs)."""


# (component id, property) → its value. Ids of things (area, grid, worker, warning, job,
# shown table) point at the canaries; everything else gets an ordinary value.
IDS: dict[tuple[str, str], Callable[[World, Session], Any]] = {
    ("_pages_location", "pathname"): lambda w, s: Variants(
        (
            f"/area/{w.canaries.street}",
            f"/work/{w.canaries.street}",
            "/wall/" + w.canaries.street,
            "/warnings",
            "/assessment",
            f"/incidents/{INCIDENT}",
            "/incidents",
        )
    ),
    ("_pages_location", "search"): lambda w, s: Variants(
        (
            "",
            "",
            "",
            "",
            f"?level=worker&period={MONTH}&area={w.canaries.grid}",
            "",
            f"?area={w.canaries.grid}&id={INCIDENT}",
        )
    ),
    ("pan-area", "data"): lambda w, s: w.canaries.street,
    ("wall-area", "data"): lambda w, s: {"area": w.canaries.street, "metric": "open"},
    ("wall-tour", "data"): lambda w, s: {
        "home": w.canaries.street,
        "views": ["panorama", "warnings", "work", "assessment"],
        "area_s": 2,
        "page_s": 2,
    },
    ("wall-stop", "data"): lambda w, s: Variants(
        {"i": 0, "key": f"{view}:{w.canaries.street}", "take": None, "view": view}
        for view in ("panorama", "warnings", "work", "assessment")
    ),
    ("work-area", "data"): lambda w, s: w.canaries.street,
    ("pan-geo", "clickData"): lambda w, s: {"properties": {"id": w.canaries.street}},
    ("work-geo", "clickData"): lambda w, s: {"properties": {"id": w.canaries.street}},
    ("wtrk-grid", "value"): lambda w, s: w.canaries.grid,
    ("wtrk-worker", "value"): lambda w, s: WORKER,
    ("warn-sel", "data"): lambda w, s: w.canaries.warning,
    ("warn-area", "value"): lambda w, s: w.canaries.street,
    ("warn-markers", "clickData"): lambda w, s: {"properties": {"id": w.canaries.warning}},
    ("asm-view", "data"): lambda w, s: {
        "level": "worker",
        "period": MONTH,
        "area": w.canaries.grid,
    },
    ("asm-table", "cellClicked"): lambda w, s: {
        "rowIndex": 0,
        "colId": "reports",
        "rowId": WORKER,
        "value": 1,
        "timestamp": 1,
    },
    ("asm-behind-table", "cellClicked"): lambda w, s: {
        "rowIndex": 0,
        "colId": "incident_id",
        "rowId": INCIDENT,
        "value": INCIDENT,
        "timestamp": 1,
    },
    ("inc-view", "data"): lambda w, s: {"area": w.canaries.grid, "id": INCIDENT},
    ("inc-sel", "data"): lambda w, s: INCIDENT,
    ("inc-shown", "data"): lambda w, s: {"id": INCIDENT, "n_events": 3},
    ("inc-area", "value"): lambda w, s: w.canaries.street,
    ("inc-grid", "cellClicked"): lambda w, s: {
        "rowIndex": 0,
        "colId": "incident_id",
        "rowId": INCIDENT,
        "value": INCIDENT,
        "timestamp": 1,
    },
    ("inc-grid", "selectedRows"): lambda w, s: [{"id": INCIDENT, "n_events": 3}],
    ("inca-form", "data"): lambda w, s: {
        "action": "accept",
        "incident_id": INCIDENT,
        "request_id": f"scope-{s.username}",
        "expected_events": 3,
    },
    ("inca-pending", "data"): lambda w, s: {
        "incident_id": INCIDENT,
        "request_id": f"scope-{s.username}",
    },
    ("inca-bulk-form", "data"): lambda w, s: {INCIDENT: [f"bulk-{s.username}", 3]},
    ("asm-token", "data"): lambda w, s: owners_token(w),
    ("asm-job", "data"): lambda w, s: owners_job(w),
    ("asm-ready", "data"): lambda w, s: owners_job(w),
}
PATTERN_IDS: dict[tuple[str, str], Callable[[World], Any]] = {
    ("warn-row", "n_clicks"): lambda w: w.canaries.warning,  # {"type": "warn-row", "id": …}
    ("inca-btn", "n_clicks"): lambda w: "accept",  # {"type": "inca-btn", "action": …}
}
OTHERS: dict[tuple[str, str], Any] = {
    ("shell-lang", "data"): "zh-CN",
    ("url", "pathname"): "/",
    ("url", "search"): "",
    ("pan-tick", "n_intervals"): 1,
    ("pan-metric", "value"): "open",
    ("pan-allgrids", "value"): [],
    ("pan-last", "data"): None,
    ("wall-tick", "n_intervals"): 1,
    ("wall-tour-tick", "n_intervals"): 1,
    ("wall-vh", "data"): 1080,
    ("wall-last", "data"): None,
    ("wall-tour-tick", "interval"): 2000,
    ("wall-ack", "n_clicks"): 1,
    ("work-tick", "n_intervals"): 1,
    ("work-last", "data"): None,
    ("work-sent", "data"): None,
    ("wtrk-window", "value"): 24,
    ("wtrk-day", "date"): None,
    ("wtrk-from", "value"): None,
    ("wtrk-to", "value"): None,
    ("warn-tick", "n_intervals"): 1,
    ("warn-levels", "value"): [],
    ("warn-status", "value"): [],
    ("warn-rules", "value"): [],
    ("warn-hours", "value"): None,
    ("warn-done", "data"): 0,
    ("warn-seen", "data"): [],
    ("warn-note", "value"): "checked on site",
    ("warn-assignee", "value"): "unit-1",
    ("warn-ack", "n_clicks"): 1,
    ("warn-dispatch", "n_clicks"): 1,
    ("warn-resolve", "n_clicks"): 1,
    ("warn-dismiss", "n_clicks"): 1,
    ("asm-kind", "value"): "month",
    ("asm-period", "value"): MONTH,
    ("asm-range", "start_date"): None,
    ("asm-range", "end_date"): None,
    ("asm-level", "value"): "worker",
    ("asm-xlsx", "n_clicks"): 1,
    ("asm-csv", "n_clicks"): 1,
    ("asm-pdf", "n_clicks"): 1,
    ("asm-poll", "n_intervals"): 1,
    ("inc-tick", "n_intervals"): 1,
    ("inc-page", "data"): 0,
    ("inc-npages", "data"): 1,
    ("inc-done", "data"): 0,
    ("inc-status", "value"): [],
    ("inc-due", "value"): "all",
    ("inc-soon", "value"): 2,
    ("inc-cats", "value"): [],
    ("inc-sev", "value"): [],
    ("inc-sources", "value"): [],
    ("inc-unit", "value"): None,
    ("inc-range", "start_date"): None,
    ("inc-range", "end_date"): None,
    ("inc-sort", "value"): "due_ms",
    ("inc-desc", "value"): [],
    ("inc-size", "value"): 50,
    ("inc-prev", "n_clicks"): 1,
    ("inc-next", "n_clicks"): 1,
    ("inca-cancel", "n_clicks"): 1,
    ("inca-submit", "n_clicks"): 1,
    ("inca-unit", "value"): None,
    ("inca-handler", "value"): None,
    ("inca-reason", "value"): "checked on site",
    ("inca-note", "value"): None,
    ("inca-photo", "value"): None,
    ("inca-onsite", "value"): None,
    ("inca-level", "value"): None,
    ("inca-dup", "value"): None,
    ("inca-due", "value"): None,
    ("inca-bulk-unit", "value"): None,
    ("inca-bulk-handler", "value"): None,
    ("inca-bulk-go", "n_clicks"): 1,
    # the time machine's "view at" control (components/timemachine): live here
    **{
        (f"{page}-tm-{part}", prop): value
        for page in ("pan", "warn", "work")
        for part, prop, value in (
            ("at", "data", None),
            ("tick", "n_intervals", 1),
            ("tick", "disabled", True),
            ("input", "value", "2026-12-03T09:40"),
            ("input", "n_submit", 1),
            ("go", "n_clicks", 1),
            ("play", "n_clicks", 1),
            ("speed", "value", 60),
        )
    },
    ("wall-tm-at", "data"): None,
    ("aud-actor", "value"): None,  # the audit log: the administrator's, no area
    ("aud-action", "value"): None,
    ("aud-range", "start_date"): None,
    ("aud-range", "end_date"): None,
}

# Data callbacks (by their first output): a session that may see the canaries must get
# some in its answer, else the canaries (or the way this file drives them) are not real.
MUST_SHOW = (
    "pan-geo.hideout",
    "wall-geo.hideout",
    "work-geo.hideout",
    "warn-list.children",
    "warn-detail.children",
    "asm-table.rowData",
    "asm-behind.children",
    "wtrk-worker.options",
    "wtrk-data.data",
    "asm-download.data",
    "inc-grid.rowData",
    "inc-detail.children",
)


class Unclassified(Exception):
    pass


def _pattern(cid: str) -> dict[str, Any] | None:
    if not cid.startswith("{"):
        return None
    got = json.loads(cid)
    return got if isinstance(got, dict) else None


def _pid(cid: Any, prop: str) -> str:
    if isinstance(cid, dict):
        cid = json.dumps(cid, sort_keys=True, separators=(",", ":"))
    return f"{cid}.{prop}"


def value_of(w: World, s: Session, item: dict[str, Any], variant: int = 0) -> Any:
    """The request entry of one input or state (a list of entries for a wildcard)."""
    cid, prop = item["id"], item["property"]
    pattern = _pattern(cid)
    if pattern is not None:
        fill = PATTERN_IDS.get((str(pattern.get("type")), prop))
        if fill is None:
            raise Unclassified(f"{cid}.{prop}")
        concrete = {k: (fill(w) if v == ["ALL"] or v == "ALL" else v) for k, v in pattern.items()}
        return [{"id": concrete, "property": prop, "value": 1}]
    if (cid, prop) in IDS:
        value = IDS[(cid, prop)](w, s)
        if isinstance(value, Variants):
            value = value[variant % len(value)]
        return {"id": cid, "property": prop, "value": value}
    if (cid, prop) in OTHERS:
        return {"id": cid, "property": prop, "value": OTHERS[(cid, prop)]}
    raise Unclassified(f"{cid}.{prop}")


def takes_an_id(spec: dict[str, Any]) -> bool:
    items = [*spec["inputs"], *spec.get("state", [])]
    return any(
        (i["id"], i["property"]) in IDS
        or (_pattern(i["id"]) or {}).get("type") in {t for t, _ in PATTERN_IDS}
        for i in items
    )


def variants(w: World, spec: dict[str, Any]) -> int:
    """How many variants of its inputs a callback is driven with."""
    n = 1
    for i in [*spec["inputs"], *spec.get("state", [])]:
        fill = IDS.get((i["id"], i["property"]))
        value = fill(w, w.sessions[0]) if fill and i["id"] not in ("asm-job", "asm-ready") else None
        if isinstance(value, Variants):
            n = max(n, len(value))
    return n


def body(
    w: World, s: Session, key: str, spec: dict[str, Any], trigger: int, variant: int = 0
) -> dict[str, Any]:
    if "{" in key:
        raise Unclassified(f"pattern-matching output {key}")
    outs = [
        {"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")
    ]
    inputs = [value_of(w, s, i, variant) for i in spec["inputs"]]
    state = [value_of(w, s, i, variant) for i in spec.get("state", [])]
    changed = inputs[trigger]
    first = changed[0] if isinstance(changed, list) else changed
    return {
        "output": key,
        "outputs": outs if key.startswith("..") else outs[0],  # Dash's single-output form
        "inputs": inputs,
        "state": state,
        "changedPropIds": [_pid(first["id"], first["property"])],
    }


def post(w: World, s: Session, payload: dict[str, Any]) -> Any:
    return w.clients[s.username].post(
        "/_dash-update-component",
        data=json.dumps(payload),
        content_type="application/json",
        headers={"Origin": "http://localhost"},
    )


def _downloads(node: Any) -> Iterator[str]:
    """The decoded content of every file a response sends (``dcc.send_bytes``)."""
    if isinstance(node, dict):
        if node.get("base64") is True and isinstance(node.get("content"), str):
            yield base64.b64decode(node["content"]).decode("utf-8", "replace")
        for v in node.values():
            yield from _downloads(v)
    elif isinstance(node, list):
        for v in node:
            yield from _downloads(v)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def canaries_in(w: World, resp: Any, request: dict[str, Any] | None = None) -> set[str]:
    """The canaries a response betrays. An output that is exactly a value the request
    carried (an id echoed back into a store, e.g. the warning a click selected) is not
    the other area's data and does not count."""
    assert resp.status_code in (200, 204, 400, 401, 403), resp.get_data(as_text=True)[:500]
    if resp.status_code == 204:
        return set()
    raw = resp.get_data(as_text=True)
    assert "Traceback" not in raw
    try:
        data = json.loads(raw)
    except ValueError:
        data = raw
    asked = set(_strings([request["inputs"], request["state"]])) if request else set()
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        data = {
            cid: {
                prop: (None if isinstance(v, str) and v in asked else v)
                for prop, v in props.items()
            }
            for cid, props in data["response"].items()
        }
    text = json.dumps(data, ensure_ascii=False) + "".join(_downloads(data))
    return {name for name, tokens in w.canaries.tokens().items() if any(t in text for t in tokens)}


def owners_token(w: World) -> Any:
    """The shown-table token of the canary district's commander (made by the page itself)."""
    if "token" not in w.owned:
        key, spec = _callback_with_output(w, "asm-token.data")
        owner = w.sessions[0]
        resp = post(w, owner, body(w, owner, key, spec, 0))
        out = json.loads(resp.get_data(as_text=True))["response"]
        assert isinstance(out["asm-token"]["data"], str), out
        w.owned["token"] = out["asm-token"]["data"]
    return w.owned["token"]


def owners_job(w: World) -> Any:
    """A finished CSV export of the canary grid's workers, started by its commander through
    the page's export callback."""
    if "job" not in w.owned:
        from dashboard.pages.assessment import export_jobs as J

        b = w.app.server.extensions["wangge"]
        key, spec = _callback_with_output(w, "asm-job.data")
        trigger = next(i for i, x in enumerate(spec["inputs"]) if x["id"] == "asm-csv")
        owner = w.sessions[0]
        w.owned["job"] = None  # while starting it: no job yet
        resp = post(w, owner, body(w, owner, key, spec, trigger))
        out = json.loads(resp.get_data(as_text=True))["response"]
        job_id = out["asm-job"]["data"]
        assert isinstance(job_id, str), out
        got = None
        for _ in range(400):
            got = J.status(b, owner.username, job_id)
            if got is not None and got.state != "running":
                break
            time.sleep(0.05)
        assert got is not None and got.state == "done", got
        w.owned["job"] = job_id
    return w.owned["job"]


def _callback_with_output(w: World, output: str) -> tuple[str, dict[str, Any]]:
    for key, spec in registry(w.app).items():
        if output in key.strip(".").split("..."):
            return key, spec
    raise AssertionError(f"no callback outputs {output}")


# ------------------------------------------------------------------ the test


def _unclassified(spec: dict[str, Any]) -> list[str]:
    """The inputs and states of a callback this test does not know how to fill."""
    out = []
    for i in [*spec["inputs"], *spec.get("state", [])]:
        cid, prop = i["id"], i["property"]
        pattern = _pattern(cid)
        if pattern is not None:
            known = (str(pattern.get("type")), prop) in PATTERN_IDS
        else:
            known = (cid, prop) in IDS or (cid, prop) in OTHERS
        out += [] if known else [f"{cid}.{prop}"]
    return out


def test_every_callback_same_tick_both_orders(
    request: pytest.FixtureRequest, callback_key: str
) -> None:
    spec = _specs()[callback_key]
    if "{" in callback_key or _unclassified(spec):
        pytest.fail(
            f"callback {callback_key} cannot be driven: {_unclassified(spec) or 'its outputs'}"
            " not classified (add to IDS, PATTERN_IDS or OTHERS in "
            "tests/integration/test_callback_scope.py)"
        )
    if not takes_an_id(spec):  # decided before the (costly) world is built
        pytest.skip(f"{callback_key} takes no id of an area, grid, worker, warning or job")
    w: World = request.getfixturevalue("world")
    cbs = registry(w.app)
    assert callback_key in cbs, f"{callback_key} is not in this app's registry"
    spec = cbs[callback_key]
    try:
        cases = [(trig, v) for trig in range(len(spec["inputs"])) for v in range(variants(w, spec))]
        bodies = {
            (s.username, case): body(w, s, callback_key, spec, *case)
            for s in w.sessions
            for case in cases
        }
    except Unclassified as exc:
        pytest.fail(
            f"callback {callback_key} cannot be driven: input {exc} is not classified "
            "(add it to IDS, PATTERN_IDS or OTHERS in tests/integration/test_callback_scope.py)"
        )
    first_output = callback_key.strip(".").split("...")[0]
    problems: list[str] = []
    shown_to: set[str] = set()

    def ask(s: Session, case: tuple[int, int]) -> set[str]:
        payload = bodies[(s.username, case)]
        return canaries_in(w, post(w, s, payload), payload)

    for case in cases:
        trig, v = case
        what = _pid(spec["inputs"][trig]["id"], spec["inputs"][trig]["property"])
        what += f" (variant {v})" if v else ""
        may = {
            s.username: {n for n in w.canaries.tokens() if s.may_see(n, w.canaries, w.city)}
            for s in w.sessions
        }
        alone: dict[str, set[str]] = {}
        for s in w.sessions:  # each session alone, in a tick of its own
            w.fresh_tick()
            alone[s.username] = ask(s, case)
            if alone[s.username] - may[s.username]:
                problems.append(
                    f"[alone, trigger {what}] {s.username} ({s.role} of {s.scope}) "
                    f"got {sorted(alone[s.username] - may[s.username])} it may not see"
                )
            shown_to |= {s.username} if alone[s.username] else set()
        for order in ("forward", "reverse"):
            w.fresh_tick()  # one tick shared by every session of this round
            ordered = w.sessions if order == "forward" else list(reversed(w.sessions))
            for s in ordered:
                got = ask(s, case)
                who = f"[{order}, trigger {what}] {s.username} ({s.role} of {s.scope})"
                if got - may[s.username]:
                    problems.append(f"{who} got {sorted(got - may[s.username])} it may not see")
                if got != alone[s.username]:
                    problems.append(
                        f"{who} got {sorted(got)} in a shared tick, "
                        f"{sorted(alone[s.username])} alone"
                    )
    assert not problems, f"{callback_key}:\n" + "\n".join(dict.fromkeys(problems))
    if first_output in MUST_SHOW:
        assert shown_to, f"{callback_key} showed no canary to anyone: the canaries are not real"


def test_the_data_callbacks_named_here_exist(registry_keys: list[str]) -> None:
    """MUST_SHOW guards the positive side; a renamed output must not make it vacuous."""
    firsts = {k.strip(".").split("...")[0] for k in registry_keys}
    assert set(MUST_SHOW) <= firsts, set(MUST_SHOW) - firsts


# ------------------------------------------------------------------ refusals are audited


def _refresh_body(w: World, s: Session, area: Any) -> dict[str, Any]:
    key, spec = _callback_with_output(w, "pan-geo.hideout")
    payload = body(w, s, key, spec, 0)
    payload["state"] = [
        {**v, "value": area} if v["id"] == "pan-area" else v for v in payload["state"]
    ]
    return payload


def test_refusals_inside_callbacks_are_audited_up_to_the_limit(
    world: World, engine: Engine
) -> None:
    w = world
    cmd_mine = next(s for s in w.sessions if s.username == "cmd_mine")
    for _ in range(60):  # one frozen minute: the sliding window never empties
        resp = post(w, cmd_mine, _refresh_body(w, cmd_mine, w.canaries.street))
        assert resp.status_code == 200 and canaries_in(w, resp) == set()
    rows = audit.query(engine, actor="cmd_mine", action="denied")
    limit = w.app.server.config["WANGGE_SETTINGS"].auth.denied_audit_per_minute
    assert rows.height == limit  # audited, and rate-limited like the routes' denials
    assert set(rows["target"].to_list()) == {w.canaries.street}
    assert audit.verify(engine).ok


def test_an_id_with_a_lone_surrogate_is_refused_and_audited(world: World, engine: Engine) -> None:
    w = world
    cmd_mine = next(s for s in w.sessions if s.username == "cmd_mine")
    odd = OTHER + "\ud800"
    resp = post(w, cmd_mine, _refresh_body(w, cmd_mine, odd))
    # refused before the callback runs (the text rule) or inside it: a clear answer either way
    assert resp.status_code in (200, 400) and canaries_in(w, resp) == set()
    rows = audit.query(engine, actor="cmd_mine", action="denied")
    assert OTHER + "\\ud800" in rows["target"].to_list()
    assert audit.verify(engine).ok


def _surrogate_answers(w: World, keys: Callable[[str], bool]) -> list[str]:
    """Every id input of the chosen callbacks, carrying a lone surrogate: the failures."""
    s = next(x for x in w.sessions if x.username == "cmd_other")
    bad: list[str] = []
    for key, spec in registry(w.app).items():
        if not keys(key):
            continue
        for trig, v in [
            (t, v) for t in range(len(spec["inputs"])) for v in range(variants(w, spec))
        ]:
            try:
                payload = body(w, s, key, spec, trig, v)
            except Unclassified:
                continue  # the generated test above names it
            for part in ("inputs", "state"):
                for i, item in enumerate(payload[part]):
                    if isinstance(item, dict) and (item["id"], item["property"]) in IDS:
                        tampered = _surrogate(item["value"])
                        p2 = {**payload, part: [*payload[part]]}
                        p2[part][i] = {**item, "value": tampered}
                        resp = post(w, s, p2)  # the owner's own ids, made odd
                        if resp.status_code not in (200, 204, 400):
                            what = f"{item['id']}.{item['property']}={item['value']!r}"
                            bad.append(f"{key} {what}: {resp.status_code}")
    return bad


ROUTER = ".._pages_content"  # Dash's page router: renders the layouts


def test_every_id_input_with_a_lone_surrogate_is_a_clear_answer(world: World) -> None:
    """Every id a callback takes, carrying a lone surrogate: an answer, never a 500."""
    bad = _surrogate_answers(world, lambda key: not key.startswith(ROUTER))
    assert not bad, "\n".join(bad)


def test_the_page_router_with_a_lone_surrogate_is_a_clear_answer(world: World) -> None:
    bad = _surrogate_answers(world, lambda key: key.startswith(ROUTER))
    assert not bad, "\n".join(bad)


def _surrogate(value: Any) -> Any:
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, dict):
        return {k: _surrogate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_surrogate(v) for v in value]
    return value


def test_leaders_see_counts_never_worker_markers(world: World) -> None:
    """At street level a city leader's panorama shows counts; a command centre's shows the
    workers (README "Privacy"), whatever order they ask in within one tick."""
    w = world
    leader = next(s for s in w.sessions if s.username == "leader")
    cmd = next(s for s in w.sessions if s.username == "cmd_other")
    for first, second in ((cmd, leader), (leader, cmd)):
        w.fresh_tick()
        got = {}
        for s in (first, second):
            resp = post(w, s, _refresh_body(w, s, w.canaries.street))
            out = json.loads(resp.get_data(as_text=True))["response"]
            got[s.username] = out["pan-markers"]["data"]["features"]
        kinds = {u: {f["properties"]["k"] for f in feats} for u, feats in got.items()}
        ids = {u: {f["properties"].get("id") for f in feats} for u, feats in got.items()}
        assert WORKER in ids["cmd_other"] and "w" in kinds["cmd_other"]
        assert "w" not in kinds["leader"] and WORKER not in ids["leader"]
        assert INCIDENT in ids["leader"]  # incidents are not individual-level data
        assert any(k == "c" for k in kinds["leader"])  # the workers, counted per grid


def test_the_prewarmer_recomputes_without_a_request(world: World) -> None:
    """The prewarmer's jobs run in a thread with no request: what they compute is keyed by
    the data alone and reads no session (the permission was decided by the request)."""
    import threading

    w = world
    cmd = w.sessions[0]
    for output in ("pan-geo.hideout", "work-geo.hideout", "wall-geo.hideout"):
        key, spec = _callback_with_output(w, output)
        assert post(w, cmd, body(w, cmd, key, spec, 0)).status_code == 200
    b = w.app.server.extensions["wangge"]
    jobs = [fn for _, fn in b._warm.values()]
    assert len(jobs) == 3
    w.fresh_tick()
    errors: list[str] = []

    def run() -> None:
        for fn in jobs:
            try:
                fn()
            except Exception as exc:
                errors.append(repr(exc))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == []
    tick = int(w.clock[0] // REFRESH_S)
    warmed = {k.split(":")[0] for k in b.cache.local if k.endswith(f":{tick}")}
    assert {"pan", "work", "wall"} <= warmed
