"""Access control where it counts, on the server: every route and callback has a policy;
replaying every callback as each role with tampered inputs leaks nothing; CSRF, CSP,
login lock-out, rate limit, wall tokens, audit."""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import polars as pl
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine

from dashboard.app import create_app, page_module
from dashboard.auth import ROUTE_POLICIES, callback_policy
from pipelines import warnings as W
from pipelines.access import accounts, audit, wall_tokens
from pipelines.city.geography import City
from pipelines.settings import Settings
from pipelines.spine import store
from pipelines.spine.runner import live_state
from tests.conftest import sign_in_client, signed_in

pytestmark = pytest.mark.integration

CANARY_N = 987654321
CANARY = "CANARYB7"
CANARY_WARNING = "surge:canary"
SEEDED: dict[str, str] = {}  # ids the fixture created (the canary warning)
MINE, OTHER = "320102", "320104"  # the district user's own district, and another


@pytest.fixture
def app(
    live_settings: Settings,
    engine: Engine,
    city: City,
    rclient: redis.Redis,
) -> Dash:
    settings = live_settings
    now = int(time.time() * 1000)
    other_street = city.children(OTHER)[0]
    other_grid = city.children(other_street)[0]
    my_street = city.children(MINE)[0]
    users = [
        ("leader", "city_leader", city.city_id),
        ("cmd", "district_commander", MINE),
        ("op", "street_operator", my_street),
        ("sup", "supervisor", MINE),
        ("adm", "admin", city.city_id),
    ]
    for name, role, scope in users:
        accounts.create_user(engine, city, name, role, scope, password="pass-word-123", now_ms=now)
    accounts.create_user(engine, city, "wall1", "wall", MINE, now_ms=now)
    # canaries: another district's live data carries markers no one outside may see
    live = live_state(rclient, settings)
    for area in (OTHER, other_street, other_grid):
        rclient.hset(live.keys.live("open"), area, CANARY_N)
        rclient.hset(live.keys.live("overdue"), area, CANARY_N)
        rclient.lpush(
            live.keys.ticker(area),
            orjson.dumps(
                {"k": "report", "ts": now, "what": f"{CANARY}:reported", "grid": other_grid}
            ),
        )
    finding = W.Finding("surge", other_street, "red", CANARY_WARNING, (CANARY,), {"n": CANARY})
    new, _, _ = W.update_open([], [finding], now, W.RuleConfig())
    W.persist(engine, new, [], [], now)
    W.republish(engine, live, city)  # the live list and counts, as the engine writes them
    live.set_warnings(
        {OTHER: {"red": CANARY_N}},
        {new[0].warning_id: orjson.dumps({**W.live_item(new[0]), "area_id": other_street})},
    )
    SEEDED["warning"] = new[0].warning_id
    # canaries in SQL (the assessment page reads history): a worker and an incident there
    with engine.begin() as conn:
        conn.execute(
            store.workers.insert(),
            [
                {
                    "worker_id": f"{CANARY}-W",
                    "name": CANARY,
                    "type": "full_time",
                    "grid_id": other_grid,
                }
            ],
        )
    event = {c: None for c in store.EVENT_COLUMNS}
    event |= {
        "event_id": f"{CANARY}-E1", "incident_id": f"{CANARY}-I1", "step": "reported",
        "ts_ms": now - 60_000, "category": "fire", "severity": 3, "source": "worker",
        "handler_id": f"{CANARY}-W", "grid_id": other_grid, "street_id": other_street,
        "district_id": OTHER, "lon": 118.8, "lat": 32.0, "level": "grid", "entry_id": "0-0",
    }  # fmt: skip
    store.persist_report_events(engine, pl.DataFrame([event], infer_schema_length=None))
    seed_canary_worker(engine, live, other_grid, now)
    return create_app(settings, city=city, r=rclient)


CANARY_WORKER = "WCANARY7"


