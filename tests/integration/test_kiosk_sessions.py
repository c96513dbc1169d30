"""A wall screen stays on wall pages, and a wall token never silently replaces the session
of a person signed in in the same browser (Flask test client, real Redis and SQL).

From the rules: a kiosk session asking for any page that is not a wall page (every page
of the policy registry but the wall, the audit view, an unknown path) is sent to /wall;
a wall token opened where a person is signed in opens the wall in that person's session
when their role may open the wall, else a page asks first; ``&switch=1`` switches."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from dash import Dash
from flask import session
from sqlalchemy import Engine

from dashboard.app import create_app
from dashboard.auth import Principal
from pipelines.access import accounts, policy, wall_tokens
from pipelines.city.geography import City
from pipelines.settings import Settings
from tests.clock import Clock, named
from tests.integration.test_access import _login

pytestmark = pytest.mark.integration

CLOCK = Clock(named("thu-10:00").ms)
MINE = "320102"


@pytest.fixture
def app(live_settings: Settings, engine: Engine, city: City, rclient: redis.Redis) -> Dash:
    now = CLOCK.now_ms
    accounts.create_user(
        engine, city, "leader", "city_leader", city.city_id, "pass-word-123", now_ms=now
    )
    accounts.create_user(engine, city, "wall1", "wall", MINE, now_ms=now)
    return create_app(live_settings, city=city, r=rclient, clock=CLOCK)


def page_urls() -> list[tuple[str, bool]]:
    """(a URL of every page in the registry, is it a wall page), plus an unknown path."""
    urls = []
    for page in policy.PAGES:
        for path in page.paths:
            url = path + MINE if len(path) > 1 and path.endswith("/") else path
            urls.append((url, page.kiosk))
    return [*urls, ("/no-such-page", False)]


def who(app: Dash, c: Any) -> str:
    """The username of the client's live session ("" when none)."""
    guard = app.server.extensions["wangge.guard"]
    with c.session_transaction() as sess:
        sid = sess.get("sid")
    s = guard.sessions.load(sid, CLOCK.now_ms) if sid else None
    return s.username if s else ""


def test_a_kiosk_session_stays_on_wall_pages(app: Dash, engine: Engine) -> None:
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=CLOCK.now_ms)
    c = app.server.test_client()
    assert c.get(f"/wall?token={token}").status_code == 302
    assert who(app, c) == "wall1"
    checked = 0
    for url, kiosk in page_urls():
        resp = c.get(url, headers={"Accept": "text/html"})
        if kiosk:
            assert resp.status_code == 200, url
        else:
            assert resp.status_code == 302 and resp.headers["Location"] == "/wall", url
        checked += 1
    assert checked == sum(len(p.paths) for p in policy.PAGES) + 1


def test_a_wall_token_keeps_the_signed_in_leaders_session(app: Dash, engine: Engine) -> None:
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=CLOCK.now_ms)
    c = app.server.test_client()
    assert _login(c, "leader", "pass-word-123").status_code == 302
    assert who(app, c) == "leader"
    opened = c.get(f"/wall?token={token}&tour=10")
    assert opened.status_code == 302 and opened.headers["Location"] == "/wall?tour=10"
    assert who(app, c) == "leader"  # not replaced by the kiosk
    assert c.get("/wall").status_code == 200  # the wall, in the leader's own session
    assert c.get("/work").status_code == 200  # and the leader's pages still open
    switched = c.get(f"/wall?token={token}&switch=1")
    assert switched.status_code == 302 and switched.headers["Location"] == "/wall"
    assert who(app, c) == "wall1"  # asked for explicitly: now a kiosk
    assert c.get("/work").headers["Location"] == "/wall"


def test_the_switch_page_asks_and_offers_both_ways(app: Dash, engine: Engine) -> None:
    token = wall_tokens.issue_wall_token(engine, "wall1", 30, now_ms=CLOCK.now_ms)
    guard = app.server.extensions["wangge.guard"]
    person = Principal("op<b>", "street_operator", MINE, display_name="<i>x</i>")
    with app.server.test_request_context(f"/wall?token={token}&tour=10&lang=en"):
        session.clear()
        page = guard.confirm_switch(person).get_data(as_text=True)
    assert "Switch to the wall session?" in page
    assert "&lt;i&gt;x&lt;/i&gt;" in page and "<i>x</i>" not in page
    assert f"/wall?token={token}&amp;tour=10&amp;lang=en&amp;switch=1" in page
    assert "href='/'" in page  # stay: the person's own home page
