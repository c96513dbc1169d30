"""Server-side sessions: the cookie carries only an id; logout, a password change,
disabling, a role or scope change and revoking a wall's token end every session of the
user at once — a cookie copied before is dead on its next request, page or callback.
Idle timeout and absolute lifetime, on a clock the test moves."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from dash import Dash
from sqlalchemy import Engine

from dashboard.app import create_app
from pipelines.access import accounts, audit, sessions, wall_tokens
from pipelines.city.geography import City
from pipelines.settings import Settings, child_environ
from tests.conftest import TEST_AUDIT_KEY

pytestmark = pytest.mark.integration

T0 = 1_767_261_600.0  # 2026-01-01 10:00 UTC, seconds; the app's clock starts here
PW, PW2 = "pass-word-123", "another-pass-456"
MINE = "320102"
MIN = 60.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(
    live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis, clock: Clock
) -> Dash:
    now = int(clock() * 1000)
    street = city.children(MINE)[0]
    accounts.create_user(engine, city, "cmd", "district_commander", MINE, PW, now_ms=now)
    accounts.create_user(engine, city, "op", "street_operator", street, PW, now_ms=now)
    accounts.create_user(engine, city, "wall1", "wall", MINE, now_ms=now)
    return create_app(live_settings, city=city, r=rclient, clock=clock)


def login(app: Dash, username: str = "cmd", password: str = PW) -> Any:
    c = app.server.test_client()
    page = c.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    resp = c.post(
        "/login",
        data={"username": username, "password": password, "csrf": token.group(1), "next": "/"},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)[:300]
    return c


def cookie(c: Any) -> str:
    found = c.get_cookie("wg_session")
    assert found is not None
    return str(found.value)


def copy_of(app: Dash, c: Any) -> Any:
    """Another browser holding a copy of ``c``'s session cookie."""
    other = app.server.test_client()
    other.set_cookie("wg_session", cookie(c))
    return other


VALUES = {"pan-tick": 1, "pan-metric": "open", "pan-allgrids": [], "pan-area": MINE}
VALUES |= {"shell-lang": "zh-CN"}


def callback(app: Dash, c: Any) -> Any:
    """One of the panorama's callbacks, as the browser posts it."""
    c.get("/_dash-dependencies")
    key, spec = next((k, v) for k, v in app.callback_map.items() if k.startswith("..pan-geo"))
    body = {
        "output": key,
        "outputs": [
            {"id": o.split(".")[0], "property": o.split(".")[1]}
            for o in key.strip(".").split("...")
        ],
        "inputs": [{**i, "value": VALUES.get(i["id"])} for i in spec["inputs"]],
        "state": [{**s, "value": VALUES.get(s["id"])} for s in spec.get("state", [])],
        "changedPropIds": [],
    }  # fmt: skip
    return c.post(
        "/_dash-update-component", data=orjson.dumps(body), content_type="application/json"
    )


def signed_in(c: Any) -> bool:
    resp = c.get(f"/area/{MINE}")
    assert resp.status_code in (200, 302), resp.status_code
    return resp.status_code == 200


def test_the_cookie_carries_only_a_random_session_id(app: Dash) -> None:
    c = login(app)
    data = app.server.session_interface.get_signing_serializer(app.server).loads(cookie(c))
    assert set(data) == {"sid"} and len(data["sid"]) >= 32
    assert "cmd" not in str(data) and "district" not in str(data)
    assert login(app) is not c and cookie(login(app)) != cookie(c)  # a fresh id each time


def test_a_cookie_copied_before_logout_is_dead_after_it(app: Dash, clock: Clock) -> None:
    c = login(app)
    stolen = copy_of(app, c)
    assert signed_in(stolen) and callback(app, stolen).status_code == 200
    csrf = sessions_of(app, c).csrf
    assert csrf in c.get("/_dash-layout").get_data(as_text=True)  # the shell's logout form
    assert c.post("/logout", data={"csrf": csrf}).status_code == 302
    clock.t += 10 * MIN  # ten minutes later, well inside the idle timeout
    assert not signed_in(stolen)
    assert callback(app, stolen).status_code == 401
    resp = stolen.get("/geo/area/320102.json")
    assert resp.status_code == 401 and "wg_session=" not in resp.headers.get("Set-Cookie", "")
    assert not signed_in(c)