def seed_canary_worker(engine: Engine, live: Any, grid: str, now: int) -> None:
    """A worker of the other district: name, masked phone, live position, track, a report."""
    from pipelines.spine import store

    with engine.begin() as conn:
        store.insert_ignore(
            conn,
            store.workers,
            [
                {"worker_id": CANARY_WORKER, "name": f"{CANARY}名", "type": "full_time"}
                | {"grid_id": grid, "phone_masked": "139****4321"}
            ],
        )
        points = [
            {"worker_id": CANARY_WORKER, "slot": i, "ts_ms": now - (30 - i) * 60_000}
            | {"lon": 118.85 + i * 1e-4, "lat": 32.05, "grid_id": grid}
            | {"accuracy": None, "speed": None, "battery": None}
            for i in range(30)
        ]
        store.insert_ignore(conn, store.track_points, points)
    live.r.hset(live.keys.live("pos"), CANARY_WORKER, f"118.853,32.05,{now},{grid},,,")
    live.r.zadd(live.keys.live("seen"), {CANARY_WORKER: now})


def client_as(app: Dash, username: str | None, role: str = "", scope: str = "") -> Any:
    c = app.server.test_client()
    if username:
        sign_in_client(c, role=role, scope=scope, username=username)
    return c


def callbacks(app: Dash) -> dict[str, Any]:
    app.server.test_client().get("/_dash-dependencies")  # fills callback_map on first use
    return dict(app.callback_map)


def test_every_route_and_callback_has_a_policy(app: Dash) -> None:
    missing = [
        r.endpoint for r in app.server.url_map.iter_rules() if r.endpoint not in ROUTE_POLICIES
    ]
    assert missing == [], f"routes without a policy: {missing}"
    cbs = callbacks(app)
    assert len(cbs) >= 7
    missing = [k for k, spec in cbs.items() if callback_policy(k, spec) is None]
    assert missing == [], f"callbacks without a policy: {missing}"


TAMPERED: list[Any] = [
    OTHER,
    "320104-001",
    "320100",
    "*",
    "3201*",
    "",
    None,
    {"type": "pan-area", "index": "ALL"},
    ["320104"],
]


def _value_for(prop: dict[str, Any], area: Any) -> Any:
    cid, p = str(prop["id"]), prop["property"]
    if cid in ("pan-area",) or (cid == "_pages_location" and p == "pathname"):
        return area if cid == "pan-area" else f"/area/{area}"
    if cid == "wall-area":
        return {"area": area, "metric": "open"}
    if cid == "warn-sel":
        return area
    if cid.startswith("{") and p == "n_clicks":  # the list's rows (pattern-matching)
        return [1]
    if cid in ("warn-ack", "warn-dispatch", "warn-resolve", "warn-dismiss"):
        return 1
    if cid in ("warn-note", "warn-assignee"):
        return f"{CANARY} note"
    if cid == "work-area":
        return area
    if cid == "wtrk-worker":  # the other district's worker, whatever the area
        return CANARY_WORKER
    if cid == "wtrk-grid":
        return area
    if cid == "wtrk-window":
        return 24
    if cid == "wall-tour":
        return [area] if isinstance(area, str) else area
    if cid in ("pan-geo", "work-geo") and p == "clickData":
        return {"properties": {"id": area}}
    if p == "n_intervals":
        return 3
    if cid == "asm-view":  # the assessment view: this month's workers inside ``area``
        month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
        return {"level": "worker", "period": month, "area": area}
    if cid == "asm-table" and p == "cellClicked":  # a click on a row's number (or name)
        row = f"{CANARY}-W" if area == OTHER else area  # also the other district's worker
        return {"rowIndex": 0, "colId": "reports", "rowId": row, "value": 1, "timestamp": 1}
    if cid in ("asm-xlsx", "asm-csv", "asm-pdf"):
        return 1
    if cid == "asm-token":
        return area if isinstance(area, str) else None
    if cid == "asm-level":
        return "worker"
    if cid == "asm-kind":
        return "month"
    if cid == "pan-metric":
        return "open"
    if cid in ("shell-lang",):
        return "zh-CN"
    return None


def _body(spec: dict[str, Any], area: Any, key: str) -> dict[str, Any]:
    def props(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**i, "value": _value_for(i, area)} for i in items]

    outs = [
        {"id": o.split(".")[0], "property": o.split(".")[1]} for o in key.strip(".").split("...")
    ]
    return {
        "output": key,
        "outputs": outs if key.startswith("..") else outs[0],  # Dash's single-output form
        "inputs": props(spec["inputs"]),
        "state": props(spec.get("state", [])),
        "changedPropIds": [f"{i['id']}.{i['property']}" for i in spec["inputs"]],
    }


ROLES_OUTSIDE = [
    ("cmd", "district_commander", MINE),
    ("op", "street_operator", None),
    ("sup", "supervisor", MINE),
    ("wall1", "wall", MINE),
    (None, "", ""),
]


@pytest.mark.parametrize("who", ROLES_OUTSIDE, ids=lambda w: w[1] or "anonymous")
def test_replaying_every_callback_with_tampered_inputs_leaks_nothing(
    app: Dash, city: City, engine: Engine, who: tuple[str | None, str, str | None]
) -> None:
    username, role, scope = who
    scope = scope or city.children(MINE)[0]
    c = client_as(app, username, role, scope)
    cbs = callbacks(app)
    server_side = {k: v for k, v in cbs.items() if v.get("callback") is not None}
    assert server_side, "no server callbacks found"
    statuses = []
    tampered = [*TAMPERED, SEEDED["warning"]]
    for (key, spec), area in itertools.product(server_side.items(), tampered):
        body = orjson.dumps(_body(spec, area, key))
        resp = c.post(
            "/_dash-update-component",
            data=body,
            content_type="application/json",
            headers={"Origin": "http://localhost"},
        )
        text = resp.get_data(as_text=True)
        statuses.append(resp.status_code)
        assert str(CANARY_N) not in text and CANARY not in text, (role, key, area, text[:300])
        assert area == SEEDED["warning"] or SEEDED["warning"] not in text, (role, key, text[:300])
        assert "Traceback" not in text
        if username is None:
            assert resp.status_code == 401
    # routes that take an area, and the all-grids geometry
    for path in (
        f"/geo/area/{OTHER}.json",
        "/geo/grids.json",
        f"/area/{OTHER}",
        "/admin/audit",
        f"/work/{OTHER}",
        f"/export/track/{CANARY_WORKER}.csv",
        f"/export/track/grid/{_canary_grid(city)}.csv",
    ):
        resp = c.get(path, headers={"Accept": "application/json"})
        assert resp.status_code in (302, 401, 403, 404) or CANARY not in resp.get_data(as_text=True)
    if username:
        assert c.get(f"/geo/area/{OTHER}.json").status_code == 403
        assert c.get(f"/export/track/{CANARY_WORKER}.csv").status_code == 403
        assert c.get(f"/export/track/grid/{_canary_grid(city)}.csv").status_code == 403
        assert c.get(f"/geo/area/{scope}.json").status_code == 200 or role == "wall"
    assert set(statuses) <= {200, 204, 401, 403}
    # nobody outside could act on the other district's warning
    detail = W.warning_detail(engine, SEEDED["warning"])
    assert detail is not None and detail["status"] == "new" and len(detail["timeline"]) == 1