CHANGES: dict[str, Callable[[Engine, City, Any, int], Any]] = {
    "password": lambda e, _c, s, now: accounts.set_password(e, "cmd", PW2, now_ms=now, sessions=s),
    "disable": lambda e, _c, s, now: accounts.disable_user(e, "cmd", now_ms=now, sessions=s),
    "role": lambda e, c, s, now: accounts.set_role(
        e, c, "cmd", "supervisor", MINE, now_ms=now, sessions=s
    ),
    "scope": lambda e, c, s, now: accounts.set_role(
        e, c, "cmd", "district_commander", "320104", now_ms=now, sessions=s
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_an_account_change_ends_every_session_of_the_user_at_once(
    app: Dash, engine: Engine, city: City, change: str
) -> None:
    guard = app.server.extensions["wangge.guard"]
    desk, laptop = login(app), login(app)
    stolen = copy_of(app, desk)
    bystander = login(app, "op")
    assert signed_in(desk) and signed_in(laptop) and signed_in(stolen)  # in use
    assert guard.sessions.of_user("cmd") == 2
    CHANGES[change](engine, city, guard.sessions, guard.now_ms())
    assert guard.sessions.of_user("cmd") == 0
    for c in (desk, laptop, stolen):
        assert not signed_in(c)
        assert callback(app, c).status_code == 401
    assert signed_in(bystander), "another user's session is untouched"


def test_logout_ends_every_session_of_the_user(app: Dash) -> None:
    desk, laptop = login(app), login(app)
    csrf = sessions_of(app, desk).csrf
    assert desk.post("/logout", data={"csrf": csrf}).status_code == 302
    assert not signed_in(laptop) and not signed_in(desk)
    assert "logout" in audit.query(app.server.extensions["wangge.guard"].engine)["action"]


def test_logout_needs_the_sessions_csrf_token(app: Dash) -> None:
    c = login(app)
    assert c.post("/logout", data={"csrf": "forged"}).status_code == 302
    assert signed_in(c)


def sessions_of(app: Dash, c: Any) -> sessions.Session:
    guard = app.server.extensions["wangge.guard"]
    with c.session_transaction() as sess:
        sid = sess["sid"]
    s = guard.sessions.load(sid, guard.now_ms())
    assert s is not None
    return s


def test_a_change_made_without_redis_ends_the_session_at_its_next_check(
    app: Dash, engine: Engine, city: City, clock: Clock
) -> None:
    """The SQL stamp: an account changed where the session store was not reachable."""
    c = login(app)
    accounts.set_password(engine, "cmd", PW2, now_ms=int(clock() * 1000))  # no sessions=
    assert signed_in(c)  # until the next re-check of the account …
    clock.t += sessions.RECHECK_MS / 1000
    assert not signed_in(c)  # … which ends it
    assert "session_revoked" in audit.query(engine)["action"].to_list()


def test_idle_timeout_and_absolute_lifetime(
    app: Dash, live_settings: Settings, clock: Clock
) -> None:
    idle_s = live_settings.auth.idle_minutes * MIN
    max_s = live_settings.auth.session_max_hours * 3600
    c = login(app)
    clock.t += idle_s - MIN
    assert signed_in(c)  # used just before the idle limit: still there, and refreshed
    clock.t += idle_s - MIN
    assert signed_in(c)
    clock.t += idle_s + 1
    assert not signed_in(c)  # idle too long
    # in use all the time: it still ends at the absolute lifetime
    c = login(app)
    start = clock.t
    while clock.t + 10 * MIN < start + max_s:
        clock.t += 10 * MIN
        assert signed_in(c)
    clock.t = start + max_s
    assert not signed_in(c)
    assert callback(app, c).status_code == 401


def test_a_wall_screen_never_idles_and_ends_when_its_token_is_revoked(
    app: Dash, engine: Engine, clock: Clock
) -> None:
    guard = app.server.extensions["wangge.guard"]
    now = int(clock() * 1000)
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=now)
    wall = app.server.test_client()
    assert wall.get(f"/wall?token={token}").status_code == 302
    other = app.server.test_client()
    assert other.get(f"/wall?token={token}").status_code == 302  # a second screen
    clock.t += 3 * 24 * 3600  # three days unattended
    assert wall.get("/wall").status_code == 200
    assert guard.sessions.of_user("wall1") == 2
    wall_tokens.revoke_wall_tokens(engine, "wall1", int(clock() * 1000), sessions=guard.sessions)
    assert wall.get("/wall").status_code == 302 and other.get("/wall").status_code == 302


def test_a_wall_session_ends_with_its_token(app: Dash, engine: Engine, clock: Clock) -> None:
    """Revoked where Redis was not reachable, or expired: gone at the next check."""
    now = int(clock() * 1000)
    token = wall_tokens.issue_wall_token(engine, "wall1", 1, now_ms=now)
    wall = app.server.test_client()
    assert wall.get(f"/wall?token={token}").status_code == 302
    wall_tokens.revoke_wall_tokens(engine, "wall1", now)  # no sessions=
    clock.t += sessions.RECHECK_MS / 1000
    assert wall.get("/wall").status_code == 302
    fresh = wall_tokens.issue_wall_token(engine, "wall1", 1, now_ms=int(clock() * 1000))
    assert wall.get(f"/wall?token={fresh}").status_code == 302
    assert wall.get("/wall").status_code == 200
    clock.t += 24 * 3600  # the token expires: so does the screen's session
    assert wall.get("/wall").status_code == 302


def test_the_command_line_ends_the_sessions_at_once(
    app: Dash, live_settings: Settings, tmp_path: Any
) -> None:
    """`wangge users set-password / set-role / disable` reach the dashboard's Redis."""
    s = live_settings
    env = child_environ(
        REDIS_URL=s.redis.url,
        WANGGE_REDIS_PREFIX=s.redis.prefix,
        DATABASE_URL=s.database.url,
        WANGGE_DATABASE_SCHEMA=s.database.schema,
        WANGGE_RUN_VAR_DIR=str(tmp_path / "var"),
        WANGGE_GEO_GRIDS="300",
        WANGGE_GEO_CACHE_DIR=str(tmp_path / "geo"),
        WANGGE_AUTH_AUDIT_KEY=TEST_AUDIT_KEY,
    )
    c = login(app)
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "users", "set-password", "cmd", "--password-stdin"],
        env=env,
        input=PW2 + "\n",
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "every session of cmd ended" in res.stdout
    assert not signed_in(c)
    c = login(app, password=PW2)
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "users", "disable", "cmd"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert not signed_in(c)