def test_city_leader_does_see_the_other_district(app: Dash, city: City) -> None:
    """The canary is reachable for a role whose scope covers it (the test is not vacuous)."""
    c = client_as(app, "leader", "city_leader", city.city_id)
    key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith("..pan-geo"))
    resp = c.post(
        "/_dash-update-component",
        data=orjson.dumps(_body(spec, OTHER, key)),
        content_type="application/json",
    )
    assert resp.status_code == 200 and str(CANARY_N) in resp.get_data(as_text=True)
    # … and the canary warning: in the list, and in the detail panel
    wid = SEEDED["warning"]
    for prefix, value, marker in (("..warn-list", None, wid), ("..warn-detail", wid, CANARY)):
        key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith(prefix))
        resp = c.post(
            "/_dash-update-component",
            data=orjson.dumps(_body(spec, value, key)),
            content_type="application/json",
        )
        text = resp.get_data(as_text=True)
        assert resp.status_code == 200 and marker in text, prefix
    # … and on the assessment page: the worker's row, and the incident behind its number
    other_grid = city.children(city.children(OTHER)[0])[0]
    cases = (
        ("..asm-table.rowData", OTHER, CANARY),
        ("..asm-behind.children", f"{CANARY}-W", f"{CANARY}-I1"),
    )
    for prefix, area, marker in cases:
        key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith(prefix))
        body = _body(spec, area, key)
        if prefix.startswith("..asm-behind"):
            month = datetime.now(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")
            view = {"level": "worker", "period": month, "area": other_grid}
            body["state"] = [
                {**s, "value": view} if s["id"] == "asm-view" else s for s in body["state"]
            ]
        resp = c.post(
            "/_dash-update-component", data=orjson.dumps(body), content_type="application/json"
        )
        text = resp.get_data(as_text=True)
        assert resp.status_code == 200 and marker in text, (prefix, text[:300])


def test_the_other_districts_commander_does_see_the_canary_worker(
    app: Dash, city: City, engine: Engine
) -> None:
    """Positive control for the grid-work canary: in scope, the worker and track show."""
    accounts.create_user(
        engine, city, "cmd2", "district_commander", OTHER, password="pass-word-123", now_ms=1
    )
    c = client_as(app, "cmd2", "district_commander", OTHER)
    key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith("..wtrk-data"))
    resp = c.post(
        "/_dash-update-component",
        data=orjson.dumps(_body(spec, OTHER, key)),
        content_type="application/json",
    )
    assert resp.status_code == 200 and "118.85" in resp.get_data(as_text=True)
    street = city.children(OTHER)[0]
    key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith("..work-geo"))
    resp = c.post(
        "/_dash-update-component",
        data=orjson.dumps(_body(spec, street, key)),
        content_type="application/json",
    )
    assert resp.status_code == 200 and CANARY in resp.get_data(as_text=True)
    assert c.get(f"/export/track/{CANARY_WORKER}.csv").status_code == 200
    grid_csv = c.get(f"/export/track/grid/{_canary_grid(city)}.csv?hours=2")
    assert grid_csv.status_code == 200 and CANARY_WORKER in grid_csv.get_data(as_text=True)


def _canary_grid(city: City) -> str:
    return city.children(city.children(OTHER)[0])[0]


def test_a_grid_replay_never_shows_a_worker_from_outside_the_scope(
    app: Dash, city: City, engine: Engine
) -> None:
    """The canary (other district) walks through one of my grids: my grid replay and its
    export show my workers only — the canary's whole track would leak where it went."""
    mine = city.children(city.children(MINE)[0])[0]
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        store.insert_ignore(
            conn,
            store.track_points,
            [
                {"worker_id": CANARY_WORKER, "slot": 10_000 + i, "ts_ms": now - i * 60_000}
                | {"lon": 118.9, "lat": 32.1, "grid_id": mine}
                | {"accuracy": None, "speed": None, "battery": None}
                for i in range(5)
            ],
        )
    with signed_in(app, role="district_commander", scope=MINE, username="cmd"):
        out = page_module("work").load_track(None, mine, 2, None, None, None, "zh-CN")
    ids = [w["id"] for w in (out[0] or {}).get("workers", [])]
    assert CANARY_WORKER not in ids and CANARY not in str(out)
    c = client_as(app, "cmd", "district_commander", MINE)  # a user of the fixture
    resp = c.get(f"/export/track/grid/{mine}.csv?hours=2")
    assert resp.status_code == 200 and CANARY_WORKER not in resp.get_data(as_text=True)


def test_csrf_and_security_headers(app: Dash, city: City) -> None:
    c = client_as(app, "leader", "city_leader", city.city_id)
    key, spec = next((k, v) for k, v in callbacks(app).items() if k.startswith("..pan-geo"))
    body = orjson.dumps(_body(spec, MINE, key))
    assert (
        c.post("/_dash-update-component", data=body, content_type="text/plain").status_code == 403
    )
    foreign = c.post(
        "/_dash-update-component",
        data=body,
        content_type="application/json",
        headers={"Origin": "http://evil.example"},
    )
    assert foreign.status_code == 403
    page = c.get("/area/320102")
    csp = page.headers["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]+)", csp)
    assert script_src and "unsafe-inline" not in script_src.group(1)
    assert "object-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    https = c.get("/area/320102", base_url="https://localhost")
    assert "max-age" in https.headers.get("Strict-Transport-Security", "")


def _login(c: Any, username: str, password: str, ip: str = "10.0.0.1") -> Any:
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    return c.post(
        "/login",
        data={"username": username, "password": password, "csrf": token.group(1), "next": "/"},
        environ_overrides={"REMOTE_ADDR": ip},
    )


def test_login_lockout_logout_and_audit(app: Dash, engine: Engine) -> None:
    c = app.server.test_client()
    assert c.get("/").status_code == 302  # anonymous → login page
    ok = _login(c, "cmd", "pass-word-123")
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert c.get("/area/320102").status_code == 200
    c2 = app.server.test_client()
    for i in range(5):
        assert _login(c2, "sup", "wrong-password", ip=f"10.0.1.{i}").status_code == 401
    locked = _login(c2, "sup", "pass-word-123", ip="10.0.1.9")
    assert locked.status_code == 401 and "登录失败次数过多" in locked.get_data(as_text=True)
    c3 = app.server.test_client()
    codes = [_login(c3, "nobody", "x" * 12, ip="10.0.2.1").status_code for _ in range(12)]
    assert codes.count(429) >= 1  # rate limited (shared in Redis)
    actions = set(audit.query(engine, limit=200)["action"].to_list())
    assert {"login", "login_failed", "login_locked", "login_rate_limited"} <= actions
    assert audit.verify(engine).ok


def test_disabling_a_user_ends_their_session(app: Dash, engine: Engine) -> None:
    c = app.server.test_client()
    assert _login(c, "op", "pass-word-123").status_code == 302
    guard = app.server.extensions["wangge.guard"]
    accounts.disable_user(engine, "op", now_ms=int(time.time() * 1000), sessions=guard.sessions)
    assert c.get("/area/320102").status_code == 302  # back to the login page, at once


def test_wall_token_signs_in_a_kiosk_once(app: Dash, engine: Engine) -> None:
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=int(time.time() * 1000))
    c = app.server.test_client()
    assert c.get("/wall?token=not-a-token").status_code == 401
    first = c.get(f"/wall?token={token}&tour=10")
    assert first.status_code == 302 and first.headers["Location"] == "/wall?tour=10"
    assert c.get("/wall").status_code == 200
    assert c.get(f"/geo/area/{OTHER}.json").status_code == 403  # bound to its area
    wall_tokens.revoke_wall_tokens(engine, "wall1", now_ms=int(time.time() * 1000))
    assert app.server.test_client().get(f"/wall?token={token}").status_code == 401


def test_denied_is_a_clear_403_never_a_traceback(app: Dash) -> None:
    c = client_as(app, "cmd", "district_commander", MINE)
    resp = c.get(f"/geo/area/{OTHER}.json")
    assert resp.status_code == 403 and resp.is_json and resp.json["error"] == "forbidden"
    html = c.get("/admin/audit", headers={"Accept": "text/html"})
    assert html.status_code in (403, 404) and "Traceback" not in html.get_data(as_text=True)


def test_a_flood_of_denied_requests_is_audited_up_to_the_limit(app: Dash, engine: Engine) -> None:
    c = client_as(app, "cmd", "district_commander", MINE)
    for _ in range(80):
        assert c.get(f"/geo/area/{OTHER}.json").status_code == 403  # always denied
    rows = audit.query(engine, actor="cmd", action="denied")
    limit = app.server.config["WANGGE_SETTINGS"].auth.denied_audit_per_minute
    assert 1 <= rows.height <= 2 * limit  # 2×: the minute may turn during the loop