@pytest.fixture
def flaky_redis(tmp_path: Any) -> Any:
    from pipelines.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "flaky").start()
    yield server
    server.stop()


def test_a_short_redis_outage_keeps_signed_in_viewers_on_their_pages(
    flaky_redis: Any, db_url: Any, engine: Engine, city: City, tmp_path: Any, clock: Clock
) -> None:
    """Sessions this process saw lately ride out a Redis restart (the pages show their
    "stale since" marks, not errors); nobody new gets in meanwhile; the grace is short."""
    from tests.conftest import settings_for

    settings = settings_for(flaky_redis.url, "wgflaky", db_url, tmp_path)
    r = redis.Redis.from_url(flaky_redis.url, socket_timeout=1, socket_connect_timeout=1)
    accounts.create_user(engine, city, "cmd", "district_commander", MINE, PW, now_ms=1)
    app = create_app(settings, city=city, r=r, clock=clock)
    c = login(app)
    assert callback(app, c).status_code == 200
    flaky_redis.stop()
    try:
        resp = callback(app, c)
        assert resp.status_code == 200 and "stale" in resp.get_data(as_text=True).lower()
        assert copy_of(app, c).get(f"/area/{MINE}").status_code == 200  # same session id
        assert app.server.test_client().get(f"/area/{MINE}").status_code == 302  # anonymous
        forged = app.server.test_client()
        with forged.session_transaction() as sess:
            sess["sid"] = "a-session-this-process-never-saw"
        assert forged.get(f"/area/{MINE}").status_code == 503  # unknown: not let in
        clock.t += sessions.GRACE_MS / 1000 + 1
        assert callback(app, c).status_code == 503  # the grace is over
    finally:
        flaky_redis.start()
    # this embedded Redis keeps no data across a restart: the session is gone with it
    assert callback(app, c).status_code == 401
    assert callback(app, login(app)).status_code == 200