def test_idle_timeout_logout_secure_cookie_and_admin_view(app: Dash, engine: Engine) -> None:
    c = app.server.test_client()
    assert _login(c, "adm", "pass-word-123").status_code == 302
    view = c.get("/admin/audit?action=login")  # the rows: tests/integration/test_audit_page.py
    assert view.status_code == 200
    # idle: a session unused for longer than auth.idle_minutes is gone
    age_session(app, c, seen_ms=int(time.time() * 1000) - 31 * 60_000)
    assert c.get("/area/320102").status_code == 302
    # logout (a form POST with the session's CSRF token) ends the session
    assert _login(c, "adm", "pass-word-123").status_code == 302
    assert c.post("/logout", data={"csrf": session_of(app, c).csrf}).status_code == 302
    assert c.get("/area/320102").status_code == 302
    assert "logout" in set(audit.query(engine, limit=100)["action"].to_list())
    # behind TLS the session cookie is Secure
    tls = app.server.test_client()
    page = tls.get("/login", base_url="https://localhost").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    ok = tls.post(
        "/login",
        base_url="https://localhost",
        data={"username": "cmd", "password": "pass-word-123", "csrf": csrf.group(1)},
    )
    assert ok.status_code == 302 and "Secure" in ok.headers["Set-Cookie"]


def age_session(app: Dash, c: Any, **fields: int) -> None:
    """Move the client's server-side session back in time (seen_ms, created_ms, …)."""
    guard = app.server.extensions["wangge.guard"]
    with c.session_transaction() as sess:
        sid = sess["sid"]
    s = guard.sessions.load(sid, guard.now_ms())
    assert s is not None
    guard.r.set(guard.sessions.key(sid), sessions_dump(dataclasses.replace(s, **fields)))


def session_of(app: Dash, c: Any) -> Any:
    """The client's server-side session record."""
    guard = app.server.extensions["wangge.guard"]
    with c.session_transaction() as sess:
        sid = sess["sid"]
    return guard.sessions.load(sid, guard.now_ms())


def sessions_dump(s: Any) -> str:
    from pipelines.access import sessions

    return sessions._dump(s)


def test_bad_token_and_database_down_get_clear_pages(
    live_settings: Settings, city: City, rclient: redis.Redis, tmp_path: Path
) -> None:
    fresh = dataclasses.replace(
        live_settings,
        database=dataclasses.replace(live_settings.database, url=f"sqlite:///{tmp_path}/new.db"),
    )
    c = create_app(fresh, city=city, r=rclient).server.test_client()  # creates its schema
    page = c.get("/wall?token=expired", headers={"Accept": "text/html"})
    assert page.status_code == 401 and "Sign-in required" in page.get_data(as_text=True)
    down = dataclasses.replace(
        live_settings,
        database=dataclasses.replace(live_settings.database, url="postgresql://x@127.0.0.1:1/x"),
    )
    c = create_app(down, city=city, r=rclient).server.test_client()
    resp = c.get("/wall?token=whatever", headers={"Accept": "text/html"})
    assert resp.status_code == 503 and "Traceback" not in resp.get_data(as_text=True)
    assert "Service unavailable" in resp.get_data(as_text=True)


def test_rate_limit_is_a_sliding_minute(
    live_settings: Settings, rclient: redis.Redis, city: City
) -> None:
    """Attempts straddling a minute boundary count together (a fixed window let 2 × limit
    through); after a quiet minute the bucket is open again."""
    from dashboard.guard import Guard

    now = [1_000_000 * 60 + 50.0]  # 10 s before a minute boundary
    guard = Guard(live_settings, city, rclient, None, list, lambda: now[0])
    got = []
    for _ in range(12):
        got.append(guard.rate_limited("login:10.9.9.9", 10))
        now[0] += 2.0  # 12 attempts over 24 s, across the boundary
    assert got == [False] * 10 + [True, True]
    assert not guard.rate_limited("login:10.9.9.8", 10)  # buckets are separate
    now[0] += 61.0
    assert not guard.rate_limited("login:10.9.9.9", 10)
